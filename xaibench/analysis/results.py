"""Tidy result tables.

Per-sample rows (``results.parquet`` / ``results.csv``): one row per
sample x model x method x metric, columns :data:`COLUMNS`.  Aggregate rows of
dataset-level metrics carry ``sample_id = "__aggregate__"``; a (model, method)
pair that could not run carries ``metric = "skipped"`` and the reason in
``note``.

Tables derived from them by :func:`write_tables` (statistics in
:mod:`xaibench.analysis.stats`), each written atomically (:mod:`xaibench.io`):

* ``summary.csv`` (:func:`summarise`): one row per experiment x dataset x model x
  method x params x metric with ``mean, std, n, higher_is_better, n_undefined,
  ci_low, ci_high, kind, valid, best``;
* ``validity.csv``: per benchmark x metric, the sanity checks against the control
  methods and a ``valid`` / ``invalid`` / ``untestable`` verdict;
* ``comparisons.csv``: paired tests between every two methods, Holm-corrected;
* ``ranking.csv``: mean rank of every method and the Friedman test.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, Iterable, List

import numpy as np
import pandas as pd

from ..io import atomic_to_csv, atomic_to_parquet

from .schema import (AGGREGATE, COLUMNS, KEYS, SUMMARY_COLUMNS, TABLES, Output, legacy_reductions,  # noqa: F401
                     metric_kinds, reduce_state)


def _params_text(p) -> str:
    """``params`` as text: JSON strings as they are, None/NaN as '', anything else as sorted JSON."""
    if isinstance(p, str):
        return p
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return ""
    return json.dumps(p, sort_keys=True, default=str)


def to_frame(rows: Iterable[dict]) -> pd.DataFrame:
    df = pd.DataFrame(list(rows))
    for c in COLUMNS:
        if c not in df:
            df[c] = None
    df = df[COLUMNS].copy()
    df["value"] = pd.to_numeric(df["value"], errors="coerce").astype(float)
    df["params"] = df["params"].map(_params_text).astype(object)
    df["metric_kind"] = metric_kinds(df).where(df["metric"] != "skipped", None)
    return df


def _n_from_note(note) -> float:
    s = str(note)
    return int(s[2:]) if s.startswith("n=") and s[2:].isdigit() else np.nan


def _summary_stats(df: pd.DataFrame, seed: int, level: float) -> pd.DataFrame:
    """Mean, std, n, n_undefined and bootstrap interval per key; an aggregate row replaces its key's values."""
    from .stats import bootstrap_cis

    d = df[df["metric"] != "skipped"].copy()
    d["params"] = d["params"].map(_params_text)
    d["metric_kind"] = metric_kinds(d)
    per, agg = d[d["sample_id"] != AGGREGATE], d[d["sample_id"] == AGGREGATE]
    g = per.groupby(KEYS, sort=False, dropna=False)
    out = g["value"].agg(mean="mean", std="std", n="count").reset_index()
    out["higher_is_better"] = g["higher_is_better"].first().values
    out["metric_kind"] = g["metric_kind"].first().values
    out["n_undefined"] = g.size().values - out["n"].values
    out["n"] = out["n"].astype(float)  # an aggregate without its count gives NaN
    out["ci_low"], out["ci_high"] = bootstrap_cis([v.to_numpy() for _, v in g["value"]], level=level, seed=seed)
    if len(agg):
        a = agg.drop_duplicates(KEYS, keep="last")
        a = pd.DataFrame(dict({k: a[k].values for k in KEYS}, mean=a["value"].values, std=np.nan,
                              n=[_n_from_note(x) for x in a["note"]], higher_is_better=a["higher_is_better"].values,
                              metric_kind=a["metric_kind"].values, n_undefined=0, ci_low=np.nan, ci_high=np.nan))
        pos = {k: i for i, k in enumerate(_key(out))}
        at = [pos.get(k, -1) for k in _key(a)]
        replace = [i for i in at if i >= 0]
        cols = ["mean", "std", "n", "ci_low", "ci_high"]
        out.loc[replace, cols] = a.loc[[i >= 0 for i in at], cols].values
        out = pd.concat([out, a[[i < 0 for i in at]]], ignore_index=True)
    out["n"] = out["n"].astype("Int64")
    out["n_undefined"] = out["n_undefined"].astype(int)
    return out


def _key(f: pd.DataFrame) -> List[str]:
    return ["\x1f".join(map(str, t)) for t in zip(*(f[k] for k in KEYS))]


def tables(df: pd.DataFrame, seed: int = 0, level: float = 0.95, alpha: float = 0.05) -> Dict[str, pd.DataFrame]:
    """All derived tables of a per-sample frame: ``{"summary", "validity", "comparisons", "ranking"}``."""
    from . import stats

    validity, comparisons = stats.validity(df, alpha=alpha), stats.comparisons(df, alpha=alpha)
    return dict(summary=_summary(df, seed, level, alpha, validity, comparisons), validity=validity,
                comparisons=comparisons, ranking=stats.ranking(df))


