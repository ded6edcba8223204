"""Tidy result tables.

Per-sample rows (``results.parquet`` / ``results.csv``): one row per
sample x model x method x metric, columns :data:`COLUMNS`.  Aggregate rows of
dataset-level metrics carry ``sample_id = "__aggregate__"``; a (model, method)
pair that could not run carries ``metric = "skipped"`` and the reason in
``note``.

``summary.csv``: one row per experiment x dataset x model x method x params x
metric with ``mean, std, n, higher_is_better`` (NaN values are left out of the
mean and of ``n``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, List

import numpy as np
import pandas as pd

COLUMNS = ["experiment", "dataset", "model", "method", "params", "sample_id", "metric", "value",
           "higher_is_better", "metric_params", "label", "target", "correct", "seed", "note"]
KEYS = ["experiment", "dataset", "model", "method", "params", "metric"]
AGGREGATE = "__aggregate__"


def to_frame(rows: Iterable[dict]) -> pd.DataFrame:
    df = pd.DataFrame(list(rows))
    for c in COLUMNS:
        if c not in df:
            df[c] = None
    df = df[COLUMNS]
    df["value"] = pd.to_numeric(df["value"], errors="coerce").astype(float)
    return df


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """Per key: mean, std and n of the per-sample values; where a dataset-level
    aggregate row exists (``sample_id == __aggregate__``) its value is the mean,
    std is NaN and n is the number of samples it was computed over."""
    d = df[df["metric"] != "skipped"]
    if d.empty:
        return pd.DataFrame(columns=KEYS + ["mean", "std", "n", "higher_is_better"])
    is_agg = d["sample_id"] == AGGREGATE
    per = d[~is_agg]
    g = per.groupby(KEYS, sort=False, dropna=False)
    out = g["value"].agg(mean="mean", std="std", n="count").reset_index()
    out["higher_is_better"] = g["higher_is_better"].first().values
    agg = d[is_agg]
    if len(agg):
        a = agg[KEYS + ["value", "higher_is_better", "note"]].copy()
        a["n"] = [int(str(n)[2:]) if str(n).startswith("n=") else np.nan for n in a["note"]]
        a = a.rename(columns={"value": "mean"}).drop(columns="note")
        a["std"] = np.nan
        keys = set(map(tuple, a[KEYS].astype(str).values))
        out = out[[tuple(r) not in keys for r in out[KEYS].astype(str).values]]
        out = pd.concat([out, a[out.columns]], ignore_index=True)
    return out


def write_tables(rows: List[dict], out_dir: Path) -> pd.DataFrame:
    out_dir.mkdir(parents=True, exist_ok=True)
    df = to_frame(rows)
    df.to_parquet(out_dir / "results.parquet", index=False)
    df.to_csv(out_dir / "results.csv", index=False)
    summary = summarise(df)
    summary.to_csv(out_dir / "summary.csv", index=False)
    return summary


def format_summary(summary: pd.DataFrame) -> str:
    if summary.empty:
        return "(no results)"
    s = summary.copy()
    s["value"] = [
        f"{m:.4f} ± {sd:.4f}" if np.isfinite(sd) else f"{m:.4f}" for m, sd in zip(s["mean"], s["std"].fillna(np.nan))
    ]
    s["metric"] = [f"{m} {'↑' if h else '↓'}" for m, h in zip(s["metric"], s["higher_is_better"])]
    s["params"] = s["params"].map(_short_params)
    pivot = s.pivot_table(index=["dataset", "model", "method", "params"], columns="metric", values="value",
                          aggfunc="first", sort=False)
    with pd.option_context("display.width", 250, "display.max_columns", 50, "display.max_colwidth", 40):
        return pivot.to_string()


def _short_params(p: str) -> str:
    try:
        d = json.loads(p)
    except Exception:
        return str(p)
    return ",".join(f"{k}={v}" for k, v in d.items()) or "-"
