"""Benchmark of the segmentation metric (Chefer et al.'s protocol: pixel accuracy, mIoU, two-channel mAP).

    python bench/bench_segmentation.py [--maps 32] [--size 224] [--repeats 7] [--threads 1] [--device cpu]
                                       [--out results/bench_segmentation.csv]

Seconds per 224 x 224 map of ``metric.evaluate`` on one batch of ``--maps``
(sample, method) items (smooth maps: a 14 x 14 token map upsampled bilinearly,
the shape of a ViT-B/16 explanation; a random 30 % mask), against

* the target: 1 ms per map on a CPU (issue 17); ``ratio`` = ours / target
  (<= 1 meets it);
* version 1 of the metric (numpy + ``sklearn.metrics.average_precision_score``
  per item), timed alternately on the same maps: ``speedup``;
* the values: ``max_abs_diff`` of every output between the two (must be <= 1e-6).

Timings are the minimum over ``--repeats``, after one warm-up call; GPU timings synchronise the device.  On a
CPU the figure is the process's CPU time (``time.process_time``, one thread): on a shared, oversubscribed
machine the wall clock also counts the time other processes hold the core; ``wall_s_per_map`` is printed
beside it (the two agree on an idle machine).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

import common  # noqa: F401  (puts the checkout on the import path)

from xaibench import metrics  # noqa: E402
from xaibench.datasets.base import Sample  # noqa: E402
from xaibench.explanation import Explanation, upsample  # noqa: E402
from xaibench.metrics.base import EvalItem, evaluate_items  # noqa: E402

TARGET_S = 1e-3
COLUMNS = ["device", "threads", "maps", "size", "ours_s_per_map", "wall_s_per_map", "v1_s_per_map", "speedup",
           "target_s", "ratio", "max_abs_diff", "ok"]


def version_one(vol: np.ndarray, mask: np.ndarray) -> dict:
    """The numpy / scikit-learn implementation the torch one replaced (per item)."""
    from sklearn.metrics import average_precision_score

    v = vol.astype(np.float64)
    lo, hi = v.min(), v.max()
    norm = (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)
    pred = norm > norm.mean()
    n = mask.size
    i_fg, i_bg = int((pred & mask).sum()), int((~pred & ~mask).sum())
    u_fg = int(pred.sum()) + int(mask.sum()) - i_fg
    u_bg = (n - int(pred.sum())) + (n - int(mask.sum())) - i_bg
    eps = np.spacing(1)
    m = mask.reshape(-1)
    s2 = np.concatenate([1.0 - norm.reshape(-1), norm.reshape(-1)]) if hi > lo else np.zeros(2 * n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ap = float(np.nan_to_num(average_precision_score(np.concatenate([~m, m]), s2)))
    return {"pixel_accuracy": (i_fg + i_bg) / (eps + n), "miou": 0.5 * (i_bg / (eps + u_bg) + i_fg / (eps + u_fg)),
            "map": ap}


def make_items(n: int, size: int, device: torch.device):
    g = torch.Generator().manual_seed(0)
    items = []
    for i in range(n):
        vol = upsample(torch.rand(1, 14, 14, generator=g), (size, size)).to(device)
        mask = (torch.rand(1, size, size, generator=g) < 0.3).to(device)
        items.append(EvalItem(sample=Sample(f"s{i}", torch.zeros(1, 3, size, size, device=device), 0, mask=mask),
                              method="m", explanation=Explanation(vol, vol.sum((1, 2)), vol), target=0,
                              logits=torch.zeros(2), rng=np.random.default_rng(i)))
    return items


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--maps", type=int, default=32)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="CSV to write (default: print only)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    items = make_items(a.maps, a.size, dev)
    seg = metrics.create("segmentation")
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)

    def ours():
        out = evaluate_items(seg, None, items)
        sync()
        return out

    def v1():
        return [version_one(it.explanation.volume.cpu().numpy(), it.mask.cpu().numpy()) for it in items]

    got, ref = ours(), v1()
    clock = time.perf_counter if dev.type == "cuda" else time.process_time
    t_ours, t_v1, wall = [], [], []
    for _ in range(a.repeats):
        t0, w0 = clock(), time.perf_counter()
        ours()
        t_ours.append(clock() - t0)
        wall.append(time.perf_counter() - w0)
        t0 = clock()
        v1()
        t_v1.append(clock() - t0)
    diff = max(abs(g[k] - r[k]) for g, r in zip(got, ref) for k in r)
    ours_s, v1_s = min(t_ours) / a.maps, min(t_v1) / a.maps
    row = dict(device=str(dev), threads=a.threads, maps=a.maps, size=a.size, ours_s_per_map=ours_s,
               wall_s_per_map=min(wall) / a.maps, v1_s_per_map=v1_s, speedup=v1_s / ours_s, target_s=TARGET_S,
               ratio=ours_s / TARGET_S, max_abs_diff=diff, ok=bool(diff <= 1e-6))
    print(f"segmentation on {a.maps} maps of {a.size}x{a.size} ({dev}, {a.threads} thread(s)):")
    clock_note = f"CPU time; wall {row['wall_s_per_map'] * 1e3:.3f} ms" if dev.type == "cpu" else "wall"
    print(f"  ours {ours_s * 1e3:.3f} ms/map ({clock_note}), version 1 (numpy + scikit-learn) "
          f"{v1_s * 1e3:.3f} ms/map -> {row['speedup']:.1f}x faster")
    met = "met" if row["ratio"] <= 1 else "not met"
    print(f"  target {TARGET_S * 1e3:.1f} ms/map: ratio {row['ratio']:.2f} ({met})")
    print(f"  max |difference| of every output: {diff:.2e} ({'ok' if row['ok'] else 'FAIL'})")
    if a.out:
        import csv
        from pathlib import Path

        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        with open(a.out, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS)
            w.writeheader()
            w.writerow(row)
    return row


if __name__ == "__main__":
    main()
