"""xaibench-gate: the regression gate CI runs.

    xaibench-gate CURRENT BASELINE [--atol 0.02] [--rtol 0.05] [--sample-atol 0.1]
                  [--ignore '*_time_s,*_mem_mb'] [--markdown FILE] [--update]

CURRENT and BASELINE are run folders or their summary.csv files.  A key is
(experiment, dataset, model, method, params, metric); every key of either
summary gets exactly one status.

Rule.  Beside each summary the gate looks for the per-sample results
(results.parquet, else results.csv, in the same folder).  When both runs have
them, values are paired by key and sample_id and, per key,

    d   = mean over paired samples of (current - baseline)     [NaN pairs left out]
          (a key with a dataset-level "__aggregate__" row: that row's difference)
    tol = atol + rtol * |baseline mean|

Without per-sample files beside both summaries the gate says so and uses
d = current mean - baseline mean.  The status of a key is the first that applies:

    missing        the key is only in the baseline                           FAIL
    new            the key is only in the current run (record it: --update)  FAIL
    non-finite     an inf mean or sample, or NaN where the baseline is finite FAIL
    fewer-samples  n (non-NaN samples) dropped, or baseline sample_ids absent FAIL
    more-samples   n grew, or sample_ids the baseline lacks                  FAIL
    regressed      d moved in the metric's worse direction by more than tol  FAIL
    samples-moved  one sample (aggregate rows included) moved by more than
                   --sample-atol, in either direction                        FAIL
    improved       d moved in the better direction by more than tol          pass
    ok             none of the above                                         pass

The worse direction comes from the baseline's higher_is_better column.
Ignored, never silently: metrics matching --ignore (default: wall-clock time
and memory, '*_time_s' and '*_mem_mb', e.g. explain_time_s, eval_time_s,
explain_peak_mem_mb: they depend on the machine and its load) are left out and
listed in the output with the reason.  Counts (n_forward, ...) are compared.

Exit status: 0 pass, 1 regression (any FAIL status), 2 unusable input or
options (missing, empty or malformed file, folder without summary.csv, baseline
without rows, negative tolerance); exit 2 prints one line saying what is wrong
and how to fix it.  --update copies the current summary (and per-sample file)
over the baseline atomically and compares nothing.  --markdown FILE writes the
verdict and a table of what moved; with GITHUB_STEP_SUMMARY set the same
Markdown is appended to that file.  See docs/gate.md.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import os
import shutil
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from ..errors import UserError
from .results import AGGREGATE, KEYS

DEFAULT_IGNORE = ("*_time_s", "*_mem_mb")
IGNORE_REASON = "wall-clock time or memory: depends on the machine and its load"
SAMPLE_FILES = ("results.parquet", "results.csv")
FAILING = ("missing", "new", "non-finite", "fewer-samples", "more-samples", "regressed", "samples-moved")
ORDER = FAILING + ("improved", "ok")
WIDTH = 120


# ----------------------------------------------------------------------------- reading and checking inputs

@dataclass
class Run:
    """One side of the comparison: its summary, and its per-sample rows when they exist."""

    summary: pd.DataFrame
    summary_path: Path
    samples: Optional[pd.DataFrame] = None
    samples_path: Optional[Path] = None


def load_run(path, role: str = "current") -> Run:
    """Read a run folder or a summary.csv (and the per-sample file beside it); UserError if unusable."""
    path = Path(path)
    if path.is_dir():
        if not (path / "summary.csv").is_file():
            raise UserError(f"{role} {path} is a folder without summary.csv: pass a run folder written by "
                            "xaibench or a summary.csv file")
        path = path / "summary.csv"
    elif not path.exists():
        raise UserError(f"{role} {path} does not exist: pass a run folder or its summary.csv "
                        "(`make gate` writes outputs/ci_gate)")
    summary = summary_frame(_read(path, role), f"{role} {path}")
    run = Run(summary, path)
    for name in SAMPLE_FILES:
        f = path.parent / name
        if f.is_file():
            where = f"{role} {f}"
            run.samples, run.samples_path = samples_frame(_read(f, role), where), f
            _check_consistent(summary, run.samples, where)
            break
    return run


def _read(path: Path, role: str) -> pd.DataFrame:
    fix = "restore it (git checkout) or re-run the experiment" if role == "baseline" else "re-run the experiment"
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype={c: str for c in KEYS + ["sample_id"]})
    except pd.errors.EmptyDataError:
        raise UserError(f"{role} {path} is empty: {fix}") from None
    except OSError as e:
        raise UserError(f"cannot read {role} {path} ({e.strerror or e}): check that it is a readable file") from None
    except Exception as e:  # pandas / pyarrow parse errors come in many types
        first = (str(e).splitlines() or [""])[0][:80]
        raise UserError(f"{role} {path} is not a readable table ({type(e).__name__}: {first}): {fix}") from None


def _require(df: pd.DataFrame, cols, where: str, what: str) -> pd.DataFrame:
    lacking = [c for c in cols if c not in df.columns]
    if lacking:
        raise UserError(f"{where} lacks the column(s) {', '.join(lacking)}: it is not a {what} written by xaibench; "
                        f"pass the {what} of a run")
    df = df[list(cols)].copy()
    df["params"] = df["params"].fillna("")  # a component without parameters may have empty params
    keys = [c for c in cols if c in KEYS or c == "sample_id"]
    blank = df[keys].isna().any(axis=1)
    if blank.any():
        raise UserError(f"{where}: row {_row(df, blank)} has an empty key column ({', '.join(keys)}): the file is "
                        "truncated or edited by hand; regenerate it")
    df[keys] = df[keys].astype(str)
    return df


def _row(df: pd.DataFrame, mask) -> int:
    """1-based data row of the first True in mask (the CSV line is this + 1)."""
    return int(np.flatnonzero(np.asarray(mask))[0]) + 1


def _numeric(df: pd.DataFrame, col: str, where: str):
    v = pd.to_numeric(df[col], errors="coerce")
    bad = v.isna() & df[col].notna()
    if bad.any():
        raise UserError(f"{where}: column '{col}' holds a non-number ({df[col][bad].iloc[0]!r} in data row "
                        f"{_row(df, bad)}): fix or regenerate the file")
    df[col] = v.astype(float)


def _no_duplicates(df: pd.DataFrame, cols, where: str):
    dup = df.duplicated(cols)
    if dup.any():
        raise UserError(f"{where}: data row {_row(df, dup)} repeats the key {'/'.join(df[cols][dup].iloc[0])}: "
                        "regenerate the file from one run")


def summary_frame(df: pd.DataFrame, where: str = "summary") -> pd.DataFrame:
    """Check a summary table: key columns, numeric mean and n, boolean higher_is_better, unique keys."""
    df = _require(df, KEYS + ["mean", "n", "higher_is_better"], where, "summary.csv")
    _numeric(df, "mean", where)
    _numeric(df, "n", where)
    as_bool = {"true": True, "1": True, "1.0": True, "false": False, "0": False, "0.0": False}
    hib = df["higher_is_better"].map(lambda v: as_bool.get(str(v).strip().lower()))
    if hib.isna().any():
        raise UserError(f"{where}: column 'higher_is_better' must be True or False (data row {_row(df, hib.isna())} "
                        f"holds {df['higher_is_better'][hib.isna()].iloc[0]!r}): fix or regenerate the file")
    df["higher_is_better"] = hib.astype(bool)
    _no_duplicates(df, KEYS, where)
    return df


def samples_frame(df: pd.DataFrame, where: str = "per-sample results") -> pd.DataFrame:
    """Check a per-sample table (rows of skipped pairs are dropped: they have no values)."""
    df = _require(df, KEYS + ["sample_id", "value"], where, "per-sample results file")
    df = df[df["metric"] != "skipped"].reset_index(drop=True)
    _numeric(df, "value", where)
    _no_duplicates(df, KEYS + ["sample_id"], where)
    return df


def _check_consistent(summary: pd.DataFrame, samples: pd.DataFrame, where: str):
    """The per-sample file must hold the summary's keys, with n non-NaN samples per key (aggregate keys: any n)."""
    s_keys = set(map(tuple, summary[KEYS].values))
    p_keys = set(map(tuple, samples[KEYS].values))
    fix = "they must come from the same run: re-run it (or rewrite a baseline with --update)"
    if s_keys != p_keys:
        k = sorted(s_keys ^ p_keys)[0]
        raise UserError(f"{where} and its summary.csv disagree on {len(s_keys ^ p_keys)} key(s), e.g. "
                        f"{'/'.join(k[1:4] + k[5:])}: {fix}")
    agg = samples["sample_id"] == AGGREGATE
    counts = samples[~agg & samples["value"].notna()].groupby(KEYS).size()
    n = summary.set_index(KEYS)["n"]
    counts = counts.reindex(n.index, fill_value=0)
    check = ~n.index.isin(samples[agg].set_index(KEYS).index) & n.notna()
    bad = check & (counts.values != n.values)
    if bad.any():
        k = n.index[bad][0]
        raise UserError(f"{where} has {counts[bad].iloc[0]} values for {'/'.join(k[1:4] + k[5:])} where its "
                        f"summary.csv says n={n[bad].iloc[0]:g}: {fix}")


