"""xaibench-gate: the regression gate CI runs.

    xaibench-gate CURRENT BASELINE [--atol 0.02] [--rtol 0.05] [--sample-atol 0.1] [--map-rtol 0.001]
                  [--ignore GLOBS] [--allow-change weights,data] [--refuse-change code,versions,config]
                  [--markdown FILE] [--update]

CURRENT and BASELINE are run folders written by xaibench (or the summary.csv in one).  The gate reads
summary.csv, the per-sample results (results.parquet, else results.csv), provenance.json, maps.npz and,
where present, run_config.json.

Refused (exit 2, one line naming the fix), before anything is compared:
  * a missing, empty, truncated or malformed file; a summary whose keys, n or means disagree with its
    per-sample file; a per-sample file with fewer rows than provenance.json's n_rows; an inf value, or a
    NaN mean over defined samples, in the baseline; a baseline without rows;
  * a folder written by an older xaibench (no metric_kind / metric_version / method_version columns or
    no fingerprint in provenance.json): regenerate the baseline with --update;
  * a run whose provenance.json status is not 'complete' (interrupted, failed), or a shard (shard=I/N);
  * other samples than the baseline: another n or other sample ids for a benchmark (data fingerprint);
  * other model weights or other data (the fingerprint's weights / data) unless --allow-change names them;
    code, versions and config differences are reported, and refused only when --refuse-change names them;
  * nothing to compare (e.g. --ignore '*').

Rule.  A key is (experiment, dataset, model, method, params, metric); an arm is a key without the metric.
Per-sample values are paired by key and sample_id and, per key,

    d   = mean over paired samples of (current - baseline)     [NaN pairs left out]
          (a key with a dataset-level "__aggregate__" row: that row's difference)
    tol = atol + rtol * |baseline mean|

The token maps of each arm in both runs are compared sample by sample: a map changed when
max |current - baseline| > map_rtol * (its largest |value| in either run), or its shape changed.
Each key, and each arm's maps, gets the first status that applies:

    missing         the key is only in the baseline                                  FAIL
    new             the key is only in the current run (record it: --update)         FAIL
    params-changed  the arm's parameters changed: a baseline-only and a current-only
                    arm of one method, paired ("staa lambda 1.0 -> 2.0")             FAIL
    method-changed  the method's method_version changed: a declared change           FAIL (declared)
    metric-changed  the metric's metric_version changed: a declared protocol change  FAIL (declared)
    maps-changed    an arm's token maps changed on some sample (method version kept) FAIL
    non-finite      an inf mean or sample, or NaN where the baseline is finite        FAIL
    fewer-samples   n (non-NaN samples) dropped, or baseline sample_ids absent        FAIL
    more-samples    n grew, or sample_ids the baseline lacks                          FAIL
    regressed       d moved in the metric's worse direction by more than tol          FAIL
    changed         a metric without a direction (kind descriptive) moved by > tol    FAIL
    samples-moved   one sample (aggregate rows included) moved by more than
                    --sample-atol, in either direction                                FAIL
    improved        d moved in the better direction by more than tol                  pass
    ok              none of the above                                                 pass

The direction comes from the baseline's higher_is_better column, the kind from its metric_kind column.
Not compared, and listed: rows of kind 'cost' other than the explanation's own model passes (n_forward,
n_backward): wall-clock time, memory and evaluation passes depend on the machine, its load and what a
resumed run had already computed.  Metrics matching --ignore are left out and listed too.

Exit status: 0 pass, 1 at least one FAIL status, 2 refused (above).  --update writes the current run's
gate files into the baseline folder (each atomically) and compares nothing.  --markdown FILE writes the
verdict and a table of what moved, with a legend of the keys; with GITHUB_STEP_SUMMARY set the same
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import pandas as pd

from ..errors import UserError
from .maps import FILE as MAPS_FILE
from .maps import read_maps
from .schema import AGGREGATE, COST, DESCRIPTIVE, KEYS, metric_kinds

SAMPLE_FILES = ("results.parquet", "results.csv")
#: the files --update copies: what the gate reads
GATE_FILES = ("summary.csv", "provenance.json", "run_config.json", MAPS_FILE)
#: the run's other tables, which a committed baseline keeps beside them for people to read: --update copies them
#: too, and removes the baseline's copy where the run has none (never a table of another run beside the new ones)
RUN_TABLES = ("validity.csv", "ranking.csv", "comparisons.csv", "report.html")
#: cost rows that are compared: the model passes of the explanation itself, counted around the method's call
#: (independent of the output cache and of what a resumed run had journaled); every other cost row is not
COMPARED_COSTS = ("n_forward", "n_backward")
COST_REASON = "cost rows that the machine, its load or a resume change"
NEW_COLUMNS = ("metric_kind", "metric_version", "method_version")
MAPS = "(token maps)"  # the metric column of an arm's maps row (metric names are identifiers: no clash)
PARTS = ("config", "code", "versions", "weights", "data")
REFUSED_BY_DEFAULT = ("weights", "data")
DECLARED = ("method-changed", "metric-changed")
FAILING = ("missing", "new", "params-changed") + DECLARED + (
    "maps-changed", "non-finite", "fewer-samples", "more-samples", "regressed", "changed", "samples-moved")
ORDER = FAILING + ("improved", "ok")
WIDTH = 120
ARM = KEYS[:5]  # experiment, dataset, model, method, params


# ----------------------------------------------------------------------------- reading and checking inputs

@dataclass
class Run:
    """One side of the comparison, read from a run folder and checked."""

    folder: Path
    summary: pd.DataFrame
    samples: pd.DataFrame
    samples_path: Path
    provenance: dict
    run_config: Optional[dict] = None
    role: str = "current"
    _maps: Optional[dict] = field(default=None, repr=False)

    @property
    def summary_path(self) -> Path:
        return self.folder / "summary.csv"

    @property
    def fingerprint(self) -> dict:
        return self.provenance.get("fingerprint") or {}

    @property
    def has_maps(self) -> bool:
        return (self.folder / MAPS_FILE).is_file()

    def maps(self) -> dict:
        if self._maps is None:
            try:
                self._maps = read_maps(self.folder)
            except ValueError as e:
                raise UserError(f"{self.role} {e}: {_fix(self.role)}") from None
        return self._maps


def _fix(role: str) -> str:
    return ("restore it (git checkout) or write it again from a good run with --update" if role == "baseline"
            else "re-run the experiment")


def _folder(path, role: str) -> Path:
    path = Path(path)
    if path.is_dir():
        if not (path / "summary.csv").is_file():
            raise UserError(f"{role} {path} is a folder without summary.csv: pass a run folder written by xaibench "
                            "(`make gate` writes outputs/ci_gate)")
        return path
    if not path.exists():
        raise UserError(f"{role} {path} does not exist: pass a run folder or its summary.csv "
                        "(`make gate` writes outputs/ci_gate)")
    if path.name != "summary.csv":
        raise UserError(f"{role} {path} is not a run folder or its summary.csv: pass the folder xaibench wrote")
    return path.parent


def load_run(path, role: str = "current") -> Run:
    """Read and check a run folder (or the folder of a summary.csv); UserError (exit 2) if unusable."""
    folder = _folder(path, role)
    prov = _read_json(folder / "provenance.json", role, required=True)
    status = prov.get("status")
    if status is not None and status != "complete":
        what = {"interrupted": "was interrupted", "failed": "failed"}.get(status, f"has status {status!r}")
        fix = ("finish it with resume=true (the command it printed) and run the gate again" if role == "current"
               else "write the baseline from a complete run with --update")
        raise UserError(f"{role} {folder} {what} (provenance.json status {status!r}), so its results are partial: "
                        f"{fix}")
    if prov.get("shard"):
        raise UserError(f"{role} {folder} is shard {prov['shard']} of a run: the gate compares whole runs; "
                        "run without shard=, or merge the shards and gate the merged run")
    samples_path = next((folder / n for n in SAMPLE_FILES if (folder / n).is_file()), None)
    if samples_path is None:
        raise UserError(f"{role} {folder} has no results.parquet or results.csv (the per-sample values the gate "
                        f"pairs): {_fix(role)}")
    raw = _read(samples_path, role)
    old = [c for c in NEW_COLUMNS if c not in raw.columns]
    if old or "fingerprint" not in prov or status is None:
        lacks = (f"its per-sample file has no {', '.join(old)} column" if old else
                 "its provenance.json has no fingerprint" if "fingerprint" not in prov else
                 "its provenance.json has no status")
        raise UserError(f"{role} {folder} was written by an older xaibench ({lacks}), so the gate cannot tell "
                        f"cost from quality rows, declared changes from regressions, or check weights and data: "
                        + ("write the baseline again from a run of this version: `make gate`, then "
                           f"`xaibench-gate outputs/ci_gate {folder} --update`" if role == "baseline"
                           else "re-run the experiment with this version"))
    n_rows = prov.get("n_rows")
    if isinstance(n_rows, (int, float)) and len(raw) != n_rows:
        raise UserError(f"{role} {samples_path} holds {len(raw)} rows where provenance.json says the run wrote "
                        f"{int(n_rows)}: the file is truncated or edited; {_fix(role)}")
    where = f"{role} {samples_path}"
    samples = samples_frame(raw, where)
    summary = summary_frame(_read(folder / "summary.csv", role), f"{role} {folder / 'summary.csv'}")
    run_config = _read_json(folder / "run_config.json", role, required=False)
    run = Run(folder, summary, samples, samples_path, prov, run_config, role)
    if role == "baseline":  # before the consistency check: a NaN mean is named as such, not as a disagreement
        _check_finite_baseline(run)
    _check_consistent(summary, samples, where, f"{role} {folder / 'summary.csv'}")
    return run


def _read_json(path: Path, role: str, required: bool) -> Optional[dict]:
    if not path.is_file():
        if not required:
            return None
        raise UserError(f"{role} {path.parent} has no provenance.json: the gate reads run folders written by "
                        f"xaibench (status, fingerprint): {_fix(role)}")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UserError(f"cannot read {role} {path} ({e.strerror or e}): check that it is a readable file") from None
    except ValueError as e:
        raise UserError(f"{role} {path} is not valid JSON ({str(e)[:60]}): the file is truncated or edited; "
                        f"{_fix(role)}") from None
    if not isinstance(d, dict):
        raise UserError(f"{role} {path} is not a JSON object: {_fix(role)}")
    return d


def _read(path: Path, role: str) -> pd.DataFrame:
    text_cols = KEYS + ["sample_id", "note"] + list(NEW_COLUMNS)
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype={c: str for c in text_cols})
    except pd.errors.EmptyDataError:
        raise UserError(f"{role} {path} is empty: {_fix(role)}") from None
    except OSError as e:
        if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError)) or path.suffix != ".parquet":
            raise UserError(f"cannot read {role} {path} ({e.strerror or e}): check that it is a readable "
                            "file") from None
        raise UserError(f"{role} {path} is not a readable table ({type(e).__name__}: {str(e)[:80]}): "
                        f"{_fix(role)}") from None
    except Exception as e:  # pandas / pyarrow parse errors come in many types
        first = (str(e).splitlines() or [""])[0][:80]
        raise UserError(f"{role} {path} is not a readable table ({type(e).__name__}: {first}): {_fix(role)}") from None


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
        raise UserError(f"{where}: row {_row(blank)} has an empty key column ({', '.join(keys)}): the file is "
                        "truncated or edited by hand; regenerate it")
    df[keys] = df[keys].astype(str)
    return df


def _row(mask) -> int:
    """1-based data row of the first True in mask (the CSV line is this + 1)."""
    return int(np.flatnonzero(np.asarray(mask))[0]) + 1


def _numeric(df: pd.DataFrame, col: str, where: str):
    v = pd.to_numeric(df[col], errors="coerce")
    bad = v.isna() & df[col].notna()
    if bad.any():
        raise UserError(f"{where}: column '{col}' holds a non-number ({df[col][bad].iloc[0]!r} in data row "
                        f"{_row(bad)}): fix or regenerate the file")
    df[col] = v.astype(float)


def _boolean(df: pd.DataFrame, col: str, where: str):
    as_bool = {"true": True, "1": True, "1.0": True, "false": False, "0": False, "0.0": False}
    v = df[col].map(lambda x: as_bool.get(str(x).strip().lower()))
    if v.isna().any():
        raise UserError(f"{where}: column '{col}' must be True or False (data row {_row(v.isna())} holds "
                        f"{df[col][v.isna()].iloc[0]!r}): fix or regenerate the file")
    df[col] = v.astype(bool)


def _no_duplicates(df: pd.DataFrame, cols, where: str):
    dup = df.duplicated(cols)
    if dup.any():
        raise UserError(f"{where}: data row {_row(dup)} repeats the key {'/'.join(df[cols][dup].iloc[0])}: "
                        "regenerate the file from one run")


def summary_frame(df: pd.DataFrame, where: str = "summary") -> pd.DataFrame:
    """Check a summary table: key columns, numeric mean and n, boolean higher_is_better, unique keys."""
    df = _require(df, KEYS + ["mean", "n", "higher_is_better"], where, "summary.csv")
    _numeric(df, "mean", where)
    _numeric(df, "n", where)
    _boolean(df, "higher_is_better", where)
    _no_duplicates(df, KEYS, where)
    return df


def samples_frame(df: pd.DataFrame, where: str = "per-sample results") -> pd.DataFrame:
    """Check a per-sample table (rows of skipped pairs are kept apart in ``attrs['skipped']``: no values)."""
    cols = KEYS + ["sample_id", "value", "higher_is_better"] + list(NEW_COLUMNS)
    if "note" not in df:
        df = df.assign(note=None)
    df = _require(df, cols + ["note"], where, "per-sample results file")
    skipped = df[df["metric"] == "skipped"]
    df = df[df["metric"] != "skipped"].reset_index(drop=True)
    _numeric(df, "value", where)
    _boolean(df, "higher_is_better", where)
    df["metric_kind"] = metric_kinds(df)
    for c in ("metric_version", "method_version"):
        df[c] = df[c].map(lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
    _no_duplicates(df, KEYS + ["sample_id"], where)
    df.attrs["skipped"] = {tuple(r[k] for k in ARM): str(r["note"]) for r in skipped.to_dict("records")}
    return df


def _expected_summary(samples: pd.DataFrame) -> pd.DataFrame:
    """Per key, the mean and n its per-sample rows give: the mean and count of the non-NaN values, or the
    dataset-level aggregate row (its value; n from its note 'n=<count>')."""
    agg = samples["sample_id"] == AGGREGATE
    per = samples[~agg].groupby(KEYS, sort=False)["value"].agg(["mean", "count"])
    per["n"] = per.pop("count").astype(float)
    a = samples[agg].set_index(KEYS)
    if len(a):
        n = a["note"].map(lambda s: float(str(s)[2:]) if str(s).startswith("n=") and str(s)[2:].isdigit()
                          else math.nan)
        per = per.reindex(per.index.union(a.index))
        per.loc[a.index, "mean"] = a["value"]
        per.loc[a.index, "n"] = n
    return per


def _check_consistent(summary: pd.DataFrame, samples: pd.DataFrame, where: str, summary_where: str = "summary"):
    """The summary must hold exactly the per-sample file's keys, with the n and mean its values give."""
    s = summary.set_index(KEYS)
    e = _expected_summary(samples)
    fix = "they must come from the same run: re-run it (or write a baseline again with --update)"
    diff = s.index.symmetric_difference(e.index)
    if len(diff):
        k = diff[0]
        lost = e.index.difference(s.index)
        why = (f"; the summary lacks {len(lost)} of its {len(e)} keys: it is truncated or edited"
               if len(lost) == len(diff) else "")
        raise UserError(f"{where} and its summary.csv disagree on {len(diff)} key(s), e.g. "
                        f"{'/'.join(k[1:4] + k[5:])}{why}: {fix}")
    e = e.reindex(s.index)
    bad_n = s["n"].notna() & e["n"].notna() & (s["n"] != e["n"])
    if bad_n.any():
        k = s.index[bad_n.values][0]
        raise UserError(f"{where} has {e['n'][bad_n].iloc[0]:g} values for {'/'.join(k[1:4] + k[5:])} where its "
                        f"summary.csv says n={s['n'][bad_n].iloc[0]:g}: {fix}")
    sm, em = s["mean"].to_numpy(float), e["mean"].to_numpy(float)
    with np.errstate(invalid="ignore"):
        same = (np.isnan(sm) & np.isnan(em)) | (sm == em) | (np.abs(sm - em) <= 1e-9 * np.maximum(1, np.abs(em)))
    if not same.all():
        i = int(np.flatnonzero(~same)[0])
        k = s.index[i]
        raise UserError(f"{summary_where} gives the mean of {'/'.join(k[1:4] + k[5:])} as "
                        f"{sm[i]:.6g} where its per-sample values ({Path(where.split(' ', 1)[-1]).name}) give {em[i]:.6g}: "
                        f"the summary was edited or "
                        f"comes from another run; {fix}")


