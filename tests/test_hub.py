"""Pretrained weights from the Hugging Face hub when online, from local files when offline; tests never touch
the network (the hub client is replaced by a stand-in that serves a tiny checkpoint folder)."""

import pytest
import torch

from xaibench.errors import UserError
from xaibench.models import pretrained as P


@pytest.fixture
def tiny_vit_folder(tmp_path):
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    cfg = ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=32, num_labels=3, attn_implementation="eager")
    folder = tmp_path / "served" / "org--tiny-vit"
    ViTForImageClassification(cfg).save_pretrained(folder)
    return folder


def _online(monkeypatch):
    for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(v, raising=False)
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)


def test_online_models_come_from_the_hub_with_its_cache(tmp_path, monkeypatch, tiny_vit_folder):
    _online(monkeypatch)
    calls = []

    def fake_snapshot_download(repo_id, cache_dir=None, allow_patterns=None, **kw):
        calls.append((repo_id, cache_dir, tuple(allow_patterns)))
        return str(tiny_vit_folder)

    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_snapshot_download)
    monkeypatch.setenv("XAIBENCH_HF_HOME", str(tmp_path / "cache"))
    adapter = P.hf_pretrained("org/tiny-vit")
    assert calls and calls[0][0] == "org/tiny-vit" and "model.safetensors" in calls[0][2]
    assert calls[0][1] == str(tmp_path / "cache")  # the user's cache, the library's normal caching
    assert adapter.num_classes == 3 and adapter.predict(torch.rand(1, 1, 3, 32, 32)).shape == (1, 3)


def test_offline_never_calls_the_hub_and_says_why(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.snapshot_download",
                        lambda *a, **k: pytest.fail("the hub was contacted while offline"))
    monkeypatch.setenv("XAIBENCH_HF_HOME", str(tmp_path / "empty"))
    with pytest.raises(UserError, match="HF_HUB_OFFLINE") as e:
        P.hf_pretrained("org/not-here")
    assert "huggingface-cli download org/not-here" in str(e.value)


def test_a_hub_failure_is_a_clear_error(tmp_path, monkeypatch):
    _online(monkeypatch)

    def no_network(*a, **k):
        raise ConnectionError("Failed to resolve 'huggingface.co'")

    monkeypatch.setattr("huggingface_hub.snapshot_download", no_network)
    monkeypatch.setenv("XAIBENCH_HF_HOME", str(tmp_path / "empty"))
    with pytest.raises(UserError, match="ConnectionError") as e:
        P.hf_pretrained("org/not-here")
    assert "looked in" in str(e.value)


def test_timm_weights_from_the_hub_when_online(tmp_path, monkeypatch):
    import timm
    from safetensors.torch import save_file

    _online(monkeypatch)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=5, depth=1)
    f = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(f))
    calls = []

    def fake_hf_hub_download(repo_id, filename, cache_dir=None, **kw):
        calls.append((repo_id, filename))
        return str(f)

    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_hf_hub_download)
    monkeypatch.setenv("XAIBENCH_HF_HOME", str(tmp_path / "empty"))
    monkeypatch.delenv("XAIBENCH_WEIGHTS", raising=False)
    adapter = P.timm_pretrained("vit_tiny_patch16_224", depth=1)
    assert calls and calls[0][1] == "model.safetensors" and calls[0][0].startswith("timm/")
    assert adapter.num_classes == 5
