"""Benchmark of the main job: wall time and model passes, with and without the in-run output cache.

    python bench/bench_main_job.py [--threads N] [--n-samples N] [--keep DIR] [--out results/bench_main_job.csv]

Runs the default experiment exactly as ``make run`` does (the ``xaibench``
command beside this Python, no overrides but the run folder, ``threads`` and
``cache``) twice, in a temporary run folder each: with ``cache=true`` (the
default) and ``cache=false``.  For each run it reports, per model and in total:

* ``wall_s``: the command's wall-clock seconds (start-up, imports and writing
  the tables included; total rows only), and ``run_wall_s``, the runner's own
  ``wall_time_s`` from ``provenance.json``;
* ``explain_eval_s``: the summed ``explain_time_s`` and ``eval_time_s`` of the
  model's results (the time spent in methods and metrics);
* ``forward_explain`` / ``forward_eval``: forward passes the methods and the
  metrics used, the sums of the ``n_forward`` and ``eval_n_forward`` rows of
  ``results.csv`` (the adapter's counts; passes answered by the cache are not
  passes), and ``forward_total``, their sum;
* ``forward_per_method_sample``: ``forward_total`` / the number of (method,
  sample) pairs -- the old core spent about 100 perturbation passes per method
  and sample;
* ``forward_saved_by_cache`` (``cache=true`` rows): ``forward_total`` of the
  ``cache=false`` run minus that of the ``cache=true`` run, per model; the
  total row also gives ``cache_hits``, the runner's own count
  (``provenance.json`` ``passes.cache_hits``), which must agree with it;
* ``forward_all`` (total rows): every forward pass of the run, the adapter's
  own count (``provenance.json`` ``passes.forward``).  It differs from
  ``forward_total`` by the prediction of each sample (one pass, counted only
  here) and by traces shared by several arms of one method (``staa_raw`` and
  ``staa``; ``stdnorm`` and ``stdnorm_nostd``): the results charge such a
  trace to every arm, as each arm's own cost.

The cache must not change any result: the script compares the two runs'
``summary.csv`` means of every metric but the cost ones and prints the largest
difference (``max_abs_diff_vs_other_run``).  Target (issue 11): the main job in
under 3 minutes on the 2-core machine (``target``/``met`` on the total rows; the
old core took 4:22).  ``--n-samples`` limits every dataset (``dataset.n_samples``)
for a quick check; the figures are then not the main job's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common

import pandas as pd  # noqa: E402

TARGET_S = 180.0
COLUMNS = ["cache", "model", "n_samples", "n_methods", "wall_s", "run_wall_s", "explain_eval_s", "forward_explain",
           "forward_eval", "forward_total", "forward_per_method_sample", "forward_saved_by_cache", "cache_hits",
           "forward_all", "backward_all", "forward_time_s", "threads", "target", "met", "max_abs_diff_vs_other_run"]


def xaibench_command():
    exe = Path(sys.executable).parent / "xaibench"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "xaibench.run.app"]


def run_job(run_dir: Path, cache: bool, threads: int, extra) -> float:
    """Run the main job into ``run_dir``; its wall-clock seconds."""
    cmd = xaibench_command() + [f"hydra.run.dir={run_dir}", f"cache={str(cache).lower()}", f"threads={threads}",
                                *extra]
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=common.ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(proc.stdout[-4000:])
        raise SystemExit(f"the main job failed (exit {proc.returncode}); its output is above")
    tail = [ln for ln in proc.stdout.splitlines() if ln.startswith("model passes")]
    print("\n".join(tail) + f"\n({wall:.1f} s)", flush=True)
    return wall


def per_model(run_dir: Path) -> pd.DataFrame:
    """Per model: samples, methods, method+metric seconds and forward passes from the run's results."""
    res = pd.read_csv(run_dir / "results.csv", low_memory=False)
    res = res[res.metric_kind == "cost"]
    wide = res.pivot_table(index=["model", "method", "sample_id"], columns="metric", values="value",
                           aggfunc="first").reset_index()
    for c in ("explain_time_s", "eval_time_s", "n_forward", "eval_n_forward"):
        if c not in wide:
            wide[c] = 0.0
    g = wide.groupby("model", sort=False)
    out = pd.DataFrame({
        "n_samples": g.sample_id.nunique(), "n_methods": g.method.nunique(),
        "explain_eval_s": g.explain_time_s.sum() + g.eval_time_s.sum(),
        "forward_explain": g.n_forward.sum(), "forward_eval": g.eval_n_forward.sum(),
        "pairs": g.size()})
    out["forward_total"] = out.forward_explain + out.forward_eval
    out["forward_per_method_sample"] = out.forward_total / out.pairs
    return out