def _check_finite_baseline(run: Run):
    """A baseline value must be finite: no inf anywhere, no NaN mean over defined samples."""
    v = run.samples["value"].to_numpy(float)
    if np.isinf(v).any():
        r = run.samples[np.isinf(v)].iloc[0]
        raise UserError(f"baseline {run.samples_path} holds a non-finite value ({r['value']} for "
                        f"{r['model']}/{r['method']}/{r['metric']} at {r['sample_id']}): a baseline is compared "
                        f"against, so it must be finite; {_fix('baseline')}")
    m = run.summary["mean"].to_numpy(float)
    bad = np.isinf(m) | (np.isnan(m) & (run.summary["n"].fillna(1).to_numpy(float) > 0))
    if bad.any():
        r = run.summary[bad].iloc[0]
        raise UserError(f"baseline {run.summary_path} has a non-finite mean ({r['mean']} for "
                        f"{r['model']}/{r['method']}/{r['metric']}, n={r['n']:g}): a baseline is compared "
                        f"against, so it must be finite; {_fix('baseline')}")


# ----------------------------------------------------------------------------- fingerprints

def _flat(v, path: str = "") -> Dict[str, str]:
    """{dotted path: JSON text} of the leaves of a fingerprint part."""
    if isinstance(v, dict):
        out = {}
        for k in sorted(v, key=str):
            if k in ("mtimes_sha256", "files"):  # file times change with a copy; files: see _code_lines
                continue
            out.update(_flat(v[k], f"{path}.{k}" if path else str(k)))
        return out
    if isinstance(v, list):
        out = {}
        for i, x in enumerate(v):
            out.update(_flat(x, f"{path}[{i}]"))
        return out if v else {path: "[]"}
    return {path: json.dumps(v, sort_keys=True, default=str)}


