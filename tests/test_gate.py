"""The regression gate ``xaibench-gate`` (xaibench/analysis/gate.py): rule, exit codes, inputs, --update, reports."""

import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from xaibench.analysis import gate
from xaibench.analysis.results import AGGREGATE, KEYS, to_frame

ROOT = Path(__file__).resolve().parents[1]
MAIN_JOB = ROOT / "results" / "main_job"


# ----------------------------------------------------------------------------- helpers

def _summary(n=3, **means):
    rows = [dict(experiment="e", dataset="d", model="m", method="x", params="{}", metric=k, mean=v, std=0.0, n=n,
                 higher_is_better=k != "deletion_auc") for k, v in means.items()]
    return pd.DataFrame(rows)


def _samples(values, aggregates=None, method="x", params="{}"):
    """Per-sample rows as the runner writes them: ``values`` = {metric: [v_sample0, v_sample1, ...]},
    ``aggregates`` = {metric: (value, n)} dataset-level rows."""
    base = dict(experiment="e", dataset="d", model="m", method=method, params=params, seed=0)
    rows = [dict(base, sample_id=f"s{i}", metric=k, value=v, higher_is_better=k != "deletion_auc")
            for k, vs in values.items() for i, v in enumerate(vs)]
    rows += [dict(base, sample_id=AGGREGATE, metric=k, value=v, higher_is_better=True, note=f"n={n}")
             for k, (v, n) in (aggregates or {}).items()]
    return to_frame(rows)


def summarise(samples):
    """The summary.csv columns the gate reads, computed here by hand (independent of results.summarise):
    per key the mean and count of the non-NaN per-sample values, replaced by the aggregate row where one exists."""
    per = samples[samples.sample_id != AGGREGATE]
    out = per.groupby(KEYS, sort=False).agg(mean=("value", "mean"), std=("value", "std"), n=("value", "count"),
                                             higher_is_better=("higher_is_better", "first")).reset_index()
    for _, a in samples[samples.sample_id == AGGREGATE].iterrows():
        at = (out[KEYS] == a[KEYS]).all(axis=1)
        out.loc[at, ["mean", "std", "n"]] = [a["value"], math.nan, int(a["note"][2:])]
    return out


def _run_dir(path, samples=None, summary=None, fmt="parquet"):
    """A run folder: summary.csv (from ``summary``, else summarised from ``samples``) and the per-sample file."""
    path.mkdir(parents=True, exist_ok=True)
    (summarise(samples) if summary is None else summary).to_csv(path / "summary.csv", index=False)
    if samples is not None:
        if fmt == "parquet":
            samples.to_parquet(path / "results.parquet", index=False)
        else:
            samples.to_csv(path / "results.csv", index=False)
    return path


def _gate(capsys, *args):
    """Run the CLI in-process: (exit status, stdout, stderr)."""
    rc = gate.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def _status(table, metric):
    return table.set_index("metric").loc[metric, "status"]


# ----------------------------------------------------------------------------- the two original tests

def test_gate_flags_regressions_and_missing_rows_only():
    base = _summary(ap=0.8, deletion_auc=0.3, explain_time_s=0.01, explain_peak_mem_mb=10.0, eval_time_s=0.1)
    # machine-dependent numbers (time, memory) never fail the gate
    same = gate.compare(_summary(ap=0.79, deletion_auc=0.31, explain_time_s=5.0, explain_peak_mem_mb=500.0,
                                 eval_time_s=9.0), base)
    assert set(same["status"]) == {"ok"}
    worse = gate.compare(_summary(ap=0.6, deletion_auc=0.3), base)
    assert _status(worse, "ap") == "regressed"
    better = gate.compare(_summary(ap=0.95, deletion_auc=0.1), base)
    assert set(better["status"]) == {"improved"}
    lower_worse = gate.compare(_summary(ap=0.8, deletion_auc=0.5), base)
    assert _status(lower_worse, "deletion_auc") == "regressed"
    missing = gate.compare(_summary(ap=0.8), base)
    assert _status(missing, "deletion_auc") == "missing"


