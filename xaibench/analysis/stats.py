"""Uncertainty, significance, ranking and metric validity on the tidy per-sample table.

Input: the frame of :func:`xaibench.analysis.results.to_frame` (one row per sample
x model x method x metric: ``experiment, dataset, model, method, params,
sample_id, metric, value, higher_is_better``).  A *benchmark* is (experiment,
dataset, model); a *family* is a benchmark x metric; an *arm* is (method,
params).  Only per-sample values are paired, ranked and tested: rows with
``sample_id == "__aggregate__"`` (dataset-level values) and ``metric ==
"skipped"`` rows are left out.  A NaN value is *undefined*: a pair or sample
with a NaN on either side is dropped and counted, never silently.

Controls are pseudo-methods run beside the real ones; their label starts with
``control_``: ``control_random`` (seeded noise), ``control_constant``,
``control_gt`` (the ground-truth mask) and ``control_gt_inverted``.

Tables (see each function): :func:`validity` (``validity.csv``),
:func:`comparisons` (``comparisons.csv``), :func:`ranking` (``ranking.csv``);
:func:`bootstrap_ci` and :func:`mark_best` feed ``summary.csv``.

The paired test everywhere is the Wilcoxon signed-rank test
(Wilcoxon 1945, "Individual comparisons by ranking methods"), computed by
``scipy.stats.wilcoxon`` on the differences ``d = a - b`` with zeros dropped
(``zero_method="wilcox"``); see :func:`signed_rank` for how its p-value is
computed.
"""

from __future__ import annotations

import itertools
import math
import warnings
from typing import Iterator, Tuple

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import UserError
from .schema import AGGREGATE, COST_METRICS, DESCRIPTIVE_METRICS

BENCH = ["experiment", "dataset", "model"]
FAMILY = BENCH + ["metric"]
CONTROL_PREFIX = "control_"
# validity checks: (name, arm a, arm b, must a be significantly better than b?)
VALIDITY_TESTS = (("gt_random", "control_gt", "control_random", True),
                  ("gt_inverted", "control_gt", "control_gt_inverted", True),
                  ("constant_random", "control_constant", "control_random", False))
_WORD = {"control_gt": "gt", "control_random": "random", "control_gt_inverted": "inverted gt",
         "control_constant": "constant"}


def is_control(method) -> bool:
    return str(method).startswith(CONTROL_PREFIX)


def _check_alpha(alpha: float, name: str = "alpha") -> None:
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
        raise UserError(f"{name} must be a number strictly between 0 and 1 (e.g. 0.05), got {alpha!r}")


