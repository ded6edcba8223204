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
  as ``seed``, is that column).
* **Shards.**  Runs whose overrides differ only in ``shard=I/N`` (and
  ``resume``) are parts of one run: their per-sample rows are concatenated and
  the dataset-level aggregate rows (``sample_id == "__aggregate__"``: pixel
  accuracy, mIoU, ...) are recomputed from the per-sample hidden counts of all
  shards (``rows.jsonl``) with :func:`xaibench.analysis.results.aggregate_rows`.
* **Summary.**  :func:`xaibench.analysis.results.summarise` of each run's merged
  rows, with the swept columns in front, concatenated.

Writes ``results.parquet``, ``results.csv``, ``summary.csv`` and ``runs.csv``
(one row per run folder: path, status, overrides, shard, n_rows, note) to
``--out`` (default: the first DIR when it holds run folders).  A run whose
status is not ``complete`` (``interrupted``, ``failed``) is merged and reported.
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
from typing import List

import pandas as pd
from omegaconf import OmegaConf

from ..errors import UserError
from ..io import atomic_to_csv, atomic_to_parquet
from .results import AGGREGATE, COLUMNS, KEYS, summarise, to_frame

PARTITION_KEYS = ("shard",)  # split one run's samples: never a swept column
IGNORED_KEYS = ("resume",)  # how a run was started, not what it computed


@dataclass
class Run:
    """One run folder: its status and its task overrides (key -> parsed value)."""

    path: Path
    status: str
    overrides: dict
    experiment: str = ""
    seed: int = 0
    note: str = ""
    n_rows: int = 0

    @property
    def shard(self):
        return self.overrides.get("shard")

    def settings(self) -> tuple:
        """What the run computed: its overrides less the partition and ignored keys."""
        return tuple(sorted((k, _hashable(v)) for k, v in self.overrides.items()
                            if k not in PARTITION_KEYS + IGNORED_KEYS))


@dataclass
class Merged:
    results: pd.DataFrame  # COLUMNS + one column per swept key
    summary: pd.DataFrame  # swept columns + summarise()'s columns
    swept: List[str]
    runs: pd.DataFrame  # one row per run folder: path, status, overrides, shard, n_rows, note
    warnings: List[str] = field(default_factory=list)


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
    return Run(path, str(status), overrides, experiment, seed, note)


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
def merge_runs(dirs) -> Merged:
    """Merge the run folders found in ``dirs`` (see the module docstring)."""
    runs = [read_run(p) for p in find_run_folders(dirs)]
    groups: dict = {}
    for r in runs:
        groups.setdefault(r.settings(), []).append(r)
    _check_experiments(runs)
    swept = swept_keys(runs)
    frames, summaries, warnings = [], [], []
    for group in groups.values():
        df, w = _merge_group(group)
        warnings += w
        values = {k: group[0].overrides.get(k) for k in swept}
        s = _summarise(df, group[0].seed)
        for i, k in enumerate(swept):
            if k not in df:
                df[k] = values[k]
            if k not in s:
                s.insert(i, k, values[k])
        frames.append(df)
        summaries.append(s)
    for r in runs:
        if r.status != "complete":
            warnings.append(f"{r.path} ({r.status}): merged with the {r.n_rows} rows it holds"
                            + (f" ({r.note})" if r.note else ""))
    results = _typed(pd.concat(frames, ignore_index=True), swept)[COLUMNS + [k for k in swept if k not in COLUMNS]]
    summary = _typed(pd.concat(summaries, ignore_index=True), swept)
    table = pd.DataFrame([{"path": str(r.path), "status": r.status,
                           "overrides": " ".join(f"{k}={v}" for k, v in r.overrides.items()),
                           "shard": r.shard, "n_rows": r.n_rows, "note": r.note} for r in runs])
    return Merged(results, summary, swept, table, warnings)


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


def _summarise(df: pd.DataFrame, seed: int) -> pd.DataFrame:
    return summarise(df=df[COLUMNS], seed=seed)


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
        vals = [v for v in df[k] if v is not None and not (isinstance(v, float) and pd.isna(v))]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals) and \
                not all(isinstance(v, bool) for v in vals):
            df[k] = [None if v is None or (isinstance(v, float) and pd.isna(v)) else str(v) for v in df[k]]
    return df


# ---------------------------------------------------------------------- writing
def write_merged(m: Merged, out: Path) -> None:
    """Write the four tables into ``out``, each atomically (:mod:`xaibench.io`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_to_parquet(m.results, out / "results.parquet", index=False)
    atomic_to_csv(m.results, out / "results.csv", index=False)
    atomic_to_csv(m.summary, out / "summary.csv", index=False)
    atomic_to_csv(m.runs, out / "runs.csv", index=False)


def main(argv=None):
    p = argparse.ArgumentParser(prog="xaibench-merge", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dirs", nargs="+", type=Path, metavar="DIR",
                   help="run folders, or folders holding run folders (a multirun sweep folder)")
    p.add_argument("--out", type=Path, help="output folder (default: the first DIR when it holds run folders)")
    a = p.parse_args(argv)
    try:
        out = a.out
        if out is None:
            if not a.dirs[0].is_dir() or is_run_folder(a.dirs[0]):
                raise UserError(f"{a.dirs[0]} is a single run folder (or missing); pass --out DIR to say where "
                                f"the merged tables go")
            out = a.dirs[0]
        m = merge_runs(a.dirs)
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