# ----------------------------------------------------------------------------- the comparison

def ignored_metrics(metrics, patterns=DEFAULT_IGNORE) -> dict:
    """{metric: reason} for the metrics matching one of the --ignore patterns (names or globs)."""
    out = {}
    for m in sorted(set(metrics)):
        hit = next((p for p in patterns if fnmatch.fnmatchcase(m, p)), None)
        if hit is not None:
            out[m] = IGNORE_REASON if hit in DEFAULT_IGNORE else f"--ignore {hit}"
    return out


def _keep(df: pd.DataFrame, patterns) -> pd.DataFrame:
    drop = ignored_metrics(df["metric"], patterns)
    return df[~df["metric"].isin(list(drop))]


def compare(current: pd.DataFrame, baseline: pd.DataFrame, atol=0.02, rtol=0.05, ignore=DEFAULT_IGNORE,
            current_samples: Optional[pd.DataFrame] = None, baseline_samples: Optional[pd.DataFrame] = None,
            sample_atol=0.1) -> pd.DataFrame:
    """One row per key of either summary (ignored metrics left out): the key columns, ``baseline``,
    ``current`` (the means), ``delta`` (d of the module's rule), ``n_base``, ``n_cur``, ``status``
    (see the module docstring) and ``detail``.  Per-sample frames are used when both are given."""
    base = _keep(summary_frame(baseline, "baseline summary"), ignore)
    cur = _keep(summary_frame(current, "current summary"), ignore)
    paired = {}
    if current_samples is not None and baseline_samples is not None:
        paired = _paired(_keep(samples_frame(current_samples, "current per-sample results"), ignore),
                         _keep(samples_frame(baseline_samples, "baseline per-sample results"), ignore), sample_atol)
    m = base.merge(cur, on=KEYS, how="outer", suffixes=("_base", "_cur"), indicator=True, sort=False)
    out = []
    for r in m.to_dict("records"):
        key = tuple(r[k] for k in KEYS)
        status, delta, detail = _status(r, paired.get(key), atol, rtol, sample_atol)
        out.append(dict({k: r[k] for k in KEYS}, baseline=r["mean_base"], current=r["mean_cur"], delta=delta,
                        n_base=r["n_base"], n_cur=r["n_cur"], status=status, detail=detail))
    cols = KEYS + ["baseline", "current", "delta", "n_base", "n_cur", "status", "detail"]
    table = pd.DataFrame(out, columns=cols)
    rank = table["status"].map({s: i for i, s in enumerate(ORDER)})
    return table.iloc[np.argsort(rank.values, kind="stable")].reset_index(drop=True)