# --------------------------------------------------------------------------- primitives
def bootstrap_ci(values, level: float = 0.95, n_resamples: int = 1000, seed=0) -> Tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean.

    ``scipy.stats.bootstrap((x,), np.mean, method="percentile")`` over the
    finite values ``x`` (NaN / inf are left out): the mean is recomputed on
    ``n_resamples`` samples of ``len(x)`` values drawn with replacement, and the
    interval is the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of
    those means (Efron & Tibshirani 1993, "An Introduction to the Bootstrap",
    ch. 13).  The generator is ``np.random.default_rng(seed)``, so the interval
    is deterministic for a seed.  Returns ``(nan, nan)`` for fewer than 2
    finite values; all-equal values give ``(v, v)``.
    """
    lo, hi = bootstrap_cis([values], level=level, n_resamples=n_resamples, seed=seed)
    return float(lo[0]), float(hi[0])


def bootstrap_cis(arrays, level: float = 0.95, n_resamples: int = 1000, seed=0) -> Tuple[np.ndarray, np.ndarray]:
    """:func:`bootstrap_ci` of each array in ``arrays`` (one scipy call per distinct number of finite values).

    ``scipy.stats.bootstrap`` draws one matrix of resampling indices per call
    and applies it to every row of a 2-D input, so the rows of one call get the
    interval each would get from its own call with the same seed (tested): a
    key's interval does not depend on the other keys.  Returns (low, high) arrays.
    """
    _check_alpha(level, "level")
    xs = [np.asarray(a, dtype=float) for a in arrays]
    xs = [x[np.isfinite(x)] for x in xs]
    lo, hi = np.full(len(xs), np.nan), np.full(len(xs), np.nan)
    by_len = {}
    for i, x in enumerate(xs):
        if x.size >= 2:
            by_len.setdefault(x.size, []).append(i)
    for idx in by_len.values():
        ci = stats.bootstrap((np.stack([xs[i] for i in idx]),), np.mean, confidence_level=level, axis=-1,
                             n_resamples=n_resamples, method="percentile", vectorized=True,
                             rng=np.random.default_rng(seed)).confidence_interval
        lo[idx], hi[idx] = ci.low, ci.high
    return lo, hi


def signed_rank(d, alternative: str = "two-sided") -> Tuple[np.ndarray, np.ndarray]:
    """Wilcoxon signed-rank test on each row of ``d`` (differences a - b, no NaN); returns (statistic, p).

    Differences are rounded to 12 decimals first, so that round-off in ``a - b``
    does not break ties (the advice of the ``scipy.stats.wilcoxon`` docs).
    Zeros are dropped (``zero_method="wilcox"``).  ``statistic`` is scipy's:
    ``min(R+, R-)`` for two-sided, ``R+`` (sum of the ranks of positive
    differences) for one-sided tests; ``alternative="greater"`` tests ``a > b``.
    The p-value method is the one ``scipy.stats.wilcoxon(method="auto")``
    chooses (scipy >= 1.15), fixed here so that rows can be tested in batches:

    * exact null distribution when there are no zeros and no tied ``|d|`` and
      n <= 50;
    * otherwise, for n <= 13, the exact permutation distribution (all ``2**n``
      sign flips, ``scipy.stats.PermutationMethod``; deterministic);
    * otherwise the normal approximation with tie and continuity correction.

    A row whose differences are all zero has statistic 0 and p = 1 (no
    evidence of a difference); an empty row gives NaN.
    """
    d = np.round(np.atleast_2d(np.asarray(d, dtype=float)), 12)
    m, n = d.shape
    stat, p = np.full(m, np.nan), np.full(m, np.nan)
    if n == 0:
        return stat, p
    nonzero = d != 0
    all_zero = ~nonzero.any(axis=1)
    stat[all_zero], p[all_zero] = 0.0, 1.0
    sorted_abs = np.sort(np.where(nonzero, np.abs(d), np.nan), axis=1)
    plain = nonzero.all(axis=1) & ~(np.diff(sorted_abs, axis=1) == 0).any(axis=1)
    choice = np.where(plain & (n <= 50), "exact", np.where(~plain & (n <= 13), "permutation", "asymptotic"))
    for method in ("exact", "permutation", "asymptotic"):
        rows = (choice == method) & ~all_zero
        if rows.any():
            if method == "permutation":
                stat[rows], p[rows] = _sign_flip_test(d[rows], alternative)
            else:
                r = stats.wilcoxon(d[rows], axis=1, alternative=alternative, method=method)
                stat[rows], p[rows] = r.statistic, r.pvalue
    return stat, p


def _sign_flip_test(d: np.ndarray, alternative: str) -> Tuple[np.ndarray, np.ndarray]:
    """(statistic, p) as ``scipy.stats.wilcoxon(d, axis=1, method=PermutationMethod())``, vectorised over rows.

    scipy's permutation path calls ``scipy.stats.permutation_test`` on the
    signed-rank statistic R+ one sign pattern at a time; here the same test
    (``permutation_type="samples"`` flips the signs of the differences, all
    ``2**n`` patterns, ``n_resamples=inf``) gets a vectorised R+: the ranks of
    ``|d|`` do not change under sign flips, so ``R+ = sum(rank * (d > 0))`` with
    the ranks (zeros dropped, ties averaged) computed once.
    """
    nz = d != 0
    # rank the non-zero |d| among themselves: zeros become -1, rank lowest, and are shifted out
    rank = stats.rankdata(np.where(nz, np.abs(d), -1.0), axis=1) - (~nz).sum(axis=1, keepdims=True)
    rank = np.where(nz, rank, 0.0)
    res = stats.permutation_test((d,), lambda x, axis: np.sum(rank * (x > 0), axis=axis), vectorized=True,
                                 permutation_type="samples", n_resamples=np.inf, alternative=alternative, axis=1,
                                 batch=512)
    r_plus = np.sum(rank * (d > 0), axis=1)
    statistic = np.minimum(r_plus, rank.sum(axis=1) - r_plus) if alternative == "two-sided" else r_plus
    return statistic, res.pvalue


def holm(p) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm 1979, "A simple sequentially rejective multiple test procedure").

    With the m finite p-values sorted ascending, ``p_(1) <= ... <= p_(m)``:
    ``adj_(i) = min(1, max_{j <= i} (m - j + 1) p_(j))``.  Rejecting where
    ``adj < alpha`` controls the family-wise error rate at ``alpha``.  NaN
    p-values stay NaN and do not count in m.
    """
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    q = p[ok]
    order = np.argsort(q, kind="stable")
    adj = np.empty(q.size)
    adj[order] = np.minimum(1.0, np.maximum.accumulate((q.size - np.arange(q.size)) * q[order]))
    out[ok] = adj
    return out


