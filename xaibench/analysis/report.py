"""``report.html``: one self-contained page per run folder or multirun folder.

    xaibench-report RUN_DIR            # writes RUN_DIR/report.html
    xaibench-report MULTIRUN_DIR       # a sweep: its run folders merged (xaibench.analysis.merge)

The page is rendered with jinja2 from ``templates/report.html.j2``; plots are
drawn with matplotlib (Agg, no display) and every image is embedded as a
``data:`` URI, the CSS is inline and there are no scripts, so the file can be
mailed or archived and opened offline.  Sections (each shown when its inputs
exist; a missing or unreadable piece adds a note instead of failing):

* **Summary**: one table per benchmark (:mod:`xaibench.analysis.table` helpers):
  ``mean`` with ``[ci_low, ci_high]`` (else ``± std``), best and tied cells,
  controls below the methods, metrics judged invalid (``valid`` / ``validity.csv``)
  marked with their reason; ``validity.csv`` and ``comparisons.csv`` in full
  below, folded.
* **Ranking**: per benchmark, each method's mean rank over the quality metrics
  (metric_kind quality only, invalid ones left out): the average of
  ``ranking.csv``'s ``mean_rank`` (per-sample ranks averaged over samples), or,
  without that file, the average over metrics of the rank of the method's mean
  (1 = best, ties share the average rank, as :func:`scipy.stats.rankdata`).
* **Cost and quality**: per benchmark, explain time in forward passes
  (``explain_time_s`` mean / ``provenance.json`` ``forward_time_s[model]``;
  seconds when the forward time is unknown) against the benchmark's first quality metric (``metric_kind``)
  not judged invalid.
* **Ablations**: for every method and parameter whose value varies while its
  other parameters stay fixed (within a run, or across the runs of a sweep,
  whose swept values are folded into the methods' parameters), every metric
  against the parameter value, with the ``[ci_low, ci_high]`` band.
* **Gallery** (``gallery.h5``, :mod:`xaibench.analysis.gallery`): per sample the
  input and every method's attribution over it (jet colour map on the grey
  input, min-max normalised over the whole clip) with the ground-truth outline
  (white, edged in black); videos are animated GIFs with the per-frame scores
  beneath (red: ground-truth evidence frames; the current frame outlined).  A
  sweep shows the samples of every run, leaving out explanations equal to one
  already shown.  Without a gallery, the PNGs of ``figures/`` are shown.
* **Published numbers**: ``reference_comparison.csv`` of the paper experiments
  (:func:`xaibench.analysis.reference.report_section`): each model's accuracy and checkpoint, warnings,
  then method, metric, ours, published, diff, comparable and why not first; the parameters last, folded.
* **Provenance**: status, versions, seed, git revision, device, wall time, config.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import math
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pandas as pd

from ..errors import UserError
from .reference import report_section as reference_section
from .schema import COST, DESCRIPTIVE, QUALITY, metric_kinds
from .table import (BENCH, CONTROLS, best_marks, decimals, format_cell, invalid_metrics, is_control,
                    metric_order, params_text, parse_params, variant_labels)

RUN_FILES = ("provenance.json", "rows.jsonl")
TABLE_FILES = ("summary.csv", "results.parquet")
MAX_GALLERY = 6  # samples per benchmark shown
TILE = 176  # pixels: the longer side of a gallery image


@dataclass
class RunData:
    """What a run (or merged multirun) folder holds; ``None`` / empty where a piece is missing."""

    path: Path
    summary: Optional[pd.DataFrame] = None
    validity: Optional[pd.DataFrame] = None
    ranking: Optional[pd.DataFrame] = None
    comparisons: Optional[pd.DataFrame] = None
    reference: Optional[pd.DataFrame] = None
    provenance: dict = field(default_factory=dict)
    gallery: list = field(default_factory=list)  # (run caption, GalleryItem)
    figures: List[Path] = field(default_factory=list)
    runs: List[dict] = field(default_factory=list)  # multirun: one dict per run folder
    swept: List[str] = field(default_factory=list)
    contexts: List[str] = field(default_factory=list)  # swept keys with separate tables (seed, model.*, ...)
    notes: List[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------- reading
def _csv(path: Path, notes: List[str]) -> Optional[pd.DataFrame]:
    if not path.exists():
        return None
    try:
        return pd.read_csv(path)
    except Exception as e:  # an unreadable table is shown as a note, the rest of the report stays
        notes.append(f"{path.name} could not be read ({type(e).__name__}: {e})")
        return None


def _rows_summary(path: Path, notes: List[str]) -> Optional[pd.DataFrame]:
    """The summary of a run without ``summary.csv``: from ``results.parquet``, else ``rows.jsonl`` (interrupted)."""
    from .results import summarise, to_frame

    try:
        if (path / "results.parquet").exists():
            notes.append("no summary.csv: the summary was computed from results.parquet")
            return summarise(pd.read_parquet(path / "results.parquet"))
        if (path / "rows.jsonl").exists():
            rows = []
            for line in (path / "rows.jsonl").read_text().splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:  # the line an interruption cut
                    continue
                rows += rec.get("rows", []) if rec.get("kind") == "sample" else []
            notes.append("no summary.csv: the summary was computed from the finished samples in rows.jsonl")
            return summarise(to_frame(rows)) if rows else None
    except Exception as e:
        notes.append(f"the per-sample results could not be read ({type(e).__name__}: {e})")
    return None


def _gallery(path: Path, notes: List[str]) -> list:
    from .gallery import read_gallery

    try:
        return read_gallery(path / "gallery.h5")
    except Exception as e:
        notes.append(f"gallery.h5 could not be read ({type(e).__name__}: {e})")
        return []


def load_run(path: Path) -> RunData:
    """Read every piece of one run folder that exists."""
    d = RunData(Path(path))
    d.summary = _csv(path / "summary.csv", d.notes)
    if d.summary is None:
        d.summary = _rows_summary(path, d.notes)
    for name in ("validity", "ranking", "comparisons"):
        setattr(d, name, _csv(path / f"{name}.csv", d.notes))
    d.reference = _csv(path / "reference_comparison.csv", d.notes)
    if (path / "provenance.json").exists():
        try:
            d.provenance = json.loads((path / "provenance.json").read_text())
        except Exception as e:
            d.notes.append(f"provenance.json could not be read ({type(e).__name__}: {e})")
    else:
        d.notes.append("no provenance.json: the run stopped before writing it")
    d.gallery = [("", g) for g in _gallery(path, d.notes)]
    d.figures = sorted((path / "figures").glob("*.png")) if (path / "figures").is_dir() else []
    return d


def _fold_swept(summary: pd.DataFrame, swept: List[str], contexts: List[str] = ()) -> pd.DataFrame:
    """A merged sweep summary for the page: the ``method.K`` columns dropped, each setting once.

    ``method.K`` is in ``params`` already for the methods that take K (the runner records every active
    parameter); the other methods did not use K, so a copy of one of their settings in several rows (a merge
    of points that all ran them) is the same setting and is kept once.  Context keys (``seed``,
    ``dataset.n_samples``, ``model.*``: swept keys that are not method keys) stay columns: they separate the
    tables.  ``method``, ``model`` and the other results columns stay as they are.
    """
    from .merge import is_method_key

    fold = [k for k in swept if is_method_key(k) and "." in k and k in summary]
    keys = [c for c in BENCH + list(contexts) + ["method", "params", "metric"] if c in summary]
    return summary.drop_duplicates(keys).drop(columns=fold).reset_index(drop=True)


def load_multirun(path: Path, merged=None) -> RunData:
    """Merge the run folders under ``path`` with :func:`xaibench.analysis.merge.merge_runs` (or take the
    ``merged`` result the sweep callback already computed)."""
    from .merge import merge_runs  # imported here: the single-run report does not need it

    if merged is None:
        merged = merge_runs([path])
    d = RunData(Path(path), swept=list(merged.swept))
    d.contexts = [k for k in getattr(merged, "contexts", []) if k not in BENCH]
    d.notes += list(getattr(merged, "warnings", []))
    d.summary = _fold_swept(merged.summary, d.swept, d.contexts) if merged.summary is not None else None
    tables = getattr(merged, "tables", None) or {}
    for name in ("validity", "comparisons", "ranking"):
        t = tables.get(name)
        if t is not None and len(t):
            setattr(d, name, t)
    runs = getattr(merged, "runs", None)
    folders = [Path(p) for p in runs["path"]] if runs is not None and len(runs) else _run_folders(path)
    for i, folder in enumerate(folders):
        run = load_run(folder)
        over = str(runs.iloc[i].get("overrides", "") or "") if runs is not None and len(runs) > i else ""
        caption = " ".join(t for t in over.split() if t.split("=", 1)[0] in d.swept) or over or folder.name
        d.runs.append({"name": caption, "path": str(folder), "provenance": run.provenance,
                       "notes": run.notes})
        d.gallery += [(caption, g) for _, g in run.gallery]
        if not d.provenance and run.provenance:
            d.provenance = dict(run.provenance)
        own = ("validity", "reference") if not tables else ("reference",)
        for name in own:
            if getattr(run, name) is not None:
                setattr(d, name, pd.concat([getattr(d, name), getattr(run, name)]).drop_duplicates()
                        if getattr(d, name) is not None else getattr(run, name))
    # forward times of every run (a model measured in any run)
    fwd = {}
    for r in d.runs:
        fwd.update({k: v for k, v in (r["provenance"].get("forward_time_s") or {}).items() if k not in fwd})
    if fwd:
        d.provenance["forward_time_s"] = fwd
    return d


def _is_run(p: Path) -> bool:
    return any((p / f).exists() for f in RUN_FILES)


def _run_folders(path: Path) -> List[Path]:
    return sorted({f.parent for name in RUN_FILES for f in path.rglob(name) if f.parent != path},
                  key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(p))])


def load(path) -> RunData:
    """A run folder (``provenance.json`` or ``rows.jsonl``, or just the tables), or a folder of run folders."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path} is not a folder; pass a run folder (it holds summary.csv, results.parquet or "
                        f"rows.jsonl) or a multirun folder holding run folders")
    if _is_run(path):
        return load_run(path)
    if _run_folders(path):
        return load_multirun(path)
    if any((path / f).exists() for f in TABLE_FILES):
        return load_run(path)
    raise UserError(f"{path} holds no results: expected summary.csv, results.parquet, rows.jsonl or "
                    f"provenance.json in it or in its subfolders; check the path")


