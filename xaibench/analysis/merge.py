"""``xaibench-merge``: one set of tables from many run folders.

    xaibench-merge multirun/staa_synthetic/2026-01-01_12-00-00     # a sweep; writes into that folder
    xaibench-merge runs/shard0 runs/shard1 --out runs/merged       # the shards of one run
    xaibench-merge multirun/a multirun/b --out merged              # several sweeps of one experiment

Each DIR is a run folder (it holds ``results.parquet`` or ``rows.jsonl``, and
``provenance.json``) or a folder searched recursively for run folders.  Also
taken: a run folder that stopped before writing ``provenance.json`` (it has
``rows.jsonl`` and ``.hydra/``; status ``failed``) and a failed point of a
sweep (``provenance.json`` with status ``failed`` and its error, maybe no rows).

* **Swept columns.**  The task overrides of every run are read from
  ``.hydra/overrides.yaml``; every key whose value differs between the runs
  (``method.lambda``, ``method.layers``, ``seed``, ...) becomes a column of the
  merged tables, named by the key (a key that already is a results column, such
  as ``seed``, ``method`` or ``model``, is that column).  A method parameter
  (``method.K``) is filled only on the rows of methods that take ``K`` (their
  ``params`` hold it); the other methods did not use it and get no value.
* **Competing points.**  Points that differ only in method keys (``method``,
  ``method.K``) compete: their rows are pooled and the statistics
  (:func:`xaibench.analysis.results.tables`: validity from the controls, the
  comparisons with the best, the ``best`` / ``tied`` marks, the ranking) are
  computed once over all their arms, per benchmark (never across models or
  datasets).  A row that several points computed with the same settings (a
  method the swept key does not apply to: every point of a sweep that is not
  scoped runs it, a scoped sweep runs it in the first point only) is taken from
  the first point that has it.  Points that differ in any other key (``seed``,
  ``model``, ``dataset.*``, ``model.*`` ...) are separate *contexts*, each with
  its own statistics; the context keys lead the tables.
* **Shards.**  Runs whose overrides differ only in ``shard=I/N`` (and
  ``resume``) are parts of one run: their per-sample rows are concatenated and
  the dataset-level aggregate rows (``sample_id == "__aggregate__"``: pixel
  accuracy, mIoU, ...) are recomputed from the per-sample hidden counts of all
  shards (``rows.jsonl``) with :func:`xaibench.analysis.results.aggregate_rows`.
* **Fingerprints.**  Runs computed by different code (source files), package
  versions, model weights or data are refused, naming what differs (each run's
  ``run_config.json`` / ``provenance.json`` ``fingerprint``); weights and data
  are compared between runs whose model / dataset settings are equal.
  ``--allow-change code,versions,weights,data`` merges anyway and records the
  accepted differences in ``merge.json``.

Writes ``results.parquet``, ``results.csv``, ``summary.csv``, ``validity.csv``,
``comparisons.csv``, ``ranking.csv``, ``runs.csv`` (one row per run folder:
path, status, overrides, shard, n_rows, note) and ``merge.json`` (inputs, swept
and context keys, accepted fingerprint differences) to ``--out`` (default: the
first DIR when it holds run folders).  ``--out`` must not be, or lie inside,
a run folder (its own tables would be overwritten).  A run whose status is not
``complete`` (``interrupted``, ``failed``) is merged and reported.
Exit status 0, or 2 with a message for a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pandas as pd
from omegaconf import OmegaConf

from ..errors import UserError
from ..io import atomic_to_csv, atomic_to_parquet, atomic_write_text
from .results import AGGREGATE, COLUMNS, KEYS, TABLES, to_frame

PARTITION_KEYS = ("shard",)  # split one run's samples: never a swept column
IGNORED_KEYS = ("resume", "allow_change")  # how a run was started, not what it computed
#: the parts of a run's fingerprint that must agree between merged runs (``--allow-change`` names them)
FINGERPRINT_PARTS = ("code", "versions", "weights", "data")
ROW_KEY = KEYS + ["sample_id"]  # one value per (arm, benchmark, metric, sample)


@dataclass
class Run:
    """One run folder: its status, its task overrides (key -> parsed value) and its fingerprint."""

    path: Path
    status: str
    overrides: dict
    experiment: str = ""
    seed: int = 0
    note: str = ""
    n_rows: int = 0
    fingerprint: dict = field(default_factory=dict)
    alpha: float = 0.05

    @property
    def shard(self):
        return self.overrides.get("shard")

    def settings(self) -> tuple:
        """What the run computed: its overrides less the partition and ignored keys."""
        return tuple(sorted((k, _hashable(v)) for k, v in self.overrides.items()
                            if k not in PARTITION_KEYS + IGNORED_KEYS))


@dataclass
class Merged:
    results: pd.DataFrame  # COLUMNS + one column per swept key that is not a results column
    summary: pd.DataFrame  # swept columns + summarise()'s columns, marks over the competing points
    swept: List[str]
    runs: pd.DataFrame  # one row per run folder: path, status, overrides, shard, n_rows, note
    warnings: List[str] = field(default_factory=list)
    tables: Dict[str, pd.DataFrame] = field(default_factory=dict)  # validity, comparisons, ranking
    contexts: List[str] = field(default_factory=list)  # swept keys that separate the statistics
    allowed: List[str] = field(default_factory=list)  # fingerprint differences accepted (--allow-change)


def is_method_key(key: str) -> bool:
    """``method`` or ``method.K``: a swept key whose points compete (their arms are compared with each other)."""
    k = str(key).lstrip("+~")
    return k == "method" or k.startswith("method.")


# ----------------------------------------------------------------- finding runs
def is_run_folder(p: Path) -> bool:
    """``provenance.json`` (also a failed point of a sweep, with no rows), or rows and ``.hydra/``."""
    has_rows = (p / "results.parquet").exists() or (p / "rows.jsonl").exists()
    return (p / "provenance.json").exists() or (has_rows and (p / ".hydra" / "overrides.yaml").exists())


def find_run_folders(dirs) -> List[Path]:
    """The run folders in ``dirs`` (each a run folder or a folder searched recursively), in natural order."""
    found = []
    for d in map(Path, dirs):
        if not d.is_dir():
            raise UserError(f"{d} is not a folder; pass run folders (they hold results.parquet or rows.jsonl) "
                            f"or folders that hold them, such as a multirun sweep folder")
        if is_run_folder(d):
            found.append(d)
            continue
        for root, subdirs, _ in os.walk(d):
            subdirs[:] = [s for s in subdirs if not s.startswith(".")]  # .hydra, .submitit
            if is_run_folder(Path(root)):
                found.append(Path(root))
                subdirs[:] = []
    found = sorted(dict.fromkeys(found), key=_natural)
    if not found:
        raise UserError(f"no run folders found in {', '.join(map(str, dirs))} (a run folder holds results.parquet "
                        f"or rows.jsonl, and provenance.json); check the path")
    return found


def _natural(p: Path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(p))]


# ------------------------------------------------------------------ reading runs
def read_run(path: Path) -> Run:
    """Status, experiment, seed and task overrides of one run folder."""
    prov = {}
    if (path / "provenance.json").exists():
        prov = _read(path / "provenance.json", lambda f: json.loads(f.read_text()))
    ov_file = path / ".hydra" / "overrides.yaml"
    overrides, note = {}, ""
    if ov_file.exists():
        overrides = parse_overrides(_read(ov_file, lambda f: OmegaConf.to_container(OmegaConf.load(f))), ov_file)
    else:
        note = "no .hydra/overrides.yaml: no swept values"
    if prov:
        status = prov.get("status", "complete")
        note = str(prov["error"]) if prov.get("error") else note
        config = prov.get("config") or {}
        experiment = str((config.get("experiment") or {}).get("name", ""))
        seed = int(prov.get("seed", config.get("seed", 0)))
    else:
        status = "failed"
        note = "no provenance.json: the run stopped before writing its tables"
        first = next((row for rec in _records(path) for row in rec.get("rows", [])), {})
        experiment, seed = str(first.get("experiment", "")), int(first.get("seed", 0) or 0)
    alpha = (prov.get("config") or {}).get("alpha", 0.05) if prov else 0.05
    return Run(path, str(status), overrides, experiment, seed, note, fingerprint=read_fingerprint(path, prov),
               alpha=float(alpha) if isinstance(alpha, (int, float)) else 0.05)


def read_fingerprint(path: Path, prov: Optional[dict] = None) -> dict:
    """The run's fingerprint: ``run_config.json`` (written with the first result; its ``code`` part names every
    source file's hash), else ``provenance.json``'s ``fingerprint``; ``{}`` for a run that has neither."""
    if (path / "run_config.json").exists():
        fp = _read(path / "run_config.json", lambda f: json.loads(f.read_text()))
        if isinstance(fp, dict):
            return fp
    fp = (prov or {}).get("fingerprint")
    return fp if isinstance(fp, dict) else {}


def parse_overrides(items, source) -> dict:
    """``["method.lambda=0.5", "+x=1", ...]`` -> ``{"method.lambda": 0.5, "x": 1}`` (Hydra's override grammar)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if not isinstance(items, list):
        raise UserError(f"{source} is not a list of overrides; it should be the one Hydra wrote")
    try:
        parsed = OverridesParser.create().parse_overrides(overrides=[str(i) for i in items])
    except Exception as e:
        raise UserError(f"cannot parse the overrides in {source}: {e}") from None
    out = {}
    for o in parsed:
        key = o.key_or_group + (f"@{o.package}" if o.package else "")
        if o.is_delete():
            out[key] = "<deleted>"
            continue
        v = o.value()
        out[key] = v if isinstance(v, (bool, int, float, str, type(None))) else o.get_value_element_as_str()
    return out


def read_rows(run: Run) -> pd.DataFrame:
    """The run's per-sample rows: ``results.parquet``, or ``rows.jsonl`` if the run never wrote its tables."""
    if (run.path / "results.parquet").exists():
        return to_frame(_read(run.path / "results.parquet", pd.read_parquet).to_dict("records"))
    return to_frame([r for rec in _records(run.path) for r in rec.get("rows", [])])


def read_hidden(run: Run) -> list:
    """The ``[hidden_key, values]`` pairs of every finished sample in ``rows.jsonl`` (inputs of the aggregates)."""
    return [pair for rec in _records(run.path) for pair in rec.get("hidden", [])]


def _records(path: Path):
    """The ``sample`` records of ``rows.jsonl`` (none if the run has no such file)."""

    def parse(f):
        recs = []
        for line in f.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut by an interruption, as the runner skips it
                continue
            if rec.get("kind") == "sample":
                recs.append(rec)
        return recs

    return _read(path / "rows.jsonl", parse) if (path / "rows.jsonl").exists() else []


def _read(f: Path, reader):
    try:
        return reader(f)
    except Exception as e:
        raise UserError(f"cannot read {f}: {type(e).__name__}: {e}; repair or remove that run folder") from None


def _hashable(v):
    return v if isinstance(v, (bool, int, float, str, type(None))) else str(v)


# ---------------------------------------------------------------------- merging
def merge_runs(dirs, allow_change: Sequence[str] = ()) -> Merged:
    """Merge the run folders found in ``dirs`` (see the module docstring).  ``allow_change``: fingerprint parts
    (:data:`FINGERPRINT_PARTS`) whose differences between the runs are accepted and recorded."""
    bad = [p for p in allow_change if p not in FINGERPRINT_PARTS]
    if bad:
        raise UserError(f"--allow-change {','.join(bad)}: not a fingerprint part; choose from "
                        f"{', '.join(FINGERPRINT_PARTS)}")
    runs = [read_run(p) for p in find_run_folders(dirs)]
    _check_experiments(runs)
    allowed = check_fingerprints(runs, allow_change)
    groups: dict = {}
    for r in runs:
        groups.setdefault(r.settings(), []).append(r)
    swept = swept_keys(runs)
    contexts = [k for k in swept if not is_method_key(k)]
    warnings = [f"accepted (--allow-change): {a}" for a in allowed]
    by_context: Dict[tuple, list] = {}
    for group in groups.values():
        df, w = _merge_group(group)
        warnings += w
        if df.empty:
            continue
        for k in swept:
            if k in COLUMNS:
                continue
            v = group[0].overrides.get(k)
            df[k] = _param_column(df, k, v) if is_method_key(k) else [v] * len(df)
        ctx = tuple(_hashable(group[0].overrides.get(k)) for k in contexts)
        by_context.setdefault(ctx, []).append((group, df))
    for r in runs:
        if r.status != "complete":
            warnings.append(f"{r.path} ({r.status}): merged with the {r.n_rows} rows it holds"
                            + (f" ({r.note})" if r.note else ""))
    frames, parts = [], {name: [] for name in TABLES}
    for ctx, members in by_context.items():
        df, w = _pool(members)
        warnings += w
        frames.append(df)
        t = _tables(df, members[0][0][0])
        lead = dict(zip(contexts, (members[0][0][0].overrides.get(k) for k in contexts)))
        for name, table in t.items():
            parts[name].append(_with_swept(table, df, swept, lead))
    extra = [k for k in swept if k not in COLUMNS]
    if frames:
        results = _typed(pd.concat(frames, ignore_index=True), extra)[COLUMNS + extra]
    else:
        results = pd.DataFrame(columns=COLUMNS + extra)
    tables = {name: _typed(pd.concat(ps, ignore_index=True), swept) if ps else pd.DataFrame()
              for name, ps in parts.items()}
    summary = tables.pop("summary")
    table = pd.DataFrame([{"path": str(r.path), "status": r.status,
                           "overrides": " ".join(f"{k}={v}" for k, v in r.overrides.items()),
                           "shard": r.shard, "n_rows": r.n_rows, "note": r.note} for r in runs])
    return Merged(results, summary, swept, table, warnings, tables, contexts, allowed)


def _param_column(df: pd.DataFrame, key: str, value) -> list:
    """The swept value of ``method.K`` on the rows of arms whose ``params`` hold K (the methods that take it);
    None on the others.  ``method`` itself (a config group) is the results column."""
    name = key.lstrip("+~").split(".", 1)[1] if "." in key else key
    has = {p: name in _params_dict(p) for p in pd.unique(df["params"].astype(str))}
    return [value if has[str(p)] else None for p in df["params"]]


def _params_dict(p) -> dict:
    try:
        d = json.loads(p)
    except (TypeError, ValueError):
        return {}
    return d if isinstance(d, dict) else {}


def _pool(members) -> tuple:
    """The rows of the competing points of one context: each (arm, benchmark, metric, sample) once, from the
    first point that has it (a later point's copy of an arm it shares with an earlier one is dropped)."""
    df = pd.concat([d for _, d in members], ignore_index=True)
    skipped = df["metric"] == "skipped"
    per = df[~skipped]
    dup = per.duplicated(ROW_KEY, keep="first")
    warnings = []
    if dup.any():
        first = per[~dup].set_index(ROW_KEY)["value"]
        again = per[dup].set_index(ROW_KEY)["value"]
        a, b = first.reindex(again.index).to_numpy(float), again.to_numpy(float)
        differ = ~((a == b) | (pd.isna(a) & pd.isna(b)) | (abs(a - b) <= 1e-9 * (1 + abs(a))))
        if differ.any():
            k = again.index[differ.argmax()]
            warnings.append(f"{int(differ.sum())} values computed by several points with the same settings "
                            f"differ (e.g. {k[3]} on {k[2]}, sample {k[6]}, {k[5]}); the first point's are kept")
    df = pd.concat([per[~dup], df[skipped].drop_duplicates(KEYS + ["note"])], ignore_index=True)
    return df, warnings


def _tables(df: pd.DataFrame, run: Run) -> Dict[str, pd.DataFrame]:
    """Summary (with the marks), validity, comparisons and ranking of one context's pooled rows."""
    from .results import tables

    return tables(df[COLUMNS], seed=run.seed, alpha=run.alpha)


def _with_swept(table: pd.DataFrame, df: pd.DataFrame, swept: List[str], lead: dict) -> pd.DataFrame:
    """``table`` with the swept columns in front: the context's values, and each method key's value per arm
    (from the pooled rows: an arm that does not take the key has none)."""
    t = table.copy()
    cols = []
    for k in swept:
        if k in t.columns and k in COLUMNS:
            cols.append(k)
            continue
        if k in lead:
            t[k] = [lead[k]] * len(t)
        elif k in df and "method" in t and "params" in t:
            arm = df.drop_duplicates(["method", "params"]).set_index(["method", "params"])[k]
            t[k] = [arm.get((m, "" if pd.isna(p) else str(p))) for m, p in zip(t["method"], t["params"])]
        else:
            continue
        cols.append(k)
    return t[cols + [c for c in t.columns if c not in cols]]


def swept_keys(runs: List[Run]) -> List[str]:
    """Override keys whose value differs between the runs (absent counts as a value), in order of appearance."""
    keys = list(dict.fromkeys(k for r in runs for k in r.overrides if k not in PARTITION_KEYS + IGNORED_KEYS))
    absent = object()
    return [k for k in keys if len({_hashable(r.overrides[k]) if k in r.overrides else absent for r in runs}) > 1]


def _merge_group(group: List[Run]):
    """The rows of one run: one folder as it is, or its shards concatenated with the aggregates recomputed."""
    warnings = []
    if len(group) > 1 or group[0].shard is not None:
        _check_shards(group, warnings)
    if len(group) == 1:
        run = group[0]
        df = read_rows(run)
        run.n_rows = len(df)
        if not (run.path / "results.parquet").exists():
            hidden = read_hidden(run)
            if hidden:
                df = pd.concat([df, to_frame(_aggregate(hidden, run))], ignore_index=True)
        return df, warnings
    group.sort(key=lambda r: _shard_index(r.shard))
    parts, hidden = [], []
    for run in group:
        if not (run.path / "rows.jsonl").exists():
            raise UserError(f"{run.path} has no rows.jsonl, which holds the per-sample counts that the dataset-level "
                            f"metrics of merged shards are recomputed from; rerun that shard, or merge without it")
        df = read_rows(run)
        df = df[df["sample_id"] != AGGREGATE]
        run.n_rows = len(df)
        parts.append(df)
        hidden += read_hidden(run)
    df = pd.concat(parts, ignore_index=True)
    skipped = df["metric"] == "skipped"
    per = df[~skipped]
    dup = per.duplicated(KEYS + ["sample_id"], keep=False)
    if dup.any():
        r = per[dup].iloc[0]
        raise UserError(f"sample {r['sample_id']} ({r['model']} / {r['method']}) is in more than one of the shards "
                        f"{', '.join(str(g.path) for g in group)}: they do not partition one run; merge them "
                        f"separately")
    # every shard records a (model, method) pair that cannot run: keep one such row
    df = pd.concat([per, df[skipped].drop_duplicates(KEYS + ["note"])], ignore_index=True)
    if hidden:
        df = pd.concat([df, to_frame(_aggregate(hidden, group[0]))], ignore_index=True)
    return df, warnings


def _check_shards(group: List[Run], warnings: list):
    paths = ", ".join(str(r.path) for r in group)
    shards = [r.shard for r in group]
    if None in shards or len(set(shards)) < len(shards):
        raise UserError(f"the run folders {paths} have the same settings but are not distinct shards "
                        f"(shard=I/N); merge them separately, or remove the duplicate")
    totals = {_shard_index(s)[1] for s in shards}
    if len(totals) > 1:
        raise UserError(f"the shards {paths} split the samples into different numbers of parts "
                        f"({', '.join(map(str, shards))}); merge shards of one shard=I/N split only")
    total = totals.pop()
    if total and len(group) < total:
        warnings.append(f"only {len(group)} of {total} shards of one run found ({paths}): the merged run is partial")


def _shard_index(s) -> tuple:
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(s))
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _aggregate(hidden: list, run: Run) -> list:
    """Dataset-level rows from the concatenated per-sample hidden counts (the runner's own reduction)."""
    from .results import aggregate_rows

    return aggregate_rows(hidden, run.experiment, run.seed)


