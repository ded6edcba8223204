"""End-to-end runs of the Hydra app (as a user runs it)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from run_config import make_cfg

from xaibench.analysis.results import COLUMNS

ROOT = Path(__file__).resolve().parents[1]
XAIBENCH = [sys.executable, "-c", "from xaibench.run.app import main; main()"]
STAA = "experiment=staa_synthetic"
TINY = "experiment.benchmarks=[{model: hf_timesformer_tiny, dataset: synthetic_video}]"
QUIET = ["report=false", "threads=1", "gallery=0"]
# eval_n_forward too: a resumed run does not re-warm the output cache with methods it had already journaled
MACHINE_DEPENDENT = ["explain_time_s", "explain_peak_mem_mb", "eval_time_s", "eval_n_forward"]


def run(*args, check=True, cwd=ROOT, env=None):
    env = dict(os.environ, HYDRA_FULL_ERROR="0", **(env or {}))
    p = subprocess.run(XAIBENCH + list(args), capture_output=True, text=True, cwd=cwd, env=env, timeout=900)
    if check and p.returncode != 0:
        raise AssertionError(f"exit {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def stable(df):
    """Rows that do not depend on the machine's speed, in a canonical order."""
    key = ["dataset", "model", "method", "sample_id", "metric"]
    return df[~df.metric.isin(MACHINE_DEPENDENT)].sort_values(key).reset_index(drop=True)


# ------------------------------------------------------------------------ the default job and the tables
def test_default_experiment_writes_the_documented_files(tmp_path):
    out = tmp_path / "run"
    p = run("dataset.n_samples=1", "threads=1", "report=false", f"hydra.run.dir={out}")
    for f in ("results.parquet", "results.csv", "summary.csv", "validity.csv", "comparisons.csv", "ranking.csv",
              "provenance.json", "run_config.json", "rows.jsonl"):
        assert (out / f).exists(), f
    df = pd.read_parquet(out / "results.parquet")
    assert list(df.columns) == COLUMNS
    methods = {"staa_raw", "staa", "attention", "rollout", "chefer", "stdnorm", "stdnorm_nostd", "gradcam", "shap",
               "lime", "control_random", "control_constant", "control_gt", "control_gt_inverted",
               "transformer_attribution", "attnlrp"}
    for model in ("timesformer_synth", "vit_synth", "swin_synth"):
        assert set(df[df.model == model]["method"]) == methods
    assert "temporal_ap" not in set(df[df.model == "vit_synth"]["metric"])  # images have no time axis
    lrp = df[df.method == "transformer_attribution"]  # runs on the ViT, skipped with its reason elsewhere
    assert set(lrp[lrp.metric == "skipped"].model) == {"timesformer_synth", "swin_synth"}
    assert (lrp[lrp.model == "vit_synth"].metric != "skipped").all()
    per_sample = df[df.sample_id != "__aggregate__"]
    assert not per_sample.duplicated(["sample_id", "model", "method", "metric"]).any()
    s = pd.read_csv(out / "summary.csv")
    assert {"mean", "std", "n", "n_undefined", "ci_low", "ci_high", "higher_is_better", "kind", "valid"} <= set(s)
    assert not s.duplicated(["dataset", "model", "method", "params", "metric"]).any()
    assert set(s[s.method.str.startswith("control_")]["kind"]) == {"control"}
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["seed"] == 0 and prov["status"] == "complete" and "torch" in prov["versions"]
    assert prov["config"]["experiment"]["name"] == "default" and prov["git_revision"]
    assert prov["device"] == "cpu" and prov["passes"]["forward"] > 0
    assert "control_gt" in p.stdout and "validity" in p.stdout.lower()  # controls and verdicts are printed
    progress = ("it/s", "expl/s", "s/expl")  # tqdm's bars size themselves to the terminal
    assert max(len(line) for line in p.stdout.splitlines() if not any(t in line for t in progress)) <= 120


