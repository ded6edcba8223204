"""The STAA authors' faithfulness and monotonicity (docs/protocols.md, "STAA"; seed 000).

Let ``z`` be the logits of the clip, ``z_S`` the logits when only the feature set
``S`` is kept and every other feature is set to the baseline, and
``norm(v) = (v - min_c v) / (max_c v - min_c v)`` the min-max normalisation over
the class axis.  Features are ranked by their mean attribution; ``top(p)`` is
the set of the ``round(p F)`` highest-ranked of the ``F`` features, and
``d(S) = mean_c | norm(z) - norm(z_S) |`` (computed on the device for every
perturbed input of a batch).

* ``staa_faithfulness`` (higher is better): keep the top ``k`` fraction
  (default 0.7) of the features, ``F = 1 - d(top(k))``.
* ``staa_monotonicity`` (higher is better): for keep ratios
  ``p in ratios`` (default 0.1, 0.2, ..., 0.9) let ``d_p = d(top(p))`` and
  ``tau`` the Kendall tau (``scipy.stats.kendalltau``, tau-b) between ``p``
  and ``d_p``.  Keeping more of a faithful explanation's top features brings
  the output closer to the original, so a good explanation has a *negative*
  raw tau; we report ``staa_monotonicity = -tau`` so that higher is better
  (the paper's positive 0.850 suggests the same convention, which it does
  not state) and keep the raw value as ``staa_monotonicity_tau`` (lower is
  better).

Ties (docs/ties.md): ``staa_faithfulness`` is linear in ``d`` of one cut, so
its expectation over tie orders is that cut's expected distance: exact on a
tie-group boundary or by enumeration, else seeded antithetic draws until the
tie standard error is at most ``tie_se``.  ``staa_monotonicity`` depends on
the joint order (a rank correlation): one order when no cut falls inside a
tie group, else the mean over seeded whole tie orders, drawn until its
standard error is at most ``tie_se`` (or ``tie_max_draws`` orders).  Both
report ``<output>_tie_se``.  The cut ``top(0.7)`` is the same mask in both
metrics (and SRG's LeRF cuts keep top sets too), so the output cache answers
it once per sample.

Defaults follow the authors' notebooks: zero (black) baseline, features are the
model's patches in each frame (``features: grid`` with the default ``cell``;
tubelets, single pixels (``cell: 1``) and superpixels are available), as are
the other shared perturbation parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

import numpy as np
import torch

from ..analysis.schema import Output
from ..config import param
from .base import METRICS
from .perturbation import (LinearScore, LinearTies, OrderScore, OrderTies, PerturbationMetric, TieConfig,
                           kendall_tau_b, tie_se_outputs)


def minmax(z: torch.Tensor) -> torch.Tensor:
    lo, hi = z.min(-1, keepdim=True).values, z.max(-1, keepdim=True).values
    return (z - lo) / (hi - lo).clamp_min(1e-12)


class Distance:
    """``d(logits) = mean_c |norm(z) - norm(logits)|`` for each row of (K, classes) logits: (K,) float64."""

    def __init__(self, clean_logits: torch.Tensor):
        self.ref = minmax(clean_logits.detach()[None].double())

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return (self.ref.to(logits.device) - minmax(logits.detach().double())).abs().mean(-1)


def keep_count(p: float, F: int) -> int:
    return int(round(p * F))


@dataclass
class STAAFaithfulnessConfig(TieConfig):
    k: float = param(0.7, range=(0.0, 1.0), help="fraction of the top features kept")


@dataclass
class STAAMonotonicityConfig(TieConfig):
    ratios: List[float] = param(default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
                                range=(0.0, 1.0), sweepable_list=True, help="keep ratios p of the top features")


@METRICS.register("staa_faithfulness")
class STAAFaithfulness(PerturbationMetric):
    """``staa_faithfulness = 1 - mean_c |norm(z) - norm(z_top(k))|`` (module docstring); higher is better."""

    Config = STAAFaithfulnessConfig
    outputs = tie_se_outputs({"staa_faithfulness": Output(True)})

    def evaluate(self, batch):
        p = self.perturber(batch)
        scores = []
        for prep in self.prepare(batch, p):
            r = prep.ranking()
            s = LinearScore(r, prep.source, Distance(prep.item.logits), ["staa_faithfulness"])
            s.constant("staa_faithfulness", 1.0)
            s.add("staa_faithfulness", -1.0, "top", keep_count(self.cfg.k, r.F))
            scores.append(s)
        return LinearTies(self.cfg.tie_se, self.cfg.tie_max_draws).run(p, scores)


@METRICS.register("staa_monotonicity")
class STAAMonotonicity(PerturbationMetric):
    """``staa_monotonicity = -kendall_tau(p, d_p)`` over the keep ratios (module docstring); higher is better.
    ``staa_monotonicity_tau`` is the raw tau (lower is better)."""

    Config = STAAMonotonicityConfig
    outputs = tie_se_outputs({"staa_monotonicity": Output(True), "staa_monotonicity_tau": Output(False)})

    def evaluate(self, batch):
        p = self.perturber(batch)
        ratios = np.asarray(self.cfg.ratios, dtype=np.float64)
        scores = []
        for prep in self.prepare(batch, p):
            r = prep.ranking()
            cuts = [(0, keep_count(q, r.F), False) for q in ratios]

            def fn(d, variants):
                tau = kendall_tau_b(ratios, d)
                return {"staa_monotonicity": -tau, "staa_monotonicity_tau": tau}

            scores.append(OrderScore(r, [prep.source], Distance(prep.item.logits), cuts, fn,
                                     ["staa_monotonicity", "staa_monotonicity_tau"]))
        return OrderTies(self.cfg.tie_se, self.cfg.tie_max_draws).run(p, scores)