def _short(s: str, w: int = 24) -> str:
    s = s.strip('"')
    return s if len(s) <= w else s[: w - 1] + "…"


def fingerprint_diff(base: dict, cur: dict, part: str) -> List[str]:
    """Readable differences of one fingerprint part ('name: old -> new'), compared where both runs have the
    entry (a model or benchmark only one run has is a missing or new key, not a changed fingerprint)."""
    b, c = base.get(part), cur.get(part)
    if b is None or c is None:
        return []
    if part in ("weights", "data"):
        shared = sorted(set(b) & set(c))
        b, c = {k: b[k] for k in shared}, {k: c[k] for k in shared}
    if part == "code":
        return _code_lines(b, c)
    fb, fc = _flat(b), _flat(c)
    return [f"{k} {_short(fb.get(k, 'absent'))} -> {_short(fc.get(k, 'absent'))}"
            for k in sorted(set(fb) | set(fc)) if fb.get(k) != fc.get(k)]


def _code_lines(b: dict, c: dict, files_b: Optional[dict] = None, files_c: Optional[dict] = None) -> List[str]:
    out = []
    rb, rc = str(b.get("git_revision", "?"))[:10], str(c.get("git_revision", "?"))[:10]
    db, dc = (" (dirty)" if b.get("dirty") else ""), (" (dirty)" if c.get("dirty") else "")
    if rb != rc or db != dc:
        out.append(f"revision {rb}{db} -> {rc}{dc}")
    if b.get("source_sha256") != c.get("source_sha256"):
        if files_b is not None and files_c is not None:
            changed = sorted(k for k in set(files_b) | set(files_c) if files_b.get(k) != files_c.get(k))
            out.append(f"{len(changed)} source file(s) differ: " + ", ".join(changed[:6])
                       + (f" (+{len(changed) - 6} more)" if len(changed) > 6 else ""))
        else:
            out.append("the package's source files differ (no run_config.json to name them)")
    return out


def _files(run: Run) -> Optional[dict]:
    files = ((run.run_config or {}).get("code") or {}).get("files")
    return files if isinstance(files, dict) else None


