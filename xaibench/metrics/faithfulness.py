"""Faithfulness by correlation and by monotonicity (Bhatt 2020; Nguyen & Martinez 2020; Arya 2019).

Common ground (:class:`~xaibench.metrics.perturbation.PerturbationMetric`): the input
is split into ``F`` features (grid cells, tubelets, pixels or superpixels,
:mod:`xaibench.perturb`); "removing"
a feature sets its positions (all colour channels) to the ``baseline``
(``zero`` by default).  ``a_f`` is feature ``f``'s *summed* attribution over
its positions (after ``|.|`` when ``abs``); orderings use the *mean* over the
positions (the same order when all features have the same size); ``y(x)`` is
the target class's logit or softmax probability (``output``); ``y0 = y(x)`` comes from the
unperturbed logits the harness already has (no extra forward pass).  All
perturbed inputs of one sample go through the model ``batch_size`` at a time;
all randomness (subsets, tie-breaking, ``uniform`` baselines) comes from
``ctx.rng``.

Differences from Quantus 0.6 (``quantus.FaithfulnessCorrelation``,
``MonotonicityCorrelation``, ``Monotonicity``), all of them deliberate and
documented per class: Quantus treats every array element (channel
included) as a feature and has no patch/tubelet grouping; its ``black``
baseline is the sample's minimum (ours: ``zero`` is 0), its ``mean`` one
scalar over all channels (ours: per channel), its ``uniform``
baseline one random grey level per perturbation (ours: per-pixel U[0,1]
noise), and it draws random numbers from the global numpy RNG.
Its attribution normalisation (divide by max |a|) changes no correlation and
is omitted.  With pixel features, a zero baseline and the same subsets
(:meth:`FaithfulnessCorrelation.score` accepts them), both correlations agree
with Quantus to 1e-6, on single-channel inputs and on RGB inputs through a
ViT adapter (``tests/test_metrics_quantus.py``).  Quantus's ``Monotonicity``
cannot be matched (see :class:`Monotonicity`).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from scipy import stats

from ..errors import UserError, check_range
from .base import METRICS
from ..perturb import feature_means, feature_totals
from .perturbation import PerturbationMetric


def _corr(kind: str, a: np.ndarray, b: np.ndarray) -> float:
    """Pearson / Spearman correlation (scipy) of attributions ``a`` and model effects ``b``.

    The degenerate-map policy (docs/metrics.md): when ``a`` is constant (a constant
    or all-zero map ranks nothing) the score is 0, no association -- the expectation
    for an uninformative map, so it is neither rewarded nor dropped; when the model's
    effects ``b`` are constant the correlation is undefined: NaN, counted in the
    summary's ``n_undefined``.
    """
    if np.ptp(b) == 0:
        return float("nan")
    if np.ptp(a) == 0:
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = stats.pearsonr(a, b)[0] if kind == "pearson" else stats.spearmanr(a, b)[0]
    return float(r)


def _steps(n_features: int, features_in_step, n_steps) -> int:
    """Features per step: ``features_in_step`` if given, else ``ceil(F / n_steps)``."""
    if features_in_step is not None:
        return int(features_in_step)
    return max(1, math.ceil(n_features / int(n_steps)))


@METRICS.register("faithfulness_correlation")
class FaithfulnessCorrelation(PerturbationMetric):
    """Faithfulness correlation (Bhatt, Weller & Moura, IJCAI 2020, "Evaluating and aggregating
    feature-based model explanations", eq. for mu_F; as in Quantus ``FaithfulnessCorrelation``).

    For runs ``r = 1 .. nr_runs`` draw a subset ``S_r`` of ``|S|`` distinct features
    uniformly at random (``rng.choice(F, |S|, replace=False)``, with a generator
    seeded per *sample*, so every method of a sample is scored on the same
    subsets: a paired comparison, and shared forward passes), set it to the
    baseline and record

        ``s_r = sum_{f in S_r} a_f``   and   ``d_r = y0 - y(x_{S_r -> baseline})``.

    ``faithfulness_correlation = pearson(s, d)`` (``scipy.stats.pearsonr``), in
    [-1, 1], higher is better; 0 when ``s`` is constant (a constant or all-zero
    map: no association), NaN when ``d`` is constant (undefined).

    Parameters: ``nr_runs`` (default 100, as Bhatt/Quantus), ``subset_size``
    (number of features, ``1 <= |S| < F``) or, if it is not given,
    ``subset_fraction`` (default 0.1: ``|S| = max(1, round(0.1 F))``), ``abs``
    (default False, as Quantus), ``output`` (default ``logit``, as Quantus's
    ``softmax=False``), plus the shared perturbation parameters.  Cost:
    ``nr_runs`` forward passes.
    """

    name = "faithfulness_correlation"
    outputs = {"faithfulness_correlation": True}
    default_output = "logit"

    def __init__(self, nr_runs: int = 100, subset_size: int | None = None, subset_fraction: float = 0.1,
                 abs: bool = False, **kw):
        super().__init__(**kw)
        self.nr_runs = check_range("metric.nr_runs", nr_runs, 2, 10**6, integer=True)
        self.subset_size = None if subset_size is None else check_range("metric.subset_size", subset_size, 1,
                                                                         10**9, integer=True)
        self.subset_fraction = check_range("metric.subset_fraction", subset_fraction, 1e-9, 1.0)
        self.abs = bool(abs)

    def params(self):
        return {"nr_runs": self.nr_runs, "subset_size": self.subset_size, "subset_fraction": self.subset_fraction,
                "abs": self.abs, **super().params()}

    def subset_len(self, n_features: int) -> int:
        k = self.subset_size if self.subset_size is not None else max(1, round(self.subset_fraction * n_features))
        if not 1 <= k < n_features:
            raise UserError(f"faithfulness_correlation subset size {k} must be in [1, {n_features - 1}] for "
                            f"{n_features} features; lower subset_size/subset_fraction or use finer features")
        return k

    def draw_subsets(self, rng: np.random.Generator, n_features: int) -> np.ndarray:
        k = self.subset_len(n_features)
        return np.stack([rng.choice(n_features, k, replace=False) for _ in range(self.nr_runs)])

    def score(self, ctx, subsets: np.ndarray | None = None) -> dict:
        """The metric, optionally on given subsets (R, |S|) of feature indices (to replay another tool's draws).

        Also returns the attribution sums ``s`` and output drops ``d``.
        """
        ids = self.ids(ctx)
        a = self.attribution(ctx)
        if self.abs:
            a = a.abs()
        tot = feature_totals(a, ids).cpu().numpy()
        n = tot.shape[0]
        if subsets is None:  # drawn per sample, not per method: every method is scored on the same subsets
            subsets = self.draw_subsets(ctx.shared_rng(self.name), n)
        subsets = np.asarray(subsets, dtype=np.int64)
        keep = torch.ones(subsets.shape[0], n, dtype=torch.bool)
        keep[torch.arange(subsets.shape[0])[:, None], torch.from_numpy(subsets)] = False
        y = self.outputs_at(self.perturber(ctx, ids).logits(keep), ctx)
        drops = self.y0(ctx) - y
        sums = tot[subsets].sum(1)
        return {"faithfulness_correlation": _corr("pearson", sums, drops), "sums": sums, "drops": drops}

    def compute(self, ctx):
        return {"faithfulness_correlation": self.score(ctx)["faithfulness_correlation"]}


class _Ascending(PerturbationMetric):
    """Features in increasing attribution order, grouped in steps (Quantus's ``features_in_step``)."""

    def __init__(self, features_in_step: int | None = None, n_steps: int = 64, abs: bool = True, **kw):
        super().__init__(**kw)
        self.features_in_step = None if features_in_step is None else check_range(
            "metric.features_in_step", features_in_step, 1, 10**9, integer=True)
        self.n_steps = check_range("metric.n_steps", n_steps, 2, 10**6, integer=True)
        self.abs = bool(abs)

    def params(self):
        return {"features_in_step": self.features_in_step, "n_steps": self.n_steps, "abs": self.abs,
                **super().params()}

    def chunks(self, ctx):
        """(ids, per-feature summed attribution, [chunks in ascending order, one list per tie order])."""
        ids = self.ids(ctx)
        a = self.attribution(ctx)
        if self.abs:
            a = a.abs()
        from ..perturb import tie_orders

        orders = tie_orders(-feature_means(a, ids), ctx.rng, self.tie_draws)  # ascending attribution
        n = orders[0].numel()
        k = _steps(n, self.features_in_step, self.n_steps)
        return ids, feature_totals(a, ids).cpu().numpy(), [[o[i:i + k] for i in range(0, n, k)] for o in orders]


@METRICS.register("monotonicity_correlation")
class MonotonicityCorrelation(_Ascending):
    """Monotonicity correlation (Nguyen & Martinez 2020, "On quantitative aspects of model
    interpretability", arXiv 2007.07584), exactly as Quantus 0.6 ``MonotonicityCorrelation`` defines it.

    Sort the features by increasing attribution (``|a|`` when ``abs``, default
    True as Quantus; ties in seeded random order) and cut the order into
    consecutive chunks ``C_1 .. C_J`` of ``features_in_step`` features
    (default ``ceil(F / n_steps)``, ``n_steps`` = 64).  For each chunk, remove
    only that chunk (set it to the baseline) ``N`` times and record

        ``v_j = mean_{n=1..N} (y(x_{C_j -> baseline, n}) - y0)^2 * w``,
        ``w = 1 / y0^2`` if ``|y0| >= eps`` (1e-5) else 1,
        ``att_j = sum_{f in C_j} a_f``.

    ``monotonicity_correlation = spearman(att, v)`` (``scipy.stats.spearmanr``,
    average ranks for ties), higher is better; 0 when ``att`` is constant, NaN
    when ``v`` is.
    ``y`` is the softmax probability by default (Quantus's ``softmax=True``).
    ``N = nr_samples`` (default 10; Quantus 100) only for the random ``uniform``
    baseline, each sample a fresh noise baseline shared by all chunks; a
    deterministic baseline gives ``N`` identical predictions, so it uses ``N = 1``
    (same value, N times fewer passes).  Cost: ``J * N`` forward passes.
    """

    name = "monotonicity_correlation"
    outputs = {"monotonicity_correlation": True}
    default_output = "prob"

    def __init__(self, nr_samples: int = 10, eps: float = 1e-5, **kw):
        super().__init__(**kw)
        self.nr_samples = check_range("metric.nr_samples", nr_samples, 1, 10**6, integer=True)
        self.eps = check_range("metric.eps", eps, 0.0, 1e9)

    def params(self):
        return {"nr_samples": self.nr_samples, "eps": self.eps, **super().params()}

    def score(self, ctx) -> dict:
        ids, tot, per_order = self.chunks(ctx)
        y0 = self.y0(ctx)
        w = 1.0 / abs(y0) ** 2 if abs(y0) >= self.eps else 1.0
        n_samples = self.nr_samples if self.baseline == "uniform" else 1
        rs, atts, vs = [], [], []
        for chunks in per_order:
            keep = torch.ones(len(chunks), tot.shape[0], dtype=torch.bool)
            for j, c in enumerate(chunks):
                keep[j, c] = False
            sq = np.zeros(len(chunks))
            for _ in range(n_samples):
                y = self.outputs_at(self.perturber(ctx, ids).logits(keep), ctx)
                sq += (y - y0) ** 2
            v = sq / n_samples * w
            att = np.array([tot[c.cpu().numpy()].sum() for c in chunks])
            rs.append(_corr("spearman", att, v))
            atts.append(att)
            vs.append(v)
        return {"monotonicity_correlation": float(np.mean(rs)), "att": atts[0], "var": vs[0]}

    def compute(self, ctx):
        return {"monotonicity_correlation": self.score(ctx)["monotonicity_correlation"]}


@METRICS.register("monotonicity")
class Monotonicity(_Ascending):
    """Monotonicity (Arya et al. 2019, "One explanation does not fit all", AIX360; as Quantus 0.6 ``Monotonicity``).

    Start from the all-baseline input and add the features back cumulatively in
    increasing attribution order (``|a|`` when ``abs``, default True as Quantus),
    ``features_in_step`` at a time (default ``ceil(F / n_steps)``, ``n_steps`` =
    64): after step ``j`` the chunks ``C_1 .. C_j`` show the input, the rest the
    baseline, and ``p_j = y(x_{C_1..C_j})`` (softmax probability by default, as
    Quantus).  With ``Delta_j = p_{j+1} - p_j`` (j = 1 .. J-1):

    * ``monotonicity`` = fraction of steps with ``Delta_j >= 0`` (the probability
      does not decrease when a more important chunk is added), in [0, 1],
      higher is better;
    * ``monotonicity_all`` = 1 if every ``Delta_j >= 0`` else 0: Quantus's
      boolean, higher is better.

    NaN when there is a single step.  Cost: ``J`` forward passes.

    Caveat: the fraction is dominated by the many low-attribution steps, whose
    effect on the output is noise; a map that puts the evidence *last* (a
    correct one) is not rewarded.  On ``timesformer_synth`` with the
    ground-truth mask as attribution the mask scores 0.51, a random map 0.88 and
    the mask's complement 0.92 (6 test clips, ``n_steps`` 16): read it with care.

    Not comparable with Quantus 0.6's ``Monotonicity``: its add-back step calls
    the baseline-*replacement* perturbation on the all-baseline array, so it
    never puts the input back, always predicts the all-baseline input and
    returns True for any attribution (checked: on a linear model it returns True
    for an attribution and for its reverse).  We follow Arya et al.'s
    description instead; ``tests/test_metrics.py`` checks it against a hand
    computation on a linear model.
    """

    name = "monotonicity"
    outputs = {"monotonicity": True, "monotonicity_all": True}
    default_output = "prob"

    def score(self, ctx) -> dict:
        ids, tot, per_order = self.chunks(ctx)
        fracs, alls, curves = [], [], []
        for chunks in per_order:
            keep = torch.zeros(len(chunks), tot.shape[0], dtype=torch.bool)
            for j, c in enumerate(chunks):
                keep[j:, c] = True
            p = self.outputs_at(self.perturber(ctx, ids).logits(keep), ctx)
            d = np.diff(p)
            curves.append(p)
            fracs.append(float(np.mean(d >= 0)) if d.size else float("nan"))
            alls.append(float(np.all(d >= 0)) if d.size else float("nan"))
        return {"monotonicity": float(np.mean(fracs)), "monotonicity_all": float(np.mean(alls)), "curve": curves[0]}

    def compute(self, ctx):
        s = self.score(ctx)
        return {"monotonicity": s["monotonicity"], "monotonicity_all": s["monotonicity_all"]}
