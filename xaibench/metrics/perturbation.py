"""Base class of the perturbation metrics (shared parameters, batched prediction, model output).

:class:`PerturbationMetric` is the base class of every metric that perturbs the
input.  It owns the parameters they all share (``baseline``, ``blur_sigma``,
``features``, ``patch``, ``frames_per_group``, ``batch_size``, ``output``) and
:meth:`PerturbationMetric.predict_keep`, which composes the perturbed inputs
``batch_size`` at a time (never the whole stack at once) and sends each chunk
through :func:`~xaibench.metrics.base.forward_batched`, so memory stays bounded
and every forward pass is counted.  Composition is exact (a ``torch.where``
between input and baseline), so the perturbed inputs do not depend on the
chunking, and the scores only up to the float32 rounding of the model's batched
matrix products (a batch of 1 and a batch of 7 differ by ~1e-7 on CPU; batches of
7 and 64 agree bit for bit); ``tests/test_metrics.py`` checks that changing
``batch_size`` changes no score by more than 1e-6.

``output`` chooses the model output a metric reads for the target class:
``logit`` (the raw logit) or ``prob`` (the softmax probability, computed in
float64 from the float32 logits).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import UserError, check_range
from .base import Metric, forward_batched
from .perturb import BASELINES, FEATURE_KINDS, OUTPUTS, feature_ids, make_baseline


def target_output(logits: torch.Tensor, target: int, output: str = "logit") -> np.ndarray:
    """The target class's ``logit`` or softmax ``prob`` of each row of (K, classes) logits, float64."""
    z = logits.detach().double()
    if output == "prob":
        z = torch.softmax(z, dim=-1)
    elif output != "logit":
        raise UserError(f"unknown model output {output!r}; valid: {', '.join(OUTPUTS)}")
    return z[..., target].cpu().numpy()


class PerturbationMetric(Metric):
    """Base class of the perturbation metrics: shared parameters and batched prediction.

    Parameters (every perturbation metric accepts them):

    * ``baseline``: ``zero`` | ``mean`` | ``blur`` | ``uniform`` (see above);
      ``blur_sigma``: Gaussian sigma in pixels of the ``blur`` baseline;
    * ``features``: ``pixel`` | ``patch`` | ``tubelet``; ``patch``: square side in
      pixels (default: the model's patch size, i.e. its token grid);
      ``frames_per_group``: frames per tubelet;
    * ``batch_size``: perturbed inputs per forward call (default: the harness's
      ``ctx.batch_size``); it never changes the scores;
    * ``output``: ``logit`` or ``prob`` (the subclass chooses the default).
    """

    default_output = "prob"

    def __init__(self, baseline: str = "zero", features: str = "patch", patch: int | None = None,
                 frames_per_group: int = 1, batch_size: int | None = None, blur_sigma: float = 4.0,
                 output: str | None = None):
        if baseline not in BASELINES:
            raise UserError(f"unknown baseline {baseline!r}; valid: {', '.join(BASELINES)}")
        if features not in FEATURE_KINDS:
            raise UserError(f"unknown feature grouping {features!r}; valid: {', '.join(FEATURE_KINDS)}")
        output = output or self.default_output
        if output not in OUTPUTS:
            raise UserError(f"unknown model output {output!r}; valid: {', '.join(OUTPUTS)}")
        if patch is not None:
            patch = check_range("metric.patch", patch, 1, 4096, integer=True)
        self.baseline, self.features, self.patch = baseline, features, patch
        self.frames_per_group = check_range("metric.frames_per_group", frames_per_group, 1, 4096, integer=True)
        self.batch_size = None if batch_size is None else check_range("metric.batch_size", batch_size, 1, 1 << 20,
                                                                         integer=True)
        self.blur_sigma = check_range("metric.blur_sigma", blur_sigma, 1e-3, 1e3)
        self.output = output

    def params(self) -> dict:
        return {"baseline": self.baseline, "blur_sigma": self.blur_sigma, "features": self.features,
                "patch": self.patch, "frames_per_group": self.frames_per_group, "output": self.output}

    # ------------------------------------------------------------------ helpers
    def ids(self, ctx) -> torch.Tensor:
        T, _, H, W = ctx.x.shape
        patch = self.patch or getattr(ctx.adapter, "patch_size", None)
        return feature_ids((T, H, W), self.features, patch, self.frames_per_group)

    def attribution(self, ctx) -> torch.Tensor:
        vol = ctx.explanation.volume.detach().cpu()
        T, _, H, W = ctx.x.shape
        if tuple(vol.shape) != (T, H, W):
            raise UserError(f"explanation volume {tuple(vol.shape)} does not match the input frames x size "
                            f"{(T, H, W)}")
        return vol

    def make_baseline(self, ctx) -> torch.Tensor:
        return make_baseline(ctx.x, self.baseline, ctx.rng, self.blur_sigma)

    def predict_keep(self, ctx, base: torch.Tensor, ids: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Logits (K, classes) of the inputs keeping features ``keep`` (K, F) and the baseline elsewhere.

        ``base`` is one baseline (T, C, H, W) or one per row (K, T, C, H, W).
        """
        bs = self.batch_size or ctx.batch_size
        out = []
        for i in range(0, keep.shape[0], bs):
            b = base if base.dim() == 4 else base[i:i + bs]
            m = keep[i:i + bs][:, ids][:, :, None]
            out.append(forward_batched(ctx, torch.where(m, ctx.x[None], b if b.dim() == 5 else b[None]),
                                       batch_size=bs))
        return torch.cat(out, 0)

    def y0(self, ctx) -> float:
        """The target output of the unperturbed input (from ``ctx.logits``, no extra forward pass)."""
        return float(target_output(ctx.logits[None], ctx.target, self.output)[0])
