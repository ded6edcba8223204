"""Faithfulness by correlation and by monotonicity (Bhatt 2020; Nguyen & Martinez 2020; Arya 2019).

Common ground (:mod:`xaibench.metrics.perturbation`): the input is split into
``F`` features (grid cells, tubelets, pixels or superpixels,
:mod:`xaibench.perturb`); "removing" a feature sets its positions (all colour
channels) to the ``baseline`` (``zero`` by default).  ``a_f`` is feature
``f``'s *summed* attribution over its positions (after ``|.|`` when ``abs``);
orderings use the *mean* over the positions (the same order when all features
have the same size); ``y(x)`` is the target class's logit or softmax
probability (``output``); ``y0 = y(x)`` comes from the unperturbed logits the
harness already has (no extra forward pass).  The perturbed inputs of every
item of a batch go through the model together, ``batch_size`` at a time; all
randomness (subsets, ``uniform`` baselines) comes from the item's generators.

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

Ties (docs/ties.md): the two monotonicity metrics depend on the order of the
features *within* a step only through the chunks' contents, so they are exact
(one order) when no chunk boundary falls inside a tie group, and otherwise the
mean over seeded whole tie orders, drawn until the tie standard error
(``<output>_tie_se``) is at most ``tie_se``.  Faithfulness correlation ranks
nothing (random subsets): no tie rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import List, Optional

import numpy as np
import torch

from ..analysis.schema import Output
from ..config import param
from ..errors import UserError
from ..perturb import Masks
from .base import METRICS, EvalBatch, EvalItem
from .perturbation import (OUTPUTS, OrderScore, OrderTies, PerturbationConfig, PerturbationMetric, TieConfig,
                           pearson_rows, spearman_rows, target_output, tie_se_outputs)


# ---------------------------------------------------------------------------------------------- faithfulness corr.
@dataclass
class FaithfulnessCorrelationConfig(PerturbationConfig):
    nr_runs: int = param(100, range=(2, 10 ** 6), help="random subsets per sample")
    subset_size: Optional[int] = param(None, range=(1, 10 ** 9), help="features per subset (null: subset_fraction)")
    subset_fraction: float = param(0.1, range=(1e-9, 1.0), active=lambda c: c.subset_size is None,
                                   help="subset size as a fraction of the features (when subset_size is null)")
    abs: bool = param(False, help="correlate |attribution| sums")
    output: str = param("logit", choices=OUTPUTS, help="model output read for the target class")


class SubsetMasks(Masks):
    """The faithfulness subsets of one item, drawn in order as the perturber asks for them (memory bounded by
    a chunk, whatever ``nr_runs``): row r removes ``rng.choice(F, k, replace=False)`` (or ``subsets[r]``),
    and ``sums[r]`` records the attribution of that subset."""

    def __init__(self, rng, totals: np.ndarray, k: int, runs: int, subsets: Optional[np.ndarray] = None):
        self.rng, self.tot, self.k, self.runs = rng, totals, int(k), int(runs)
        self.subsets = None if subsets is None else np.asarray(subsets, dtype=np.int64)
        self.n_features = totals.shape[0]
        self.sums = np.zeros(self.runs)
        self.next = 0

    def __len__(self):
        return self.runs

    def rows(self, lo, hi):
        if lo != self.next:
            raise RuntimeError("subset masks are drawn in order")
        if self.subsets is not None:
            sub = self.subsets[lo:hi]
        else:
            sub = np.stack([self.rng.choice(self.n_features, self.k, replace=False) for _ in range(hi - lo)])
        keep = torch.ones((hi - lo, self.n_features), dtype=torch.bool)
        keep[torch.arange(hi - lo)[:, None], torch.from_numpy(sub)] = False
        self.sums[lo:hi] = self.tot[sub].sum(1)
        self.next = hi
        return keep


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

    ``faithfulness_correlation = pearson(s, d)`` (as ``scipy.stats.pearsonr``), in
    [-1, 1], higher is better; 0 when ``s`` is constant (a constant or all-zero
    map: no association), NaN when ``d`` is constant (undefined).

    Parameters: ``nr_runs`` (default 100, as Bhatt/Quantus), ``subset_size``
    (number of features, ``1 <= |S| < F``) or, if it is not given,
    ``subset_fraction`` (default 0.1: ``|S| = max(1, round(0.1 F))``), ``abs``
    (default False, as Quantus), ``output`` (default ``logit``, as Quantus's
    ``softmax=False``), plus the shared perturbation parameters.  Cost:
    ``nr_runs`` forward passes per sample (shared by its methods).  The subsets
    are drawn and evaluated a chunk at a time: memory does not grow with
    ``nr_runs`` beyond two numbers per run.
    """

    Config = FaithfulnessCorrelationConfig
    outputs = {"faithfulness_correlation": Output(True)}
    tag = "faithfulness_correlation"  # the shared generator's tag (the same subsets for every method)

    def subset_len(self, n_features: int) -> int:
        c = self.cfg
        k = c.subset_size if c.subset_size is not None else max(1, round(c.subset_fraction * n_features))
        if not 1 <= k < n_features:
            raise UserError(f"faithfulness_correlation subset size {k} must be in [1, {n_features - 1}] for "
                            f"{n_features} features; lower subset_size/subset_fraction or use finer features")
        return k

    def draw_subsets(self, rng: np.random.Generator, n_features: int) -> np.ndarray:
        k = self.subset_len(n_features)
        return np.stack([rng.choice(n_features, k, replace=False) for _ in range(self.cfg.nr_runs)])

    def score_items(self, batch: EvalBatch, subsets: Optional[List[np.ndarray]] = None) -> List[dict]:
        """Per item: the metric, the attribution sums ``sums`` and the output drops ``drops``; optionally on
        given subsets (one (R, |S|) array per item, e.g. to replay another tool's draws)."""
        cfg = self.cfg
        p = self.perturber(batch)
        jobs = []
        for prep in self.prepare(batch, p):
            tot = prep.totals(cfg.abs)
            F = tot.shape[0]
            if subsets is not None:
                sub = np.asarray(subsets[prep.index], dtype=np.int64)
                masks = SubsetMasks(None, tot, sub.shape[1], sub.shape[0], sub)
            else:
                masks = SubsetMasks(prep.item.shared_rng(self.tag), tot, self.subset_len(F), cfg.nr_runs)
            item = prep.item
            y0 = float(target_output(item.logits[None], item.target, cfg.output)[0])
            req = p.add(prep.source, masks, partial(target_output, target=item.target, output=cfg.output))
            jobs.append((masks, req, y0))
        p.run()
        out = []
        for masks, req, y0 in jobs:
            drops = y0 - req.values.cpu().numpy()
            r = float(pearson_rows(masks.sums, drops)[0])
            out.append({"faithfulness_correlation": r, "sums": masks.sums, "drops": drops})
        return out

    def score(self, adapter, item: EvalItem, subsets: Optional[np.ndarray] = None, batch_size: int = 32) -> dict:
        """One item (tests, scripts): :meth:`score_items` of a batch of ``item`` alone, optionally on the given
        (R, |S|) ``subsets`` of its features (e.g. another tool's draws)."""
        batch = EvalBatch(adapter=adapter, items=[item], batch_size=batch_size)
        return self.score_items(batch, None if subsets is None else [subsets])[0]

    def evaluate(self, batch):
        return [{"faithfulness_correlation": r["faithfulness_correlation"]} for r in self.score_items(batch)]