def check_fingerprints(cur: Run, base: Run, allow=(), refuse=REFUSED_BY_DEFAULT) -> List[str]:
    """Refuse (UserError) other samples than the baseline's, and a difference in a refused part; return the
    header lines that report the other differences."""
    bd, cd = base.fingerprint.get("data") or {}, cur.fingerprint.get("data") or {}
    other = []
    for bench in sorted(set(bd) & set(cd)):
        b, c = bd[bench] or {}, cd[bench] or {}
        if b.get("n") != c.get("n"):
            other.append(f"{bench.replace('|', '/')} n={c.get('n')} (baseline n={b.get('n')})")
        elif b.get("sample_ids_sha256") != c.get("sample_ids_sha256"):
            other.append(f"{bench.replace('|', '/')} other sample ids (n={c.get('n')})")
    if other:
        raise UserError(f"the current run has other samples than the baseline ({'; '.join(other[:3])}"
                        f"{f'; +{len(other) - 3} more' if len(other) > 3 else ''}): the gate pairs the same "
                        f"samples; run the baseline's experiment (make gate), or write a new baseline with --update")
    lines = []
    for part in PARTS:
        if part == "code":
            diffs = _code_lines(base.fingerprint.get("code") or {}, cur.fingerprint.get("code") or {},
                                _files(base), _files(cur))
        else:
            if part == "data":
                base_fp = {"data": {k: {x: y for x, y in (v or {}).items() if x not in ("n", "sample_ids_sha256")}
                                    for k, v in bd.items()}}
                cur_fp = {"data": {k: {x: y for x, y in (v or {}).items() if x not in ("n", "sample_ids_sha256")}
                                   for k, v in cd.items()}}
            else:
                base_fp, cur_fp = base.fingerprint, cur.fingerprint
            diffs = fingerprint_diff(base_fp, cur_fp, part)
        if not diffs:
            continue
        text = "; ".join(diffs[:4]) + (f"; +{len(diffs) - 4} more" if len(diffs) > 4 else "")
        if part in refuse and part not in allow:
            how = (f"values computed with other {part} cannot be compared; restore the baseline's {part}, pass "
                   f"--allow-change {part} to compare anyway, or write a new baseline with --update"
                   if part in REFUSED_BY_DEFAULT else f"refused by --refuse-change {part}")
            raise UserError(f"the {part} differ from the baseline's ({text}): {how}")
        accepted = " (accepted: --allow-change)" if part in allow and part in REFUSED_BY_DEFAULT else ""
        lines.append(f"{part} differ{accepted}: {text}" if part in ("versions", "weights")
                     else f"{part} differs{accepted}: {text}")
    return lines


# ----------------------------------------------------------------------------- the comparison

def ignored_metrics(metrics, patterns=()) -> dict:
    """{metric: reason} for the metrics matching one of the --ignore patterns (names or globs)."""
    out = {}
    for m in sorted(set(metrics)):
        hit = next((p for p in patterns if fnmatch.fnmatchcase(m, p)), None)
        if hit is not None:
            out[m] = f"--ignore {hit}"
    return out


def uncompared_costs(samples: pd.DataFrame) -> List[str]:
    """Metrics of kind cost that are not compared (every cost row but the explanation's own passes)."""
    cost = samples.loc[samples["metric_kind"] == COST, "metric"]
    return sorted(set(cost) - set(COMPARED_COSTS))


@dataclass
class Comparison:
    """The per-key table (one row per key of either run, plus one row per arm's token maps, metric ``MAPS``),
    what was left out, and the arms paired by a parameter change."""

    table: pd.DataFrame
    ignored: Dict[str, str]
    not_compared: List[str]
    pairs: Dict[tuple, tuple] = field(default_factory=dict)  # current arm -> baseline arm
    n_compared: int = 0  # baseline keys left after --ignore and the cost rows that are not compared


def _per_key(run: Run, drop) -> pd.DataFrame:
    s = run.summary[~run.summary["metric"].isin(drop)]
    v = run.samples.groupby(KEYS, sort=False).agg(kind=("metric_kind", "first"),
                                                  method_version=("method_version", "first"),
                                                  metric_version=("metric_version", "first"))
    return s.merge(v.reset_index(), on=KEYS, how="left")


def compare(cur: Run, base: Run, atol=0.02, rtol=0.05, sample_atol=0.1, map_rtol=1e-3, ignore=()) -> Comparison:
    """Compare two checked runs (the module's rule): one row per key with ``baseline``, ``current`` (the means),
    ``delta`` (d), ``n_base``, ``n_cur``, ``status`` and ``detail``, and one row per arm's maps."""
    ignored = ignored_metrics(pd.concat([cur.summary["metric"], base.summary["metric"]]), ignore)
    not_compared = sorted(set(uncompared_costs(cur.samples)) | set(uncompared_costs(base.samples)))
    drop = set(ignored) | set(not_compared)
    b, c = _per_key(base, drop), _per_key(cur, drop)
    m = b.merge(c, on=KEYS, how="outer", suffixes=("_base", "_cur"), indicator=True, sort=False)
    pairs = _pair_arms(m)
    paired = _paired(cur.samples[~cur.samples["metric"].isin(drop)],
                     base.samples[~base.samples["metric"].isin(drop)], sample_atol)
    skipped = cur.samples.attrs.get("skipped", {})
    out = []
    for r in m.to_dict("records"):
        key = tuple(r[k] for k in KEYS)
        status, delta, detail = _status(r, paired.get(key), atol, rtol, sample_atol, pairs, skipped)
        out.append(dict({k: r[k] for k in KEYS}, baseline=r["mean_base"], current=r["mean_cur"], delta=delta,
                        n_base=r["n_base"], n_cur=r["n_cur"], status=status, detail=detail,
                        kind=r["kind_base"] if isinstance(r["kind_base"], str) else r["kind_cur"],
                        arm=_arm_id(key[:5])))
    out += _maps_rows(cur, base, map_rtol)
    cols = KEYS + ["baseline", "current", "delta", "n_base", "n_cur", "status", "detail", "kind", "arm"]
    table = pd.DataFrame(out, columns=cols)
    table = _fold_paired_missing(table, pairs)
    _arm_notes(table)
    rank = table["status"].map({s: i for i, s in enumerate(ORDER)})
    table = table.iloc[np.argsort(rank.values, kind="stable")].reset_index(drop=True)
    return Comparison(table, ignored, not_compared, pairs, len(b))


def _params(p: str) -> dict:
    try:
        d = json.loads(p) if p else {}
        return d if isinstance(d, dict) else {"params": p}
    except ValueError:
        return {"params": p}


