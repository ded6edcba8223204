"""The harness's own cost on a CPU: where a run's seconds go when the model's passes are taken out.

Runs an experiment in-process (default: the main job, ``conf/experiment/default.yaml``, at ``--n`` samples per
benchmark) with every model's forward and backward passes timed (the adapters' ``_run`` and every autograd
backward), and reads the runner's per-stage seconds (``provenance.json``: load, predict, explain, evaluate,
record).  Then

* **model seconds**: the forward and backward passes themselves;
* **method / metric arithmetic**: the explain and evaluate stages minus the model seconds inside them (rollout
  products, AP, curves ...: the work of the components, not of the harness);
* **harness overhead**: everything else -- loading, the batched clean prediction's bookkeeping, recording rows,
  the journal and maps, the tables, start-up of each benchmark -- i.e. wall time minus model seconds minus the
  components' arithmetic.

It prints the overhead as a share of the run's wall time (target: at most 10 %) and per (sample, arm, metric),
and appends the figures to ``results/bench_overhead.csv``.  Measured on an idle machine only.

    python bench/bench_overhead.py [--n 8] [--experiment default] [--out results/bench_overhead.csv]
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import torch
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def timed_model_passes(acc: dict):
    """Time every adapter ``_run`` (forward) and every autograd backward into ``acc``."""
    from xaibench.models.base import ModelAdapter

    patched = []

    def wrap(cls):
        if "_run" in cls.__dict__:
            real = cls.__dict__["_run"]

            def _run(self, x, _real=real):
                t0 = time.perf_counter()
                try:
                    return _real(self, x)
                finally:
                    acc["forward"] += time.perf_counter() - t0

            patched.append((cls, real))
            cls._run = _run
        for sub in cls.__subclasses__():
            wrap(sub)

    wrap(ModelAdapter)
    real_backward = torch.Tensor.backward

    def backward(self, *a, **k):
        t0 = time.perf_counter()
        try:
            return real_backward(self, *a, **k)
        finally:
            acc["backward"] += time.perf_counter() - t0

    torch.Tensor.backward = backward
    try:
        yield acc
    finally:
        torch.Tensor.backward = real_backward
        for cls, real in patched:
            cls._run = real


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=8, help="samples per benchmark")
    ap.add_argument("--experiment", default="default")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=str(ROOT / "results" / "bench_overhead.csv"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from xaibench import datasets, methods, metrics, models  # noqa: F401  (registries)
    from xaibench.config import conf_dir
    from xaibench.run.options import RunConfig
    from xaibench.run.runner import Runner

    cfg = OmegaConf.create(RunConfig().values())
    for g in ("model", "method", "metric"):
        cfg[g] = {}
    cfg.dataset = {"n_samples": args.n}
    cfg.experiment = OmegaConf.load(conf_dir() / "experiment" / f"{args.experiment}.yaml").experiment
    cfg.print_summary, cfg.report, cfg.gallery = False, False, 0
    acc = {"forward": 0.0, "backward": 0.0}
    with tempfile.TemporaryDirectory() as tmp, timed_model_passes(acc):
        t0 = time.perf_counter()
        runner = Runner(cfg, Path(tmp) / "run")
        runner.run()
        wall = time.perf_counter() - t0
        prov = json.loads((Path(tmp) / "run" / "provenance.json").read_text())
        import pandas as pd

        df = pd.read_csv(Path(tmp) / "run" / "results.csv")
    stages = prov["stage_seconds"]
    model = acc["forward"] + acc["backward"]
    # the model seconds inside predict are the clean pass; the rest of the model time is in explain / evaluate
    arithmetic = max(0.0, stages["explain"] + stages["evaluate"] + stages["predict"] - model)
    overhead = max(0.0, wall - model - arithmetic)
    per = df[(df.sample_id != "__aggregate__") & (df.metric != "skipped")]
    units = len(per[["dataset", "model", "method", "sample_id"]].drop_duplicates()) * \
        max(1, per[per.metric_kind != "cost"]["metric"].nunique())
    row = dict(date=datetime.now(timezone.utc).isoformat(timespec="seconds"), experiment=args.experiment, n=args.n,
               wall_s=round(wall, 2), model_s=round(model, 2), arithmetic_s=round(arithmetic, 2),
               overhead_s=round(overhead, 2), overhead_share=round(overhead / wall, 4),
               overhead_ms_per_unit=round(1000 * overhead / max(1, units), 3), units=units,
               **{f"stage_{k}_s": round(v, 2) for k, v in stages.items()})
    print(f"{args.experiment}, n={args.n}: wall {wall:.1f} s = model passes {model:.1f} s "
          f"({model / wall:.0%}) + method/metric arithmetic {arithmetic:.1f} s ({arithmetic / wall:.0%}) "
          f"+ harness {overhead:.1f} s ({overhead / wall:.1%}; target <= 10 %: "
          f"{'met' if overhead / wall <= 0.10 else 'missed'})")
    print(f"harness: {1000 * overhead / max(1, units):.2f} ms per (sample, arm, metric) over {units} units")
    print("stages (s): " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()))
    out = Path(args.out)
    new = not out.exists()
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


if __name__ == "__main__":
    main()