def test_gate_cli_exit_codes(tmp_path):
    base, cur = tmp_path / "base.csv", tmp_path / "cur.csv"
    _summary(ap=0.8).to_csv(base, index=False)
    _summary(ap=0.5).to_csv(cur, index=False)
    assert gate.main([str(cur), str(base)]) == 1
    _summary(ap=0.81).to_csv(cur, index=False)
    assert gate.main([str(cur), str(base)]) == 0
    assert gate.main([str(tmp_path / "nope.csv"), str(base)]) == 2


# ----------------------------------------------------------------------------- 1. coverage: n, empty runs

def test_header_only_baseline_is_unusable_input(tmp_path, capsys):
    cur, base = tmp_path / "cur.csv", tmp_path / "base.csv"
    _summary(ap=0.8, iou=0.5).to_csv(cur, index=False)
    _summary(ap=0.8).iloc[:0].to_csv(base, index=False)
    rc, out, err = _gate(capsys, cur, base)
    assert rc == 2 and "has no rows" in err


def test_baseline_truncated_to_half_fails(tmp_path, capsys):
    full = _summary(ap=0.8, iou=0.5, miou=0.4, map=0.7)
    cur, base = tmp_path / "cur.csv", tmp_path / "base.csv"
    full.to_csv(cur, index=False)
    full.iloc[:2].to_csv(base, index=False)
    rc, out, _ = _gate(capsys, cur, base)
    assert rc == 1 and "2 new" in out
    # with per-sample files, a summary that lost rows no longer matches its own per-sample file
    s = _samples({"ap": [0.8, 0.9], "iou": [0.4, 0.6]})
    b = _run_dir(tmp_path / "b", s)
    pd.read_csv(b / "summary.csv").iloc[:1].to_csv(b / "summary.csv", index=False)
    rc, _, err = _gate(capsys, _run_dir(tmp_path / "c", s), b)
    assert rc == 2 and "disagree" in err


def test_fewer_samples_fail_even_with_equal_means(tmp_path, capsys):
    cur, base = tmp_path / "cur.csv", tmp_path / "base.csv"
    _summary(n=24, ap=0.8, iou=0.5).to_csv(base, index=False)
    _summary(n=2, ap=0.8, iou=0.5).to_csv(cur, index=False)
    rc, out, _ = _gate(capsys, cur, base)
    assert rc == 1 and "FAIL: 2 fewer-samples" in out and "n 24 -> 2" in out
    table = gate.compare(_summary(n=2, ap=0.8), _summary(n=24, ap=0.8))
    assert list(table["status"]) == ["fewer-samples"]
    assert list(gate.compare(_summary(n=30, ap=0.8), _summary(n=24, ap=0.8))["status"]) == ["more-samples"]


def test_missing_and_new_sample_ids_fail(tmp_path):
    base = _samples({"ap": [0.5, 0.6, 0.7]})
    lost = base[base.sample_id != "s1"]
    table = gate.compare(summarise(lost), summarise(base), current_samples=lost, baseline_samples=base)
    assert list(table["status"]) == ["fewer-samples"] and "s1" in table["detail"][0]
    renamed = base.assign(sample_id=base.sample_id.replace({"s1": "s9"}))  # same n, another sample
    table = gate.compare(summarise(renamed), summarise(base), current_samples=renamed, baseline_samples=base)
    assert list(table["status"]) == ["fewer-samples"]  # s1 absent comes first; s9 is listed as new in its turn
    more = pd.concat([base, base.iloc[:1].assign(sample_id="s3")], ignore_index=True)
    table = gate.compare(summarise(more), summarise(base), current_samples=more, baseline_samples=base)
    assert list(table["status"]) == ["more-samples"] and "s3" in table["detail"][0]


def test_empty_current_run_fails(tmp_path, capsys):
    cur, base = tmp_path / "cur.csv", tmp_path / "base.csv"
    _summary(ap=0.8).iloc[:0].to_csv(cur, index=False)
    _summary(ap=0.8, iou=0.5).to_csv(base, index=False)
    rc, out, _ = _gate(capsys, cur, base)
    assert rc == 1 and "FAIL: 2 missing" in out and "no rows" in out


# ----------------------------------------------------------------------------- 2. non-finite values