def _pair_arms(m: pd.DataFrame) -> Dict[tuple, tuple]:
    """Pair each arm only the current run has with an arm only the baseline has, of the same method
    (experiment, dataset, model, method), fewest differing parameters first: {current arm: baseline arm}."""
    arms_b = set(map(tuple, m.loc[m["_merge"] != "right_only", ARM].values))
    arms_c = set(map(tuple, m.loc[m["_merge"] != "left_only", ARM].values))
    only_b, only_c = sorted(arms_b - arms_c), sorted(arms_c - arms_b)
    pairs = {}
    for group in sorted({a[:4] for a in only_c} & {a[:4] for a in only_b}):
        bs = [a for a in only_b if a[:4] == group]
        cs = [a for a in only_c if a[:4] == group]
        cand = []
        for i, cb in enumerate(bs):
            pb = _params(cb[4])
            for j, cc in enumerate(cs):
                pc = _params(cc[4])
                cost = sum(pb.get(k) != pc.get(k) for k in set(pb) | set(pc))
                cand.append((cost, i, j))
        used_b, used_c = set(), set()
        for cost, i, j in sorted(cand):
            if i not in used_b and j not in used_c:
                pairs[cs[j]] = bs[i]
                used_b.add(i)
                used_c.add(j)
    return pairs


def params_change(base_params: str, cur_params: str) -> str:
    """'lambda 1.0 -> 2.0, layers 1 -> 2' (a parameter only one side has: 'absent')."""
    pb, pc = _params(base_params), _params(cur_params)
    parts = [f"{k} {json.dumps(pb.get(k, 'absent')).strip(chr(34))} -> {json.dumps(pc.get(k, 'absent')).strip(chr(34))}"
             for k in sorted(set(pb) | set(pc)) if pb.get(k, "\0") != pc.get(k, "\0")]
    return ", ".join(parts) or "parameters reordered"


def _paired(cur: pd.DataFrame, base: pd.DataFrame, sample_atol: float) -> dict:
    """Per key: d (mean paired difference, or the aggregate row's), and the sample_ids that moved,
    are missing, are new, or are non-finite."""
    m = base[KEYS + ["sample_id", "value"]].merge(cur[KEYS + ["sample_id", "value"]], on=KEYS + ["sample_id"],
                                                  how="outer", suffixes=("_base", "_cur"), indicator=True)
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
    by = [m[k] for k in KEYS]
    key_has_agg = is_agg.groupby(by, sort=False).transform("any")
    use = np.isfinite(diff) & (is_agg == key_has_agg).to_numpy()
    delta = m["diff"].where(use).groupby(by, sort=False).mean()
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


def _status(r: dict, p: Optional[dict], atol, rtol, sample_atol, pairs, skipped):
    """(status, delta, detail) of one merged summary row; ``p`` is its paired per-sample record or None."""
    arm = tuple(r[k] for k in ARM)
    if r["_merge"] == "left_only":
        why = skipped.get(arm)
        return "missing", math.nan, f"skipped in the current run: {why}" if why else "not in the current run"
    if r["_merge"] == "right_only":
        if arm in pairs:
            return "params-changed", math.nan, params_change(pairs[arm][4], arm[4])
        return "new", math.nan, "no baseline (--update)"
    b, c, nb, nc = r["mean_base"], r["mean_cur"], r["n_base"], r["n_cur"]
    p = p or {}
    d = p.get("delta", c - b) if p else c - b
    tol = atol + rtol * abs(b) if not math.isnan(b) else atol
    moved = f"; d {d:+.3g}" + (f", {len(p['moved'])} sample(s) moved > {sample_atol:g}" if p.get("moved") else "") \
        if isinstance(d, float) and math.isfinite(d) and (abs(d) > tol or p.get("moved")) else ""
    if r["method_version_base"] != r["method_version_cur"]:
        return "method-changed", d, (f"method version {r['method_version_base']} -> {r['method_version_cur']} "
                                     f"(declared){moved}")
    if r["metric_version_base"] != r["metric_version_cur"]:
        return "metric-changed", d, (f"metric version {r['metric_version_base']} -> {r['metric_version_cur']} "
                                     f"(declared protocol change){moved}")
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
    if math.isnan(b) and math.isnan(c):
        return "ok", d, "undefined on every sample in both runs"
    if r["kind_base"] == DESCRIPTIVE:
        if abs(d) > tol:
            return "changed", d, f"moved by {d:+.3g} > tol {tol:.3g} (no direction: {DESCRIPTIVE})"
    else:
        worse = -d if r["higher_is_better_base"] else d
        if worse > tol:
            return "regressed", d, f"worse by {abs(d):.3g} > tol {tol:.3g}"
    if p.get("moved"):
        s = p["moved"]
        return "samples-moved", d, f"{len(s)} moved > {sample_atol:g}, max {s[0][1]:+.3g} at {s[0][0]}"
    if r["kind_base"] != DESCRIPTIVE and (d if r["higher_is_better_base"] else -d) > tol:
        return "improved", d, f"better by {abs(d):.3g} > tol {tol:.3g}"
    return "ok", d, ""


def _arm_id(arm: tuple) -> str:
    return "\x1f".join(map(str, arm))


def _fold_paired_missing(table: pd.DataFrame, pairs: Dict[tuple, tuple]) -> pd.DataFrame:
    """Keys of a paired baseline arm: a metric the current arm also has is one params-changed row (the
    baseline arm's mean beside the current one); a metric only the baseline arm has stays missing, saying
    which parameters changed."""
    by_base = {_arm_id(b): c for c, b in pairs.items()}
    base_of = {}
    drop = []
    for i, r in zip(table.index, table.to_dict("records")):
        if r["status"] == "missing" and r["arm"] in by_base:
            cur_arm = by_base[r["arm"]]
            base_of[(_arm_id(cur_arm), r["metric"])] = (r["baseline"], r["n_base"])
            drop.append(i)
    for i, r in zip(table.index, table.to_dict("records")):
        if r["status"] == "params-changed":
            b, nb = base_of.pop((r["arm"], r["metric"]), (math.nan, math.nan))
            table.loc[i, ["baseline", "n_base", "delta"]] = [b, nb, r["current"] - b]
    left = {k for k in base_of}  # baseline metrics the current arm lacks: keep them as missing
    keep = [i for i in drop if (_arm_id(by_base[table.at[i, "arm"]]), table.at[i, "metric"]) not in left]
    for i in drop:
        if i not in keep:
            cur_arm = by_base[table.at[i, "arm"]]
            table.at[i, "detail"] = (f"not in the current run (its arm's parameters changed: "
                                     f"{params_change(table.at[i, 'params'], cur_arm[4])})")
    return table.drop(index=keep).reset_index(drop=True)


def _arm_notes(table: pd.DataFrame):
    """A maps row that changed also says how many of its arm's metrics moved beyond tolerance."""
    maps = (table["metric"] == MAPS).to_numpy()
    per_arm: Dict[str, List[int]] = {}
    for arm, st in zip(table["arm"][~maps], table["status"][~maps]):
        c = per_arm.setdefault(arm, [0, 0])
        c[0] += 1
        c[1] += st in FAILING
    for i in np.flatnonzero(maps):
        i = table.index[i]
        if table.at[i, "status"] in ("maps-changed", "method-changed"):
            n, bad = per_arm.get(table.at[i, "arm"], [0, 0])
            if n:
                table.at[i, "detail"] += f"; scores: {bad} of {n} metrics beyond tolerance"