def test_one_benchmark_from_the_config_groups(tmp_path):
    """`model=M dataset=D method=X metric=Y`: the first thing a Hydra user types."""
    out = tmp_path / "run"
    run("model=vit_synth", "dataset=synthetic_image", "method=chefer", "metric=deletion_auc", "dataset.n_samples=2",
        *QUIET, f"hydra.run.dir={out}")
    df = pd.read_csv(out / "results.csv")
    assert set(df.method) == {"chefer"} and set(df.model) == {"vit_synth"}
    # the metric's score, its tie-order standard error (descriptive) and the cost rows the harness measures
    assert set(df[df.metric_kind != "cost"].metric) == {"deletion_auc", "deletion_auc_tie_se"}
    assert set(df[df.metric_kind == "cost"].metric) == {"explain_time_s", "n_forward", "n_backward",
                                                         "explain_peak_mem_mb", "eval_time_s", "eval_n_forward"}
    assert df.sample_id.nunique() == 2


def test_model_selection_keeps_the_fitting_datasets(tmp_path):
    """`model=vit_synth` on the default experiment runs on its image benchmark only (the video one does not fit)."""
    out = tmp_path / "run"
    p = run("model=vit_synth", "method=attention", "metric=localisation", "dataset.n_samples=1", *QUIET,
            f"hydra.run.dir={out}")
    assert set(pd.read_csv(out / "results.csv").dataset) == {"synthetic_image"}
    assert "does not fit" in p.stdout


def test_sweep_over_methods_writes_one_folder_each(tmp_path):
    run("-m", "method=staa,chefer", "model=vit_synth", "dataset=synthetic_image", "metric=localisation",
        "dataset.n_samples=2", *QUIET, f"hydra.sweep.dir={tmp_path}")
    runs = sorted(tmp_path.glob("*/summary.csv"))
    assert len(runs) == 2
    assert sorted(set(pd.read_csv(r)["method"]).pop() for r in runs) == ["chefer", "staa"]


def test_sweep_over_lambda_and_an_in_run_list(tmp_path):
    run("-m", TINY, STAA, "dataset.n_samples=2", "experiment.methods=[staa]", "method.lambda=0,2", *QUIET,
        f"hydra.sweep.dir={tmp_path / 'sweep'}")
    runs = sorted((tmp_path / "sweep").glob("*/summary.csv"))
    assert len(runs) == 2
    assert sorted(json.loads(pd.read_csv(r)["params"].iloc[0])["lambda"] for r in runs) == [0.0, 2.0]
    # a list inside one run: one arm per value, labelled by it, one trace per sample for all of them
    out = tmp_path / "list"
    run(TINY, STAA, "dataset.n_samples=2", "experiment.methods=[staa]", "method.lambda=[0,2]", *QUIET,
        f"hydra.run.dir={out}")
    df = pd.read_csv(out / "results.csv")
    assert set(df.method) == {"staa[lambda=0]", "staa[lambda=2]"}
    per_arm = df[df.metric == "n_forward"].groupby("method")["value"].first()
    assert (per_arm == 1).all()  # each arm is charged what it costs alone: one pass
    prov = json.loads((out / "provenance.json").read_text())
    evaluation = df[df.metric == "eval_n_forward"]["value"].sum()
    # all passes = 2 predictions + the metrics' passes + one trace per sample serving both arms
    assert prov["passes"]["forward"] - evaluation - 2 == 2


def test_staa_experiment_one_row_per_sample_method_metric(tmp_path):
    out = tmp_path / "run"
    run(STAA, "dataset.n_samples=3", *QUIET, f"hydra.run.dir={out}")
    df = pd.read_csv(out / "results.csv")
    assert set(df["method"]) == {"staa_raw", "staa"} and df["sample_id"].nunique() == 3
    expected = {"staa_faithfulness", "staa_monotonicity", "staa_monotonicity_tau", "ap", "iou", "temporal_ap",
                "staa_faithfulness_tie_se", "staa_monotonicity_tie_se", "staa_monotonicity_tau_tie_se",
                "explain_time_s", "n_forward", "n_backward", "explain_peak_mem_mb", "eval_time_s", "eval_n_forward"}
    assert set(df["metric"]) == expected and len(df) == 3 * 2 * len(expected)
    # the metrics evaluate a batch of (sample, method) items together; the batch's forward passes are charged in
    # equal shares to its items, and with the explanations' own passes they account for every pass of the run
    # (STAA's trace is also the sample's prediction)
    ev = df[df.metric == "eval_n_forward"]["value"]
    assert (ev > 0).all()
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["passes"]["forward"] == pytest.approx(ev.sum() + df[df.metric == "n_forward"]["value"].sum())
    assert (df[df.metric == "eval_time_s"]["value"] > 0).all()


