"""Verdicts with power: how stable the marks and verdicts are across seeds, and the simulations behind them.

    python bench/bench_verdicts.py [--seeds 0 1 2 3 4] [--n-samples N] [--threads 1] [--keep DIR [--reuse]]
    python bench/bench_verdicts.py --simulate [--runs 100] [--quick]

**Stability (default).**  Runs the default experiment (the ``xaibench`` command
beside this Python, as ``make run`` does) once per seed: only ``seed`` changes;
the datasets keep their own seeds, so every run sees the same samples, and
everything the run seed drives (SHAP, LIME, random subsets, the random control,
tie orders) is redrawn.  It prints, over the (benchmark, metric) families of
the judged (quality) metrics:

* ``verdict_flips``: families whose validity verdict is not the same at every
  seed, and ``valid_invalid_flips``: those that are ``valid`` at one seed and
  ``invalid`` at another (the issue's target: none);
* ``best_flips``: (family, method) cells whose ``*`` mark is not the same at
  every seed, and ``tied_flips`` likewise for ``~``;
* ``top_flips``: families whose top method (best mean among the methods) is
  not the same at every seed, and ``top_flips_valid`` among the families valid
  at every seed (target: none).

One row per family goes to ``results/bench_verdicts.csv`` (verdict, top
method and marked methods per seed, and the flip flags).  ``--n-samples``
limits every dataset (``dataset.n_samples``) for a quick check.

**Simulations (``--simulate``).**  No model runs; the numbers behind
``docs/metrics.md`` ("Power and the default n"):

* the power of the comparisons with the best (:func:`xaibench.analysis.stats.power_vs_best`)
  for the benchmarks' numbers of methods, over n: ``results/verdict_power.csv``;
* the error rates of the validity rule (:func:`xaibench.analysis.stats.validity`)
  on synthetic per-sample control values that mimic the committed main job's
  controls (``results/main_job/results.parquet``): each (benchmark, metric)
  family's four control columns are redrawn with replacement with a little
  Gaussian jitter (a smoothed bootstrap, :class:`World`), as observed or, for
  a family whose controls make a valid metric, changed into a known invalid one
  (gt no better than random; a constant map 0.3 of the span above random).  The
  truth of each world comes from its population effects.  Each simulated run
  holds every family of the main job, so the Benjamini-Hochberg adjustment sees
  a run of the real size: ``results/verdict_error_rates.csv`` (verdict shares by
  truth and world) and ``results/verdict_determined.csv`` (per family, the share
  of determined verdicts when its controls are redrawn as observed).
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

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from xaibench.analysis import stats as S  # noqa: E402
from xaibench.analysis.schema import is_judged, metric_kinds  # noqa: E402

MAIN_JOB = common.ROOT / "results" / "main_job" / "results.parquet"
FAM = S.FAMILY
ORDER = ("control_gt", "control_random", "control_gt_inverted", "control_constant")


# --------------------------------------------------------------------------- stability across seeds
def xaibench_command():
    exe = Path(sys.executable).parent / "xaibench"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "xaibench.run.app"]


def run_seed(run_dir: Path, seed: int, threads: int, extra) -> float:
    cmd = xaibench_command() + [f"hydra.run.dir={run_dir}", f"seed={seed}", f"threads={threads}", "report=false",
                                *extra]
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=common.ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(proc.stdout[-4000:])
        raise SystemExit(f"the run at seed={seed} failed (exit {proc.returncode}); its output is above")
    print(f"  seed {seed}: {wall:.0f} s", flush=True)
    return wall


def arm_params(params) -> str:
    """An arm's parameters as they name it across seeds: without ``seed``, which follows the run seed by design
    (SHAP, LIME and the random control take the run's seed), so ``shap`` at seed 0 and at seed 1 is one arm."""
    if not isinstance(params, str) or params in ("", "{}"):
        return ""
    d = {k: v for k, v in json.loads(params).items() if k != "seed"}
    return json.dumps(d, sort_keys=True) if d else ""


def family_table(run_dirs: dict) -> pd.DataFrame:
    """One row per judged family: per seed its verdict, top method and marked methods; flip flags."""
    per_seed = {}
    for seed, d in run_dirs.items():
        s = pd.read_csv(d / "summary.csv")
        s = s[[is_judged(k) for k in metric_kinds(s)]]
        v = pd.read_csv(d / "validity.csv").set_index(FAM)["verdict"]
        per_seed[seed] = (s, v)
    fams = sorted({tuple(k) for s, _ in per_seed.values() for k in s[FAM].astype(str).values})
    rows = []
    for fam in fams:
        row = dict(zip(FAM, fam))
        verdicts, tops, best, tied = [], [], [], []
        for seed, (s, v) in per_seed.items():
            g = s[(s[FAM].astype(str).values == np.array(fam)).all(axis=1)]
            m = g[g["kind"] == "method"]
            label = m["method"] + m["params"].map(arm_params)
            verdicts.append(str(v.get(fam, "undetermined")))
            fin = m["mean"].notna()
            if fin.any():
                hib = bool(m["higher_is_better"].dropna().iloc[0]) if m["higher_is_better"].notna().any() else True
                idx = m.loc[fin, "mean"].idxmax() if hib else m.loc[fin, "mean"].idxmin()
                tops.append(label[idx])
            else:
                tops.append("")
            marks = m["best"].astype(object).where(m["best"].notna(), "").astype(str)
            best.append(tuple(sorted(label[marks == "best"])))
            tied.append(tuple(sorted(label[marks == "tied"])))
            row[f"verdict_{seed}"], row[f"top_{seed}"] = verdicts[-1], tops[-1]
            row[f"best_{seed}"], row[f"tied_{seed}"] = " ".join(best[-1]), " ".join(tied[-1])
        cells = lambda sets: len(set().union(*map(set, sets)) - set.intersection(*map(set, sets)))  # noqa: E731
        row.update(verdict_flip=len(set(verdicts)) > 1, valid_invalid_flip={"valid", "invalid"} <= set(verdicts),
                   always_valid=set(verdicts) == {"valid"}, top_flip=len(set(tops)) > 1,
                   best_flips=cells(best), tied_flips=cells(tied))
        rows.append(row)
    return pd.DataFrame(rows)


def stability(args) -> None:
    extra = [] if args.n_samples is None else [f"dataset.n_samples={args.n_samples}"]
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_verdicts_"))
    dirs, walls = {}, {}
    try:
        for seed in args.seeds:
            d = base / f"seed_{seed}"
            prov = d / "provenance.json"
            if args.reuse and prov.exists() and json.loads(prov.read_text()).get("status") == "complete":
                walls[seed] = float(json.loads(prov.read_text())["wall_time_s"])  # a kept run of this seed
                print(f"  seed {seed}: reused {d}", flush=True)
                dirs[seed] = d
                continue
            if d.exists():
                shutil.rmtree(d)
            walls[seed] = run_seed(d, seed, args.threads, extra)
            dirs[seed] = d
        t = family_table(dirs)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    t["n_samples"] = args.n_samples if args.n_samples is not None else "default"
    t["seeds"] = " ".join(map(str, args.seeds))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    t.to_csv(out, index=False)
    valid = t[t["always_valid"]]
    print(f"\n{len(t)} judged (benchmark, metric) families, seeds {t['seeds'].iloc[0]}, "
          f"n_samples {t['n_samples'].iloc[0]}, {sum(walls.values()):.0f} s in all")
    print(f"  verdict_flips          {int(t['verdict_flip'].sum())}  (valid at every seed: {len(valid)})")
    print(f"  valid_invalid_flips    {int(t['valid_invalid_flip'].sum())}   (target 0)")
    print(f"  best_flips (cells)     {int(t['best_flips'].sum())}   on always-valid metrics: "
          f"{int(valid['best_flips'].sum())}")
    print(f"  tied_flips (cells)     {int(t['tied_flips'].sum())}")
    print(f"  top_flips              {int(t['top_flip'].sum())}   on always-valid metrics: "
          f"{int(valid['top_flip'].sum())} (target 0)")
    print(f"written: {out}")


# --------------------------------------------------------------------------- simulations
def control_families(path: Path = MAIN_JOB) -> list:
    """(benchmark key, metric, X) per judged family of a run with all four controls; X: samples x controls in
    the order gt, random, inverted, constant, oriented so that higher is better."""
    df = pd.read_parquet(path)
    df = df[(df["metric"] != "skipped") & (df["sample_id"] != "__aggregate__")].copy()
    df["metric_kind"] = metric_kinds(df).to_numpy()
    df = df[df["metric_kind"].map(is_judged) & df["method"].isin(ORDER)]
    out = []
    for fam, g in df.groupby(FAM, sort=False):
        w = g.pivot_table(index="sample_id", columns="method", values="value", aggfunc="first")
        if not set(ORDER) <= set(w.columns):
            continue
        X = w[list(ORDER)].dropna().to_numpy(dtype=float)
        sign = 1.0 if bool(g["higher_is_better"].iloc[0]) else -1.0
        if len(X) >= 4:
            out.append((fam, sign * X))
    return out


def _span(X):
    return float(np.mean(X.max(axis=1) - X.min(axis=1)))


def effects(X: np.ndarray):
    """(gt - random, gt - inverted, constant - random) in units of the control span, of oriented values X."""
    m, span = X.mean(axis=0), _span(X)
    return tuple((m[a] - m[b]) / span if span > 0 else 0.0 for a, b in ((0, 1), (0, 2), (3, 1)))


def truth_of(e) -> str:
    """What the population effects say: 'valid' / 'invalid' when every check clears the floor by 0.02 of the
    span / some check misses it by 0.02; otherwise 'at the floor' (left out of the error rates)."""
    gr, gi, cr = e
    margin = min(gr - S.FLOOR, gi - S.FLOOR, S.FLOOR - cr)
    return "valid" if margin > 0.02 else "invalid" if margin < -0.02 else "at the floor"


class World:
    """Draws n x 4 oriented control values (gt, random, inverted, constant) by a smoothed bootstrap of one
    family's real samples (rows drawn with replacement, plus Gaussian jitter of ``jitter`` x each column's
    SD), optionally changed into a known invalid metric:

    * ``"gt_like_random"``: the gt column becomes random + (gt - random - its mean): gt no better than random
      on average, with the real spread of the difference;
    * ``"constant_rewarded"``: the constant column becomes random + 0.3 x span + (constant - random - its
      mean): a constant map 0.3 of the span above random.

    ``truth``: the population effects (from 20000 draws) and their verdict (:func:`truth_of`).
    """

    def __init__(self, X: np.ndarray, change: str = "as observed", jitter: float = 0.25, seed: int = 0):
        X = X.copy()
        d = X[:, 0] - X[:, 1]
        if change == "gt_like_random":
            X[:, 0] = X[:, 1] + d - d.mean()
        elif change == "constant_rewarded":
            c = X[:, 3] - X[:, 1]
            X[:, 3] = X[:, 1] + 0.3 * _span(X) + c - c.mean()
        elif change != "as observed":
            raise ValueError(change)
        self.X, self.sd = X, jitter * X.std(axis=0)
        self.effects = effects(self.draw(np.random.default_rng(seed), 20000))
        self.truth = truth_of(self.effects)

    def draw(self, rng, n):
        return self.X[rng.integers(0, len(self.X), n)] + rng.normal(0, 1, (n, 4)) * self.sd


def frame_of(families: list, draws: list) -> pd.DataFrame:
    """The tidy rows validity() reads, for draws (n x 4, oriented: higher is better) of each family."""
    parts = []
    for (fam, _), X in zip(families, draws):
        n = X.shape[0]
        parts.append(pd.DataFrame({
            "experiment": fam[0], "dataset": fam[1], "model": fam[2], "metric": fam[3],
            "method": np.repeat(ORDER, n), "params": "", "sample_id": np.tile([f"s{i}" for i in range(n)], 4),
            "value": X.T.ravel(), "higher_is_better": True, "metric_kind": "quality"}))
    return pd.concat(parts, ignore_index=True)


def simulated_runs(families, n_of, runs: int, seed: int) -> pd.DataFrame:
    """``runs`` simulated runs, each holding every family of the main job (n samples per family: ``n_of``):
    a family whose real controls make a valid metric is drawn as observed (half the runs) or changed into one
    of the two invalid worlds (a quarter each); the others as observed.  One row per (run, family): world,
    truth, verdict."""
    worlds = []
    for i, (_, X) in enumerate(families):
        obs = World(X, seed=seed + i)
        worlds.append({"as observed": obs} if obs.truth != "valid" else
                      {w: World(X, w, seed=seed + i) for w in ("as observed", "gt_like_random", "constant_rewarded")})
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(runs):
        pick = [rng.choice(list(w), p=[0.5, 0.25, 0.25] if len(w) == 3 else [1.0]) for w in worlds]
        draws = [worlds[i][w].draw(rng, n_of(fam)) for i, ((fam, _), w) in enumerate(zip(families, pick))]
        v = S.validity(frame_of(families, draws), seed=r)["verdict"].to_numpy()
        for i, ((fam, _), w) in enumerate(zip(families, pick)):
            rows.append(dict(zip(FAM, fam), run=r, world=w, truth=worlds[i][w].truth, verdict=v[i]))
    return pd.DataFrame(rows)


def error_rates(sim: pd.DataFrame) -> pd.DataFrame:
    """Verdict shares by truth (and by world) of :func:`simulated_runs`."""
    parts = []
    for by in (["truth"], ["truth", "world"]):
        g = sim.groupby(by)["verdict"]
        t = g.value_counts(normalize=True).unstack(fill_value=0.0)
        t["n_verdicts"] = g.size()
        t = t.reindex(columns=["valid", "invalid", "undetermined", "n_verdicts"], fill_value=0.0).reset_index()
        if "world" not in t:
            t["world"] = "all"
        parts.append(t)
    return pd.concat(parts, ignore_index=True)[["truth", "world", "valid", "invalid", "undetermined", "n_verdicts"]]


def power_table(ks, n_values, n_sim: int, seed: int) -> pd.DataFrame:
    rows = []
    for k in ks:
        for n in n_values:
            for others in ("worse", "tied", "far"):
                r = S.power_vs_best(n, k, dz=S.MEDIUM_DZ, others=others, n_sim=n_sim, seed=seed)
                rows.append(dict(k=k, n=n, others=others, dz=S.MEDIUM_DZ, **r))
    return pd.DataFrame(rows)


def simulate(args) -> None:
    t0 = time.perf_counter()
    out = Path(args.out).parent
    out.mkdir(parents=True, exist_ok=True)
    families = control_families()
    ks = sorted({10, 12})  # methods on the video / Swin benchmarks and on the ViT benchmark of the main job
    n_grid = [16, 24, 32, 40, 44, 48, 52, 56, 64] if not args.quick else [16, 32, 48]
    pw = power_table(ks, n_grid, 500 if args.quick else 4000, args.seed)
    pw.to_csv(out / "verdict_power.csv", index=False)
    need = {}
    for k in ks:
        worst = pw[pw.k == k].groupby("n")["power"].min()
        ok = worst[worst >= 0.8]
        need[k] = int(ok.index.min()) if len(ok) else None
    print("power of the comparisons with the best (dz = 0.5, alpha 0.05, Holm over k - 1), least favourable:")
    print(pw.pivot_table(index="n", columns=["k", "others"], values="power").round(3).to_string())
    print("n for power >= 0.8:", need)
    ns = sorted({16, 32, 48, 64, 96} if not args.quick else {16, 48})
    default_n = {"synthetic_video": 8, "synthetic_image": 16}
    rates, sims = [], []
    for label, n_of in [("main job n (video 8, images 16)", lambda fam: default_n.get(fam[1], 16))] + [
            (f"n={n}", (lambda n: lambda fam: n)(n)) for n in ns]:
        sim = simulated_runs(families, n_of, args.runs, args.seed)
        r = error_rates(sim)
        r.insert(0, "n", label)
        rates.append(r)
        sims.append(sim.assign(n=label))
        print(f"validity verdicts by truth, {label}:\n{r.round(4).to_string(index=False)}", flush=True)
    pd.concat(rates, ignore_index=True).to_csv(out / "verdict_error_rates.csv", index=False)
    sims = pd.concat(sims, ignore_index=True)
    det = (sims[sims.world == "as observed"].assign(determined=lambda f: f.verdict != "undetermined")
           .groupby(["n"] + FAM + ["truth"], sort=False)
           .agg(determined=("determined", "mean"), valid=("verdict", lambda v: np.mean(v == "valid")),
                invalid=("verdict", lambda v: np.mean(v == "invalid")), runs=("verdict", "size")).reset_index())
    det.to_csv(out / "verdict_determined.csv", index=False)
    print("share of determined verdicts on the real controls redrawn as observed, by benchmark:")
    print(det.pivot_table(index="n", columns="model", values="determined", sort=False).round(3).to_string())
    print(f"written: {out}/verdict_power.csv, verdict_error_rates.csv, verdict_determined.csv "
          f"({time.perf_counter() - t0:.0f} s)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--simulate", action="store_true", help="run the simulations instead of the seeds")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--n-samples", type=int, default=None, help="dataset.n_samples for every dataset (quick check)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--keep", default=None, help="keep the run folders under this folder")
    p.add_argument("--reuse", action="store_true",
                   help="with --keep: read the complete runs already there instead of running them again")
    p.add_argument("--runs", type=int, default=100, help="simulated runs per setting (--simulate)")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulations (--simulate)")
    p.add_argument("--quick", action="store_true", help="fewer settings and simulations (--simulate)")
    p.add_argument("--out", default=str(common.ROOT / "results" / "bench_verdicts.csv"))
    args = p.parse_args(argv)
    simulate(args) if args.simulate else stability(args)


if __name__ == "__main__":
    common.run_main(main)
