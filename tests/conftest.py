import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# one thread: on 2 shared cores, tiny models run far faster without thread contention
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_models():
    """Tiny random-init real architectures, one per supported family."""
    from xaibench import models

    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2)
    return {
        "hf_timesformer": models.create("hf_timesformer", num_frames=4, **small),
        "hf_vit": models.create("hf_vit", **small),
        "hf_swin": models.create("hf_swin", embed_dim=16, num_heads=(2, 2)),
        "timm_vit": models.create("timm_vit", **small),
        "timm_swin": models.create("timm_swin", embed_dim=16, num_heads=(2, 2)),
    }