# ------------------------------------------------------------------------------------------ drawing
def _uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def _fig_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    return _uri(buf.getvalue(), "image/png")


def _figure(w: float, h: float):
    from matplotlib.figure import Figure  # no pyplot: no backend or display involved

    fig = Figure(figsize=(w, h))
    return fig


def _short(text: str, n: int = 22) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


GROUP = BENCH + ["_ctx"]  # one table, ranking and cost plot per benchmark and sweep context


def _ctx_text(frame: pd.DataFrame, contexts) -> pd.Series:
    """Per row: the sweep context (``seed=1, dataset.n_samples=8``; '' outside a sweep or without one)."""
    cols = [c for c in contexts if c in frame and c not in BENCH]
    if not cols:
        return pd.Series("", index=frame.index, dtype=object)
    return pd.Series([", ".join(f"{c}={_value_text(v)}" for c, v in zip(cols, vals))
                      for vals in frame[cols].itertuples(index=False)], index=frame.index, dtype=object)


def _value_text(v) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


def _prepare(summary: pd.DataFrame, contexts=()) -> pd.DataFrame:
    s = summary.reset_index(drop=True).copy()
    for c in BENCH:
        if c not in s:
            s[c] = ""
    s["_ctx"] = _ctx_text(s, contexts)
    for c in ("mean", "std", "ci_low", "ci_high"):
        s[c] = pd.to_numeric(s[c], errors="coerce") if c in s else np.nan
    if "higher_is_better" not in s:
        s["higher_is_better"] = True
    s["higher_is_better"] = s["higher_is_better"].map(lambda v: str(v).strip().lower() in ("true", "1", "1.0"))
    s["label"], _ = variant_labels(s)
    s["control"] = is_control(s)
    return s


def _bench_name(bench) -> str:
    return " · ".join(str(x) for x in bench if str(x) not in ("", "nan"))


