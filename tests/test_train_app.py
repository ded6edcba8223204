"""``xaibench-train`` as a Hydra app, run as a user runs it (a subprocess of the installed entry point): user
mistakes are one line and exit 2, ``--help`` lists the typed options, a tiny real training run writes its
weights, sidecar and models.csv row into ``out=`` and nothing else into the current folder (no Hydra
``outputs/<date>``, ``.hydra/`` or log file)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from safetensors.torch import load_file

from xaibench import models as M

_SCRIPT = Path(sys.executable).parent / "xaibench-train"
#: the console script of pyproject.toml's [project.scripts] when installed, else the same main() by module
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "xaibench.tools.train"]


def run(args, cwd, timeout=300):
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    return subprocess.run(COMMAND + list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("args, needle", [
    ([], "missing model=NAME"),                                         # the required option
    (["modle=vit_synth"], "unknown option 'modle'"),                    # a typo: named, with the fix
    (["model=vit_synth", "ship=true", "out=x"], "either out=DIR or ship=true"),
    (["model=vit_synth", "seed=abc"], "seed must be integer"),          # a wrong type (Hydra would say more)
    (["model=vit_synth", "train.steps=0"], "train.steps=0 is out of range"),
    (["model=nosuch_model"], "unknown model config 'nosuch_model'"),     # found inside the Hydra task
    (["-m", "model=vit_synth", "seed=0,1"], "one model per command"),
])
def test_user_mistakes_are_one_line_and_exit_2(tmp_path, args, needle):
    r = run(args, tmp_path)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert len(lines) == 1 and lines[0].startswith("xaibench: error: ") and needle in lines[0], r.stderr
    if "modle" in needle:
        assert "Did you mean model?" in lines[0]
    assert list(tmp_path.iterdir()) == []  # nothing written, no outputs/<date> of Hydra's


def test_help_lists_the_typed_options_and_the_trainable_models(tmp_path):
    r = run(["--help"], tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for key, default in (("model", "[required]"), ("seed", "[0]"), ("train.steps", "[null]"), ("out", "[null]"),
                         ("ship", "[false]")):
        assert any(ln.strip().startswith(f"{key}  {default}") for ln in out.splitlines()), (key, out)
    assert "Trainable models:" in out and "vit_synth" in out and "hf_vit_tiny" not in out
    assert "xaibench-train model=vit_synth train.steps=3000 seed=1 out=my_models/" in out
    assert list(tmp_path.iterdir()) == []


def test_a_tiny_training_run_writes_into_out_and_nothing_else(tmp_path):
    shipped = {p.name: p.stat().st_mtime_ns for p in M.WEIGHTS_DIR.iterdir()}
    r = run(["model=vit_synth", "train.steps=2", "seed=1", "out=my_models/"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    out = tmp_path / "my_models"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my_models"]  # no outputs/, .hydra/, *.log
    assert sorted(p.name for p in out.iterdir()) == ["models.csv", "vit_synth.json", "vit_synth.safetensors"]
    weights = load_file(str(out / "vit_synth.safetensors"))
    assert weights and all(t.isfinite().all() for t in weights.values())
    meta = json.loads((out / "vit_synth.json").read_text())
    assert meta["builder"] == "hf_vit" and meta["train"]["steps"] == 2 and meta["train"]["seed"] == 1
    rows = pd.read_csv(out / "models.csv")
    assert rows["model"].tolist() == ["vit_synth"] and int(rows["steps"][0]) == 2 and int(rows["seed"][0]) == 1
    record = json.loads(r.stdout.strip().splitlines()[-1])  # the record train() prints
    assert record["model"] == "vit_synth" and record["steps"] == 2
    adapter = M.create("trained", path=str(out / "vit_synth.safetensors"))  # usable as model=trained
    assert adapter.name == "vit_synth" and adapter.num_classes == 4
    assert {p.name: p.stat().st_mtime_ns for p in M.WEIGHTS_DIR.iterdir()} == shipped  # the package untouched


def test_the_entry_point_is_the_hydra_app():
    """pyproject's console script is main(), which runs the @hydra.main app on the ConfigStore's typed config."""
    import tomllib

    from omegaconf import OmegaConf

    from xaibench.tools import train as T

    scripts = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["xaibench-train"] == "xaibench.tools.train:main"
    from hydra.core.config_store import ConfigStore

    repo = ConfigStore.instance().repo
    assert f"{T.CONFIG_NAME}.yaml" in repo and f"{T.CONFIG_NAME}_schema.yaml" in repo
    schema = OmegaConf.structured(T.TrainAppConfig)
    assert OmegaConf.is_missing(schema, "model")
    assert OmegaConf.to_container(schema, throw_on_missing=False)["train"] == {"steps": None}
