"""``xaibench-train``: train one of the project's small models on a synthetic benchmark.

    xaibench-train model=timesformer_synth                 # -> outputs/train/timesformer_synth/
    xaibench-train model=vit_synth train.steps=3000 seed=1 out=my_models/
    xaibench-train model=vit_synth ship=true               # replace the weights shipped in the package

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

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .. import datasets as D
from .. import models as M
from ..errors import UserError
from ..run.provenance import git_revision
from ..config import CONF_DIR
from ..run.plan import load, options, user_errors

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


def main():
    import sys

    args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
    bad = [a for a in sys.argv[1:] if "=" not in a]
    with user_errors():
        if bad or "model" not in args:
            raise UserError("usage: xaibench-train model=<name> [seed=N] [train.steps=N] [out=DIR] [ship=true]; "
                            "trainable models are those with a `train` section in conf/model/*.yaml")
        unknown = set(args) - {"model", "seed", "train.steps", "out", "ship"}
        if unknown:
            raise UserError(f"unknown options: {', '.join(sorted(unknown))}; valid: model, seed, train.steps, out, "
                            f"ship")
        try:
            seed = int(args.get("seed", 0))
            steps = int(args["train.steps"]) if "train.steps" in args else None
        except ValueError:
            raise UserError("seed and train.steps must be integers") from None
        ship = args.get("ship", "false").lower()
        if ship not in ("true", "false"):
            raise UserError(f"ship={args['ship']!r} must be true or false")
        if ship == "true":
            if "out" in args:
                raise UserError("give either out=DIR or ship=true (which writes into the package)")
            train(args["model"], seed=seed, steps=steps, out_dir=M.WEIGHTS_DIR,
                  results_csv=CONF_DIR.parent / "results" / "models.csv")
        else:
            train(args["model"], seed=seed, steps=steps, out_dir=Path(args["out"]) if "out" in args else None)


if __name__ == "__main__":
    main()