def _paired(cur: pd.DataFrame, base: pd.DataFrame, sample_atol: float) -> dict:
    """Per key: d (mean paired difference, or the aggregate row's), and the sample_ids that moved,
    are missing, are new, or are non-finite."""
    m = base.merge(cur, on=KEYS + ["sample_id"], how="outer", suffixes=("_base", "_cur"), indicator=True)
    b, c = m["value_base"].to_numpy(float), m["value_cur"].to_numpy(float)
    both = (m["_merge"] == "both").to_numpy()
    with np.errstate(invalid="ignore"):
        diff = np.where(both, c - b, np.nan)
    m["diff"] = diff
    flags = {"moved": both & (np.abs(diff) > sample_atol),
             "nonfinite": both & (np.isinf(b) | np.isinf(c) | (np.isnan(c) & np.isfinite(b))),
             "missing": (m["_merge"] == "left_only").to_numpy(), "new": (m["_merge"] == "right_only").to_numpy()}
    # d: the aggregate row's difference where the key has one, else the mean of the finite paired differences
    is_agg = m["sample_id"] == AGGREGATE
    key_has_agg = is_agg.groupby([m[k] for k in KEYS], sort=False).transform("any")
    use = np.isfinite(diff) & (is_agg == key_has_agg).to_numpy()
    delta = m["diff"].where(use).groupby([m[k] for k in KEYS], sort=False).mean()
    out = {key: dict(delta=float(d), moved=[], nonfinite=[], missing=[], new=[]) for key, d in delta.items()}
    flagged = m[np.logical_or.reduce(list(flags.values()))].copy()
    for name, f in flags.items():
        flagged[name] = f[flagged.index]
    flagged = flagged.iloc[np.argsort(-np.nan_to_num(np.abs(flagged["diff"].to_numpy()), nan=-1), kind="stable")]
    for r in flagged.to_dict("records"):  # largest moves first
        rec = out[tuple(r[k] for k in KEYS)]
        if r["moved"]:
            rec["moved"].append((r["sample_id"], r["diff"]))
        if r["nonfinite"]:
            rec["nonfinite"].append((r["sample_id"], r["value_base"], r["value_cur"]))
        if r["missing"] or r["new"]:
            rec["missing" if r["missing"] else "new"].append(r["sample_id"])
    return out