@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_non_finite_current_mean_fails(tmp_path, capsys, value):
    cur, base = tmp_path / "cur.csv", tmp_path / "base.csv"
    _summary(ap=0.8, deletion_auc=0.3).to_csv(base, index=False)
    _summary(ap=value, deletion_auc=value).to_csv(cur, index=False)
    rc, out, _ = _gate(capsys, cur, base)
    assert rc == 1 and "FAIL: 2 non-finite" in out


def test_nan_in_both_is_ok_and_inf_baseline_fails():
    assert list(gate.compare(_summary(ap=math.nan), _summary(ap=math.nan))["status"]) == ["ok"]
    assert list(gate.compare(_summary(ap=0.5), _summary(ap=math.inf))["status"]) == ["non-finite"]


def test_non_finite_sample_fails_where_the_mean_does_not_show_it():
    base = _samples({"ap": [0.5, 0.6, 0.7, 0.8]})
    nan = base.copy()
    nan.loc[1, "value"] = math.nan  # the mean of the other three stays finite and n drops to 3
    table = gate.compare(summarise(nan), summarise(base), current_samples=nan, baseline_samples=base)
    assert list(table["status"]) == ["non-finite"] and "s1" in table["detail"][0]


# ----------------------------------------------------------------------------- 3. exit codes for unusable input

GOOD = "experiment,dataset,model,method,params,metric,mean,std,n,higher_is_better\ne,d,m,x,{},ap,0.8,0,3,True\n"
BAD_FILES = {
    "empty": b"",
    "garbage text": b"this is not a table\nat all\n",
    "binary garbage": bytes(range(256)) * 4,
    "missing columns": b"experiment,dataset,model,method,params,metric,mean\ne,d,m,x,{},ap,0.8\n",
    "string in mean": GOOD.replace("0.8", "high").encode(),
    "truncated mid-line": GOOD.encode()[:-12],
    "bad higher_is_better": GOOD.replace("True", "maybe").encode(),
    "duplicate key": (GOOD + GOOD.splitlines()[1] + "\n").encode(),
}


@pytest.mark.parametrize("side", ["current", "baseline"])
@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_malformed_summary_exits_2_with_one_line(tmp_path, capsys, case, side):
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    good.write_text(GOOD)
    bad.write_bytes(BAD_FILES[case])
    rc, _, err = _gate(capsys, *((bad, good) if side == "current" else (good, bad)))
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("xaibench-gate: error: ") and side in err


def test_folder_without_summary_and_directory_as_file_exit_2(tmp_path, capsys):
    good = tmp_path / "good.csv"
    good.write_text(GOOD)
    (tmp_path / "empty_run").mkdir()
    rc, _, err = _gate(capsys, tmp_path / "empty_run", good)
    assert rc == 2 and "without summary.csv" in err
    (tmp_path / "odd" / "summary.csv").mkdir(parents=True)  # a folder where the file should be
    rc, _, err = _gate(capsys, good, tmp_path / "odd" / "summary.csv")
    assert rc == 2 and err.count("\n") == 1


def test_unreadable_file_exits_2(tmp_path, capsys, monkeypatch):
    good, locked = tmp_path / "good.csv", tmp_path / "locked.csv"
    good.write_text(GOOD)
    locked.write_text(GOOD)

    def refuse(path, *a, **k):  # chmod 000 does not stop root, so refuse the read as the OS would
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, *a, **k)

    real = pd.read_csv
    monkeypatch.setattr(pd, "read_csv", refuse)
    rc, _, err = _gate(capsys, good, locked)
    assert rc == 2 and "Permission denied" in err and err.count("\n") == 1


def test_malformed_per_sample_file_exits_2(tmp_path, capsys):
    s = _samples({"ap": [0.5, 0.6]})
    cur = _run_dir(tmp_path / "c", s)
    base = _run_dir(tmp_path / "b", s)
    (base / "results.parquet").write_bytes(b"PAR1 not really")
    rc, _, err = _gate(capsys, cur, base)
    assert rc == 2 and "results.parquet" in err and err.count("\n") == 1


