"""A resume never mixes code, weights or data (issue 20 item 1), the journal is keyed by sample id, and the
small reliability items of the runner (stale temporary files, the printed resume command, the maps file).

The runs are in-process (:class:`xaibench.run.runner.Runner`) on a tiny random-init TimeSformer, 2 samples,
two trace-based methods and one metric, so each takes a second or two.
"""

import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from run_config import make_cfg

from xaibench.analysis.maps import read_maps
from xaibench.errors import UserError
from xaibench.run import fingerprint as FP
from xaibench.run.runner import Runner, resume_command

ROOT = Path(__file__).resolve().parents[1]
EXP = {"name": "rel", "benchmarks": [{"model": "hf_timesformer_tiny", "dataset": "synthetic_video"}],
       "methods": ["staa_raw", "attention"], "metrics": ["localisation"]}


def run(out, **top):
    cfg = make_cfg(EXP, n_samples=3, threads=1, warmup=False, **top)
    return Runner(cfg, out).run()


def interrupted(tmp_path):
    """A finished run cut back to its first two records (as if killed after them), with its fingerprint."""
    out = tmp_path / "run"
    run(out)
    lines = (out / "rows.jsonl").read_text().splitlines()
    (out / "rows.jsonl").write_text("\n".join(lines[:2]) + "\n")
    return out


def test_the_journal_is_keyed_by_sample_id_and_holds_the_maps(tmp_path):
    out = tmp_path / "run"
    summary, status = run(out)
    assert status == "complete"
    recs = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    samples = [r for r in recs if r["kind"] == "sample"]
    df = pd.read_csv(out / "results.csv")
    ids = set(df.sample_id)
    assert {r["key"][3] for r in samples} == ids and len(ids) == 3  # keys carry the sample ids
    maps = read_maps(out)
    assert len(maps) == 2 * 3  # one token map per (sample, arm)
    key = next(k for k in maps if k[2] == "attention")
    assert maps[key].ndim == 3 and np.isfinite(maps[key]).all()
    fp = json.loads((out / "run_config.json").read_text())
    assert set(fp) >= {"config", "code", "versions", "weights", "data"}
    assert fp["weights"]["hf_timesformer_tiny"] and fp["data"]["synthetic_video|hf_timesformer_tiny"]["n"] == 3
    assert "xaibench/metrics/localisation.py" in fp["code"]["files"]
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["fingerprint"]["code"]["source_sha256"] == fp["code"]["source_sha256"]


def test_resume_completes_the_same_rows(tmp_path):
    whole = tmp_path / "whole"
    run(whole)
    out = interrupted(tmp_path)
    _, status = run(out, resume=True)
    assert status == "complete"
    key = ["dataset", "model", "method", "sample_id", "metric"]
    a, b = (pd.read_csv(d / "results.csv") for d in (whole, out))
    keep = ~a.metric.isin(["explain_time_s", "explain_peak_mem_mb", "eval_time_s"])
    a, b = a[keep].sort_values(key).reset_index(drop=True), b[~b.metric.isin(["explain_time_s", "explain_peak_mem_mb",
                                                                              "eval_time_s"])].sort_values(key)
    pd.testing.assert_frame_equal(a, b.reset_index(drop=True))


def test_resume_refuses_changed_code_and_names_the_file(tmp_path, monkeypatch):
    out = interrupted(tmp_path)
    files = dict(FP.source_hashes())
    files["xaibench/metrics/localisation.py"] = "0" * 64
    monkeypatch.setattr(FP, "source_hashes", lambda: files)
    with pytest.raises(UserError, match=r"(?s)code differs.*xaibench/metrics/localisation\.py"):
        run(out, resume=True)
    # an explicit override is accepted and recorded
    _, status = run(out, resume=True, allow_change=["code"])
    assert status == "complete"
    prov = json.loads((out / "provenance.json").read_text())
    assert any("localisation.py" in c for c in prov["allowed_changes"])