def min_pairs(alpha: float) -> int:
    """Fewest pairs with which a one-sided signed-rank test can reach p < alpha.

    With n pairs (no zeros, no ties) the smallest one-sided exact p-value is
    ``2**-n`` (all differences of one sign), so n must exceed ``log2(1/alpha)``:
    ``floor(log2(1/alpha)) + 1`` (5 for alpha = 0.05).  With fewer pairs a
    "not better" result would say nothing about the metric, so the validity
    check reports ``untestable`` instead.
    """
    return int(math.floor(math.log2(1 / alpha))) + 1


# --------------------------------------------------------------------------- per-family data
def _values(df: pd.DataFrame) -> pd.DataFrame:
    d = df[df["metric"] != "skipped"].copy()
    d["params"] = d["params"].where(d["params"].notna(), "").astype(str)
    return d


def _direction(higher_is_better) -> bool:
    """A family's direction: its first non-missing ``higher_is_better`` value (True when there is none)."""
    h = [x for x in higher_is_better if x is not None and not pd.isna(x)]
    return bool(h[0]) if h else True


def _families(df: pd.DataFrame) -> Iterator[tuple]:
    """Per family, in order of appearance: (key dict, higher_is_better, arms, samples, V, P).

    ``arms``: the family's (method, params) in order of appearance (also arms
    with only an aggregate row); ``V[i, j]``: the per-sample value of sample i
    under arm j (NaN when undefined or absent); ``P[i, j]``: whether that row
    exists.
    """
    d = _values(df)
    arm_code, arm_names = pd.factorize(d["method"].astype(str) + "\x1f" + d["params"])
    arm_names = [tuple(a.split("\x1f", 1)) for a in arm_names]
    sample = d["sample_id"].to_numpy(dtype=object)
    value = d["value"].to_numpy(dtype=float)
    hib = d["higher_is_better"].to_numpy(dtype=object)
    groups = d.groupby(FAMILY, sort=False, dropna=False).indices
    for key, idx in sorted(groups.items(), key=lambda kv: kv[1][0]):
        a, arms = pd.factorize(arm_code[idx])
        per = sample[idx] != AGGREGATE
        s, samples = pd.factorize(sample[idx][per])
        V, P = np.full((len(samples), len(arms)), np.nan), np.zeros((len(samples), len(arms)), dtype=bool)
        V[s, a[per]], P[s, a[per]] = value[idx][per], True
        if P.sum() < per.sum():
            warnings.warn(f"{dict(zip(FAMILY, key))}: several rows for one (sample, method, params); "
                          f"the last value is used in the tests", stacklevel=3)
        yield dict(zip(FAMILY, key)), _direction(hib[idx]), [arm_names[c] for c in arms], samples, V, P


def _fmt_p(p: float) -> str:
    return f"p={p:.2g}"