def _check_experiments(runs: List[Run]):
    names = {}
    for r in runs:
        if r.experiment:
            names.setdefault(r.experiment, r.path)
    if len(names) > 1:
        raise UserError("the run folders hold different experiments (" + ", ".join(
            f"{n} in {p}" for n, p in names.items()) + "); merge the runs of each experiment separately")


def _typed(df: pd.DataFrame, swept: List[str]) -> pd.DataFrame:
    """One type per swept column: numbers stay numbers, anything mixed becomes text (parquet needs one type)."""
    for k in swept:
        if k not in df:
            continue
        vals = [v for v in df[k] if v is not None and not (isinstance(v, float) and pd.isna(v))]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals) and \
                not all(isinstance(v, bool) for v in vals):
            df[k] = [None if v is None or (isinstance(v, float) and pd.isna(v)) else str(v) for v in df[k]]
    return df


# ------------------------------------------------------------------ fingerprints
def check_fingerprints(runs: List[Run], allow_change: Sequence[str] = ()) -> List[str]:
    """Refuse runs whose fingerprints differ in code, versions, weights or data (:data:`FINGERPRINT_PARTS`),
    naming each difference; return the differences of the parts in ``allow_change`` (accepted).

    ``code``: the hash over the package's source files (the files that differ are named when both runs kept
    the per-file hashes in ``run_config.json``), else the git revision; ``versions``: every package version;
    ``weights``: per model label, between runs whose settings of that model are equal (a swept model
    parameter gives other weights by design); ``data``: per benchmark, between runs whose dataset settings
    are equal.  Runs without a fingerprint (written before the runner kept one) are not compared."""
    found: Dict[str, List[str]] = {p: [] for p in FINGERPRINT_PARTS}
    fps = [r for r in runs if r.fingerprint]
    for r in fps[1:]:
        ref = fps[0]
        found["code"] += [f"{_name(ref)} vs {_name(r)}: {d}" for d in _code_diff(ref.fingerprint.get("code"),
                                                                                   r.fingerprint.get("code"))]
        found["versions"] += [f"{_name(ref)} vs {_name(r)}: {d}" for d in
                              _dict_diff(ref.fingerprint.get("versions"), r.fingerprint.get("versions"))]
    for part, settings in (("weights", _model_settings), ("data", _data_settings)):
        first: Dict[tuple, Run] = {}
        for r in fps:
            for key, digest in (r.fingerprint.get(part) or {}).items():
                ref = first.setdefault((key, settings(r.fingerprint, key)), r)
                if ref is r:
                    continue
                old = (ref.fingerprint.get(part) or {}).get(key)
                if json.dumps(_without_times(old), sort_keys=True, default=str) != \
                        json.dumps(_without_times(digest), sort_keys=True, default=str):
                    what = "weights of model" if part == "weights" else "data of benchmark"
                    if isinstance(old, dict) and isinstance(digest, dict):
                        detail = "; ".join(f"{k} {_short_value(old.get(k))} -> {_short_value(digest.get(k))}"
                                           for k in sorted(set(old) | set(digest), key=str)
                                           if k != "mtimes_sha256" and old.get(k) != digest.get(k))
                    else:
                        detail = f"{_short_value(old)} -> {_short_value(digest)}"
                    found[part].append(f"{_name(ref)} vs {_name(r)}: the {what} {key} differ with the same "
                                       f"settings ({detail})")
    refused = {p: lines for p, lines in found.items() if lines and p not in allow_change}
    if refused:
        lines = [f"{p}: {x}" for p, xs in refused.items() for x in xs[:6]]
        more = sum(len(xs) for xs in refused.values()) - len(lines)
        raise UserError("the runs were computed under different conditions, so their results cannot be "
                        "compared in one table:\n  " + "\n  ".join(lines) + (f"\n  ... and {more} more" if more else "")
                        + "\nRerun the differing runs with the same code, packages, weights and data, or merge "
                          f"anyway with --allow-change {','.join(refused)} (recorded in merge.json)")
    return [f"{p}: {x}" for p in allow_change for x in found.get(p, [])]


