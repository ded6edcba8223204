"""Benchmark of the evaluation metrics: batching gain over Quantus and per-metric overhead.

    python bench/bench_metrics.py [--samples 8] [--repeats 3] [--out results/bench_metrics.csv]

1. ``faithfulness_correlation`` against Quantus 0.6 ``FaithfulnessCorrelation``
   on the same model, inputs, attributions and random subsets (Quantus's
   ``np.random.choice`` is replaced by the channel-expanded subsets ours uses;
   pixel features, zero baseline, 100 runs, |S| = 10 % of the pixels, at most
   (H*W - 1) / 3 pixels, Quantus's limit).  Ours
   sends each sample's 100 perturbations through the model in batches of
   ``batch_size``; Quantus calls the model once per run (on all samples of its
   batch).  Both for one sample at a time (Quantus's batch = 1) and for all
   samples in one Quantus call.  Target: >= 5x faster, equal results.  The
   model's float32 logits depend slightly on how inputs are batched, which a
   correlation of small logit drops can amplify to ~1e-5; ``max_abs_diff``
   compares with our batched scores, ``max_abs_diff_same_batching`` with ours
   computed with Quantus's batching (1 input per call).  Video is given to
   Quantus as (B, T*C, H, W).
2. For every metric: evaluation seconds per sample / (its forward passes x the
   per-input seconds of a batched forward pass of the same batch size, timed on
   as many inputs as the metric forwards) = ``ratio``.  Target <= 1.2.  A metric whose passes come in calls smaller than
   the batch size (e.g. ``staa_faithfulness``: one input) pays the model's own
   small-batch inefficiency in ``ratio``; ``ratio_same_calls`` divides instead
   by the time of the *same* model calls (same numbers of inputs) on clean
   inputs; ``own_work_s`` is the metric's time per sample with the model
   replaced by a stub that returns zeros (ranking, composing the perturbed
   inputs, correlations: everything but the model), and ``ratio_own`` =
   (own work + forward passes x per-input seconds) / (forward passes x
   per-input seconds), the load-independent version of ``ratio``.

Models: the shipped ``vit_synth`` / ``timesformer_synth`` when their weights are
present, else the same architectures at random initialisation (the ``model``
column says which).  Timings are the minimum over ``--repeats`` after a warm-up
call; the metric and its reference forward pass are timed alternately so that
both see the same load on a shared machine.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from xaibench import datasets, metrics, models  # noqa: E402
from xaibench.errors import UserError  # noqa: E402
from xaibench.methods.base import Explanation  # noqa: E402
from xaibench.metrics.base import EvalContext  # noqa: E402

SYNTH = {"image": ("vit_synth", "hf_vit", "synthetic_image"), "video": ("timesformer_synth", "hf_timesformer",
                                                                          "synthetic_video")}
ARCH = {"hf_vit": dict(image_size=64, patch_size=8, hidden_size=96, num_hidden_layers=4, num_attention_heads=4,
                       intermediate_size=192),
        "hf_timesformer": dict(image_size=64, patch_size=8, num_frames=8, hidden_size=96, num_hidden_layers=4,
                               num_attention_heads=4, intermediate_size=192)}


def load(kind):
    shipped, builder, ds = SYNTH[kind]
    try:
        return models.create(shipped), shipped
    except UserError:
        pass
    return models.create(builder, **ARCH[builder]), f"{builder} (random init; {shipped} weights absent)"


class QuantusView(nn.Module):
    """The adapter as Quantus sees it: (B, T*C, H, W) pixels -> logits."""

    def __init__(self, adapter):
        super().__init__()
        self.adapter, self.inner = adapter, adapter.model

    def forward(self, x):
        B, TC, H, W = x.shape
        return self.adapter._run(self.adapter.normalise(x.view(B, TC // 3, 3, H, W)))


def samples(kind, n, adapter):
    ds = datasets.create(SYNTH[kind][2], split="test", n_samples=n)
    out = []
    rng = np.random.default_rng(0)
    for s in ds:
        logits = adapter.predict(s.x[None])[0]
        vol = s.mask.float() + 0.1 * torch.from_numpy(rng.random(tuple(s.mask.shape), dtype=np.float32))
        out.append((s, logits, vol))
    return out


def ctx_of(adapter, s, logits, vol, seed, batch_size):
    T = vol.shape[0]
    return EvalContext(adapter=adapter, x=s.x, target=int(logits.argmax()),
                       explanation=Explanation(vol, torch.ones(T), vol), logits=logits,
                       rng=np.random.default_rng(seed), batch_size=batch_size, mask=s.mask, frames=s.frames)


def timed(fn, repeats):
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def bench_quantus(kind, n, repeats, batch_size, rows):
    import quantus

    adapter, mname = load(kind)
    data = samples(kind, n, adapter)
    T, C, H, W = data[0][0].x.shape
    npix = T * H * W
    # |S| = 10 % of the pixels, capped because Quantus requires C * |S| < H * W (it compares with one frame)
    k = min(round(0.1 * npix), (H * W - 1) // C)
    metric = metrics.create("faithfulness_correlation", nr_runs=100, subset_size=k, features="pixel")
    subsets = [metric.draw_subsets(np.random.default_rng(i), npix) for i in range(n)]

    def expand(sub):  # pixel (t, p) -> Quantus elements of (T*C, H*W): t*C*HW + c*HW + p
        t, p = sub // (H * W), sub % (H * W)
        return np.concatenate([(t * C + c) * H * W + p for c in range(C)])

    def ours():
        return [metric.score(ctx_of(adapter, s, lg, v, 0, batch_size), subsets[i])["faithfulness_correlation"]
                for i, (s, lg, v) in enumerate(data)]

    qmodel = QuantusView(adapter).eval()
    xb = np.stack([s.x.numpy().reshape(T * C, H, W) for s, _, _ in data])
    ab = np.stack([v.numpy().repeat(C, 0) for _, _, v in data])  # (B, T*C, H, W): frame map per channel
    yb = np.array([int(lg.argmax()) for _, lg, _ in data])

    def quantus_run(group):
        """Quantus over samples in groups of ``group`` (it draws subsets run-major, sample-minor)."""
        scores = []
        orig = np.random.choice
        for g in range(0, n, group):
            idx = list(range(g, min(n, g + group)))
            seq = iter([expand(subsets[i][r]) for r in range(100) for i in idx])
            np.random.choice = lambda *a, **kw: next(seq)
            try:
                q = quantus.FaithfulnessCorrelation(nr_runs=100, subset_size=k * C, perturb_baseline=0.0,
                                                    disable_warnings=True, return_aggregate=False)
                scores += q(model=qmodel, x_batch=xb[idx], y_batch=yb[idx], a_batch=ab[idx], device="cpu",
                            batch_size=len(idx))
            finally:
                np.random.choice = orig
        return scores

    ours()  # warm-up
    quantus_run(n)
    t_ours, s_ours = timed(ours, repeats)
    # the model's float32 results depend slightly on the batch composition: for the equality check, our
    # scores with the same per-call batching as Quantus's (batch of 1 input: per-run calls on one sample)
    s_ours_1 = [metric.score(ctx_of(adapter, s, lg, v, 0, 1), subsets[i])["faithfulness_correlation"]
                for i, (s, lg, v) in enumerate(data)]
    for group, label in [(1, "quantus_batch_1"), (n, f"quantus_batch_{n}")]:
        t_q, s_q = timed(lambda: quantus_run(group), repeats)
        t_ours = min(t_ours, timed(ours, 1)[0])  # re-measured next to Quantus (same machine load)
        diff = float(np.max(np.abs(np.array(s_ours) - np.array(s_q))))
        diff_same = float(np.max(np.abs(np.array(s_ours_1) - np.array(s_q)))) if group == 1 else diff
        rows.append(dict(bench="faithfulness_vs_quantus", kind=kind, model=mname, metric="faithfulness_correlation",
                         variant=label, samples=n, ours_s=t_ours, other_s=t_q, speedup=t_q / t_ours,
                         max_abs_diff=diff, max_abs_diff_same_batching=diff_same,
                         target=">= 5x, diff (same batching) <= 1e-6",
                         ok=bool(t_q / t_ours >= 5 and diff_same <= 1e-6)))


CONFIGS = {
    "faithfulness_correlation": {}, "monotonicity_correlation": {}, "monotonicity": {}, "deletion_auc": {},
    "insertion_auc": {}, "staa_faithfulness": {}, "staa_monotonicity": {}, "segmentation": {}, "localisation": {},
}


def bench_overhead(kind, n, repeats, batch_size, rows):
    adapter, mname = load(kind)
    data = samples(kind, n, adapter)
    stack = torch.stack([s.x for s, _, _ in data]).repeat(max(1, 64 // n), 1, 1, 1, 1)
    adapter.predict(stack[:batch_size], batch_size=batch_size)  # warm-up
    for name, kw in CONFIGS.items():
        m = metrics.create(name, **kw)

        def run():
            nf = 0
            for i, (s, lg, v) in enumerate(data):
                ctx = ctx_of(adapter, s, lg, v, i, batch_size)
                m.compute(ctx)
                nf += ctx.counters.get("forward", 0)
            return nf

        # record the model calls the metric makes (number of inputs of each), to replay them on clean inputs
        calls, orig = [], adapter.predict
        adapter.predict = lambda xs, batch_size=32: calls.append((xs.shape[0], batch_size)) or orig(xs, batch_size)
        try:
            run()  # also the warm-up (first-call allocations)
        finally:
            adapter.predict = orig
        n_total = sum(c for c, _ in calls)
        big = stack.repeat(max(1, -(-max(n_total, 1) // stack.shape[0])), 1, 1, 1, 1)
        ref = big[:max(n_total, batch_size)]  # the reference: as many inputs as the metric forwards, in full batches

        def replay():
            for c, bs in calls:
                adapter.predict(big[:c], batch_size=bs)

        # the metric's own work: the same computation with the model replaced by a stub returning zeros
        n_cls = data[0][1].shape[0]
        adapter.predict = lambda xs, batch_size=32: torch.zeros(xs.shape[0], n_cls)
        try:
            t_own = timed(run, repeats)[0]
        finally:
            adapter.predict = orig
        # interleave metric and references so that all see the same machine load
        t_metric = t_fwd = t_replay = float("inf")
        for _ in range(repeats):
            t, nf = timed(run, 1)
            t_metric = min(t_metric, t)
            t_fwd = min(t_fwd, timed(lambda: adapter.predict(ref, batch_size=batch_size), 1)[0])
            if calls:
                t_replay = min(t_replay, timed(replay, 1)[0])
        per_input = t_fwd / ref.shape[0]
        per_sample = t_metric / n
        nf_ps = nf / n
        ratio = per_sample / (nf_ps * per_input) if nf_ps else float("nan")
        ratio_same = t_metric / t_replay if calls else float("nan")
        own_ps = t_own / n
        ratio_own = (own_ps + nf_ps * per_input) / (nf_ps * per_input) if nf_ps else float("nan")
        rows.append(dict(bench="overhead", kind=kind, model=mname, metric=name, variant=f"batch_size={batch_size}",
                         samples=n, ours_s=per_sample, other_s=nf_ps * per_input, speedup=float("nan"),
                         max_abs_diff=float("nan"), n_forward=nf_ps, forward_s_per_input=per_input, ratio=ratio,
                         ratio_same_calls=ratio_same, own_work_s=own_ps, ratio_own=ratio_own, target="<= 1.2",
                         ok=bool(ratio <= 1.2) if nf_ps else None))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--kinds", default="image,video")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (the harness's default is 2)")
    ap.add_argument("--out", default=str(ROOT / "results" / "bench_metrics.csv"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for kind in args.kinds.split(","):
        bench_quantus(kind, args.samples, args.repeats, args.batch_size, rows)
        bench_overhead(kind, args.samples, args.repeats, args.batch_size, rows)
    cols = ["bench", "kind", "model", "metric", "variant", "samples", "ours_s", "other_s", "speedup", "max_abs_diff",
            "max_abs_diff_same_batching",
            "n_forward", "forward_s_per_input", "ratio", "ratio_same_calls", "own_work_s", "ratio_own", "target", "ok"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as f:
        w = csv.DictWriter(f, cols)
        w.writeheader()
        for r in rows:
            w.writerow({c: (f"{r[c]:.6g}" if isinstance(r.get(c), float) else r.get(c, "")) for c in cols})
    print(f"{'bench':24s} {'kind':5s} {'metric':26s} {'variant':16s} {'ours_s':>9s} {'other_s':>9s} "
          f"{'speedup':>8s} {'maxdiff':>9s} {'diff_1':>9s} {'n_fwd':>6s} {'ratio':>6s} {'r_same':>6s} {'own_ms':>7s} "
          f"{'r_own':>6s} ok")
    for r in rows:
        print(f"{r['bench']:24s} {r['kind']:5s} {r['metric']:26s} {r['variant']:16s} {r['ours_s']:9.4f} "
              f"{r['other_s']:9.4f} {r['speedup']:8.2f} {r['max_abs_diff']:9.2e} "
              f"{r.get('max_abs_diff_same_batching', float('nan')):9.2e} {r.get('n_forward', float('nan')):6.0f} "
              f"{r.get('ratio', float('nan')):6.3f} {r.get('ratio_same_calls', float('nan')):6.3f} "
              f"{1000 * r.get('own_work_s', float('nan')):7.3f} {r.get('ratio_own', float('nan')):6.3f} {r['ok']}")
    print(f"models: {sorted({r['model'] for r in rows})}; torch threads: {args.threads}; "
          f"times: min over {args.repeats} repeats (seconds; ours_s per sample for 'overhead', per {args.samples} "
          f"samples for 'faithfulness_vs_quantus')")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