def test_resume_refuses_other_weights(tmp_path, monkeypatch):
    out = interrupted(tmp_path)
    monkeypatch.setattr(FP, "weights_digest", lambda adapter: "f" * 64)
    with pytest.raises(UserError, match=r"(?s)weights differs.*hf_timesformer_tiny"):
        run(out, resume=True)


def test_resume_refuses_other_data(tmp_path, monkeypatch):
    """Another data root (or replaced files) changes the dataset's fingerprint: refused, naming the data."""
    out = interrupted(tmp_path)
    from xaibench.datasets.base import Dataset

    real = Dataset.fingerprint
    monkeypatch.setattr(Dataset, "fingerprint", lambda self: dict(real(self), root="/elsewhere"))
    with pytest.raises(UserError, match=r"(?s)data differs.*root"):
        run(out, resume=True)


def test_resume_refuses_other_versions_and_a_changed_config(tmp_path, monkeypatch):
    out = interrupted(tmp_path)
    with pytest.raises(UserError, match=r"(?s)config differs.*seed"):
        run(out, resume=True, seed=7)
    real = FP.versions
    monkeypatch.setattr(FP, "versions", lambda: dict(real(), torch="0.0.1"))
    with pytest.raises(UserError, match=r"(?s)versions differs.*torch"):
        run(out, resume=True)


def test_resume_refuses_a_folder_without_its_fingerprint(tmp_path):
    out = interrupted(tmp_path)
    (out / "run_config.json").unlink()
    with pytest.raises(UserError, match="no run_config.json"):
        run(out, resume=True, seed=7)


def test_resume_removes_temporary_files_left_by_a_kill(tmp_path):
    out = interrupted(tmp_path)
    stale = out / ".tmp-0123456789ab-summary.csv"
    stale.write_text("half a table")
    run(out, resume=True)
    assert not stale.exists()


def test_a_run_that_failed_before_any_result_leaves_its_folder_reusable(tmp_path):
    """A setting that does not fit is refused before any work; fixed, the same folder is accepted."""
    out = tmp_path / "run"
    with pytest.raises(UserError):
        run(out, seed=-1)
    assert not (out / "rows.jsonl").exists()
    _, status = run(out)
    assert status == "complete"


def test_the_printed_resume_command_quotes_and_keeps_the_run_settings(tmp_path):
    out = tmp_path / "a=b c"
    cmd = resume_command(out, ["experiment=staa_synthetic", "dataset.n_samples=2", "resume=false",
                               f"hydra.run.dir={out}"])
    args = shlex.split(cmd)
    assert args[0] == "xaibench" and "experiment=staa_synthetic" in args and "dataset.n_samples=2" in args
    assert "resume=true" in args and f"hydra.run.dir={out}" in args and "resume=false" not in args
    sweep = resume_command(out, [], {"command": ["-m", "method.lambda=0,1"], "dir": "/s w/x"})
    assert shlex.split(sweep) == ["xaibench", "-m", "method.lambda=0,1", "resume=true", "hydra.sweep.dir=/s w/x"]


def test_interrupted_run_prints_a_resume_command_that_works(tmp_path):
    """Kill a CLI run after its first records; the command it prints continues it as typed."""
    import os
    import signal
    import time

    out = tmp_path / "run x"
    args = [sys.executable, "-c", "from xaibench.run.app import main; main()", "experiment=staa_synthetic",
            "experiment.benchmarks=[{model: hf_timesformer_tiny, dataset: synthetic_video}]", "dataset.n_samples=300",
            "experiment.methods=[staa_raw]", "experiment.metrics=[localisation]", "report=false", "threads=1",
            "gallery=0", f"hydra.run.dir={out}"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, HYDRA_FULL_ERROR="0"))
    rows = out / "rows.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and (not rows.exists() or len(rows.read_text().splitlines()) < 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr[-2000:]
    line = next(ln.strip() for ln in stdout.splitlines() if ln.strip().startswith("xaibench ") and "resume=true" in ln)
    p = subprocess.run([sys.executable, "-c", "from xaibench.run.app import main; main()", *shlex.split(line)[1:]],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads((out / "provenance.json").read_text())["status"] == "complete"
    assert pd.read_csv(out / "results.csv").sample_id.nunique() == 300
