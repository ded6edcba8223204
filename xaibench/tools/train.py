"""``xaibench-train``: train one of the project's small models on a synthetic benchmark.

    xaibench-train model=timesformer_synth                 # -> outputs/train/timesformer_synth/
    xaibench-train model=vit_synth train.steps=3000 seed=1 out=my_models/
    xaibench-train model=vit_synth ship=true               # replace the weights shipped in the package
    xaibench-train --help                                  # the options, the trainable models

A Hydra app: its options are the typed :class:`TrainAppConfig` (``model`` required, ``seed``,
``train.steps``, ``out``, ``ship``), registered in Hydra's ConfigStore; the model
configs (and their recipes) are the package's.  Hydra writes nothing of its own:
the run directory is the current folder (no ``outputs/<date>``), without
``.hydra/`` or a log file.  A user mistake (unknown or missing option, bad value,
unknown or untrainable model, ``ship=true`` with ``out=``) is one line and exit
status 2.

The recipe (architecture builder and size, dataset, steps, batch size,
learning rate) is the ``train`` section of ``conf/model/<model>.yaml``.  Training
is deterministic from ``seed``: data order, initialisation and dropout all draw
from seeded generators, and torch runs with deterministic algorithms.  The
weights are written as safetensors with a JSON sidecar (builder, config,
preprocessing, labels, training record) and a ``models.csv`` row into the
output folder ``out`` (default ``outputs/train/<model>``); use the result with
``xaibench model=trained model.path=<out>/<model>.safetensors``.  Only
``ship=true`` writes into the package (``xaibench/models/weights``) and the
repository's ``results/models.csv``, replacing the shipped model.
"""

from __future__ import annotations

import difflib
import json
import math
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from .. import datasets as D
from .. import models as M
from ..config import CONF_DIR, ComponentConfig, build, param
from ..errors import UserError
from ..run.app import read_override
from ..run.plan import load, options, user_errors
from ..run.provenance import git_revision

MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)


def batch_of(ds, idx):
    xs, ys = [], []
    for i in idx:
        x, _, _ = ds.render(int(i), int(i) % ds.num_classes)
        xs.append(x)
        ys.append(int(i) % ds.num_classes)
    return torch.from_numpy(np.stack(xs)), torch.tensor(ys)


@torch.no_grad()
def accuracy(adapter, ds, batch_size=64):
    correct = 0
    for i in range(0, len(ds), batch_size):
        idx = range(i, min(i + batch_size, len(ds)))
        x, y = torch.stack([ds[j].x for j in idx]), torch.tensor([ds[j].label for j in idx])
        correct += int((adapter.predict(x, batch_size).argmax(-1) == y).sum())
    return correct / len(ds)


def train(model_name: str, *, seed: int = 0, steps: int | None = None, out_dir: Path | None = None,
          results_csv: Path | bool | None = None, overrides: dict | None = None) -> dict:
    """Train ``model_name``'s recipe; write ``<out_dir>/<model>.safetensors`` + ``.json`` and a row of
    ``results_csv`` (default ``<out_dir>/models.csv``; ``False``: none).  ``out_dir`` defaults to
    ``outputs/train/<model>``."""
    cfg = load("model", model_name)
    if "train" not in cfg:
        raise UserError(f"conf/model/{model_name}.yaml has no `train` recipe; trainable models: "
                        + ", ".join(n for n in options("model") if "train" in load("model", n)))
    rec = dict(cfg["train"])
    rec.update(overrides or {})
    if steps is not None:
        rec["steps"] = int(steps)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    dparams = dict(rec.get("dataset_params", {}))
    train_ds = D.create(rec["dataset"], split="train", seed=0, **dparams)
    val_ds = D.create(rec["dataset"], split="val", seed=0, **dparams)
    test_ds = D.create(rec["dataset"], split="test", seed=0, **dparams)
    arch_cfg = dict(rec["config"])
    arch_cfg["num_labels"] = train_ds.num_classes
    adapter = M.build(rec["builder"], seed=seed, name=model_name, mean=MEAN, std=STD, **arch_cfg)
    model = adapter.model
    for p in model.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(model.parameters(), lr=rec["lr"], weight_decay=rec.get("weight_decay", 0.05))
    total, warm, bs = rec["steps"], max(1, rec["steps"] // 20), rec["batch_size"]
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))))
    rng = np.random.default_rng(seed)
    t0 = time.time()
    model.train()
    bar = tqdm(range(total), desc=f"train {model_name}", mininterval=5)
    for step in bar:
        idx = rng.integers(0, len(train_ds), size=bs)
        x, y = batch_of(train_ds, idx)
        logits = adapter._run(adapter.normalise(x))
        loss = F.cross_entropy(logits, y, label_smoothing=0.05)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    wall = time.time() - t0
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    val_acc, test_acc = accuracy(adapter, val_ds), accuracy(adapter, test_ds)

    out_dir = Path(out_dir or Path("outputs") / "train" / model_name)
    out_dir.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    wpath = out_dir / f"{model_name}.safetensors"
    save_file(state, str(wpath))
    record = {
        "model": model_name, "builder": rec["builder"], "dataset": rec["dataset"], "seed": seed,
        "steps": total, "batch_size": bs, "lr": rec["lr"], "wall_time_s": round(wall, 1),
        "val_acc": round(val_acc, 4), "test_acc": round(test_acc, 4),
        "params": sum(p.numel() for p in model.parameters()),
        "size_mb": round(wpath.stat().st_size / 2**20, 2), "git_rev": git_revision(),
        "torch": torch.__version__,
    }
    meta = {"builder": rec["builder"], "config": arch_cfg, "mean": MEAN, "std": STD, "labels": train_ds.labels,
            "dataset": rec["dataset"], "dataset_params": dparams, "train": record}
    (out_dir / f"{model_name}.json").write_text(json.dumps(meta, indent=2))
    if results_csv is not False:
        import pandas as pd

        path = Path(results_csv) if results_csv not in (None, True) else out_dir / "models.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        df = pd.read_csv(path) if path.exists() else pd.DataFrame()
        if len(df):
            df = df[df["model"] != model_name]
        pd.concat([df, pd.DataFrame([record])]).to_csv(path, index=False)
    print(json.dumps(record))
    return record