def _maps_rows(cur: Run, base: Run, map_rtol: float) -> List[dict]:
    """One row per arm whose token maps both runs hold: ok, maps-changed, or method-changed (declared)."""
    if not (cur.has_maps and base.has_maps):
        return []
    mb, mc = base.maps(), cur.maps()
    arms_b = {k[:4] for k in mb}
    arms_c = {k[:4] for k in mc}
    version = {}
    exp = {}
    for run, tag in ((base, 0), (cur, 1)):
        s = run.samples.drop_duplicates(ARM)
        for r in s.itertuples(index=False):
            arm = (r.dataset, r.model, r.method, r.params)
            version.setdefault(arm, ["", ""])[tag] = r.method_version
            exp.setdefault(arm, r.experiment)
    by_arm_b: Dict[tuple, dict] = {}
    by_arm_c: Dict[tuple, dict] = {}
    for k, v in mb.items():
        by_arm_b.setdefault(k[:4], {})[k[4]] = v
    for k, v in mc.items():
        by_arm_c.setdefault(k[:4], {})[k[4]] = v
    rows = []
    for arm in sorted(arms_b & arms_c):
        sb, sc = by_arm_b[arm], by_arm_c[arm]
        common = sorted(set(sb) & set(sc))
        changed, worst, worst_rel, worst_id, shapes = [], 0.0, 0.0, None, None
        for sid in common:
            a, x = sb[sid], sc[sid]
            if a.shape != x.shape:
                changed.append(sid)
                shapes = shapes or f"shape {tuple(a.shape)} -> {tuple(x.shape)}"
                continue
            nan_a, nan_x = np.isnan(a), np.isnan(x)
            if (nan_a != nan_x).any():
                changed.append(sid)
                worst, worst_id = math.inf, worst_id or sid
                continue
            with np.errstate(invalid="ignore"):
                diff = np.abs(np.where(nan_a, 0, x.astype(np.float64) - a.astype(np.float64)))
            d = float(diff.max()) if diff.size else 0.0
            scale = float(max(np.nanmax(np.abs(a)) if a.size else 0.0, np.nanmax(np.abs(x)) if x.size else 0.0))
            if d > map_rtol * scale:
                changed.append(sid)
                if d > worst:
                    worst, worst_rel, worst_id = d, d / scale, sid
        lost, extra = sorted(set(sb) - set(sc)), sorted(set(sc) - set(sb))
        vb, vc = version.get(arm, ["", ""])
        parts = []
        if changed:
            parts.append(f"maps changed on {len(changed)}/{len(common)} samples"
                         + (f", {shapes}" if shapes else "")
                         + (f", max |delta| {worst:.3g} ({100 * worst_rel:.3g}% of the map's largest |value|) "
                            f"at {worst_id}" if math.isfinite(worst) and worst_id else
                            (f", NaN pattern changed at {worst_id}" if worst_id else "")))
        if lost:
            parts.append(f"no map for {len(lost)} baseline sample(s): {_ids(lost)}")
        if extra:
            parts.append(f"maps for {len(extra)} sample(s) the baseline lacks: {_ids(extra)}")
        if vb != vc and vb and vc:
            status = "method-changed"
            detail = f"method version {vb} -> {vc} (declared)" + ("; " + "; ".join(parts) if parts else
                                                                  "; maps unchanged")
        elif parts:
            status, detail = "maps-changed", "; ".join(parts) + f" (method version {vb or '?'} kept)"
        else:
            status, detail = "ok", f"maps equal on {len(common)} samples"
        rows.append(dict(experiment=exp.get(arm, ""), dataset=arm[0], model=arm[1], method=arm[2], params=arm[3],
                         metric=MAPS, baseline=math.nan, current=math.nan,
                         delta=worst if changed and math.isfinite(worst) else (0.0 if not changed else math.nan),
                         n_base=float(len(sb)), n_cur=float(len(sc)), status=status, detail=detail, kind="maps",
                         arm=_arm_id((exp.get(arm, ""),) + arm)))
    return rows


# ----------------------------------------------------------------------------- findings and reports

def findings(table: pd.DataFrame) -> pd.DataFrame:
    """The rows a person reads: every key that is not ok, folded where a status concerns more than a key.

    * an arm all of whose rows (metrics and maps) share a status of the whole arm (missing, new,
      params-changed, method-changed) is one row (``scope`` 'arm');
    * metric-changed keys of one metric on one benchmark are one row (``scope`` 'metric');
    * everything else is one row per key (``scope`` 'key').  ``keys`` counts the keys a row stands for.
    """
    recs = table.to_dict("records")
    statuses: Dict[str, set] = {}
    for r in recs:
        statuses.setdefault(r["arm"], set()).add(r["status"])
    foldable = ("missing", "new", "params-changed", "method-changed")
    groups: Dict[tuple, List[dict]] = {}
    order = []
    for r in recs:
        if r["status"] == "ok":
            continue
        if r["status"] in foldable and statuses[r["arm"]] == {r["status"]}:
            g = ("arm", r["status"], r["arm"])
        elif r["status"] == "metric-changed":
            g = ("metric", r["status"], r["experiment"], r["dataset"], r["model"], r["metric"])
        else:
            g = ("key", len(order))
        if g not in groups:
            groups[g] = []
            order.append(g)
        groups[g].append(r)
    out = []
    for g in order:
        rows = groups[g]
        r = dict(rows[0], keys=1, scope="key")
        if g[0] == "arm":
            metrics = [x for x in rows if x["metric"] != MAPS]
            maps = [x for x in rows if x["metric"] == MAPS]
            r.update(metric="", detail=_arm_detail(r["status"], metrics, maps), keys=len(metrics) or 1,
                     scope="arm", baseline=math.nan, current=math.nan, delta=math.nan)
        elif g[0] == "metric" and len(rows) > 1:
            moved = sum("; d " in x["detail"] for x in rows)
            r.update(method="", params="", keys=len(rows), scope="metric", baseline=math.nan, current=math.nan,
                     delta=math.nan, detail=rows[0]["detail"].split(";")[0]
                     + f" on {len(rows)} arms; {moved} moved beyond tolerance")
        out.append(r)
    return pd.DataFrame(out, columns=list(table.columns) + ["keys", "scope"])


def _arm_detail(status: str, metrics: List[dict], maps: List[dict]) -> str:
    n = len(metrics)
    what = f"{n} metric{'s' * (n != 1)}"
    if status == "params-changed":
        return f"{metrics[0]['detail']} ({what}, not compared: other parameters)" if n else maps[0]["detail"]
    if status == "missing":
        return f"{metrics[0]['detail'] if n else 'not in the current run'} ({what})"
    if status == "new":
        return f"no baseline ({what}; record them with --update)"
    # method-changed: the maps row says how the maps moved; name the metrics that moved
    moved = [x for x in metrics if "; d " in x["detail"]]
    first = (maps[0]["detail"] if maps else metrics[0]["detail"].split(";")[0]).split("; scores:")[0]
    top = ", ".join(f"{x['metric']} {x['delta']:+.3g}" for x in moved[:6]) + (" ..." if len(moved) > 6 else "")
    return f"{first}; {len(moved)} of {n} metrics moved beyond tolerance" + (f" ({top})" if moved else "")