def _ids(ids, k=3) -> str:
    ids = list(ids)
    return ", ".join(map(str, ids[:k])) + (f" (+{len(ids) - k} more)" if len(ids) > k else "")


def _status(r: dict, p: Optional[dict], atol: float, rtol: float, sample_atol: float):
    """(status, delta, detail) of one merged summary row; ``p`` is its paired per-sample record or None."""
    if r["_merge"] == "left_only":
        return "missing", math.nan, "not in the current run"
    if r["_merge"] == "right_only":
        return "new", math.nan, "no baseline (--update)"
    b, c, nb, nc = r["mean_base"], r["mean_cur"], r["n_base"], r["n_cur"]
    p = p or {}
    d = p["delta"] if p else c - b
    if math.isinf(b) or math.isinf(c) or (math.isnan(c) and not math.isnan(b)):
        return "non-finite", d, f"mean {b:.4g} -> {c:.4g}"
    if p.get("nonfinite"):
        s = p["nonfinite"]
        return "non-finite", d, f"{len(s)} sample(s) {s[0][1]:.4g} -> {s[0][2]:.4g}: {_ids(x[0] for x in s)}"
    if p.get("missing") or (not math.isnan(nb) and not nc >= nb):
        lost = f"; absent: {_ids(p['missing'])}" if p.get("missing") else ""
        return "fewer-samples", d, f"n {nb:g} -> {nc:g}{lost}"
    if p.get("new") or (not math.isnan(nb) and nc > nb):
        extra = f"; new: {_ids(p['new'])}" if p.get("new") else ""
        return "more-samples", d, f"n {nb:g} -> {nc:g}{extra}"
    tol = atol + rtol * abs(b) if not math.isnan(b) else atol
    worse = -d if r["higher_is_better_base"] else d
    if worse > tol:
        return "regressed", d, f"worse by {abs(d):.3g} > tol {tol:.3g}"
    if p.get("moved"):
        s = p["moved"]
        return "samples-moved", d, f"{len(s)} moved > {sample_atol:g}, max {s[0][1]:+.3g} at {s[0][0]}"
    if -worse > tol:
        return "improved", d, f"better by {abs(d):.3g} > tol {tol:.3g}"
    if math.isnan(b) and not math.isnan(c):
        return "improved", d, "was NaN"
    return "ok", d, ""


def verdict(table: pd.DataFrame) -> str:
    """'PASS: 430 ok' or 'FAIL: 1 missing, 3 regressed, 426 ok' (counts in the order of the rule)."""
    counts = table["status"].value_counts()
    failed = any(counts.get(s, 0) for s in FAILING)
    parts = [f"{counts[s]} {s}" for s in ORDER if counts.get(s, 0)] or ["nothing compared"]
    return ("FAIL: " if failed else "PASS: ") + ", ".join(parts)


# ----------------------------------------------------------------------------- reports

def _short_params(p: str) -> str:
    try:
        return ",".join(f"{k}={v}" for k, v in json.loads(p).items())
    except (ValueError, AttributeError):
        return str(p)


