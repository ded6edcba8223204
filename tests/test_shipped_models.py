"""The shipped small models: loadable offline, accurate, and right for the right reason."""

import json

import numpy as np
import pytest
import torch

from xaibench import datasets, models

SHIPPED = {"timesformer_synth": "synthetic_video", "vit_synth": "synthetic_image", "swin_synth": "synthetic_image",
           "timm_vit_synth": "synthetic_image", "timm_swin_synth": "synthetic_image"}


def _have(name):
    return (models.WEIGHTS_DIR / f"{name}.safetensors").exists()


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_model_is_accurate_and_blind_without_the_evidence(name):
    if not _have(name):
        pytest.skip(f"{name} weights are not trained yet (xaibench-train model={name})")
    a = models.create(name)
    meta = json.loads((models.WEIGHTS_DIR / f"{name}.json").read_text())
    assert meta["train"]["test_acc"] >= 0.95
    assert (models.WEIGHTS_DIR / f"{name}.safetensors").stat().st_size <= 10 * 2**20
    ds = datasets.create(SHIPPED[name], split="test", n_samples=64)
    x = torch.stack([ds[i].x for i in range(64)])
    y = torch.tensor([ds[i].label for i in range(64)])
    assert (a.predict(x).argmax(-1) == y).float().mean() >= 0.95
    # the same clips with the evidence painted over: the model must fall to chance (0.25);
    # 3 binomial standard deviations at n = 64 are 0.16
    xb = torch.stack([torch.from_numpy(ds.render(i, int(y[i]), blank_evidence=True)[0]) for i in range(64)])
    acc_blank = (a.predict(xb).argmax(-1) == y).float().mean().item()
    assert abs(acc_blank - 0.25) <= 0.16, acc_blank