def summary_tables(s: pd.DataFrame, validity) -> List[dict]:
    """Per benchmark: header cells (name, arrow, invalid footnote) and rows of cells for the template."""
    invalid = invalid_metrics(s, validity)
    out = []
    for bench, b in s.groupby(GROUP, sort=False, dropna=False):
        kinds = dict(zip(b["metric"], metric_kinds(b)))
        metrics = metric_order(b["metric"].tolist(), [kinds[m] for m in b["metric"]])
        notes, head = [], []
        for m in metrics:
            mb = b[b["metric"] == m]
            key = tuple(bench[:3]) + (m,)
            note = None
            if key in invalid:
                notes.append(f"{m}: {invalid[key] or 'judged invalid on this benchmark'}")
                note = len(notes)
            head.append({"name": m, "parts": m.split("_"), "note": note, "cost": kinds[m] == COST,
                         "arrow": "↑" if bool(mb["higher_is_better"].iloc[0]) else "↓"})
        cells: Dict[tuple, dict] = {}
        for m in metrics:
            mb = b[b["metric"] == m]
            d = decimals(mb["mean"].tolist() + mb["ci_low"].tolist() + mb["ci_high"].tolist())
            marks = best_marks(mb)
            for i, r in mb.iterrows():
                text = format_cell(r["mean"], r["std"], r["ci_low"], r["ci_high"], d)
                mean, _, interval = text.partition(" ")
                cells[(r["label"], m)] = {"mean": mean, "interval": interval, "mark": marks[i],
                                          "invalid": key_in(bench, m, invalid),
                                          "n": None if pd.isna(r.get("n")) else int(r["n"])}
        rows = {False: [], True: []}
        for label, lb in b.groupby("label", sort=False):
            rows[bool(lb["control"].iloc[0])].append(
                {"label": label, "cells": [cells.get((label, m)) for m in metrics]})
        out.append({"name": _bench_name(bench), "head": head, "methods": rows[False], "controls": rows[True],
                    "notes": notes})
    return out


def key_in(bench, metric, invalid) -> bool:
    return tuple(bench[:3]) + (metric,) in invalid


def quality_metrics(s: pd.DataFrame, validity=None) -> pd.DataFrame:
    """The rows of quality metrics (``metric_kind`` quality: cost, descriptive and sanity rows left out) not
    judged invalid."""
    invalid = invalid_metrics(s, validity)
    bad = [tuple(r[c] for c in BENCH) + (r["metric"],) in invalid for _, r in s.iterrows()]
    return s[(metric_kinds(s).to_numpy() == QUALITY) & ~np.asarray(bad, dtype=bool)]


