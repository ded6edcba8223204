"""Deletion and insertion curves (Petsiuk, Das & Saenko, "RISE", BMVC 2018, section 4.1).

Features (:mod:`xaibench.perturb`: grid cells, tubelets or superpixels) are
ranked by decreasing mean attribution; with tied features the AUC is the mean
over ``tie_draws`` seeded random orders of the ties (the tie policy of
:mod:`xaibench.metrics.perturbation`).  With ``F`` features and ``n = min(n_steps, F)`` steps, step ``i``
(``i = 0 .. n``) acts on the top ``k_i = floor(i F / n)`` features and sits at
``x_i = k_i / F`` (so x runs over [0, 1] and includes 0 and 1).  ``y`` is the
softmax probability of the target class (``output='prob'``, the default;
``logit`` is available).

* ``deletion_auc`` (lower is better): ``y_i`` = the output when the top ``k_i``
  features are set to the baseline (``x_0`` is the clean input);
* ``insertion_auc`` (higher is better): ``y_i`` = the output when only the top
  ``k_i`` features show the input and everything else is the baseline (``x_0``
  is the all-baseline input, ``x_n`` the clean input).

AUC = trapezoid rule over the points ``(x_i, y_i)``, i = 0 .. n
(``numpy.trapezoid``); with probabilities it lies in [0, 1].  The clean
input's output comes from the harness's logits (no extra pass), so each curve
costs ``n`` forward passes per order (cuts shared by the orders are
evaluated once).  Baseline default ``zero`` (RISE deletes to black
and inserts onto a blurred copy: set ``baseline: blur`` for insertion to
follow it).
"""

from __future__ import annotations

import numpy as np

from ..errors import check_range
from .base import METRICS
from .perturbation import PerturbationMetric


class _Curve(PerturbationMetric):
    default_output = "prob"
    insertion = False
    least_first = False  # remove the least relevant features first (LeRF) instead of the most (MoRF)

    def __init__(self, n_steps: int = 20, **kw):
        super().__init__(**kw)
        self.n_steps = check_range("metric.n_steps", n_steps, 1, 10**6, integer=True)

    def params(self):
        return {"n_steps": self.n_steps, **super().params()}

    def curves(self, ctx):
        """(x, [y per order]): fraction of features acted on and the target output, n + 1 points each."""
        ids = self.ids(ctx)
        orders = self.orders(ctx, ids, ascending=self.least_first)
        F = orders[0].numel()
        n = min(self.n_steps, F)
        k = [(i * F) // n for i in range(n + 1)]
        # evaluated cuts: deletion i = 1..n, insertion i = 0..n-1 (the clean input's output is ctx.logits)
        ks = k[1:] if not self.insertion else k[:-1]
        y0 = self.y0(ctx)
        ys = []
        for order in orders:
            y = self.outputs_at(self.cut_logits(ctx, ids, order, ks, keep_top=self.insertion), ctx)
            ys.append(np.concatenate([[y0], y]) if not self.insertion else np.concatenate([y, [y0]]))
        return np.asarray(k, dtype=np.float64) / F, ys

    def compute(self, ctx):
        x, ys = self.curves(ctx)
        return {self.name: float(np.mean([np.trapezoid(y, x) for y in ys]))}


@METRICS.register("deletion_auc")
class DeletionAUC(_Curve):
    """Deletion AUC (RISE, Petsiuk et al. 2018): most-relevant-first removal to the baseline; lower is better.

    ``deletion_auc = sum_i (x_{i+1} - x_i) (y_i + y_{i+1}) / 2`` with
    ``y_i = p(target | top k_i features set to the baseline)`` (module docstring).
    """

    name = "deletion_auc"
    outputs = {"deletion_auc": False}


@METRICS.register("insertion_auc")
class InsertionAUC(_Curve):
    """Insertion AUC (RISE, Petsiuk et al. 2018): most-relevant-first insertion onto the baseline; higher is better.

    ``insertion_auc = sum_i (x_{i+1} - x_i) (y_i + y_{i+1}) / 2`` with
    ``y_i = p(target | only the top k_i features shown, baseline elsewhere)``.
    """

    name = "insertion_auc"
    outputs = {"insertion_auc": True}
    insertion = True


@METRICS.register("srg")
class SymmetricRelevanceGain(_Curve):
    """Symmetric relevance gain (Blücher, Vielhaben & Strodthoff, "Decoupling Pixel Flipping and Occlusion
    Strategy for Consistent XAI Benchmarks", 2024): the area between the least-relevant-first (LeRF) and the
    most-relevant-first (MoRF) deletion curves; higher is better.

    Both curves remove features to the baseline, cumulatively, in ``n_steps`` steps (as ``deletion_auc``):
    MoRF in decreasing attribution order, LeRF in increasing order.  With ``y`` the target probability::

        srg = AUC(LeRF) - AUC(MoRF)          in [-1, 1]

    A faithful explanation keeps the prediction while its least relevant
    features go (high LeRF) and loses it as soon as its most relevant ones go
    (low MoRF).  Taking the difference cancels what both curves share -- the
    model's reaction to the occlusion itself (out-of-distribution baseline
    inputs), which alone can make a bad map look good on a single curve -- so
    the score is symmetric: a map and its reverse score ``srg`` and ``-srg``,
    and an uninformative map (random or constant) scores 0 in expectation.
    Reported beside it: ``morf_auc`` (lower is better; equal to ``deletion_auc``)
    and ``lerf_auc`` (higher is better).  Ties as for every rank-based metric
    (seeded random orders of tied features, averaged).  Cost: 2 ``n_steps``
    forward passes per order.
    """

    name = "srg"
    outputs = {"srg": True, "morf_auc": False, "lerf_auc": True}

    def compute(self, ctx):
        aucs = {}
        for least_first in (False, True):
            self.least_first = least_first
            x, ys = self.curves(ctx)
            aucs[least_first] = float(np.mean([np.trapezoid(y, x) for y in ys]))
        self.least_first = False
        return {"srg": aucs[True] - aucs[False], "morf_auc": aucs[False], "lerf_auc": aucs[True]}
