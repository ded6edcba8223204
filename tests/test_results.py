"""The result tables (xaibench.analysis.results): summary with intervals, validity, comparisons, ranking files."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from xaibench.analysis import results as R
from xaibench.analysis import stats as S

MAIN_JOB = Path(__file__).resolve().parents[1] / "results" / "main_job"
BASE = dict(experiment="e", dataset="d", model="m", params="{}")


def rows_of(arms, metric="ap", hib=True, **extra):
    return [dict(BASE, method=meth, sample_id=f"s{i}", metric=metric, value=v, higher_is_better=hib, **extra)
            for meth, values in arms.items() for i, v in enumerate(values)]


def with_controls():
    """A benchmark with a valid metric (ap), an invalid one (bad: gt worse than random), and one without controls
    (miou: its validity undetermined) with an aggregate."""
    rng = np.random.default_rng(0)
    n = 10
    rand = rng.uniform(0.3, 0.7, n)
    ap = {"staa": rand + 0.3 + rng.uniform(0, 0.05, n), "lime": rand + 0.3 + rng.uniform(0, 0.05, n),
          "gradcam": rand + rng.uniform(0, 0.05, n), "control_gt": rand + 0.5 + rng.uniform(0, 0.05, n),
          "control_gt_inverted": rand - 0.2 - rng.uniform(0, 0.05, n), "control_constant": np.full(n, 0.1),
          "control_random": rand}
    bad = {k: rand + rng.normal(0, 0.05, n) for k in ap}
    bad["control_gt"] = rand - 0.3 + rng.uniform(0, 0.05, n)  # ground truth clearly worse than random: invalid
    rows = rows_of(ap) + rows_of(bad, metric="bad")
    rows += rows_of({"staa": [0.2, 0.4]}, metric="miou")
    rows.append(dict(BASE, method="staa", sample_id=R.AGGREGATE, metric="miou", value=0.25, higher_is_better=True,
                     note="n=2"))
    rows.append(dict(BASE, method="shap", sample_id="", metric="skipped", value=float("nan"), note="no CLS token"))
    return rows


def test_summary_keeps_the_old_columns_and_adds_the_new_ones():
    rows = with_controls() + rows_of({"staa": [0.5, np.nan, 0.7, np.nan]}, metric="iou")
    s = R.summarise(R.to_frame(rows))
    assert list(s.columns) == R.SUMMARY_COLUMNS
    assert list(s.columns[:10]) == R.KEYS + ["mean", "std", "n", "higher_is_better"]
    by = s.set_index(["method", "metric"])
    assert "skipped" not in set(s["metric"]) and "shap" not in set(s["method"])
    # aggregate rows replace the per-sample mean, keep their place, have no interval
    assert by.loc[("staa", "miou"), "mean"] == 0.25 and by.loc[("staa", "miou"), "n"] == 2
    assert np.isnan(by.loc[("staa", "miou"), "std"]) and np.isnan(by.loc[("staa", "miou"), "ci_low"])
    # NaN values: left out of mean and n, counted in n_undefined
    iou = by.loc[("staa", "iou")]
    assert iou["mean"] == pytest.approx(0.6) and iou["n"] == 2 and iou["n_undefined"] == 2
    assert (iou["ci_low"], iou["ci_high"]) == S.bootstrap_ci([0.5, 0.7], seed=0)
    values = [r["value"] for r in rows if r["method"] == "lime" and r["metric"] == "ap"]
    lime = by.loc[("lime", "ap")]
    assert (lime["ci_low"], lime["ci_high"]) == pytest.approx(S.bootstrap_ci(values, seed=0), rel=1e-12)
    assert lime["ci_low"] < lime["mean"] < lime["ci_high"] and lime["n_undefined"] == 0
    assert by.loc[("control_gt", "ap"), "kind"] == "control" and lime["kind"] == "method"


def test_summary_valid_and_best_come_from_the_statistics():
    df = R.to_frame(with_controls())
    s = R.summarise(df)
    v = S.validity(df).set_index("metric")["verdict"]
    assert v["ap"] == "valid" and v["bad"] == "invalid" and v["miou"] == "undetermined"
    valid = s.groupby("metric")["valid"].first()
    assert (valid["ap"], valid["bad"], valid["miou"]) == ("valid", "invalid", "undetermined")
    # no best or ~ mark where the metric is invalid or undetermined, and the table says why
    assert (s.loc[s["metric"] != "ap", "best"].fillna("") == "").all()
    assert s["best"].tolist() == S.mark_best(s, S.comparisons(df), S.validity(df)).tolist()
    ap = s[s["metric"] == "ap"].set_index("method")["best"]
    # staa and lime are within noise of each other (the top is not stable under the bootstrap: both ~);
    # gradcam is significantly worse than the best: no mark
    assert set(ap[["staa", "lime"]]) <= {"best", "tied"} and "" not in set(ap[["staa", "lime"]])
    assert ap["gradcam"] == ""
    assert (ap[[m for m in ap.index if m.startswith("control_")]] == "").all()


def test_summary_matches_the_committed_main_job():
    """The per-sample table of the committed main job gives the committed summary's mean, std and n."""
    df = pd.read_parquet(MAIN_JOB / "results.parquet")
    old = pd.read_csv(MAIN_JOB / "summary.csv")
    tables = R.tables(df)
    new = tables["summary"]
    assert len(new) == len(old)
    m = old.merge(new, on=R.KEYS, suffixes=("_old", "_new"), validate="one_to_one")
    assert len(m) == len(old)
    assert np.allclose(m["mean_old"], m["mean_new"], rtol=1e-12, atol=0, equal_nan=True)
    assert np.allclose(m["std_old"], m["std_new"], rtol=1e-9, atol=1e-15, equal_nan=True)
    assert (m["n_old"] == m["n_new"]).all()
    finite = new["ci_low"].notna()
    assert (new.loc[finite, "ci_low"] <= new.loc[finite, "mean"] + 1e-12).all()
    assert (new.loc[finite, "mean"] <= new.loc[finite, "ci_high"] + 1e-12).all()
    # each of the k method arms of a judged benchmark x metric against its best: k - 1 comparisons (controls out)
    cmp = tables["comparisons"]
    arms = new[new["kind"] == "method"].groupby(S.FAMILY)["method"].nunique()
    pairs = cmp.groupby(S.FAMILY).size()
    assert len(pairs) > 0 and (pairs == arms[pairs.index] - 1).all()
    # the committed job carries the controls: its verdicts are the committed validity.csv
    committed = pd.read_csv(MAIN_JOB / "validity.csv").set_index(S.FAMILY)["verdict"]
    assert tables["validity"].set_index(S.FAMILY)["verdict"].sort_index().equals(committed.sort_index())


