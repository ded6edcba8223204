"""The model adapter contract: one forward pass, and typed declarations of everything methods need.

Every architecture (Hugging Face or timm TimeSformer / VideoMAE / ViViT / ViT /
DeiT / Swin / DINOv2) is wrapped in a :class:`ModelAdapter`, defined by its
*family* (one module per family, :mod:`xaibench.models.family`).  Methods never
ask *which* architecture they run on; they read what the adapter declares:

* :class:`TokenLayout` -- where the tokens sit: token frames and tubelet size,
  the token grid of every stage, how many prefix tokens (CLS, distillation)
  come first, and the **readout** (:class:`~xaibench.models.card.Readout`: the
  weights of the token groups the classifier reads);
* :meth:`ModelAdapter.hook_points` -> :class:`AttentionRecord` -- one attention
  layer as the model computed it, with its **kind**, i.e. how its probabilities
  compose into a token-to-token matrix (``global``: one matrix over all tokens
  of the stage, which is *joint space-time* attention when the stage has
  several token frames; ``window``: shifted windows; ``spatial`` /
  ``temporal``: the two halves of *divided* space-time attention);
* :meth:`ModelAdapter.blocks` and :meth:`ModelAdapter.head_modules` -- the
  transformer blocks in forward order and the classifier head, declared by the
  family (the randomisation test re-initialises them);
* :meth:`ModelAdapter.reshape_tokens` -- how a layer's token activations map to
  a (B, T', h, w, D) grid (the Grad-CAM ``reshape_transform``), and
  :attr:`ModelAdapter.gradcam_layer`, the default Grad-CAM layer;
* :attr:`ModelAdapter.passes` -- forward / backward passes counted by the
  adapter itself (every input of every batch), so no method hand-writes them;
* :attr:`ModelAdapter.card` -- the model's declared card (normalisation,
  input, label set, checkpoint identity) and :meth:`ModelAdapter.weights_digest`,
  a sha256 of the weights actually loaded.

:meth:`ModelAdapter.trace` runs the *real* forward pass once and, on request,
records through forward hooks every attention layer's probabilities (never
recomputed beside the model), their gradients with respect to the target
logits, the layer-norm statistics (mean, std) of the tokens entering each
attention, and any named module's output and gradient.

Conventions
-----------
* Input ``x`` is a float tensor of pixels in ``[0, 1]``, shape ``(B, T, C, H, W)``;
  images have ``T = 1``.  The adapter applies the model's normalisation, so
  perturbation baselines live in pixel space (``0`` is black).
* A *stage token vector* has ``prefix + frames * h * w`` entries: the prefix
  tokens first, then the patch tokens frame-major, row-major inside a frame
  (index ``prefix + (t * h + y) * w + x``).  Divided (TimeSformer) records are
  expressed in this order whatever order the model keeps its hidden states in.
* Token frames ``T' = frames``; input frame ``t`` belongs to token frame
  ``t // tubelet``.

Precision (``adapter.to(precision=...)``; docs/models.md, "Precision")
---------------------------------------------------------------------
``fp32`` (the default) runs the model's own float32 weights, exactly.  With
``bf16`` / ``fp16`` the adapter keeps a second copy of the weights in that
dtype, made once, and runs the **forward-only** passes on it -- :meth:`predict`
(every perturbation batch of SHAP, LIME and the metrics) and traces without
gradients (attention, rollout, STAA) -- with no per-call casts.  A trace that
back-propagates (``grads=True``: Chefer, Grad-CAM, std-norm, LRP) always runs
the float32 weights, so gradient-based explanations are unaffected by the
setting.  Everything returned is float32 on the adapter's device.
"""

from __future__ import annotations

import copy
import hashlib
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..errors import UserError
from ..registry import Registry
from .card import GROUPS, LEGACY, ModelCard, Readout  # noqa: F401  (re-exported)

#: every model by name (one module per family registers its entries on import: xaibench.models.family)
MODELS = Registry("model")