def _name(r: Run) -> str:
    return r.path.name or str(r.path)


def _code_diff(a, b) -> List[str]:
    if not isinstance(a, dict) or not isinstance(b, dict):
        return []
    if a.get("source_sha256") and b.get("source_sha256"):
        if a["source_sha256"] == b["source_sha256"]:
            return []
        fa, fb = a.get("files") or {}, b.get("files") or {}
        changed = sorted(k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k))
        what = (f"{len(changed)} source file(s) differ: " + ", ".join(changed[:6]) + (" ..." if len(changed) > 6
                                                                                        else "")) if changed \
            else "the package's source files differ"
        revs = (f" (git {str(a.get('git_revision'))[:12]} -> {str(b.get('git_revision'))[:12]})"
                if a.get("git_revision") != b.get("git_revision") else "")
        return [what + revs]
    if a.get("git_revision") != b.get("git_revision"):
        return [f"git revision {str(a.get('git_revision'))[:12]} -> {str(b.get('git_revision'))[:12]}"]
    return []


def _dict_diff(a, b) -> List[str]:
    a, b = a or {}, b or {}
    return [f"{k} {a.get(k)} -> {b.get(k)}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def _benchmarks(fp: dict) -> list:
    b = (fp.get("config") or {}).get("benchmarks") or []
    return [e for e in b if isinstance(e, (list, tuple)) and len(e) >= 4]


def _model_settings(fp: dict, label: str) -> str:
    return json.dumps([e[1] for e in _benchmarks(fp) if str(e[0]) == str(label)], sort_keys=True, default=str)


def _data_settings(fp: dict, key: str) -> str:
    return json.dumps([[e[2], e[3]] for e in _benchmarks(fp) if f"{e[2]}|{e[0]}" == str(key)], sort_keys=True,
                      default=str)


def _without_times(v):
    """File times change with a copy; names, sizes and sample ids say whether the data changed."""
    if isinstance(v, dict):
        return {k: _without_times(x) for k, x in v.items() if k != "mtimes_sha256"}
    return v


def _short_value(v) -> str:
    """A digest as its first 12 characters, anything else as JSON of at most 60."""
    if isinstance(v, str) and re.fullmatch(r"[0-9a-f]{32,}", v):
        return v[:12]
    s = json.dumps(v, sort_keys=True, default=str)
    return s if len(s) <= 60 else s[:57] + "..."


# ---------------------------------------------------------------------- writing
def check_out(out: Path, run_paths) -> None:
    """The merged tables must not go into a run folder (an input's, or any other): they would replace its own
    ``results.parquet`` / ``summary.csv``, and later merges of that folder would read the merged rows."""
    o = Path(out).resolve()
    for p in map(Path, run_paths):
        r = p.resolve()
        if o == r or r in o.parents:
            raise UserError(f"--out {out} is {'the' if o == r else 'inside the'} run folder {p}: the merged tables "
                            f"would overwrite that run's own tables; choose a folder outside the inputs "
                            f"(e.g. --out {p.parent / 'merged'})")
    if o.is_dir() and is_run_folder(o):
        raise UserError(f"--out {out} is a run folder: the merged tables would overwrite its own tables; choose "
                        f"another folder")


def write_merged(m: Merged, out: Path) -> None:
    """Write the tables and ``merge.json`` into ``out``, each atomically (:mod:`xaibench.io`); refuse an ``out``
    that is or lies inside a run folder (:func:`check_out`)."""
    out = Path(out)
    check_out(out, list(m.runs["path"]) if len(m.runs) else [])
    out.mkdir(parents=True, exist_ok=True)
    atomic_to_parquet(m.results, out / "results.parquet", index=False)
    atomic_to_csv(m.results, out / "results.csv", index=False)
    atomic_to_csv(m.summary, out / "summary.csv", index=False)
    for name, table in m.tables.items():
        atomic_to_csv(table, out / f"{name}.csv", index=False)
    atomic_to_csv(m.runs, out / "runs.csv", index=False)
    record = {"inputs": list(m.runs["path"]) if len(m.runs) else [], "swept": m.swept, "contexts": m.contexts,
              "allowed_changes": m.allowed, "statuses": m.runs["status"].value_counts().to_dict() if len(m.runs)
              else {}}
    atomic_write_text(out / "merge.json", json.dumps(record, indent=2, default=str))


def main(argv=None):
    p = argparse.ArgumentParser(prog="xaibench-merge", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dirs", nargs="+", type=Path, metavar="DIR",
                   help="run folders, or folders holding run folders (a multirun sweep folder)")
    p.add_argument("--out", type=Path, help="output folder (default: the first DIR when it holds run folders); "
                                            "never a run folder or a folder inside one")
    p.add_argument("--allow-change", default="", metavar="PARTS",
                   help=f"merge runs whose fingerprints differ in these parts ({','.join(FINGERPRINT_PARTS)}); "
                        f"the differences are recorded in merge.json")
    a = p.parse_args(argv)
    try:
        out = a.out
        if out is None:
            if not a.dirs[0].is_dir() or is_run_folder(a.dirs[0]):
                raise UserError(f"{a.dirs[0]} is a single run folder (or missing); pass --out DIR to say where "
                                f"the merged tables go")
            out = a.dirs[0]
        allow = [x.strip() for x in a.allow_change.split(",") if x.strip()]
        m = merge_runs(a.dirs, allow_change=allow)
        write_merged(m, out)
    except UserError as e:
        print(f"xaibench-merge: error: {e}", file=sys.stderr)
        return 2
    report(m, out)
    return 0


def report(m: Merged, out: Path, file=None) -> None:
    """Console lines: warnings, then what was merged and where it went."""
    file = file or sys.stdout
    for w in m.warnings:
        print(f"xaibench-merge: warning: {w}", file=sys.stderr)
    n_runs = len(m.runs)
    print(f"merged {n_runs} run folder{'s' * (n_runs != 1)} ({len(m.results)} rows"
          f"{'; swept: ' + ', '.join(m.swept) if m.swept else ''}) into {out}", file=file)


if __name__ == "__main__":
    sys.exit(main())
