"""Statistics of the result tables (xaibench.analysis.stats), checked against scipy called directly and by hand."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from xaibench.analysis import stats as S
from xaibench.analysis.results import AGGREGATE, to_frame
from xaibench.errors import UserError


def frame(arms, metric="m", hib=True, bench=("e", "d", "mod"), params="{}", kind="quality"):
    """Per-sample rows: ``arms`` maps a method label to its values on samples s0, s1, ... (None = no row)."""
    rows = []
    for method, values in arms.items():
        for i, v in enumerate(values):
            if v is not None:
                rows.append(dict(experiment=bench[0], dataset=bench[1], model=bench[2], method=method,
                                 params=params, sample_id=f"s{i}", metric=metric, value=v, higher_is_better=hib,
                                 metric_kind=kind))
    return to_frame(rows)


N = 12
RANDOM = np.random.default_rng(12345).uniform(0.3, 0.7, N)  # the control_random arm


# --------------------------------------------------------------------------- bootstrap
def test_bootstrap_ci_is_scipys_percentile_bootstrap_of_the_mean():
    rng = np.random.default_rng(1)
    x = rng.normal(1.0, 2.0, 15)
    ref = st.bootstrap((x,), np.mean, confidence_level=0.9, n_resamples=500, method="percentile",
                       rng=np.random.default_rng(7)).confidence_interval
    lo, hi = S.bootstrap_ci(x, level=0.9, n_resamples=500, seed=7)
    assert (lo, hi) == pytest.approx((ref.low, ref.high), rel=1e-12)
    assert lo < x.mean() < hi
    assert S.bootstrap_ci(x, level=0.9, n_resamples=500, seed=7) == (lo, hi)  # deterministic
    assert S.bootstrap_ci(x, level=0.9, n_resamples=500, seed=8) != (lo, hi)
    lo99, hi99 = S.bootstrap_ci(x, level=0.99, n_resamples=500, seed=7)
    assert lo99 <= lo and hi <= hi99


def test_bootstrap_ci_edge_cases():
    x = np.array([1.0, np.nan, 3.0, 2.0, np.inf])
    assert S.bootstrap_ci(x, seed=1) == S.bootstrap_ci([1.0, 3.0, 2.0], seed=1)  # non-finite values left out
    assert all(math.isnan(v) for v in S.bootstrap_ci([1.0, np.nan]))
    assert all(math.isnan(v) for v in S.bootstrap_ci([]))
    assert S.bootstrap_ci([0.5, 0.5, 0.5]) == (0.5, 0.5)
    with pytest.raises(UserError, match="level"):
        S.bootstrap_ci([1.0, 2.0], level=95)


def test_batched_bootstrap_gives_each_array_its_own_interval():
    rng = np.random.default_rng(2)
    arrays = [rng.normal(size=n) for n in (8, 8, 24, 8, 24, 1)] + [np.array([1.0, np.nan, 2.0, 5.0])]
    lo, hi = S.bootstrap_cis(arrays, seed=3)
    for a, l, h in zip(arrays, lo, hi):
        ref = S.bootstrap_ci(a, seed=3)
        if math.isnan(ref[0]):
            assert math.isnan(l) and math.isnan(h)
        else:
            assert (l, h) == pytest.approx(ref, rel=1e-12, abs=1e-12)


# --------------------------------------------------------------------------- tests and corrections
def test_holm_against_a_hand_computed_example():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> running max 0.06
    assert S.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    out = S.holm([0.02, np.nan, 0.04])  # NaN is not a test: m = 2
    assert out[[0, 2]] == pytest.approx([0.04, 0.04]) and np.isnan(out[1])
    assert S.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert S.holm([]).size == 0


def test_benjamini_hochberg_against_scipy_and_by_hand():
    # m = 4, sorted 0.005, 0.01, 0.03, 0.04: 4p/i = 0.02, 0.02, 0.04, 0.04; running min from the top
    assert S.bh([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.02, 0.04, 0.04, 0.02])
    p = np.random.default_rng(0).uniform(0, 0.2, 30)
    assert S.bh(p) == pytest.approx(st.false_discovery_control(p, method="bh"), rel=1e-12)
    out = S.bh([0.02, np.nan, 0.04])
    assert out[[0, 2]] == pytest.approx([0.04, 0.04]) and np.isnan(out[1])
    assert S.bh([]).size == 0


@pytest.mark.parametrize("alt", ["two-sided", "greater", "less"])
def test_signed_rank_equals_scipy_wilcoxon(alt):
    rng = np.random.default_rng(0)
    cases = [rng.normal(0.3, 1, 8),  # exact distribution
             rng.normal(0.3, 1, 30),  # exact
             rng.normal(0.3, 1, 60),  # normal approximation
             rng.integers(-2, 4, 20).astype(float),  # ties and zeros, n > 13: normal approximation
             np.array([0.0, 1.0, 1.0, -2.0, 3.0, 3.0, 2.0])]  # ties and a zero, n <= 13: permutation
    for d in cases:
        stat, p = S.signed_rank(d, alt)
        ref = st.wilcoxon(d, alternative=alt)
        assert stat[0] == pytest.approx(ref.statistic, rel=1e-12)
        assert p[0] == pytest.approx(ref.pvalue, rel=1e-9)


def test_signed_rank_rows_are_tested_independently():
    """Rows go to scipy in batches; each row's result is that of its own scipy call."""
    d = np.array([[1.0, 2.0, 3.0, 4.0, -0.5, 6.0],  # no ties: exact
                  [1.0, 1.0, 2.0, 0.0, -1.0, 3.0],  # ties and a zero: permutation
                  [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # no difference at all
                  [2.0, 1.0, 2.0, 3.0, 5.0, 4.0],  # ties: permutation, in one batch with row 1
                  [-1.0, -2.0, 0.5, -3.0, -4.0, -5.0]])
    stat, p = S.signed_rank(d, "greater")
    for i in (0, 1, 3, 4):
        ref = st.wilcoxon(d[i], alternative="greater")
        assert (stat[i], p[i]) == pytest.approx((ref.statistic, ref.pvalue), rel=1e-12)
    assert (stat[2], p[2]) == (0.0, 1.0)


def test_signed_rank_treats_round_off_as_a_tie():
    a, b = np.array([0.3, 0.5, 0.7, 0.9, 1.2, 1.6]), np.array([0.1, 0.3, 0.4, 0.5, 0.6, 0.7])
    assert len(set(a - b)) == 6  # 0.3-0.1 and 0.5-0.3 differ by round-off
    ref = st.wilcoxon(np.round(a - b, 12), alternative="greater")  # the docs' advice: round, then test
    assert S.signed_rank(a - b, "greater")[1][0] == pytest.approx(ref.pvalue, rel=1e-12)


def test_min_pairs_is_the_fewest_that_can_reach_significance():
    assert S.min_pairs(0.05) == 5 and S.min_pairs(0.01) == 7
    assert S.min_pairs(0.05, tests=11, alternative="two-sided") == 9  # 11 * 2 / 2**9 = 0.043 < 0.05 <= 0.086
    for alpha, tests, alt in ((0.05, 1, "greater"), (0.01, 1, "greater"), (0.1, 1, "greater"),
                              (0.05, 11, "two-sided"), (0.05, 9, "two-sided"), (0.05, 1, "two-sided")):
        n = S.min_pairs(alpha, tests, alt)
        assert tests * st.wilcoxon(np.arange(1.0, n + 1), alternative=alt).pvalue < alpha
        assert tests * st.wilcoxon(np.arange(1.0, n), alternative=alt).pvalue >= alpha
        assert S.min_p_signed_rank(n, alt) == pytest.approx(st.wilcoxon(np.arange(1.0, n + 1), alternative=alt).pvalue)


# --------------------------------------------------------------------------- effect sizes and sample sizes
def test_rank_biserial_by_hand_and_from_scipys_signed_rank_sum():
    # |d| ranks: 0.5->1, 1->2.5, 1->2.5, 2->4, 3->5 (the zero dropped); R+ = 1 + 2.5 + 4 + 5 = 12.5, R- = 2.5
    d = np.array([1.0, -1.0, 0.0, 2.0, 3.0, 0.5])
    assert S.rank_biserial(d) == pytest.approx((12.5 - 2.5) / 15)
    rng = np.random.default_rng(1)
    for x in (rng.normal(0.2, 1, 20), rng.integers(-3, 4, 15).astype(float)):
        r_plus = st.wilcoxon(x, alternative="greater", method="asymptotic").statistic  # R+ (zeros dropped)
        nz = np.count_nonzero(x)
        assert S.rank_biserial(x) == pytest.approx(2 * r_plus / (nz * (nz + 1) / 2) - 1, rel=1e-12)
    assert S.rank_biserial(np.zeros(4)) == 0.0 and S.rank_biserial([1.0, 2.0]) == 1.0
    assert S.rank_biserial(np.vstack([d, -d])) == pytest.approx([10 / 15, -10 / 15])  # rows


def test_cohen_dz_and_walsh_share_by_hand():
    d = np.array([1.0, 2.0, 3.0, 6.0])
    assert S.cohen_dz(d) == pytest.approx(3.0 / np.std(d, ddof=1))
    assert np.isnan(S.cohen_dz([2.0, 2.0, 2.0]))
    # pairs i<j of [-1, 0, 2]: -1 (neg), 1 (pos), 2 (pos) -> 2/3; with a zero sum counting one half
    assert S.walsh_share([-1.0, 0.0, 2.0]) == pytest.approx(2 / 3)
    assert S.walsh_share([-1.0, 1.0, 2.0]) == pytest.approx((0.5 + 1 + 1) / 3)
    assert np.isnan(S.walsh_share([1.0]))


def test_noether_n_gives_the_stated_power_with_scipys_wilcoxon():
    """At Noether's n for a normal shift dz = 0.5 (p' = Phi(0.5 sqrt 2)), scipy's two-sided signed-rank test at
    0.05 rejects in about 80 % of 2000 simulated samples (Noether's formula is slightly conservative)."""
    p_prime = st.norm.cdf(0.5 * math.sqrt(2))
    n = S.noether_n(p_prime, alpha=0.05, power=0.8)
    assert 30 <= n <= 45
    x = np.random.default_rng(0).normal(0.5, 1.0, (2000, int(n)))
    power = np.mean(st.wilcoxon(x, axis=1).pvalue < 0.05)
    assert 0.78 <= power <= 0.9
    assert S.noether_n(0.5) == math.inf and math.isnan(S.noether_n(float("nan")))
    assert S.noether_n(1.0, tests=11) >= S.min_pairs(0.05, 11, "two-sided")  # never below the exact minimum
    assert S.normal_n(0.5, 1.0, 0.05, 0.8) == pytest.approx(((1.6448536 + 0.8416212) / 0.5) ** 2, rel=1e-6)


# --------------------------------------------------------------------------- validity
def controls(gt, inverted, constant, random=RANDOM, **kw):
    return frame({"control_gt": gt, "control_gt_inverted": inverted, "control_constant": constant,
                  "control_random": random}, **kw)


def _span(*arms):
    X = np.column_stack(arms)
    return np.mean(X.max(axis=1) - X.min(axis=1))


def test_validity_valid_when_gt_clearly_beats_random_and_inverted():
    rng = np.random.default_rng(3)
    gt, inv = RANDOM + 0.3 + rng.uniform(0, 0.1, N), RANDOM - 0.25 + rng.uniform(0, 0.1, N)
    const = RANDOM - 0.05 + rng.normal(0, 0.02, N)
    v = S.validity(controls(gt, inv, const)).iloc[0]
    assert v["verdict"] == "valid", v["reason"]
    assert v["n"] == N and v["n_gt_random"] == N and v["n_undefined"] == 0 and pd.isna(v["n_needed"])
    span = _span(gt, RANDOM, inv, const)
    assert v["span"] == pytest.approx(span)
    assert v["effect_gt_random"] == pytest.approx(np.mean(gt - RANDOM) / span)
    assert v["effect_constant_random"] == pytest.approx(np.mean(const - RANDOM) / span)
    assert v["effect_low_gt_random"] <= v["effect_gt_random"] <= v["effect_high_gt_random"]
    assert v["p_gt_random"] == pytest.approx(st.wilcoxon(gt, RANDOM, alternative="greater").pvalue, rel=1e-9)
    assert v["p_gt_inverted"] == pytest.approx(st.wilcoxon(gt, inv, alternative="greater").pvalue, rel=1e-9)
    # the decision's p is at least the Wilcoxon p (the intersection-union rule) and never below 2**-n
    assert v["p_pass_gt_random"] >= v["p_gt_random"] and v["p_pass_constant_random"] >= 2.0 ** -N
    assert v["p_fail_constant_random"] >= st.wilcoxon(const, RANDOM, alternative="greater").pvalue
    assert v["median_diff_gt_random"] == pytest.approx(np.median(gt - RANDOM))
    assert {v[f"decision_{c}"] for c in ("gt_random", "gt_inverted", "constant_random")} == {"pass"}
    assert "gt better than random" in v["reason"] and "constant not better than random" in v["reason"]


def test_validity_adjusts_every_check_of_the_run_together_with_benjamini_hochberg():
    rng = np.random.default_rng(11)
    parts = []
    for k in range(3):  # three metrics, the second with a weaker ground truth
        shift = 0.3 if k != 1 else 0.08
        parts.append(controls(RANDOM + shift + rng.uniform(0, 0.1, N), RANDOM - 0.3, RANDOM + rng.normal(0, .02, N),
                              metric=f"m{k}"))
    v = S.validity(pd.concat(parts, ignore_index=True))
    names = ("gt_random", "gt_inverted", "constant_random")
    raw = np.concatenate([[v[f"p_pass_{c}"].iloc[i], v[f"p_fail_{c}"].iloc[i]] for i in range(3) for c in names])
    adj = st.false_discovery_control(raw, method="bh").reshape(3, 3, 2)
    for i in range(3):
        for j, c in enumerate(names):
            dec = v[f"decision_{c}"].iloc[i]
            if dec == "pass":
                assert v[f"p_adj_{c}"].iloc[i] == pytest.approx(adj[i, j, 0]) and adj[i, j, 0] < 0.05
            elif dec == "fail":
                assert v[f"p_adj_{c}"].iloc[i] == pytest.approx(adj[i, j, 1]) and adj[i, j, 1] < 0.05
            else:
                assert adj[i, j].min() >= 0.05


def test_validity_follows_the_metric_direction():
    rng = np.random.default_rng(4)
    gt, inv = RANDOM - 0.3 - rng.uniform(0, 0.1, N), RANDOM + 0.3  # lower is better: gt is best
    const = RANDOM + 0.05 + rng.normal(0, 0.02, N)
    low = S.validity(controls(gt, inv, const, hib=False)).iloc[0]
    assert low["verdict"] == "valid", low["reason"]
    assert low["p_gt_random"] == pytest.approx(st.wilcoxon(gt, RANDOM, alternative="less").pvalue, rel=1e-9)
    assert low["effect_gt_random"] > 0.1
    high = S.validity(controls(gt, inv, const, hib=True)).iloc[0]  # same numbers, higher is better
    assert high["verdict"] == "invalid"
    assert "FAILS: gt not better than random" in high["reason"]


def test_validity_invalid_when_gt_does_not_beat_random():
    rng = np.random.default_rng(5)
    n = 60
    rand = rng.uniform(0.3, 0.7, n)
    gt = rand + rng.normal(0, 0.05, n)  # no better than random
    v = S.validity(controls(gt, rand - 0.5, rand + rng.normal(0, 0.02, n), random=rand)).iloc[0]
    assert v["verdict"] == "invalid" and v["decision_gt_random"] == "fail", v["reason"]
    assert v["p_gt_random"] == pytest.approx(st.wilcoxon(gt, rand, alternative="greater").pvalue, rel=1e-9)
    assert v["effect_high_gt_random"] < 0.1
    assert v["reason"].startswith("FAILS: gt")


def test_validity_invalid_on_a_consistent_but_negligible_effect():
    """gt beats random on every sample, but by 0.5 % of the control span: significant, yet below the floor
    (what staa_faithfulness does on the image benchmarks)."""
    rng = np.random.default_rng(6)
    n = 40
    rand = rng.uniform(0.95, 0.99, n)
    gt = rand + 0.002 + rng.uniform(0, 0.001, n)
    inv = rand - 0.4 + rng.normal(0, 0.02, n)
    v = S.validity(controls(gt, inv, rand + rng.normal(0, 0.001, n), random=rand)).iloc[0]
    assert v["p_gt_random"] < 1e-6  # significant ...
    assert v["verdict"] == "invalid" and "below the floor" in v["reason"]  # ... but negligible


def test_validity_invalid_when_a_constant_map_beats_random():
    v = S.validity(controls(RANDOM + 0.5, RANDOM - 0.2, RANDOM + 0.3)).iloc[0]
    assert v["verdict"] == "invalid" and v["reason"].startswith("FAILS: constant better than random")


def test_validity_undetermined_at_a_small_n_with_the_n_it_would_need():
    def draw(rng, n):  # a real but noisy gt effect (about 0.17 of the span), a clearly valid rest
        rand = rng.uniform(0.3, 0.7, n)
        return controls(rand + 0.25 + rng.normal(0, 0.3, n), rand - 1.0, rand - 0.3 + rng.normal(0, 0.1, n),
                        random=rand)

    rng = np.random.default_rng(7)
    v = S.validity(draw(rng, 5)).iloc[0]  # 5 pairs: no p below 2**-5 -- nothing is decided
    assert v["verdict"] == "undetermined", v["reason"]
    assert v["n_needed"] > 5 and f"needs n={v['n_needed']}" in v["reason"]
    # with twice the n it asks for, samples from the same distribution give a determined, correct verdict
    big = S.validity(draw(rng, 2 * int(v["n_needed"]))).iloc[0]
    assert big["verdict"] == "valid", big["reason"]
    # at n = 20 the gt effect's interval straddles the floor: undetermined, and far more samples are needed
    mid = S.validity(draw(rng, 20)).iloc[0]
    assert mid["verdict"] == "undetermined" and mid["decision_gt_random"] == "undetermined"
    assert mid["effect_low_gt_random"] < 0.1 < mid["effect_high_gt_random"] and mid["n_needed"] > 20


def test_validity_verdicts_do_not_depend_on_the_bootstrap_seed_in_clear_cases():
    rng = np.random.default_rng(8)
    gt, inv = RANDOM + 0.3 + rng.uniform(0, 0.1, N), RANDOM - 0.25
    df = pd.concat([controls(gt, inv, RANDOM - 0.05, metric="good"),
                    controls(gt, inv, RANDOM + 0.3, metric="bad")], ignore_index=True)
    verdicts = {tuple(S.validity(df, seed=s)["verdict"]) for s in range(5)}
    assert verdicts == {("valid", "invalid")}


def test_validity_undetermined_without_ground_truth_and_only_for_judged_kinds():
    no_gt = S.validity(frame({"control_random": RANDOM, "control_constant": RANDOM - 0.2, "staa": RANDOM}))
    r = no_gt.iloc[0]
    assert r["verdict"] == "undetermined" and "no control_gt rows (no ground truth?)" in r["reason"]
    assert r["decision_constant_random"] == "pass" and r["decision_gt_random"] == "na"  # the check that can run
    assert pd.isna(r["n_needed"])  # more samples cannot decide it
    none = S.validity(frame({"staa": RANDOM, "lime": RANDOM}))
    assert none.iloc[0]["verdict"] == "undetermined"
    assert S.validity(frame({"a": []})).empty
    for kind in ("cost", "descriptive", "sanity"):  # never judged: no row
        assert S.validity(controls(RANDOM + 0.5, RANDOM - 0.5, RANDOM, metric="x", kind=kind)).empty


def test_validity_counts_nan_samples_and_drops_them():
    gt = RANDOM + 0.4
    gt[[1, 4]] = np.nan
    inv = RANDOM - 0.4
    inv[4] = np.nan
    inv[7] = np.nan
    const = RANDOM - 0.02
    v = S.validity(controls(gt, inv, const)).iloc[0]
    assert v["n"] == N - 3 and v["n_undefined"] == 3  # samples 1, 4 and 7: every check uses the same samples
    ok = np.isfinite(gt) & np.isfinite(inv)
    assert v["p_gt_random"] == pytest.approx(st.wilcoxon(gt[ok], RANDOM[ok], alternative="greater").pvalue)
    assert v["verdict"] == "valid", v["reason"]


def test_validity_of_an_aggregate_only_metric_is_undetermined():
    agg = to_frame([dict(experiment="e", dataset="d", model="mod", method=m, params="{}", sample_id=AGGREGATE,
                         metric="miou", value=v, higher_is_better=True, note="n=12", metric_kind="quality")
                    for m, v in [("control_gt", 0.9), ("control_random", 0.2)]])
    v = S.validity(agg).iloc[0]
    assert v["verdict"] == "undetermined" and "aggregate" in v["reason"]


def test_a_metric_that_gives_every_control_the_same_value_is_invalid():
    same = np.full(N, 0.5)
    v = S.validity(controls(same, same, same, random=same)).iloc[0]
    assert v["verdict"] == "invalid" and v["span"] == 0


def test_bad_arguments_are_user_errors():
    with pytest.raises(UserError, match="alpha"):
        S.validity(frame({"a": [1.0]}), alpha=5)
    with pytest.raises(UserError, match="alpha"):
        S.comparisons(frame({"a": [1.0]}), alpha=0)
    with pytest.raises(UserError, match="floor"):
        S.validity(frame({"a": [1.0]}), floor=2)


# --------------------------------------------------------------------------- comparisons with the best
def test_comparisons_are_many_to_one_against_the_best_with_holm_over_k_minus_1():
    rng = np.random.default_rng(6)
    a = RANDOM + 0.2 + rng.uniform(0, 0.1, N)  # the best
    b = RANDOM + rng.normal(0, 0.05, N)
    c = RANDOM
    df = frame({"b": b, "a": a, "c": c, "control_gt": RANDOM + 1, "control_random": RANDOM - 1})
    cmp = S.comparisons(df)
    assert list(cmp["method"]) == ["b", "c"] and set(cmp["best_method"]) == {"a"}  # controls left out
    p = [st.wilcoxon(a, x).pvalue for x in (b, c)]
    assert cmp["p"].tolist() == pytest.approx(p, rel=1e-9)
    assert cmp["statistic"].tolist() == [st.wilcoxon(a, x).statistic for x in (b, c)]
    assert cmp["p_holm"].tolist() == pytest.approx(S.holm(p).tolist())  # m = k - 1 = 2, not all pairs
    assert (cmp["comparisons"] == 2).all() and (cmp["n"] == N).all() and (cmp["n_undefined"] == 0).all()
    assert (cmp["significant"] == (cmp["p_holm"] < 0.05)).all() and cmp["significant"].all()
    assert cmp["effect"].tolist() == pytest.approx([np.mean(a - b), np.mean(a - c)])
    assert cmp["mean_diff"].tolist() == pytest.approx([np.mean(b - a), np.mean(c - a)])
    assert cmp["dz"].tolist() == pytest.approx([S.cohen_dz(a - x) for x in (b, c)])
    assert cmp["rank_biserial"].tolist() == pytest.approx([1.0, 1.0])
    assert cmp["min_p_holm"].tolist() == pytest.approx([2 * 2.0 ** (1 - N)] * 2)
    assert (cmp["top_share"] == 1.0).all() and (cmp["n_top"] == N).all()
    # the interval of the effect is scipy's percentile bootstrap of the differences, seeded per family
    seed = S.family_seed(0, dict(experiment="e", dataset="d", model="mod", metric="m"))
    ref = st.bootstrap((a - b,), np.mean, n_resamples=1000, method="percentile",
                       rng=np.random.default_rng(seed)).confidence_interval
    assert (cmp["effect_ci_low"].iloc[0], cmp["effect_ci_high"].iloc[0]) == pytest.approx((ref.low, ref.high))
    for col in ("dz", "rb"):
        lo, hi = cmp[f"{col}_ci_low"], cmp[f"{col}_ci_high"]
        assert (lo <= hi).all()
    assert ((cmp["dz_ci_low"] <= cmp["dz"]) & (cmp["dz"] <= cmp["dz_ci_high"])).all()


def test_comparisons_follow_the_direction_and_the_noether_n():
    rng = np.random.default_rng(9)
    a, b = RANDOM, RANDOM + 0.05 + rng.normal(0, 0.05, N)  # lower is better: a is the best
    cmp = S.comparisons(frame({"a": a, "b": b, "c": RANDOM + 1}, hib=False))
    assert set(cmp["best_method"]) == {"a"} and list(cmp["method"]) == ["b", "c"]
    assert cmp["effect"].iloc[0] == pytest.approx(np.mean(b - a))  # positive: the best is better
    assert cmp["n_needed"].iloc[0] == S.noether_n(S.walsh_share(b - a), 0.05, 0.8, tests=2)


def test_comparisons_nan_and_missing_samples():
    rng = np.random.default_rng(7)
    a, b, c = RANDOM + 0.2 + rng.uniform(0, 0.1, N), RANDOM.copy(), list(RANDOM - 0.1)
    a[2] = np.nan  # undefined: counted
    c[5] = None  # no row at all: not a pair, not undefined
    cmp = S.comparisons(frame({"a": a, "b": b, "c": c})).set_index("method")
    assert cmp.loc["b", "n"] == N - 1 and cmp.loc["b", "n_undefined"] == 1
    assert cmp.loc["c", "n"] == N - 2 and cmp.loc["c", "n_undefined"] == 1
    ok = np.isfinite(a)
    assert cmp.loc["b", "p"] == pytest.approx(st.wilcoxon(a[ok], b[ok]).pvalue, rel=1e-9)
    assert cmp.loc["b", "n_top"] == N - 2  # complete samples only


def test_top_share_tells_a_stable_best_from_a_coin_flip():
    rng = np.random.default_rng(10)
    base = rng.normal(0, 1, 30)
    near = S.comparisons(frame({"a": base + rng.normal(0, 0.3, 30), "b": base + rng.normal(0, 0.3, 30)}))
    assert near["top_share"].iloc[0] < 0.95
    clear = S.comparisons(frame({"a": base + 1, "b": base + rng.normal(0, 0.3, 30)}))
    assert clear["top_share"].iloc[0] == 1.0
    same = S.comparisons(frame({"a": base, "b": base.copy(), "c": base - 1}))  # two identical arms share the top
    assert (same["top_share"] == 1.0).all() and same.set_index("method").loc["b", "effect"] == 0


def test_comparisons_leave_out_unjudged_kinds_and_single_arms():
    assert S.comparisons(frame({"a": RANDOM, "b": RANDOM + 1}, kind="cost")).empty
    one = S.comparisons(frame({"a": RANDOM, "control_gt": RANDOM}))
    assert one.empty and "p_holm" in one.columns


# --------------------------------------------------------------------------- ranking
def test_ranking_by_hand_with_ties_and_without_controls():
    A, B, C = [3, 1, 5, 2], [2, 1, 4, 3], [1, 2, 4, 1]
    # ranks (best = 1, higher is better): s0 A1 B2 C3; s1 C1 A2.5 B2.5; s2 A1 B2.5 C2.5; s3 B1 A2 C3
    r = S.ranking(frame({"A": A, "B": B, "C": C, "control_gt": [9, 9, 9, 9]})).set_index("method")
    assert r["mean_rank"].to_dict() == pytest.approx({"A": 1.625, "B": 2.0, "C": 2.375})  # control not ranked
    assert list(r.index) == ["A", "B", "C"]
    ref = st.friedmanchisquare(A, B, C)
    assert r["friedman_statistic"].tolist() == pytest.approx([ref.statistic] * 3, rel=1e-12)
    assert r["friedman_p"].tolist() == pytest.approx([ref.pvalue] * 3, rel=1e-12)
    assert (r["n_samples"] == 4).all() and (r["n_arms"] == 3).all()
    low = S.ranking(frame({"A": A, "B": B, "C": C}, hib=False)).set_index("method")
    assert low["mean_rank"].to_dict() == pytest.approx({"A": 4 - 1.625, "B": 2.0, "C": 4 - 2.375})
    assert S.ranking(frame({"A": A, "B": B}, kind="descriptive")).empty


def test_ranking_leaves_out_incomplete_samples_and_empty_arms():
    A, B, C = [3.0, 1, 5, 2, np.nan], [2.0, 1, 4, 3, 1], [1.0, 2, 4, 1, 0]
    r = S.ranking(frame({"A": A, "B": B, "C": C, "D": [np.nan] * 5})).set_index("method")
    assert r.loc["A", "mean_rank"] == pytest.approx(1.625) and (r["n_samples"] == 4).all()
    assert "1 samples left out" in r.loc["A", "note"]
    assert np.isnan(r.loc["D", "mean_rank"]) and "not ranked" in r.loc["D", "note"]
    assert list(r.index)[-1] == "D"


def test_friedman_is_nan_with_a_reason_when_not_computable():
    two = S.ranking(frame({"A": [1.0, 2, 3], "B": [2.0, 1, 1]}))
    assert two["friedman_p"].isna().all() and "needs 3 or more arms" in two["note"].iloc[0]
    assert two.set_index("method")["mean_rank"].to_dict() == pytest.approx({"A": 4 / 3, "B": 5 / 3})
    tie = S.ranking(frame({"A": [1.0, 2], "B": [1.0, 2], "C": [1.0, 2]}))
    assert tie["friedman_p"].isna().all() and "tie on every sample" in tie["note"].iloc[0]
    assert (tie["mean_rank"] == 2.0).all()
    agg = to_frame([dict(experiment="e", dataset="d", model="mod", method="A", params="{}", sample_id=AGGREGATE,
                         metric="miou", value=0.5, higher_is_better=True, note="n=3")])
    assert "aggregate" in S.ranking(agg)["note"].iloc[0]


# --------------------------------------------------------------------------- marks
def _summary(df):
    keys = ["experiment", "dataset", "model", "method", "params", "metric"]
    return df.groupby(keys, sort=False, as_index=False).agg(mean=("value", "mean"),
                                                            higher_is_better=("higher_is_better", "first"),
                                                            metric_kind=("metric_kind", "first"))


def _valid(metric="m", verdict="valid", n_needed=None):
    return pd.DataFrame([dict(experiment="e", dataset="d", model="mod", metric=metric, verdict=verdict,
                              n_needed=n_needed)])


def test_marks_best_tied_and_effects_on_a_valid_metric():
    rng = np.random.default_rng(8)
    n = 30
    base = rng.normal(0, 1, n)
    a, b, c = base + 0.5, base + 0.5 + rng.normal(0, 0.02, n), base - 1 + rng.normal(0, 0.3, n)
    df = frame({"a": a, "b": b, "c": c, "control_gt": base + 9})
    s, cmp = _summary(df), S.comparisons(df)
    mk = S.marks(s, cmp, _valid()).set_index(s["method"])
    best = "a" if a.mean() > b.mean() else "b"
    other = {"a": "b", "b": "a"}[best]
    share = cmp["top_share"].iloc[0]
    assert mk.loc[best, "best"] == ("best" if share >= 0.95 else "tied")
    assert mk.loc[other, "best"] == "tied" and mk.loc["c", "best"] == "" and mk.loc["control_gt", "best"] == ""
    row = cmp.set_index("method").loc[other]
    assert mk.loc[other, "effect"] == pytest.approx(row["effect"])
    assert mk.loc[other, "effect_ci_low"] == pytest.approx(row["effect_ci_low"])
    assert mk.loc[other, "n_needed"] == row["n_needed"]
    assert mk.loc[best, "effect"] == pytest.approx(row["effect"])  # the best's lead over the runner-up
    assert mk.loc["c", "effect"] == pytest.approx(np.mean({"a": a, "b": b}[best] - c))
    assert S.mark_best(s, cmp, _valid()).tolist() == mk["best"].tolist()


def test_marks_need_a_valid_metric():
    df = frame({"a": RANDOM + 1, "b": RANDOM})
    s, cmp = _summary(df), S.comparisons(df)
    inv = S.marks(s, cmp, _valid(verdict="invalid"))
    assert (inv["best"] == "").all() and inv["mark_note"].str.contains("invalid").all()
    und = S.marks(s, cmp, _valid(verdict="undetermined", n_needed=40))
    assert (und["best"] == "").all() and (und["n_needed"] == 40).all()
    assert und["mark_note"].str.contains("needs n=40").all()
    assert (S.marks(s, cmp, _valid().iloc[:0])["best"] == "").all()  # no verdict: undetermined
    descriptive = frame({"a": RANDOM + 1, "b": RANDOM}, kind="descriptive")
    assert (S.marks(_summary(descriptive), cmp, _valid())["best"] == "").all()


def test_marks_say_the_n_a_comparison_needs_when_none_can_reject():
    rng = np.random.default_rng(12)
    n = 8  # 9 comparisons, two-sided: the smallest Holm p is 9 * 2 / 2**8 = 0.07
    arms = {f"m{j}": rng.normal(j, 0.1, n) for j in range(10)}
    df = frame(arms)
    s, cmp = _summary(df), S.comparisons(df)
    assert (cmp["min_p_holm"] >= 0.05).all() and cmp["min_p_holm"].iloc[0] == pytest.approx(9 * 2 / 2 ** 8)
    mk = S.marks(s, cmp, _valid())
    assert (mk["best"] == "").all() and (mk["n_needed"] == S.min_pairs(0.05, 9, "two-sided")).all()
    assert mk["mark_note"].iloc[0].endswith("needs n=9")
    n = 9  # now it can
    df = frame({k: np.resize(v, n) + np.arange(n) * 0.001 for k, v in arms.items()})
    mk = S.marks(_summary(df), S.comparisons(df), _valid())
    assert (mk["best"] == "best").sum() == 1


def test_an_unstable_best_is_marked_tied():
    rng = np.random.default_rng(10)
    base = rng.normal(0, 1, 30)
    df = frame({"a": base + rng.normal(0, 0.3, 30), "b": base + rng.normal(0, 0.3, 30), "c": base - 3})
    s, cmp = _summary(df), S.comparisons(df)
    assert cmp["top_share"].iloc[0] < 0.95
    mk = S.marks(s, cmp, _valid()).set_index(s["method"])
    assert mk.loc["a", "best"] == "tied" and mk.loc["b", "best"] == "tied" and mk.loc["c", "best"] == ""
    assert "best not stable" in mk.loc["a", "mark_note"]


# --------------------------------------------------------------------------- power of the procedure
def test_power_vs_best_agrees_with_noether_for_one_comparison_and_holds_alpha():
    n = int(S.noether_n(st.norm.cdf(0.5 * math.sqrt(2)), alpha=0.05, power=0.8))
    r = S.power_vs_best(n, k=2, dz=0.5, n_sim=1500, seed=1)
    assert 0.76 <= r["power"] <= 0.92
    null = S.power_vs_best(20, k=2, dz=0.0, n_sim=2000, seed=2)  # two equal arms: a split is a type I error
    assert null["false_split"] <= 0.07
    small, big = (S.power_vs_best(m, k=8, dz=0.5, n_sim=400, seed=3)["power"] for m in (20, 60))
    assert small < big