KINDS = ("global", "window", "spatial", "temporal")
READOUTS = tuple(LEGACY)  # the classic readout names (any Readout combination is allowed)
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class TokenLayout:
    """Where a model's tokens sit.

    * ``frames``: token frames T' (1 for images);
    * ``tubelet``: input frames per token frame (2 for VideoMAE / ViViT);
    * ``stages``: token grid ``(h, w)`` of every stage in forward order (one
      stage for ViT / TimeSformer / VideoMAE / ViViT; Swin halves the grid at
      each stage by merging 2 x 2 patches);
    * ``prefix``: tokens before the patch tokens (1: CLS; 2: CLS and
      distillation token; 0: none);
    * ``readout``: which final tokens the classifier reads, a
      :class:`~xaibench.models.card.Readout` (a name such as ``cls``,
      ``prefix_mean``, ``pool`` or ``cls+patches`` is converted).
    """

    frames: int = 1
    tubelet: int = 1
    stages: Tuple[Tuple[int, int], ...] = ((1, 1),)
    prefix: int = 1
    readout: Readout = "cls"

    def __post_init__(self):
        try:
            r = Readout(self.readout)
        except ValueError as e:
            raise ValueError(str(e)) from None
        object.__setattr__(self, "readout", r)
        object.__setattr__(self, "stages", tuple(tuple(int(v) for v in s) for s in self.stages))
        if r.prefix_needed > self.prefix:
            read = ", ".join(g for g in r.groups if g != "patches")
            raise ValueError(f"readout {str(r)!r} reads prefix token(s) ({read}) but the layout has {self.prefix} "
                             f"prefix token(s)")

    @property
    def grid(self) -> Tuple[int, int]:
        """The first stage's token grid."""
        return tuple(self.stages[0])

    def n_tokens(self, stage: int = 0) -> int:
        h, w = self.stages[stage]
        return self.prefix + self.frames * h * w


@dataclass
class HookPoint:
    """Where one attention layer's probabilities live in the model (declared by the adapter).

    ``probs_module``'s forward output is the probability tensor (or a tuple whose
    second item is); ``ln_module`` is the layer norm whose *input* tokens feed the
    attention (for the std-normalised rule); ``window_shift`` returns the
    ``(window, shift)`` of a window attention at forward time.
    """

    name: str
    kind: str
    layer: int
    probs_module: nn.Module
    stage: int = 0
    ln_module: Optional[nn.Module] = None
    window_shift: Optional[Callable[[], Tuple[int, int]]] = None


@dataclass
class AttentionRecord:
    """One attention layer as captured from the forward pass.

    ``probs`` layout by ``kind`` (``B`` batch, ``Hd`` heads, ``n`` = prefix +
    frames*h*w, ``P = h*w``, ``T = frames``, ``q = window**2``):

    ======== =============================== ====================================================
    kind     probs shape                     tokens
    ======== =============================== ====================================================
    global   (B, Hd, n, n)                   the stage token vector (joint space-time if T > 1)
    window   (B, nW, Hd, q, q)               windows of the *shifted* h x w map (no prefix)
    spatial  (B, T, Hd, 1+P, 1+P)            per frame: [CLS copy] + that frame's P patches
    temporal (B, P, Hd, T, T)                per patch: its T frames
    ======== =============================== ====================================================

    ``ln_mean`` / ``ln_std`` have the token layout of ``probs`` without the head
    and key axes: global (B, n); window (B, h*w) row-major (before windowing);
    spatial (B, T, 1+P); temporal (B, P, T).  ``grid``, ``frames`` and
    ``prefix`` copy the layout of the record's stage so a record describes itself.
    """

    name: str
    kind: str
    layer: int
    stage: int
    grid: Tuple[int, int]
    frames: int
    prefix: int
    probs: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    grad: Optional[torch.Tensor] = None
    ln_mean: Optional[torch.Tensor] = None
    ln_std: Optional[torch.Tensor] = None
    window: int = 0
    shift: int = 0

    @property
    def n_tokens(self) -> int:
        """Length of the stage token vector this record acts on."""
        h, w = self.grid
        return (0 if self.kind == "window" else self.prefix) + self.frames * h * w

    def select(self, i: int) -> "AttentionRecord":
        """The record of sample ``i`` of the batch (batch axis kept, size 1)."""
        pick = (lambda t: None if t is None else t[i:i + 1])
        return AttentionRecord(self.name, self.kind, self.layer, self.stage, self.grid, self.frames, self.prefix,
                               pick(self.probs), pick(self.grad), pick(self.ln_mean), pick(self.ln_std),
                               self.window, self.shift)