def verdict(table: pd.DataFrame, rows: Optional[pd.DataFrame] = None) -> str:
    """'PASS: 430 ok' or 'FAIL: 1 params-changed (9 keys), 3 regressed, 426 ok' (the order of the rule;
    a folded row counts once, with its keys in parentheses)."""
    rows = findings(table) if rows is None else rows
    metric_rows = table[table["metric"] != MAPS]
    maps_ok = int(((table["metric"] == MAPS) & (table["status"] == "ok")).sum())
    parts = []
    for s in ORDER[:-1]:
        f = rows[rows["status"] == s]
        if len(f):
            keys = int(f["keys"].sum())
            parts.append(f"{len(f)} {s}" + (f" ({keys} keys)" if keys != len(f) else ""))
    n_ok = int((metric_rows["status"] == "ok").sum())
    if n_ok:
        parts.append(f"{n_ok} ok")
    if maps_ok:
        parts.append(f"maps of {maps_ok} arm{'s' * (maps_ok != 1)} unchanged")
    failed = table["status"].isin(FAILING).any()
    return ("FAIL: " if failed else "PASS: ") + ", ".join(parts or ["nothing compared"])


def _label_parts(t: pd.DataFrame) -> Tuple[bool, bool, Dict[tuple, str]]:
    """Whether keys need the experiment and the dataset, and the label of each arm: its method, with the
    parameters that differ between the arms of that method in either run ('staa[lambda=2.0]')."""
    exp = t["experiment"].nunique() > 1
    ds = bool((t.groupby("model")["dataset"].nunique() > 1).any())
    arms = t[ARM].drop_duplicates()
    labels = {}
    for _, g in arms.groupby(["experiment", "dataset", "model", "method"], sort=False):
        ps = [_params(p) for p in g["params"]]
        differ = sorted({k for p in ps for k in p if len({json.dumps(q.get(k), sort_keys=True) for q in ps}) > 1})
        for a, p in zip(g.itertuples(index=False), ps):
            tag = ",".join(f"{k}={_val(p.get(k))}" for k in differ)
            labels[tuple(a)] = f"{a.method}[{tag}]" if tag else a.method
    return exp, ds, labels


def _val(v) -> str:
    return "absent" if v is None else (json.dumps(v) if not isinstance(v, str) else v)


def _key_label(r, exp: bool, ds: bool, labels: Dict[tuple, str], sep: str = "/") -> str:
    arm = tuple(r[k] for k in ARM)
    if r.get("scope") == "metric":
        method = "*"
    elif r["status"] == "params-changed" and r.get("scope") == "arm":
        method = r["method"]
    else:
        method = labels.get(arm, r["method"])
    parts = ([r["experiment"]] if exp else []) + ([r["dataset"]] if ds else []) + [r["model"], method]
    if r["metric"]:
        parts.append(r["metric"])
    return sep.join(map(str, parts))


def _cells(r) -> tuple:
    """baseline, current and delta as text ('-' where a side has no value)."""
    def f(v, fmt):
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)
    if r["status"] in ("new", "missing", "params-changed") and r.get("scope") == "arm":
        return "-", "-", "-"
    return f(r["baseline"], ".4g"), f(r["current"], ".4g"), f(r["delta"], "+.4g")


def report(cmp: Comparison, header: list, max_rows: int = 40) -> str:
    """Terminal report (lines of at most 120 characters; a key is never cut): header lines, the findings,
    the verdict."""
    lines = [x for h in header for x in textwrap.wrap(h, WIDTH, subsequent_indent="    ", break_long_words=False,
                                                      break_on_hyphens=False)]
    rows = findings(cmp.table)
    if len(rows):
        exp, ds, labels = _label_parts(cmp.table)
        keys = [_key_label(r, exp, ds, labels) for r in rows.to_dict("records")]
        w = min(48, max(3, max(map(len, keys))))
        lines.append(f"{'status':<14} {'key':<{w}} {'baseline':>9} {'current':>9} {'delta':>10}  detail")
        for key, r in list(zip(keys, rows.to_dict("records")))[:max_rows]:
            b, c, d = _cells(r)
            if len(key) > w:  # a long key gets a line of its own: never cut
                lines.append(f"{r['status']:<14} {key}")
                head = f"{'':<14} {'':<{w}} {b:>9} {c:>9} {d:>10}  "
            else:
                head = f"{r['status']:<14} {key:<{w}} {b:>9} {c:>9} {d:>10}  "
            lines += textwrap.wrap(head + r["detail"], WIDTH, subsequent_indent=" " * 16, break_long_words=False,
                                   break_on_hyphens=False, drop_whitespace=False) or [head]
        if len(rows) > max_rows:
            lines.append(f"... {len(rows) - max_rows} more rows not shown: write them all with --markdown FILE")
    lines.append(verdict(cmp.table, rows))
    return "\n".join(line.rstrip() for line in lines)


def markdown(cmp: Comparison, header: list) -> str:
    """The verdict line first, then the header lines, a table of every finding, and the legend of its keys."""
    rows = findings(cmp.table)
    out = [verdict(cmp.table, rows), ""] + [f"- {h}" for h in header] + [""]
    if not len(rows):
        return "\n".join(out + ["Nothing moved beyond the tolerances.", ""])
    exp, ds, labels = _label_parts(cmp.table)
    out += ["| key | baseline | current | delta | status | detail |", "|---|---:|---:|---:|---|---|"]
    legend = {}
    for r in rows.to_dict("records"):
        status = f"**{r['status']}**" if r["status"] in FAILING else r["status"]
        key = _key_label(r, exp, ds, labels, sep=" / ")
        cells = [f"`{key}`", *_cells(r), status, r["detail"]]
        out.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
        if r.get("scope") != "metric":
            arm = tuple(r[k] for k in ARM)
            if r["status"] == "params-changed":
                base_arm = cmp.pairs.get(arm)
                if base_arm is not None:
                    legend[f"{_method_key(r, exp, ds)} (baseline)"] = base_arm[4]
                legend[f"{_method_key(r, exp, ds)} (current)"] = arm[4]
            elif arm[4] not in ("", "{}"):
                legend[_key_label(dict(r, metric="", scope="key", status=""), exp, ds, labels, sep=" / ")] = arm[4]
    if legend:
        out += ["", "Parameters of the methods above (keys are `" + ("experiment / " if exp else "")
                + ("dataset / " if ds else "") + "model / method / metric`; a method with several settings is "
                "labelled by the parameters that tell them apart):", ""]
        out += [f"- `{k}`: `{v}`" for k, v in legend.items()]
    return "\n".join(out + [""])


def _method_key(r, exp, ds) -> str:
    return " / ".join(([r["experiment"]] if exp else []) + ([r["dataset"]] if ds else []) + [r["model"], r["method"]])


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


