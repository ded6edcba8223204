"""End-to-end runs of the Hydra app (as a user runs it) and the regression gate."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from xaibench.bench.results import COLUMNS

ROOT = Path(__file__).resolve().parents[1]
XAIBENCH = [sys.executable, "-c", "from xaibench.bench.app import main; main()"]
STAA = "experiment=staa_synthetic"
TINY = "experiment.benchmarks=[{model: hf_timesformer_tiny, dataset: synthetic_video}]"
MACHINE_DEPENDENT = ["explain_time_s", "explain_peak_mem_mb", "eval_time_s"]


def run(*args, check=True):
    env = dict(os.environ, HYDRA_FULL_ERROR="0")
    p = subprocess.run(XAIBENCH + list(args), capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"exit {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def test_default_experiment_writes_the_documented_files(tmp_path):
    out = tmp_path / "run"
    p = run("dataset.n_samples=1", "threads=1", f"hydra.run.dir={out}")
    for f in ("results.parquet", "results.csv", "summary.csv", "provenance.json"):
        assert (out / f).exists(), f
    df = pd.read_parquet(out / "results.parquet")
    assert list(df.columns) == COLUMNS
    methods = {"staa_raw", "staa", "attention", "rollout", "chefer", "stdnorm", "stdnorm_nostd", "gradcam", "shap",
               "lime"}
    for model in ("timesformer_synth", "vit_synth", "swin_synth"):
        assert set(df[df.model == model]["method"]) == methods
    expected = {"staa_faithfulness", "staa_monotonicity", "staa_monotonicity_tau", "faithfulness_correlation",
                "deletion_auc", "insertion_auc", "ap", "iou", "temporal_ap", "explain_time_s", "n_forward",
                "n_backward", "pixel_accuracy", "miou", "map"}
    assert expected <= set(df["metric"])
    assert "temporal_ap" not in set(df[df.model == "vit_synth"]["metric"])  # images have no time axis
    per_sample = df[df.sample_id != "__aggregate__"]
    assert not per_sample.duplicated(["sample_id", "model", "method", "metric"]).any()
    s = pd.read_csv(out / "summary.csv")
    assert {"mean", "std", "n", "higher_is_better"} <= set(s.columns)
    assert not s.duplicated(["dataset", "model", "method", "params", "metric"]).any()
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["seed"] == 0 and prov["status"] == "complete" and "torch" in prov["versions"]
    assert prov["config"]["experiment"]["name"] == "default" and prov["git_revision"]
    assert "staa_faithfulness" in p.stdout  # the summary is printed


def test_staa_experiment_one_row_per_sample_method_metric(tmp_path):
    out = tmp_path / "run"
    run("experiment=staa_synthetic", "dataset.n_samples=3", f"hydra.run.dir={out}")
    df = pd.read_csv(out / "results.csv")
    assert set(df["method"]) == {"staa_raw", "staa"} and df["sample_id"].nunique() == 3
    expected = {"staa_faithfulness", "staa_monotonicity", "staa_monotonicity_tau", "ap", "iou", "temporal_ap",
                "explain_time_s", "n_forward", "n_backward", "explain_peak_mem_mb", "eval_time_s", "eval_n_forward"}
    assert set(df["metric"]) == expected and len(df) == 3 * 2 * len(expected)
    # the cost metric runs last and counts the other metrics' forward passes: 1 (faithfulness) + 9 (monotonicity)
    assert (df[df.metric == "eval_n_forward"]["value"] == 10).all()
    assert (df[df.metric == "eval_time_s"]["value"] > 0).all()
    assert (pd.read_csv(out / "summary.csv")["n"] == 3).all()


def test_results_are_deterministic_and_resume_continues(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    run(STAA, TINY, "dataset.n_samples=3", f"hydra.run.dir={a}")
    # simulate an interruption after the first sample: keep only its rows, drop the tables
    lines = (a / "rows.jsonl").read_text().splitlines()
    b.mkdir()
    (b / "rows.jsonl").write_text("\n".join(lines[:2]) + "\n" + lines[2][: len(lines[2]) // 2])
    p = run(STAA, TINY, "dataset.n_samples=3", f"hydra.run.dir={b}", check=False)
    assert p.returncode == 2 and "resume=true" in p.stderr
    run(STAA, TINY, "dataset.n_samples=3", f"hydra.run.dir={b}", "resume=true")
    ra, rb = (pd.read_csv(d / "results.csv") for d in (a, b))
    key = ["sample_id", "method", "metric"]
    ra = ra[~ra.metric.isin(MACHINE_DEPENDENT)].sort_values(key).reset_index(drop=True)
    rb = rb[~rb.metric.isin(MACHINE_DEPENDENT)].sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(ra, rb)


def test_sweep_over_lambda(tmp_path):
    p = run("-m", TINY, "dataset.n_samples=2", "experiment.methods=[staa]", "method.lambda=0,2",
            f"hydra.sweep.dir={tmp_path}")
    runs = sorted(tmp_path.glob("*/summary.csv"))
    assert len(runs) == 2
    lams = [json.loads(pd.read_csv(r)["params"].iloc[0])["lambda"] for r in runs]
    assert sorted(lams) == [0.0, 2.0]


@pytest.mark.parametrize(
    "override,needle",
    [("experiment.methods=[nosuchmethod]", "valid method configs"),
     ("experiment.metrics=[nosuchmetric]", "valid metric configs"),
     ("method.lambda=9", "allowed range is [0.0, 5.0]"),
     ("dataset.n_samples=0", "allowed range")],
)
def test_user_mistakes_get_a_clear_message(tmp_path, override, needle):
    p = run(STAA, TINY, override, f"hydra.run.dir={tmp_path}", check=False)
    assert p.returncode == 2
    assert needle in p.stderr and "Traceback" not in p.stderr


def test_unknown_experiment_lists_options(tmp_path):
    p = run("experiment=nosuch", f"hydra.run.dir={tmp_path}", check=False)
    assert p.returncode != 0 and "default" in p.stderr


def test_save_figures_writes_one_png_per_sample_and_method(tmp_path):
    run(STAA, TINY, "dataset.n_samples=2", "save_figures=1", f"hydra.run.dir={tmp_path}")
    pngs = sorted(p.name for p in (tmp_path / "figures").glob("*.png"))
    assert pngs == [f"synthetic_video__hf_timesformer_tiny__{m}__test-00000.png" for m in ("staa", "staa_raw")]
    from PIL import Image

    w, h = Image.open(tmp_path / "figures" / pngs[0]).size
    assert w > 600 and h > 200


def test_summary_uses_the_dataset_level_aggregate_where_there_is_one():
    from xaibench.bench.results import summarise, to_frame

    base = dict(experiment="e", dataset="d", model="m", method="x", params="{}", higher_is_better=True)
    rows = [dict(base, sample_id=f"s{i}", metric="miou", value=v) for i, v in enumerate([0.1, 0.3])]
    rows.append(dict(base, sample_id="__aggregate__", metric="miou", value=0.25, note="n=2"))
    rows += [dict(base, sample_id=f"s{i}", metric="ap", value=v) for i, v in enumerate([0.1, 0.3])]
    rows.append(dict(base, sample_id="", metric="skipped", value=float("nan"), note="not applicable"))
    s = summarise(to_frame(rows)).set_index("metric")
    assert s.loc["miou", "mean"] == 0.25 and s.loc["miou", "n"] == 2
    assert s.loc["ap", "mean"] == pytest.approx(0.2) and s.loc["ap", "n"] == 2
    assert "skipped" not in s.index


def test_a_method_that_does_not_apply_is_skipped_with_its_reason(tmp_path):
    """A pair found inapplicable in check() or only inside explain() gives one `skipped` row, no crash."""
    from omegaconf import OmegaConf

    from xaibench.bench.runner import Runner
    from xaibench.errors import NotApplicable
    from xaibench.methods import METHODS
    from xaibench.methods.base import Method

    class Picky(Method):
        name = "picky_test"

        def explain(self, adapter, x, target):
            raise NotApplicable("needs a CLS token the model does not have")

    if "picky_test" not in METHODS:
        METHODS.register("picky_test")(Picky)
    conf = tmp_path / "conf"
    import shutil

    shutil.copytree(ROOT / "conf", conf)
    (conf / "method" / "picky.yaml").write_text("name: picky_test\n")
    import xaibench.bench.config as C

    old = C.CONF_DIR
    C.CONF_DIR = conf
    try:
        cfg = OmegaConf.load(conf / "config.yaml")
        cfg.pop("defaults")
        cfg.pop("hydra")
        cfg.experiment = OmegaConf.create({"name": "t", "benchmarks": [{"model": "hf_vit_tiny",
                                           "dataset": "synthetic_image"}], "methods": ["picky", "staa_raw"],
                                           "metrics": ["cost"]})
        cfg.dataset.n_samples = 2
        cfg.print_summary = False
        summary, status = Runner(cfg, tmp_path / "run").run()
    finally:
        C.CONF_DIR = old
    df = pd.read_csv(tmp_path / "run" / "results.csv")
    skipped = df[df.metric == "skipped"]
    assert status == "complete" and len(skipped) == 1 and skipped.iloc[0]["method"] == "picky"
    assert "CLS token" in skipped.iloc[0]["note"]
    assert set(df[df.metric != "skipped"]["method"]) == {"staa_raw"}


def test_ctrl_c_keeps_finished_samples_and_writes_the_tables(tmp_path):
    import signal
    import time

    out = tmp_path / "run"
    env = dict(os.environ, HYDRA_FULL_ERROR="0")
    proc = subprocess.Popen(XAIBENCH + [STAA, TINY, "dataset.n_samples=500", f"hydra.run.dir={out}"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rows = out / "rows.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and (not rows.exists() or len(rows.read_text().splitlines()) < 4):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr[-2000:]
    assert "resume=true" in stdout
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["status"] == "interrupted"
    df = pd.read_csv(out / "results.csv")
    assert 2 <= df["sample_id"].nunique() < 500
