"""Deletion and insertion curves (Petsiuk, Das & Saenko, "RISE", BMVC 2018, section 4.1) and the symmetric
relevance gain (Blücher, Vielhaben & Strodthoff 2024).

Features (:mod:`xaibench.perturb`: grid cells, tubelets or superpixels) are
ranked by decreasing mean attribution.  With ``F`` features and
``n = min(n_steps, F)`` steps, step ``i`` (``i = 0 .. n``) acts on the top
``k_i = floor(i F / n)`` features and sits at ``x_i = k_i / F`` (so x runs
over [0, 1] and includes 0 and 1).  ``y`` is the softmax probability of the
target class (``output='prob'``, the default; ``logit`` is available).

* ``deletion_auc`` (lower is better): ``y_i`` = the output when the top ``k_i``
  features are set to the baseline (``x_0`` is the clean input);
* ``insertion_auc`` (higher is better): ``y_i`` = the output when only the top
  ``k_i`` features show the input and everything else is the baseline (``x_0``
  is the all-baseline input, ``x_n`` the clean input).

AUC = trapezoid rule over the points ``(x_i, y_i)``, i = 0 .. n
(``numpy.trapezoid``); with probabilities it lies in [0, 1].  The clean
input's output comes from the harness's logits (no extra pass), so a curve
costs at most ``n`` forward passes.  Baseline default ``zero`` (RISE deletes
to black and inserts onto a blurred copy: set ``baseline: blur`` for
insertion to follow it).

Ties (docs/ties.md): an AUC is a weighted sum of its points, so its expectation
over the orders of tied features is the same weighted sum of each point's
expectation.  A point whose cut falls on a tie-group boundary is exact; a cut
inside a group removes a uniformly random subset of it, whose expected output
is computed exactly (every subset) when there are few, else estimated from
seeded antithetic draws until the AUC's tie standard error is at most
``tie_se`` (reported as ``<output>_tie_se``).  The curves share their points:
deletion's and SRG's MoRF points are the same masks, SRG's LeRF points and
insertion's points are "keep the top m" masks like STAA's, and the draws of a
tied cut are the same in every metric, so the output cache answers each
distinct mask of a sample once.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np

from ..analysis.schema import Output
from ..config import param
from .base import METRICS
from .perturbation import (OUTPUTS, LinearScore, LinearTies, PerturbationMetric, TieConfig, target_output,
                           tie_se_outputs, trapezoid_weights)


@dataclass
class CurveConfig(TieConfig):
    n_steps: int = param(20, range=(1, 10 ** 6), help="steps of the curve (at most one per feature)")
    output: str = param("prob", choices=OUTPUTS, help="model output read for the target class")
    spacing: str = param("uniform", choices=("uniform", "ends"),
                         help="where the curve's points lie: uniform (the papers) or dense at both ends "
                              "(resolves small evidence; docs/metrics.md)")


def steps(F: int, n_steps: int, spacing: str = "uniform"):
    """(k_i, x_i): features acted on at each of the ``n + 1`` points, and their fraction.

    ``uniform``: ``k_i = floor(i F / n)``.  ``ends``: the same number of points, halved geometrically towards
    both ends of [0, 1] (``x`` = 0, ..., 1/8, 1/4, 1/2, 3/4, 7/8, ..., 1 when ``n`` is even), so that the first
    and last few per cent of the features -- where a small evidence region is removed (MoRF) or is all that
    is left (LeRF) -- get as many points as the middle; duplicate cuts (fewer features than points) are
    dropped.  Either way the AUC is the trapezoid rule over the points, an estimate of the same integral.
    """
    n = min(int(n_steps), F)
    if spacing == "uniform" or n < 4:
        k = np.array([(i * F) // n for i in range(n + 1)], dtype=np.int64)
    else:
        half = n // 2
        left = [0.5 ** e for e in range(half, 1, -1)]  # 2^-half .. 1/4 (half - 1 points)
        frac = [0.0] + left + [0.5] + [1.0 - f for f in reversed(left)] + [1.0]
        if n % 2:  # odd n: one more point, in the middle of the largest gap on the right
            frac.insert(half + 1, 0.625)
        k = np.unique(np.floor(np.asarray(frac) * F + 1e-9).astype(np.int64))
    return k, k.astype(np.float64) / F


class _Curves(PerturbationMetric):
    Config = CurveConfig
    #: the curves this metric reads: "morf" (deletion, most relevant first), "lerf" (deletion, least relevant
    #: first), "insertion"
    curves: tuple = ()

    def evaluate(self, batch):
        cfg = self.cfg
        p = self.perturber(batch)
        scores = []
        for prep in self.prepare(batch, p):
            item = prep.item
            r = prep.ranking()
            F = r.F
            k, x = steps(F, cfg.n_steps, cfg.spacing)
            w = trapezoid_weights(x)
            y0 = float(target_output(item.logits[None], item.target, cfg.output)[0])
            s = LinearScore(r, prep.source, partial(target_output, target=item.target, output=cfg.output),
                            self.score_outputs())
            for curve in self.curves:
                for o, sign in self.reads(curve):
                    for i in range(len(k)):
                        wi = sign * w[i]
                        if curve == "insertion":  # keep the top k_i; the last point is the clean input
                            if k[i] == F:
                                s.constant(o, wi * y0)
                            else:
                                s.add(o, wi, "top", k[i])
                        elif curve == "morf":  # remove the top k_i = keep the bottom F - k_i
                            if k[i] == 0:
                                s.constant(o, wi * y0)
                            else:
                                s.add(o, wi, "bottom", F - k[i])
                        else:  # lerf: remove the bottom k_i = keep the top F - k_i
                            if k[i] == 0:
                                s.constant(o, wi * y0)
                            else:
                                s.add(o, wi, "top", F - k[i])
            scores.append(s)
        return LinearTies(cfg.tie_se, cfg.tie_max_draws).run(p, scores)

    def score_outputs(self):
        return [o for o in self.outputs if not o.endswith("_tie_se")]

    def reads(self, curve):
        """[(output, sign)] of the outputs that curve ``curve`` enters."""
        raise NotImplementedError


@METRICS.register("deletion_auc")
class DeletionAUC(_Curves):
    """Deletion AUC (RISE, Petsiuk et al. 2018): most-relevant-first removal to the baseline; lower is better.

    ``deletion_auc = sum_i (x_{i+1} - x_i) (y_i + y_{i+1}) / 2`` with
    ``y_i = p(target | top k_i features set to the baseline)`` (module docstring).
    """

    outputs = tie_se_outputs({"deletion_auc": Output(False)})
    curves = ("morf",)

    def reads(self, curve):
        return [("deletion_auc", 1.0)]


@METRICS.register("insertion_auc")
class InsertionAUC(_Curves):
    """Insertion AUC (RISE, Petsiuk et al. 2018): most-relevant-first insertion onto the baseline; higher is better.

    ``insertion_auc = sum_i (x_{i+1} - x_i) (y_i + y_{i+1}) / 2`` with
    ``y_i = p(target | only the top k_i features shown, baseline elsewhere)``.
    """

    outputs = tie_se_outputs({"insertion_auc": Output(True)})
    curves = ("insertion",)

    def reads(self, curve):
        return [("insertion_auc", 1.0)]


@METRICS.register("srg")
class SymmetricRelevanceGain(_Curves):
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
    and an uninformative map scores 0 in expectation; a constant map scores 0
    exactly (its MoRF and LeRF cuts are the same random subsets, so their
    terms cancel before any draw).  Reported beside it: ``morf_auc`` (lower
    is better; equal to ``deletion_auc``) and ``lerf_auc`` (higher is better).
    Cost: at most ``2 n_steps - 1`` forward passes (the all-removed input is
    shared).
    """

    outputs = tie_se_outputs({"srg": Output(True), "morf_auc": Output(False), "lerf_auc": Output(True)})
    curves = ("morf", "lerf")

    def reads(self, curve):
        if curve == "morf":
            return [("srg", -1.0), ("morf_auc", 1.0)]
        return [("srg", 1.0), ("lerf_auc", 1.0)]