# ---------------------------------------------------------------------------------------------- the command
@dataclass
class TrainSection(ComponentConfig):
    """``train.*``: changes to the model's recipe (the ``train`` section of ``conf/model/<model>.yaml``)."""

    steps: Optional[int] = param(None, range=(1, 10 ** 9), help="optimiser steps (null: the recipe's steps)")


@dataclass
class TrainAppConfig(ComponentConfig):
    """The options of ``xaibench-train`` (the module docstring)."""

    model: str = param(help="the model config to train: one of conf/model/*.yaml with a `train` recipe")
    seed: int = param(0, range=(0, 2 ** 32 - 1), help="seeds data order, initialisation and dropout")
    train: TrainSection = param(default_factory=TrainSection, help="changes to the recipe")
    out: Optional[str] = param(None, help="output folder (null: outputs/train/<model>)")
    ship: bool = param(False, help="write into the package's weights and results/models.csv (not with out=)")


#: the primary config's name in Hydra's ConfigStore (``<name>_schema``: the typed options it extends)
CONFIG_NAME = "xaibench_train"
#: what Hydra itself would write: nothing (run directory = the current folder, no .hydra/, no log file)
HYDRA_SETTINGS = {"run": {"dir": "."}, "output_subdir": None}
#: Hydra's own flags that take a value (the next argument); ``--info`` takes one optionally
_VALUE_FLAGS = ("--config-dir", "-cd", "--config-name", "-cn", "--config-path", "-cp", "--experimental-rerun",
                "--cfg", "-c", "--package", "-p")
_INFO_FLAGS, _INFO_VALUES = ("--info", "-i"), ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")
_USAGE = "usage: xaibench-train model=NAME [seed=N] [train.steps=N] [out=DIR | ship=true]; see xaibench-train --help"


def option_keys():
    """The user-facing option names (``train.steps`` for the recipe section's fields)."""
    return [k for k in TrainAppConfig.keys() if k != "train"] + [f"train.{k}" for k in TrainSection.keys()]


def register() -> None:
    """``xaibench_train`` in Hydra's ConfigStore: the typed options plus Hydra's own settings (no output
    folder, no logging configuration)."""
    cs = ConfigStore.instance()
    cs.store(name=f"{CONFIG_NAME}_schema", node=TrainAppConfig)
    cs.store(name=CONFIG_NAME, node={
        "defaults": [f"{CONFIG_NAME}_schema", {"override hydra/job_logging": "none"},
                     {"override hydra/hydra_logging": "none"}, "_self_"],
        "hydra": HYDRA_SETTINGS})


register()


def trainable_models():
    return [n for n in options("model") if "train" in load("model", n)]


def options_from(values: dict) -> TrainAppConfig:
    """The checked options from user-facing ``values`` (``train`` a dict of the section's keys): a missing
    ``model``, a wrong type, an out-of-range value or ``ship=true`` with ``out=`` is a :class:`UserError`."""
    values = dict(values)
    if values.get("model") in (None, "???"):
        raise UserError("missing model=NAME: which model to train (trainable: "
                        f"{', '.join(trainable_models())}); {_USAGE}")
    section = build(TrainSection, dict(values.pop("train", None) or {}), where="train")
    cfg = build(TrainAppConfig, values, where="")
    cfg.train = section
    if cfg.ship and cfg.out is not None:
        raise UserError("give either out=DIR or ship=true (which writes into the package), not both")
    return cfg


