"""The terminal table printed at the end of every run.

:func:`format_table` turns a ``summary.csv`` frame (one row per experiment x
dataset x model x method x params x metric, see :mod:`xaibench.analysis.results`)
into plain text at most ``width`` columns wide:

* one block per benchmark (experiment, dataset, model); rows are methods,
  columns metrics; when the metric columns do not fit, they are split over
  several blocks, each within the width;
* a row is labelled with the method label, suffixed ``#1``, ``#2`` ... when one
  label occurs with several parameter settings; the legend below the tables
  gives each label's parameters (only those that differ between the label's
  settings, or all of them when they are short);
* a header holds the metric's direction (``↑`` higher is better, ``↓`` lower is
  better), ``✗`` when the metric was judged invalid on that benchmark and ``?``
  when its validity is undetermined (``valid`` column or ``validity.csv``), with
  the reason -- and for an undetermined verdict the n it would need -- in a
  footnote;
* a cell is ``mean [ci_low,ci_high]`` when the summary has confidence
  intervals, else ``mean ± std``; ``*`` marks the best arm of a column and ``~``
  the arms not significantly different from it (the ``best`` column, ``best`` /
  ``tied``, see :func:`xaibench.analysis.stats.marks`: only on valid metrics,
  where a comparison can reject at this n, ``*`` only for a best arm that keeps
  the top under a bootstrap of the samples); without that column the best mean
  among the non-control methods is marked, without ties;
* below a benchmark, per marked column, the paired difference of each ``~`` arm
  to the best with its bootstrap interval and the n at which it would be
  significant (summary ``effect``, ``effect_ci_low/high``, ``n_needed``), and
  for a column left unmarked the reason (``mark_note``: invalid, undetermined,
  or "needs n=..." when no comparison can reject at this n);
* metrics in order of appearance, the cost metrics last (the ``metric_kind`` column);
* control methods (``kind == control``, or the ``control_*`` names) are listed
  below the methods, under a separator.

The same helpers (:func:`variant_labels`, :func:`is_control`,
:func:`format_cell`, :func:`invalid_metrics`) lay out the HTML report's tables.
"""

from __future__ import annotations

import itertools
import json
import math
import textwrap
from typing import Dict, List, Optional, Tuple

import numpy as np
import pandas as pd

from .schema import COST, DESCRIPTIVE, legacy_kind, metric_kinds, tie_se_base

CONTROLS = ("control_random", "control_constant", "control_gt", "control_gt_inverted")
BENCH = ["experiment", "dataset", "model"]
MARK = {"best": "*", "tied": "~"}
INVALID_VERDICTS = {"false", "invalid", "fail", "failed", "no", "0"}
UNDETERMINED_VERDICTS = {"undetermined", "untestable"}
_ANSI = {"best": "\033[1;32m", "tied": "\033[32m", "control": "\033[2m", "invalid": "\033[31m", "end": "\033[0m"}
_SEP = "  "


# --------------------------------------------------------------------------- helpers shared with the report
def parse_params(p) -> dict:
    """The params JSON string of a summary row as a dict (``{}`` for empty/NaN, ``{"params": p}`` if not JSON)."""
    if p is None or (isinstance(p, float) and math.isnan(p)) or p == "":
        return {}
    try:
        d = json.loads(p)
    except (TypeError, ValueError):
        return {"params": str(p)}
    return d if isinstance(d, dict) else {"params": d}


def params_text(d: dict) -> str:
    return ", ".join(f"{k}={json.dumps(v) if isinstance(v, (str, type(None), bool)) else v}" for k, v in d.items())


def is_control(frame: pd.DataFrame) -> pd.Series:
    """Per row: is it a control method (``kind == "control"``; without a ``kind`` value, a ``control_*`` name)?"""
    by_name = frame["method"].astype(str).isin(CONTROLS)
    if "kind" not in frame:
        return by_name
    kind = frame["kind"].astype("object")
    return kind.eq("control").where(kind.notna(), by_name).astype(bool)


