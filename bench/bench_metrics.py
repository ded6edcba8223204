"""Benchmark of the evaluation metrics: batching gain over Quantus and per-metric overhead.

    python bench/bench_metrics.py [--device cpu|cuda] [--precision fp32|bf16|fp16] [--samples 8] [--repeats 3]
                                  [--out results/bench_metrics.csv]

1. ``faithfulness_correlation`` against Quantus 0.6 ``FaithfulnessCorrelation``
   on the same model, inputs, attributions and random subsets (Quantus's
   ``np.random.choice`` is replaced by the channel-expanded subsets ours uses;
   single-pixel features (``features=grid, cell=1``), zero baseline, 100 runs,
   |S| = 10 % of the pixels, at most (H*W - 1) / 3 pixels, Quantus's limit).
   Ours sends each sample's 100 perturbations through the model in batches of
   ``batch_size``; Quantus calls the model once per run (on all samples of its
   batch).  Both for one sample at a time (Quantus's batch = 1) and for all
   samples in one Quantus call.  Target: >= 5x faster, equal results.  The
   model's float32 logits depend slightly on how inputs are batched, which a
   correlation of small logit drops can amplify to ~1e-5; ``max_abs_diff``
   compares with our batched scores, ``max_abs_diff_same_batching`` with ours
   computed with Quantus's batching (1 input per call).  Video is given to
   Quantus as (B, T*C, H, W); Quantus's model runs the adapter's own forward
   (same device, same precision under autocast).
2. For every metric: evaluation seconds per sample / (its forward passes x the
   per-input seconds of a batched forward pass of the same batch size, timed on
   as many inputs as the metric forwards) = ``ratio``, i.e. the metric's cost
   as a multiple of the model throughput it needs (1 = no overhead).  Target
   <= 1.2.  A metric whose passes come in calls smaller than the batch size
   (e.g. ``staa_faithfulness``: one input) pays the model's own small-batch
   inefficiency in ``ratio``; ``ratio_same_calls`` divides instead by the time
   of the *same* model calls (same numbers of inputs) on clean inputs;
   ``own_work_s`` is the metric's time per sample with the model replaced by a
   stub that returns zeros (ranking, composing the perturbed inputs,
   correlations: everything but the model), and ``ratio_own`` = (own work +
   forward passes x per-input seconds) / (forward passes x per-input seconds),
   the load-independent version of ``ratio``.  Forward passes are counted by
   the adapter (``adapter.counting()``).

The adapter's in-run output cache is off (``adapter.cache = None``): the
benchmark evaluates the same masks repeatedly, and the cache would answer the
repeats.  (What the cache saves in a real run is measured by
``bench/bench_main_job.py``.)  Models: the shipped ``vit_synth`` /
``timesformer_synth`` when their weights are present, else the same
architectures at random initialisation (the ``model`` column says which), on
``--device`` at ``--precision``.  Timings are the minimum over ``--repeats``
after a warm-up call; the metric and its reference forward pass are timed
alternately so that both see the same load on a shared machine; GPU timings
synchronise the device.
"""

from __future__ import annotations

import argparse
import dataclasses
import math

import numpy as np
import torch
from torch import nn

import common
from common import timed

from xaibench import datasets, metrics, models  # noqa: E402
from xaibench.errors import UserError  # noqa: E402
from xaibench.explanation import Explanation  # noqa: E402
from xaibench.metrics.base import EvalItem, evaluate_items  # noqa: E402

SYNTH = {"image": ("vit_synth", "hf_vit", "synthetic_image"),
         "video": ("timesformer_synth", "hf_timesformer", "synthetic_video")}
ARCH = {"hf_vit": dict(image_size=64, patch_size=8, hidden_size=96, num_hidden_layers=4, num_attention_heads=4,
                       intermediate_size=192),
        "hf_timesformer": dict(image_size=64, patch_size=8, num_frames=8, hidden_size=96, num_hidden_layers=4,
                               num_attention_heads=4, intermediate_size=192)}
#: every metric with a per-sample cost (mprt is left out: its cost is re-explaining, not evaluating)
CONFIGS = {
    "faithfulness_correlation": {}, "monotonicity_correlation": {}, "monotonicity": {}, "deletion_auc": {},
    "insertion_auc": {}, "srg": {}, "staa_faithfulness": {}, "staa_monotonicity": {}, "segmentation": {},
    "localisation": {}, "map_properties": {},
}
COLUMNS = ["bench", "kind", "model", "device", "precision", "metric", "variant", "samples", "ours_s", "other_s",
           "speedup", "max_abs_diff", "max_abs_diff_same_batching", "n_forward", "forward_s_per_input", "ratio",
           "ratio_same_calls", "own_work_s", "ratio_own", "target", "ok"]


def load(kind, device, precision):
    """The shipped model of ``kind`` (or its architecture at random init), on ``device``, cache off."""
    shipped, builder, _ = SYNTH[kind]
    try:
        adapter, name = models.create(shipped), shipped
    except UserError:
        adapter = models.create(builder, **ARCH[builder])
        name = f"{builder} (random init; {shipped} weights absent)"
    adapter.to(device, precision)
    adapter.cache = None
    return adapter, name


