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
    d = df[df["metric"] != "skipped"]
    if d.empty:
        return pd.DataFrame(columns=KEYS + ["mean", "std", "n", "higher_is_better"])
    g = d.groupby(KEYS, sort=False, dropna=False)
    out = g["value"].agg(mean="mean", std="std", n="count").reset_index()
    hib = g["higher_is_better"].first().reset_index(drop=True)
    out["higher_is_better"] = hib.values
    agg = d[d["sample_id"] == AGGREGATE].set_index(KEYS)
    if len(agg):  # aggregate metrics: n = number of samples the statistic was computed over
        nmap = {tuple(k): v for k, v in zip(agg.index, agg["note"].fillna(""))}
        for i, row in out.iterrows():
            note = nmap.get(tuple(row[k] for k in KEYS))
            if note and note.startswith("n="):
                out.at[i, "n"] = int(note[2:])
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
