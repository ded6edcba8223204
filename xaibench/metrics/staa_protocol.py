"""The STAA authors' faithfulness and monotonicity (protocols.md section 1, seed 000).

Let ``z`` be the logits of the clip, ``z_S`` the logits when only the feature set
``S`` is kept and every other feature is set to the baseline, and
``norm(v) = (v - min_c v) / (max_c v - min_c v)`` the min-max normalisation over
the class axis.  Features are ranked by their mean attribution
(:mod:`xaibench.metrics.perturb`, seeded random tie-breaking).

* ``staa_faithfulness`` (higher is better): keep the top ``k`` fraction
  (default 0.7) of the features,
  ``F = 1 - mean_c | norm(z) - norm(z_topk) |``.
* ``staa_monotonicity`` (higher is better): for keep ratios
  ``p in ratios`` (default 0.1, 0.2, ..., 0.9) let
  ``d_p = mean_c | norm(z) - norm(z_top(p)) |`` and ``tau`` the Kendall tau
  (``scipy.stats.kendalltau``, tau-b) between ``p`` and ``d_p``.  Keeping more of
  a faithful explanation's top features brings the output closer to the
  original, so a good explanation has a *negative* raw tau; we report
  ``staa_monotonicity = -tau`` so that higher is better (the paper's positive
  0.850 suggests the same convention, which it does not state) and keep the raw
  value as ``staa_monotonicity_tau`` (lower is better).

Defaults follow the authors' notebooks: zero (black) baseline, features are the
model's patches in each frame (``features='patch'``; ``pixel`` and ``tubelet``
are available), as are the other shared perturbation parameters (``patch``,
``frames_per_group``, ``blur_sigma``, ``batch_size``).  All perturbed inputs of
one sample go through the model in batches of ``batch_size``.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import kendalltau

from ..errors import check_range
from . import METRICS
from .base import EvalContext
from .perturb import feature_scores, rank
from .perturbation import PerturbationMetric


def minmax(z: torch.Tensor) -> torch.Tensor:
    lo, hi = z.min(-1, keepdim=True).values, z.max(-1, keepdim=True).values
    return (z - lo) / (hi - lo).clamp_min(1e-12)


class _KeepTop(PerturbationMetric):
    """Shared parameters (:class:`~xaibench.metrics.perturbation.PerturbationMetric`) minus ``output``:
    these metrics read every class's logit."""

    def __init__(self, baseline: str = "zero", features: str = "patch", patch: int | None = None,
                 frames_per_group: int = 1, batch_size: int | None = None, blur_sigma: float = 4.0):
        super().__init__(baseline=baseline, features=features, patch=patch, frames_per_group=frames_per_group,
                         batch_size=batch_size, blur_sigma=blur_sigma, output="logit")

    def params(self):
        p = super().params()
        p.pop("output")
        return p

    def distances(self, ctx: EvalContext, ratios) -> np.ndarray:
        """d_p = mean_c |norm(z) - norm(z_top(p))| for each keep ratio p."""
        ids = self.ids(ctx)
        order = rank(feature_scores(self.attribution(ctx), ids), ctx.rng)
        n = order.numel()
        keep = torch.zeros(len(ratios), n, dtype=torch.bool)
        for i, p in enumerate(ratios):
            keep[i, order[: int(round(p * n))]] = True
        z_p = self.predict_keep(ctx, self.make_baseline(ctx), ids, keep)
        return (minmax(ctx.logits[None].float()) - minmax(z_p.float())).abs().mean(-1).numpy()


@METRICS.register("staa_faithfulness")
class STAAFaithfulness(_KeepTop):
    name = "staa_faithfulness"
    outputs = {"staa_faithfulness": True}

    def __init__(self, k: float = 0.7, **kw):
        super().__init__(**kw)
        self.k = check_range("metric.k", k, 0.0, 1.0)

    def params(self):
        return {"k": self.k, **super().params()}

    def compute(self, ctx):
        return {"staa_faithfulness": float(1.0 - self.distances(ctx, [self.k])[0])}


@METRICS.register("staa_monotonicity")
class STAAMonotonicity(_KeepTop):
    name = "staa_monotonicity"
    outputs = {"staa_monotonicity": True, "staa_monotonicity_tau": False}

    def __init__(self, ratios=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9), **kw):
        super().__init__(**kw)
        self.ratios = [check_range("metric.ratios", r, 0.0, 1.0) for r in ratios]

    def params(self):
        return {"ratios": list(self.ratios), **super().params()}

    def compute(self, ctx):
        d = self.distances(ctx, self.ratios)
        tau = kendalltau(self.ratios, d).statistic
        tau = float("nan") if tau is None else float(tau)
        return {"staa_monotonicity": -tau, "staa_monotonicity_tau": tau}
