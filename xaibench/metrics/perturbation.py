"""What the perturbation metrics share: parameters, the batched evaluation of perturbed inputs, the tie rule.

Parameters
----------
:class:`PerturbationConfig` extends :class:`xaibench.perturb.FeatureConfig`
(``features``, ``cell`` -- default: the model's patch, i.e. its first-stage
token grid --, ``frames_per_group``, ``n_segments``, ``compactness``,
``baseline``, ``blur_sigma``) with ``batch_size`` (model batch size of the
perturbed inputs; null: the run's); :class:`TieConfig` adds the tie rule's
``tie_se`` and ``tie_max_draws``.  ``output`` (where a metric has it) chooses
the model output read for the target class: ``logit`` or ``prob`` (softmax,
in float64 from the float32 logits).

Batched evaluation
------------------
``evaluate(batch)`` scores every (sample, method) item of an
:class:`~xaibench.metrics.base.EvalBatch` together: the masks of all items go
to one :class:`xaibench.perturb.Perturber`, which packs them into full model
batches on the adapter's device and looks each one up in the in-run output
cache, so a mask evaluated for a sample by another method, metric or step is
not evaluated again.  The per-mask model output (target probability, STAA
distance) is computed on the device for a whole batch; the few numbers per
item that make a score (an AUC, a correlation) are then combined on the host.
Composition is exact (``torch.where``), so scores depend on ``batch_size``
only through the float rounding of the model's batched matrix products.

Ranking and ties (docs/ties.md)
-------------------------------
Features are ranked by decreasing *mean* attribution
(:class:`xaibench.perturb.Ranking`).  A step that acts on the top ``k``
features removes, when the k-th feature is tied with others, a uniformly
random subset of its tie group; a score is its expectation over the orders of
the tied features.  :class:`LinearTies` computes it for scores that are a
weighted sum of per-mask outputs (deletion / insertion / SRG AUCs, STAA
faithfulness): exactly when every cut falls on a tie-group boundary, when a
cut's subsets are few enough to enumerate, or when the terms cancel (a
constant map's SRG); else by seeded draws of each cut's subset, in antithetic
pairs, doubled until the standard error of every output is at most
``tie_se`` or ``tie_max_draws`` is reached.  :class:`OrderTies` does the same
for scores of a whole order (rank correlations, monotonicity fractions) by
drawing whole tie orders.  Each output ``o`` reports its tie standard error
as the descriptive output ``o_tie_se`` (0 when exact).  Draws are seeded by
the run seed, the sample and the scores, so every metric and method that
ranks the same scores on the same sample shares their masks and outputs.
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..analysis.schema import DESCRIPTIVE, Output, tie_se_name
from ..config import param
from ..errors import UserError
from ..perturb import (CutMasks, FeatureConfig, Features, Perturber, Ranking, Source, feature_means, feature_totals,
                       n_subsets, token_cell)
from .base import EvalBatch, EvalItem, Metric

OUTPUTS = ("logit", "prob")
#: random-baseline sources (noise draws) made and evaluated together, at most
SOURCE_CHUNK = 16


# ---------------------------------------------------------------------------------------------- configs
@dataclass
class PerturbationConfig(FeatureConfig):
    """Features, baseline and model batch size of a perturbation metric."""

    batch_size: Optional[int] = param(None, range=(1, 1 << 20), neutral=True,
                                      help="model batch size of the perturbed inputs (null: the run's batch_size)")


@dataclass
class TieConfig(PerturbationConfig):
    """The tie rule's parameters (module docstring; docs/ties.md)."""

    tie_se: float = param(0.01, range=(0.0, 1.0),
                          help="draw tie orders until the tie-induced standard error of each score is at most this")
    tie_max_draws: int = param(64, range=(2, 100000),
                               help="at most this many draws per tied cut (per order for order-based scores)")


def tie_se_outputs(outputs: Dict[str, Output]) -> Dict[str, Output]:
    """``outputs`` plus a descriptive ``<name>_tie_se`` for each: the standard error the tie rule left."""
    return {**outputs, **{tie_se_name(k): Output(None, kind=DESCRIPTIVE) for k in outputs}}