def update(cur: Run, baseline) -> list:
    """Write the current run's gate files into the baseline folder; return the lines to print."""
    if cur.summary.empty:
        raise UserError(f"refusing to write an empty baseline: the current summary {cur.summary_path} has no rows; "
                        "re-run the experiment first")
    baseline = Path(baseline)
    folder = baseline.parent if baseline.name == "summary.csv" else baseline
    names = [cur.samples_path.name] + [n for n in GATE_FILES + RUN_TABLES if (cur.folder / n).is_file()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        done = []
        for name in names:
            _atomic_copy(cur.folder / name, folder / name)
            done.append(f"baseline {folder / name} <- {cur.folder / name}")
        if folder.resolve() != cur.folder.resolve():
            for name in SAMPLE_FILES + GATE_FILES + RUN_TABLES:  # a stale file would be read with the new ones
                f = folder / name
                if name not in names and f.is_file():
                    f.unlink()
                    done.append(f"removed stale {f}")
    except OSError as e:
        raise UserError(f"cannot write the baseline {folder} ({e.strerror or e}): check the folder's permissions")
    return done


# ----------------------------------------------------------------------------- command line

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xaibench-gate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("current", type=Path, help="the run to check: its folder (or its summary.csv)")
    p.add_argument("baseline", type=Path, help="the committed baseline: a run folder (or its summary.csv)")
    p.add_argument("--atol", type=float, default=0.02, help="absolute tolerance of d (default 0.02)")
    p.add_argument("--rtol", type=float, default=0.05, help="tolerance of d relative to |baseline mean| (0.05)")
    p.add_argument("--sample-atol", type=float, default=0.1,
                   help="largest move of one sample, either direction (default 0.1)")
    p.add_argument("--map-rtol", type=float, default=1e-3,
                   help="a token map changed when max |delta| exceeds this times its largest |value| (0.001)")
    p.add_argument("--ignore", default="",
                   help="comma-separated metric names or globs left out (listed in the output)")
    p.add_argument("--allow-change", default="", metavar="PARTS",
                   help="compare although these fingerprint parts differ: weights, data (reported)")
    p.add_argument("--refuse-change", default="", metavar="PARTS",
                   help="refuse (exit 2) when these parts differ too: code, versions, config")
    p.add_argument("--markdown", type=Path, metavar="FILE", help="write the verdict and a table of what moved")
    p.add_argument("--update", action="store_true",
                   help="write the current run's gate files into the baseline folder; compares nothing")
    return p


def _parts(text: str, option: str) -> Tuple[str, ...]:
    parts = tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [x for x in parts if x not in PARTS]
    if bad:
        raise UserError(f"{option} {bad[0]!r} is not a fingerprint part: use a comma-separated list of "
                        f"{', '.join(PARTS)}")
    return parts


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


def _header(cur: Run, base: Run, cmp: Comparison, a, fp_lines) -> List[str]:
    t = cmp.table
    metric_rows = t[(t["metric"] != MAPS) & t["status"].ne("new") & t["status"].ne("params-changed")]
    n = {}
    for (ds, model), g in base.samples[base.samples["sample_id"] != AGGREGATE].groupby(["dataset", "model"]):
        n[f"{model}" if base.samples["dataset"].nunique() == 1 else f"{ds}/{model}"] = g["sample_id"].nunique()
    bench = ", ".join(f"{k} n={v}" for k, v in n.items())
    arms = int((t["metric"] == MAPS).sum())
    h = [f"xaibench-gate: {cur.folder} vs baseline {base.folder}",
         f"compared: {_n(metric_rows['metric'].nunique(), 'metric')} of {_n(metric_rows['arm'].nunique(), 'arm')} "
         f"({bench}), per sample (paired by sample_id)" + (f"; token maps of {_n(arms, 'arm')}" if arms else
                                               "; no maps.npz in either run: token maps not compared")]
    h += fp_lines
    if cmp.not_compared:
        h.append(f"not compared ({COST_REASON}): {', '.join(cmp.not_compared)}")
    for reason in sorted(set(cmp.ignored.values())):
        h.append(f"ignored ({reason}): {', '.join(m for m, r in cmp.ignored.items() if r == reason)}")
    h.append(f"fails: d worse than {a.atol:g} + {a.rtol:g}*|baseline mean|; a sample moved > {a.sample_atol:g}; "
             f"a map moved > {a.map_rtol:g} * its largest |value| (d = mean paired difference)")
    if cur.summary.empty:
        h.append(f"the current summary {cur.summary_path} has no rows: the run produced nothing")
    return h


def _n(k: int, what: str) -> str:
    return f"{k} {what}{'s' * (k != 1)}"


def _gate(a) -> int:
    for name in ("atol", "rtol", "sample_atol", "map_rtol"):
        v = getattr(a, name)
        if not (math.isfinite(v) and v >= 0):
            raise UserError(f"--{name.replace('_', '-')}={v} is not allowed: tolerances are finite numbers >= 0")
    allow, refuse = _parts(a.allow_change, "--allow-change"), _parts(a.refuse_change, "--refuse-change")
    both = set(allow) & set(refuse)
    if both:
        raise UserError(f"--allow-change and --refuse-change both name {', '.join(sorted(both))}: choose one")
    cur = load_run(a.current, "current")
    if a.update:
        print("\n".join(update(cur, a.baseline)))
        return 0
    base = load_run(a.baseline, "baseline")
    if base.summary.empty:
        raise UserError(f"the baseline {base.summary_path} has no rows: restore it (git checkout) or write it "
                        "from a good run with --update")
    if cur.has_maps != base.has_maps:
        lacking = cur if not cur.has_maps else base
        raise UserError(f"{lacking.role} {lacking.folder} has no {MAPS_FILE} where the other run has one: "
                        f"{_fix(lacking.role)}")
    fp_lines = check_fingerprints(cur, base, allow, tuple(REFUSED_BY_DEFAULT) + refuse)
    patterns = tuple(x.strip() for x in a.ignore.split(",") if x.strip())
    cmp = compare(cur, base, a.atol, a.rtol, a.sample_atol, a.map_rtol, patterns)
    if cmp.n_compared == 0:
        left = " and ".join(filter(None, [f"--ignore {a.ignore!r}" if cmp.ignored else "",
                                          "the cost rows that are not compared" if cmp.not_compared else ""]))
        raise UserError(f"nothing to compare: {left or 'the filters'} leave out every metric of the baseline "
                        f"({base.summary['metric'].nunique()} metrics); narrow --ignore")
    print(report(cmp, _header(cur, base, cmp, a, fp_lines)))
    if a.markdown or os.environ.get("GITHUB_STEP_SUMMARY"):
        _publish(markdown(cmp, _header(cur, base, cmp, a, fp_lines)), a.markdown)
    return 1 if cmp.table["status"].isin(FAILING).any() else 0


def main(argv=None) -> int:
    try:
        a = _parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2): argparse has printed the message
        return int(e.code or 0)
    try:
        return _gate(a)
    except UserError as e:
        msg = " ".join(str(e).split())  # one line, whatever the message held
        print(f"xaibench-gate: error: {msg}", file=sys.stderr)
        try:
            if a.markdown or os.environ.get("GITHUB_STEP_SUMMARY"):
                _publish(f"ERROR (exit 2): {msg}", a.markdown)
        except UserError as e2:
            print(f"xaibench-gate: error: {e2}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
