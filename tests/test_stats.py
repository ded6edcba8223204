"""Statistics of the result tables (xaibench.analysis.stats), checked against scipy called directly and by hand."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from xaibench.analysis import stats as S
from xaibench.analysis.results import AGGREGATE, to_frame
from xaibench.errors import UserError


def frame(arms, metric="m", hib=True, bench=("e", "d", "mod"), params="{}"):
    """Per-sample rows: ``arms`` maps a method label to its values on samples s0, s1, ... (None = no row)."""
    rows = []
    for method, values in arms.items():
        for i, v in enumerate(values):
            if v is not None:
                rows.append(dict(experiment=bench[0], dataset=bench[1], model=bench[2], method=method,
                                 params=params, sample_id=f"s{i}", metric=metric, value=v, higher_is_better=hib))
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


# --------------------------------------------------------------------------- Holm and the signed-rank test
def test_holm_against_a_hand_computed_example():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> running max 0.06
    assert S.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    out = S.holm([0.02, np.nan, 0.04])  # NaN is not a test: m = 2
    assert out[[0, 2]] == pytest.approx([0.04, 0.04]) and np.isnan(out[1])
    assert S.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert S.holm([]).size == 0


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
    for alpha in (0.05, 0.01, 0.1):
        n = S.min_pairs(alpha)
        assert st.wilcoxon(np.arange(1.0, n + 1), alternative="greater").pvalue < alpha
        assert st.wilcoxon(np.arange(1.0, n), alternative="greater").pvalue >= alpha


# --------------------------------------------------------------------------- validity
def controls(gt, inverted, constant, random=RANDOM, **kw):
    return frame({"control_gt": gt, "control_gt_inverted": inverted, "control_constant": constant,
                  "control_random": random}, **kw)


def test_validity_valid_when_gt_clearly_beats_random_and_inverted():
    rng = np.random.default_rng(3)
    gt, inv = RANDOM + 0.3 + rng.uniform(0, 0.1, N), RANDOM - 0.25 + rng.uniform(0, 0.1, N)
    const = np.full(N, 0.5)
    v = S.validity(controls(gt, inv, const)).iloc[0]
    assert v["verdict"] == "valid", v["reason"]
    assert v["n_gt_random"] == N and v["n_undefined"] == 0 and v["min_pairs"] == 5
    assert v["p_gt_random"] == pytest.approx(st.wilcoxon(gt, RANDOM, alternative="greater").pvalue, rel=1e-9)
    assert v["p_gt_inverted"] == pytest.approx(st.wilcoxon(gt, inv, alternative="greater").pvalue, rel=1e-9)
    assert v["p_constant_random"] == pytest.approx(st.wilcoxon(const, RANDOM, alternative="greater").pvalue,
                                                   rel=1e-9)
    assert v["median_diff_gt_random"] == pytest.approx(np.median(gt - RANDOM))
    assert v["p_gt_random"] < 0.05 and v["p_constant_random"] >= 0.05
    assert "gt better than random" in v["reason"] and "constant not better than random" in v["reason"]


def test_validity_follows_the_metric_direction():
    rng = np.random.default_rng(4)
    gt, inv = RANDOM - 0.3 - rng.uniform(0, 0.1, N), RANDOM + 0.3  # lower is better: gt is best
    low = S.validity(controls(gt, inv, np.full(N, 0.6), hib=False)).iloc[0]
    assert low["verdict"] == "valid", low["reason"]
    assert low["p_gt_random"] == pytest.approx(st.wilcoxon(gt, RANDOM, alternative="less").pvalue, rel=1e-9)
    high = S.validity(controls(gt, inv, np.full(N, 0.6), hib=True)).iloc[0]  # same numbers, higher is better
    assert high["verdict"] == "invalid"
    assert "gt not better than random" in high["reason"]


def test_validity_invalid_when_gt_does_not_beat_random():
    rng = np.random.default_rng(5)
    gt = RANDOM + rng.normal(0, 0.1, N)  # no better than random
    v = S.validity(controls(gt, RANDOM - 0.3, np.full(N, 0.2))).iloc[0]
    p = st.wilcoxon(gt, RANDOM, alternative="greater").pvalue
    assert p >= 0.05 and v["p_gt_random"] == pytest.approx(p, rel=1e-9)
    assert v["verdict"] == "invalid"
    assert f"gt not better than random (p={p:.2g})" in v["reason"]


def test_validity_invalid_when_a_constant_map_beats_random():
    v = S.validity(controls(RANDOM + 0.5, RANDOM - 0.2, RANDOM + 0.1)).iloc[0]
    assert v["verdict"] == "invalid" and "constant better than random" in v["reason"]


def test_validity_untestable_without_ground_truth_or_pairs():
    no_gt = S.validity(frame({"control_random": RANDOM, "control_constant": np.full(N, 0.1), "staa": RANDOM}))
    assert no_gt.iloc[0]["verdict"] == "untestable"
    assert "no control_gt rows" in no_gt.iloc[0]["reason"]
    assert no_gt.iloc[0]["n_constant_random"] == N  # the check that can run still runs
    few = S.validity(controls(RANDOM[:4] + 0.5, RANDOM[:4] - 0.5, np.full(4, 0.1), random=RANDOM[:4])).iloc[0]
    assert few["verdict"] == "untestable" and "4 pairs, fewer than the 5 needed" in few["reason"]
    none = S.validity(frame({"staa": RANDOM, "lime": RANDOM}))
    assert none.iloc[0]["verdict"] == "untestable"
    assert S.validity(frame({"a": []})).empty


def test_validity_counts_nan_pairs_and_drops_them():
    gt = RANDOM + 0.4
    gt[[1, 4]] = np.nan
    inv = RANDOM - 0.4
    inv[4] = np.nan
    inv[7] = np.nan
    v = S.validity(controls(gt, inv, np.full(N, 0.2))).iloc[0]
    assert v["n_gt_random"] == N - 2 and v["n_gt_inverted"] == N - 3
    assert v["n_undefined"] == 3  # samples 1, 4 and 7
    ok = np.isfinite(gt)
    assert v["p_gt_random"] == pytest.approx(st.wilcoxon(gt[ok], RANDOM[ok], alternative="greater").pvalue)
    assert v["verdict"] == "valid"


def test_validity_aggregate_only_and_cost_metrics_are_untestable():
    df = controls(RANDOM + 0.5, RANDOM - 0.5, np.full(N, 0.1), metric="explain_time_s", hib=False)
    agg = pd.DataFrame([dict(experiment="e", dataset="d", model="mod", method=m, params="{}", sample_id=AGGREGATE,
                             metric="miou", value=v, higher_is_better=True, note="n=12")
                        for m, v in [("control_gt", 0.9), ("control_random", 0.2)]])
    v = S.validity(pd.concat([df, to_frame(agg.to_dict("records"))], ignore_index=True)).set_index("metric")
    assert v.loc["explain_time_s", "verdict"] == "untestable" and "cost metric" in v.loc["explain_time_s", "reason"]
    assert v.loc["miou", "verdict"] == "untestable" and "aggregate" in v.loc["miou", "reason"]


def test_cost_metrics_are_the_cost_metric_outputs():
    from xaibench.metrics.cost import Cost

    assert set(S.COST_METRICS) == set(Cost.outputs)


def test_bad_alpha_is_a_user_error():
    with pytest.raises(UserError, match="alpha"):
        S.validity(frame({"a": [1.0]}), alpha=5)
    with pytest.raises(UserError, match="alpha"):
        S.comparisons(frame({"a": [1.0]}), alpha=0)


# --------------------------------------------------------------------------- comparisons
def test_comparisons_against_scipy_and_holm_by_hand():
    rng = np.random.default_rng(6)
    a = RANDOM + 0.2 + rng.uniform(0, 0.1, N)  # continuous differences: scipy's exact test (fast)
    b = RANDOM + rng.normal(0, 0.05, N)
    c = RANDOM
    cmp = S.comparisons(frame({"a": a, "b": b, "c": c}))
    assert list(zip(cmp["method_a"], cmp["method_b"])) == [("a", "b"), ("a", "c"), ("b", "c")]
    p = [st.wilcoxon(x, y).pvalue for x, y in [(a, b), (a, c), (b, c)]]
    assert cmp["p"].tolist() == pytest.approx(p, rel=1e-9)
    assert cmp["statistic"].tolist() == [st.wilcoxon(x, y).statistic for x, y in [(a, b), (a, c), (b, c)]]
    assert cmp["mean_diff"].tolist() == pytest.approx([np.mean(a - b), np.mean(a - c), np.mean(b - c)])
    order = np.argsort(p)  # Holm by hand: m = 3
    adj = np.maximum.accumulate([3 * p[order[0]], 2 * p[order[1]], 1 * p[order[2]]]).clip(max=1)
    assert cmp["p_holm"].to_numpy()[order] == pytest.approx(adj)
    assert (cmp["significant"] == (cmp["p_holm"] < 0.05)).all()
    assert cmp["significant"].tolist()[:2] == [True, True]  # a is clearly higher than b and c
    assert (cmp["n"] == N).all() and (cmp["n_undefined"] == 0).all()


def test_comparisons_nan_and_missing_samples():
    rng = np.random.default_rng(7)
    a, b, c = RANDOM + 0.2 + rng.uniform(0, 0.1, N), RANDOM.copy(), list(RANDOM - 0.1)
    a[2] = np.nan  # undefined: counted
    c[5] = None  # no row at all: not a pair, not undefined
    cmp = S.comparisons(frame({"a": a, "b": b, "c": c})).set_index(["method_a", "method_b"])
    assert cmp.loc[("a", "b"), "n"] == N - 1 and cmp.loc[("a", "b"), "n_undefined"] == 1
    assert cmp.loc[("b", "c"), "n"] == N - 1 and cmp.loc[("b", "c"), "n_undefined"] == 0
    assert cmp.loc[("a", "c"), "n"] == N - 2 and cmp.loc[("a", "c"), "n_undefined"] == 1
    ok = np.isfinite(a)
    assert cmp.loc[("a", "b"), "p"] == pytest.approx(st.wilcoxon(a[ok], b[ok]).pvalue, rel=1e-9)


def test_holm_is_applied_within_each_benchmark_and_metric():
    x, y, z = RANDOM + 0.2, RANDOM, RANDOM - 0.1
    df = pd.concat([frame({"a": x, "b": y, "c": z}, metric="m1"), frame({"a": x, "b": y}, metric="m2")])
    cmp = S.comparisons(df)
    m1, m2 = cmp[cmp["metric"] == "m1"], cmp[cmp["metric"] == "m2"]
    assert m1["p_holm"].tolist() == pytest.approx(S.holm(m1["p"]).tolist())
    assert m2["p_holm"].tolist() == m2["p"].tolist()  # a family of one test


def test_comparisons_with_one_arm_or_nothing():
    one = S.comparisons(frame({"a": RANDOM}))
    assert one.empty and "p_holm" in one.columns


# --------------------------------------------------------------------------- ranking
def test_ranking_by_hand_with_ties():
    A, B, C = [3, 1, 5, 2], [2, 1, 4, 3], [1, 2, 4, 1]
    # ranks (best = 1, higher is better): s0 A1 B2 C3; s1 C1 A2.5 B2.5; s2 A1 B2.5 C2.5; s3 B1 A2 C3
    r = S.ranking(frame({"A": A, "B": B, "C": C})).set_index("method")
    assert r["mean_rank"].to_dict() == pytest.approx({"A": 1.625, "B": 2.0, "C": 2.375})
    assert list(r.index) == ["A", "B", "C"]  # sorted by mean rank
    ref = st.friedmanchisquare(A, B, C)
    assert r["friedman_statistic"].tolist() == pytest.approx([ref.statistic] * 3, rel=1e-12)
    assert r["friedman_p"].tolist() == pytest.approx([ref.pvalue] * 3, rel=1e-12)
    assert (r["n_samples"] == 4).all() and (r["n_arms"] == 3).all()
    low = S.ranking(frame({"A": A, "B": B, "C": C}, hib=False)).set_index("method")
    assert low["mean_rank"].to_dict() == pytest.approx({"A": 4 - 1.625, "B": 2.0, "C": 4 - 2.375})


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


# --------------------------------------------------------------------------- best / tied
def test_mark_best_uses_the_holm_corrected_comparisons():
    summary = pd.DataFrame(dict(experiment="e", dataset="d", model="mod", params="{}", metric="m",
                                higher_is_better=True, method=["a", "b", "c", "d", "control_gt"],
                                mean=[0.5, 0.8, 0.7, np.nan, 0.99]))
    base = dict(experiment="e", dataset="d", model="mod", metric="m", params_a="{}", params_b="{}")
    cmp = pd.DataFrame([dict(base, method_a="a", method_b="b", p_holm=0.001),
                        dict(base, method_a="c", method_b="b", p_holm=0.3)])  # either orientation
    assert S.mark_best(summary, cmp).tolist() == ["", "best", "tied", "", ""]  # the control is never marked
    assert S.mark_best(summary, cmp, alpha=0.5).tolist() == ["", "best", "", "", ""]
    low = summary.assign(higher_is_better=False)
    assert S.mark_best(low, cmp).tolist() == ["best", "", "", "", ""]  # a: no comparison with b, so not tied


def test_mark_best_on_real_comparisons():
    rng = np.random.default_rng(8)
    a, b, c = RANDOM + 0.01 * rng.normal(size=N), RANDOM, RANDOM - 0.3
    df = frame({"a": a, "b": b, "c": c, "control_gt": RANDOM + 1})
    summary = df.groupby(["experiment", "dataset", "model", "method", "params", "metric"], sort=False,
                         as_index=False).agg(mean=("value", "mean"), higher_is_better=("higher_is_better", "first"))
    marks = dict(zip(summary["method"], S.mark_best(summary, S.comparisons(df))))
    best = "a" if a.mean() > b.mean() else "b"
    assert marks[best] == "best" and marks[{"a": "b", "b": "a"}[best]] == "tied"
    assert marks["c"] == "" and marks["control_gt"] == ""