def _labels(table: pd.DataFrame, full: bool) -> pd.Series:
    """A readable key: model/method/metric, with experiment, dataset and params only where they tell rows
    apart (``full``: always the dataset and params)."""
    t = table.astype({k: str for k in KEYS})
    exp = t["experiment"].nunique() > 1
    ds = full or (t.groupby("model")["dataset"].nunique() > 1).any()
    prm = full or (t.groupby(["experiment", "dataset", "model", "method", "metric"])["params"].nunique() > 1).any()
    parts = [t["model"], t["method"]]
    if prm:
        parts[1] = [f"{m}[{_short_params(p)}]" if _short_params(p) else m for m, p in zip(t["method"], t["params"])]
    parts = ([t["experiment"]] if exp else []) + ([t["dataset"]] if ds else []) + parts + [t["metric"]]
    sep = " / " if full else "/"
    return pd.Series([sep.join(x) for x in zip(*parts)], index=table.index, dtype=object)


def _cells(r) -> tuple:
    """baseline, current and delta as text ('-' where the key is absent from one side)."""
    absent = {"new": (0, 2), "missing": (1, 2)}.get(r["status"], ())
    vals = [f"{r['baseline']:.4g}", f"{r['current']:.4g}", f"{r['delta']:+.4g}"]
    return tuple("-" if i in absent else v for i, v in enumerate(vals))