def variant_labels(summary: pd.DataFrame, short_len: int = 48) -> Tuple[pd.Series, Dict[str, str]]:
    """Short row labels and their legend.

    Returns ``labels`` (aligned with ``summary.index``: the method label, with
    ``#k`` appended when the label occurs with several ``params`` in the summary,
    numbered in order of first appearance) and ``legend`` (label -> parameter
    text: for a label with several settings, the parameters that differ between
    them, or all of them when that text is at most ``short_len`` characters; for
    a single setting all its parameters; labels without parameters are left
    out).
    """
    params = summary["params"] if "params" in summary else pd.Series("", index=summary.index)
    key = params.astype(str)
    labels = pd.Series("", index=summary.index, dtype=object)
    legend: Dict[str, str] = {}
    for method in pd.unique(summary["method"].astype(str)):
        rows = summary["method"].astype(str) == method
        variants = list(pd.unique(key[rows]))
        dicts = [parse_params(params[rows & (key == v)].iloc[0]) for v in variants]
        keys = list(dict.fromkeys(k for d in dicts for k in d))  # in order of first appearance
        differing = [k for k in keys if len({json.dumps(d.get(k), sort_keys=True, default=str) for d in dicts}) > 1]
        for i, (v, d) in enumerate(zip(variants, dicts)):
            label = method if len(variants) == 1 else f"{method}#{i + 1}"
            labels[rows & (key == v)] = label
            text = params_text(d)
            if len(variants) > 1 and len(text) > short_len:
                text = params_text({k: d.get(k) for k in differing})
            if text:
                legend[label] = text
    return labels, legend


def decimals(values) -> int:
    """Decimals for one column: 0 when every value is a whole number, else three significant digits of the
    median non-zero magnitude (at most 5), and at least 3 when the column stays below 10."""
    v = np.abs(np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float))
    if v.size == 0:
        return 3
    if np.all(v == np.round(v)):
        return 0
    d = int(np.clip(2 - math.floor(math.log10(np.median(v[v > 0]))), 0, 5))
    return max(d, 3) if v.max() < 10 else d


def format_cell(mean, std=np.nan, lo=np.nan, hi=np.nan, d: int = 3) -> str:
    """``mean [lo,hi]`` when both bounds are finite, else ``mean ± std``, else ``mean``; ``d`` decimals for the
    mean and its interval alike."""
    f = lambda x: x is not None and not pd.isna(x) and np.isfinite(float(x))  # noqa: E731
    if not f(mean):
        return "n/a"
    if f(lo) and f(hi):
        return f"{mean:.{d}f} [{lo:.{d}f},{hi:.{d}f}]"
    if f(std):
        return f"{mean:.{d}f} ± {std:.{d}f}"
    return f"{mean:.{d}f}"


def metric_order(metrics, kinds=None) -> List[str]:
    """The metrics in order of first appearance, the cost metrics last.  ``kinds``: each metric's kind (aligned
    with ``metrics``, e.g. the summary's ``metric_kind`` column); without it, the kinds of result files written
    before rows carried one (:func:`xaibench.analysis.schema.legacy_kind`)."""
    metrics = list(metrics)
    kind_of = dict(zip(metrics, kinds)) if kinds is not None else {}

    def cost(m) -> bool:
        k = kind_of.get(m)
        return str(k if k is not None and pd.notna(k) and str(k) else legacy_kind(m)) == COST

    return sorted(pd.unique(pd.Series(metrics, dtype=object)), key=cost)


def _invalid_verdict(v) -> bool:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return False
    if isinstance(v, (bool, np.bool_)):
        return not bool(v)
    return str(v).strip().lower() in INVALID_VERDICTS


def _undetermined_verdict(v) -> bool:
    return isinstance(v, str) and v.strip().lower() in UNDETERMINED_VERDICTS


def undetermined_metrics(summary: pd.DataFrame, validity: Optional[pd.DataFrame] = None) -> Dict[tuple, str]:
    """``{(experiment, dataset, model, metric): reason}`` for the metrics whose validity is undetermined on a
    benchmark (``valid`` says so in the summary, or ``verdict`` in ``validity.csv``); the reason starts with the
    n the verdict would need where it is known."""
    reasons: Dict[tuple, str] = {}
    if validity is not None and len(validity) and {"dataset", "model", "metric", "verdict"} <= set(validity.columns):
        for _, r in validity[validity["verdict"].map(_undetermined_verdict)].iterrows():
            why = "" if pd.isna(r.get("reason", "")) else str(r.get("reason", ""))
            need = r.get("n_needed", None)
            if need is not None and pd.notna(need):
                why = f"needs n={int(need)}" + (f": {why}" if why else "")
            reasons[(r.get("experiment", None), r["dataset"], r["model"], r["metric"])] = why
    und = summary["valid"].map(_undetermined_verdict) if "valid" in summary else pd.Series(False, index=summary.index)
    out: Dict[tuple, str] = {}
    for combo, rows in summary.groupby(BENCH + ["metric"], sort=False, dropna=False):
        why = reasons.get(combo, reasons.get((None,) + tuple(combo[1:])))
        if why is None and bool(und[rows.index].any()):
            need = rows["n_needed"].dropna() if "n_needed" in rows else pd.Series(dtype=float)
            why = f"needs n={int(need.iloc[0])}" if len(need) and rows["n_needed"].nunique() == 1 else ""
        if why is not None:
            out[tuple(combo)] = why
    return out


