"""``xaibench-gate``: the regression gate CI runs.

    xaibench-gate CURRENT_SUMMARY.csv BASELINE_SUMMARY.csv [--atol 0.02] [--rtol 0.05]
                  [--ignore explain_time_s,n_forward,...] [--update]

Compares the ``mean`` of every (experiment, dataset, model, method, params,
metric) row of the current ``summary.csv`` with the committed baseline.  A row
*regresses* when it moved in its worse direction (``higher_is_better``) by more
than ``atol + rtol * |baseline|``; a baseline row missing from the current
summary is a failure too.  Improvements beyond the tolerance are reported (so
that the baseline gets updated with ``--update``) but do not fail.  Wall-clock
and memory metrics are ignored by default: they depend on the machine and its load.  Exit status: 0
pass, 1 regression, 2 usage error.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

from .results import KEYS

DEFAULT_IGNORE = ("explain_time_s", "eval_time_s", "explain_peak_mem_mb")


def compare(current: pd.DataFrame, baseline: pd.DataFrame, atol=0.02, rtol=0.05, ignore=DEFAULT_IGNORE):
    """Return a DataFrame with one row per baseline key and a ``status`` column
    (ok | regressed | improved | missing | new)."""
    cur = current[~current["metric"].isin(ignore)].copy()
    base = baseline[~baseline["metric"].isin(ignore)].copy()
    for d in (cur, base):
        d["params"] = d["params"].astype(str)
    m = base.merge(cur, on=KEYS, how="outer", suffixes=("_base", "_cur"), indicator=True)
    status = []
    for _, r in m.iterrows():
        if r["_merge"] == "left_only":
            status.append("missing")
            continue
        if r["_merge"] == "right_only":
            status.append("new")
            continue
        b, c = r["mean_base"], r["mean_cur"]
        if (isinstance(b, float) and math.isnan(b)) and (isinstance(c, float) and math.isnan(c)):
            status.append("ok")
            continue
        if math.isnan(b) != math.isnan(c):
            status.append("regressed")
            continue
        tol = atol + rtol * abs(b)
        hib = bool(r["higher_is_better_base"])
        delta = (c - b) if hib else (b - c)  # positive = better
        status.append("ok" if abs(c - b) <= tol else ("improved" if delta > 0 else "regressed"))
    m["status"] = status
    cols = KEYS + ["mean_base", "mean_cur", "status"]
    return m[cols]


def main(argv=None):
    p = argparse.ArgumentParser(prog="xaibench-gate", description=__doc__.split("\n\n")[0])
    p.add_argument("current", type=Path)
    p.add_argument("baseline", type=Path)
    p.add_argument("--atol", type=float, default=0.02)
    p.add_argument("--rtol", type=float, default=0.05)
    p.add_argument("--ignore", default=",".join(DEFAULT_IGNORE))
    p.add_argument("--update", action="store_true", help="overwrite the baseline with the current summary")
    a = p.parse_args(argv)
    for f in (a.current,) + (() if a.update else (a.baseline,)):
        if not f.exists():
            print(f"xaibench-gate: error: {f} does not exist (a run's summary.csv is in its run folder)",
                  file=sys.stderr)
            return 2
    cur = pd.read_csv(a.current)
    if a.update:
        a.baseline.parent.mkdir(parents=True, exist_ok=True)
        cur.to_csv(a.baseline, index=False)
        print(f"baseline {a.baseline} updated from {a.current}")
        return 0
    table = compare(cur, pd.read_csv(a.baseline), a.atol, a.rtol, tuple(x for x in a.ignore.split(",") if x))
    bad = table[table["status"].isin(["regressed", "missing"])]
    with pd.option_context("display.width", 250, "display.max_columns", 20, "display.max_colwidth", 60):
        shown = table[table["status"] != "ok"]
        if len(shown):
            print(shown.to_string(index=False))
    n_ok = int((table["status"] == "ok").sum())
    print(f"regression gate: {n_ok} ok, {int((table['status'] == 'improved').sum())} improved, "
          f"{len(bad)} regressed or missing, {int((table['status'] == 'new').sum())} new")
    return 1 if len(bad) else 0


if __name__ == "__main__":
    sys.exit(main())
