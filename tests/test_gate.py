"""The regression gate ``xaibench-gate`` (xaibench/analysis/gate.py): refusals, the rule, reports, --update.

Every test compares run folders made from one real run of ``xaibench`` (tests/gate_fixtures.py), copied and
edited the way a regression, a resumed or interrupted run, a parameter change or a hand edit would."""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import gate_fixtures as gf
from xaibench.analysis import gate

ROOT = Path(__file__).resolve().parents[1]
MAIN_JOB = ROOT / "results" / "main_job"
GATE_SCRIPT = Path(sys.executable).parent / "xaibench-gate"


@pytest.fixture(scope="session")
def real_run(tmp_path_factory):
    """One real run (staa_synthetic, tiny TimeSformer, 2 samples): never edited, only copied."""
    return gf.xaibench_run(tmp_path_factory.mktemp("gate") / "run")


@pytest.fixture
def base(real_run, tmp_path):
    return gf.copy_run(real_run, tmp_path / "base")


@pytest.fixture
def cur(real_run, tmp_path):
    return gf.copy_run(real_run, tmp_path / "cur")


def _gate(capsys, *args):
    """Run the CLI in-process: (exit status, stdout, stderr)."""
    rc = gate.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def _refused(rc, out, err, *needles):
    """Exit 2 with one line on stderr, nothing compared on stdout, the needles in the line."""
    assert rc == 2, out + err
    assert out == "" and len(err.strip().splitlines()) == 1 and err.startswith("xaibench-gate: error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, (n, err)
    return err


def _finding_lines(out):
    return [x for x in out.splitlines() if x.split(" ")[0] in gate.ORDER]


def _compare(cur, base, **kw):
    return gate.compare(gate.load_run(cur, "current"), gate.load_run(base, "baseline"), **kw)


# ----------------------------------------------------------------------------- the same run passes

def test_a_run_against_a_copy_of_itself_passes_with_every_key_ok(cur, base, capsys):
    rc, out, err = _gate(capsys, cur, base)
    assert rc == 0 and err == ""
    assert out.splitlines()[-1].startswith("PASS: ") and "maps of 2 arms unchanged" in out
    table = _compare(cur, base).table
    assert set(table["status"]) == {"ok"}
    assert (table["metric"] == gate.MAPS).sum() == 2  # one maps row per arm
    # a summary.csv path is accepted for a run folder
    assert _gate(capsys, cur / "summary.csv", base / "summary.csv")[0] == 0


def test_per_sample_csv_is_read_when_there_is_no_parquet(cur, base, capsys):
    for d in (cur, base):
        (d / "results.parquet").unlink()
    assert _gate(capsys, cur, base)[0] == 0
    df = pd.read_csv(cur / "results.csv")
    df.loc[(df.method == "staa") & (df.metric == "ap"), "value"] -= 0.3
    df.to_csv(cur / "results.csv", index=False)
    rc, out, err = _gate(capsys, cur, base)
    _refused(rc, out, err, "per-sample values (results.csv) give")  # its summary now disagrees


# ----------------------------------------------------------------------------- the rule: directions and samples

def test_regression_fails_and_improvement_passes(cur, base, capsys):
    gf.edit_values(cur, lambda v: v - 0.3, method="staa", metric="ap")
    rc, out, _ = _gate(capsys, cur, base)
    assert rc == 1 and "FAIL: 1 regressed" in out
    [line] = _finding_lines(out)
    assert line.startswith("regressed") and "hf_timesformer_tiny/staa/ap" in line and "-0.3" in line
    # lower is better (staa_monotonicity_tau): going up is the regression
    gf.edit_values(cur, lambda v: v + 0.3, method="staa", metric="ap")
    gf.edit_values(cur, lambda v: v + 0.09, method="staa", metric="staa_monotonicity_tau")
    assert _compare(cur, base).table.set_index(["method", "metric"]).loc[
        ("staa", "staa_monotonicity_tau"), "status"] == "regressed"
    gf.edit_values(cur, lambda v: v - 0.18, method="staa", metric="staa_monotonicity_tau")  # now 0.09 better
    rc, out, _ = _gate(capsys, cur, base)
    assert rc == 0 and "PASS: 1 improved" in out


def test_a_descriptive_metric_fails_when_it_moves_either_way(cur, base):
    gf.edit_values(cur, lambda v: v + 0.05, method="staa", metric="staa_monotonicity_tie_se")
    t = _compare(cur, base).table.set_index(["method", "metric"])
    assert t.loc[("staa", "staa_monotonicity_tie_se"), "status"] == "changed"


def test_paired_samples_moving_in_opposite_directions_fail_though_the_mean_holds(cur, base, capsys):
    df = gf.samples(cur)
    sel = (df.method == "staa") & (df.metric == "iou")
    df.loc[sel & (df.sample_id == "test-00000"), "value"] += 0.15
    df.loc[sel & (df.sample_id == "test-00001"), "value"] -= 0.15
    gf.write_samples(cur, df)
    rc, out, _ = _gate(capsys, cur, base)
    assert rc == 1
    [line] = _finding_lines(out)
    assert line.startswith("samples-moved") and "2 moved > 0.1" in line
    assert _gate(capsys, cur, base, "--sample-atol", "0.2")[0] == 0


def test_non_finite_current_values_fail(cur, base, capsys):
    gf.edit_values(cur, lambda v: v * np.nan, method="staa", metric="ap")
    rc, out, _ = _gate(capsys, cur, base)
    assert rc == 1 and "FAIL: 1 non-finite" in out
    gf.edit_values(cur, lambda v: np.array([np.inf, 0.5]), method="staa", metric="iou")
    assert "non-finite" in set(_compare(cur, base).table["status"])


def test_fewer_samples_in_the_file_fail(cur, base, capsys):
    df = gf.samples(cur)
    df = df[~((df.method == "staa") & (df.metric == "ap") & (df.sample_id == "test-00001"))]
    gf.write_samples(cur, df)
    rc, out, _ = _gate(capsys, cur, base)
    assert rc == 1
    [line] = _finding_lines(out)
    assert line.startswith("fewer-samples") and "n 2 -> 1" in line and "test-00001" in line


def test_missing_and_new_arms_are_one_line_each(cur, base, capsys):
    df = gf.samples(cur)
    gf.write_samples(cur, df[df.method != "staa_raw"])
    gf.write_maps(cur, {k: v for k, v in gf.read_maps(cur).items() if k[2] != "staa_raw"})
    rc, out, _ = _gate(capsys, cur, base)
    assert rc == 1
    [line] = _finding_lines(out)
    assert line.startswith("missing") and "staa_raw" in line
    rc, out, _ = _gate(capsys, base, cur)  # the other way round: the arm is new
    [line] = _finding_lines(out)
    assert rc == 1 and line.startswith("new") and "record them with --update" in " ".join(out.split())


def test_aggregate_rows_are_compared_as_single_values(cur, base):
    for d, v in ((base, 0.5), (cur, 0.44)):
        df = gf.samples(d)
        row = df[(df.method == "staa") & (df.metric == "ap")].iloc[[0]].assign(
            sample_id="__aggregate__", metric="miou", value=v, note="n=2")
        gf.write_samples(d, pd.concat([df, row]), resummarise=False)
        s = gf.summary(d)
        srow = s[(s.method == "staa") & (s.metric == "ap")].assign(metric="miou", mean=v, n=2)
        pd.concat([s, srow]).to_csv(d / "summary.csv", index=False)
        prov = gf.provenance(d)
        prov["n_rows"] += 1
        gf.write_provenance(d, prov)
    t = _compare(cur, base).table.set_index(["method", "metric"])
    assert t.loc[("staa", "miou"), "status"] == "regressed"  # d = -0.06 > 0.02 + 0.05 * 0.5
    assert t.loc[("staa", "miou"), "delta"] == pytest.approx(-0.06)


# ----------------------------------------------------------------------------- what is not compared

def test_a_resumed_run_with_other_eval_passes_and_times_passes(cur, base, capsys):
    """A resumed run re-warms no output cache for journaled methods: eval_n_forward differs, times differ."""
    gf.edit_values(cur, lambda v: v * 0.5, metric=["eval_n_forward", "eval_time_s", "explain_time_s",
                                                   "explain_peak_mem_mb"])
    rc, out, _ = _gate(capsys, cur, base)
    assert rc == 0 and out.splitlines()[-1] == "PASS: 22 ok, maps of 2 arms unchanged"
    line = next(x for x in out.replace("\n    ", " ").splitlines() if x.startswith("not compared"))
    for m in ("eval_n_forward", "eval_time_s", "explain_time_s", "explain_peak_mem_mb"):
        assert m in line
    # the explanation's own passes are compared
    gf.edit_values(cur, lambda v: v + 1, metric="n_forward", method="staa")
    rc, out, _ = _gate(capsys, cur, base)
    assert rc == 1 and "staa/n_forward" in out


def test_ignored_metrics_are_listed(cur, base, capsys):
    gf.edit_values(cur, lambda v: v - 0.3, method="staa", metric="ap")
    rc, out, _ = _gate(capsys, cur, base, "--ignore", "ap,*_tie_se")
    assert rc == 0 and "ignored (--ignore ap): ap" in out and "ignored (--ignore *_tie_se)" in out


@pytest.mark.parametrize("ignore", ["*", "*,n_*"])
def test_nothing_compared_is_refused(cur, base, capsys, ignore):
    """Issue: --ignore '*' used to PASS with nothing compared."""
    _refused(*_gate(capsys, cur, base, "--ignore", ignore), "nothing to compare", "--ignore")


# ----------------------------------------------------------------------------- parameter, version and maps changes

def test_a_changed_method_parameter_is_one_params_changed_line(cur, base, capsys):
    gf.set_params(cur, "staa", **{"lambda": 2.0})
    rc, out, _ = _gate(capsys, cur, base)
    assert rc == 1
    [line] = _finding_lines(out)
    assert line.startswith("params-changed") and "staa" in line and "lambda 1.0 -> 2.0" in line
    assert not re.search(r"^(missing|new) ", out, re.M)
    assert "FAIL: 1 params-changed (11 keys)" in out


def test_declared_version_changes_are_not_regressions(cur, base, capsys):
    df = gf.samples(cur)
    df.loc[df.metric == "ap", "metric_version"] = "3"
    gf.write_samples(cur, df)
    rc, out, _ = _gate(capsys, cur, base)
    [line] = _finding_lines(out)
    assert rc == 1 and line.startswith("metric-changed") and "metric version 2 -> 3" in line and "declared" in line
    assert "regressed" not in out
    cur2 = gf.copy_run(base, cur.parent / "cur2")
    df = gf.samples(cur2)
    df.loc[df.method == "staa", "method_version"] = "2"
    gf.write_samples(cur2, df)
    rc, out, _ = _gate(capsys, cur2, base)
    [line] = _finding_lines(out)
    assert rc == 1 and line.startswith("method-changed") and "method version 1 -> 2 (declared)" in line


def test_changed_maps_fail_while_the_scores_barely_move(cur, base, capsys):
    gf.write_maps(cur, {k: v * 1.01 if k[2] == "staa" else v for k, v in gf.read_maps(cur).items()})
    rc, out, _ = _gate(capsys, cur, base)
    assert rc == 1 and "FAIL: 1 maps-changed" in out
    text = out.replace("\n                ", " ")
    assert "maps changed on 2/2 samples, max |delta|" in text and "scores: 0 of 11 metrics beyond tolerance" in text
    assert _gate(capsys, cur, base, "--map-rtol", "0.05")[0] == 0
    (cur / "maps.npz").unlink()  # one run without maps: refused, not silently skipped
    _refused(*_gate(capsys, cur, base), "maps.npz")


# ----------------------------------------------------------------------------- refusals (exit 2, one line)

def test_nan_baseline_mean_is_refused(cur, base, capsys):
    """Issue: a NaN baseline mean used to count as improved."""
    s = gf.summary(base)
    s.loc[(s.method == "staa") & (s.metric == "ap"), "mean"] = math.nan
    s.to_csv(base / "summary.csv", index=False)
    _refused(*_gate(capsys, cur, base), "baseline", "non-finite mean")


def test_inf_in_the_baseline_is_refused(cur, base, capsys):
    gf.edit_values(base, lambda v: np.array([np.inf, 0.5]), method="staa", metric="ap")
    _refused(*_gate(capsys, cur, base), "baseline", "non-finite value")


def test_baseline_summary_that_disagrees_with_its_per_sample_file_is_refused(cur, base, capsys):
    s = gf.summary(base)
    s.loc[(s.method == "staa") & (s.metric == "ap"), "mean"] += 0.3
    s.to_csv(base / "summary.csv", index=False)
    _refused(*_gate(capsys, cur, base), "baseline", "per-sample values (results.parquet) give")


@pytest.mark.parametrize("cut", ["half", "lines"])
def test_truncated_baseline_summary_is_refused(cur, base, capsys, cut):
    text = (base / "summary.csv").read_text()
    text = text[: len(text) // 2] if cut == "half" else "\n".join(text.splitlines()[:6]) + "\n"
    (base / "summary.csv").write_text(text)
    err = _refused(*_gate(capsys, cur, base), "baseline")
    assert "no baseline" not in err and "new" not in err


@pytest.mark.parametrize("role", ["current", "baseline"])
@pytest.mark.parametrize("status", ["interrupted", "failed"])
def test_an_unfinished_run_is_refused_in_one_line(cur, base, tmp_path, capsys, monkeypatch, role, status):
    folder = cur if role == "current" else base
    prov = gf.provenance(folder)
    prov["status"] = status
    gf.write_provenance(folder, prov)
    summary = tmp_path / "step.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    md = tmp_path / "gate.md"
    _refused(*_gate(capsys, cur, base, "--markdown", md), role, status, "partial")
    for f in (md, summary):  # one line, not a table of every key
        lines = f.read_text().strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("ERROR (exit 2): ")


def test_a_shard_is_refused(cur, base, capsys):
    prov = gf.provenance(cur)
    prov["shard"] = "1/2"
    gf.write_provenance(cur, prov)
    _refused(*_gate(capsys, cur, base), "shard 1/2")


@pytest.mark.parametrize("change", ["n", "ids"])
def test_other_samples_are_refused_in_one_line(cur, base, capsys, change):
    df = gf.samples(cur)
    if change == "n":  # a run with n=1: one sample's rows and maps gone, the fingerprint says n=1
        gf.write_samples(cur, df[df.sample_id == "test-00000"])
        gf.write_maps(cur, {k: v for k, v in gf.read_maps(cur).items() if k[4] == "test-00000"})
    prov = gf.provenance(cur)
    data = next(iter(prov["fingerprint"]["data"].values()))
    if change == "n":
        data["n"] = 1
    data["sample_ids_sha256"] = "0" * 64
    gf.write_provenance(cur, prov)
    _refused(*_gate(capsys, cur, base), "other samples", "n=1 (baseline n=2)" if change == "n" else "other sample ids")


@pytest.mark.parametrize("part", ["weights", "data"])
def test_other_weights_or_data_are_refused_unless_allowed(cur, base, capsys, part):
    prov = gf.provenance(cur)
    fp = prov["fingerprint"]
    if part == "weights":
        fp["weights"]["hf_timesformer_tiny"] = "0" * 64
    else:
        next(iter(fp["data"].values()))["generator_sha256"] = "0" * 64
    gf.write_provenance(cur, prov)
    _refused(*_gate(capsys, cur, base), f"the {part} differ", f"--allow-change {part}")
    rc, out, _ = _gate(capsys, cur, base, "--allow-change", part)
    assert rc == 0 and "(accepted: --allow-change)" in out


def test_code_differences_are_reported_and_refused_only_on_request(cur, base, capsys):
    prov = gf.provenance(cur)
    prov["fingerprint"]["code"]["git_revision"] = "f" * 40
    gf.write_provenance(cur, prov)
    rc, out, _ = _gate(capsys, cur, base)
    assert rc == 0 and "code differs: revision" in out
    _refused(*_gate(capsys, cur, base, "--refuse-change", "code"), "--refuse-change code")
    _refused(*_gate(capsys, cur, base, "--allow-change", "bogus"), "not a fingerprint part")


@pytest.mark.parametrize("what", ["fingerprint", "metric_kind"])
def test_a_baseline_from_an_older_xaibench_is_refused(cur, base, capsys, what):
    if what == "fingerprint":
        prov = gf.provenance(base)
        del prov["fingerprint"]
        gf.write_provenance(base, prov)
    else:
        gf.write_samples(base, gf.samples(base).drop(columns="metric_kind"), resummarise=False)
    _refused(*_gate(capsys, cur, base), "older xaibench", "--update")


def _empty(d):
    (d / "summary.csv").write_text("")


def _garbage_summary(d):
    (d / "summary.csv").write_bytes(b"\x00\xffnot,a\ntable")


def _text_mean(d):
    s = gf.summary(d)
    s["mean"] = s["mean"].astype(object)
    s.loc[0, "mean"] = "abc"
    s.to_csv(d / "summary.csv", index=False)


def _cut_parquet(d):
    data = (d / "results.parquet").read_bytes()
    (d / "results.parquet").write_bytes(data[: len(data) // 2])


def _rows_lost(d):  # fewer rows than provenance.json says the run wrote
    gf.write_samples(d, gf.samples(d).iloc[:-3], resummarise=False)


def _bad_json(d):
    (d / "provenance.json").write_text('{"status": "compl')


def _no_provenance(d):
    (d / "provenance.json").unlink()


def _bad_maps(d):
    (d / "maps.npz").write_bytes(b"PK\x03\x04 not a zip")


def _no_per_sample(d):
    (d / "results.parquet").unlink()
    (d / "results.csv").unlink()


def _no_summary(d):
    (d / "summary.csv").unlink()


BAD = {f.__name__[1:]: f for f in (_empty, _garbage_summary, _text_mean, _cut_parquet, _rows_lost, _bad_json,
                                   _no_provenance, _bad_maps, _no_per_sample, _no_summary)}


@pytest.mark.parametrize("side", ["current", "baseline"])
@pytest.mark.parametrize("case", sorted(BAD))
def test_malformed_or_truncated_files_are_refused_in_one_line(cur, base, capsys, case, side):
    BAD[case](cur if side == "current" else base)
    _refused(*_gate(capsys, cur, base), side)


@pytest.mark.parametrize("option", ["--atol=-0.01", "--rtol=-0.5", "--sample-atol=-1", "--atol=nan",
                                    "--map-rtol=inf"])
def test_negative_or_non_finite_tolerance_is_refused(cur, base, capsys, option):
    _refused(*_gate(capsys, cur, base, option), "tolerances are finite numbers >= 0")


def test_a_path_that_is_no_run_folder_is_refused(cur, base, tmp_path, capsys):
    _refused(*_gate(capsys, tmp_path / "nope", base), "does not exist")
    (tmp_path / "empty").mkdir()
    _refused(*_gate(capsys, cur, tmp_path / "empty"), "without summary.csv")


def test_the_console_script_prints_no_traceback(cur, base):
    prov = gf.provenance(cur)
    prov["status"] = "interrupted"
    gf.write_provenance(cur, prov)
    for args in ([cur, base], [cur.parent / "nope", base]):
        p = subprocess.run([str(GATE_SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=300)
        assert p.returncode == 2 and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- reports

def _many_findings(cur):
    """Regressions on every quality metric of staa_raw and a parameter change of staa."""
    gf.edit_values(cur, lambda v: v - 0.3, method="staa_raw",
                   metric=["staa_faithfulness", "staa_monotonicity", "ap", "iou", "temporal_ap"])
    gf.set_params(cur, "staa", **{"lambda": 2.0})


def test_terminal_output_fits_120_columns(cur, base, capsys):
    _many_findings(cur)
    rc, out, _ = _gate(capsys, cur, base)
    assert rc == 1 and len(_finding_lines(out)) == 6
    assert max(map(len, out.splitlines())) <= 120


def test_markdown_report_with_a_legend_of_short_keys_and_the_step_summary(cur, base, tmp_path, capsys,
                                                                           monkeypatch):
    _many_findings(cur)
    step = tmp_path / "step.md"
    step.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    md = tmp_path / "gate.md"
    rc, out, _ = _gate(capsys, cur, base, "--markdown", md)
    text = md.read_text()
    assert rc == 1 and text.splitlines()[0] == out.splitlines()[-1]  # the verdict first
    rows = [x for x in text.splitlines() if x.startswith("| `")]
    assert len(rows) == 6 and any("**params-changed**" in x and "lambda 1.0 -> 2.0" in x for x in rows)
    keys = [re.match(r"\| `([^`]*)`", x).group(1) for x in rows]
    assert max(map(len, keys)) <= 60 and all("{" not in k for k in keys)  # parameters go to the legend
    legend = text.split("Parameters of the methods above")[1]
    assert '`hf_timesformer_tiny / staa (baseline)`: `{"enhance": true, "lambda": 1.0' in legend
    assert '`hf_timesformer_tiny / staa (current)`: `{"enhance": true, "lambda": 2.0' in legend
    assert "`hf_timesformer_tiny / staa_raw`" in legend
    assert step.read_text() == "earlier step\n" + text  # appended, not overwritten


def test_help_prints_the_rule(capsys):
    assert gate.main(["--help"]) == 0
    out = capsys.readouterr().out
    for s in gate.ORDER + ("Refused (exit 2", "Exit status", "--allow-change", "--map-rtol"):
        assert s in out


def test_docs_describe_rule_statuses_refusals_exit_codes_options_and_a_ci_job():
    doc = (ROOT / "docs" / "gate.md").read_text()
    for s in gate.ORDER:
        assert f"`{s}`" in doc, s
    for opt in ("--atol", "--rtol", "--sample-atol", "--map-rtol", "--ignore", "--allow-change", "--refuse-change",
                "--markdown", "--update"):
        assert f"`{opt}" in doc, opt
    for words in ("interrupted", "shard", "nothing to compare", "non-finite", "fingerprint", "eval_n_forward",
                  "n_forward", "maps.npz", "GITHUB_STEP_SUMMARY", "os.replace", "metric_version", "method_version"):
        assert words in doc, words
    for code in ("`0`", "`1`", "`2`"):
        assert code in doc
    ci = re.search(r"```yaml\n(.*?)```", doc, re.S).group(1)
    assert "make gate" in ci or "xaibench-gate" in ci
    # the docs and the module docstring agree on the defaults
    for default in ("0.02", "0.05", "0.1", "0.001"):
        assert default in doc and default in gate.__doc__


# ----------------------------------------------------------------------------- --update

def test_update_writes_the_gate_files_atomically_and_then_passes(cur, tmp_path, capsys, monkeypatch):
    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(gate.os, "replace", lambda a, b: (replaced.append((Path(a), Path(b))), real_replace(a, b)))
    new = tmp_path / "baseline"
    rc, out, _ = _gate(capsys, cur, new, "--update")
    assert rc == 0
    names = {"summary.csv", "results.parquet", "provenance.json", "run_config.json", "maps.npz"}
    names |= {n for n in gate.RUN_TABLES if (cur / n).is_file()}
    assert {b.name for _, b in replaced} == names and {p.name for p in new.iterdir()} == names
    for tmp, dst in replaced:  # written beside the target, then moved into place
        assert tmp.parent == dst.parent and tmp.name.startswith(f".{dst.name}.") and not tmp.exists()
    monkeypatch.setattr(gate.os, "replace", real_replace)
    assert _gate(capsys, cur, new)[0] == 0
    # a stale per-sample file of the other format is removed
    (new / "results.csv").write_text("stale")
    assert _gate(capsys, cur, new / "summary.csv", "--update")[0] == 0
    assert not (new / "results.csv").exists()


def test_update_leaves_no_table_of_the_old_baseline_beside_the_new_one(cur, base, capsys):
    """On b4e0241-era code --update copied only the gate's own files: validity.csv, ranking.csv, comparisons.csv
    and report.html of the old baseline stayed beside the new results (a committed baseline then showed the old
    verdicts).  Each is now the run's copy, or removed where the run has none."""
    for name in gate.RUN_TABLES:
        (base / name).write_text("a table of the old baseline")
    (cur / "validity.csv").write_text("the run's verdicts\n")
    (cur / "report.html").unlink(missing_ok=True)
    assert _gate(capsys, cur, base, "--update")[0] == 0
    assert (base / "validity.csv").read_text() == "the run's verdicts\n"
    for name in gate.RUN_TABLES:
        if name == "validity.csv":
            continue
        assert not (base / name).is_file() or (base / name).read_bytes() == (cur / name).read_bytes(), name
    assert not (base / "report.html").exists()


def test_a_failed_update_leaves_the_old_baseline_and_no_temporary_file(cur, base, capsys, monkeypatch):
    before = {p.name: p.read_bytes() for p in base.iterdir() if p.is_file()}
    gf.edit_values(cur, lambda v: v - 0.3, method="staa", metric="ap")

    def boom(a, b):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gate.os, "replace", boom)
    _refused(*_gate(capsys, cur, base, "--update"), "cannot write the baseline")
    assert {p.name: p.read_bytes() for p in base.iterdir() if p.is_file()} == before


def test_update_refuses_an_unfinished_run(cur, tmp_path, capsys):
    prov = gf.provenance(cur)
    prov["status"] = "interrupted"
    gf.write_provenance(cur, prov)
    _refused(*_gate(capsys, cur, tmp_path / "baseline", "--update"), "interrupted")
    assert not (tmp_path / "baseline").exists()


# ----------------------------------------------------------------------------- baselines as CI uses them

def test_a_baseline_written_by_update_then_one_changed_sample_fails(cur, tmp_path, capsys):
    """What `make gate` does: a fresh run against a baseline written with --update from an equal run."""
    new = tmp_path / "baseline"
    assert _gate(capsys, cur, new, "--update")[0] == 0
    rerun = gf.copy_run(cur, tmp_path / "rerun")
    rc, out, _ = _gate(capsys, rerun, new)
    assert rc == 0 and "PASS: 22 ok" in out
    df = gf.samples(rerun)
    df.loc[(df.method == "staa") & (df.metric == "iou") & (df.sample_id == "test-00000"), "value"] += 0.3
    gf.write_samples(rerun, df)
    rc, out, _ = _gate(capsys, rerun, new)
    assert rc == 1 and "staa/iou" in out


def test_committed_baseline_against_itself_passes(tmp_path, capsys):
    prov = json.loads((MAIN_JOB / "provenance.json").read_text())
    if "fingerprint" not in prov:
        pytest.skip("results/main_job was written by an older xaibench (no fingerprint in provenance.json): "
                    "the lead regenerates it with `make gate` and --update")
    copy = gf.copy_run(MAIN_JOB, tmp_path / "copy")
    rc, out, _ = _gate(capsys, copy, MAIN_JOB)
    assert rc == 0 and out.splitlines()[-1].startswith("PASS: ")