def invalid_metrics(summary: pd.DataFrame, validity: Optional[pd.DataFrame] = None) -> Dict[tuple, str]:
    """``{(experiment, dataset, model, metric): reason}`` for the metrics judged invalid on a benchmark: ``valid``
    is False in the summary, or ``verdict`` says invalid in ``validity.csv`` (which gives the reason; without an
    ``experiment`` column its rows apply to every experiment)."""
    reasons: Dict[tuple, str] = {}
    if validity is not None and len(validity) and {"dataset", "model", "metric", "verdict"} <= set(validity.columns):
        for _, r in validity[validity["verdict"].map(_invalid_verdict)].iterrows():
            why = r.get("reason", "")
            key = (r.get("experiment", None), r["dataset"], r["model"], r["metric"])
            reasons[key] = "" if pd.isna(why) else str(why)
    bad = summary["valid"].map(_invalid_verdict) if "valid" in summary else pd.Series(False, index=summary.index)
    out: Dict[tuple, str] = {}
    for combo, rows in summary.groupby(BENCH + ["metric"], sort=False, dropna=False):
        why = reasons.get(combo, reasons.get((None,) + tuple(combo[1:])))
        if why is not None or bool(bad[rows.index].any()):
            out[tuple(combo)] = why or ""
    return out


def best_marks(block: pd.DataFrame) -> pd.Series:
    """``best`` / ``tied`` / '' per row of one benchmark x metric: the ``best`` column when present, else the
    best finite mean among the non-control rows (all rows equal to it)."""
    if "best" in block:
        return block["best"].map(lambda v: "" if pd.isna(v) else str(v))
    out = pd.Series("", index=block.index, dtype=object)
    cand = block[~is_control(block) & np.isfinite(pd.to_numeric(block["mean"], errors="coerce"))]
    if len(cand):
        hib = bool(cand["higher_is_better"].iloc[0]) if "higher_is_better" in cand else True
        top = cand["mean"].max() if hib else cand["mean"].min()
        out[cand.index[cand["mean"] == top]] = "best"
    return out


def mark_notes(mb: pd.DataFrame, metric: str) -> List[str]:
    """The note below a table for one benchmark x metric: why its column has no or fewer marks (``mark_note``,
    unless it only repeats an invalid / undetermined verdict), the best arm's lead over the next and each ``~``
    arm's paired difference to the best with its interval and the n at which it would be significant."""
    if "best" not in mb or "effect" not in mb:
        return []
    label = mb["_label"] if "_label" in mb else mb["method"].astype(str)
    eff = pd.to_numeric(mb["effect"], errors="coerce")
    lo = pd.to_numeric(mb.get("effect_ci_low", pd.Series(np.nan, index=mb.index)), errors="coerce")
    hi = pd.to_numeric(mb.get("effect_ci_high", pd.Series(np.nan, index=mb.index)), errors="coerce")
    need = mb["n_needed"] if "n_needed" in mb else pd.Series(np.nan, index=mb.index)
    d = decimals(eff.tolist() + lo.tolist() + hi.tolist())

    def diff(i):
        ci = f" [{lo[i]:.{d}f},{hi[i]:.{d}f}]" if np.isfinite(lo[i]) and np.isfinite(hi[i]) else ""
        return f"{eff[i]:.{d}f}{ci}"

    parts = []
    note = next((str(x) for x in mb.get("mark_note", pd.Series(dtype=object)) if isinstance(x, str) and x), "")
    if note and not note.startswith(("no marks: metric judged invalid", "no marks: validity undetermined")):
        parts.append(note)
    mark = mb["best"].map(lambda v: "" if pd.isna(v) else str(v))
    lead = [i for i in mb.index if mark[i] == "best" and np.isfinite(eff[i])]
    if lead:
        parts.append("* " + ", ".join(label[i] for i in lead) + f" ahead of the next by {diff(lead[0])}")
    ties = [i for i in mb.index if mark[i] == "tied" and np.isfinite(eff[i])]
    if ties:
        parts.append("~ behind the best by " + ", ".join(
            f"{label[i]} {diff(i)}" + (f" needs n={int(need[i])}" if pd.notna(need[i]) else "") for i in ties))
    return [f"{metric}: " + "; ".join(parts)] if parts else []


