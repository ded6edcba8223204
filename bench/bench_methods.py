"""Benchmark of the attribution methods: explain time per sample against the model's own cost.

    python bench/bench_methods.py [--repeats 15] [--big-repeats 2] [--no-big] [--out results/bench_methods.csv]

For every model and method: seconds to explain one sample (minimum over the
repeats, after one warm-up call) and its ratio to a reference cost:

* gradient-free and gradient methods (staa, attention, rollout, chefer,
  stdnorm, gradcam): one plain forward pass of the same model at batch 1
  (``adapter.predict``, no hooks);
* shap / lime: their number of model evaluations x the per-input seconds of a
  batched forward pass at their ``batch_size`` (so the ratio is the overhead of
  everything beside the model: sampling, building inputs, the regression).

Targets: staa, attention <= 1.1; rollout <= 1.2; chefer, stdnorm, gradcam <= 4;
shap, lime <= 1.2.  Models: the small random-init architectures the tests use
(64 px, 4 layers, hidden 96; Swin patch 4, window 4, depths (2, 2)) and, unless
``--no-big``, random-init TimeSformer-base (12 layers, hidden 768, 8 x 224 x 224,
patch 16), ViT-B/16 and Swin-T with the Hugging Face configurations.  SHAP and
LIME use tiny sample budgets on the big models (``--big-samples``).
Timings on a shared CPU are noisy: forward passes are timed interleaved with
the method calls and minima over repeats are reported; torch runs on
``--threads`` threads (default 1, see the option's help).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from xaibench import methods, models  # noqa: E402

TARGETS = {"staa": 1.1, "attention": 1.1, "rollout": 1.2, "chefer": 4.0, "stdnorm": 4.0, "gradcam": 4.0,
           "shap": 1.2, "lime": 1.2}
PERTURB = ("shap", "lime")

SMALL = {
    "hf_timesformer": {},
    "hf_vit": {},
    "hf_swin": {},
    "timm_vit": {},
    "timm_swin": {},
}
BIG = {
    "timesformer_base": ("hf_timesformer", dict(num_labels=400, image_size=224, patch_size=16, num_frames=8,
                                                hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                                intermediate_size=3072, layer_norm_eps=1e-6)),
    "vit_b16": ("hf_vit", dict(num_labels=1000, image_size=224, patch_size=16, hidden_size=768,
                               num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)),
    "swin_t": ("hf_swin", dict(num_labels=1000, image_size=224, patch_size=4, embed_dim=96, depths=(2, 2, 6, 2),
                               num_heads=(3, 6, 12, 24), window_size=7)),
}


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def bench_model(label, adapter, repeats, n_samples, batch_size):
    """Forward passes are timed interleaved with the method calls (one before every call) and the
    minimum over all of them is the reference, so both see the same machine load."""
    torch.manual_seed(0)
    x = torch.rand(*adapter.input_shape)
    target = 0
    xb = x[None].expand(batch_size, *x.shape).contiguous()

    def forward():
        return adapter.predict(x[None], batch_size=1)

    def batched():
        return adapter.predict(xb, batch_size=batch_size)

    first, _ = timed(forward)  # warm-up
    small = first < 0.5
    fwd_times, batched_times, results = [], [], {}
    for name in ["staa", "attention", "rollout", "chefer", "stdnorm", "gradcam", "shap", "lime"]:
        kw = dict(n_samples=n_samples, batch_size=batch_size) if name in PERTURB else {}
        m = methods.create(name, **kw)
        call = lambda: m(adapter, x, target)  # noqa: E731
        if small:
            call()  # warm-up (first-call allocations)
        times, e = [], None
        reps = (2 if small else 1) if name in PERTURB else repeats
        for _ in range(reps):
            if name in PERTURB:
                batched_times.append(timed(batched)[0] / batch_size)
            else:
                fwd_times.append(timed(forward)[0])
            t, e = timed(call)
            times.append(t)
        results[name] = (min(times), e)
    fwd, per_input = min(fwd_times), min(batched_times)
    rows = []
    for name, (t, e) in results.items():
        ref = e.n_forward * per_input if name in PERTURB else fwd
        ratio = t / ref
        row = dict(model=label, arch=adapter.arch, method=name, explain_s=round(t, 4), forward_s=round(fwd, 4),
                   batched_forward_per_input_s=round(per_input, 4), reference_s=round(ref, 4),
                   ratio=round(ratio, 3), target=TARGETS[name], met=ratio <= TARGETS[name],
                   n_forward=e.n_forward, n_backward=e.n_backward,
                   reference="n_forward x batched per-input forward" if name in PERTURB else "forward, batch 1",
                   threads=torch.get_num_threads())
        rows.append(row)
        print(f"{label:18s} {name:10s} {t:8.4f}s  ratio {ratio:6.3f}  (target {TARGETS[name]:.1f}) "
              f"{'ok' if row['met'] else 'MISSED'}", flush=True)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--big-repeats", type=int, default=2)
    p.add_argument("--samples", type=int, default=64, help="SHAP/LIME n_samples on the small models")
    p.add_argument("--big-samples", type=int, default=4, help="SHAP/LIME n_samples on the big models")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--big-batch-size", type=int, default=2)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: on a shared, oversubscribed CPU two OpenMP threads make "
                        "every pass several times slower and the timings erratic)")
    p.add_argument("--no-big", action="store_true")
    p.add_argument("--out", default=str(ROOT / "results" / "bench_methods.csv"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    rows = []
    for name, kw in SMALL.items():
        rows += bench_model(name, models.create(name, **kw), args.repeats, args.samples, args.batch_size)
    if not args.no_big:
        for label, (builder, kw) in BIG.items():
            adapter = models.create(builder, **kw)
            adapter.name = label
            rows += bench_model(label, adapter, args.big_repeats, args.big_samples, args.big_batch_size)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print()
    cols = ["model", "method", "explain_s", "reference_s", "ratio", "target", "met"]
    print(" ".join(f"{c:>12s}" for c in cols))
    for r in rows:
        print(" ".join(f"{str(r[c]):>12s}" for c in cols))
    missed = [f"{r['model']}/{r['method']}" for r in rows if not r["met"]]
    print(f"\n{len(rows) - len(missed)}/{len(rows)} targets met" + (f"; missed: {', '.join(missed)}" if missed else ""))
    print(f"written {out}")


if __name__ == "__main__":
    main()
