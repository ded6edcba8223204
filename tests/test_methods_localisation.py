"""Attention-based methods localise the synthetic evidence better than a random map.

On every shipped model (``xaibench.models.shipped_names()``, trained on the synthetic benchmarks, whose
ground-truth mask marks the class evidence in space and time): the mean
average precision (sklearn ``average_precision_score``) of each method's
(T, H, W) attribution volume against the mask, over the first test samples,
must exceed the mean AP of seeded uniform-random maps on the same samples
(the AP of an uninformative map, about the fraction of evidence positions).
Skipped, with the reason, for a model whose weights are not shipped.
"""

from __future__ import annotations

import numpy as np
import torch

from xaibench import datasets, methods

METHODS = ["attention", "rollout", "chefer", "stdnorm", "gradcam"]
N = 8


def test_methods_beat_random_maps(shipped_models, shipped_name):
    from sklearn.metrics import average_precision_score

    a = shipped_models(shipped_name)
    meta = a.meta
    ds = datasets.create(meta["dataset"], split="test", n_samples=N, **meta.get("dataset_params", {}))
    samples = list(ds)
    xs, labels = torch.stack([s.x for s in samples]), [s.label for s in samples]
    rng = np.random.default_rng(0)
    ap = {m: [] for m in METHODS + ["random"]}
    for s in samples:
        y = s.mask.numpy().reshape(-1)
        ap["random"].append(average_precision_score(y, rng.random(y.size)))
    for m in METHODS:
        for s, e in zip(samples, methods.create(m).explain_batch(a, xs, labels)):  # one traced pass
            assert torch.isfinite(e.volume).all()
            ap[m].append(average_precision_score(s.mask.numpy().reshape(-1), e.volume.numpy().reshape(-1)))
    mean = {k: float(np.mean(v)) for k, v in ap.items()}
    for m in METHODS:
        assert mean[m] > mean["random"], (shipped_name, m, mean)