# --------------------------------------------------------------------------- the text table
def _wrap_header(name: str, suffix: str, width: int) -> List[str]:
    """The metric name (plus ``suffix``) split after underscores into the fewest lines of at most ``width``
    characters, balanced (the split with the shortest longest line); a part longer than ``width`` stays whole."""
    parts = name.split("_")
    tokens = [p + "_" for p in parts[:-1]] + [parts[-1] + suffix]
    best = None
    for cuts in itertools.product((False, True), repeat=len(tokens) - 1):  # True: a line break after token i
        lines = [tokens[0]]
        for cut, t in zip(cuts, tokens[1:]):
            lines.append(t) if cut else lines.__setitem__(-1, lines[-1] + t)
        too_long = sum(len(x) > width and "_" in x.rstrip("_") for x in lines)
        score = (too_long, len(lines), max(map(len, lines)))
        if best is None or score < best[0]:
            best = (score, lines)
    return best[1]


def _fit(s: str, w: int) -> str:
    return s if len(s) <= w else s[: max(w - 1, 0)] + "…"


def _aligned(cells: Dict[str, Tuple[str, str]]) -> Dict[str, Tuple[str, str]]:
    """Cells with their means right-aligned and their intervals left-aligned after them."""
    split = {k: (t.split(" ", 1) + [""])[:2] for k, (t, _) in cells.items()}
    mw = max((len(a) for a, _ in split.values()), default=0)
    rw = max((len(x) for _, x in split.values()), default=0)
    return {k: (split[k][0].rjust(mw) + (" " + split[k][1].ljust(rw) if rw else ""), mark)
            for k, (_, mark) in cells.items()}


def _cell(text: str, mark: str, w: int, paint) -> str:
    cell = _fit(text + (MARK.get(mark, " ") if text else " "), w).rjust(w)
    return paint(cell, mark) if mark in MARK else cell


def _by_metric(cols, rows, n_methods, width, title, paint) -> List[List[str]]:
    """The arms as rows and the metrics as columns, split into blocks within ``width``; one list of lines each."""
    label_w = min(max(len("method"), *(len(r) for r in rows)), 28)
    avail = max(width - label_w - len(_SEP), 12)
    laid = []  # (header lines, cells, width, invalid)
    for m, suffix, cells, bad in cols:
        cells = _aligned(cells)
        w = max([len(t) + 1 for t, _ in cells.values()] + [len(p) + 1 for p in m.split("_")[:-1]] +
                [len(m.split("_")[-1] + suffix), 6])
        if len(m + suffix) <= w + 4:  # a little wider rather than a header over two lines
            w = max(w, len(m + suffix))
        w = min(w, avail)
        laid.append(([_fit(x, w) for x in _wrap_header(m, suffix, w)], cells, w, bad))
    blocks, cur, used = [], [], label_w
    for c in laid:
        if cur and used + len(_SEP) + c[2] > width:
            blocks.append(cur)
            cur, used = [], label_w
        cur.append(c)
        used += len(_SEP) + c[2]
    blocks.append(cur)
    out, first = [], 0
    for block in blocks:
        part = f"  (metrics {first + 1}-{first + len(block)} of {len(laid)})" if len(blocks) > 1 else ""
        first += len(block)
        lines = [_fit(f"== {title}{part} ==", width)]
        n_head = max(len(c[0]) for c in block)
        for li in range(n_head):
            cells = []
            for head, _, w, bad in block:
                text = head[li - (n_head - len(head))] if li >= n_head - len(head) else ""
                cells.append(paint(text.rjust(w), "invalid") if bad and text else text.rjust(w))
            lines.append(("method" if li == n_head - 1 else "").ljust(label_w) + _SEP + _SEP.join(cells))
        lines.append("-" * label_w + _SEP + _SEP.join("-" * c[2] for c in block))
        for ri, r in enumerate(rows):
            control = ri >= n_methods
            if control and ri == n_methods:
                lines.append(("·· controls " + "·" * width)[:label_w + sum(len(_SEP) + c[2] for c in block)])
            cells = [_cell(*cmap.get(r, ("", "")), w, paint) for _, cmap, w, _ in block]
            line = _fit(r, label_w).ljust(label_w) + _SEP + _SEP.join(cells)
            lines.append(paint(line, "control") if control else line)
        out.append(lines)
    return out