# ---------------------------------------------------------------------------------------------- monotonicity
@dataclass
class AscendingConfig(TieConfig):
    features_in_step: Optional[int] = param(None, range=(1, 10 ** 9),
                                            help="features per step (null: ceil(F / n_steps))")
    n_steps: int = param(64, range=(2, 10 ** 6), active=lambda c: c.features_in_step is None,
                         help="number of steps (when features_in_step is null)")
    abs: bool = param(True, help="rank |attribution| (as Quantus)")
    output: str = param("prob", choices=OUTPUTS, help="model output read for the target class")


def steps_of(n_features: int, features_in_step, n_steps) -> int:
    """Features per step: ``features_in_step`` if given, else ``ceil(F / n_steps)``."""
    if features_in_step is not None:
        return int(features_in_step)
    return max(1, math.ceil(n_features / int(n_steps)))


def chunk_ranges(F: int, k: int):
    """The chunks ``C_1 .. C_J`` of ``k`` features in *increasing* attribution order, as position ranges
    [lo, hi) of the decreasing order (the last chunk is shorter when k does not divide F)."""
    return [(max(0, F - (j + k)), F - j) for j in range(0, F, k)]


class _Ascending(PerturbationMetric):
    Config = AscendingConfig


@dataclass
class MonotonicityCorrelationConfig(AscendingConfig):
    nr_samples: int = param(10, range=(1, 10 ** 6), active=lambda c: c.baseline == "uniform",
                            help="noise baselines per step (uniform baseline only)")
    eps: float = param(1e-5, range=(0.0, 1e9), help="|y0| below which the weight 1/y0^2 is 1")


