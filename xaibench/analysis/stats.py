"""Uncertainty, significance, effect sizes, rankings, marks and metric validity on the tidy per-sample table.

Input: the frame of :func:`xaibench.analysis.results.to_frame` (one row per sample
x model x method x metric: ``experiment, dataset, model, method, params,
sample_id, metric, value, higher_is_better, metric_kind``).  A *benchmark* is
(experiment, dataset, model); a *family* is a benchmark x metric; an *arm* is
(method, params).  Only per-sample values are paired, ranked and tested: rows
with ``sample_id == "__aggregate__"`` (dataset-level values) and ``metric ==
"skipped"`` rows are left out.  A NaN value is *undefined*: a pair or sample with
a NaN on either side is dropped and counted, never silently.

Which families are judged is read from the ``metric_kind`` column
(:func:`xaibench.analysis.schema.metric_kinds`, :func:`~xaibench.analysis.schema.is_judged`):
only ``quality`` outputs get validity verdicts, comparisons, rankings and marks;
descriptive, sanity and cost outputs are never judged.  Controls are
pseudo-methods whose label starts with ``control_`` (``control_random``,
``control_constant``, ``control_gt``, ``control_gt_inverted``): they judge the
metric and are left out of every comparison and ranking of the methods.

Tables (each function says its columns; ``docs/metrics.md`` gives the reasoning):

* :func:`validity` (``validity.csv``): per judged family, ``valid`` /
  ``invalid`` / ``undetermined`` from three checks against the controls, each a
  three-way decision (significance, an effect floor, a bootstrap of the
  samples), Benjamini-Hochberg over every check of the run;
* :func:`comparisons` (``comparisons.csv``): each method arm against the
  family's best arm (many-to-one), two-sided Wilcoxon signed-rank tests with
  Holm over the k - 1 comparisons, paired effect sizes with bootstrap intervals,
  the n each comparison would need, and how stable the best arm is;
* :func:`ranking` (``ranking.csv``): mean ranks of the method arms and the Friedman test;
* :func:`marks` (the summary's ``best, effect, effect_ci_low, effect_ci_high,
  n_needed, mark_note``): ``best`` / ``tied`` only where the metric is valid,
  a comparison can reject at this n, and (for ``best``) the best arm keeps the
  top under a bootstrap of the samples;
* :func:`bootstrap_ci` / :func:`bootstrap_cis`: the summary's intervals.

The paired test everywhere is the Wilcoxon signed-rank test (Wilcoxon 1945),
computed by ``scipy.stats.wilcoxon`` on the differences with zeros dropped
(:func:`signed_rank`).
"""

from __future__ import annotations

import math
import warnings
import zlib
from typing import Iterator, Tuple

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import UserError
from .schema import AGGREGATE, is_judged, metric_kinds

BENCH = ["experiment", "dataset", "model"]
FAMILY = BENCH + ["metric"]
CONTROL_PREFIX = "control_"
CONTROLS = ("control_gt", "control_random", "control_gt_inverted", "control_constant")
# validity checks: (name, arm a, arm b, must a be better than b by more than the floor?)
VALIDITY_TESTS = (("gt_random", "control_gt", "control_random", True),
                  ("gt_inverted", "control_gt", "control_gt_inverted", True),
                  ("constant_random", "control_constant", "control_random", False))
_WORD = {"control_gt": "gt", "control_random": "random", "control_gt_inverted": "inverted gt",
         "control_constant": "constant"}
VERDICTS = ("valid", "invalid", "undetermined")

#: effect floor of the validity checks, as a fraction of the control span (see :func:`validity`)
FLOOR = 0.1
#: power the ``n_needed`` columns are computed for
POWER = 0.8
#: share of bootstrap resamples in which the best arm must keep the top mean to be marked ``best``
STABLE = 0.95
#: a medium standardised paired effect (Cohen 1988): what the default n is sized to detect
MEDIUM_DZ = 0.5
N_BOOT_VALIDITY = 2000
N_BOOT_EFFECT = 1000
#: ``n_needed`` above this is reported as NaN ("not reachable"): the effect sits (almost) on the boundary
N_CAP = 100_000
#: the summary columns :func:`marks` fills beside ``best``
MARK_COLUMNS = ("effect", "effect_ci_low", "effect_ci_high", "n_needed", "mark_note")


def is_control(method) -> bool:
    return str(method).startswith(CONTROL_PREFIX)


def _check_alpha(alpha: float, name: str = "alpha") -> None:
    if not (isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and 0 < alpha < 1):
        raise UserError(f"{name} must be a number strictly between 0 and 1 (e.g. 0.05), got {alpha!r}")


def _family_rng(seed, key: dict) -> np.random.Generator:
    """A generator per family, seeded by (seed, the family's name): a family's resamples do not depend on the
    other families of the run (a merged run gives the same numbers as one run)."""
    text = "\x1f".join(str(key[c]) for c in FAMILY)
    return np.random.default_rng([int(seed), zlib.crc32(text.encode())])


def family_seed(seed, key: dict) -> int:
    """The seed of a family's effect-size intervals in :func:`comparisons` (``scipy.stats.bootstrap`` gets
    ``np.random.default_rng(family_seed(seed, key))``)."""
    return int(_family_rng(seed, key).integers(2**31))


# --------------------------------------------------------------------------- intervals
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


