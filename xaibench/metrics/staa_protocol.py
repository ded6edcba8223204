"""The STAA authors' faithfulness and monotonicity (docs/protocols.md, "STAA"; seed 000).

Let ``z`` be the logits of the clip, ``z_S`` the logits when only the feature set
``S`` is kept and every other feature is set to the baseline, and
``norm(v) = (v - min_c v) / (max_c v - min_c v)`` the min-max normalisation over
the class axis.  Features are ranked by their mean attribution;
with tied features each score is the mean over ``tie_draws`` seeded random
orders of the ties (the tie policy of :mod:`xaibench.metrics.perturbation`).

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
model's patches in each frame (``features: grid`` with the default ``cell``;
tubelets, single pixels (``cell: 1``) and superpixels are available), as are
the other shared perturbation parameters (``frames_per_group``,
``blur_sigma``, ``batch_size``).  All perturbed inputs of
one sample go through the model in batches of ``batch_size``.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import kendalltau

from ..errors import check_range
from .base import METRICS
from .base import EvalContext
from .perturbation import PerturbationMetric


def minmax(z: torch.Tensor) -> torch.Tensor:
    lo, hi = z.min(-1, keepdim=True).values, z.max(-1, keepdim=True).values
    return (z - lo) / (hi - lo).clamp_min(1e-12)


class _KeepTop(PerturbationMetric):
    """Shared parameters (:class:`~xaibench.metrics.perturbation.PerturbationMetric`) minus ``output``:
    these metrics read every class's logit."""

    extra_parameters = tuple(p for p in PerturbationMetric.extra_parameters if p != "output")

    def __init__(self, **kw):
        kw.pop("output", None)
        super().__init__(output="logit", **kw)

    def params(self):
        p = super().params()
        p.pop("output")
        return p

    def distances(self, ctx: EvalContext, ratios) -> list:
        """For each order of the ranking: d_p = mean_c |norm(z) - norm(z_top(p))| for each keep ratio p."""
        ids = self.ids(ctx)
        orders = self.orders(ctx, ids)
        n = orders[0].numel()
        ks = [int(round(p * n)) for p in ratios]
        ref = minmax(ctx.logits[None].double())
        return [(ref - minmax(self.cut_logits(ctx, ids, o, ks, keep_top=True).double())).abs().mean(-1).cpu().numpy()
                for o in orders]


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
        return {"staa_faithfulness": float(np.mean([1.0 - d[0] for d in self.distances(ctx, [self.k])]))}


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
        taus = []
        for d in self.distances(ctx, self.ratios):
            tau = kendalltau(self.ratios, d).statistic
            taus.append(float("nan") if tau is None else float(tau))
        tau = float(np.mean(taus))
        return {"staa_monotonicity": -tau, "staa_monotonicity_tau": tau}