def mean_ranks(s: pd.DataFrame, ranking: Optional[pd.DataFrame], validity=None, contexts=()) -> pd.DataFrame:
    """Per benchmark (and sweep context) x label x metric: the rank (1 = best); see the module docstring for the
    two sources."""
    q = quality_metrics(s, validity)
    if "_ctx" not in s:
        s = s.assign(_ctx="")
        q = q.assign(_ctx="")
    if ranking is not None and {"method", "metric", "mean_rank"} <= set(ranking.columns):
        r = ranking.copy()
        for c in BENCH:
            if c not in r:
                r[c] = s[c].iloc[0] if len(s) else ""
        r["_ctx"] = _ctx_text(r, contexts)
        r["params"] = r["params"].where(r["params"].notna(), "").astype(str) if "params" in r else ""
        labels = s.drop_duplicates(["method", "params"]).assign(params=lambda x: x["params"].astype(str))
        r = r.merge(labels[["method", "params", "label"]], on=["method", "params"], how="left")
        r["label"] = r["label"].fillna(r["method"])
        r["control"] = is_control(r)
        keep = set(map(tuple, q[GROUP + ["metric"]].astype(str).values))
        r = r[[tuple(x) in keep for x in r[GROUP + ["metric"]].astype(str).values]]
        return r[GROUP + ["label", "control", "metric"]].assign(rank=pd.to_numeric(r["mean_rank"], errors="coerce"))
    out = []
    for _, g in q.groupby(GROUP + ["metric"], sort=False, dropna=False):
        g = g[np.isfinite(g["mean"])]
        if len(g) > 1:
            asc = not bool(g["higher_is_better"].iloc[0])
            out.append(g[GROUP + ["label", "control", "metric"]].assign(
                rank=g["mean"].rank(ascending=asc, method="average")))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def ranking_plots(s, ranking, validity, contexts=()) -> List[dict]:
    ranks = mean_ranks(s, ranking, validity, contexts)
    if ranks.empty:
        return []
    out = []
    for bench, r in ranks.groupby(GROUP, sort=False, dropna=False):
        avg = r.groupby(["label", "control"], sort=False)["rank"].mean().reset_index().sort_values("rank")
        labels = list(avg["label"])
        fig = _figure(5.6, 0.6 + 0.32 * len(labels))
        ax = fig.add_subplot()
        y = np.arange(len(labels))
        ax.barh(y, avg["rank"], color=["#9aa0a6" if c else "#4c78a8" for c in avg["control"]], alpha=0.85)
        pos = {lab: i for i, lab in enumerate(labels)}
        ax.scatter(r["rank"], [pos[lab] for lab in r["label"]], s=9, color="#e45756", zorder=3)
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch

        handles = [Patch(color="#4c78a8", label="method: mean over metrics"),
                   Patch(color="#9aa0a6", label="control: mean over metrics"),
                   Line2D([], [], ls="", marker="o", ms=3, color="#e45756", label="rank on one metric")]
        ax.set_yticks(y, [_short(x, 26) for x in labels], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("mean rank (1 = best)", fontsize=8)
        ax.tick_params(axis="x", labelsize=8)
        ax.set_xlim(0, max(len(labels), float(np.nanmax(r["rank"]))) + 0.5)
        ax.legend(handles=handles[:1 + bool(avg["control"].any())] + handles[2:], fontsize=7, loc="lower center",
                  bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
        ax.grid(axis="x", alpha=0.3)
        out.append({"name": _bench_name(bench), "img": _fig_uri(fig), "n_metrics": r["metric"].nunique()})
    return out


def cost_plots(s, provenance, validity) -> List[dict]:
    """Per benchmark: methods as points (explain time, quality), controls as dotted reference lines."""
    fwd = provenance.get("forward_time_s") or {}
    invalid = invalid_metrics(s, validity)
    out = []
    for bench, b in s.groupby(GROUP, sort=False, dropna=False):
        kinds = dict(zip(b["metric"], metric_kinds(b)))
        present = [m for m in pd.unique(b["metric"]) if kinds[m] == QUALITY and not key_in(bench, m, invalid)]
        t = b[b["metric"] == "explain_time_s"].set_index("label")
        if not present or t.empty:
            continue
        q = b[b["metric"] == present[0]].set_index("label")
        both = [lab for lab in q.index if lab in t.index and np.isfinite(t.loc[lab, "mean"])
                and np.isfinite(q.loc[lab, "mean"]) and not q.loc[lab, "control"]]
        if not both:
            continue
        f = fwd.get(bench[BENCH.index("model")])
        rel = f is not None and float(f) > 0
        x = np.array([t.loc[lab, "mean"] / (float(f) if rel else 1.0) for lab in both])
        y = np.array([q.loc[lab, "mean"] for lab in both])
        fig = _figure(5.6, 3.6)
        ax = fig.add_subplot()
        lo, hi = q.loc[both, "ci_low"].to_numpy(float), q.loc[both, "ci_high"].to_numpy(float)
        if np.isfinite(lo).all() and np.isfinite(hi).all():
            ax.errorbar(x, y, yerr=np.clip([y - lo, hi - y], 0, None), fmt="none", ecolor="#bbb", lw=1, zorder=1)
        ax.scatter(x, y, color="#4c78a8", zorder=2)
        for xi, yi, lab in zip(x, y, both):
            ax.annotate(_short(lab, 18), (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points")
        for lab in q.index[q["control"].astype(bool)]:
            yc = q.loc[lab, "mean"]
            if np.isfinite(yc):
                ax.axhline(yc, color="#9aa0a6", ls=":", lw=1, zorder=0)
                ax.text(0.99, yc, lab, transform=ax.get_yaxis_transform(), ha="right", va="bottom", fontsize=6.5,
                        color="#6e7781")
        if (x > 0).all() and x.max() / max(x.min(), 1e-12) > 10:
            ax.set_xscale("log")
        ax.set_xlabel("explain time / one forward pass" if rel else "explain time (s; forward time unknown)",
                      fontsize=8)
        arrow = "↑" if bool(q["higher_is_better"].iloc[0]) else "↓"
        ax.set_ylabel(f"{present[0]} {arrow}", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        out.append({"name": _bench_name(bench), "metric": present[0], "relative": rel, "img": _fig_uri(fig),
                    "forward_s": f})
    return out


def _sortable(values):
    """Numeric x positions when every value is a number, else category positions (sorted as text)."""
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return [float(v) for v in values], None
    cats = sorted({json.dumps(v) for v in values})
    return [cats.index(json.dumps(v)) for v in values], cats


def _sorted_values(values) -> list:
    xs, _ = _sortable(list(values))
    return [v for _, v in sorted({json.dumps(v): (x, v) for x, v in zip(xs, values)}.values(), key=lambda p: p[0])]


ARM_SUFFIX = re.compile(r"\[[^\[\]]*\]$")  # a list arm's label: staa[lambda=0.5]
#: swept keys that are no ablation axis: categories with their own tables, or replicates
NOT_AN_AXIS = ("seed", "experiment", "model", "dataset", "method", "shard")


def base_method(label) -> str:
    """The method a label belongs to: a list arm ``staa[lambda=0.5]`` -> ``staa``; other labels as they are."""
    return ARM_SUFFIX.sub("", str(label)) or str(label)


def ablations(s: pd.DataFrame, contexts=()) -> List[dict]:
    """The ablations of a summary (prepared by :func:`_prepare`), each ``{"method", "param", "kind", "rows"}``:

    * per method and parameter K (``kind="param"``): the settings of the method that differ only in K (a
      curve per fixed rest, benchmark and sweep context), across the arms of one run (list arms
      ``staa[lambda=...]`` count as one method) and across the points of a sweep (their values are in
      ``params``);
    * per swept context key that is a number or a setting (``dataset.n_samples``, ``model.num_layers``; not
      ``seed`` or a model or dataset name, ``kind="context"``): every method arm against the key, a curve per
      arm and benchmark, the controls as curves of their own.

    Rows: the summary's rows plus ``value`` (the x value), ``rest`` (the curve's name within its benchmark)
    and ``_curve`` (benchmark, context, rest).  Controls are never an ablated method."""
    found = []
    methods = s[~s["control"].astype(bool)] if "control" in s else s
    ctx = s["_ctx"] if "_ctx" in s else pd.Series("", index=s.index)
    for method, m in methods.groupby(methods["method"].map(base_method), sort=False):
        dicts = {p: parse_params(p) for p in pd.unique(m["params"].astype(str))}
        if len(dicts) < 2:
            continue
        keys = list(dict.fromkeys(k for d in dicts.values() for k in d))
        for k in keys:
            rest_of = {p: json.dumps({kk: v for kk, v in d.items() if kk != k}, sort_keys=True, default=str)
                       for p, d in dicts.items() if k in d}
            groups: Dict[str, list] = {}
            for p, rest in rest_of.items():
                groups.setdefault(rest, []).append(p)
            groups = {r: ps for r, ps in groups.items() if len({json.dumps(dicts[p][k]) for p in ps}) > 1}
            if not groups:
                continue
            varying = {kk for r in groups for kk, v in json.loads(r).items()
                       if any(json.loads(r2).get(kk) != v for r2 in groups)}
            rows = m[m["params"].astype(str).isin([p for ps in groups.values() for p in ps])].copy()
            rows["value"] = [dicts[p][k] for p in rows["params"].astype(str)]
            rows["rest"] = [params_text({kk: v for kk, v in json.loads(rest_of[p]).items() if kk in varying})
                            for p in rows["params"].astype(str)]
            rows["_curve"] = [(*b, c, r) for b, c, r in zip(rows[BENCH].itertuples(index=False), ctx[rows.index],
                                                            rows["rest"])]
            found.append({"method": method, "param": k, "kind": "param", "rows": rows})
    for k in contexts:
        if k in NOT_AN_AXIS or k not in s:
            continue
        rows = methods[methods[k].notna()].copy()
        if len({json.dumps(v.item() if hasattr(v, "item") else v, default=str) for v in rows[k]}) < 2:
            continue
        others = _ctx_text(rows, [c for c in contexts if c != k])
        rows["value"] = [v.item() if hasattr(v, "item") else v for v in rows[k]]
        rows["rest"] = rows["label"]
        rows["_curve"] = [(*b, c, r) for b, c, r in zip(rows[BENCH].itertuples(index=False), others, rows["rest"])]
        found.append({"method": "every method", "param": k, "kind": "context", "rows": rows})
    return found


def _integral(values) -> bool:
    return all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in values)


def _ticks(values) -> tuple:
    """The x ticks of an ablation: at the swept values when there are at most 12 (integers as integers),
    else matplotlib's (integer steps for an integer parameter); ``(positions, labels)`` or ``None``."""
    xs, cats = _sortable(list(values))
    if cats is not None:
        return list(range(len(cats))), [_short(c.strip('"'), 10) for c in cats]
    distinct = sorted(set(xs))
    if len(distinct) > 12:
        return None
    ints = _integral(values) or all(float(x).is_integer() for x in distinct)
    return distinct, [str(int(x)) if ints else f"{x:g}" for x in distinct]


def ablation_plots(s: pd.DataFrame, validity=None, contexts=()) -> List[dict]:
    """One figure per ablation: a panel per quality metric (metric_kind quality: no cost, descriptive or sanity
    panels), the metric's mean against the value with its confidence band, and the controls of each
    benchmark as dotted reference lines (across the settings of one method the controls do not change; for a
    context key they are curves of their own, dashed grey)."""
    from matplotlib.ticker import MaxNLocator

    invalid = invalid_metrics(s, validity)
    controls = s[s["control"].astype(bool)] if "control" in s else s.iloc[:0]
    out = []
    for a in ablations(s, contexts):
        rows = a["rows"]
        kinds = metric_kinds(rows)
        metrics = [m for m in pd.unique(rows["metric"]) if (kinds[rows["metric"] == m] == QUALITY).all()]
        if not metrics:
            continue
        ncol = min(4, len(metrics))
        nrow = math.ceil(len(metrics) / ncol)
        fig = _figure(3.0 * ncol, 2.3 * nrow + 0.4)
        xs, cats = _sortable(list(rows["value"]))
        rows = rows.assign(x=xs)
        ticks = _ticks(rows["value"])
        curves = list(dict.fromkeys(rows["_curve"]))
        colors = {c: f"C{i % 10}" for i, c in enumerate(curves)}
        n_refs = 0
        for i, metric in enumerate(metrics):
            ax = fig.add_subplot(nrow, ncol, i + 1)
            g_all = rows[rows["metric"] == metric]
            for key in curves:
                g = g_all[g_all["_curve"].map(lambda c: c == key)].sort_values("x")
                if g.empty:
                    continue
                name = " · ".join(x for x in (_bench_name(key[1:3]), key[3], key[4]) if x)
                ax.plot(g["x"], g["mean"], "o-", color=colors[key], ms=3, lw=1.2, label=name)
                if np.isfinite(g["ci_low"]).all() and np.isfinite(g["ci_high"]).all():
                    ax.fill_between(g["x"], g["ci_low"], g["ci_high"], color=colors[key], alpha=0.18, lw=0)
            n_refs += _references(ax, a, controls, g_all, metric, contexts)
            bad = all(key_in(b, metric, invalid) for b in {c[:3] for c in curves})
            arrow = "↑" if bool(g_all["higher_is_better"].iloc[0]) else "↓"
            ax.set_title(f"{metric} {arrow}" + (" ✗ invalid" if bad else ""), fontsize=8)
            ax.tick_params(labelsize=7)
            if ticks is not None:
                ax.set_xticks(ticks[0], ticks[1])
            elif _integral(rows["value"]):
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
        handles, labels = fig.axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=min(3, max(len(labels), 1)), fontsize=7,
                   bbox_to_anchor=(0.5, 1.0), frameon=False)
        fig.supxlabel(a["param"], fontsize=8)
        fig.tight_layout()
        out.append({"method": a["method"], "param": a["param"], "kind": a["kind"], "img": _fig_uri(fig),
                    "settings": ", ".join(json.dumps(v) for v in _sorted_values(rows["value"])),
                    "metrics": metrics, "xticks": list(ticks[1]) if ticks is not None else None,
                    "references": n_refs})
    return out


def _references(ax, a: dict, controls: pd.DataFrame, g: pd.DataFrame, metric: str, contexts) -> int:
    """The controls of the benchmarks in panel ``g``: dotted horizontal lines labelled with the control (one
    method's settings), or dashed grey curves against a context key.  Returns how many were drawn."""
    c = controls[controls["metric"] == metric]
    if c.empty:
        return 0
    n = 0
    if a["kind"] == "context":
        k = a["param"]
        c = c[c[k].notna()] if k in c else c.iloc[:0]
        xs, _ = _sortable(list(a["rows"]["value"]) + [v.item() if hasattr(v, "item") else v for v in c[k]])
        c = c.assign(x=xs[len(a["rows"]):])
        for label, cl in c.groupby(["label"] + BENCH, sort=False):
            cl = cl.sort_values("x")
            ax.plot(cl["x"], cl["mean"], ls="--", color="#9aa0a6", lw=1, marker=".", ms=3)
            ax.annotate(str(label[0]).replace("control_", ""), (cl["x"].iloc[-1], cl["mean"].iloc[-1]), fontsize=6,
                        color="#6e7781", xytext=(2, 0), textcoords="offset points")
            n += 1
        return n
    lines: Dict[float, list] = {}  # controls at the same level share one line and one label
    for bench, ctx in {(tuple(r[BENCH]), r.get("_ctx", "")) for _, r in g.iterrows()}:
        sel = (c[BENCH].astype(str).apply(tuple, axis=1) == tuple(map(str, bench)))
        if "_ctx" in c:
            sel &= c["_ctx"] == ctx
        for _, r in c[sel].iterrows():
            if np.isfinite(r["mean"]):
                names = lines.setdefault(round(float(r["mean"]), 12), [])
                name = str(r["label"]).replace("control_", "")
                if name not in names:
                    names.append(name)
                    n += 1
    for y, names in lines.items():
        ax.axhline(y, color="#9aa0a6", ls=":", lw=1, zorder=0)
        ax.text(0.99, y, ", ".join(names), transform=ax.get_yaxis_transform(), ha="right", va="bottom",
                fontsize=6, color="#6e7781")
    return n


# ------------------------------------------------------------------------------------------ gallery
def _rgb(x: np.ndarray) -> np.ndarray:
    """(C, H, W) in [0, 1] -> (H, W, 3) float."""
    x = np.clip(np.nan_to_num(x.astype(np.float32)), 0, 1).transpose(1, 2, 0)
    return np.repeat(x, 3, axis=2) if x.shape[2] == 1 else x[..., :3]


def _erode(mask: np.ndarray) -> np.ndarray:
    """Binary erosion with the 4-neighbourhood (the image border replicated, so it draws no line)."""
    m = np.pad(mask, 1, mode="edge")
    return m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]


def _frame(x_t, vol_t=None, mask_t=None) -> np.ndarray:
    """One uint8 RGB picture at the input's resolution: the frame, or the attribution (jet, alpha 0.5) over its
    grey version; the ground-truth outline as a white line (inside the region) edged in black (outside)."""
    from matplotlib import colormaps

    img = _rgb(x_t)
    if vol_t is not None:
        grey = img.mean(axis=2, keepdims=True)
        img = 0.5 * np.repeat(grey, 3, axis=2) + 0.5 * colormaps["jet"](np.nan_to_num(vol_t))[..., :3]
    if mask_t is not None and mask_t.any():
        m = mask_t.astype(bool)
        img[~_erode(~m) & ~m] = 0.0
        img[m & ~_erode(m)] = 1.0
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def _bars(scores, frames, current: int, width: int) -> np.ndarray:
    """Per-frame bars (red: evidence frames, blue: others; the current frame full colour and outlined, the
    others pale) as uint8 RGB, ``width`` wide; scores scaled from min(0, min) to max."""
    from PIL import Image, ImageDraw

    T = len(scores)
    height = max(8, round(width * 0.2))
    s = np.nan_to_num(np.asarray(scores, dtype=float))
    lo = min(0.0, s.min())
    span = (s.max() - lo) or 1.0
    im = Image.new("RGB", (width, height), "white")
    dr = ImageDraw.Draw(im)
    w = width / T
    for t in range(T):
        x0, x1 = int(round(t * w)), int(round((t + 1) * w)) - 1
        color = (214, 39, 40) if frames is not None and bool(frames[t]) else (31, 119, 180)
        if t != current:
            color = tuple(int(c + (255 - c) * 0.5) for c in color)
        top = int(round((height - 2) * (1 - (s[t] - lo) / span)))
        if x1 - x0 >= 2:
            dr.rectangle([x0 + 1, top + 1, x1 - 1, height - 1], fill=color)
        if t == current:
            dr.rectangle([x0, 0, x1, height - 1], outline=(0, 0, 0))
    return np.asarray(im)


def _png(img: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", optimize=True)
    return _uri(buf.getvalue(), "image/png")


def _gif(frames: List[np.ndarray], ms: int = 450) -> str:
    from PIL import Image

    ims = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    ims[0].save(buf, format="GIF", save_all=True, append_images=ims[1:], duration=ms, loop=0)
    return _uri(buf.getvalue(), "image/gif")


def _normalised(vol: np.ndarray) -> np.ndarray:
    vol = np.nan_to_num(vol.astype(np.float32))
    lo, hi = float(vol.min()), float(vol.max())
    return (vol - lo) / (hi - lo) if hi > lo else np.zeros_like(vol)


def render_item(item) -> dict:
    """The input and every method of one gallery sample as embedded images at the input's resolution (GIFs for
    videos), with the width to show them at (an integer enlargement to about :data:`TILE` pixels)."""
    T, _, H, W = item.x.shape
    width = W * max(1, int(math.ceil(TILE / max(H, W))))
    mask = item.mask if item.mask is not None and np.asarray(item.mask).any() else None

    def tile(vol=None, scores=None):
        pics = [_frame(item.x[t], None if vol is None else vol[t], None if mask is None else mask[t])
                for t in range(T)]
        if T == 1:
            return _png(pics[0])
        ev = item.frames
        sc = scores if scores is not None else (np.asarray(ev, float) if ev is not None else np.zeros(T))
        return _gif([np.concatenate([p, _bars(sc, ev, t, W)], axis=0) for t, p in enumerate(pics)])

    tiles = [{"caption": "input" + (" + ground truth" if mask is not None else ""), "img": tile(), "width": width}]
    for label, (vol, scores) in item.methods.items():
        if vol.shape == (T, H, W):
            tiles.append({"caption": label, "img": tile(_normalised(vol), scores), "width": width,
                          "control": label.split("#")[0] in CONTROLS})
    return {"tiles": tiles, "video": T > 1}


def gallery_sections(entries: list, max_per_bench: int = MAX_GALLERY) -> List[dict]:
    """Group the gallery items by benchmark (dataset, model), at most ``max_per_bench`` samples per run each.
    Across the runs of a sweep, an explanation equal to one already shown (a method the swept value does not
    touch) is not repeated."""
    groups: Dict[tuple, dict] = {}
    counts: Dict[tuple, int] = {}
    seen: Dict[tuple, list] = {}
    for caption, item in entries:
        key = (item.dataset, item.model)
        g = groups.setdefault(key, {"name": f"{item.dataset} · {item.model}", "samples": []})
        if counts.get(key + (caption,), 0) >= max_per_bench:
            continue
        counts[key + (caption,)] = counts.get(key + (caption,), 0) + 1
        methods = {}
        for label, (vol, scores) in item.methods.items():
            shown = seen.setdefault(key + (item.sample_id, label), [])
            if not any(np.array_equal(vol, v, equal_nan=True) for v in shown):
                shown.append(vol)
                methods[label] = (vol, scores)
        r = render_item(replace(item, methods=methods))
        title = item.sample_id + ("" if item.label is None else f" (label {item.label})")
        g["samples"].append(dict(r, title=title, run=caption))
    return list(groups.values())


# ------------------------------------------------------------------------------------------ tables
def _records(df: Optional[pd.DataFrame], max_rows: int = 200) -> Optional[dict]:
    """A generic table (columns, rows of formatted strings) for the template."""
    if df is None or df.empty:
        return None

    def fmt(v):
        if isinstance(v, float):
            return "" if math.isnan(v) else (f"{v:.4g}" if abs(v) < 1e-3 or abs(v) >= 1e4 else f"{v:.4f}")
        return "" if v is None or v is pd.NA else str(v)

    shown = df.head(max_rows)
    return {"columns": list(df.columns), "rows": [[fmt(v) for v in r] for r in shown.itertuples(index=False)],
            "more": max(len(df) - max_rows, 0)}


def provenance_items(p: dict) -> List[tuple]:
    keys = [("status", "status"), ("created", "created"), ("git revision", "git_revision"), ("seed", "seed"),
            ("device", "device"), ("precision", "precision"), ("wall time (s)", "wall_time_s"),
            ("platform", "platform"), ("rows", "n_rows"),
            ("skipped samples", "n_skipped_samples")]
    items = [(name, p[k]) for name, k in keys if p.get(k) not in (None, "")]
    if p.get("forward_time_s"):
        items.append(("forward pass (s)", ", ".join(f"{k}: {float(v):.4g}" for k, v in p["forward_time_s"].items())))
    return items


# ------------------------------------------------------------------------------------------ page
def _section(notes: List[str], name: str, fn, *args):
    """Run one section builder; an error in it becomes a note, and the rest of the report is still written."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - one broken piece must not cost the whole report
        notes.append(f"the {name} could not be drawn ({type(e).__name__}: {e})")
        return []


def render(d: RunData, max_gallery: int = MAX_GALLERY) -> str:
    """The HTML text of the report of ``d``."""
    import jinja2

    notes = list(d.notes)
    s = _prepare(d.summary, d.contexts) if d.summary is not None and len(d.summary) else None
    if s is None:
        notes.append("no results to summarise yet")
    legend = variant_labels(s)[1] if s is not None else {}
    prov = d.provenance or {}
    exp = ""
    if s is not None and "experiment" in s:
        exp = ", ".join(map(str, pd.unique(s["experiment"].astype(str))))
    exp = exp or str(((prov.get("config") or {}).get("experiment") or {}).get("name", ""))
    figures = []
    if not d.gallery and d.figures:
        figures = [{"caption": f.stem, "img": _uri(f.read_bytes(), "image/png")} for f in d.figures[:24]]
    ctx = dict(
        title=f"xaibench report: {exp or d.path.name}", path=str(d.path), multirun=bool(d.runs),
        status=prov.get("status", "unknown") if not d.runs else
        ", ".join(sorted({str(r["provenance"].get("status", "unknown")) for r in d.runs})),
        created=prov.get("created", ""), swept=d.swept, notes=notes,
        tables=_section(notes, "summary table", summary_tables, s, d.validity) if s is not None else [],
        legend=legend,
        has_ci=bool(s is not None and np.isfinite(s["ci_low"]).any()),
        has_best=bool(s is not None and "best" in s),
        validity=_records(d.validity), comparisons=_records(d.comparisons),
        ranking=_section(notes, "ranking plot", ranking_plots, s, d.ranking, d.validity, d.contexts)
        if s is not None else [],
        ranking_source="ranking.csv" if d.ranking is not None else "the summary",
        cost=_section(notes, "cost plot", cost_plots, s, prov, d.validity) if s is not None else [],
        ablations=_section(notes, "ablation plots", ablation_plots, s, d.validity, d.contexts)
        if s is not None else [],
        gallery=_section(notes, "gallery", gallery_sections, d.gallery, max_gallery),
        figures=figures,
        reference=reference_section(d.reference),
        provenance=provenance_items(prov), versions=sorted((prov.get("versions") or {}).items()),
        config=json.dumps(prov.get("config"), indent=2, default=str) if prov.get("config") else "",
        runs=[{"name": r["name"], "path": r["path"], "items": provenance_items(r["provenance"]),
               "notes": r["notes"]} for r in d.runs],
    )
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True)
    return env.get_template("report.html.j2").render(**ctx)


def write_report(run_dir, out=None, max_gallery: int = MAX_GALLERY, merged=None) -> Path:
    """Write ``report.html`` for a run folder or a multirun folder (into it, unless ``out`` is given).
    ``merged``: the sweep's :class:`~xaibench.analysis.merge.Merged`, when the caller has it already."""
    d = load_multirun(Path(run_dir), merged) if merged is not None else load(run_dir)
    out = Path(out) if out is not None else Path(run_dir) / "report.html"
    return _write(out, render(d, max_gallery))


def _write(out: Path, text: str) -> Path:
    from ..io import atomic_write_text

    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, text)
    return out


# ------------------------------------------------------------------------------------------ export
EXPORTS = ("md", "tex", "png", "pdf", "svg")
_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "·": "/", "↑": r"$\uparrow$",
        "↓": r"$\downarrow$", "–": "--", "…": r"\dots{}"}


def tex_escape(text) -> str:
    """``text`` safe in LaTeX body text (specials escaped, arrows as math)."""
    return "".join(_TEX.get(ch, ch) for ch in str(text))


def _md_escape(text) -> str:
    return str(text).replace("|", r"\|")


def _md_cell(c, best_bold=True) -> str:
    if not c:
        return "–"
    mean = f"**{c['mean']}**" if c["mark"] == "best" and best_bold else c["mean"]
    mark = {"best": " \\*", "tied": " ~"}.get(c["mark"], "")
    return f"{mean}{mark}" + (f" {c['interval']}" if c["interval"] else "") + (" ✗" if c["invalid"] else "")


def _tex_cell(c) -> str:
    if not c:
        return "--"
    mean = rf"\textbf{{{c['mean']}}}" if c["mark"] == "best" else c["mean"]
    mark = r"$^{\sim}$" if c["mark"] == "tied" else ""
    return f"{mean}{mark}" + (f" {tex_escape(c['interval'])}" if c["interval"] else "")


def summary_markdown(tables: List[dict], legend: Dict[str, str], has_ci: bool = True) -> str:
    """The summary tables (:func:`summary_tables`) as GitHub-flavoured Markdown: a table per benchmark,
    methods then controls (in italics), cells ``mean [CI]`` with ``*`` best (bold) and ``~`` tied, ✗ on
    metrics judged invalid (the reasons as footnotes), the parameter legend below."""
    out = ["<!-- xaibench summary (xaibench-report --export md) -->", ""]
    for t in tables:
        out.append(f"### {_md_escape(t['name'])}")
        out.append("")
        head = [f"{h['name']} {h['arrow']}" + (f" ✗{h['note']}" if h["note"] else "") for h in t["head"]]
        out.append("| method | " + " | ".join(_md_escape(h) for h in head) + " |")
        out.append("|:---|" + "---:|" * len(head))
        for r in t["methods"]:
            out.append(f"| {_md_escape(r['label'])} | " + " | ".join(_md_cell(c) for c in r["cells"]) + " |")
        for r in t["controls"]:
            out.append(f"| *{_md_escape(r['label'])}* | " + " | ".join(_md_cell(c, False) for c in r["cells"])
                       + " |")
        out.append("")
        out += [f"✗{i + 1} {_md_escape(n)}  " for i, n in enumerate(t["notes"])]
        if t["notes"]:
            out.append("")
    out.append(("Cells: mean [95 % confidence interval]" if has_ci else "Cells: mean") +
               "; **bold** \\* best, ~ not significantly different from the best; ↑/↓ higher/lower is better; "
               "controls in italics.")
    if legend:
        out += ["", "Parameters:", ""] + [f"* {_md_escape(k)}: {_md_escape(v)}" for k, v in legend.items()]
    return "\n".join(out) + "\n"


def summary_latex(tables: List[dict], legend: Dict[str, str], has_ci: bool = True) -> str:
    r"""The summary tables as LaTeX ``table`` environments (``booktabs`` rules): best bold, tied
    ``$^\sim$``, controls in italics below a rule, the parameter legend in the caption."""
    out = ["% xaibench summary (xaibench-report --export tex); needs \\usepackage{booktabs}"]
    for t in tables:
        n = len(t["head"])
        cap = (tex_escape(t["name"]) + ". " + ("Mean [95\\% CI]" if has_ci else "Mean") +
               r"; \textbf{bold}: best; $^{\sim}$: not significantly different from the best")
        labels = [r["label"] for r in t["methods"] + t["controls"]]
        used = {k: v for k, v in legend.items() if k in labels}
        if used:
            cap += "; " + "; ".join(f"{tex_escape(k)}: {tex_escape(v)}" for k, v in used.items())
        if t["notes"]:
            cap += "; invalid: " + "; ".join(tex_escape(x) for x in t["notes"])
        out += [r"\begin{table}[t]", r"\centering", r"\small", rf"\caption{{{cap}.}}",
                r"\begin{tabular}{l" + "r" * n + "}", r"\toprule",
                "method & " + " & ".join(tex_escape(f"{h['name']} {h['arrow']}") + (r"$^{\times}$" if h["note"]
                                                                                      else "")
                                         for h in t["head"]) + r" \\", r"\midrule"]
        for r in t["methods"]:
            out.append(tex_escape(r["label"]) + " & " + " & ".join(_tex_cell(c) for c in r["cells"]) + r" \\")
        if t["controls"]:
            out.append(r"\midrule")
            for r in t["controls"]:
                out.append(rf"\textit{{{tex_escape(r['label'])}}} & " + " & ".join(
                    _tex_cell(dict(c, mark="")) if c else "--" for c in r["cells"]) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(out)


def export(d: RunData, out_dir, formats, max_gallery: int = MAX_GALLERY) -> List[Path]:
    """Paper material from a loaded run or sweep into ``out_dir``: ``summary.md`` (``md``), ``summary.tex``
    (``tex``), and for ``png`` / ``pdf`` / ``svg`` the gallery's strips (per sample the input and one file per
    method: frames side by side with a colour bar; :func:`xaibench.analysis.gallery.export_strips`) under
    ``figures/``, at most ``max_gallery`` samples per benchmark (and run of a sweep).  Returns the files."""
    from ..io import atomic_write_text
    from .gallery import export_strips

    bad = [f for f in formats if f not in EXPORTS]
    if bad:
        raise UserError(f"--export {','.join(bad)}: unknown format; choose from {','.join(EXPORTS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: List[Path] = []
    if {"md", "tex"} & set(formats):
        if d.summary is None or not len(d.summary):
            raise UserError(f"{d.path} has no summary to export yet")
        s = _prepare(d.summary, d.contexts)
        s = s[metric_kinds(s).to_numpy() != DESCRIPTIVE].reset_index(drop=True)  # tie SEs, degenerate maps
        tables, legend = summary_tables(s, d.validity), variant_labels(s)[1]
        has_ci = bool(np.isfinite(s["ci_low"]).any())
        for fmt, fn in (("md", summary_markdown), ("tex", summary_latex)):
            if fmt in formats:
                atomic_write_text(out_dir / f"summary.{fmt}", fn(tables, legend, has_ci))
                written.append(out_dir / f"summary.{fmt}")
    figs = [f for f in formats if f in ("png", "pdf", "svg")]
    if figs:
        by_run: Dict[str, list] = {}
        for caption, item in d.gallery:
            by_run.setdefault(caption, []).append(item)
        for caption, items in by_run.items():
            written += export_strips(items, out_dir / "figures", figs, max_gallery, caption)
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="xaibench-report", description="Write report.html for a run or multirun folder.")
    p.add_argument("dir", type=Path, metavar="DIR", help="a run folder, or a multirun folder holding run folders")
    p.add_argument("-o", "--output", type=Path, help="the HTML file to write (default: DIR/report.html)")
    p.add_argument("--samples", type=int, default=MAX_GALLERY,
                   help=f"gallery samples shown (and exported) per benchmark (default {MAX_GALLERY})")
    p.add_argument("--export", default="", metavar="FORMATS",
                   help="also write paper material: md and tex (the summary tables), png, pdf, svg (per gallery "
                        "sample, a strip per method with a colour bar); comma-separated, e.g. md,tex,png")
    p.add_argument("--export-dir", type=Path, metavar="DIR", help="where the exports go (default: DIR/export)")
    a = p.parse_args(argv)
    try:
        if a.samples < 0:
            raise UserError(f"--samples must be 0 or more, got {a.samples}")
        formats = [f.strip().lower() for f in a.export.split(",") if f.strip()]
        bad = [f for f in formats if f not in EXPORTS]
        if bad:
            raise UserError(f"--export {','.join(bad)}: unknown format; choose from {','.join(EXPORTS)}")
        d = load(a.dir)
        out = Path(a.output) if a.output is not None else Path(a.dir) / "report.html"
        path = _write(out, render(d, a.samples))
        if formats:
            files = export(d, a.export_dir or Path(a.dir) / "export", formats, a.samples)
            print(f"exported {len(files)} file(s) into {a.export_dir or Path(a.dir) / 'export'}")
    except UserError as e:
        print(f"xaibench-report: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"xaibench-report: error: cannot write the report ({e.strerror or e}); pass a writable -o PATH",
              file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