def bootstrap_cis(arrays, level: float = 0.95, n_resamples: int = 1000, seed=0, statistic=np.mean
                  ) -> Tuple[np.ndarray, np.ndarray]:
    """:func:`bootstrap_ci` of each array in ``arrays`` (one scipy call per distinct number of finite values).

    ``scipy.stats.bootstrap`` draws one matrix of resampling indices per call
    and applies it to every row of a 2-D input, so the rows of one call get the
    interval each would get from its own call with the same seed (tested): a
    key's interval does not depend on the other keys.  ``statistic(x, axis)``
    (default the mean) must reduce the last axis.  Returns (low, high) arrays.
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
        with warnings.catch_warnings():  # a degenerate distribution (all resamples equal) is a valid answer here
            warnings.simplefilter("ignore")
            ci = stats.bootstrap((np.stack([xs[i] for i in idx]),), statistic, confidence_level=level, axis=-1,
                                 n_resamples=n_resamples, method="percentile", vectorized=True,
                                 rng=np.random.default_rng(seed)).confidence_interval
        lo[idx], hi[idx] = ci.low, ci.high
    return lo, hi


# --------------------------------------------------------------------------- tests and corrections
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


def _abs_ranks(d: np.ndarray) -> np.ndarray:
    """Ranks of ``|d|`` along the last axis among the non-zero entries (ties averaged); 0 where ``d == 0``."""
    nz = d != 0
    # zeros become -1, rank lowest, and are shifted out
    rank = stats.rankdata(np.where(nz, np.abs(d), -1.0), axis=-1) - (~nz).sum(axis=-1, keepdims=True)
    return np.where(nz, rank, 0.0)


def _sign_flip_test(d: np.ndarray, alternative: str) -> Tuple[np.ndarray, np.ndarray]:
    """(statistic, p) as ``scipy.stats.wilcoxon(d, axis=1, method=PermutationMethod())``, vectorised over rows.

    scipy's permutation path calls ``scipy.stats.permutation_test`` on the
    signed-rank statistic R+ one sign pattern at a time; here the same test
    (``permutation_type="samples"`` flips the signs of the differences, all
    ``2**n`` patterns, ``n_resamples=inf``) gets a vectorised R+: the ranks of
    ``|d|`` do not change under sign flips, so ``R+ = sum(rank * (d > 0))`` with
    the ranks (zeros dropped, ties averaged) computed once.
    """
    rank = _abs_ranks(d)
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


def bh(p) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (Benjamini & Hochberg 1995), ``scipy.stats.false_discovery_control``.

    With the m finite p-values sorted ascending: ``adj_(i) = min(1, min_{j >= i} m p_(j) / j)``.  Rejecting
    where ``adj < alpha`` controls the false discovery rate (the expected share of wrong decisions among those
    made) at ``alpha`` for independent or positively dependent tests.  NaN stays NaN and does not count in m.
    """
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = stats.false_discovery_control(np.clip(p[ok], 0.0, 1.0), method="bh")
    return out


def min_p_signed_rank(n: int, alternative: str = "two-sided") -> float:
    """Smallest p-value the exact signed-rank test can give with ``n`` non-zero differences: every difference
    of one sign, ``2**-n`` one-sided and twice that two-sided (1 for n = 0)."""
    return min(1.0, (2.0 if alternative == "two-sided" else 1.0) * 2.0 ** -int(n))


def min_pairs(alpha: float, tests: int = 1, alternative: str = "greater") -> int:
    """Fewest pairs with which a signed-rank test can be significant: ``tests * min_p < alpha``.

    ``tests`` is the multiplier of a Bonferroni / Holm first step (the k - 1
    comparisons with the best).  With n pairs (no zeros) the smallest exact
    p-value is ``2**-n`` one-sided, ``2**(1-n)`` two-sided, so n must exceed
    ``log2(c * tests / alpha)`` with c = 1 or 2: 5 for one test at 0.05
    one-sided, 9 for 11 two-sided comparisons at 0.05.
    """
    c = 2 if alternative == "two-sided" else 1
    return int(math.floor(math.log2(c * max(int(tests), 1) / alpha))) + 1


# --------------------------------------------------------------------------- effect sizes and sample sizes
def rank_biserial(d) -> np.ndarray:
    """Matched-pairs rank-biserial correlation along the last axis of ``d`` (Kerby 2014, "The simple difference
    formula"): ``r = (R+ - R-) / (R+ + R-)`` with the signed-rank sums of the Wilcoxon test (ranks of ``|d|``
    over the non-zero differences, ties averaged).  In [-1, 1]: +1 when every non-zero difference is positive;
    0 when all are zero."""
    d = np.round(np.asarray(d, dtype=float), 12)
    rank = _abs_ranks(d)
    rp, rm = np.sum(rank * (d > 0), axis=-1), np.sum(rank * (d < 0), axis=-1)
    tot = rp + rm
    return np.where(tot > 0, (rp - rm) / np.where(tot > 0, tot, 1.0), 0.0)[()]