class QuantusView(nn.Module):
    """The adapter as Quantus sees it: (B, T*C, H, W) pixels -> float32 logits (the adapter's precision)."""

    def __init__(self, adapter):
        super().__init__()
        self.adapter, self.inner = adapter, adapter.model

    def forward(self, x):
        B, TC, H, W = x.shape
        with self.adapter._autocast():
            return self.adapter._run(self.adapter.normalise(x.view(B, TC // 3, 3, H, W))).float()


def samples(dataset_name, n, adapter, **dataset_kw):
    """(sample, logits, attribution volume) for ``n`` test samples: the volume is the ground-truth mask plus
    seeded noise (a realistic map with no ties)."""
    ds = datasets.create(dataset_name, split="test", n_samples=n, **dataset_kw)
    out = []
    rng = np.random.default_rng(0)
    for s in ds:
        logits = adapter.predict(s.x[None])[0]
        vol = s.mask.float() + 0.1 * torch.from_numpy(rng.random(tuple(s.mask.shape), dtype=np.float32))
        out.append((s, logits, vol))
    return out


def item_of(adapter, s, logits, vol, seed):
    """Sample ``s`` explained by ``vol`` as one :class:`EvalItem` on the adapter's device (target: the prediction)."""
    T = vol.shape[0]
    dev = adapter.device
    sample = dataclasses.replace(s, x=s.x.to(dev), mask=None if s.mask is None else s.mask.to(dev),
                                 frames=None if s.frames is None else s.frames.to(dev))
    return EvalItem(sample=sample, method="bench", target=int(logits.argmax()),
                    explanation=Explanation(vol.to(dev), torch.ones(T, device=dev), vol.to(dev)), logits=logits,
                    rng=np.random.default_rng(seed), shared_seed=(0, seed))


def best_of(fn, repeats, device):
    best, out = float("inf"), None
    for _ in range(repeats):
        t, out = timed(fn, device)
        best = min(best, t)
    return best, out


def bench_quantus(kind, adapter, mname, data, repeats, batch_size, rows):
    import quantus

    dev = adapter.device
    n = len(data)
    T, C, H, W = data[0][0].x.shape
    npix = T * H * W
    # |S| = 10 % of the pixels, capped because Quantus requires C * |S| < H * W (it compares with one frame)
    k = min(round(0.1 * npix), (H * W - 1) // C)
    metric = metrics.create("faithfulness_correlation", nr_runs=100, subset_size=k, features="grid", cell=1)
    subsets = [metric.draw_subsets(np.random.default_rng(i), npix) for i in range(n)]

    def expand(sub):  # pixel (t, p) -> Quantus elements of (T*C, H*W): t*C*HW + c*HW + p
        t, p = sub // (H * W), sub % (H * W)
        return np.concatenate([(t * C + c) * H * W + p for c in range(C)])

    def ours(bs=batch_size):
        return [metric.score(adapter, item_of(adapter, s, lg, v, 0), subsets[i], batch_size=bs)
                ["faithfulness_correlation"]
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
                scores += q(model=qmodel, x_batch=xb[idx], y_batch=yb[idx], a_batch=ab[idx], device=str(dev),
                            batch_size=len(idx))
            finally:
                np.random.choice = orig
        return scores

    ours()  # warm-up
    quantus_run(n)
    t_ours, s_ours = best_of(ours, repeats, dev)
    # the model's float32 results depend slightly on the batch composition: for the equality check, our
    # scores with the same per-call batching as Quantus's (batch of 1 input: per-run calls on one sample)
    s_ours_1 = ours(1)
    for group, label in [(1, "quantus_batch_1"), (n, f"quantus_batch_{n}")]:
        t_q, s_q = best_of(lambda: quantus_run(group), repeats, dev)
        t_ours = min(t_ours, timed(ours, dev)[0])  # re-measured next to Quantus (same machine load)
        diff = float(np.max(np.abs(np.array(s_ours) - np.array(s_q))))
        diff_same = float(np.max(np.abs(np.array(s_ours_1) - np.array(s_q)))) if group == 1 else diff
        rows.append(dict(bench="faithfulness_vs_quantus", kind=kind, model=mname, device=str(dev),
                         precision=adapter.precision, metric="faithfulness_correlation", variant=label, samples=n,
                         ours_s=t_ours, other_s=t_q, speedup=t_q / t_ours, max_abs_diff=diff,
                         max_abs_diff_same_batching=diff_same, target=">= 5x, diff (same batching) <= 1e-6",
                         ok=bool(t_q / t_ours >= 5 and diff_same <= 1e-6)))


def bench_overhead(kind, adapter, mname, data, repeats, batch_size, rows, configs=CONFIGS):
    """One ``overhead`` row per metric of ``configs`` (module docstring, part 2)."""
    dev = adapter.device
    n = len(data)
    pool = torch.stack([s.x for s, _, _ in data])
    pool = pool.repeat(math.ceil(batch_size / n), 1, 1, 1, 1)[:batch_size].to(dev)  # one full batch of inputs
    adapter.predict(pool, batch_size=batch_size)  # warm-up
    n_cls = data[0][1].shape[0]
    for name, kw in configs.items():
        m = metrics.create(name, **kw)

        def run():  # one sample per evaluate call: the per-sample cost, as before the batched interface
            with adapter.counting() as cnt:
                for i, (s, lg, v) in enumerate(data):
                    evaluate_items(m, adapter, [item_of(adapter, s, lg, v, i)], batch_size=batch_size)
            return cnt["forward"]

        # record the model calls the metric makes (number of inputs of each), to replay them on clean inputs
        calls, orig = [], adapter.predict
        adapter.predict = lambda xs, batch_size=32: calls.append((xs.shape[0], batch_size)) or orig(xs, batch_size)
        try:
            run()  # also the warm-up (first-call allocations)
        finally:
            del adapter.predict
        n_total = sum(c for c, _ in calls)
        n_ref_batches = max(1, math.ceil(n_total / batch_size))

        def reference():  # as many inputs as the metric forwards, in full batches
            for _ in range(n_ref_batches):
                adapter.predict(pool, batch_size=batch_size)

        def replay():
            for c, bs in calls:
                adapter.predict(pool[:c] if c <= pool.shape[0] else pool[torch.arange(c) % pool.shape[0]],
                                batch_size=bs)

        # the metric's own work: the same computation with the model replaced by a stub returning zeros
        adapter.predict = lambda xs, batch_size=32: torch.zeros(xs.shape[0], n_cls, device=dev)
        try:
            t_own = best_of(run, repeats, dev)[0]
        finally:
            del adapter.predict
        # interleave metric and references so that all see the same machine load
        t_metric = t_fwd = t_replay = float("inf")
        nf = 0
        for _ in range(repeats):
            t, nf = timed(run, dev)
            t_metric = min(t_metric, t)
            t_fwd = min(t_fwd, timed(reference, dev)[0])
            if calls:
                t_replay = min(t_replay, timed(replay, dev)[0])
        per_input = t_fwd / (n_ref_batches * batch_size)
        per_sample = t_metric / n
        nf_ps = nf / n
        ratio = per_sample / (nf_ps * per_input) if nf_ps else float("nan")
        ratio_same = t_metric / t_replay if calls else float("nan")
        own_ps = t_own / n
        ratio_own = (own_ps + nf_ps * per_input) / (nf_ps * per_input) if nf_ps else float("nan")
        rows.append(dict(bench="overhead", kind=kind, model=mname, device=str(dev), precision=adapter.precision,
                         metric=name, variant=f"batch_size={batch_size}", samples=n, ours_s=per_sample,
                         other_s=nf_ps * per_input, n_forward=nf_ps, forward_s_per_input=per_input, ratio=ratio,
                         ratio_same_calls=ratio_same, own_work_s=own_ps, ratio_own=ratio_own, target="<= 1.2",
                         ok=bool(ratio <= 1.2) if nf_ps else None))
        print(f"overhead {kind:5s} {name:26s} {nf_ps:6.0f} passes/sample  ratio {ratio:6.3f}  own work "
              f"{1000 * own_ps:8.3f} ms/sample", flush=True)


def print_rows(rows):
    print()
    common.print_table(rows, ["bench", "kind", "metric", "variant", "ours_s", "other_s", "speedup", "max_abs_diff",
                              "max_abs_diff_same_batching", "n_forward", "ratio", "ratio_same_calls", "own_work_s",
                              "ratio_own", "ok"])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--kinds", default="image,video")
    ap.add_argument("--no-quantus", action="store_true", help="skip the comparison with Quantus")
    common.add_device_options(ap, threads=2)
    ap.add_argument("--out", default=str(common.ROOT / "results" / "bench_metrics.csv"))
    args = ap.parse_args(argv)
    dev = common.resolve_device(args.device)
    prec = common.check_precision(args.precision)
    torch.set_num_threads(args.threads)
    rows = []
    for kind in args.kinds.split(","):
        if kind not in SYNTH:
            raise UserError(f"--kinds: {kind!r}; valid: {', '.join(SYNTH)}")
        adapter, mname = load(kind, dev, prec)
        data = samples(SYNTH[kind][2], args.samples, adapter)
        if not args.no_quantus:
            bench_quantus(kind, adapter, mname, data, args.repeats, args.batch_size, rows)
        bench_overhead(kind, adapter, mname, data, args.repeats, args.batch_size, rows)
    out = common.write_csv(rows, args.out, COLUMNS)
    print_rows(rows)
    print(f"models: {sorted({r['model'] for r in rows})}; device {dev}, precision {prec}, torch threads "
          f"{args.threads}; times: min over {args.repeats} repeats (seconds; ours_s per sample for 'overhead', per "
          f"{args.samples} samples for 'faithfulness_vs_quantus')")
    print(f"written {out}")
    return rows


if __name__ == "__main__":
    common.run_main(main)
