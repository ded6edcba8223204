"""Scale-out: ``xaibench-merge`` over hand-made run folders (sweeps, shards, failed runs, usage
errors), the multirun callback, and (slow) real small sweeps through the app: the joblib and
submitit launchers, and two shards merged against the same run without shards."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from xaibench.analysis import merge as M
from xaibench.analysis.results import AGGREGATE, COLUMNS, write_tables

EXP = "toy"
SEG_KEY = ["synthetic_image", "vit", "staa", "segmentation"]


def _rows(sample_id, values, params, experiment=EXP, seed=0):
    return [dict(experiment=experiment, dataset="synthetic_image", model="vit", method="staa", params=params,
                 sample_id=sample_id, metric=m, value=v, higher_is_better=True, metric_params="{}", seed=seed)
            for m, v in values.items()]


def make_run(d: Path, overrides, samples, *, status="complete", provenance=True, tables=True, experiment=EXP,
             seed=0, skipped=False):
    """A run folder as the app writes it.  ``samples``: ``{sample_id: (faithfulness, correct, labelled)}``;
    the segmentation counts go to rows.jsonl as hidden values (key as the runner writes it), and (like the
    runner) into an aggregate pixel_accuracy row of results.parquet computed from this folder's samples only."""
    d.mkdir(parents=True)
    (d / ".hydra").mkdir()
    (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
    params = json.dumps({"lambda": dict(o.split("=") for o in overrides).get("method.lambda", "1")})
    all_rows, recs = [], []
    if skipped:
        row = dict(experiment=experiment, dataset="synthetic_image", model="vit", method="gradcam", params="{}",
                   sample_id="", metric="skipped", value=float("nan"), seed=seed, note="not for ViT")
        all_rows.append(row)
        recs.append({"kind": "sample", "key": ["skip", "synthetic_image", "vit", "gradcam"], "rows": [row]})
    for sid, (faith, correct, labelled) in samples.items():
        rows = _rows(sid, {"faithfulness": faith}, params, experiment, seed)
        counts = {"_correct": correct, "_labelled": labelled, "_inter_fg": correct, "_inter_bg": 0,
                  "_union_fg": labelled, "_union_bg": labelled - correct}
        hidden = [[SEG_KEY + [params, "{}", "segmentation"], counts]]
        all_rows += rows
        recs.append({"kind": "sample", "key": ["synthetic_image", "vit", "staa", sid], "rows": rows,
                     "hidden": hidden})
    (d / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    if tables:
        c = sum(v[1] for v in samples.values())
        n = sum(v[2] for v in samples.values())
        agg = dict(_rows(AGGREGATE, {"pixel_accuracy": c / n}, params, experiment, seed)[0], note=f"n={len(samples)}")
        write_tables(all_rows + [agg], d)
    if provenance:
        (d / "provenance.json").write_text(json.dumps(
            {"status": status, "seed": seed, "config": {"seed": seed, "experiment": {"name": experiment}}}))
    return d


@pytest.fixture
def aggregate(monkeypatch):
    """Records every call of the runner's ``aggregate_rows`` (which merge uses to recompute aggregates)."""
    from xaibench.analysis import results as runner

    real, calls = runner.aggregate_rows, []

    def spy(hidden_items, experiment, seed):
        calls.append(list(hidden_items))
        return real(hidden_items, experiment, seed)

    monkeypatch.setattr(runner, "aggregate_rows", spy)
    return calls


BASE = ["experiment=toy", "dataset.n_samples=3"]


def test_merge_sweep_swept_column_and_failed_runs(tmp_path, capsys, aggregate):
    sweep = tmp_path / "sweep"
    make_run(sweep / "0_lambda0", BASE + ["method.lambda=0"], {"a": (0.2, 1, 2), "b": (0.4, 1, 2)})
    make_run(sweep / "1_lambda0.5", BASE + ["method.lambda=0.5"], {"a": (0.6, 2, 2)}, status="interrupted")
    # killed before its tables and provenance: only rows.jsonl and .hydra/
    make_run(sweep / "2_lambda2", BASE + ["method.lambda=2"], {"a": (1.0, 0, 2)}, provenance=False, tables=False)
    # a point whose configuration the app refused: provenance.json with the error, no rows
    bad = sweep / "3_lambda9"
    (bad / ".hydra").mkdir(parents=True)
    (bad / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(BASE + ["method.lambda=9"]))
    (bad / "provenance.json").write_text(json.dumps({"status": "failed", "error": "lambda=9 is out of range"}))
    (sweep / "multirun.yaml").write_text("{}")

    assert M.main([str(sweep)]) == 0
    err = capsys.readouterr().err
    assert "1_lambda0.5 (interrupted)" in err and "2_lambda2 (failed)" in err and "3_lambda9 (failed)" in err

    res = pd.read_parquet(sweep / "results.parquet")
    assert list(res.columns) == COLUMNS + ["method.lambda"]
    assert res["method.lambda"].dtype == float
    per = res[res["metric"] == "faithfulness"]
    assert sorted(zip(per["method.lambda"], per["sample_id"], per["value"])) == \
        [(0.0, "a", 0.2), (0.0, "b", 0.4), (0.5, "a", 0.6), (2.0, "a", 1.0)]

    summary = pd.read_csv(sweep / "summary.csv")
    assert list(summary.columns[:1]) == ["method.lambda"]
    faith = summary[summary["metric"] == "faithfulness"].set_index("method.lambda")
    assert faith.loc[0.0, "mean"] == pytest.approx(np.mean([0.2, 0.4]))
    assert faith.loc[0.0, "std"] == pytest.approx(np.std([0.2, 0.4], ddof=1))
    assert faith.loc[0.0, "n"] == 2 and faith.loc[0.5, "n"] == 1
    acc = summary[summary["metric"] == "pixel_accuracy"].set_index("method.lambda")
    assert acc.loc[0.0, "mean"] == pytest.approx(2 / 4)  # the run's own aggregate row, kept as it is

    runs = pd.read_csv(sweep / "runs.csv")
    assert list(runs["status"]) == ["complete", "interrupted", "failed", "failed"]
    assert list(runs["n_rows"]) == [3, 2, 1, 0]  # results rows read (aggregate included); run 2: rows.jsonl
    assert runs.loc[3, "note"] == "lambda=9 is out of range"
    assert 9 not in set(res["method.lambda"]) and 9 not in set(summary["method.lambda"])  # no rows, no summary
    assert "method.lambda=0.5" in runs.loc[1, "overrides"]
    assert "provenance.json" in runs.loc[2, "note"]
    # keys with the same value in every run are not columns
    assert "dataset.n_samples" not in res and "experiment" in res  # (the results column, not a swept one)


def test_merge_shards_recompute_aggregates(tmp_path, aggregate):
    """Two shards for each of two lambdas: per-sample rows concatenated, pixel accuracy recomputed
    from the counts of all samples (pooled), not taken from the shards' own aggregate rows."""
    root = tmp_path / "runs"
    counts = {"0": {0: {"a": (0.1, 9, 10), "b": (0.3, 1, 10)}, 1: {"c": (0.5, 90, 100)}},
              "1": {0: {"a": (0.2, 5, 10), "b": (0.4, 5, 10)}, 1: {"c": (0.6, 10, 100)}}}
    for lam, shards in counts.items():
        for i, samples in shards.items():
            make_run(root / f"l{lam}_s{i}", BASE + [f"method.lambda={lam}", f"shard={i}/2"], samples, skipped=True)
    m = M.merge_runs([root])
    assert m.swept == ["method.lambda"]  # shard is not a swept column
    assert "shard" not in m.results
    assert len(aggregate) == 2 and sorted(len(c) for c in aggregate) == [3, 3]  # one call per run, 3 samples each

    res = m.results
    # one per arm: gradcam does not take lambda, so the two points' identical skip rows are one, with no lambda
    skip = res[res["metric"] == "skipped"]
    assert len(skip) == 1 and skip["method.lambda"].isna().all()
    agg = res[(res["sample_id"] == AGGREGATE) & (res["metric"] == "pixel_accuracy")].set_index("method.lambda")["value"]
    assert len(agg) == 2
    assert agg[0] == pytest.approx((9 + 1 + 90) / (10 + 10 + 100))  # 0.8333, where the shards' mean is 0.7
    assert agg[1] == pytest.approx((5 + 5 + 10) / 120)
    faith = m.summary[m.summary["metric"] == "faithfulness"].set_index("method.lambda")
    assert faith.loc[0, "mean"] == pytest.approx(np.mean([0.1, 0.3, 0.5]))
    assert faith.loc[0, "n"] == 3
    acc = m.summary[m.summary["metric"] == "pixel_accuracy"].set_index("method.lambda")
    assert acc.loc[0, "n"] == 3 and np.isnan(acc.loc[0, "std"])
    assert list(m.runs["shard"]) == ["0/2", "1/2", "0/2", "1/2"]


def test_merge_partial_and_overlapping_shards(tmp_path, aggregate):
    root = tmp_path / "runs"
    make_run(root / "s0", BASE + ["shard=0/3"], {"a": (0.1, 1, 1)})
    make_run(root / "s1", BASE + ["shard=1/3"], {"b": (0.2, 1, 1)})
    m = M.merge_runs([root])
    assert any("only 2 of 3 shards" in w for w in m.warnings)
    make_run(root / "s2", BASE + ["shard=2/3"], {"b": (0.2, 1, 1)})
    with pytest.raises(M.UserError, match="sample b .* more than one of the shards"):
        M.merge_runs([root])


def _error(argv, capsys):
    assert M.main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("xaibench-merge: error: ") and "Traceback" not in err
    return err


def test_merge_usage_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert "no run folders found" in _error([tmp_path / "empty"], capsys)
    assert "is not a folder" in _error([tmp_path / "missing", "--out", tmp_path / "o"], capsys)

    a = make_run(tmp_path / "a", ["method.lambda=0"], {"x": (0.1, 1, 1)})
    b = make_run(tmp_path / "b", ["method.lambda=1"], {"x": (0.1, 1, 1)}, experiment="other")
    assert "different experiments" in _error([a, b, "--out", tmp_path / "o"], capsys)
    assert "pass --out" in _error([a], capsys)

    c = make_run(tmp_path / "c", ["method.lambda=0"], {"y": (0.1, 1, 1)})
    assert "same settings but are not distinct shards" in _error([a, c, "--out", tmp_path / "o"], capsys)

    (c / "results.parquet").write_bytes(b"not parquet")
    assert f"cannot read {c / 'results.parquet'}" in _error([c, "--out", tmp_path / "o"], capsys)
    (a / ".hydra" / "overrides.yaml").write_text("{not: a list}")
    assert "is not a list of overrides" in _error([a, "--out", tmp_path / "o"], capsys)
    assert not (tmp_path / "o").exists()


def test_callback_merges_sweep_folder_and_reports_errors(tmp_path, caplog):
    from omegaconf import OmegaConf

    from xaibench.run.callbacks import MergeSweep

    sweep = tmp_path / "sweep"
    make_run(sweep / "0", BASE + ["seed=0"], {"a": (0.2, 1, 2)})
    make_run(sweep / "1", BASE + ["seed=1"], {"a": (0.4, 1, 2)}, seed=1)
    MergeSweep().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    summary = pd.read_csv(sweep / "summary.csv")
    faith = summary[summary["metric"] == "faithfulness"]
    assert summary.columns[0] == "seed"  # a swept key that is a results column leads the summary too
    assert sorted(zip(faith["seed"], faith["mean"])) == [(0, 0.2), (1, 0.4)]
    assert list(pd.read_parquet(sweep / "results.parquet").columns) == COLUMNS  # seed is already a column

    (tmp_path / "empty").mkdir()
    caplog.set_level("WARNING")
    MergeSweep().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "empty")}}}))
    assert "sweep not merged: no run folders found" in caplog.text