def _by_arm(cols, rows, n_methods, kind_of, width, title, paint) -> Optional[List[str]]:
    """The metrics as rows and the arms as columns (for runs with few arms and many metrics), with the
    descriptive and cost outputs under their own separators; None when it does not fit within ``width``."""
    label_w = max([len("metric")] + [len(m + suffix) for m, suffix, _, _ in cols])
    if label_w > 40:
        return None
    per_arm = {r: _aligned({m: cells.get(r, ("", "")) for m, _, cells, _ in cols}) for r in rows}
    widths = {r: max([len(r)] + [len(t) + 1 for t, _ in per_arm[r].values()]) for r in rows}
    sep = {r: (" | " if i == n_methods and i > 0 else _SEP) for i, r in enumerate(rows)}
    total = label_w + sum(len(sep[r]) + widths[r] for r in rows)
    if total > width:
        return None
    lines = [_fit(f"== {title} ==", width),
             "metric".ljust(label_w) + "".join(sep[r] + paint(r.rjust(widths[r]), "control") if i >= n_methods
                                               else sep[r] + r.rjust(widths[r]) for i, r in enumerate(rows)),
             "-" * label_w + "".join(sep[r] + "-" * widths[r] for r in rows)]
    rank = {DESCRIPTIVE: 1, COST: 2}
    group = None
    for m, suffix, _, bad in sorted(cols, key=lambda c: rank.get(str(kind_of.get(c[0], "")), 0)):
        kind = str(kind_of.get(m, ""))
        g = kind if kind in (DESCRIPTIVE, COST) else ""
        if g != group and g:
            lines.append(f"·· {g}")
        group = g
        head = (m + suffix).ljust(label_w)
        lines.append((paint(head, "invalid") if bad else head) +
                     "".join(sep[r] + _cell(*per_arm[r][m], widths[r], paint) for r in rows))
    return lines