def check_command_line(args) -> TrainAppConfig:
    """Every option of the command line checked before Hydra composes (Hydra would report a mistake with
    several lines, or a traceback): Hydra's grammar, known keys, types and ranges, the required ``model``.
    Options of Hydra itself (``hydra.*``, ``hydra/...``) and its flags are left to Hydra."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    keys = option_keys()
    values: dict = {}
    skip = False
    for i, a in enumerate(args):
        if skip:
            skip = False
            continue
        if a in ("-m", "--multirun"):
            raise UserError("xaibench-train trains one model per command (no -m sweeps); run it once per setting")
        if a in _VALUE_FLAGS or (a in _INFO_FLAGS and i + 1 < len(args) and args[i + 1] in _INFO_VALUES):
            skip = True
            continue
        if a.startswith("-"):
            continue
        o = read_override(parser, a, "option", f"Options are KEY=VALUE; {_USAGE}")
        key = o.key_or_group
        if key == "hydra" or key.startswith(("hydra.", "hydra/")):
            continue
        if key not in keys:
            close = difflib.get_close_matches(key, keys, n=1)
            hint = f" Did you mean {close[0]}?" if close else ""
            raise UserError(f"unknown option {key!r} ({a}).{hint} Valid options: {', '.join(keys)}")
        if o.is_add() or o.is_delete():
            raise UserError(f"{a}: write {key}=VALUE ({key} is an option of xaibench-train; no + or ~)")
        if o.is_sweep_override():
            raise UserError(f"{a} is a sweep: xaibench-train trains one model per command; give one value")
        value = o.value()
        spec = (TrainSection if key.startswith("train.") else TrainAppConfig).spec(key.split(".")[-1])
        if spec.type in (str, Optional[str]) and isinstance(value, (int, float, bool)):
            value = o.get_value_element_as_str()  # out=123 is the folder "123", as Hydra reads it
        if key.startswith("train."):
            values.setdefault("train", {})[key[len("train."):]] = value
        else:
            values[key] = value
    return options_from(values)


@contextmanager
def packaged_configs():
    """The model configs for :func:`train` while the app runs.  The recipes are composed from the package's
    configs (:func:`xaibench.run.plan.load`), with Hydra's global state, which the running app holds with its
    own search path (the ConfigStore only: the package's ``model/`` group there would make ``model=NAME`` a
    group choice instead of this app's option).  The app's state is set aside meanwhile and restored after."""
    from hydra.core.global_hydra import GlobalHydra

    gh = GlobalHydra.instance()
    held = gh.hydra
    gh.clear()
    try:
        yield
    finally:
        gh.clear()
        if held is not None:
            gh.initialize(held)


@hydra.main(version_base=None, config_path=None, config_name=CONFIG_NAME)
def app(cfg) -> None:
    """The Hydra task: train with the composed options."""
    with user_errors(), packaged_configs():
        opts = options_from(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False))
        steps = opts.train.steps
        if opts.ship:
            train(opts.model, seed=opts.seed, steps=steps, out_dir=M.WEIGHTS_DIR,
                  results_csv=CONF_DIR.parent / "results" / "models.csv")
        else:
            train(opts.model, seed=opts.seed, steps=steps, out_dir=Path(opts.out) if opts.out is not None else None)


def help_text() -> str:
    import textwrap

    from ..run.app import version_text

    summary = __doc__.split("\n\n")[0].split(": ", 1)[1].strip()  # "train one of the project's ..."
    lines = [f"xaibench-train: {summary} ({version_text()})", "",
             "usage: xaibench-train model=NAME [KEY=VALUE ...]   (a Hydra app; --hydra-help for Hydra's own options)",
             "", "Options (KEY=VALUE; defaults in brackets):"]
    specs = [(s.key, s) for s in TrainAppConfig.specs() if s.key != "train"]
    specs[2:2] = [(f"train.{s.key}", s) for s in TrainSection.specs()]  # after seed, as in the config
    for key, s in specs:
        default = "required" if s.required else ("null" if s.default is None else
                                                 str(s.default).lower() if isinstance(s.default, bool)
                                                 else str(s.default))
        lines.append(textwrap.fill(f"  {key}  [{default}]  {s.allowed()}: {s.help}", 110, subsequent_indent="      "))
    lines += ["", textwrap.fill(f"Trainable models: {', '.join(trainable_models())} (the `train` section of "
                                f"conf/model/<model>.yaml is the recipe).", 110),
              "", "Examples:", *[ln for ln in __doc__.splitlines() if ln.startswith("    xaibench-train")], ""]
    return "\n".join(lines)


def main():
    """The ``xaibench-train`` entry point: ``--help``, the checks of :func:`check_command_line`, then the
    Hydra app."""
    args = sys.argv[1:]
    with user_errors():
        if "--help" in args or "-h" in args:
            print(help_text())
            return
        check_command_line(args)
    try:
        app()
    except SystemExit as e:
        if e.code == 1:  # Hydra's own report of a mistake in a hydra.* option (it printed the message)
            print("xaibench: error: Hydra could not compose the command line (see above); "
                  "xaibench-train --help lists the options", file=sys.stderr)
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
