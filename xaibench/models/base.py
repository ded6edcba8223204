"""The model adapter interface: one forward pass, everything the methods need.

Every architecture (Hugging Face or timm TimeSformer / ViT / Swin) is wrapped in
a :class:`ModelAdapter`.  Its :meth:`ModelAdapter.trace` runs the *real* forward
pass of the wrapped model once and, on request, records through forward hooks

* every attention layer's probabilities as the model used them (never
  recomputed beside the model), with their layout described by
  :class:`AttentionRecord` (``kind`` = ``global`` for ViT, ``window`` for Swin,
  ``spatial`` and ``temporal`` for TimeSformer's divided space-time attention);
* their gradients with respect to the target-class logit;
* the mean and standard deviation of every token entering the layer norm that
  precedes each attention (the statistics std-normalised attribution uses);
* the outputs (and gradients) of any named module (for Grad-CAM).

Conventions
-----------
* Input ``x`` is always a float tensor of pixel values in ``[0, 1]`` with shape
  ``(B, T, C, H, W)``; images have ``T = 1``.  The adapter applies the model's
  own normalisation (mean / std), so perturbation baselines live in pixel space
  (``0`` is black).
* Token grids are row-major ``(h, w)``.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..errors import UserError


@dataclass
class AttentionRecord:
    """One attention layer as captured from the forward pass.

    ``probs`` layout by ``kind`` (``Hd`` = heads):

    ======== ========================================= ==================================
    kind     probs shape                               tokens
    ======== ========================================= ==================================
    global   (B, Hd, N, N)                             [CLS] + h*w patches (ViT)
    window   (B, nW, Hd, ws*ws, ws*ws)                 windows of the *shifted* h x w map
    spatial  (B, T, Hd, 1+P, 1+P)                      per frame: [CLS] + P = h*w patches
    temporal (B, P, Hd, T, T)                          per patch: the T frames
    ======== ========================================= ==================================

    ``ln_mean`` / ``ln_std`` have the token layout of ``probs`` without the head
    and key axes: global (B, N); window (B, h*w) in row-major map order (before
    windowing); spatial (B, T, 1+P); temporal (B, P, T).
    """

    name: str
    kind: str
    probs: torch.Tensor
    grid: Tuple[int, int]
    grad: Optional[torch.Tensor] = None
    ln_mean: Optional[torch.Tensor] = None
    ln_std: Optional[torch.Tensor] = None
    window: int = 0
    shift: int = 0
    has_cls: bool = True

    def head_mean(self, use_grad: bool = False) -> torch.Tensor:
        t = self.grad if use_grad else self.probs
        return t.mean(dim=-3)


@dataclass
class Trace:
    """What one forward pass of :meth:`ModelAdapter.trace` produced."""

    logits: torch.Tensor
    target: Optional[torch.Tensor] = None
    attentions: List[AttentionRecord] = field(default_factory=list)
    activations: Dict[str, torch.Tensor] = field(default_factory=dict)
    activation_grads: Dict[str, torch.Tensor] = field(default_factory=dict)
    n_forward: int = 1
    n_backward: int = 0

    def of_kind(self, kind: str) -> List[AttentionRecord]:
        return [a for a in self.attentions if a.kind == kind]


class ModelAdapter:
    """Uniform wrapper over one classification Transformer.

    Subclasses implement :meth:`_run` (the model call) and :meth:`_hook_points`
    (where the attention probabilities and layer norms live).
    """

    arch: str = ""  # 'timesformer' | 'vit' | 'swin'
    source: str = ""  # 'hf' | 'timm'

    def __init__(
        self,
        model: nn.Module,
        *,
        name: str,
        num_frames: int,
        image_size: int,
        patch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        labels: Optional[List[str]] = None,
        gradcam_layer: Optional[str] = None,
    ):
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.name = name
        self.num_frames = int(num_frames)
        self.image_size = int(image_size)
        self.patch_size = int(patch_size)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 1, -1, 1, 1)
        self.labels = labels
        self.gradcam_layer = gradcam_layer

    # ------------------------------------------------------------------ basics
    @property
    def grid(self) -> Tuple[int, int]:
        g = self.image_size // self.patch_size
        return (g, g)

    @property
    def num_classes(self) -> int:
        raise NotImplementedError

    @property
    def input_shape(self) -> Tuple[int, int, int, int]:
        return (self.num_frames, 3, self.image_size, self.image_size)

    def check_input(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = x.unsqueeze(0)
        if x.dim() != 5 or tuple(x.shape[1:]) != self.input_shape:
            raise UserError(
                f"model {self.name!r} expects input of shape (B, {', '.join(map(str, self.input_shape))}) "
                f"(frames, channels, height, width), got {tuple(x.shape)}; set the dataset's frames/size "
                f"to match the model"
            )
        return x

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x)) / self.std.to(x)

    # -------------------------------------------------------- to be overridden
    def _run(self, x_norm: torch.Tensor) -> torch.Tensor:
        """Call the wrapped model on normalised (B, T, C, H, W) input; return logits."""
        raise NotImplementedError

    def _hook_points(self) -> List[dict]:
        """One dict per attention layer: ``name, kind, probs_module, ln_module`` and,
        for windows, ``block`` (the module holding window/shift attributes)."""
        raise NotImplementedError

    def attention_points(self) -> List[str]:
        """Names of the attention records a full :meth:`trace` yields, in forward order."""
        return [p["name"] for p in self._hook_points()]

    # ----------------------------------------------------------------- forward
    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        """Logits for a batch of pixel inputs, evaluated in chunks of ``batch_size``."""
        x = self.check_input(x)
        outs = [self._run(self.normalise(x[i : i + batch_size])) for i in range(0, x.shape[0], batch_size)]
        return torch.cat(outs, 0)

    def trace(
        self,
        x: torch.Tensor,
        *,
        target: Optional[torch.Tensor | int] = None,
        attentions: bool = False,
        grads: bool = False,
        ln_stats: bool = False,
        capture: Sequence[str] = (),
        layers: Optional[Sequence[int]] = None,
    ) -> Trace:
        """One real forward pass with the requested records.

        ``layers``: indices (negative from the end) into the attention hook
        points in forward order (:meth:`attention_points`) to record; ``None``
        records all of them.  Recording fewer costs less.

        ``target``: class index (or per-sample indices) whose logit is
        back-propagated when ``grads`` is set; the predicted class if ``None``.
        ``capture``: names of modules (as in ``model.named_modules()``) whose
        output, and its gradient when ``grads`` is set, is recorded.
        """
        x = self.check_input(x)
        records: List[AttentionRecord] = []
        acts: Dict[str, torch.Tensor] = {}
        act_grads: Dict[str, torch.Tensor] = {}
        handles = []
        want_attn = attentions or ln_stats

        def keep_grad(store: dict, key, tensor: torch.Tensor):
            if grads and tensor.requires_grad:
                tensor.register_hook(lambda g: store.__setitem__(key, g.detach()))

        if want_attn:
            points = self._hook_points()
            if layers is not None:
                points = [points[i] for i in layers]
            for point in points:
                rec = AttentionRecord(
                    name=point["name"], kind=point["kind"], probs=torch.empty(0), grid=point.get("grid", self.grid)
                )
                rec.has_cls = point.get("has_cls", True)
                records.append(rec)
                grad_store: dict = {}
                rec._grad_store = grad_store  # type: ignore[attr-defined]

                def probs_hook(mod, inp, out, rec=rec, point=point, grad_store=grad_store):
                    probs = out[1] if isinstance(out, tuple) else out
                    rec.probs = probs
                    keep_grad(grad_store, "g", probs)
                    if "block" in point:
                        blk = point["block"]
                        ws = blk.window_size
                        sh = blk.shift_size
                        rec.window = int(ws[0] if isinstance(ws, (tuple, list)) else ws)
                        rec.shift = int(sh[0] if isinstance(sh, (tuple, list)) else sh)

                handles.append(point["probs_module"].register_forward_hook(probs_hook))
                if ln_stats and point.get("ln_module") is not None:

                    def ln_hook(mod, inp, rec=rec):
                        t = inp[0].detach()
                        rec.ln_mean = t.mean(-1)
                        rec.ln_std = torch.sqrt(t.var(-1, unbiased=False) + mod.eps)

                    handles.append(point["ln_module"].register_forward_pre_hook(ln_hook))

        named = dict(self.model.named_modules())
        for cname in capture:
            if cname not in named:
                raise UserError(f"model {self.name!r} has no module {cname!r}; see model.named_modules()")

            def act_hook(mod, inp, out, cname=cname):
                o = out[0] if isinstance(out, tuple) else out
                acts[cname] = o
                keep_grad(act_grads, cname, o)

            handles.append(named[cname].register_forward_hook(act_hook))

        try:
            xin = self.normalise(x)
            if grads:
                xin = xin.detach().requires_grad_(True)
                with torch.enable_grad():
                    logits = self._run(xin)
                    tgt = self._targets(logits, target)
                    logits.gather(1, tgt[:, None]).sum().backward()
            else:
                with torch.no_grad():
                    logits = self._run(xin)
                    tgt = self._targets(logits, target)
        finally:
            for h in handles:
                h.remove()

        for rec in records:
            g = rec._grad_store.get("g")  # type: ignore[attr-defined]
            del rec._grad_store  # type: ignore[attr-defined]
            rec.probs = self._layout(rec, rec.probs.detach(), x.shape[0])
            if g is not None:
                rec.grad = self._layout(rec, g, x.shape[0])
            if rec.ln_mean is not None:
                rec.ln_mean = self._ln_layout(rec, rec.ln_mean, x.shape[0])
                rec.ln_std = self._ln_layout(rec, rec.ln_std, x.shape[0])
        trace = Trace(
            logits=logits.detach(),
            target=tgt,
            attentions=records if want_attn else [],
            activations={k: v.detach() for k, v in acts.items()},
            activation_grads=act_grads,
            n_forward=1,
            n_backward=1 if grads else 0,
        )
        return trace

    @staticmethod
    def _targets(logits: torch.Tensor, target) -> torch.Tensor:
        if target is None:
            return logits.argmax(-1).detach()
        t = torch.as_tensor(target, dtype=torch.long, device=logits.device).reshape(-1)
        if t.numel() == 1:
            t = t.expand(logits.shape[0])
        if ((t < 0) | (t >= logits.shape[1])).any():
            raise UserError(f"target class out of range [0, {logits.shape[1] - 1}]: {t.tolist()}")
        return t

    def _layout(self, rec: AttentionRecord, t: torch.Tensor, batch: int) -> torch.Tensor:
        """Reshape a hooked probs tensor into the layout documented in AttentionRecord."""
        if rec.kind == "global":
            return t
        if rec.kind == "window":
            return t.reshape(batch, -1, *t.shape[1:])
        if rec.kind == "spatial":
            return t.reshape(batch, self.num_frames, *t.shape[1:])
        if rec.kind == "temporal":
            return t.reshape(batch, -1, *t.shape[1:])
        raise ValueError(rec.kind)

    def _ln_layout(self, rec: AttentionRecord, t: torch.Tensor, batch: int) -> torch.Tensor:
        if rec.kind in ("global",):
            return t
        if rec.kind == "window":  # LN runs on the (B, h*w) map before windowing
            return t.reshape(batch, -1)
        if rec.kind == "spatial":
            return t.reshape(batch, self.num_frames, -1)
        if rec.kind == "temporal":
            return t.reshape(batch, -1, self.num_frames)
        raise ValueError(rec.kind)

    def describe(self) -> dict:
        return {
            "name": self.name,
            "arch": self.arch,
            "source": self.source,
            "num_frames": self.num_frames,
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "num_classes": self.num_classes,
        }


@contextmanager
def eval_mode(model: nn.Module):
    was = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was)