def summarise(df: pd.DataFrame, seed: int = 0, level: float = 0.95, alpha: float = 0.05) -> pd.DataFrame:
    """One row per key (:data:`KEYS`), columns :data:`SUMMARY_COLUMNS`.

    * ``mean, std, n``: of the per-sample values, NaN values left out; where a
      dataset-level aggregate row exists (``sample_id == __aggregate__``) its
      value is the mean, std is NaN and n is the number of samples it was
      computed over (its ``note``, ``n=<count>``); ``skipped`` rows are left out;
    * ``n_undefined``: per-sample values that are NaN (left out of mean and n);
    * ``ci_low, ci_high``: ``level`` percentile bootstrap interval of the mean
      (:func:`xaibench.analysis.stats.bootstrap_ci`, ``seed``); NaN for aggregate
      rows and for fewer than 2 values;
    * ``kind``: ``control`` for ``control_*`` methods, else ``method``;
    * ``valid``: True / False / NA (untestable) from
      :func:`xaibench.analysis.stats.validity` of the key's benchmark and metric;
    * ``best``: ``best`` / ``tied`` / '' from :func:`xaibench.analysis.stats.mark_best`
      (the paired comparisons, Holm-corrected at ``alpha``).
    """
    from . import stats

    return _summary(df, seed, level, alpha, stats.validity(df, alpha=alpha), stats.comparisons(df, alpha=alpha))


def _summary(df, seed, level, alpha, validity, comparisons) -> pd.DataFrame:
    from . import stats

    s = _summary_stats(df, seed, level)
    s["kind"] = ["control" if stats.is_control(m) else "method" for m in s["method"]]
    verdict = {tuple(map(str, r[:4])): r[4] for r in validity[stats.FAMILY + ["verdict"]].itertuples(index=False)}
    # valid / invalid / undetermined (text); empty for kinds that are never judged (descriptive, sanity, cost)
    s["valid"] = pd.array([verdict.get(tuple(map(str, r))) for r in s[stats.FAMILY].itertuples(index=False)],
                          dtype=object)
    marks = stats.marks(s, comparisons, validity, alpha=alpha)  # best / tied, effect to the best, n_needed
    for c in marks:
        s[c] = marks[c]
    return s[SUMMARY_COLUMNS + [c for c in stats.MARK_COLUMNS if c not in SUMMARY_COLUMNS]]


def write_tables(rows: List[dict], out_dir: Path, seed: int = 0, alpha: float = 0.05) -> pd.DataFrame:
    """Write ``results.parquet``, ``results.csv`` and the tables of :func:`tables` (``<name>.csv``) into
    ``out_dir``, each atomically; return the summary.  The per-sample files are written first."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    df = to_frame(rows)
    atomic_to_parquet(df, out_dir / "results.parquet", index=False)
    atomic_to_csv(df, out_dir / "results.csv", index=False)
    t = tables(df, seed=seed, alpha=alpha)
    for name in TABLES:
        atomic_to_csv(t[name], out_dir / f"{name}.csv", index=False)
    return t["summary"]


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


def aggregate_rows(hidden_items, experiment: str, seed: int) -> List[dict]:
    """Dataset-level rows (``sample_id = __aggregate__``) from the per-sample hidden state of metrics with a
    declared dataset-level reduction, as journalled in ``rows.jsonl``: ``[key, state]`` or
    ``[key, state, declared]`` items, key = (dataset, model, method, metric label, params, metric params,
    metric registry name), ``declared`` = :func:`xaibench.analysis.schema.declared_reductions` of the metric.
    Pure: the reduction is computed from the declaration recorded with the state (no metric is imported), so
    ``xaibench-merge`` recombines shards the same way."""
    groups: Dict[tuple, list] = {}
    declared_of: Dict[tuple, dict] = {}
    for item in hidden_items:
        key, values = tuple(item[0]), item[1]
        groups.setdefault(key, []).append(values)
        if len(item) > 2 and item[2]:
            declared_of[key] = item[2]
    rows = []
    for key, values in groups.items():
        dlabel, mlabel, method, _mlab, params, mp, reg = key[:7]
        declared = declared_of.get(key) or legacy_reductions(reg)
        for name, value in reduce_state(declared, values).items():
            out = Output.from_dict(declared[name])
            rows.append(dict(experiment=experiment, dataset=dlabel, model=mlabel, method=method, params=params,
                             sample_id=AGGREGATE, metric=name, value=float(value), metric_params=mp, seed=seed,
                             note=f"n={len(values)}", **out.row_fields()))
    return rows