# ---------------------------------------------------------------------------------------------- model outputs
def target_output(logits: torch.Tensor, target: int, output: str = "logit") -> torch.Tensor:
    """The target class's ``logit`` or softmax ``prob`` of each row of (K, classes) logits: (K,) float64, on
    the logits' device."""
    z = logits.detach().double()
    if output == "prob":
        z = torch.softmax(z, dim=-1)
    elif output != "logit":
        raise UserError(f"unknown model output {output!r}; valid: {', '.join(OUTPUTS)}")
    return z[..., int(target)]


def trapezoid_weights(x: np.ndarray) -> np.ndarray:
    """``w`` with ``sum_i w_i y_i == numpy.trapezoid(y, x)`` for every y."""
    dx = np.diff(np.asarray(x, dtype=np.float64))
    w = np.zeros(len(x))
    w[:-1] += dx / 2
    w[1:] += dx / 2
    return w


# ---------------------------------------------------------------------------------------------- correlations
def pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r of each row pair of (R, n) arrays, with the degenerate-map policy (docs/metrics.md): NaN
    where ``b`` is constant (undefined), 0 where ``a`` is constant (a map that ranks nothing)."""
    a, b = np.atleast_2d(np.asarray(a, np.float64)), np.atleast_2d(np.asarray(b, np.float64))
    am = a - a.mean(1, keepdims=True)
    bm = b - b.mean(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (am * bm).sum(1) / np.sqrt((am * am).sum(1) * (bm * bm).sum(1))
    r = np.clip(r, -1.0, 1.0)
    r[np.ptp(a, axis=1) == 0] = 0.0
    r[np.ptp(b, axis=1) == 0] = np.nan
    return r


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rho (Pearson r of average ranks, as ``scipy.stats.spearmanr``) of each row pair, with the
    degenerate-map policy of :func:`pearson_rows`."""
    from scipy.stats import rankdata

    a, b = np.atleast_2d(a), np.atleast_2d(b)
    r = pearson_rows(rankdata(a, axis=1), rankdata(b, axis=1))
    r[np.ptp(a, axis=1) == 0] = 0.0
    r[np.ptp(b, axis=1) == 0] = np.nan
    return r


