"""The terminal table (xaibench.analysis.table.format_table)."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from xaibench.analysis.table import decimals, format_cell, format_table, variant_labels

ROOT = Path(__file__).resolve().parents[1]


def _row(method, metric, mean, params=None, hib=True, **kw):
    return dict(experiment="e", dataset="d", model="m", method=method, params=json.dumps(params or {}),
                metric=metric, mean=mean, std=0.1, n=8, higher_is_better=hib, **kw)


def _line(table: str, label: str) -> str:
    return next(x for x in table.splitlines() if x.startswith(label + " ") or x == label)


def _blocks(table: str):
    """(first, last, total) of every block title."""
    return [tuple(map(int, m)) for m in re.findall(r"\(metrics (\d+)-(\d+) of (\d+)\)", table)]


def test_committed_summary_fits_120_columns_and_keeps_every_metric():
    s = pd.read_csv(ROOT / "results" / "main_job" / "summary.csv")
    t = format_table(s)
    assert max(len(x) for x in t.splitlines()) <= 120
    blocks = _blocks(t)
    shown = s[~s["metric"].str.endswith("_tie_se")]  # tie standard errors go to one note per benchmark
    per_bench = shown.groupby(["dataset", "model"])["metric"].nunique()
    assert "tie-order standard error" in t and "_tie_se" not in t
    # the blocks of each benchmark cover its metrics 1..N without gap
    assert sum(last - first + 1 for first, last, _ in blocks) == per_bench.sum()
    assert sorted({n for *_, n in blocks}) == sorted(set(per_bench))
    assert "\033" not in t
    # every method appears once in each block of each benchmark it has results on
    per_model_blocks = {m: sum(f"· {m} " in line for line in t.splitlines() if "(metrics" in line)
                        for m in s["model"].unique()}
    for method in s["method"].unique():
        expected = sum(per_model_blocks[m] for m in s[s["method"] == method]["model"].unique())
        assert sum(x.startswith(method + " ") for x in t.splitlines()) == expected, method


@pytest.mark.parametrize("width", [120, 80])
def test_many_long_metrics_split_into_blocks_within_the_width(width):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(40):
        for meth in ("staa", "rollout", "a_method_with_a_rather_long_label_name", "control_random"):
            m = rng.uniform(0, 1)
            rows.append(_row(meth, f"metric_number_{i}_with_a_long_name", m, ci_low=m - 0.05, ci_high=m + 0.05,
                             kind="control" if meth.startswith("control") else "method"))
    t = format_table(pd.DataFrame(rows), width=width)
    assert max(len(x) for x in t.splitlines()) <= width
    blocks = _blocks(t)
    assert len(blocks) > 1 and blocks[-1][1] == 40 and blocks[0][0] == 1


def _hand_case(with_best: bool):
    """Two metrics (one up, one down), three methods and a control that beats them all."""
    rows = [
        _row("a", "up", 0.90, ci_low=0.85, ci_high=0.95, kind="method", best="best", valid=True),
        _row("b", "up", 0.88, ci_low=0.80, ci_high=0.93, kind="method", best="tied", valid=True),
        _row("c", "up", 0.50, ci_low=0.45, ci_high=0.55, kind="method", best="", valid=True),
        _row("control_gt", "up", 0.99, ci_low=0.98, ci_high=1.0, kind="control", best="", valid=True),
        _row("a", "down", 0.40, hib=False, ci_low=0.3, ci_high=0.5, kind="method", best="", valid=False),
        _row("b", "down", 0.20, hib=False, ci_low=0.1, ci_high=0.3, kind="method", best="best", valid=False),
        _row("c", "down", 0.30, hib=False, ci_low=0.2, ci_high=0.4, kind="method", best="", valid=False),
        _row("control_gt", "down", 0.01, hib=False, ci_low=0.0, ci_high=0.02, kind="control", best="",
             valid=False),
    ]
    df = pd.DataFrame(rows)
    return df if with_best else df.drop(columns="best")


def test_markers_intervals_and_arrows_on_a_hand_built_case():
    validity = pd.DataFrame([dict(experiment="e", dataset="d", model="m", metric="down", verdict="invalid",
                                  reason="the ground-truth control does not beat random")])
    t = format_table(_hand_case(True), validity=validity)
    header = next(x for x in t.splitlines() if x.startswith("method"))
    assert "up ↑" in header and "down ↓ ✗" in header
    # columns: up, then down
    assert _line(t, "a").split()[1:4] == ["0.900", "[0.850,0.950]*", "0.400"]
    assert _line(t, "b").split()[1:3] == ["0.880", "[0.800,0.930]~"]
    assert _line(t, "b").endswith("[0.100,0.300]*")
    assert "*" not in _line(t, "c") and "~" not in _line(t, "c")
    # the control is below a separator and never marked
    lines = t.splitlines()
    assert lines.index(_line(t, "control_gt")) > lines.index(next(x for x in lines if x.startswith("·· controls")))
    assert lines.index(_line(t, "control_gt")) > lines.index(_line(t, "c"))
    assert "*" not in _line(t, "control_gt")
    assert "✗ down: the ground-truth control does not beat random" in t
    assert "~ not significantly different from the best" in " ".join(t.split())


def test_best_without_the_best_column_ignores_controls_and_follows_direction():
    t = format_table(_hand_case(False))
    assert _line(t, "a").split()[2].endswith("*")  # highest of up among the methods
    assert not _line(t, "b").split()[2].endswith("*")
    assert _line(t, "b").endswith("*")  # lowest of down
    assert "*" not in _line(t, "control_gt")
    assert "✗ down: judged invalid" in t  # valid=False without a validity.csv reason


def test_std_cells_when_there_are_no_intervals():
    s = pd.DataFrame([_row("a", "up", 0.812), _row("b", "up", 0.5)])
    t = format_table(s)
    assert "0.812 ± 0.100*" in t and "cells: mean ± std" in t


def test_labels_and_legend():
    long = dict(enhance=True, layers=1, smoothing="none", temporal="temporal_attention")
    rows = [_row("staa", "up", 0.5, params=dict(long, **{"lambda": 0.5})),
            _row("staa", "up", 0.6, params=dict(long, **{"lambda": 2.0})),
            _row("rollout", "up", 0.7, params={"layers": None}),
            _row("lime", "up", 0.4, params={"n_samples": 16, "seed": 0}),
            _row("lime", "up", 0.45, params={"n_samples": 32, "seed": 0})]
    s = pd.DataFrame(rows)
    labels, legend = variant_labels(s)
    assert list(labels) == ["staa#1", "staa#2", "rollout", "lime#1", "lime#2"]
    # long parameter lists: only the differing key; short ones: all; single setting: all
    assert legend == {"staa#1": "lambda=0.5", "staa#2": "lambda=2.0", "rollout": "layers=null",
                      "lime#1": "n_samples=16, seed=0", "lime#2": "n_samples=32, seed=0"}
    t = format_table(s)
    assert "  staa#2" in t and "lambda=2.0" in t and "enhance" not in t


def test_colour_only_on_request():
    s = _hand_case(True)
    assert "\033[" not in format_table(s)
    assert "\033[1;32m" in format_table(s, color=True)


def test_decimals_and_cells():
    assert decimals([0.5, 0.9]) == 3
    assert decimals([0.0092, 0.001]) == 5  # three significant digits of the median, 0.0051
    assert decimals([258.0, 1.0, 0.0]) == 0  # whole numbers (pass counts)
    assert decimals([12.3]) == 1
    assert decimals([0.05, 0.1, 0.2, 22.2]) == 3  # explain times: the median sets the digits, not the largest
    assert format_cell(0.8123, lo=0.7912, hi=0.8344) == "0.812 [0.791,0.834]"
    assert format_cell(0.0171, lo=0.0163, hi=0.0178) == "0.017 [0.016,0.018]"  # one format for mean and interval
    assert format_cell(0.8123, std=0.05) == "0.812 ± 0.050"
    assert format_cell(float("nan")) == "n/a"


def test_empty_summary():
    assert format_table(pd.DataFrame()) == "(no results)"


def _verdict_case():
    """One valid metric with marks and effects, one undetermined, one valid metric no comparison can mark."""
    rows = [
        _row("a", "up", 0.90, ci_low=0.85, ci_high=0.95, kind="method", best="best", valid="valid",
             effect=0.02, effect_ci_low=0.01, effect_ci_high=0.03, n_needed=None, mark_note=""),
        _row("b", "up", 0.88, ci_low=0.80, ci_high=0.93, kind="method", best="tied", valid="valid",
             effect=0.02, effect_ci_low=-0.01, effect_ci_high=0.05, n_needed=140, mark_note=""),
        _row("c", "up", 0.50, ci_low=0.45, ci_high=0.55, kind="method", best="", valid="valid",
             effect=0.40, effect_ci_low=0.35, effect_ci_high=0.45, n_needed=None, mark_note=""),
        _row("control_gt", "up", 0.99, ci_low=0.98, ci_high=1.0, kind="control", best="", valid="valid"),
    ]
    for m in ("a", "b", "c"):
        rows.append(_row(m, "unsure", 0.5, ci_low=0.4, ci_high=0.6, kind="method", best="", valid="undetermined",
                         n_needed=47, mark_note="no marks: validity undetermined (needs n=47)"))
        rows.append(_row(m, "few", 0.5, ci_low=0.4, ci_high=0.6, kind="method", best="", valid="valid",
                         n_needed=9, mark_note="no marks: with 9 comparisons and n=8 no comparison with the best "
                                               "can be significant (smallest Holm p 0.07); needs n=9"))
        rows.append(_row(m, "secs", 0.1, kind="method", metric_kind="cost", hib=False))
    return pd.DataFrame(rows)


def test_undetermined_verdicts_marks_effects_and_the_n_they_need():
    validity = pd.DataFrame([dict(experiment="e", dataset="d", model="m", metric="unsure", verdict="undetermined",
                                  n_needed=47, reason="constant vs random undetermined: 0.02 [-0.1,0.15]")])
    t = format_table(_verdict_case().assign(metric_kind=lambda f: f.get("metric_kind").fillna("quality")),
                     validity=validity)
    flat = " ".join(t.split())
    header = next(x for x in t.splitlines() if x.startswith("method"))
    assert "unsure ↑ ?" in header and "up ↑" in header and "✗" not in header
    assert header.rstrip().endswith("secs ↓")  # cost kind last, whatever its name
    assert "? unsure: validity undetermined, needs n=47: constant vs random undetermined" in flat
    assert "up: * a ahead of the next by 0.0200 [0.0100,0.0300]; ~ behind the best by b 0.0200 [-0.0100,0.0500] " \
           "needs n=140" in flat
    assert "few: no marks: with 9 comparisons and n=8 no comparison with the best can be significant" in flat
    assert "needs n=9" in flat
    assert "unsure: no marks" not in flat  # the verdict note says it already
    assert "? validity undetermined" in flat and max(len(x) for x in t.splitlines()) <= 120


def test_a_fresh_summary_of_the_committed_run_prints_within_120_columns():
    from xaibench.analysis import results as R

    df = pd.read_parquet(ROOT / "results" / "main_job" / "results.parquet")
    tables = R.tables(df)
    t = format_table(tables["summary"], validity=tables["validity"])
    assert max(len(x) for x in t.splitlines()) <= 120
    v = tables["validity"]
    # every invalid / undetermined verdict has its footnote; no mark on a metric that is not valid
    for _, r in v.iterrows():
        sign = {"invalid": "✗", "undetermined": "?"}.get(r["verdict"])
        if sign:  # metrics with the same reason share one footnote: "? a, b: validity undetermined, ..."
            assert any(line.startswith(f"{sign} ") and r["metric"] in line.split(":")[0].replace(",", " ").split()
                       for line in t.splitlines()), r["metric"]
    s = tables["summary"]
    assert (s.loc[s["valid"] != "valid", "best"] == "").all()
    assert (s.loc[s["kind"] == "control", "best"] == "").all()


def _one_method_summary(methods=("staa",)):
    """A one-method run's summary as the runner writes it: 12 quality metrics, 6 with a tie standard error,
    descriptive and cost outputs, validity undetermined for want of controls."""
    rows = []
    quality = ["staa_faithfulness", "staa_monotonicity", "faithfulness_correlation", "srg", "morf_auc", "lerf_auc",
               "ap", "iou", "pixel_accuracy", "miou", "map", "temporal_ap"]
    for meth in methods:
        for i, m in enumerate(quality):
            v = 0.3 + 0.05 * i
            rows.append(_row(meth, m, v, ci_low=v - 0.0412, ci_high=v + 0.0388, metric_kind="quality",
                             kind="method", valid="undetermined", best=""))
            if i < 6:
                rows.append(_row(meth, f"{m}_tie_se", 0.004 + 0.001 * i, ci_low=0.003, ci_high=0.006,
                                 metric_kind="descriptive", kind="method"))
        rows.append(_row(meth, "tie_fraction", 0.83, ci_low=0.81, ci_high=0.85, metric_kind="descriptive",
                         kind="method"))
        for m, v in (("explain_time_s", 0.0215), ("n_forward", 1.0), ("eval_n_forward", 749.0)):
            rows.append(_row(meth, m, v, ci_low=v * 0.6, ci_high=v * 1.4, hib=False, metric_kind="cost",
                             kind="method"))
    return pd.DataFrame(rows)


def test_a_one_method_run_prints_one_table_with_the_metrics_as_rows():
    s = _one_method_summary()
    validity = pd.DataFrame([dict(experiment="e", dataset="d", model="m", metric=m, verdict="undetermined",
                                  reason="the run has no control arms")
                             for m in s.loc[s["metric_kind"] == "quality", "metric"].unique()])
    t = format_table(s, validity=validity)
    lines = t.splitlines()
    assert max(len(x) for x in lines) <= 120
    assert sum(x.startswith("== ") for x in lines) == 1 and "(metrics" not in t  # one table, not blocks
    assert "_tie_se" not in t  # the tie standard errors are one note, not rows
    note = " ".join(t[t.index("tie-order standard error"):].split())
    assert "staa_faithfulness 0.004" in note and "lerf_auc 0.009" in note
    # one row per shown metric, quality first, then descriptive, then cost under their separators
    order = [next(i for i, x in enumerate(lines) if x.startswith(m + " ")) for m in
             ("staa_faithfulness", "temporal_ap", "tie_fraction", "explain_time_s", "eval_n_forward")]
    assert order == sorted(order)
    assert lines.index("·· descriptive") < order[2] and lines.index("·· cost") < order[3]
    # the same number format for a mean and its interval
    row = _line(t, "srg ↑ ?")
    assert re.search(r"0\.450 \[0\.409,0\.489\]", row), row
    # one footnote for the metrics that share a reason
    und = [x for x in lines if x.startswith("? ")]
    assert len(und) == 1 and "staa_faithfulness, staa_monotonicity" in und[0]
    assert "the run has no control arms" in " ".join(t.split())


def test_many_arms_keep_the_methods_as_rows():
    s = _one_method_summary(methods=[f"method_{i}" for i in range(12)])
    t = format_table(s)
    assert max(len(x) for x in t.splitlines()) <= 120
    assert len(_blocks(t)) > 1 and _line(t, "method_11")  # methods as rows, metrics split into blocks
    assert "_tie_se" not in t