def cohen_dz(d, axis: int = -1) -> np.ndarray:
    """Standardised paired effect ``dz = mean(d) / sd(d)`` (Cohen 1988, sd with ddof = 1); NaN where sd = 0."""
    d = np.asarray(d, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = d.std(axis=axis, ddof=1)
        return np.where(sd > 0, d.mean(axis=axis) / np.where(sd > 0, sd, 1.0), np.nan)[()]


def walsh_share(d) -> float:
    """``p' = P(D + D' > 0)`` estimated over the pairs i < j of ``d`` (a zero sum counts one half): the effect
    the signed-rank test sees (Noether 1987).  1/2 when there is no shift; NaN for fewer than 2 values."""
    d = np.asarray(d, dtype=float)
    d = d[np.isfinite(d)]
    if d.size < 2:
        return float("nan")
    i, j = np.triu_indices(d.size, k=1)
    s = np.round(d[i] + d[j], 12)
    return float(np.mean((s > 0) + 0.5 * (s == 0)))


def noether_n(p_prime: float, alpha: float = 0.05, power: float = POWER, tests: int = 1,
              alternative: str = "two-sided") -> float:
    """Pairs a signed-rank test needs to detect the shift ``p' = P(D + D' > 0)`` with ``power`` at level
    ``alpha / tests`` (Noether 1987, "Sample size determination for some common nonparametric tests"):

    ``n = (z_{1-a} + z_{power})**2 / (3 (p' - 1/2)**2)``, ``a = alpha / tests`` (halved when two-sided),

    and at least :func:`min_pairs` (the exact test's smallest p must be able to
    reach the level).  For normal differences ``p' = Phi(dz * sqrt(2))``.
    ``inf`` when ``p' = 1/2`` (no shift); NaN for a NaN ``p'``.
    """
    if not np.isfinite(p_prime):
        return float("nan")
    a = alpha / max(int(tests), 1) / (2 if alternative == "two-sided" else 1)
    gap = abs(p_prime - 0.5)
    floor_n = min_pairs(alpha, tests, alternative)
    if gap == 0:
        return float("inf")
    z = stats.norm.ppf(1 - a) + stats.norm.ppf(power)
    return float(max(math.ceil(z * z / (3 * gap * gap)), floor_n))


def normal_n(gap: float, sd: float, alpha: float, power: float = POWER) -> float:
    """Pairs a one-sided test at ``alpha`` needs to find a mean difference ``gap`` with per-pair SD ``sd`` with
    ``power`` (normal approximation): ``n = ((z_{1-alpha} + z_{power}) sd / gap)**2``; inf for a zero gap."""
    if not (np.isfinite(gap) and np.isfinite(sd)):
        return float("nan")
    if gap == 0:
        return float("inf")
    z = stats.norm.ppf(1 - alpha) + stats.norm.ppf(power)
    return float((z * sd / abs(gap)) ** 2)


def _n_text(n) -> str:
    if n is None or not np.isfinite(n) or n > N_CAP:
        return f"more than {N_CAP}"
    return f"{int(n)}"


def _cap(n: float) -> float:
    return float(n) if np.isfinite(n) and n <= N_CAP else float("nan")


# --------------------------------------------------------------------------- per-family data
def _values(df: pd.DataFrame) -> pd.DataFrame:
    d = df[df["metric"] != "skipped"].copy()
    d["params"] = d["params"].where(d["params"].notna(), "").astype(str)
    d["metric_kind"] = metric_kinds(d).to_numpy()
    return d


def _direction(higher_is_better) -> bool:
    """A family's direction: its first non-missing ``higher_is_better`` value (True when there is none)."""
    h = [x for x in higher_is_better if x is not None and not pd.isna(x)]
    return bool(h[0]) if h else True


def _families(df: pd.DataFrame) -> Iterator[tuple]:
    """Per family, in order of appearance: (key dict, higher_is_better, kind, arms, samples, V, P).

    ``arms``: the family's (method, params) in order of appearance (also arms
    with only an aggregate row); ``V[i, j]``: the per-sample value of sample i
    under arm j (NaN when undefined or absent); ``P[i, j]``: whether that row
    exists; ``kind``: the family's metric kind (its first row's).
    """
    d = _values(df)
    arm_code, arm_names = pd.factorize(d["method"].astype(str) + "\x1f" + d["params"])
    arm_names = [tuple(a.split("\x1f", 1)) for a in arm_names]
    sample = d["sample_id"].to_numpy(dtype=object)
    value = d["value"].to_numpy(dtype=float)
    hib = d["higher_is_better"].to_numpy(dtype=object)
    kinds = d["metric_kind"].to_numpy(dtype=object)
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
        yield (dict(zip(FAMILY, key)), _direction(hib[idx]), str(kinds[idx[0]]), [arm_names[c] for c in arms],
               samples, V, P)


def _num(x: float) -> str:
    """An effect for a sentence: two decimals, two significant digits below 0.1."""
    if not np.isfinite(x):
        return "nan"
    if x == 0:
        return "0"
    return f"{x:.2f}" if abs(x) >= 0.095 else f"{x:.2g}"


def _fmt_p(p: float) -> str:
    return f"p={p:.2g}"


# --------------------------------------------------------------------------- validity
def validity(df: pd.DataFrame, alpha: float = 0.05, floor: float = FLOOR, power: float = POWER,
             n_boot: int = N_BOOT_VALIDITY, level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Is each metric valid on each benchmark?  Three-valued verdicts from checks against the controls.

    One row per judged (``quality``) family.  The samples used are those on
    which every control present has a finite value (``n``; ``n_undefined``
    counts samples dropped for a NaN).  Values are oriented so that higher is
    better.  The *control span* ``S`` is the mean over the samples of the
    largest minus the smallest control value on the sample: how far apart the
    metric puts the best and the worst known explanation, its natural scale on
    this benchmark (it does not vanish for a metric that cannot tell the
    controls apart, so such a metric fails rather than stays undecided).  Each
    check compares two controls a, b through the paired differences
    ``d = a - b`` and its *effect* ``e = mean(d) / S`` (0 when S = 0):

    * ``gt_random``: ``control_gt`` must beat ``control_random`` by more than the floor;
    * ``gt_inverted``: ``control_gt`` must beat ``control_gt_inverted`` by more than the floor;
    * ``constant_random``: ``control_constant`` must *not* beat ``control_random`` by more than the floor.

    The floor is ``floor * S`` (default a tenth of the span).  Evidence that
    ``e > floor`` is the bootstrap p ``(#{e* <= floor} + 1) / (B + 1)`` over
    ``n_boot`` paired resamples of the samples (``e*`` recomputes the span too),
    evidence that ``e < floor`` likewise with the inequality reversed; neither is
    taken below ``2**-n``, the smallest p the exact signed-rank test can give
    with n pairs, so that a handful of samples decides nothing.  A "must beat"
    check *passes* on evidence that ``e > floor`` that is also significant
    against no difference (the larger of the two p-values, an
    intersection-union test; the one-sided Wilcoxon signed-rank test of d,
    :func:`signed_rank`, ``p_<check>``), and *fails* on evidence that
    ``e < floor``; a "must not beat" check the other way round.  A decision on
    the floor is thus a bootstrap of the samples that keeps the effect on one
    side of the floor in all but a BH-adjusted ``alpha`` of the resamples: it is
    stable under a bootstrap of the samples by construction.

    Multiplicity: the two one-sided p-values of every check of every family in
    ``df`` (one run) are adjusted together by Benjamini-Hochberg (:func:`bh`);
    a decision is made where its adjusted p is below ``alpha``.  This controls
    the expected share of wrong pass/fail decisions among those the run makes
    at ``alpha`` (positively dependent tests).  A check with neither decision
    is *undetermined*; its ``n_needed_<check>`` is the n at which its observed
    effect would be decided with ``power`` at the run's next BH level
    ``a = alpha (R + 1) / M`` (R decisions among M hypotheses), from the
    bootstrap standard error: ``n * ((z_{1-a} + z_power) se / |e - floor|)**2``,
    at least the n at which the exact test can reach ``a`` and, where the
    decision also needs the Wilcoxon test, the n of :func:`noether_n` for the
    observed differences.

    ``verdict``: ``invalid`` when a check fails; ``valid`` when all three pass;
    otherwise ``undetermined`` (a check undecided, a control missing -- e.g. no
    ground truth --, a control with several parameter settings, or only a
    dataset-level aggregate value).  ``n_needed``: for an undetermined verdict,
    the n that would decide it (the smallest of the checks leaning towards a
    failure, else the largest); NaN when more samples cannot decide it (a
    missing control) or the effect sits on the floor.  ``reason`` lists the
    checks, failures first.

    Columns: ``experiment, dataset, model, metric, higher_is_better, verdict,
    reason, n_needed, n, n_undefined, span, floor``, per check ``decision_<c>``
    (pass / fail / undetermined / na), ``effect_<c>``, ``effect_low_<c>``,
    ``effect_high_<c>`` (``level`` percentile bootstrap interval), ``p_<c>``
    (one-sided Wilcoxon of a better than b), ``p_pass_<c>`` and ``p_fail_<c>``
    (the two one-sided p-values that go into the BH adjustment), ``p_adj_<c>``
    (BH-adjusted p of the decision made or leaned towards), ``n_needed_<c>``, ``n_<c>`` and
    ``median_diff_<c>`` (median of a - b in the metric's units).
    """
    _check_alpha(alpha)
    _check_alpha(power, "power")
    _check_alpha(level, "level")
    if not (isinstance(floor, (int, float)) and 0 <= floor < 1):
        raise UserError(f"floor must be a number in [0, 1) (a fraction of the control span), got {floor!r}")
    names = [t[0] for t in VALIDITY_TESTS]
    per_check = ("decision", "effect", "effect_low", "effect_high", "p", "p_pass", "p_fail", "p_adj", "n_needed", "n",
                 "median_diff")
    cols = FAMILY + ["higher_is_better", "verdict", "reason", "n_needed", "n", "n_undefined", "span", "floor"] + [
        f"{c}_{name}" for name in names for c in per_check]
    fams, hyps = [], []  # hyps: (family index, check name, "pass"/"fail", p)
    for key, hib, kind, arms, samples, V, P in _families(df):
        if not is_judged(kind):
            continue
        row = dict(key, higher_is_better=hib, n=0, n_undefined=0, span=np.nan, floor=floor)
        checks, notes = {}, []
        cols_of = {c: [j for j, (meth, _) in enumerate(arms) if meth == c] for c in CONTROLS}
        present = [c for c in CONTROLS if len(cols_of[c]) == 1]
        if len(samples) == 0:
            notes.append("only a dataset-level aggregate value: no per-sample values to pair")
        elif present:
            J = [cols_of[c][0] for c in present]
            rows_all = P[:, J].all(axis=1)
            ok = rows_all & np.isfinite(V[:, J]).all(axis=1)
            X = (1.0 if hib else -1.0) * V[ok][:, J]
            row["n"], row["n_undefined"] = int(ok.sum()), int((rows_all & ~ok).sum())
            raw = V[ok][:, J]
            checks = _validity_checks(X, raw, present, floor, n_boot, level, _family_rng(seed, key))
            if X.shape[0]:
                row["span"] = float((X.max(axis=1) - X.min(axis=1)).mean())
        if not any(cols_of[c] for c in CONTROLS) and len(samples):
            notes.append("the run has no control arms; the checks need " + ", ".join(CONTROLS) +
                         " (the experiments' method lists have them; a method= selection leaves them out)")
        for name, a, b, _ in VALIDITY_TESTS:
            for c in (a, b):
                if not any(cols_of[x] for x in CONTROLS):
                    continue
                if len(cols_of[c]) > 1:
                    notes.append(f"{c} has {len(cols_of[c])} parameter settings; the check needs one")
                elif not cols_of[c] and len(samples):
                    notes.append(f"no {c} rows" + (" (no ground truth?)" if c.startswith("control_gt") else ""))
            if name in checks and checks[name]["n"] < 1:
                notes.append(f"{_WORD[a]} vs {_WORD[b]}: no sample with finite values of both")
                checks.pop(name)
        fi = len(fams)
        fams.append((row, checks, list(dict.fromkeys(notes))))
        for name, c in checks.items():
            hyps += [(fi, name, "pass", c["p_pass"]), (fi, name, "fail", c["p_fail"])]
    adj = bh([h[3] for h in hyps]) if hyps else np.array([])
    decided = adj < alpha
    level_next = alpha * (int(decided.sum()) + 1) / max(len(hyps), 1)
    for (fi, name, side, _), a_, yes in zip(hyps, adj, decided):
        c = fams[fi][1][name]
        c[f"adj_{side}"] = float(a_)
        if yes:
            c["decision"] = side
    out = []
    for row, checks, notes in fams:
        reasons = {"fail": [], "undetermined": [], "pass": []}
        lean_fail, lean_pass = [], []
        for name, a, b, must in VALIDITY_TESTS:
            if name not in checks:
                row[f"decision_{name}"] = "na"
                continue
            c = checks[name]
            dec = c.get("decision", "undetermined")
            leans = "pass" if (c["effect"] > floor) == must else "fail"
            n_need = np.nan
            if dec == "undetermined":  # every part of the decision must reach the run's next BH level
                n_need = max(normal_n(c["effect"] - floor, c["se"] * math.sqrt(c["n"]), level_next, power),
                             min_pairs(level_next))
                if (leans == "pass") == must:  # the decision needs a better than b significantly, too
                    n_need = max(n_need, noether_n(c["walsh"], level_next, power, alternative="greater"))
                n_need = _cap(math.ceil(n_need)) if np.isfinite(n_need) else np.nan
                (lean_fail if leans == "fail" else lean_pass).append(n_need)
            row.update({f"decision_{name}": dec, f"effect_{name}": c["effect"], f"effect_low_{name}": c["lo"],
                        f"effect_high_{name}": c["hi"], f"p_{name}": c["p0"], f"n_{name}": c["n"],
                        f"p_pass_{name}": c["p_pass"], f"p_fail_{name}": c["p_fail"],
                        f"p_adj_{name}": c[f"adj_{dec if dec != 'undetermined' else leans}"],
                        f"median_diff_{name}": c["median_diff"], f"n_needed_{name}": n_need})
            reasons[dec].append(_check_text(dec, a, b, must, c, floor, n_need))
        decisions = [row[f"decision_{n}"] for n in names]
        if "fail" in decisions:
            verdict, n_needed = "invalid", np.nan
        elif decisions == ["pass"] * len(names):
            verdict, n_needed = "valid", np.nan
        else:
            verdict = "undetermined"
            if lean_fail:
                n_needed = min(lean_fail)  # one failure decides: the verdict is invalid
            elif "na" in decisions or not lean_pass:
                n_needed = np.nan  # a check cannot run: more samples do not help
            else:
                n_needed = max(lean_pass)
        text = reasons["fail"] + reasons["undetermined"] + reasons["pass"] + notes
        out.append(dict(row, verdict=verdict, n_needed=n_needed, reason="; ".join(text)))
    out = pd.DataFrame(out, columns=cols)
    for c in ["n_needed"] + [f"{x}_{name}" for name in names for x in ("n", "n_needed")]:
        out[c] = pd.array([None if pd.isna(v) else int(v) for v in out[c]], dtype="Int64")
    return out


def _validity_checks(X: np.ndarray, raw: np.ndarray, present: list, floor: float, n_boot: int, level: float,
                     rng: np.random.Generator) -> dict:
    """The statistics of each runnable check on the oriented control values ``X`` (samples x present controls):
    effect, bootstrap interval and standard error, the Wilcoxon p against no difference and the two one-sided
    p-values of the decision (``p_pass``, ``p_fail``)."""
    n = X.shape[0]
    out = {}
    if n == 0:
        return {name: {"n": 0} for name, a, b, _ in VALIDITY_TESTS if a in present and b in present}
    spread = X.max(axis=1) - X.min(axis=1)  # per sample: how far apart the controls' values lie
    span = float(spread.mean())
    idx = rng.integers(0, n, size=(n_boot, n))
    M = X[idx].mean(axis=1)  # (B, controls): the controls' means in each resample
    Sb = spread[idx].mean(axis=1)
    for name, a, b, must in VALIDITY_TESTS:
        if a not in present or b not in present:
            continue
        ia, ib = present.index(a), present.index(b)
        d = X[:, ia] - X[:, ib]
        e = float(d.mean() / span) if span > 0 else 0.0
        with np.errstate(invalid="ignore", divide="ignore"):
            eb = np.where(Sb > 0, (M[:, ia] - M[:, ib]) / np.where(Sb > 0, Sb, 1.0), 0.0)
        p0 = float(signed_rank(d, "greater")[1][0])
        # the floor is judged on the bootstrap of the effect; with n pairs nothing is decided below the
        # smallest p the exact signed-rank test could give (2**-n): a tiny n decides nothing
        exact = min_p_signed_rank(n, "greater")
        above = max((np.sum(eb <= floor) + 1) / (n_boot + 1), exact)  # evidence that e > floor
        below = max((np.sum(eb >= floor) + 1) / (n_boot + 1), exact)  # evidence that e < floor
        p_pass, p_fail = (max(p0, above), below) if must else (below, max(p0, above))
        lo, hi = np.quantile(eb, [(1 - level) / 2, (1 + level) / 2])
        out[name] = dict(n=n, effect=e, lo=float(lo), hi=float(hi), se=float(eb.std(ddof=1)) if n_boot > 1 else 0.0,
                         p0=p0, p_pass=float(p_pass), p_fail=float(p_fail), walsh=walsh_share(d) if n >= 2 else
                         float(d[0] > 0),
                         median_diff=float(np.median(raw[:, ia] - raw[:, ib])))
    return out


def _check_text(decision: str, a: str, b: str, must: bool, c: dict, floor: float, n_need) -> str:
    wa, wb = _WORD[a], _WORD[b]
    e = f"{_num(c['effect'])} [{_num(c['lo'])},{_num(c['hi'])}] of the control span"
    if decision == "pass":
        return (f"{wa} better than {wb} by {e} ({_fmt_p(c['p0'])})" if must else
                f"{wa} not better than {wb} by more than the floor {_num(floor)} ({e})")
    if decision == "fail":
        if not must:
            return f"FAILS: {wa} better than {wb} by {e} ({_fmt_p(c['p0'])}), above the floor {_num(floor)}"
        if c["effect"] > 0:
            return f"FAILS: {wa} better than {wb} by only {e}, below the floor {_num(floor)}"
        return f"FAILS: {wa} not better than {wb} ({e}; {_fmt_p(c['p0'])})"
    return f"{wa} vs {wb} undetermined: {e}, floor {_num(floor)} (needs n={_n_text(n_need)})"


# --------------------------------------------------------------------------- comparisons with the best
def comparisons(df: pd.DataFrame, alpha: float = 0.05, power: float = POWER, level: float = 0.95,
                n_boot: int = N_BOOT_EFFECT, seed: int = 0) -> pd.DataFrame:
    """Each method arm against the best arm of its family: the many-to-one comparisons behind the marks.

    Per judged family with at least two method arms (controls left out): the
    *best* arm has the best mean of its finite per-sample values (highest when
    higher is better, else lowest; the first in order of appearance on equal
    means).  Every other arm is compared with it over the samples where both
    have finite values (``n``; ``n_undefined``: samples both have where one is
    NaN) by a two-sided Wilcoxon signed-rank test (:func:`signed_rank`), and the
    p-values are adjusted by Holm over the k - 1 comparisons of the family
    (``comparisons``; the family of the correction is "the comparisons with the
    best arm on this benchmark and metric").  ``significant = p_holm < alpha``.

    Effect sizes of the paired differences ``d = best - arm``, oriented so that
    positive means the best arm is better, each with a ``level`` percentile
    bootstrap interval (``scipy.stats.bootstrap``, ``n_boot`` resamples of the
    pairs, seeded per family): ``effect`` (mean of d, in the metric's units),
    ``dz`` (:func:`cohen_dz`) and ``rank_biserial`` (:func:`rank_biserial`).
    ``mean_diff`` is the raw mean of ``arm - best``.

    Power: ``min_p_holm`` is the smallest adjusted p the comparison could reach
    at its n (``comparisons * 2**(1 - n_nonzero)``): where it is not below
    ``alpha`` the test cannot reject at this n.  ``n_needed`` is the n at which
    the observed difference would be significant with ``power`` at level
    ``alpha / comparisons`` (Holm's first step; :func:`noether_n` from the
    observed ``P(d + d' > 0)``), NaN when there is no difference to find.

    Stability of the best: ``top_share`` is the share of ``n_boot`` bootstrap
    resamples of the samples on which every method arm is finite (``n_top`` of
    them) in which the best arm (with any arm of exactly equal mean) keeps the
    top mean.

    One row per compared arm (k - 1 per family).  Columns: ``experiment,
    dataset, model, metric, higher_is_better, method, params, best_method,
    best_params, n, n_undefined, mean_diff, effect, effect_ci_low,
    effect_ci_high, dz, dz_ci_low, dz_ci_high, rank_biserial, rb_ci_low,
    rb_ci_high, statistic, p, p_holm, significant, comparisons, min_p_holm,
    n_needed, top_share, n_top``.
    """
    _check_alpha(alpha)
    _check_alpha(power, "power")
    cols = FAMILY + ["higher_is_better", "method", "params", "best_method", "best_params", "n", "n_undefined",
                     "mean_diff", "effect", "effect_ci_low", "effect_ci_high", "dz", "dz_ci_low", "dz_ci_high",
                     "rank_biserial", "rb_ci_low", "rb_ci_high", "statistic", "p", "p_holm", "significant",
                     "comparisons", "min_p_holm", "n_needed", "top_share", "n_top"]
    parts = []
    for key, hib, kind, arms, samples, V, P in _families(df):
        if not is_judged(kind) or len(samples) == 0:
            continue
        meth = [j for j, (m, _) in enumerate(arms) if not is_control(m) and np.isfinite(V[:, j]).any()]
        if len(meth) < 2:
            continue
        sign = 1.0 if hib else -1.0
        O = sign * V[:, meth]
        ok = np.isfinite(O) & P[:, meth]
        means = np.array([O[ok[:, j], j].mean() for j in range(len(meth))])
        b = int(np.argmax(means))  # the first of equal means
        others = [j for j in range(len(meth)) if j != b]
        M = ok[:, [b]] & ok[:, others]  # samples x comparisons
        D = O[:, [b]] - O[:, others]
        n = M.sum(axis=0)
        k = len(others)
        stat, p = np.full(k, np.nan), np.full(k, np.nan)
        eff = {c: np.full(k, np.nan) for c in ("effect", "effect_ci_low", "effect_ci_high", "dz", "dz_ci_low",
                                                "dz_ci_high", "rank_biserial", "rb_ci_low", "rb_ci_high")}
        nnz, n_needed = np.zeros(k, dtype=int), np.full(k, np.nan)
        by_mask = {}
        for c in range(k):  # comparisons over the same samples are tested and resampled together
            by_mask.setdefault(M[:, c].tobytes(), []).append(c)
        rng_seed = family_seed(seed, key)
        for cs in by_mask.values():
            rows = M[:, cs[0]]
            if not rows.any():
                continue
            d = D[rows][:, cs].T  # comparisons x pairs
            stat[cs], p[cs] = signed_rank(d, "two-sided")
            eff["effect"][cs], eff["dz"][cs], eff["rank_biserial"][cs] = d.mean(axis=1), cohen_dz(d), rank_biserial(d)
            for name, fn in (("effect", np.mean), ("dz", cohen_dz), ("rb", _rb_stat)):
                lo, hi = bootstrap_cis(list(d), level=level, n_resamples=n_boot, seed=rng_seed, statistic=fn)
                eff[f"{name}_ci_low"][cs], eff[f"{name}_ci_high"][cs] = lo, hi
            nnz[cs] = (np.round(d, 12) != 0).sum(axis=1)
        p_holm = holm(p)
        m = int(np.isfinite(p).sum())
        for c in range(k):
            if n[c] >= 2:
                n_needed[c] = _cap(noether_n(walsh_share(D[M[:, c], c]), alpha, power, tests=max(m, 1)))
        min_p = np.array([min(1.0, max(m, 1) * min_p_signed_rank(x, "two-sided")) for x in nnz])
        share, n_top = _top_share(O[ok.all(axis=1)], means, n_boot, rng_seed)
        parts.append(dict(
            key, higher_is_better=hib, method=[arms[meth[j]][0] for j in others],
            params=[arms[meth[j]][1] for j in others], best_method=arms[meth[b]][0], best_params=arms[meth[b]][1],
            n=n, n_undefined=((P[:, [meth[b]]] & P[:, [meth[j] for j in others]]) & ~M).sum(axis=0),
            mean_diff=-sign * np.where(n > 0, eff["effect"], np.nan), **eff, statistic=stat, p=p, p_holm=p_holm,
            significant=p_holm < alpha, comparisons=m, min_p_holm=min_p, n_needed=n_needed, top_share=share,
            n_top=n_top))
    out = _stack(parts, cols)
    out["n_needed"] = pd.array([None if pd.isna(v) else int(v) for v in out["n_needed"]], dtype="Int64")
    return out


def _rb_stat(x, axis=-1):
    return rank_biserial(np.moveaxis(x, axis, -1))


def _top_share(X: np.ndarray, means: np.ndarray, n_boot: int, seed: int) -> Tuple[float, int]:
    """Share of bootstrap resamples of the rows of ``X`` (complete samples x arms, oriented) in which the arms
    with the top mean (``means``) keep a mean at least as high as every other arm."""
    nc = X.shape[0]
    if nc == 0:
        return float("nan"), 0
    top = means == means.max()
    if top.all():
        return 1.0, nc
    idx = np.random.default_rng(seed + 1).integers(0, nc, size=(n_boot, nc))
    Mb = X[idx].mean(axis=1)
    keep = Mb[:, top].max(axis=1) >= Mb[:, ~top].max(axis=1) - 1e-12
    return float(keep.mean()), nc


# --------------------------------------------------------------------------- ranking
def ranking(df: pd.DataFrame) -> pd.DataFrame:
    """Mean rank of every method arm per judged family, and the Friedman test.  Controls are not ranked.

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
    every sample.  Rows are sorted by mean rank within a family.
    """
    cols = FAMILY + ["higher_is_better", "method", "params", "mean_rank", "n_samples", "n_arms",
                     "friedman_statistic", "friedman_p", "note"]
    parts = []
    for key, hib, kind, all_arms, samples, V_all, P in _families(df):
        if not is_judged(kind):
            continue
        keep = [j for j, (m, _) in enumerate(all_arms) if not is_control(m)]
        if not keep:
            continue
        arms, V = [all_arms[j] for j in keep], V_all[:, keep]
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
            mean_rank=mean_rank[order], n_samples=int(X.shape[0]), n_arms=int(use.sum()),
            friedman_statistic=float(stat), friedman_p=float(pval), note=[_join(why, notes[j]) for j in order]))
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


# --------------------------------------------------------------------------- marks
def marks(summary: pd.DataFrame, comparisons: pd.DataFrame, validity: pd.DataFrame, alpha: float = 0.05,
          stable: float = STABLE) -> pd.DataFrame:
    """The summary's mark columns: ``best, effect, effect_ci_low, effect_ci_high, n_needed, mark_note``.

    Per judged family, the method arms (never the controls) are marked only when

    1. the metric is ``valid`` on the benchmark (``validity``; invalid or undetermined: no marks, and
       ``n_needed`` is the verdict's);
    2. some comparison with the best can reject at this n (``min_p_holm < alpha``, :func:`comparisons`);
       otherwise no marks and ``n_needed`` is the n at which it could.

    Then ``best`` goes to the best arm (and arms of exactly equal mean) when it
    keeps the top mean in at least ``stable`` of the bootstrap resamples
    (``top_share``), else it is ``tied`` (the top is not stable); ``tied`` goes
    to every arm whose Holm-adjusted comparison with the best is not
    significant (``p_holm >= alpha``).  ``effect`` and its interval: the
    arm's paired difference to the best (positive = the best is better;
    :func:`comparisons`), and for the best arm its margin over the runner-up
    (the arm with the next mean).  ``n_needed``: for a ``tied`` arm the n at
    which its observed difference would be significant with power 0.8.
    ``mark_note``: why a family has no or fewer marks.
    """
    out = pd.DataFrame({"best": "", "effect": np.nan, "effect_ci_low": np.nan, "effect_ci_high": np.nan,
                        "n_needed": np.nan, "mark_note": ""}, index=summary.index)
    if summary.empty:
        out["n_needed"] = pd.array([], dtype="Int64")
        return out
    s = summary.assign(_params=summary["params"].where(summary["params"].notna(), "").astype(str),
                       _kind=metric_kinds(summary).to_numpy())
    fam_of = lambda f: tuple(str(f[c]) for c in FAMILY)  # noqa: E731
    verdict = {}
    if validity is not None and len(validity):
        for _, r in validity.iterrows():
            verdict[fam_of(r)] = (str(r["verdict"]), r.get("n_needed", np.nan))
    cmp = {}
    if comparisons is not None and len(comparisons):
        c = comparisons.assign(params=comparisons["params"].where(comparisons["params"].notna(), "").astype(str),
                               best_params=comparisons["best_params"].where(comparisons["best_params"].notna(),
                                                                            "").astype(str))
        for fam, g in c.groupby(FAMILY, sort=False, dropna=False):
            cmp[tuple(map(str, fam))] = g
    for fam, g in s.groupby(FAMILY, sort=False, dropna=False):
        fam = tuple(map(str, fam))
        if not is_judged(str(g["_kind"].iloc[0])):
            continue
        rows = g[~g["method"].map(is_control)]
        if rows.empty:
            continue
        v, v_n = verdict.get(fam, ("undetermined", np.nan))
        if v != "valid":
            why = ("metric judged invalid on this benchmark" if v == "invalid" else
                   "validity undetermined" + (f" (needs n={_n_text(v_n)})" if pd.notna(v_n) else ""))
            out.loc[rows.index, "mark_note"] = f"no marks: {why}"
            if v == "undetermined" and pd.notna(v_n):
                out.loc[rows.index, "n_needed"] = float(v_n)
            continue
        cf = cmp.get(fam)
        if cf is None or cf.empty:
            out.loc[rows.index, "mark_note"] = "no marks: fewer than 2 methods with per-sample values to compare"
            continue
        m = int(cf["comparisons"].iloc[0])
        if not (pd.to_numeric(cf["min_p_holm"]) < alpha).any():
            n_pairs = int(pd.to_numeric(cf["n"]).max())
            need = min_pairs(alpha, m, "two-sided")
            out.loc[rows.index, "mark_note"] = (
                f"no marks: with {m} comparisons and n={n_pairs} no comparison with the best can be significant "
                f"(smallest Holm p {min(1.0, m * min_p_signed_rank(n_pairs)):.2g}); needs n={need}")
            out.loc[rows.index, "n_needed"] = float(need)
            continue
        arm = {(r["method"], r["params"]): r for _, r in cf.iterrows()}
        best_key = (str(cf["best_method"].iloc[0]), str(cf["best_params"].iloc[0]))
        share = float(cf["top_share"].iloc[0])
        top_mark = "best" if np.isfinite(share) and share >= stable else "tied"
        # the best arm's margin: its comparison with the runner-up (the smallest effect among the others)
        runner = cf.loc[pd.to_numeric(cf["effect"]).idxmin()] if cf["effect"].notna().any() else None
        for i, r in rows.iterrows():
            k = (str(r["method"]), r["_params"])
            if k == best_key or (k in arm and arm[k]["effect"] == 0 and arm[k]["mean_diff"] == 0):
                out.loc[i, "best"] = top_mark
                src = runner if k == best_key else arm[k]
            elif k in arm:
                src = arm[k]
                if pd.notna(src["p_holm"]) and src["p_holm"] >= alpha:
                    out.loc[i, "best"] = "tied"
                    out.loc[i, "n_needed"] = src["n_needed"] if pd.notna(src["n_needed"]) else np.nan
            else:
                continue
            if src is not None:
                out.loc[i, ["effect", "effect_ci_low", "effect_ci_high"]] = [
                    src["effect"], src["effect_ci_low"], src["effect_ci_high"]]
        if top_mark == "tied":
            out.loc[rows.index, "mark_note"] = (f"best not stable: {best_key[0]} keeps the top mean in {share:.0%} of "
                                                f"bootstrap resamples (below {stable:.0%}), so it is marked ~")
    out["n_needed"] = pd.array([None if pd.isna(v) else int(v) for v in out["n_needed"]], dtype="Int64")
    return out


def mark_best(summary: pd.DataFrame, comparisons: pd.DataFrame, validity: pd.DataFrame, alpha: float = 0.05
              ) -> pd.Series:
    """``best`` / ``tied`` / '' per summary row: the ``best`` column of :func:`marks`."""
    return marks(summary, comparisons, validity, alpha=alpha)["best"].astype(object)


# --------------------------------------------------------------------------- power of the comparison procedure
def power_vs_best(n: int, k: int, dz: float = MEDIUM_DZ, alpha: float = 0.05, others: str = "tied",
                  n_sim: int = 1000, seed: int = 0) -> dict:
    """Monte-Carlo operating characteristics of :func:`comparisons` (Wilcoxon against the observed best arm,
    Holm over the k - 1 comparisons) with ``n`` samples and ``k`` method arms.

    Model: ``value[i, j] = mu_j + u_i + e_ij`` with ``u_i`` a sample effect shared by the arms and ``e_ij``
    normal with variance 1/2, so the paired difference of two arms has SD 1 and ``dz = mu_a - mu_b``.  Arm 0
    is the best (``mu = 0``) and arm 1 lies ``dz`` below it.  The other k - 2 arms are at 0 (``others="tied"``:
    tied with the best, so the observed best is one of k - 1 equal arms and Holm corrects over comparisons
    that mostly do not reject), at ``-dz`` like arm 1 (``"worse"``: the best stands alone, every comparison
    has the same effect) or far below (``"far"``, -3: every other comparison rejects).  Returns ``{"power": share of simulations in which arm 1 is found significantly worse than the
    observed best, "false_split": share in which at least one arm tied with the best is found significantly
    worse, "false_split_per_arm": the same per tied arm (the chance that one given ~ mark is lost)}``.  The
    best is chosen from the same samples, so arms tied with it look worse than they are: ``false_split`` exceeds
    alpha when many arms tie (the procedure protects the best arm, not every tied one).
    """
    if k < 2:
        raise UserError(f"power_vs_best needs k >= 2 arms, got {k}")
    rng = np.random.default_rng(seed)
    mu = np.zeros(k)
    mu[1] = -dz
    if others == "far":
        mu[2:] = -3.0
    elif others == "worse":
        mu[2:] = -dz
    elif others != "tied":
        raise UserError(f"others must be 'tied', 'worse' or 'far', got {others!r}")
    tied = mu == 0
    X = mu + rng.normal(0, math.sqrt(0.5), (n_sim, n, k)) + rng.normal(0, 1, (n_sim, n, 1))
    top = X.mean(axis=1).argmax(axis=1)
    D = np.take_along_axis(X, top[:, None, None], axis=2) - X  # (sim, n, k): top - arm
    rest = np.ones((n_sim, k), dtype=bool)
    rest[np.arange(n_sim), top] = False
    Dk = np.moveaxis(D, 1, 2)[rest].reshape(n_sim, k - 1, n)
    arm_of = np.nonzero(rest)[1].reshape(n_sim, k - 1)
    p = signed_rank(Dk.reshape(-1, n), "two-sided")[1].reshape(n_sim, k - 1)
    sig = np.apply_along_axis(holm, 1, p) < alpha
    power = np.mean(np.any(sig & (arm_of == 1), axis=1))
    false_split = np.mean(np.any(sig & tied[arm_of], axis=1))
    n_tied = int(tied.sum()) - 1  # tied arms other than the observed best (when the best is one of them)
    per_arm = float(np.sum(sig & tied[arm_of]) / (n_sim * n_tied)) if n_tied > 0 else 0.0
    return {"power": float(power), "false_split": float(false_split), "false_split_per_arm": per_arm}