def test_console_script_prints_no_traceback(tmp_path):
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    good.write_text(GOOD)
    bad.write_text(GOOD.replace("0.8", "oops"))
    p = subprocess.run([sys.executable, "-m", "xaibench.analysis.gate", str(bad), str(good)], capture_output=True,
                       text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "'oops'" in p.stderr


# ----------------------------------------------------------------------------- 4. tolerances

@pytest.mark.parametrize("option", ["--atol=-0.01", "--rtol=-0.5", "--sample-atol=-1", "--atol=nan"])
def test_negative_or_nan_tolerance_exits_2(tmp_path, capsys, option):
    f = tmp_path / "s.csv"
    f.write_text(GOOD)
    rc, _, err = _gate(capsys, f, f, option)
    assert rc == 2 and "tolerances are finite numbers >= 0" in err


# ----------------------------------------------------------------------------- 5. paired per-sample comparison

def test_paired_difference_is_the_mean_of_the_per_sample_differences():
    base = _samples({"ap": [0.2, 0.4, 0.6, 0.8]})
    cur = _samples({"ap": [0.25, 0.35, 0.7, 0.8]})
    table = gate.compare(summarise(cur), summarise(base), current_samples=cur, baseline_samples=base)
    # hand-computed: ((0.05) + (-0.05) + (0.1) + 0) / 4
    assert table["delta"][0] == pytest.approx(0.025, abs=1e-12) and table["status"][0] == "ok"


def test_swapped_samples_pass_on_means_but_fail_paired(tmp_path, capsys):
    base = _samples({"ap": [0.1, 0.9, 0.5]})
    cur = _samples({"ap": [0.9, 0.1, 0.5]})  # same mean, same n: only pairing sees it
    b = _run_dir(tmp_path / "b", base)
    c = _run_dir(tmp_path / "c", cur)
    rc, out, _ = _gate(capsys, c / "summary.csv", b / "summary.csv")
    assert rc == 1 and "samples-moved" in out and "paired per-sample" in out
    assert list(gate.compare(summarise(cur), summarise(base))["status"]) == ["ok"]  # means alone cannot tell


def test_one_sample_beyond_sample_atol_fails_in_either_direction():
    base = _samples({"ap": [0.5] * 24, "deletion_auc": [0.3] * 24})
    for metric, step in (("ap", +0.3), ("ap", -0.3), ("deletion_auc", -0.3)):
        cur = base.copy()
        cur.loc[(cur.metric == metric) & (cur.sample_id == "s7"), "value"] += step
        table = gate.compare(summarise(cur), summarise(base), current_samples=cur, baseline_samples=base)
        assert _status(table, metric) == "samples-moved", (metric, step)  # the mean moved by 0.0125 < tol
        assert "s7" in table.set_index("metric").loc[metric, "detail"]
        loose = gate.compare(summarise(cur), summarise(base), current_samples=cur, baseline_samples=base,
                             sample_atol=0.5)
        assert set(loose["status"]) == {"ok"}


@pytest.mark.parametrize("metric,shift,expected", [("ap", -0.06, "regressed"), ("ap", +0.06, "improved"),
                                                   ("deletion_auc", +0.06, "regressed"),
                                                   ("deletion_auc", -0.06, "improved"),
                                                   ("ap", -0.04, "ok")])
def test_paired_mean_direction_and_tolerance(metric, shift, expected):
    # tol = 0.02 + 0.05 * 0.5 = 0.045: a uniform shift of 0.06 is beyond it, 0.04 is not
    base = _samples({metric: [0.4, 0.5, 0.6]})
    cur = base.assign(value=base.value + shift)
    table = gate.compare(summarise(cur), summarise(base), current_samples=cur, baseline_samples=base)
    assert table["status"][0] == expected and table["delta"][0] == pytest.approx(shift, abs=1e-12)


def test_aggregate_rows_are_compared_as_single_values():
    base = _samples({"miou": [0.2, 0.4]}, aggregates={"miou": (0.5, 2)})
    cur = _samples({"miou": [0.2, 0.4]}, aggregates={"miou": (0.4, 2)})  # per-sample rows unchanged
    table = gate.compare(summarise(cur), summarise(base), current_samples=cur, baseline_samples=base)
    assert table["status"][0] == "regressed" and table["delta"][0] == pytest.approx(-0.1, abs=1e-12)
    nudged = _samples({"miou": [0.2, 0.4]}, aggregates={"miou": (0.5 + 0.15, 2)})
    table = gate.compare(summarise(nudged), summarise(base), current_samples=nudged, baseline_samples=base,
                         sample_atol=0.2)
    assert table["status"][0] == "improved"
    table = gate.compare(summarise(nudged), summarise(base), current_samples=nudged, baseline_samples=base,
                         atol=0.2)
    assert table["status"][0] == "samples-moved" and AGGREGATE in table["detail"][0]


def test_falls_back_to_means_and_says_so(tmp_path, capsys):
    s = _samples({"ap": [0.1, 0.9]})
    b = _run_dir(tmp_path / "b", s)
    c = _run_dir(tmp_path / "c", summary=summarise(s))  # no per-sample file in the current run
    rc, out, _ = _gate(capsys, c, b)
    assert rc == 0 and "means only" in out and str(c / "summary.csv") in out


def test_per_sample_csv_is_used_when_there_is_no_parquet(tmp_path, capsys):
    base = _samples({"ap": [0.1, 0.9]})
    cur = _samples({"ap": [0.9, 0.1]})
    rc, out, _ = _gate(capsys, _run_dir(tmp_path / "c", cur, fmt="csv"), _run_dir(tmp_path / "b", base, fmt="csv"))
    assert rc == 1 and "results.csv vs results.csv" in out and "samples-moved" in out


def test_ignored_metrics_are_listed_with_the_reason(tmp_path, capsys):
    names = ["explain_time_s", "eval_time_s", "explain_peak_mem_mb", "forward_time_s", "forward_peak_mem_mb"]
    base = _samples({"ap": [0.5, 0.6], **{k: [1.0, 2.0] for k in names}})
    cur = _samples({"ap": [0.5, 0.6], **{k: [9.0, 9.0] for k in names}})
    b, c = _run_dir(tmp_path / "b", base), _run_dir(tmp_path / "c", cur)
    rc, out, _ = _gate(capsys, c, b)
    assert rc == 0 and "PASS: 1 ok" in out
    line = next(x for x in out.replace("\n    ", " ").splitlines() if x.startswith("ignored"))
    assert "depends on the machine" in line and all(k in line for k in names)
    rc, out, _ = _gate(capsys, c, b, "--ignore", "")  # compare everything
    assert rc == 1 and "\nignored (" not in out
    rc, out, _ = _gate(capsys, c, b, "--ignore", "*_time_s,*_mem_mb,ap")
    assert rc == 0 and "--ignore ap" in out and "nothing compared" in out


def test_rule_is_in_help_and_docstring(capsys):
    assert gate.main(["--help"]) == 0
    out = capsys.readouterr().out
    for text in (out, gate.__doc__):
        assert "atol + rtol * |baseline mean|" in text and "--sample-atol" in text
        assert "__aggregate__" in text and "*_time_s" in text
        assert all(s in text for s in gate.ORDER)


# ----------------------------------------------------------------------------- 6. folder or summary.csv

def test_run_folders_and_summary_files_are_both_accepted(tmp_path, capsys):
    s = _samples({"ap": [0.5, 0.6]})
    c, b = _run_dir(tmp_path / "c", s), _run_dir(tmp_path / "b", s)
    for cur, base in ((c, b), (c / "summary.csv", b), (c, b / "summary.csv")):
        rc, out, _ = _gate(capsys, cur, base)
        assert rc == 0 and "paired per-sample" in out


def test_blank_params_are_a_key_not_an_error(tmp_path, capsys):
    s = _samples({"ap": [0.5, 0.6]}, params="")  # results.to_frame writes a missing params as ''
    c, b = _run_dir(tmp_path / "c", s, fmt="csv"), _run_dir(tmp_path / "b", s)
    rc, out, _ = _gate(capsys, c, b)
    assert rc == 0 and "PASS: 1 ok" in out


# ----------------------------------------------------------------------------- 7. --update

def test_update_writes_summary_and_per_sample_file_atomically(tmp_path, capsys, monkeypatch):
    c = _run_dir(tmp_path / "c", _samples({"ap": [0.5, 0.6]}))
    (c / "results.csv").write_text("the run's csv copy: the parquet is preferred\n")
    b = _run_dir(tmp_path / "b", _samples({"ap": [0.1, 0.2]}), fmt="csv")  # stale csv would shadow nothing now
    replaced = []
    real_replace = os.replace

    def spy(src, dst):
        replaced.append((Path(src), Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(gate.os, "replace", spy)
    rc, out, _ = _gate(capsys, c, b, "--update")
    assert rc == 0 and "removed stale" in out
    assert {d.name for _, d in replaced} == {"summary.csv", "results.parquet"}
    assert all(s.parent == d.parent == b and s != d for s, d in replaced)  # temp file beside the target
    assert (b / "summary.csv").read_bytes() == (c / "summary.csv").read_bytes()
    assert (b / "results.parquet").read_bytes() == (c / "results.parquet").read_bytes()
    assert sorted(p.name for p in b.iterdir()) == ["results.parquet", "summary.csv"]
    rc, out, _ = _gate(capsys, c, b)
    assert rc == 0 and "PASS: 1 ok" in out


def test_update_into_a_new_folder_and_to_a_file_path(tmp_path, capsys):
    c = _run_dir(tmp_path / "c", _samples({"ap": [0.5, 0.6]}))
    assert _gate(capsys, c / "summary.csv", tmp_path / "new" / "base", "--update")[0] == 0
    assert (tmp_path / "new" / "base" / "summary.csv").is_file()
    assert _gate(capsys, c, tmp_path / "f" / "base.csv", "--update")[0] == 0
    assert (tmp_path / "f" / "base.csv").is_file() and (tmp_path / "f" / "results.parquet").is_file()


def test_failed_update_leaves_the_old_baseline_and_no_temp_file(tmp_path, capsys, monkeypatch):
    c = _run_dir(tmp_path / "c", summary=_summary(ap=0.9))
    b = _run_dir(tmp_path / "b", summary=_summary(ap=0.1))
    before = (b / "summary.csv").read_bytes()

    def half_copy(src, dst):
        Path(dst).write_text("experiment,dat")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gate.shutil, "copyfile", half_copy)
    rc, _, err = _gate(capsys, c, b, "--update")
    assert rc == 2 and "No space left" in err
    assert (b / "summary.csv").read_bytes() == before and [p.name for p in b.iterdir()] == ["summary.csv"]


def test_update_refuses_an_empty_run(tmp_path, capsys):
    c = _run_dir(tmp_path / "c", summary=_summary(ap=0.9).iloc[:0])
    b = _run_dir(tmp_path / "b", summary=_summary(ap=0.1))
    rc, _, err = _gate(capsys, c, b, "--update")
    assert rc == 2 and "empty baseline" in err and len(pd.read_csv(b / "summary.csv")) == 1


# ----------------------------------------------------------------------------- 8. reports for CI

def test_markdown_report_and_step_summary(tmp_path, capsys, monkeypatch):
    cur, base = tmp_path / "cur.csv", tmp_path / "base.csv"
    _summary(ap=0.8, iou=0.5, miou=0.4, deletion_auc=0.3).to_csv(base, index=False)
    _summary(ap=0.5, iou=0.5, miou=0.6).to_csv(cur, index=False)
    step = tmp_path / "step_summary.md"
    step.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    rc, _, _ = _gate(capsys, cur, base, "--markdown", tmp_path / "gate.md")
    md = (tmp_path / "gate.md").read_text()
    assert rc == 1 and md.splitlines()[0] == "FAIL: 1 missing, 1 regressed, 1 improved, 1 ok"
    assert "| key | baseline | current | delta | status | detail |" in md
    row = next(x for x in md.splitlines() if "/ ap |" in x)
    assert [c.strip() for c in row.split("|")[2:6]] == ["0.8", "0.5", "-0.3", "**regressed**"]
    assert step.read_text() == "earlier step\n" + md
    _summary(ap=0.8, iou=0.5, miou=0.4, deletion_auc=0.3).to_csv(cur, index=False)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY")
    assert _gate(capsys, cur, base, "--markdown", tmp_path / "gate.md")[0] == 0
    assert (tmp_path / "gate.md").read_text().splitlines()[0] == "PASS: 4 ok"


def test_unusable_input_is_reported_in_the_step_summary(tmp_path, capsys, monkeypatch):
    step = tmp_path / "step.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    assert _gate(capsys, tmp_path / "nope", tmp_path / "nope2")[0] == 2
    assert step.read_text().startswith("ERROR (exit 2): current")


def test_terminal_output_fits_120_columns(tmp_path, capsys):
    lime = '{"baseline": "zero", "cell": null, "features": "grid", "frames_per_group": 2, "kernel_width": 0.25}'
    base = pd.concat([_samples({f"metric_with_a_long_name_{i}": [0.5, 0.6] for i in range(60)}, method=meth,
                               params=lime)
                      for meth in ("lime_with_a_long_method_name", "lime_2")], ignore_index=True)
    cur = base.assign(value=base.value - 0.3)
    rc, out, _ = _gate(capsys, _run_dir(tmp_path / "c", cur), _run_dir(tmp_path / "b", base))
    assert rc == 1 and "more rows not shown" in out
    assert max(len(x) for x in out.splitlines()) <= 120


# ----------------------------------------------------------------------------- 9. docs/gate.md

def test_docs_describe_rule_exit_codes_options_and_a_ci_job():
    doc = (ROOT / "docs" / "gate.md").read_text()
    assert "atol + rtol * |baseline mean|" in doc and "GITHUB_STEP_SUMMARY" in doc
    for code in ("`0`", "`1`", "`2`"):
        assert code in doc
    options = [s for a in gate._parser()._actions for s in a.option_strings if s.startswith("--") and s != "--help"]
    assert options and all(o in doc for o in options)
    assert all(s in doc for s in gate.ORDER)
    blocks = re.findall(r"```ya?ml\n(.*?)```", doc, re.S)
    job = yaml.safe_load(blocks[0])
    steps = [s for j in job["jobs"].values() for s in j["steps"]]
    assert "pull_request" in job.get("on", job.get(True))  # YAML 1.1 reads the key `on` as True
    assert any(s.get("uses", "").startswith("actions/checkout@") for s in steps)
    assert any(s.get("uses", "").startswith("actions/setup-python@") for s in steps)
    assert any("make gate" in s.get("run", "") for s in steps)


# ----------------------------------------------------------------------------- the committed baseline

def test_committed_baseline_against_itself_passes_with_every_row_ok(capsys):
    run = gate.load_run(MAIN_JOB, "baseline")
    assert run.samples is not None  # the paired comparison is what CI runs
    table = gate.compare(run.summary, run.summary, current_samples=run.samples, baseline_samples=run.samples)
    compared = run.summary[~run.summary.metric.isin(list(gate.ignored_metrics(run.summary.metric)))]
    assert len(table) == len(compared) > 0 and set(table["status"]) == {"ok"}
    rc, out, _ = _gate(capsys, MAIN_JOB, MAIN_JOB / "summary.csv")
    assert rc == 0 and f"PASS: {len(compared)} ok" in out


def test_committed_baseline_with_one_per_sample_value_changed_fails(tmp_path, capsys):
    shutil.copytree(MAIN_JOB, tmp_path / "run", ignore=shutil.ignore_patterns("figures"))
    df = pd.read_parquet(tmp_path / "run" / "results.parquet")
    row = df.index[(df.model == "vit_synth") & (df.method == "staa") & (df.metric == "ap")][0]
    df.loc[row, "value"] -= 0.15  # n = 24: the mean moves by 0.006, within tolerance; the sample does not
    df.to_parquet(tmp_path / "run" / "results.parquet", index=False)
    rc, out, _ = _gate(capsys, tmp_path / "run", MAIN_JOB)
    assert rc == 1 and "FAIL: 1 samples-moved" in out and df.loc[row, "sample_id"] in out
    table = gate.compare(*(gate.load_run(p).summary for p in (tmp_path / "run", MAIN_JOB)),
                         current_samples=df, baseline_samples=pd.read_parquet(MAIN_JOB / "results.parquet"))
    bad = table[table.status != "ok"]
    assert list(bad[KEYS[1:4] + ["metric", "status"]].itertuples(index=False, name=None)) == [
        ("synthetic_image", "vit_synth", "staa", "ap", "samples-moved")]
