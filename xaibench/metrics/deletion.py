"""Deletion and insertion curves (Petsiuk, Das & Saenko, "RISE", BMVC 2018, section 4.1).

Features (``pixel`` | ``patch`` | ``tubelet``) are ranked by decreasing mean
attribution (:func:`~xaibench.metrics.perturb.rank`, ties in seeded random
order).  With ``F`` features and ``n = min(n_steps, F)`` steps, step ``i``
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
costs ``n`` forward passes.  Baseline default ``zero`` (RISE deletes to black
and inserts onto a blurred copy: set ``baseline: blur`` for insertion to
follow it).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import check_range
from . import METRICS
from .perturb import feature_scores, rank
from .perturbation import PerturbationMetric, target_output


class _Curve(PerturbationMetric):
    default_output = "prob"
    insertion = False

    def __init__(self, n_steps: int = 20, **kw):
        super().__init__(**kw)
        self.n_steps = check_range("metric.n_steps", n_steps, 1, 10**6, integer=True)

    def params(self):
        return {"n_steps": self.n_steps, **super().params()}

    def curve(self, ctx):
        """(x, y): fraction of features acted on and the target output, n + 1 points."""
        ids = self.ids(ctx)
        order = rank(feature_scores(self.attribution(ctx), ids), ctx.rng)
        F = order.numel()
        n = min(self.n_steps, F)
        k = [(i * F) // n for i in range(n + 1)]
        # rows to evaluate: deletion i = 1..n, insertion i = 0..n-1 (the clean input is ctx.logits)
        rows = range(1, n + 1) if not self.insertion else range(0, n)
        keep = torch.zeros(len(rows), F, dtype=torch.bool) if self.insertion else torch.ones(len(rows), F,
                                                                                             dtype=torch.bool)
        for r, i in enumerate(rows):
            keep[r, order[: k[i]]] = self.insertion
        y = target_output(self.predict_keep(ctx, self.make_baseline(ctx), ids, keep), ctx.target, self.output)
        y0 = self.y0(ctx)
        y = np.concatenate([[y0], y]) if not self.insertion else np.concatenate([y, [y0]])
        return np.asarray(k, dtype=np.float64) / F, y

    def compute(self, ctx):
        x, y = self.curve(ctx)
        return {self.name: float(np.trapezoid(y, x))}


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
