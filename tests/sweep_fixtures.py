"""Hand-made run folders of sweeps, as the runner and the app write them (per-sample rows, the tables, the
task overrides, provenance with its fingerprint, run_config.json), for the merge and report tests."""

import copy
import json
from pathlib import Path

import numpy as np
import yaml

from xaibench.analysis.results import write_tables

EXP = "toy"
CONTROLS = {"control_gt": 1.0, "control_random": None, "control_gt_inverted": 0.0, "control_constant": 0.0}
STAA = "staa"
FP = {"format": 2,
      "config": {"options": {"seed": 0}, "experiment": EXP,
                 "benchmarks": [["vit", {}, "synthetic_image", {"n_samples": 16}],
                                ["swin", {}, "synthetic_image", {"n_samples": 16}]]},
      "code": {"git_revision": "a" * 40, "dirty": False, "source_sha256": "c" * 64,
               "files": {"xaibench/metrics/localisation.py": "1" * 64, "xaibench/methods/staa.py": "2" * 64}},
      "versions": {"python": "3.11.7", "torch": "2.14.1", "timm": "1.0.31"},
      "weights": {"vit": "d" * 64, "swin": "e" * 64},
      "data": {"synthetic_image|vit": {"name": "synthetic_image", "n": 16, "sample_ids_sha256": "f" * 64},
               "synthetic_image|swin": {"name": "synthetic_image", "n": 16, "sample_ids_sha256": "f" * 64}}}


def staa_params(lam=None, layers=1) -> str:
    d = {"enhance": lam is not None, "layers": layers}
    if lam is not None:
        d["lambda"] = lam
    return json.dumps(d, sort_keys=True)


def arm_rows(method, params, values, model="vit", metric="iou", kind="quality", hib=True, dataset="synthetic_image"):
    return [dict(experiment=EXP, dataset=dataset, model=model, method=method, params=params,
                 sample_id=f"s{i:02d}", metric=metric, value=float(v), higher_is_better=hib, metric_kind=kind,
                 metric_params="{}", seed=0, note="") for i, v in enumerate(values)]


def control_rows(n=16, model="vit", metric="iou", seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for name, level in CONTROLS.items():
        vals = rng.uniform(0.1, 0.3, n) if level is None else np.full(n, level)
        rows += arm_rows(name, json.dumps({"seed": 0}) if name == "control_random" else "{}", vals, model, metric)
    return rows


def noisy(level, n=16, seed=0, spread=0.02):
    return level + np.random.default_rng(seed).normal(0, spread, n)


def make_point(d: Path, overrides, rows, status="complete", fingerprint=None, error=None) -> Path:
    """A run folder: per-sample rows and the tables (write_tables), ``.hydra/overrides.yaml``,
    ``provenance.json`` (status, seed, config, fingerprint without the per-file hashes) and
    ``run_config.json`` (the whole fingerprint)."""
    d.mkdir(parents=True)
    (d / ".hydra").mkdir()
    (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
    fp = copy.deepcopy(FP if fingerprint is None else fingerprint)
    if rows:
        write_tables(rows, d)
        (d / "rows.jsonl").write_text(json.dumps({"kind": "sample", "key": ["x"], "rows": rows}) + "\n")
        (d / "run_config.json").write_text(json.dumps(fp))
    short = dict(fp, code={k: v for k, v in fp["code"].items() if k != "files"})
    prov = {"status": status, "seed": 0, "config": {"seed": 0, "alpha": 0.05, "experiment": {"name": EXP}},
            "fingerprint": short}
    if error:
        prov["error"] = error
        (d / "error.txt").write_text(error + "\n")
    (d / "provenance.json").write_text(json.dumps(prov))
    return d


def lambda_sweep(root: Path, scoped=True, n=16, shared_values=None):
    """``-m method.lambda=0,1,2`` over an experiment with staa_raw, staa, rollout and the four controls on one
    benchmark (vit).  staa at lambda 2 is clearly the best (0.9), then lambda 1 (0.6), rollout (0.5), lambda 0
    and staa_raw (0.3).  ``scoped``: points 1 and 2 run only staa (the runner's sweep scope); otherwise every
    point runs every method (``shared_values``: a function giving the values of a shared arm at a point)."""
    levels = {0: 0.3, 1: 0.6, 2: 0.9}
    for i, lam in enumerate((0, 1, 2)):
        rows = arm_rows(STAA, staa_params(float(lam)), noisy(levels[lam], n, seed=10 + lam))
        if i == 0 or not scoped:
            shift = shared_values(i) if shared_values else 0.0
            rows += arm_rows("staa_raw", staa_params(None), noisy(0.3, n, seed=20) + shift)
            rows += arm_rows("rollout", json.dumps({"layers": None}), noisy(0.5, n, seed=21) + shift)
            rows += control_rows(n)
            rows += arm_rows(STAA, staa_params(float(lam)), np.full(n, 0.01 * (lam + 1)), metric="explain_time_s",
                             kind="cost", hib=False)
        make_point(root / f"{i}_method.lambda={lam}", [f"method.lambda={lam}"], rows)
    return root