@METRICS.register("monotonicity_correlation")
class MonotonicityCorrelation(_Ascending):
    """Monotonicity correlation (Nguyen & Martinez 2020, "On quantitative aspects of model
    interpretability", arXiv 2007.07584), exactly as Quantus 0.6 ``MonotonicityCorrelation`` defines it.

    Sort the features by increasing attribution (``|a|`` when ``abs``, default
    True as Quantus) and cut the order into consecutive chunks ``C_1 .. C_J`` of
    ``features_in_step`` features (default ``ceil(F / n_steps)``, ``n_steps`` =
    64).  For each chunk, remove only that chunk (set it to the baseline) ``N``
    times and record

        ``v_j = mean_{n=1..N} (y(x_{C_j -> baseline, n}) - y0)^2 * w``,
        ``w = 1 / y0^2`` if ``|y0| >= eps`` (1e-5) else 1,
        ``att_j = sum_{f in C_j} a_f``.

    ``monotonicity_correlation = spearman(att, v)`` (as ``scipy.stats.spearmanr``,
    average ranks for ties), higher is better; 0 when ``att`` is constant, NaN
    when ``v`` is.
    ``y`` is the softmax probability by default (Quantus's ``softmax=True``).
    ``N = nr_samples`` (default 10; Quantus 100) only for the random ``uniform``
    baseline, each sample a fresh noise baseline shared by all chunks (and by
    all tie orders); a deterministic baseline gives ``N`` identical
    predictions, so it uses ``N = 1`` (same value, N times fewer passes).
    Cost: ``J * N`` forward passes per tie order.
    """

    Config = MonotonicityCorrelationConfig
    outputs = tie_se_outputs({"monotonicity_correlation": Output(True)})

    def evaluate(self, batch):
        cfg = self.cfg
        p = self.perturber(batch)
        scores = []
        for prep in self.prepare(batch, p):
            item = prep.item
            r = prep.ranking(cfg.abs)
            tot = prep.totals(cfg.abs)
            F = r.F
            chunks = chunk_ranges(F, steps_of(F, cfg.features_in_step, cfg.n_steps))
            y0 = float(target_output(item.logits[None], item.target, cfg.output)[0])
            w = 1.0 / abs(y0) ** 2 if abs(y0) >= cfg.eps else 1.0
            sources = [prep.source]
            if cfg.baseline == "uniform":  # N noise baselines, drawn in order from the item's generator
                sources = prep.noise_sources(p, cfg, cfg.nr_samples)

            def sq(logits, target=item.target, y0=y0):
                return (target_output(logits, target, cfg.output) - y0) ** 2

            def fn(v, variants, r=r, tot=tot, chunks=chunks, w=w):
                att = np.empty_like(v)
                for o, var in enumerate(variants):
                    pos = r.positions(var)
                    att[o] = [tot[(pos >= lo) & (pos < hi)].sum() for lo, hi in chunks]
                return {"monotonicity_correlation": spearman_rows(att, v * w)}

            scores.append(OrderScore(r, sources, sq, [(lo, hi, True) for lo, hi in chunks], fn,
                                     ["monotonicity_correlation"]))
        return OrderTies(cfg.tie_se, cfg.tie_max_draws).run(p, scores)


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

    NaN when there is a single step.  Cost: ``J`` forward passes per tie order.

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

    outputs = tie_se_outputs({"monotonicity": Output(True), "monotonicity_all": Output(True)})

    def evaluate(self, batch):
        cfg = self.cfg
        p = self.perturber(batch)
        scores = []
        for prep in self.prepare(batch, p):
            item = prep.item
            r = prep.ranking(cfg.abs)
            chunks = chunk_ranges(r.F, steps_of(r.F, cfg.features_in_step, cfg.n_steps))
            cuts = [(lo, r.F, False) for lo, _ in chunks]  # chunks 1..j shown: the bottom positions from lo

            def fn(y, variants):
                d = np.diff(y, axis=1)
                if d.shape[1] == 0:
                    nan = np.full(y.shape[0], np.nan)
                    return {"monotonicity": nan, "monotonicity_all": nan}
                return {"monotonicity": (d >= 0).mean(1), "monotonicity_all": (d >= 0).all(1).astype(float)}

            scores.append(OrderScore(r, [prep.source], partial(target_output, target=item.target, output=cfg.output),
                                     cuts, fn, ["monotonicity", "monotonicity_all"]))
        return OrderTies(cfg.tie_se, cfg.tie_max_draws).run(p, scores)


