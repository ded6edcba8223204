"""Attention-based methods localise the synthetic evidence better than a random map.

On the project's shipped models (trained on the synthetic benchmarks, whose
ground-truth mask marks the class evidence in space and time): the mean
average precision (sklearn ``average_precision_score``) of each method's
(T, H, W) attribution volume against the mask, over the first test samples,
must exceed the mean AP of seeded uniform-random maps on the same samples
(the AP of an uninformative map, about the fraction of evidence positions).
Skipped, with the reason, for a model whose weights are not shipped.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xaibench import datasets, methods, models

SHIPPED = ["vit_synth", "timesformer_synth", "swin_synth", "timm_vit_synth", "timm_swin_synth"]
METHODS = ["attention", "rollout", "chefer", "stdnorm", "gradcam"]
N = 8


@pytest.mark.parametrize("model", SHIPPED)
def test_methods_beat_random_maps(model):
    from sklearn.metrics import average_precision_score

    present = all((models.WEIGHTS_DIR / f"{model}{ext}").exists() for ext in (".json", ".safetensors"))
    if not present:
        pytest.skip(f"weights of {model} are not in xaibench/models/weights yet")
    a = models.create(model)
    meta = a.meta
    ds = datasets.create(meta["dataset"], split="test", n_samples=N, **meta.get("dataset_params", {}))
    rng = np.random.default_rng(0)
    ap = {m: [] for m in METHODS + ["random"]}
    for s in ds:
        y = s.mask.numpy().reshape(-1)
        ap["random"].append(average_precision_score(y, rng.random(y.size)))
        for m in METHODS:
            e = methods.create(m)(a, s.x, s.label)
            assert torch.isfinite(e.volume).all()
            ap[m].append(average_precision_score(y, e.volume.numpy().reshape(-1)))
    mean = {k: float(np.mean(v)) for k, v in ap.items()}
    for m in METHODS:
        assert mean[m] > mean["random"], (model, m, mean)