def test_callback_notes_unfinished_points_with_the_resume_command(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from xaibench.run import callbacks as CB

    monkeypatch.setattr(CB, "OUTCOME", {})
    monkeypatch.setenv("XAIBENCH_SWEEP", json.dumps({"keys": ["method.lambda"],
                                                     "command": ["hydra/launcher=local", "method.lambda=0,1"]}))
    sweep = tmp_path / "my sweep"
    make_run(sweep / "0", BASE + ["method.lambda=0"], {"a": (0.2, 1, 2)})
    make_run(sweep / "1", BASE + ["method.lambda=1"], {"a": (0.4, 1, 2)}, status="failed")
    assert CB.outcome_lines() is None
    CB.MergeSweep().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    text = CB.outcome_lines()
    assert f"1 point(s) of the sweep did not finish (see error.txt in): {sweep / '1'}" in text
    assert text.splitlines()[-1].strip() == (f"xaibench -m hydra/launcher=local method.lambda=0,1 resume=true "
                                             f"'hydra.sweep.dir={sweep}'")  # quoted: the folder has a space
    assert (sweep / "summary.csv").exists()  # the finished points are merged all the same


@pytest.mark.parametrize("launcher, target", [("local", "xaibench_launcher.local_launcher.LocalLauncher"),
                                              ("slurm", "submitit_launcher.SlurmLauncher"),
                                              ("slurm_local", "submitit_launcher.LocalLauncher")])
def test_shipped_launcher_configs_compose(launcher, target):
    from hydra import compose, initialize_config_module

    from xaibench.run.app import register_schemas

    register_schemas()  # the primary config's schema, as the app does before Hydra composes

    extra = ["hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=30"] if launcher == "slurm" else []
    with initialize_config_module(config_module="xaibench.conf", version_base="1.3"):  # as the app does
        cfg = compose("config", [f"hydra/launcher={launcher}", *extra], return_hydra_config=True)
    lc = cfg.hydra.launcher
    assert lc._target_.endswith(target)
    if launcher == "slurm":
        assert (lc.partition, lc.timeout_min, lc.gpus_per_node, lc.cpus_per_task, lc.mem_gb) == ("gpu", 30, 1, 8, 32)
    assert "merge_sweep" in cfg.hydra.callbacks  # the merge callback is on by default


# ------------------------------------------------------------------ real sweeps through the app
REPO = Path(__file__).resolve().parent.parent
APP = [sys.executable, "-m", "xaibench.run.app"]


def _env(**extra):
    """The environment of a CLI run: offline, one thread, and the checkout on the path (its hydra_plugins
    folder holds the launcher plugin, also before the package is reinstalled)."""
    path = os.pathsep.join(x for x in (str(REPO), os.environ.get("PYTHONPATH", "")) if x)
    return dict(os.environ, **dict(dict(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                                        PYTHONPATH=path), **extra))


def _sweep(tmp_path, launcher_args):
    sweep = tmp_path / "sweep"
    cmd = APP + ["-m", "experiment=staa_synthetic", "dataset.n_samples=1", "threads=1", "print_summary=false",
                 "method.lambda=0,1", f"hydra.sweep.dir={sweep}", *launcher_args]  # merge callback on by default
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=_env(), cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    points = sorted(d for d in sweep.iterdir() if d.is_dir() and not d.name.startswith("."))
    assert len(points) == 2
    for d in points:
        for f in ("results.parquet", "results.csv", "summary.csv", "provenance.json"):
            assert (d / f).exists(), d / f
    summary = pd.read_csv(sweep / "summary.csv")
    assert summary.columns[0] == "method.lambda"
    assert sorted(summary["method.lambda"].dropna().unique()) == [0, 1]
    assert summary.loc[summary["method"] == "staa_raw", "method.lambda"].isna().all()  # takes no lambda
    # the merged summary holds each point's own arms once, their values unchanged (the marks compare the points)
    key = ["method", "params", "metric"]
    merged = summary.set_index(key)
    assert not merged.index.duplicated().any()
    for d in points:
        own = pd.read_csv(d / "summary.csv").set_index(key)
        part = merged.loc[own.index]
        for c in ("mean", "std", "n", "ci_low", "ci_high"):
            np.testing.assert_allclose(part[c].astype(float), own[c].astype(float), rtol=1e-12, equal_nan=True)
    assert list(pd.read_csv(sweep / "runs.csv")["status"]) == ["complete", "complete"]
    assert (sweep / "report.html").exists()
    return p.stdout + p.stderr


@pytest.mark.slow
def test_sweep_local_launcher(tmp_path):
    out = _sweep(tmp_path, ["hydra/launcher=local"])  # xaibench's own launcher: a process per point, 2 at a time
    assert "Local launcher: 2 points" in out and "each in its own process" in out


@pytest.mark.slow
def test_sweep_submitit_local(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    out = _sweep(tmp_path, ["hydra/launcher=slurm_local"])  # the shipped config: submitit_local
    assert "Submitit 'local' sweep" in out
    assert (tmp_path / "sweep" / ".submitit").is_dir()


def test_launcher_plugin_is_packaged():
    """hydra/launcher=local is found by Hydra's plugin scan of the installed ``hydra_plugins`` namespace."""
    import tomllib

    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert "hydra_plugins.xaibench_launcher" in packages


def test_cluster_launchers_on_a_plain_install_say_what_to_install(tmp_path):
    """Without the cluster extra's plugins (hidden here), hydra/launcher=slurm_local or slurm stops with one
    line naming xaibench[cluster] and exit status 2 (on b4e0241: Hydra's "Could not load ...")."""
    plain = tmp_path / "plain"
    (plain / "hydra_plugins").mkdir(parents=True)
    (plain / "hydra_plugins" / "xaibench_launcher").symlink_to(REPO / "hydra_plugins" / "xaibench_launcher")
    (plain / "sitecustomize.py").write_text(  # the namespace as a plain install has it: xaibench's plugin only
        f"import hydra_plugins\nhydra_plugins.__path__ = [{str(plain / 'hydra_plugins')!r}]\n")
    env = _env(PYTHONPATH=os.pathsep.join([str(plain), str(REPO)]))
    for launcher in (["hydra/launcher=slurm_local"], ["hydra/launcher=slurm", "hydra.launcher.partition=gpu"]):
        p = subprocess.run(APP + ["-m", *launcher, "experiment=staa_synthetic", "method.lambda=0,1",
                                  f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                           capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
        err = p.stderr.strip()
        assert p.returncode == 2, p.stdout + p.stderr
        assert len(err.splitlines()) == 1 and "pip install 'xaibench[cluster]'" in err, err
        assert err.startswith(f"xaibench: error: {launcher[0]} needs the hydra-submitit-launcher plugin")
        assert not list((tmp_path / "sweep").glob("*/provenance.json"))  # no point ran


def _records(rows_jsonl: Path) -> list:
    return [line for line in rows_jsonl.read_text().splitlines() if '"kind": "sample"' in line]


@pytest.mark.slow
def test_killed_point_is_recorded_and_the_sweep_resumes(tmp_path):
    """SIGKILL to one point of a local-launcher sweep: that point is recorded as failed (error.txt), the
    other finishes, the command exits 1 with the resume command; the same command with resume=true continues
    the same point folders (the killed point from its journal) and the merge runs."""
    import signal
    import time

    sweep = tmp_path / "sweep"
    cmd = APP + ["-m", "hydra/launcher=local", "hydra.launcher.n_jobs=2", "model=vit_synth",
                 "experiment.methods=[staa,control_random,control_gt,control_gt_inverted,control_constant]",
                 "experiment.metrics=[localisation,srg]", "dataset.n_samples=24", "method.lambda=0,1", "threads=1",
                 "print_summary=false", f"hydra.sweep.dir={sweep}"]
    log = tmp_path / "first.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, text=True, env=_env(), cwd=tmp_path)
    victim, pid, done_before = None, None, 0
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        found = re.search(r"#1 : .*method\.lambda=1.*\(pid (\d+)\)", log.read_text())
        points = [d for d in sweep.glob("1_*") if d.is_dir()] if sweep.exists() else []
        if found and points and (points[0] / "rows.jsonl").exists() and \
                not (points[0] / "provenance.json").exists() and _records(points[0] / "rows.jsonl"):
            victim, pid = points[0], int(found.group(1))
            done_before = len(_records(victim / "rows.jsonl"))
            os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    assert victim is not None, "the point never started writing: " + log.read_text()[-3000:]
    assert proc.wait(timeout=600) == 1, log.read_text()[-3000:]
    out = log.read_text()
    assert f"was killed by signal SIGKILL (9)" in out and "the other points go on" in out
    assert "continue the sweep" in out and "resume=true" in out and f"hydra.sweep.dir={sweep}" in out
    assert "Traceback" not in out and "TerminatedWorkerError" not in out
    error = (victim / "error.txt").read_text()
    assert "killed by signal SIGKILL" in error and str(pid) in error
    assert json.loads((victim / "provenance.json").read_text())["status"] == "failed"
    other = next(sweep.glob("0_*"))
    assert json.loads((other / "provenance.json").read_text())["status"] == "complete"
    runs = pd.read_csv(sweep / "runs.csv")
    assert sorted(runs["status"]) == ["complete", "failed"]
    journal = (victim / "rows.jsonl").read_text().splitlines()[:done_before]

    # the printed command, as typed (the same command with resume=true and the sweep folder): the same folders,
    # the killed point continued, then the merge
    import shlex

    printed = out.split("continue the sweep", 1)[1].splitlines()[1].strip()
    argv = shlex.split(printed)
    assert argv[0] == "xaibench" and "-m" in argv and "resume=true" in argv and "hydra/launcher=local" in argv
    folders = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    # allow_change=[code]: in a shared checkout another edit may land between the two runs; the resume, not
    # the code check (tests/test_reliability.py), is under test here
    p = subprocess.run(APP + argv[1:] + ["allow_change=[code]"], capture_output=True, text=True, timeout=600,
                       env=_env(), cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert sorted(x.name for x in sweep.iterdir() if x.is_dir()) == folders  # resume is not in the names
    assert not (victim / "error.txt").exists()
    assert json.loads((victim / "provenance.json").read_text())["status"] == "complete"
    assert (victim / "rows.jsonl").read_text().splitlines()[:done_before] == journal  # continued, not redone
    assert len(_records(victim / "rows.jsonl")) > done_before
    runs = pd.read_csv(sweep / "runs.csv")
    assert list(runs["status"]) == ["complete", "complete"]
    s = pd.read_csv(sweep / "summary.csv")
    staa = s[(s["method"] == "staa") & (s["metric"] == "iou")]
    assert sorted(staa["method.lambda"]) == [0, 1] and (staa["n"] == 24).all()


@pytest.mark.slow
def test_readme_method_sweep_writes_its_report(tmp_path):
    """``xaibench -m method=staa,chefer,rollout`` (the README's first sweep; smaller here): the sweep report is
    written (on b4e0241: KeyError: 'method') and xaibench-report on the folder works."""
    sweep = tmp_path / "sweep"
    p = subprocess.run(APP + ["-m", "method=staa,chefer,rollout", "model=vit_synth", "dataset.n_samples=2",
                              "experiment.metrics=[localisation]", "threads=1", "print_summary=false",
                              f"hydra.sweep.dir={sweep}"],
                       capture_output=True, text=True, timeout=600, env=_env(), cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "report not written" not in p.stdout + p.stderr
    text = (sweep / "report.html").read_text()
    assert all(f'<td class="method">{m}</td>' in text for m in ("staa", "chefer", "rollout"))
    r = subprocess.run([sys.executable, "-m", "xaibench.analysis.report", str(sweep)], capture_output=True,
                       text=True, timeout=300, env=_env())
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr


@pytest.mark.slow
def test_shards_through_app_equal_the_unsharded_run(tmp_path):
    """Two shards (one sweep, merged by the callback) give the per-sample rows and the summary, dataset-level
    pixel accuracy and mIoU included, of the same run without shards (the independent reference)."""
    args = ["experiment=staa_synthetic", "experiment.metrics=[segmentation,localisation]", "dataset.n_samples=4",
            "threads=1", "print_summary=false"]
    env = _env()
    app = APP
    for cmd in (app + ["-m", *args, "shard=0/2,1/2", f"hydra.sweep.dir={tmp_path / 'shards'}"],
                app + [*args, f"hydra.run.dir={tmp_path / 'one'}"]):
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    key = ["method", "metric", "sample_id"]
    merged = pd.read_parquet(tmp_path / "shards" / "results.parquet").sort_values(key).reset_index(drop=True)
    one = pd.read_parquet(tmp_path / "one" / "results.parquet").sort_values(key).reset_index(drop=True)
    assert list(merged.columns) == COLUMNS  # shard is not a swept column
    assert {"pixel_accuracy", "miou"} <= set(merged.loc[merged["sample_id"] == AGGREGATE, "metric"])
    pd.testing.assert_frame_equal(merged[key + ["note"]], one[key + ["note"]])
    # cost rows (seconds, memory, passes that the output cache answers) depend on the machine and on which samples
    # share a batch; every other value must be equal
    quality = (merged["metric_kind"] != "cost").to_numpy()
    assert quality.sum() > 0 and (one["metric_kind"] != "cost").to_numpy().tolist() == quality.tolist()
    np.testing.assert_allclose(merged["value"][quality], one["value"][quality], rtol=1e-9, atol=1e-12)
    s_merged = pd.read_csv(tmp_path / "shards" / "summary.csv").sort_values(["method", "metric"])
    s_one = pd.read_csv(tmp_path / "one" / "summary.csv").sort_values(["method", "metric"])
    s_merged, s_one = (s[s["metric_kind"] != "cost"] for s in (s_merged, s_one))
    np.testing.assert_allclose(s_merged["mean"], s_one["mean"], rtol=1e-9, atol=1e-12)
    assert list(s_merged["n"]) == list(s_one["n"])