@dataclass
class Trace:
    """What one forward pass of :meth:`ModelAdapter.trace` produced."""

    logits: torch.Tensor
    target: Optional[torch.Tensor] = None
    attentions: List[AttentionRecord] = field(default_factory=list)
    activations: Dict[str, torch.Tensor] = field(default_factory=dict)
    activation_grads: Dict[str, torch.Tensor] = field(default_factory=dict)

    def of_kind(self, *kinds: str) -> List[AttentionRecord]:
        return [a for a in self.attentions if a.kind in kinds]


@dataclass
class OutputCache:
    """In-run cache of model logits keyed by (perturbation key, keep-mask) (:class:`xaibench.perturb.Perturber`).

    One cache per adapter; the harness clears it at each new sample, so it
    serves every method, metric and parameter value of that sample; ``hits``
    counts the forward passes it saved.
    """

    store: Dict[Tuple[str, bytes], torch.Tensor] = field(default_factory=dict)
    hits: int = 0
    misses: int = 0

    def clear(self):
        self.store.clear()


class ModelAdapter:
    """Uniform wrapper over one classification Transformer.

    A family's adapter calls ``super().__init__`` with the model and its
    declarations and implements :meth:`_run` (the model call on normalised
    pixels), :meth:`hook_points`, :meth:`blocks` and :meth:`head_modules`;
    it overrides :meth:`reshape_tokens` when a layer's token order is not the
    stage token vector's.  Adapters derive module references from
    ``self.model`` on every call (never cache them): the low-precision copy of
    the weights is run by swapping ``self.model``.
    """

    family: str = ""  # the registered family (provenance); methods never read it
    #: the family's default card (normalisation, interpolation...); ``self.card`` is the loaded model's
    default_card: ModelCard = ModelCard()

    def __init__(self, model: nn.Module, *, layout: TokenLayout, num_frames: int, image_size: int, patch_size: int,
                 name: Optional[str] = None, mean: Optional[Sequence[float]] = None,
                 std: Optional[Sequence[float]] = None, labels: Optional[List[str]] = None,
                 gradcam_layer: Optional[str] = None, card: Optional[ModelCard] = None):
        card = card or self.make_card()
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.name = name or card.name or self.family or type(self).__name__
        self.layout = layout
        self.num_frames = int(num_frames)
        self.image_size = int(image_size)
        self.patch_size = int(patch_size)
        mean = tuple(float(v) for v in (card.mean if mean is None else mean))
        std = tuple(float(v) for v in (card.std if std is None else std))
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 1, -1, 1, 1)
        self.labels = labels
        self.gradcam_layer = gradcam_layer
        self.passes = {"forward": 0, "backward": 0}
        self.cache = OutputCache()
        self.precision = "fp32"
        self._lowp: Optional[nn.Module] = None
        self._digest: Optional[Tuple[tuple, str]] = None
        self.card = card.replace(name=self.name, family=card.family or self.family, frames=self.num_frames,
                                 image_size=self.image_size, mean=mean, std=std, readout=layout.readout)
        self.preprocess = self.card.preprocess(self.num_frames, self.image_size)
        if layout.frames * layout.tubelet != self.num_frames:
            raise ValueError(f"layout frames {layout.frames} x tubelet {layout.tubelet} != {num_frames} input frames")

    @classmethod
    def make_card(cls, card: Optional[ModelCard] = None, *, name: Optional[str] = None, mean=None, std=None,
                  **changes) -> ModelCard:
        """``card`` (default: the family's) with the given name / normalisation / other fields."""
        c = card or cls.default_card
        if name:
            changes["name"] = name
        elif not c.name:
            changes["name"] = cls.family or cls.__name__
        if mean is not None:
            changes["mean"] = tuple(mean)
        if std is not None:
            changes["std"] = tuple(std)
        if not c.family and cls.family:
            changes["family"] = cls.family
        return c.replace(**changes)

    # ------------------------------------------------------------------ basics
    @property
    def grid(self) -> Tuple[int, int]:
        return self.layout.grid

    @property
    def num_classes(self) -> int:
        raise NotImplementedError

    @property
    def input_shape(self) -> Tuple[int, int, int, int]:
        return (self.num_frames, 3, self.image_size, self.image_size)

    @property
    def device(self) -> torch.device:
        for p in self.model.parameters():
            return p.device
        return torch.device("cpu")

    def to(self, device=None, precision: Optional[str] = None) -> "ModelAdapter":
        """Move the model to ``device`` and set the precision of forward-only passes (``fp32`` | ``bf16`` |
        ``fp16``; module docstring, "Precision")."""
        if precision is not None:
            if precision not in PRECISIONS:
                raise UserError(f"precision={precision!r}; valid: {', '.join(PRECISIONS)}")
            if precision != self.precision:
                self._lowp = None
            self.precision = precision
        if device is not None:
            self.model.to(device)
            if self._lowp is not None and next(self._lowp.parameters(), torch.empty(0)).device != self.device:
                self._lowp = None
        return self

    def _autocast(self):
        """Autocast to the low precision (for callers that run ``_run`` themselves; the adapter's own passes
        use a low-precision copy of the weights instead)."""
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _lowp_model(self) -> nn.Module:
        """The weights in the adapter's low precision, made once (half the float32 memory for bf16)."""
        dtype = PRECISIONS[self.precision]
        if self._lowp is None:
            twin = copy.deepcopy(self.model).to(dtype=dtype)
            for p in twin.parameters():
                p.requires_grad_(False)
            self._lowp = twin.eval()
        return self._lowp

    @contextmanager
    def _forward_weights(self, grads: bool):
        """``self.model`` is the weights a pass runs on: float32 for fp32 or gradient passes, else the
        low-precision copy; yields the input dtype."""
        if grads or PRECISIONS[self.precision] is None:
            yield torch.float32
            return
        full = self.model
        self.model = self._lowp_model()
        try:
            yield PRECISIONS[self.precision]
        finally:
            self.model = full

    def check_input(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = x.unsqueeze(0)
        if x.dim() != 5 or tuple(x.shape[1:]) != self.input_shape:
            raise UserError(
                f"model {self.name!r} expects input of shape (B, {', '.join(map(str, self.input_shape))}) "
                f"(frames, channels, height, width), got {tuple(x.shape)}; set the dataset's frames/size "
                f"to match the model"
            )
        return x.to(self.device, torch.float32)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x)) / self.std.to(x)

    @property
    def num_layers(self) -> int:
        """Transformer blocks that hold attention (divided layers count once)."""
        return len({p.layer for p in self.hook_points()})

    @contextmanager
    def counting(self):
        """``with adapter.counting() as n:`` -> ``n['forward']``, ``n['backward']`` passes inside the block."""
        before = dict(self.passes)
        n = {"forward": 0, "backward": 0}
        try:
            yield n
        finally:
            for k in n:
                n[k] = self.passes[k] - before[k]

    # -------------------------------------------------------- to be overridden
    def _run(self, x_norm: torch.Tensor) -> torch.Tensor:
        """Call the wrapped model on normalised (B, T, C, H, W) input; return logits."""
        raise NotImplementedError

    def hook_points(self) -> List[HookPoint]:
        """One :class:`HookPoint` per attention layer, in forward order."""
        raise NotImplementedError

    def blocks(self) -> List[nn.Module]:
        """The transformer blocks in forward order, one per ``HookPoint.layer`` (declared by the family)."""
        raise NotImplementedError(f"model {self.name!r} ({type(self).__name__}) does not declare its blocks")

    def head_modules(self) -> List[nn.Module]:
        """The classifier head module(s) (declared by the family)."""
        raise NotImplementedError(f"model {self.name!r} ({type(self).__name__}) does not declare its head")

    def library_attentions(self, x: torch.Tensor) -> Optional[Dict[str, torch.Tensor]]:
        """The attention probabilities the *library itself* returns for pixels ``x`` (transformers'
        ``output_attentions``), keyed by record name, in the record layout; ``None`` where the library
        returns none (timm).  The conformance suite compares them with the hooked records."""
        return None

    def reshape_tokens(self, act: torch.Tensor, batch: int) -> torch.Tensor:
        """A layer's token activations -> ``(B, T', h, w, D)`` (the Grad-CAM reshape).

        Default: ``(B, n, D)`` stage token vectors of any stage (prefix dropped),
        ``(B*T', prefix+P, D)`` per-frame token sets, or ``(B, h, w, D)``
        channels-last maps.  Adapters whose layers keep another order override it.
        """
        L = self.layout
        if act.dim() == 4 and act.shape[0] == batch:  # channels-last (B, h, w, D)
            return act[:, None]
        if act.dim() == 3:
            n = act.shape[1]
            for h, w in L.stages:
                if act.shape[0] == batch and n in (L.prefix + L.frames * h * w, L.frames * h * w):
                    k = n - L.frames * h * w
                    return act[:, k:].reshape(batch, L.frames, h, w, act.shape[-1])
                if act.shape[0] == batch * L.frames and n in (L.prefix + h * w, h * w):
                    k = n - h * w
                    return act[:, k:].reshape(batch, L.frames, h, w, act.shape[-1])
        raise UserError(f"model {self.name!r}: a layer output of shape {tuple(act.shape)} is not a token map of "
                        f"this model (stages {list(L.stages)}, {L.prefix} prefix tokens, {L.frames} token frames); "
                        f"choose another Grad-CAM layer (method.layer)")

    def transformer_blocks(self):
        """Typed description of the model's plain pre-norm Transformer stack (embedding, blocks with their
        layer norms / attention / MLP modules, final norm, head), for methods that re-run the layers with
        their own rules (LRP); ``None`` when the model is not such a stack (see :mod:`xaibench.models.blocks`)."""
        from .blocks import describe_blocks

        return describe_blocks(self)

    def block_modules(self) -> List[nn.Module]:
        """Alias of :meth:`blocks` (earlier name)."""
        return self.blocks()

    # ------------------------------------------------------------ randomisation
    def randomised(self, top_blocks: int, seed: int = 0) -> "ModelAdapter":
        """A copy whose classifier head and last ``top_blocks`` blocks are re-initialised (seeded), for the
        cascading model-parameter randomisation test (Adebayo et al., NeurIPS 2018).

        ``top_blocks`` 0: the head only; ``>= len(blocks())``: every block.  Every sub-module of the head and
        of those blocks that has ``reset_parameters`` (linear, convolution, norm layers) is reset with the
        library's own initialiser, head first, then the blocks in forward order, from ``torch.manual_seed
        (seed)`` (the global RNG is left as it was).  The original is untouched.
        """
        lowp, self._lowp = self._lowp, None
        try:
            twin = copy.deepcopy(self)
        finally:
            self._lowp = lowp
        blocks = twin.blocks()
        heads = twin.head_modules()
        if not heads:
            raise ValueError(f"{self.name}: the adapter declares no classifier head")
        k = max(0, min(int(top_blocks), len(blocks)))
        targets = heads + blocks[len(blocks) - k:]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            for t in targets:
                for m in t.modules():
                    if hasattr(m, "reset_parameters"):
                        m.reset_parameters()
        twin.model.eval()
        for q in twin.model.parameters():
            q.requires_grad_(False)
        twin.cache = OutputCache()
        twin._digest = None
        twin.card = twin.card.replace(weights_sha256=None, source=f"{self.card.source}, randomised")
        return twin

    # --------------------------------------------------------------- identity
    def weights_digest(self) -> str:
        """sha256 over the state dict: every entry's name, dtype, shape and bytes, in name order (buffers
        included).  Cached; recomputed when a tensor is changed in place (its version counter moves)."""
        sd = self.model.state_dict(keep_vars=True)
        key = tuple((k, v._version, v.data_ptr()) for k, v in sd.items())
        if self._digest is not None and self._digest[0] == key:
            return self._digest[1]
        h = hashlib.sha256()
        for name in sorted(sd):
            t = sd[name].detach()
            h.update(name.encode())
            h.update(str(t.dtype).encode())
            h.update(repr(tuple(t.shape)).encode())
            h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        digest = h.hexdigest()
        self._digest = (key, digest)
        return digest

    def identity(self) -> dict:
        """The weights' digest beside the card's expected one: ``matches`` True / False, or None when the card
        declares none."""
        digest = self.weights_digest()
        expected = self.card.weights_sha256
        return {"weights_sha256": digest, "expected_sha256": expected,
                "matches": None if expected is None else digest == expected}

    def attention_points(self) -> List[str]:
        """Names of the attention records a full :meth:`trace` yields, in forward order."""
        return [p.name for p in self.hook_points()]

    # ----------------------------------------------------------------- forward
    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        """Float32 logits (on the adapter's device) for pixel inputs, ``batch_size`` at a time."""
        x = self.check_input(x)
        outs = []
        with self._forward_weights(grads=False) as dtype:
            for i in range(0, x.shape[0], batch_size):
                outs.append(self._run(self.normalise(x[i:i + batch_size]).to(dtype)).float())
                self.passes["forward"] += min(batch_size, x.shape[0] - i)
        return torch.cat(outs, 0)

    def trace(self, x: torch.Tensor, *, target=None, attentions: bool = False, grads: bool = False,
              ln_stats: bool = False, capture: Sequence[str] = (), layers: Optional[Sequence[int]] = None) -> Trace:
        """One real forward pass with the requested records.

        ``layers``: transformer block indices (negative from the end) whose
        attention is recorded; ``None`` records all.  A divided space-time
        block yields two records (temporal, then spatial).
        ``target``: class index, or one per sample, whose logit is
        back-propagated when ``grads`` is set (the predicted class if ``None``).
        ``capture``: names of modules (``model.named_modules()``) whose output,
        and its gradient when ``grads`` is set, is recorded.
        """
        x = self.check_input(x)
        with self._forward_weights(grads) as dtype:
            return self._trace(x, dtype, target, attentions, grads, ln_stats, capture, layers)

    def _trace(self, x, dtype, target, attentions, grads, ln_stats, capture, layers) -> Trace:
        B = x.shape[0]
        records: List[AttentionRecord] = []
        acts: Dict[str, torch.Tensor] = {}
        act_grads: Dict[str, torch.Tensor] = {}
        handles = []

        def keep_grad(store: dict, key, tensor: torch.Tensor):
            if grads and tensor.requires_grad:
                tensor.register_hook(lambda g: store.__setitem__(key, g.detach()))

        if attentions or ln_stats:
            points = self.hook_points()
            if layers is not None:
                n = self.num_layers
                wanted = {(i % n) for i in layers}
                points = [p for p in points if p.layer in wanted]
            for point in points:
                h, w = self.layout.stages[point.stage]
                rec = AttentionRecord(point.name, point.kind, point.layer, point.stage, (h, w), self.layout.frames,
                                      self.layout.prefix)
                store: dict = {}
                records.append(rec)

                def probs_hook(mod, inp, out, rec=rec, point=point, store=store):
                    probs = out[1] if isinstance(out, tuple) else out
                    store["probs"] = probs
                    keep_grad(store, "grad", probs)
                    if point.window_shift is not None:
                        rec.window, rec.shift = (int(v) for v in point.window_shift())

                handles.append(point.probs_module.register_forward_hook(probs_hook))
                rec._store = store  # type: ignore[attr-defined]
                if ln_stats and point.ln_module is not None:

                    def ln_hook(mod, inp, store=store):
                        t = inp[0].detach().float()
                        store["ln_mean"] = t.mean(-1)
                        store["ln_std"] = torch.sqrt(t.var(-1, unbiased=False) + mod.eps)

                    handles.append(point.ln_module.register_forward_pre_hook(ln_hook))

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
            xin = self.normalise(x).to(dtype)
            if grads:
                xin = xin.detach().requires_grad_(True)
                with torch.enable_grad():
                    logits = self._run(xin).float()
                    tgt = self._targets(logits, target)
                    logits.gather(1, tgt[:, None]).sum().backward()
                self.passes["backward"] += B
            else:
                with torch.no_grad():
                    logits = self._run(xin).float()
                    tgt = self._targets(logits, target)
            self.passes["forward"] += B
        finally:
            for hd in handles:
                hd.remove()

        for rec in records:
            store = rec.__dict__.pop("_store")
            if "probs" not in store:
                raise RuntimeError(f"attention hook {rec.name} of {self.name!r} saw no forward call")
            rec.probs = self._layout(rec, store["probs"].detach().float(), B)
            if "grad" in store:
                rec.grad = self._layout(rec, store["grad"].float(), B)
            if "ln_mean" in store:
                rec.ln_mean = self._ln_layout(rec, store["ln_mean"], B)
                rec.ln_std = self._ln_layout(rec, store["ln_std"], B)
            # the store holds the hooked probs, whose gradient hook holds the store: a cycle through the
            # autograd graph that Python's collector cannot see; without this every traced batch (its
            # attention, gradients and input) would stay in memory until the run ends
            store.clear()
        return Trace(logits=logits.detach(), target=tgt, attentions=records if attentions or ln_stats else [],
                     activations={k: v.detach().float() for k, v in acts.items()},
                     activation_grads={k: v.float() for k, v in act_grads.items()})

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
        """Reshape a hooked probs tensor into the layout documented in :class:`AttentionRecord`."""
        if rec.kind == "global":
            return t.reshape(batch, *t.shape[-3:])
        return t.reshape(batch, -1, *t.shape[-3:])

    def _ln_layout(self, rec: AttentionRecord, t: torch.Tensor, batch: int) -> torch.Tensor:
        if rec.kind in ("global", "window"):  # window: LN runs on the (B, h*w) map before windowing
            return t.reshape(batch, -1)
        if rec.kind == "spatial":
            return t.reshape(batch, rec.frames, -1)
        return t.reshape(batch, -1, rec.frames)  # temporal

    def describe(self) -> dict:
        L = self.layout
        return {"name": self.name, "family": self.family, "source": self.card.source,
                "num_frames": self.num_frames, "image_size": self.image_size, "patch_size": self.patch_size,
                "num_classes": self.num_classes,
                "layout": {"frames": L.frames, "tubelet": L.tubelet, "stages": [list(s) for s in L.stages],
                           "prefix": L.prefix, "readout": str(L.readout), "readout_weights": dict(L.readout.weights)},
                "attention_kinds": sorted({p.kind for p in self.hook_points()}), "gradcam_layer": self.gradcam_layer,
                "precision": self.precision, **self.identity()}