# --------------------------------------------------------------------------- validity
def validity(df: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Is each metric valid on each benchmark?  Sanity checks against the control methods.

    Per family (experiment, dataset, model, metric), with the controls' values
    paired by ``sample_id`` (one-sided Wilcoxon signed-rank tests, see
    :func:`signed_rank`; "better" is ``a > b`` when higher is better, else
    ``a < b``; significant means ``p < alpha``):

    * ``gt_random``: ``control_gt`` must be significantly better than ``control_random``;
    * ``gt_inverted``: ``control_gt`` must be significantly better than ``control_gt_inverted``;
    * ``constant_random``: ``control_constant`` must *not* be significantly better than ``control_random``.

    The checks follow the idea of sanity checks with known answers (Adebayo et
    al. 2018, "Sanity checks for saliency maps"; Tomsett et al. 2020, "Sanity
    checks for saliency metrics"): a metric that cannot tell the true mask from
    noise or from its inverse, or that rewards an uninformative constant map,
    does not measure explanation quality on that benchmark.

    ``verdict``: ``invalid`` when a check that could be run failed; ``valid``
    when all three ran and passed; otherwise ``untestable`` (a control is
    missing, e.g. no ground truth and hence no ``control_gt``; fewer than
    :func:`min_pairs` pairs; a control with several parameter settings; only a
    dataset-level aggregate value; or a cost metric, which does not score the
    explanation).  ``reason`` says, per check, what was found.

    Columns: ``experiment, dataset, model, metric, higher_is_better, verdict,
    reason``, per check ``n_<check>`` (pairs used), ``p_<check>`` and
    ``median_diff_<check>`` (median of a - b in the metric's units),
    ``n_undefined`` (samples dropped because a control's value there is NaN),
    ``min_pairs``.
    """
    _check_alpha(alpha)
    need = min_pairs(alpha)
    cols = FAMILY + ["higher_is_better", "verdict", "reason"] + [
        f"{c}_{name}" for name, *_ in VALIDITY_TESTS for c in ("n", "p", "median_diff")] + ["n_undefined", "min_pairs"]
    out = []
    for key, hib, arms, samples, V, P in _families(df):
        row = dict(key, higher_is_better=hib, n_undefined=0, min_pairs=need)
        outcomes, reasons = [], []
        if key["metric"] in COST_METRICS:
            outcomes, reasons = ["na"], ["a cost metric: it measures the method, not the explanation"]
        elif key["metric"] in DESCRIPTIVE_METRICS:
            outcomes, reasons = ["na"], ["descriptive: it describes the map, it does not score it"]
        elif str(key["metric"]).startswith("mprt_"):
            outcomes, reasons = ["na"], ["a sanity check of the method (model-parameter randomisation): controls do not "
                                         "depend on the model, so they score 1 by construction"]
        elif len(samples) == 0:
            outcomes, reasons = ["na"], ["only a dataset-level aggregate value: no per-sample values to pair"]
        else:
            cols_of = {m: [j for j, (meth, _) in enumerate(arms) if meth == m] for m in _WORD}
            undefined = np.zeros(len(samples), dtype=bool)
            for name, a, b, must_win in VALIDITY_TESTS:
                wa, wb = _WORD[a], _WORD[b]
                missing = [c for c in (a, b) if len(cols_of[c]) != 1]
                if missing:
                    outcomes.append("na")
                    reasons += [f"{c} has {len(cols_of[c])} parameter settings; the check needs one" if cols_of[c]
                                else f"no {c} rows" + (" (no ground truth?)" if c.startswith("control_gt") else "")
                                for c in missing]
                    continue
                ja, jb = cols_of[a][0], cols_of[b][0]
                both = P[:, ja] & P[:, jb]
                ok = both & np.isfinite(V[:, ja]) & np.isfinite(V[:, jb])
                undefined |= both & ~ok
                d = V[ok, ja] - V[ok, jb]
                row[f"n_{name}"] = int(ok.sum())
                row[f"median_diff_{name}"] = float(np.median(d)) if d.size else np.nan
                if d.size < need:
                    outcomes.append("na")
                    reasons.append(f"{wa} vs {wb}: {d.size} pairs, fewer than the {need} needed")
                    continue
                p = float(signed_rank(d, "greater" if hib else "less")[1][0])
                row[f"p_{name}"] = p
                wins = p < alpha
                outcomes.append("pass" if wins == must_win else "fail")
                text = f"{wa} {'better' if wins else 'not better'} than {wb} ({_fmt_p(p)})"
                reasons.append(text if wins == must_win else "FAILS: " + text)
            row["n_undefined"] = int(undefined.sum())
        verdict = ("invalid" if "fail" in outcomes else
                   "valid" if outcomes == ["pass"] * len(VALIDITY_TESTS) else "untestable")
        reasons = sorted(dict.fromkeys(reasons), key=lambda r: not r.startswith("FAILS"))  # failures first
        out.append(dict(row, verdict=verdict, reason="; ".join(reasons)))
    out = pd.DataFrame(out, columns=cols)
    for name, *_ in VALIDITY_TESTS:  # counts stay integers where a check could not run
        out[f"n_{name}"] = out[f"n_{name}"].astype("Int64")
    return out


# --------------------------------------------------------------------------- pairwise comparisons
def comparisons(df: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Every pair of arms (controls included) per family: two-sided paired Wilcoxon signed-rank test.

    For arms a, b of one family the pairs are the samples where both have a
    finite value (``n``; ``n_undefined`` counts samples both have but where one
    is NaN).  ``mean_diff`` is the mean of a - b over those pairs (positive =
    a higher; read it with ``higher_is_better``), ``statistic`` and ``p`` as in
    :func:`signed_rank`, ``p_holm`` the Holm-adjusted p-value (:func:`holm`)
    within the family (all pairs of arms of that benchmark x metric), and
    ``significant = p_holm < alpha``.  A pair without any common sample has NaN
    test results and does not count in the correction.
    """
    _check_alpha(alpha)
    cols = FAMILY + ["higher_is_better", "method_a", "params_a", "method_b", "params_b", "n", "n_undefined",
                     "mean_diff", "statistic", "p", "p_holm", "significant"]
    parts = []
    for key, hib, arms, samples, V, P in _families(df):
        if len(arms) < 2:
            continue
        ia, ib = (np.array(x, dtype=int) for x in zip(*itertools.combinations(range(len(arms)), 2)))
        ok = P & np.isfinite(V)
        M = ok[:, ia] & ok[:, ib]  # samples x pairs
        D = V[:, ia] - V[:, ib]
        n = M.sum(axis=0)
        stat, p = np.full(len(ia), np.nan), np.full(len(ia), np.nan)
        by_mask = {}
        for k in range(len(ia)):  # pairs over the same samples are tested in one call
            by_mask.setdefault(M[:, k].tobytes(), []).append(k)
        for ks in by_mask.values():
            rows = M[:, ks[0]]
            if rows.any():
                stat[ks], p[ks] = signed_rank(D[rows][:, ks].T, "two-sided")
        with np.errstate(invalid="ignore"):
            mean_diff = np.where(M, D, 0).sum(axis=0) / np.where(n > 0, n, np.nan)
        p_holm = holm(p)
        parts.append(dict(
            key, higher_is_better=hib, method_a=[arms[i][0] for i in ia], params_a=[arms[i][1] for i in ia],
            method_b=[arms[i][0] for i in ib], params_b=[arms[i][1] for i in ib], n=n,
            n_undefined=((P[:, ia] & P[:, ib]) & ~M).sum(axis=0), mean_diff=mean_diff, statistic=stat, p=p,
            p_holm=p_holm, significant=p_holm < alpha))
    return _stack(parts, cols)


# --------------------------------------------------------------------------- ranking
def ranking(df: pd.DataFrame) -> pd.DataFrame:
    """Mean rank of every arm per family, and the Friedman test.

    The samples used are those on which every ranked arm has a finite value
    (arms without any finite value are left out of the ranking, with a note).
    On each sample the arms are ranked, best = 1 (the highest value when higher
    is better, else the lowest), ties getting the average of their ranks
    (``scipy.stats.rankdata(method="average")``); ``mean_rank`` is the mean over
    the samples and ``n_samples`` their number.  ``friedman_statistic`` and
    ``friedman_p`` (Friedman 1937; ``scipy.stats.friedmanchisquare``, chi-square
    approximation with tie correction) test whether all arms rank alike; they
    are repeated on each row of the family and are NaN, with the reason in
    ``note``, for fewer than 3 arms, no complete sample, or all arms tied on
    every sample.  Controls are ranked too (``kind`` tells them apart).  Rows
    are sorted by mean rank within a family.
    """
    cols = FAMILY + ["higher_is_better", "method", "params", "kind", "mean_rank", "n_samples", "n_arms",
                     "friedman_statistic", "friedman_p", "note"]
    parts = []
    for key, hib, arms, samples, V, P in _families(df):
        finite = np.isfinite(V)
        use = finite.any(axis=0)
        complete = finite[:, use].all(axis=1)
        X = V[complete][:, use]
        mean_rank = np.full(len(arms), np.nan)
        notes = [""] * len(arms)
        for j in np.flatnonzero(~use):
            notes[j] = "no finite value: not ranked"
        stat = pval = np.nan
        if len(samples) == 0:
            why = "only a dataset-level aggregate value: no per-sample values to rank"
        elif not use.any():
            why = "no finite value in any arm"
        elif X.shape[0] == 0:
            why = "no sample on which every arm has a value"
        else:
            R = stats.rankdata(-X if hib else X, method="average", axis=1)
            mean_rank[use] = R.mean(axis=0)
            dropped = len(samples) - X.shape[0]
            why = f"{dropped} samples left out (missing or NaN in some arm)" if dropped else ""
            if X.shape[1] < 3:
                why = _join(why, f"Friedman test needs 3 or more arms, have {X.shape[1]}")
            elif (X == X[:, :1]).all():
                why = _join(why, "all arms tie on every sample: Friedman test undefined")
            else:
                stat, pval = stats.friedmanchisquare(*X.T)
                if X.shape[0] <= 10 or X.shape[1] <= 6:
                    why = _join(why, "Friedman p from the chi-square approximation (scipy: reliable for "
                                     "n > 10 samples and > 6 arms)")
        order = np.argsort(mean_rank, kind="stable")  # NaN last
        parts.append(dict(
            key, higher_is_better=hib, method=[arms[j][0] for j in order], params=[arms[j][1] for j in order],
            kind=["control" if is_control(arms[j][0]) else "method" for j in order], mean_rank=mean_rank[order],
            n_samples=int(X.shape[0]), n_arms=int(use.sum()), friedman_statistic=float(stat),
            friedman_p=float(pval), note=[_join(why, notes[j]) for j in order]))
    return _stack(parts, cols)


def _join(a: str, b: str) -> str:
    return "; ".join(x for x in (a, b) if x)


def _stack(parts: list, cols: list) -> pd.DataFrame:
    """One frame from per-family dicts whose values are scalars (repeated) or equal-length sequences."""
    data = {c: [] for c in cols}
    for p in parts:
        n = max(len(v) for v in p.values() if isinstance(v, (list, np.ndarray)))
        for c in cols:
            v = p[c]
            data[c].extend(v if isinstance(v, (list, np.ndarray)) else [v] * n)
    return pd.DataFrame(data, columns=cols)


# --------------------------------------------------------------------------- best / tied
def mark_best(summary: pd.DataFrame, comparisons: pd.DataFrame, alpha: float = 0.05) -> pd.Series:
    """``best`` / ``tied`` / '' per summary row.

    Per family, among the non-control rows with a finite ``mean``: ``best`` for
    the arm(s) with the best mean (highest if ``higher_is_better``, else
    lowest), ``tied`` for the arms whose paired comparison with a best arm
    (``comparisons``, Holm-adjusted) has ``p_holm >= alpha``.  Controls are
    reference points and never marked, nor are descriptive metrics (map
    properties: they describe, not score); an arm without a comparison (e.g. a
    metric with only a dataset-level aggregate) is not marked tied.
    """
    out = np.full(len(summary), "", dtype=object)
    method = summary["method"].astype(str).to_numpy(dtype=object)
    params = summary["params"].where(summary["params"].notna(), "").astype(str).to_numpy(dtype=object)
    family = list(zip(*(summary[c].astype(str) for c in FAMILY)))
    mean = pd.to_numeric(summary["mean"], errors="coerce").to_numpy(dtype=float)
    hib = summary["higher_is_better"].to_numpy(dtype=object)
    p_of = {}
    c = comparisons
    for *fam, ma, pa, mb, pb, p in zip(*(c[k].astype(str) for k in FAMILY), c["method_a"], c["params_a"].astype(str),
                                       c["method_b"], c["params_b"].astype(str), c["p_holm"]):
        p_of[(*fam, ma, pa, mb, pb)] = p_of[(*fam, mb, pb, ma, pa)] = p
    members = {}
    metric = summary["metric"].astype(str).to_numpy(dtype=object)
    for i in range(len(summary)):
        if not is_control(method[i]) and np.isfinite(mean[i]) and metric[i] not in DESCRIPTIVE_METRICS:
            members.setdefault(family[i], []).append(i)
    for fam, idx in members.items():
        top = max(mean[idx]) if _direction(hib[idx]) else min(mean[idx])
        best = [i for i in idx if mean[i] == top]
        for i in idx:
            if i in best:
                out[i] = "best"
            elif any(p_of.get((*fam, method[i], params[i], method[j], params[j]), np.nan) >= alpha for j in best):
                out[i] = "tied"
    return pd.Series(out, index=summary.index, dtype=object)