def kendall_tau_b(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b (``scipy.stats.kendalltau``, its default variant) between ``x`` (n,) and each row of
    ``y`` (R, n): ``(concordant - discordant) / sqrt((n0 - ties_x)(n0 - ties_y))`` over the n0 = n(n-1)/2
    pairs; NaN when either side is constant."""
    x = np.asarray(x, np.float64)
    y = np.atleast_2d(np.asarray(y, np.float64))
    i, j = np.triu_indices(x.shape[0], 1)
    sx = np.sign(x[j] - x[i])
    sy = np.sign(y[:, j] - y[:, i])
    n0 = i.size
    tx = n0 - np.count_nonzero(sx == 0)
    ty = n0 - np.count_nonzero(sy == 0, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = (sx[None] * sy).sum(1) / np.sqrt(tx * ty.astype(np.float64))
    tau[(tx == 0) | (ty == 0)] = np.nan
    return np.clip(tau, -1.0, 1.0)


# ---------------------------------------------------------------------------------------------- items
@dataclass
class Prepared:
    """One item made ready to perturb: its features, attribution and source(s) of perturbed inputs."""

    item: EvalItem
    features: Features
    volume: torch.Tensor        # (T, H, W) attribution on the device
    source: Source              # the input with the metric's baseline
    index: int
    rng_state: Optional[dict] = None  # the item generator's state before a random baseline was drawn

    def noise_sources(self, perturber: Perturber, cfg, n: int):
        """A callable giving a fresh iterator over ``n`` sources with random baselines: the first is
        :attr:`source`'s, the next ones drawn after it from the item's generator (regenerated, never stored)."""
        x = self.item.sample.x

        def gen():
            rng = np.random.default_rng()
            rng.bit_generator.state = copy.deepcopy(self.rng_state)
            for _ in range(n):
                yield perturber.source(x, self.features, cfg.baseline_of(x, rng), cacheable=False)

        return gen

    def ranking(self, abs: bool = False) -> Ranking:
        """Features by decreasing mean attribution (of ``|a|`` when ``abs``), seeded for the tie rule by the
        run seed and the sample (:class:`xaibench.perturb.Ranking`)."""
        vol = self.volume.abs() if abs else self.volume
        return Ranking(feature_means(vol, self.features.ids), self.item.shared_seed)

    def totals(self, abs: bool = False) -> np.ndarray:
        vol = self.volume.abs() if abs else self.volume
        return feature_totals(vol, self.features.ids).cpu().numpy()


class PerturbationMetric(Metric):
    """Base class of the perturbation metrics (module docstring)."""

    Config = PerturbationConfig
    version = "2"

    def perturber(self, batch: EvalBatch) -> Perturber:
        return Perturber(batch.adapter, batch_size=self.cfg.batch_size or batch.batch_size)

    def check_fit(self, adapter) -> None:
        """Plan time: a grid ``cell`` that cannot tile the model's input fails before any sample is explained."""
        cfg = self.cfg
        if cfg.features == "grid":
            T, _, H, W = adapter.input_shape
            cfg.features_of(torch.zeros((T, 1, H, W)), token_cell(adapter, 0), "metric")

    def prepare(self, batch: EvalBatch, perturber: Perturber) -> List[Prepared]:
        """Features (one computation per sample), baseline and source of every item of ``batch``."""
        cfg, adapter = self.cfg, batch.adapter
        dev = perturber.device
        feats: dict = {}
        bases: dict = {}
        out = []
        for i, item in enumerate(batch.items):
            x = item.sample.x
            vol = item.explanation.volume.detach()
            T, _, H, W = x.shape
            if tuple(vol.shape) != (T, H, W):
                raise UserError(f"explanation volume {tuple(vol.shape)} does not match the input frames x size "
                                f"{(T, H, W)}")
            fkey = (T, H, W) if cfg.features == "grid" else id(x)
            if fkey not in feats:
                feats[fkey] = (cfg.features_of(x, token_cell(adapter, 0), "metric").to(dev), x)
            f = feats[fkey][0]
            state = None
            if cfg.random_baseline:
                state = copy.deepcopy(item.rng.bit_generator.state)
                base = cfg.baseline_of(x, item.rng)
            else:
                if id(x) not in bases:
                    bases[id(x)] = (cfg.baseline_of(x), x)
                base = bases[id(x)][0]
            src = perturber.source(x, f, base, cacheable=not cfg.random_baseline, baseline_key=cfg.baseline_key())
            out.append(Prepared(item, f, vol.to(dev), src, i, state))
        return out


# ---------------------------------------------------------------------------------------------- the tie rule
def _marginal(r: Ranking, side: str, k: int):
    """The canonical description of the kept set of a cut: ("det", lo, hi) for a cut on a group boundary
    (positions [lo, hi) of the order by index), else (family, a, b, n): ``n`` features of group (a, b) kept
    at random beside the fixed part (family "top": positions [0, a); "bottom": [b, F); "all": none)."""
    F = r.F
    k = int(k)
    lo, hi = (0, k) if side == "top" else (F - k, F)
    j = k if side == "top" else F - k
    grp = r.group_at(j)
    if grp is None:
        return ("det", lo, hi)
    a, b = grp
    n = k - a if side == "top" else b - j
    if a == 0 and b == F:
        return ("all", 0, F, n)
    return (side, a, b, n)


def _spec(r: Ranking, key, draw) -> Tuple[Tuple, int, int]:
    """(variant, lo, hi) of the mask of draw ``draw`` (an int, or an enumerated subset) of marginal ``key``."""
    fam, a, b, n = key
    g = b - a
    if fam == "bottom":  # the kept n are the last n positions of the group
        if isinstance(draw, tuple):  # an enumerated subset of kept offsets: place its complement first
            rest = tuple(int(v) for v in np.setdiff1d(np.arange(g), np.asarray(draw, dtype=np.int64)))
            return ((a, b, rest),), b - n, r.F
        return ((a, b, int(draw) ^ 1),), b - n, r.F
    return ((a, b, draw),), 0, a + n


class _Marginal:
    def __init__(self, key, g: int, n: int, cap: int):
        self.key = key
        self.count = n_subsets(g, n, cap)  # C(g, n), or cap + 1 when larger
        self.subsets: Optional[list] = None
        self.values: List[float] = []      # by draw (or by enumerated subset)
        self.weights: Dict[str, float] = {}
        self.exact = False

    def estimate(self) -> Tuple[float, float]:
        """(mean, variance of the mean)."""
        v = np.asarray(self.values, dtype=np.float64)
        if self.exact:
            return float(v.mean()), 0.0
        pairs = v[: 2 * (len(v) // 2)].reshape(-1, 2).mean(1)
        if pairs.size < 2:
            return float(v.mean()), math.inf
        return float(pairs.mean()), float(pairs.var(ddof=1) / pairs.size)


class LinearScore:
    """``value_o = const_o + sum_t weight_{o,t} E[h(mask_t)]`` for each output ``o`` of one item: ``h`` maps
    a mask's logits to a number on the device (``reduce``); each term's mask keeps the top or the bottom
    ``k`` positions of ``ranking``."""

    def __init__(self, ranking: Ranking, source: Source, reduce: Callable, outputs: Sequence[str]):
        self.ranking, self.source, self.reduce = ranking, source, reduce
        self.outputs = list(outputs)
        self.const = {o: 0.0 for o in self.outputs}
        self.terms: List[Tuple[str, float, str, int]] = []

    def add(self, output: str, weight: float, side: str, k: int):
        self.terms.append((output, float(weight), side, int(k)))

    def constant(self, output: str, value: float):
        self.const[output] += float(value)


class LinearTies:
    """The expectation over tie orders of :class:`LinearScore` s, with its standard error (module docstring).

    Exact for cuts on a tie-group boundary and for cuts whose subsets number at most ``enumerate_at`` (every
    subset evaluated) or ``tie_max_draws``... when the draws would reach that count; else an average of
    seeded antithetic draws per cut, refined (doubled) until every output's standard error is at most
    ``tie_se`` or ``tie_max_draws`` draws per cut.
    """

    enumerate_at = 8
    first_draws = 4

    def __init__(self, tie_se: float, max_draws: int):
        self.tie_se, self.cap = float(tie_se), int(max_draws)

    def run(self, perturber: Perturber, scores: List[LinearScore]) -> List[Dict[str, float]]:
        states = []
        for s in scores:
            r = s.ranking
            det: Dict[Tuple, Dict[str, float]] = {}
            margs: Dict[Tuple, _Marginal] = {}
            for o, w, side, k in s.terms:
                key = _marginal(r, side, k)
                if key[0] == "det":
                    det.setdefault(key, {}).setdefault(o, 0.0)
                    det[key][o] += w
                else:
                    m = margs.get(key)
                    if m is None:
                        m = margs[key] = _Marginal(key, key[2] - key[1], key[3], self.cap)
                    m.weights[o] = m.weights.get(o, 0.0) + w
            states.append((s, det, margs))
        # round 0: the deterministic masks and the first draws (or every subset, when they are few)
        todo = []
        for i, (s, det, margs) in enumerate(states):
            masks = CutMasks(s.ranking)
            plan = []
            for key in det:
                plan.append(("det", key, masks.add((), key[1], key[2])))
            for m in margs.values():
                if not any(m.weights.values()):
                    continue  # cancelling terms (a constant map's SRG): nothing to evaluate
                self._plan(s.ranking, m, self.first_draws, masks, plan)
            todo.append((i, masks, plan))
        det_values = [dict() for _ in scores]
        while todo:
            reqs = [(i, plan, perturber.add(scores[i].source, masks, scores[i].reduce)) for i, masks, plan in todo]
            perturber.run()
            for i, plan, req in reqs:
                vals = req.values.cpu().numpy() if len(plan) else np.zeros(0)
                for (kind, obj, row) in plan:
                    if kind == "det":
                        det_values[i][obj] = float(vals[row])
                    else:
                        obj.values.append(float(vals[row]))
            todo = []
            for i, (s, det, margs) in enumerate(states):
                se = self._se(margs, s.outputs)
                bad = [o for o in s.outputs if se[o] > self.tie_se]
                if not bad:
                    continue
                masks, plan = CutMasks(s.ranking), []
                for m in margs.values():
                    if m.exact or not any(m.weights.get(o, 0.0) for o in bad):
                        continue
                    have = len(m.values)
                    if have >= self.cap:
                        continue
                    self._plan(s.ranking, m, min(self.cap, 2 * have), masks, plan)
                if plan:
                    todo.append((i, masks, plan))
        out = []
        for i, (s, det, margs) in enumerate(states):
            vals = dict(s.const)
            var = {o: 0.0 for o in s.outputs}
            for key, ws in det.items():
                for o, w in ws.items():
                    vals[o] += w * det_values[i][key]
            for m in margs.values():
                if not any(m.weights.values()):
                    continue
                mu, v = m.estimate()
                for o, w in m.weights.items():
                    if w:
                        vals[o] += w * mu
                        var[o] += w * w * v
            res = {o: float(vals[o]) for o in s.outputs}
            res.update({f"{o}_tie_se": float(math.sqrt(var[o])) for o in s.outputs})
            out.append(res)
        return out

    def _plan(self, r: Ranking, m: _Marginal, target: int, masks: CutMasks, plan: list):
        """Queue draws of ``m`` up to ``target`` (even), or all its subsets when they are no more."""
        fam, a, b, n = m.key
        if m.count <= max(self.enumerate_at, target) and m.count <= self.cap:
            if m.subsets is None:  # every subset, exactly (replaces any draws made so far)
                m.values, m.exact = [], True
                m.subsets = [tuple(c) for c in _combinations(b - a, n)]
                for sub in m.subsets:
                    plan.append(("marg", m, masks.add(*_spec(r, m.key, sub))))
            return
        target += target % 2
        for d in range(len(m.values), target):
            plan.append(("marg", m, masks.add(*_spec(r, m.key, d))))

    @staticmethod
    def _se(margs, outputs) -> Dict[str, float]:
        var = {o: 0.0 for o in outputs}
        for m in margs.values():
            if not any(m.weights.values()):
                continue
            _, v = m.estimate()
            for o, w in m.weights.items():
                if w:
                    var[o] += w * w * v
        return {o: math.sqrt(v) for o, v in var.items()}


def _combinations(g: int, n: int):
    return itertools.combinations(range(g), n)


class OrderScore:
    """A score of one item computed from the outputs of several masks *under one order* of the features:
    mask ``c`` keeps the positions in ``[lo_c, hi_c)`` of the order (outside it when ``invert_c``).  ``fn``
    maps (n_orders, n_masks) outputs and the orders' variants to ``{output: (n_orders,) values}``.  With
    several ``sources`` (random baselines) a mask's output is the mean over them; ``sources`` is a list, or a
    callable returning a fresh iterator over them (made :data:`SOURCE_CHUNK` at a time, so that many noise
    baselines never sit in memory together)."""

    def __init__(self, ranking: Ranking, sources, reduce, cuts: Sequence[Tuple[int, int, bool]],
                 fn: Callable, outputs: Sequence[str]):
        self.ranking, self.reduce = ranking, reduce
        self.sources = sources if callable(sources) else list(sources)
        self.cuts, self.fn, self.outputs = list(cuts), fn, list(outputs)

    def source_chunks(self):
        it = iter(self.sources() if callable(self.sources) else self.sources)
        while True:
            chunk = list(itertools.islice(it, SOURCE_CHUNK))
            if not chunk:
                return
            yield chunk

    def straddled(self) -> List[Tuple[int, int]]:
        """The tie groups a mask boundary falls inside (their order changes the score)."""
        groups = set()
        for lo, hi, _ in self.cuts:
            for p in (lo, hi):
                g = self.ranking.group_at(min(max(p, 0), self.ranking.F))
                if g is not None:
                    groups.add(g)
        return sorted(groups)


class OrderTies:
    """The expectation over tie orders of :class:`OrderScore` s: one order when no mask boundary falls inside
    a tie group (exact), else seeded tie orders in antithetic pairs (4 first), doubled until every output's
    standard error (over pair means) is at most ``tie_se`` or ``tie_max_draws`` orders are drawn."""

    first_orders = 4

    def __init__(self, tie_se: float, max_draws: int):
        self.tie_se, self.cap = float(tie_se), max(2, int(max_draws))

    def run(self, perturber: Perturber, scores: List[OrderScore]) -> List[Dict[str, float]]:
        states = []
        for s in scores:
            groups = s.straddled()
            states.append({"groups": groups, "values": {o: [] for o in s.outputs}, "variants": []})
        want = [self.first_orders if st["groups"] else 1 for st in states]
        while True:
            jobs = []
            for s, st, n in zip(scores, states, want):
                have = len(st["variants"])
                if n <= have:
                    continue
                variants = [tuple((a, b, d) for a, b in st["groups"]) for d in range(have, n)]
                masks = CutMasks(s.ranking)
                for v in variants:
                    for lo, hi, inv in s.cuts:
                        masks.add(v, max(lo, 0), min(hi, s.ranking.F), inv)
                jobs.append({"s": s, "st": st, "variants": variants, "masks": masks, "chunks": s.source_chunks(),
                             "sum": None, "n": 0})
            if not jobs:
                break
            active = jobs
            while active:  # every item's sources, a chunk at a time, packed into the same model batches
                pending = []
                for job in active:
                    chunk = next(job["chunks"], None)
                    if chunk is not None:
                        pending.append((job, [perturber.add(src, job["masks"], job["s"].reduce) for src in chunk]))
                if not pending:
                    break
                perturber.run()
                for job, rs in pending:
                    tot = torch.stack([r.values for r in rs]).sum(0)
                    job["sum"] = tot if job["sum"] is None else job["sum"] + tot
                    job["n"] += len(rs)
                active = [job for job, _ in pending]
            for job in jobs:
                s, st, variants = job["s"], job["st"], job["variants"]
                vals = (job["sum"] / job["n"]).cpu().numpy().reshape(len(variants), len(s.cuts))
                res = s.fn(vals, variants)
                for o in s.outputs:
                    st["values"][o].extend(np.asarray(res[o], dtype=np.float64).tolist())
                st["variants"].extend(variants)
            for i, (s, st) in enumerate(zip(scores, states)):
                n = len(st["variants"])
                if not st["groups"] or n >= self.cap:
                    continue
                se = self._stats(st, s.outputs)[1]
                if any(v > self.tie_se for v in se.values()):
                    want[i] = min(self.cap, 2 * n)
        out = []
        for s, st in zip(scores, states):
            mean, se = self._stats(st, s.outputs)
            res = {o: mean[o] for o in s.outputs}
            res.update({f"{o}_tie_se": se[o] for o in s.outputs})
            out.append(res)
        return out

    @staticmethod
    def _stats(st, outputs):
        mean, se = {}, {}
        for o in outputs:
            v = np.asarray(st["values"][o], dtype=np.float64)
            mean[o] = float(v.mean())
            if not st["groups"]:
                se[o] = 0.0
            elif np.isnan(v).any():
                se[o] = float("nan")  # an undefined score on some order: the mean is undefined too
            else:
                pairs = v[: 2 * (len(v) // 2)].reshape(-1, 2).mean(1)
                se[o] = float(pairs.std(ddof=1) / math.sqrt(pairs.size)) if pairs.size >= 2 else math.inf
        return mean, se


__all__ = ["PerturbationConfig", "TieConfig", "PerturbationMetric", "Prepared", "LinearScore", "LinearTies",
           "OrderScore", "OrderTies", "target_output", "trapezoid_weights", "pearson_rows", "spearman_rows",
           "kendall_tau_b", "tie_se_outputs", "OUTPUTS"]