def _clip(s: str, w: int) -> str:
    return s if len(s) <= w else s[: w // 2 - 1] + "…" + s[-(w - w // 2):]


def report(table: pd.DataFrame, header: list, max_rows: int = 40) -> str:
    """Terminal report (lines of at most 120 characters): header lines, the rows that are not ok, the verdict."""
    lines = [x for h in header for x in textwrap.wrap(h, WIDTH, subsequent_indent="    ")]
    shown = table[table["status"] != "ok"]
    if len(shown):
        labels = _labels(table, full=False)
        w = min(50, max(3, labels[shown.index].str.len().max()))
        lines.append(f"{'status':<13} {'key':<{w}} {'baseline':>9} {'current':>9} {'delta':>10}  detail")
        for i, r in shown.head(max_rows).iterrows():
            b, c, d = _cells(r)
            line = f"{r['status']:<13} {_clip(labels[i], w):<{w}} {b:>9} {c:>9} {d:>10}  {r['detail']}"
            lines.append(line if len(line) <= WIDTH else line[: WIDTH - 1] + "…")
        if len(shown) > max_rows:
            lines.append(f"... {len(shown) - max_rows} more rows not shown: write them all with --markdown FILE")
    lines.append(verdict(table))
    return "\n".join(lines)


def markdown(table: pd.DataFrame, header: list) -> str:
    """The verdict line first, then the header lines and a table of every key that is not ok."""
    out = [verdict(table), ""] + [f"- {h}" for h in header] + [""]
    shown = table[table["status"] != "ok"]
    if not len(shown):
        return "\n".join(out + ["Nothing moved beyond the tolerances.", ""])
    out += ["| key | baseline | current | delta | status | detail |", "|---|---:|---:|---:|---|---|"]
    labels = _labels(table, full=True)
    for i, r in shown.iterrows():
        status = f"**{r['status']}**" if r["status"] in FAILING else r["status"]
        cells = [labels[i], *_cells(r), status, r["detail"]]
        out.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(out + [""])


# ----------------------------------------------------------------------------- --update

def _atomic_copy(src: Path, dst: Path):
    """Copy src over dst through a temporary file in dst's folder and os.replace (readers never see half a file)."""
    if dst.exists() and src.resolve() == dst.resolve():
        return
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def update(cur: Run, baseline: Path) -> list:
    """Write the current run as the baseline; return the lines to print."""
    if cur.summary.empty:
        raise UserError(f"refusing to write an empty baseline: the current summary {cur.summary_path} has no rows; "
                        "re-run the experiment first")
    baseline = Path(baseline)
    target = baseline / "summary.csv" if baseline.is_dir() or baseline.suffix != ".csv" else baseline
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _atomic_copy(cur.summary_path, target)
        done = [f"baseline {target} <- {cur.summary_path}"]
        keep = None
        if cur.samples_path is not None:
            keep = target.parent / cur.samples_path.name
            _atomic_copy(cur.samples_path, keep)
            done.append(f"baseline {keep} <- {cur.samples_path}")
        if target.parent.resolve() != cur.summary_path.parent.resolve():
            for name in SAMPLE_FILES:  # a stale per-sample file would be paired with the new summary
                f = target.parent / name
                if f.is_file() and f != keep:
                    f.unlink()
                    done.append(f"removed stale {f}")
    except OSError as e:
        raise UserError(f"cannot write the baseline {target} ({e.strerror or e}): check the folder's permissions")
    return done


# ----------------------------------------------------------------------------- command line

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xaibench-gate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("current", type=Path, help="the run to check: its folder or its summary.csv")
    p.add_argument("baseline", type=Path, help="the committed baseline: folder or summary.csv")
    p.add_argument("--atol", type=float, default=0.02, help="absolute tolerance of d (default 0.02)")
    p.add_argument("--rtol", type=float, default=0.05, help="tolerance of d relative to |baseline mean| (0.05)")
    p.add_argument("--sample-atol", type=float, default=0.1,
                   help="largest move of one sample, either direction (default 0.1)")
    p.add_argument("--ignore", default=",".join(DEFAULT_IGNORE),
                   help="comma-separated metric names or globs left out (default '%(default)s'; '' compares all)")
    p.add_argument("--markdown", type=Path, metavar="FILE", help="write the verdict and a table of what moved")
    p.add_argument("--update", action="store_true",
                   help="write the current summary (and per-sample file) as the baseline; compares nothing")
    return p


def _publish(text: str, md_file: Optional[Path]):
    """Write the Markdown to --markdown and append it to $GITHUB_STEP_SUMMARY when that is set."""
    targets = [(md_file, "w")] if md_file else []
    if os.environ.get("GITHUB_STEP_SUMMARY"):
        targets.append((Path(os.environ["GITHUB_STEP_SUMMARY"]), "a"))
    for f, mode in targets:
        try:
            with open(f, mode, encoding="utf-8") as fh:
                fh.write(text + "\n")
        except OSError as e:
            raise UserError(f"cannot write the Markdown report {f} ({e.strerror or e}): pass a writable path")


def _gate(a) -> int:
    for name in ("atol", "rtol", "sample_atol"):
        v = getattr(a, name)
        if not (math.isfinite(v) and v >= 0):
            raise UserError(f"--{name.replace('_', '-')}={v} is not allowed: tolerances are finite numbers >= 0")
    cur = load_run(a.current, "current")
    if a.update:
        print("\n".join(update(cur, a.baseline)))
        return 0
    base = load_run(a.baseline, "baseline")
    if base.summary.empty:
        raise UserError(f"the baseline {base.summary_path} has no rows: restore it (git checkout) or write it "
                        "from a good run with --update")
    patterns = tuple(x.strip() for x in a.ignore.split(",") if x.strip())
    paired = cur.samples is not None and base.samples is not None
    table = compare(cur.summary, base.summary, a.atol, a.rtol, patterns,
                    cur.samples if paired else None, base.samples if paired else None, a.sample_atol)
    header = [f"xaibench-gate: {cur.summary_path} vs baseline {base.summary_path}"]
    if paired:
        header.append(f"paired per-sample comparison ({cur.samples_path.name} vs {base.samples_path.name}); "
                      f"any sample moved > {a.sample_atol:g} fails")
    else:
        lacking = [r.summary_path for r in (cur, base) if r.samples is None]
        header.append(f"means only: no results.parquet/results.csv beside {' and '.join(map(str, lacking))}")
    header.append(f"regressed: d worse than {a.atol:g} + {a.rtol:g}*|baseline mean| (d = mean paired difference)"
                  if paired else f"regressed: mean worse than {a.atol:g} + {a.rtol:g}*|baseline mean|")
    ignored = ignored_metrics(pd.concat([cur.summary["metric"], base.summary["metric"]]), patterns)
    for reason in sorted(set(ignored.values())):
        header.append(f"ignored ({reason}): {', '.join(m for m, r in ignored.items() if r == reason)}")
    if cur.summary.empty:
        header.append(f"the current summary {cur.summary_path} has no rows: the run produced nothing")
    print(report(table, header))
    if a.markdown or os.environ.get("GITHUB_STEP_SUMMARY"):
        _publish(markdown(table, header), a.markdown)
    return 1 if table["status"].isin(FAILING).any() else 0


def main(argv=None) -> int:
    try:
        a = _parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2): argparse has printed the message
        return int(e.code or 0)
    try:
        return _gate(a)
    except UserError as e:
        print(f"xaibench-gate: error: {e}", file=sys.stderr)
        try:
            if a.markdown or os.environ.get("GITHUB_STEP_SUMMARY"):
                _publish(f"ERROR (exit 2): {e}", a.markdown)
        except UserError as e2:
            print(f"xaibench-gate: error: {e2}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