def format_table(summary: pd.DataFrame, width: int = 120, validity: Optional[pd.DataFrame] = None,
                 color: bool = False) -> str:
    """The summary as plain text within ``width`` columns (see the module docstring).

    ``validity``: the run's ``validity.csv`` (optional) for the ✗ footnotes' reasons.
    ``color``: ANSI colours (best green, controls dim, invalid red); off by default so logs stay plain.
    """
    if summary is None or summary.empty:
        return "(no results)"
    s = summary.reset_index(drop=True).copy()
    for c in BENCH:
        if c not in s:
            s[c] = ""
    for c in ("std", "ci_low", "ci_high"):
        s[c] = pd.to_numeric(s[c], errors="coerce") if c in s else np.nan
    s["mean"] = pd.to_numeric(s["mean"], errors="coerce")
    if "higher_is_better" not in s:
        s["higher_is_better"] = np.nan
    s["_label"], legend = variant_labels(s)
    s["_control"] = is_control(s)
    invalid = invalid_metrics(s, validity)
    undetermined = undetermined_metrics(s, validity)
    paint = (lambda text, what: f"{_ANSI[what]}{text}{_ANSI['end']}") if color else (lambda text, what: text)

    out: List[str] = []
    for bench, b in s.groupby(BENCH, sort=False, dropna=False):
        metrics = metric_order(b["metric"].tolist(), metric_kinds(b).tolist())
        # the tie rule's standard errors are not columns of their own: one note per benchmark gives them
        tie_se = {m: tie_se_base(m, metrics) for m in metrics}
        tie_se = {m: base for m, base in tie_se.items() if base is not None}
        metrics = [m for m in metrics if m not in tie_se]
        kind_of = dict(zip(b["metric"], metric_kinds(b)))
        rows = list(pd.unique(b.loc[~b["_control"], "_label"])) + list(pd.unique(b.loc[b["_control"], "_label"]))
        n_methods = int((~b.drop_duplicates("_label")["_control"]).sum())
        cols = []  # (metric, suffix, {label: (text, mark)}, invalid)
        for m in metrics:
            mb = b[b["metric"] == m]
            d = decimals(mb["mean"].tolist() + mb["ci_low"].tolist() + mb["ci_high"].tolist())
            marks = best_marks(mb)
            cells = {r["_label"]: (format_cell(r["mean"], r["std"], r["ci_low"], r["ci_high"], d),
                                   marks[i]) for i, r in mb.iterrows()}
            hib = mb["higher_is_better"].dropna()
            arrow = "" if hib.empty else (" ↑" if bool(hib.iloc[0]) else " ↓")
            bad = tuple(bench) + (m,) in invalid
            suffix = arrow + (" ✗" if bad else " ?" if tuple(bench) + (m,) in undetermined else "")
            cols.append((m, suffix, cells, bad))
        name = " · ".join(str(x) for x in bench if str(x) not in ("", "nan"))
        n = pd.to_numeric(b["n"], errors="coerce").dropna() if "n" in b else pd.Series(dtype=float)
        n_text = f"  (n={int(n.max())})" if len(n) and n.nunique() == 1 else ""
        wide = _by_metric(cols, rows, n_methods, width, name + n_text, paint)
        if len(wide) > 1:  # more than one block: one table with the metrics as rows, if that fits
            tall = _by_arm(cols, rows, n_methods, kind_of, width, name + n_text, paint)
            wide = [tall] if tall is not None else wide
        for lines in wide:
            out.extend(lines + [""])
        notes = [f"✗ {m}: " + (invalid[tuple(bench) + (m,)] or "judged invalid on this benchmark")
                 for m in metrics if tuple(bench) + (m,) in invalid]
        by_reason: Dict[str, List[str]] = {}  # metrics with the same reason share one line
        for m in metrics:
            if tuple(bench) + (m,) in undetermined:
                by_reason.setdefault(undetermined[tuple(bench) + (m,)], []).append(m)
        notes += [f"? {', '.join(ms)}: validity undetermined" + (f", {why}" if why else "")
                  for why, ms in by_reason.items()]
        if tie_se:
            se = {base: pd.to_numeric(b.loc[b["metric"] == m, "mean"], errors="coerce").max()
                  for m, base in tie_se.items()}
            notes.append("tie-order standard error (mean over samples, largest arm; docs/ties.md): " + ", ".join(
                f"{base} {v:.2g}" for base, v in se.items() if np.isfinite(v)))
        notes += [n for m in metrics for n in mark_notes(b[b["metric"] == m], m)]
        if "n_undefined" in b:
            und = b[pd.to_numeric(b["n_undefined"], errors="coerce").fillna(0) > 0]
            for m, u in und.groupby("metric", sort=False):
                notes.append(f"undefined values left out of {m}: " + ", ".join(
                    f"{r['_label']} {int(r['n_undefined'])}" for _, r in u.iterrows()))
        for n in notes:
            out.extend(textwrap.wrap(n, width, subsequent_indent="    ") or [""])
        if notes:
            out.append("")
    has_ci = bool(np.isfinite(s["ci_low"]).any())
    marked = "best" in s
    out.append(textwrap.fill(
        ("cells: mean [confidence interval]" if has_ci else "cells: mean ± std") +
        ("; * best (keeps the top mean in >= 95 % of bootstrap resamples of the samples); ~ not significantly "
         "different from the best (paired Wilcoxon, Holm over the comparisons with the best); marks only on "
         "valid metrics; notes: the difference to the best [95 % CI] and the n at which it would be significant "
         "with power 0.8" if marked else "; * best in column") +
        "; ↑/↓ higher/lower is better" + ("; ✗ metric judged invalid on the benchmark" if invalid else "") +
        ("; ? validity undetermined (the n it would need)" if undetermined else ""),
        width))
    if legend:
        out.append("parameters:")
        lw = min(max(len(k) for k in legend), 28)
        for k, v in legend.items():
            out.extend(textwrap.wrap(f"  {_fit(k, lw).ljust(lw)}  {v}", width, subsequent_indent=" " * (lw + 4)))
    return "\n".join(line.rstrip() for line in out)


def format_validity(validity: pd.DataFrame, width: int = 120) -> str:
    """The validity verdicts per benchmark, one wrapped line each (quality metrics only when the table says
    which metrics are quality scores)."""
    from .schema import QUALITY

    v = validity
    if "metric_kind" in v:
        v = v[v["metric_kind"].astype(str) == QUALITY]
    lines = ["metric validity (controls: gt > random, gt > inverted gt, constant not > random; validity.csv):"]
    for (d, m), g in v.groupby(["dataset", "model"], sort=False):
        parts = [f"{verdict} {', '.join(g[g.verdict == verdict].metric)}"
                 for verdict in pd.unique(g["verdict"].astype(str))]
        lines.append(textwrap.fill(f"{m} on {d}: " + "; ".join(parts), width, subsequent_indent="    "))
    return "\n".join(lines)
