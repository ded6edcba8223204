"""Base class of the perturbation metrics: shared parameters, perturbed outputs, the tie policy.

:class:`PerturbationMetric` owns the parameters every perturbing metric
shares -- the feature and baseline vocabulary of :mod:`xaibench.perturb`
(``features``, ``cell`` (default: the model's patch size, i.e. its first-stage
token grid), ``frames_per_group``, ``n_segments``, ``compactness``,
``baseline``, ``blur_sigma``), ``batch_size`` and ``output`` -- and evaluates
perturbed inputs through :class:`xaibench.perturb.Perturber` (batched, on the
adapter's device, with the in-run output cache, so the same mask is never
evaluated twice for one sample).  Composition is exact (``torch.where``), so
scores depend on ``batch_size`` only through the float rounding of the
model's batched matrix products (see docs/metrics.md, "Batch size").

``output`` chooses the model output a metric reads for the target class:
``logit`` (the raw logit) or ``prob`` (the softmax probability, computed in
float64 from the float32 logits).

Ranking and ties: features are ranked by decreasing *mean* attribution;
a rank-based metric is the mean of its value over the orders of
:func:`xaibench.perturb.tie_orders` (one order without ties; ``tie_draws``
seeded random orders of the tied features otherwise), so no score depends on
an arbitrary order of tied features (docs/metrics.md, "Ties and degenerate
maps").  Masks shared by the draws (cuts at tie-group boundaries) are
evaluated once, through the output cache.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import UserError, check_range
from ..perturb import FeatureSpec, Perturber, feature_means, make_baseline, tie_orders, token_cell
from .base import Metric

OUTPUTS = ("logit", "prob")


def target_output(logits: torch.Tensor, target: int, output: str = "logit") -> np.ndarray:
    """The target class's ``logit`` or softmax ``prob`` of each row of (K, classes) logits, float64."""
    z = logits.detach().double()
    if output == "prob":
        z = torch.softmax(z, dim=-1)
    elif output != "logit":
        raise UserError(f"unknown model output {output!r}; valid: {', '.join(OUTPUTS)}")
    return z[..., target].cpu().numpy()


class PerturbationMetric(Metric):
    """Base class of the perturbation metrics (module docstring)."""

    default_output = "prob"
    extra_parameters = ("features", "cell", "frames_per_group", "n_segments", "compactness", "baseline",
                        "blur_sigma", "batch_size", "output", "tie_draws")

    def __init__(self, baseline: str = "zero", features: str = "grid", cell: int | None = None,
                 frames_per_group: int = 1, n_segments: int = 64, compactness: float = 10.0,
                 batch_size: int | None = None, blur_sigma: float = 4.0, output: str | None = None,
                 tie_draws: int = 2):
        self.spec = FeatureSpec(features=features, cell=cell, frames_per_group=frames_per_group,
                                n_segments=n_segments, compactness=compactness, baseline=baseline,
                                blur_sigma=blur_sigma, prefix="metric")
        output = output or self.default_output
        if output not in OUTPUTS:
            raise UserError(f"metric.output={output!r}; valid: {', '.join(OUTPUTS)}")
        self.batch_size = None if batch_size is None else check_range("metric.batch_size", batch_size, 1, 1 << 20,
                                                                         integer=True)
        self.output = output
        self.tie_draws = check_range("metric.tie_draws", tie_draws, 1, 1000, integer=True)

    @property
    def baseline(self) -> str:
        return self.spec.baseline

    def params(self) -> dict:
        return {**self.spec.params(), "output": self.output, "tie_draws": self.tie_draws}

    # ------------------------------------------------------------------ helpers
    def ids(self, ctx) -> torch.Tensor:
        return self.spec.ids(ctx.x, token_cell(ctx.adapter, 0))

    def attribution(self, ctx) -> torch.Tensor:
        vol = ctx.explanation.volume.detach()
        T, _, H, W = ctx.x.shape
        if tuple(vol.shape) != (T, H, W):
            raise UserError(f"explanation volume {tuple(vol.shape)} does not match the input frames x size "
                            f"{(T, H, W)}")
        return vol

    def make_baseline(self, ctx) -> torch.Tensor:
        return make_baseline(ctx.x, self.spec.baseline, ctx.rng, self.spec.blur_sigma)

    def perturber(self, ctx, ids: torch.Tensor) -> Perturber:
        """Logits of perturbed copies of ``ctx.x`` over the features ``ids`` (a fresh baseline if random)."""
        return Perturber(ctx.adapter, ctx.x, ids, self.make_baseline(ctx), self.batch_size or ctx.batch_size,
                         self.spec.cache_key(ids))

    def outputs_at(self, logits: torch.Tensor, ctx) -> np.ndarray:
        return target_output(logits, ctx.target, self.output)

    def y0(self, ctx) -> float:
        """The target output of the unperturbed input (from ``ctx.logits``, no extra forward pass)."""
        return float(target_output(ctx.logits[None], ctx.target, self.output)[0])

    def orders(self, ctx, ids: torch.Tensor, ascending: bool = False):
        """The feature orders to average over (decreasing mean attribution; increasing if ``ascending``),
        by the tie policy of :func:`xaibench.perturb.tie_orders`."""
        scores = feature_means(self.attribution(ctx), ids)
        return tie_orders(-scores if ascending else scores, ctx.rng, self.tie_draws)

    def cut_logits(self, ctx, ids, order: torch.Tensor, ks, keep_top: bool) -> torch.Tensor:
        """Logits (len(ks), classes) with the first ``k`` features of ``order`` kept (``keep_top``; the rest
        at the baseline) or removed (set to the baseline), for each ``k`` in ``ks``."""
        F = order.numel()
        keep = torch.full((len(ks), F), not keep_top, dtype=torch.bool)
        for r, k in enumerate(ks):
            keep[r, order[:int(k)]] = keep_top
        return self.perturber(ctx, ids).logits(keep)
