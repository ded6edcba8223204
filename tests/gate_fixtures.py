"""Run folders for the tests of the regression gate (tests/test_gate.py).

One real, small run of ``xaibench`` (the staa_synthetic experiment on the tiny TimeSformer, two samples) is
made once per test session; each test copies it and edits the copy the way a regression, a resumed run, an
interrupted run or a hand edit would, keeping the files consistent with each other where the test says so
(per-sample values, summary means and n, provenance's row count)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
XAIBENCH = [sys.executable, "-c", "from xaibench.run.app import main; main()"]
STAA = "experiment=staa_synthetic"
TINY = "experiment.benchmarks=[{model: hf_timesformer_tiny, dataset: synthetic_video}]"
QUIET = ["report=false", "threads=1", "gallery=0"]
KEYS = ["experiment", "dataset", "model", "method", "params", "metric"]
N_SAMPLES = 2
#: the arm of the staa method (not staa_raw) in the run made here
STAA_ARM = "staa"


def xaibench_run(out: Path, *overrides: str) -> Path:
    """Run the small experiment into ``out`` (a new folder) and return it."""
    env = dict(os.environ, HYDRA_FULL_ERROR="0")
    p = subprocess.run(XAIBENCH + [STAA, TINY, f"dataset.n_samples={N_SAMPLES}", *QUIET, *overrides,
                                   f"hydra.run.dir={out}"], capture_output=True, text=True, cwd=ROOT, env=env,
                       timeout=900)
    if p.returncode != 0:
        raise AssertionError(f"xaibench exit {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return out


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ----------------------------------------------------------------------------- reading and writing one folder

def samples(folder: Path) -> pd.DataFrame:
    return pd.read_parquet(folder / "results.parquet")


def summary(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "summary.csv", keep_default_na=False, na_values=[""], dtype={"params": str})


def provenance(folder: Path) -> dict:
    return json.loads((folder / "provenance.json").read_text())


def write_provenance(folder: Path, prov: dict):
    (folder / "provenance.json").write_text(json.dumps(prov, indent=1))


def write_samples(folder: Path, df: pd.DataFrame, resummarise: bool = True):
    """Write the per-sample rows to results.parquet and results.csv; with ``resummarise`` also the summary's
    mean, std and n of every key (computed here: mean and count of the non-NaN values) and provenance's n_rows,
    so that the folder stays consistent."""
    df = df.reset_index(drop=True)
    df.to_parquet(folder / "results.parquet", index=False)
    df.to_csv(folder / "results.csv", index=False)
    if not resummarise:
        return
    per = df[df["sample_id"] != "__aggregate__"].groupby(KEYS, sort=False)["value"].agg(["mean", "std", "count"])
    s = summary(folder)
    keyed = s.set_index(KEYS)
    for key, row in per.iterrows():
        if key in keyed.index:
            keyed.loc[key, ["mean", "std", "n"]] = [row["mean"], row["std"], row["count"]]
    keyed = keyed[keyed.index.isin(per.index)]
    keyed.reset_index().to_csv(folder / "summary.csv", index=False)
    prov = provenance(folder)
    prov["n_rows"] = int(len(df))
    write_provenance(folder, prov)


def edit_values(folder: Path, fn, **where) -> pd.DataFrame:
    """Apply ``fn`` to the values of the per-sample rows matching ``where`` (column=value, or a list of
    values), keeping summary.csv consistent; returns the new per-sample frame."""
    df = samples(folder)
    mask = _mask(df, where)
    assert mask.any(), f"no row matches {where}"
    df.loc[mask, "value"] = fn(df.loc[mask, "value"].to_numpy(float))
    write_samples(folder, df)
    return df


def _mask(df: pd.DataFrame, where: dict):
    mask = np.ones(len(df), bool)
    for col, v in where.items():
        mask &= df[col].isin(v if isinstance(v, (list, tuple)) else [v]).to_numpy()
    return mask


def read_maps(folder: Path) -> dict:
    from xaibench.analysis.maps import read_maps as read

    return read(folder)


def write_maps(folder: Path, maps: dict):
    from xaibench.analysis.maps import write_maps as write

    write(maps.items(), folder)


def set_params(folder: Path, method: str, **changes):
    """Change parameters of one arm everywhere the gate reads them (per-sample rows, summary, maps.npz)."""
    df = samples(folder)
    old = df.loc[df["method"] == method, "params"].iloc[0]
    p = json.loads(old)
    p.update(changes)
    new = json.dumps(p, sort_keys=True)
    df.loc[df["params"] == old, "params"] = new
    write_samples(folder, df, resummarise=False)
    s = summary(folder)
    s.loc[s["params"] == old, "params"] = new
    s.to_csv(folder / "summary.csv", index=False)
    m = read_maps(folder)
    write_maps(folder, {(k[0], k[1], k[2], new if k[3] == old else k[3], k[4]): v for k, v in m.items()})
    return old, new