# ------------------------------------------------------------------------------------ resume and interruption
def test_results_are_deterministic_and_resume_continues(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    run(STAA, TINY, "dataset.n_samples=3", *QUIET, f"hydra.run.dir={a}")
    # an interruption after the first records, the last line cut in the middle by a kill
    lines = (a / "rows.jsonl").read_text().splitlines()
    b.mkdir()
    (b / "rows.jsonl").write_text("\n".join(lines[:2]) + "\n" + lines[2][: len(lines[2]) // 2])
    (b / "run_config.json").write_text((a / "run_config.json").read_text())
    p = run(STAA, TINY, "dataset.n_samples=3", *QUIET, f"hydra.run.dir={b}", check=False)
    assert p.returncode == 2 and "resume=true" in p.stderr
    p = run(STAA, TINY, "dataset.n_samples=3", *QUIET, f"hydra.run.dir={b}", "resume=true")
    assert "dropped a record cut by the interruption" in p.stdout
    for line in (b / "rows.jsonl").read_text().splitlines():  # the cut line was repaired, not glued
        json.loads(line)
    pd.testing.assert_frame_equal(stable(pd.read_csv(a / "results.csv")), stable(pd.read_csv(b / "results.csv")))


def test_resume_refuses_a_different_configuration(tmp_path):
    out = tmp_path / "run"
    base = [STAA, TINY, "dataset.n_samples=2", "experiment.methods=[staa, chefer]", *QUIET, f"hydra.run.dir={out}"]
    run(*base)
    p = run(*base, "resume=true", "method.lambda=0.5", "seed=7", check=False)
    assert p.returncode == 2
    assert "seed" in p.stderr and "lambda" in p.stderr and "Traceback" not in p.stderr
    # keys that cannot change results may differ
    run(*base, "resume=true", "threads=2", "print_summary=false")


def _interrupt(tmp_path, sig):
    out = tmp_path / "run"
    env = dict(os.environ, HYDRA_FULL_ERROR="0")
    proc = subprocess.Popen(XAIBENCH + [STAA, TINY, "dataset.n_samples=500", *QUIET, f"hydra.run.dir={out}"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rows = out / "rows.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and (not rows.exists() or len(rows.read_text().splitlines()) < 4):
        time.sleep(0.2)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=300)
    return out, proc.returncode, stdout, stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interruption_keeps_finished_samples_and_writes_the_tables(tmp_path, sig):
    """Ctrl-C and SIGTERM (what Slurm and `timeout` send) both stop cleanly with the tables written."""
    out, code, stdout, stderr = _interrupt(tmp_path, sig)
    assert code == 130, stderr[-2000:]
    assert "resume=true" in stdout and "Traceback" not in stderr
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["status"] == "interrupted"
    df = pd.read_csv(out / "results.csv")
    assert 2 <= df["sample_id"].nunique() < 500
    assert not list(out.glob(".tmp-*"))  # no half-written table left behind


# ------------------------------------------------------------------------------------------- user mistakes
@pytest.mark.parametrize(
    "override,needle",
    [("experiment.methods=[nosuchmethod]", "Valid method configs"),
     ("experiment.metrics=[nosuchmetric]", "Valid metric configs"),
     ("method.lambda=9", "allowed range is [0.0, 5.0]"),
     ("method.lamda=1", "Did you mean 'lambda'"),
     ("dataset.n_samples=0", "allowed range"),
     ("batch_size=0", "batch_size=0"),
     ("seed=-1", "seed=-1"),
     ("threads=-2", "threads"),
     ("threads=0", "threads"),
     ("target=bogus", "target=bogus is not allowed"),
     ("resume=maybe", "not a valid bool"),
     ("save_figures=-1", "save_figures=-1"),
     ("experiment.methods=[]", "no methods"),
     ("experiment.benchmarks=[]", "no benchmarks"),
     ("device=cuda:7", "device=cuda:7"),
     ("shard=3/2", "shard"),
     ("model=vit_synth", "frames"),  # the staa experiment's video dataset does not fit an image model
     ("dataset.frames=16", "dataset.frames=8"),  # the hint is a command that works (tested below)
     ("model.hidden_size=8", "shipped trained model")],
)
def test_user_mistakes_get_a_clear_message(tmp_path, override, needle):
    args = [STAA] + ([] if override.startswith(("model=", "model.")) else [TINY])
    p = run(*args, "dataset.n_samples=1", *QUIET, override, f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert p.returncode == 2, p.stderr[-2000:]
    assert needle in p.stderr and "Traceback" not in p.stderr


def test_the_frames_hint_is_a_command_that_works(tmp_path):
    p = run(STAA, "experiment.benchmarks=[{model: hf_timesformer_tiny, dataset: {config: synthetic_video, "
                  "frames: 4}}]", *QUIET, f"hydra.run.dir={tmp_path / 'a'}", check=False)
    assert p.returncode == 2
    hint = p.stderr.split("set ")[-1].split()[0].rstrip(";.")
    assert hint == "dataset.frames=8"
    run(STAA, TINY, hint, "dataset.n_samples=1", *QUIET, f"hydra.run.dir={tmp_path / 'b'}")


@pytest.mark.parametrize("kind", ["file", "unwritable"])
def test_bad_run_folder_is_a_clear_error(tmp_path, kind):
    target = tmp_path / "f"
    if kind == "file":
        target.write_text("x")
    else:
        tmp_path.chmod(0o500)
        target = tmp_path / "sub" / "run"
    try:
        if kind == "unwritable" and os.access(tmp_path, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        p = run(STAA, TINY, *QUIET, f"hydra.run.dir={target}", check=False)
    finally:
        tmp_path.chmod(0o700)
    assert p.returncode == 2 and "hydra.run.dir" in p.stderr and "Traceback" not in p.stderr


def test_unknown_experiment_lists_options(tmp_path):
    p = run("experiment=nosuch", f"hydra.run.dir={tmp_path}", check=False)
    assert p.returncode != 0 and "default" in p.stderr


def test_a_bad_sweep_point_fails_alone(tmp_path):
    """`-m method.layers=99,1`: the bad point records its error, the good one still runs, the exit code says so."""
    p = run("-m", STAA, TINY, "dataset.n_samples=1", "method.layers=99,1", *QUIET,
            f"hydra.sweep.dir={tmp_path}", check=False)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    bad = next(d for d in tmp_path.iterdir() if "layers=99" in d.name)
    good = next(d for d in tmp_path.iterdir() if "layers=1" in d.name and d.is_dir())
    assert "layers=99" in (bad / "error.txt").read_text()
    assert json.loads((bad / "provenance.json").read_text())["status"] == "failed"
    assert (good / "summary.csv").exists()


# --------------------------------------------------------------------------------------- files and folders
def test_figures_and_gallery(tmp_path):
    run(STAA, TINY, "dataset.n_samples=2", "save_figures=1", "gallery=1", "report=false", "threads=1",
        f"hydra.run.dir={tmp_path}")
    pngs = sorted(p.name for p in (tmp_path / "figures").glob("*.png"))
    assert pngs == [f"synthetic_video__hf_timesformer_tiny__{m}__test-00000.png" for m in ("staa", "staa_raw")]
    from PIL import Image

    w, h = Image.open(tmp_path / "figures" / pngs[0]).size
    assert w > 600 and h > 200
    from xaibench.analysis.gallery import read_gallery

    items = read_gallery(tmp_path / "gallery.h5")
    assert len(items) == 1 and set(items[0].methods) == {"staa", "staa_raw"}


def test_file_names_from_data_stay_inside_the_run_folder(tmp_path, monkeypatch):
    """A sample id such as ../../../../x/evil (a Kinetics youtube_id) never escapes the run folder."""
    from omegaconf import OmegaConf

    from xaibench.run import runner as R
    from xaibench.datasets.synthetic import SyntheticClips

    orig = SyntheticClips.__getitem__

    def evil(self, i):
        s = orig(self, i)
        s.sample_id = "../../../../x/evil" if i == 0 else "../../../../x/evil/"
        return s

    monkeypatch.setattr(SyntheticClips, "__getitem__", evil)
    cfg = _cfg({"name": "t", "benchmarks": [{"model": "hf_vit_tiny", "dataset": "synthetic_image"}],
                "methods": ["attention", "rollout"], "metrics": ["map_properties"]}, n_samples=2, save_figures=2)
    out = tmp_path / "deep" / "a" / "b" / "c" / "run"
    R.Runner(cfg, out).run()
    written = [p for p in tmp_path.rglob("*.png")]
    assert len(written) == 4 and all(out in p.parents for p in written)
    assert len({p.name for p in written}) == 4  # two methods, two ids: no figure overwrites another


_cfg = make_cfg


def test_a_method_that_does_not_apply_is_skipped_with_its_reason(tmp_path):
    """A pair found inapplicable in check() or only inside explain() gives one `skipped` row, no crash."""
    from xaibench.run.runner import Runner
    from xaibench.errors import NotApplicable
    from xaibench.methods import METHODS
    from xaibench.methods.base import Method

    class Picky(Method):
        name = "picky_test"

        def explain(self, adapter, x, target):
            raise NotApplicable("needs a CLS token the model does not have")

    if "picky_test" not in METHODS:
        METHODS.register("picky_test")(Picky)
    cfg = _cfg({"name": "t", "benchmarks": [{"model": "hf_vit_tiny", "dataset": "synthetic_image"}],
                "methods": [{"config": "staa_raw", "name": "picky_test", "label": "picky", "enhance": None,
                             "layers": None, "temporal": None}, "staa_raw"], "metrics": ["map_properties"]})
    cfg.experiment.methods[0] = {"config": "control_constant", "name": "picky_test", "label": "picky"}
    summary, status = Runner(cfg, tmp_path / "run").run()
    df = pd.read_csv(tmp_path / "run" / "results.csv")
    skipped = df[df.metric == "skipped"]
    assert status == "complete" and len(skipped) == 1 and skipped.iloc[0]["method"] == "picky"
    assert "CLS token" in skipped.iloc[0]["note"]
    assert set(df[df.metric != "skipped"]["method"]) == {"staa_raw"}


def test_skipped_samples_are_counted_on_the_console_and_in_the_summary(tmp_path, monkeypatch, capsys):
    from xaibench.run.runner import Runner
    from xaibench.datasets.base import SkipSample
    from xaibench.datasets.synthetic import SyntheticClips

    orig = SyntheticClips.__getitem__

    def flaky(self, i):
        if i % 2:
            raise SkipSample("video too short (3 frames)")
        return orig(self, i)

    monkeypatch.setattr(SyntheticClips, "__getitem__", flaky)
    cfg = _cfg({"name": "t", "benchmarks": [{"model": "hf_vit_tiny", "dataset": "synthetic_image"}],
                "methods": ["attention"], "metrics": ["map_properties"]}, n_samples=4, print_summary=True)
    summary, status = Runner(cfg, tmp_path / "run").run()
    text = capsys.readouterr().out
    assert "2 sample(s) skipped" in text and "video too short" in text
    row = summary[summary.metric == "n_skipped_samples"]
    assert len(row) == 1 and row["mean"].iloc[0] == 2


def test_component_configs_from_a_user_config_dir(tmp_path):
    """A user's own method and experiment YAMLs in --config-dir are found like the packaged ones."""
    (tmp_path / "cfg" / "method").mkdir(parents=True)
    (tmp_path / "cfg" / "experiment").mkdir()
    (tmp_path / "cfg" / "method" / "my_rollout.yaml").write_text("name: rollout\nlayers: 1\n")
    (tmp_path / "cfg" / "experiment" / "mine.yaml").write_text(
        "# @package _global_\nexperiment:\n  name: mine\n  benchmarks: [{model: hf_vit_tiny, dataset: "
        "synthetic_image}]\n  methods: [my_rollout, attention]\n  metrics: [map_properties]\n")
    out = tmp_path / "run"
    run("--config-dir", str(tmp_path / "cfg"), "experiment=mine", "dataset.n_samples=1", *QUIET,
        f"hydra.run.dir={out}")
    df = pd.read_csv(out / "results.csv")
    assert set(df.method) == {"my_rollout", "attention"}
    assert json.loads(df[df.method == "my_rollout"]["params"].iloc[0])["layers"] == 1
    run("--config-dir", str(tmp_path / "cfg"), "model=hf_vit_tiny", "dataset=synthetic_image", "method=my_rollout",
        "metric=map_properties", "dataset.n_samples=1", *QUIET, f"hydra.run.dir={tmp_path / 'run2'}")


# ------------------------------------------------------------------------------------------------ packaging
def test_the_wheel_runs_from_an_empty_folder(tmp_path):
    """`pip wheel --no-deps .`, installed elsewhere, runs `xaibench` from an empty folder (configs inside)."""
    wheels, site, empty = tmp_path / "w", tmp_path / "site", tmp_path / "empty"
    empty.mkdir()
    pip = [sys.executable, "-m", "pip", "-q"]
    subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(ROOT)], check=True,
                   timeout=600, capture_output=True)
    whl = next(wheels.glob("xaibench-*.whl"))
    subprocess.run(pip + ["install", "--no-deps", "--target", str(site), str(whl)], check=True, timeout=600,
                   capture_output=True)
    boot = ("import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f)]; "
            f"sys.path.insert(0, {str(site)!r}); import xaibench; "
            f"assert xaibench.__file__.startswith({str(site)!r}), xaibench.__file__; "
            "from xaibench.run.app import main; main()")
    p = subprocess.run([sys.executable, "-c", boot, STAA, TINY, "dataset.n_samples=1", *QUIET], cwd=empty,
                       capture_output=True, text=True, timeout=600, env=dict(os.environ, HYDRA_FULL_ERROR="0"))
    assert p.returncode == 0, p.stderr[-3000:]
    assert list((empty / "outputs" / "staa_synthetic").glob("*/summary.csv"))


# ---------------------------------------------------------------------------- real-data hints and options
def test_real_data_options_work_as_documented(tmp_path):
    """docs/real_data.md's `dataset.root=...` works without Hydra's `+`; an explicit `dataset.frames` that
    does not match the model is refused (no longer silently replaced); a folder given as the gtsegs path is
    accepted when it holds the file and explained when it does not."""
    import numpy as np
    from realdata_fixtures import make_kinetics, write_gtsegs

    kin = make_kinetics(tmp_path / "k400", n_frames=12)
    tiny = ("experiment.benchmarks=[{model: hf_timesformer_tiny, dataset: kinetics400}]",
            "experiment.methods=[attention]", "experiment.metrics=[map_properties]")
    out = tmp_path / "run"
    run(*tiny, f"dataset.root={kin['tree']}", "dataset.split=test", "dataset.label_mode=none", *QUIET,
        f"hydra.run.dir={out}")
    assert len(pd.read_csv(out / "results.csv")) > 0
    p = run(*tiny, f"dataset.root={kin['tree']}", "dataset.split=test", "dataset.frames=16", *QUIET,
            f"hydra.run.dir={tmp_path / 'r2'}", check=False)
    assert p.returncode == 2 and "dataset.frames=16" in p.stderr and "takes 8" in p.stderr

    folder = tmp_path / "seg"
    folder.mkdir()
    rng = np.random.default_rng(0)
    write_gtsegs(folder / "gtsegs_ijcv.mat", [rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)],
                 [np.zeros((40, 50), np.uint8)], ["n01440764_1"])
    from xaibench.datasets import create
    from xaibench.errors import UserError

    assert len(create("imagenet_seg", path=str(folder))) == 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="is a folder without gtsegs_ijcv.mat"):
        create("imagenet_seg", path=str(tmp_path / "empty"))