def test_write_tables_writes_every_table(tmp_path):
    s = R.write_tables(with_controls(), tmp_path / "run", seed=0)
    names = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert names == sorted(["results.parquet", "results.csv", "summary.csv", "validity.csv", "comparisons.csv",
                            "ranking.csv"])
    back = pd.read_csv(tmp_path / "run" / "summary.csv")
    assert list(back.columns) == R.SUMMARY_COLUMNS
    assert np.allclose(back["mean"], s["mean"]) and back["best"].fillna("").tolist() == s["best"].tolist()
    assert pd.read_parquet(tmp_path / "run" / "results.parquet").shape == (len(with_controls()), len(R.COLUMNS))
    validity = pd.read_csv(tmp_path / "run" / "validity.csv")
    assert set(validity["verdict"]) == {"valid", "invalid", "undetermined"}
    ranking = pd.read_csv(tmp_path / "run" / "ranking.csv")
    assert set(ranking["metric"]) == {"ap", "bad", "miou"}
    assert R.format_summary(s)  # the old text table still works


def test_write_tables_is_deterministic(tmp_path):
    for d in ("a", "b"):
        R.write_tables(with_controls(), tmp_path / d, seed=3)
    for name in ("summary.csv", "validity.csv", "comparisons.csv", "ranking.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


@pytest.mark.parametrize("arms", [{"staa": [0.1, 0.2, 0.4]}, {"staa": [0.1, 0.2, 0.4], "lime": [0.3, 0.1, 0.2]}])
def test_tables_without_controls_or_with_one_method(tmp_path, arms):
    s = R.write_tables(rows_of(arms), tmp_path)
    # without controls the metric's validity is undetermined, so no method is marked best (the note says why)
    assert len(s) == len(arms) and (s["kind"] == "method").all() and (s["valid"] == "undetermined").all()
    assert (s["best"].fillna("") == "").all() and s["mark_note"].str.contains("validity undetermined").all()
    validity = pd.read_csv(tmp_path / "validity.csv")
    assert validity["verdict"].tolist() == ["undetermined"] and "the run has no control arms" in validity["reason"].iloc[0]
    cmp = pd.read_csv(tmp_path / "comparisons.csv")
    assert len(cmp) == len(arms) * (len(arms) - 1) // 2
    assert len(pd.read_csv(tmp_path / "ranking.csv")) == len(arms)


def test_tables_of_no_rows_or_only_skipped_rows(tmp_path):
    for rows in ([], [dict(BASE, method="shap", sample_id="", metric="skipped", value=float("nan"), note="n/a")]):
        s = R.write_tables(rows, tmp_path)
        assert s.empty and list(s.columns) == R.SUMMARY_COLUMNS
        for name in ("validity", "comparisons", "ranking"):
            assert pd.read_csv(tmp_path / f"{name}.csv").empty
    assert R.format_summary(s) == "(no results)"


def test_an_interrupted_write_keeps_the_previous_tables(tmp_path, monkeypatch):
    R.write_tables(with_controls(), tmp_path)
    before = (tmp_path / "summary.csv").read_bytes()

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(S, "ranking", interrupted)
    with pytest.raises(KeyboardInterrupt):
        R.write_tables(with_controls()[:5], tmp_path)
    assert (tmp_path / "summary.csv").read_bytes() == before
    assert len(pd.read_parquet(tmp_path / "results.parquet")) == 5  # the per-sample rows are written first
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_to_frame_normalises_params():
    df = R.to_frame([dict(BASE, method="a", metric="ap", sample_id="s0", value="0.5", params=None),
                     dict(BASE, method="b", metric="ap", sample_id="s0", value=1, params={"k": 2, "a": 1})])
    assert df["params"].tolist() == ["", '{"a": 1, "k": 2}']
    assert df["value"].tolist() == [0.5, 1.0] and list(df.columns) == R.COLUMNS