def summary_diff(a: Path, b: Path) -> float:
    """Largest |difference| of the summary means of every non-cost metric of two runs."""
    keys = ["dataset", "model", "method", "params", "metric"]
    sa, sb = (pd.read_csv(p / "summary.csv") for p in (a, b))
    sa, sb = (s[s.metric_kind != "cost"] for s in (sa, sb))
    m = sa.merge(sb, on=keys, suffixes=("_a", "_b"), how="outer")
    d = (m.mean_a - m.mean_b).abs()
    both_nan = m.mean_a.isna() & m.mean_b.isna()
    if (d.isna() & ~both_nan).any():  # a value present in one run only
        return float("inf")
    return float(d.max()) if d.notna().any() else 0.0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="torch threads of the main job (default: every CPU of the machine)")
    p.add_argument("--n-samples", type=int, default=None,
                   help="limit every dataset (dataset.n_samples=N) for a quick check; not the main job's figures")
    p.add_argument("--keep", default=None, help="keep the two run folders under this folder")
    p.add_argument("--out", default=str(common.ROOT / "results" / "bench_main_job.csv"))
    args = p.parse_args(argv)
    extra = [] if args.n_samples is None else [f"dataset.n_samples={args.n_samples}"]
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_main_job_"))
    runs = {}
    try:
        for cache in (True, False):
            d = base / f"cache_{str(cache).lower()}"
            if d.exists():
                shutil.rmtree(d)
            wall = run_job(d, cache, args.threads, extra)
            prov = json.loads((d / "provenance.json").read_text())
            runs[cache] = (d, wall, prov, per_model(d))
        diff = summary_diff(runs[True][0], runs[False][0])
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    rows = []
    no_cache = runs[False][3]
    for cache in (True, False):
        d, wall, prov, pm = runs[cache]
        for model, r in pm.iterrows():
            row = dict(cache=cache, model=model, threads=args.threads, **r.drop("pairs").to_dict(),
                       forward_time_s=prov.get("forward_time_s", {}).get(model))
            if cache:
                row["forward_saved_by_cache"] = float(no_cache.forward_total.get(model, float("nan")) -
                                                      r.forward_total)
            rows.append(row)
        tot = pm.sum(numeric_only=True)
        passes = prov.get("passes", {})
        total = dict(cache=cache, model="(total)", threads=args.threads, wall_s=wall,
                     run_wall_s=prov.get("wall_time_s"), n_samples=int(tot.n_samples),
                     n_methods=int(pm.n_methods.max()), explain_eval_s=tot.explain_eval_s,
                     forward_explain=tot.forward_explain, forward_eval=tot.forward_eval,
                     forward_total=tot.forward_total,
                     forward_per_method_sample=tot.forward_total / tot.pairs,
                     cache_hits=passes.get("cache_hits"), forward_all=passes.get("forward"),
                     backward_all=passes.get("backward"), target=f"<= {TARGET_S:.0f} s",
                     met=bool(wall <= TARGET_S) if args.n_samples is None else None,
                     max_abs_diff_vs_other_run=diff)
        if cache:
            total["forward_saved_by_cache"] = float(no_cache.forward_total.sum() - tot.forward_total)
        rows.append(total)
    out = common.write_csv(rows, args.out, COLUMNS)
    print()
    common.print_table(rows, ["cache", "model", "n_samples", "n_methods", "wall_s", "explain_eval_s",
                              "forward_explain", "forward_eval", "forward_total", "forward_per_method_sample",
                              "forward_saved_by_cache", "cache_hits", "forward_all", "met"])
    print(f"\ncache=true vs cache=false: largest difference of a (non-cost) summary mean: {diff:.3g}")
    if args.n_samples is not None:
        print(f"(dataset.n_samples={args.n_samples}: a quick check, not the main job's figures)")
    print(f"written {out}")
    return rows


if __name__ == "__main__":
    common.run_main(main)
