"""Pretrained-model loading from local files only: tiny random-init real architectures
saved with ``save_pretrained`` / as timm state dicts, loaded back through the local
path, ``$XAIBENCH_WEIGHTS`` and a fake Hugging Face cache, with the network blocked."""


import pytest
import torch
from safetensors.torch import save_file

from xaibench import models
from xaibench.errors import UserError
from xaibench.models.base import TokenLayout
from xaibench.models.pretrained import PRETRAINED

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(autouse=True)
def _offline(no_network):
    """Every test here runs with the network blocked (conftest.no_network)."""


def tiny_timesformer(num_labels=5, **kw):
    torch.manual_seed(0)
    return models.raw_model("hf_timesformer", num_labels=num_labels, image_size=32, patch_size=8, num_frames=4,
                            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, **kw)


def tiny_vit(**kw):
    torch.manual_seed(1)
    return models.raw_model("hf_vit", num_labels=5, image_size=32, patch_size=8, hidden_size=32,
                            num_hidden_layers=2, num_attention_heads=2, **kw)


def tiny_swin():
    torch.manual_seed(2)
    return models.raw_model("hf_swin", num_labels=5, image_size=32, patch_size=4, embed_dim=24, depths=(2, 2),
                            num_heads=(2, 4), window_size=4)


def same_logits(adapter, model, video: bool):
    """The adapter (pixels in [0, 1], its own normalisation) equals the original model on
    input normalised by hand with the checkpoint's mean / std."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, *adapter.input_shape, generator=g)
    mean = torch.tensor(adapter.preprocess["mean"]).view(1, 1, 3, 1, 1)
    std = torch.tensor(adapter.preprocess["std"]).view(1, 1, 3, 1, 1)
    xn = (x - mean) / std
    with torch.no_grad():
        ref = model.eval()(pixel_values=xn if video else xn[:, 0]).logits
    torch.testing.assert_close(adapter.predict(x), ref)


def fake_hub_cache(cache, repo_id, model, extra=None):
    """The huggingface_hub cache layout: models--org--name/{refs/main, snapshots/<sha>/...}."""
    root = cache / ("models--" + repo_id.replace("/", "--"))
    snap = root / "snapshots" / SHA
    model.save_pretrained(snap)
    if extra:
        extra(snap)
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(SHA)
    return snap


def test_all_names_are_registered():
    avail = models.available()
    assert len(PRETRAINED) >= 9
    for n in list(PRETRAINED) + ["hf_pretrained", "timm_pretrained"]:
        assert n in avail


def test_hf_timesformer_from_a_save_pretrained_folder(tmp_path):
    from transformers import VideoMAEImageProcessor

    m = tiny_timesformer()
    m.save_pretrained(tmp_path)
    VideoMAEImageProcessor(size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32},
                           image_mean=[0.4, 0.45, 0.5], image_std=[0.2, 0.225, 0.25]).save_pretrained(tmp_path)
    a = models.create("hf_pretrained", path_or_id=str(tmp_path))
    assert a.family == "hf_timesformer" and a.meta["source"] == "hf" and a.input_shape == (4, 3, 32, 32)
    assert a.layout == TokenLayout(frames=4, tubelet=1, stages=((4, 4),), prefix=1, readout="cls")
    assert a.preprocess["resize"] == 40 and a.preprocess["size"] == 32 and a.preprocess["frames"] == 4
    assert a.preprocess["mean"] == (0.4, 0.45, 0.5) and a.preprocess["std"] == (0.2, 0.225, 0.25)
    same_logits(a, m, video=True)
    tr = a.trace(torch.rand(1, 4, 3, 32, 32), attentions=True)
    assert len(tr.of_kind("temporal")) == 2 and tr.of_kind("spatial")[0].probs.shape == (1, 4, 2, 17, 17)


@pytest.mark.parametrize("kind", ["vit", "swin"])
def test_hf_image_models_load_with_eager_attention(tmp_path, kind):
    m = tiny_vit() if kind == "vit" else tiny_swin()
    m.config._attn_implementation = "sdpa"
    m.save_pretrained(tmp_path)  # config.json names no attention kind: transformers would pick SDPA
    a = models.create("hf_pretrained", path_or_id=str(tmp_path))
    assert a.family == f"hf_{kind}" and a.model.config._attn_implementation == "eager"
    assert {p.kind for p in a.hook_points()} == {"global" if kind == "vit" else "window"}
    assert a.preprocess["source"] == "defaults"
    expected_mean = (0.5, 0.5, 0.5) if kind == "vit" else (0.485, 0.456, 0.406)
    assert a.preprocess["mean"] == expected_mean
    same_logits(a, m, video=False)
    tr = a.trace(torch.rand(1, 1, 3, 32, 32), attentions=True, grads=True)
    assert tr.attentions and all(r.probs.numel() > 0 and r.grad is not None for r in tr.attentions)


def test_known_id_from_a_fake_hub_cache_offline(tmp_path, monkeypatch):
    m = tiny_timesformer()
    cache = tmp_path / "hf" / "hub"
    fake_hub_cache(cache, "facebook/timesformer-base-finetuned-k400", m)
    a = models.create("pretrained_timesformer_k400", cache_dir=str(cache))
    assert a.name == "pretrained_timesformer_k400" and a.family == "hf_timesformer"
    same_logits(a, m, video=True)
    # the same through XAIBENCH_HF_HOME (an HF_HOME-style folder with hub/ inside)
    monkeypatch.setenv("XAIBENCH_HF_HOME", str(tmp_path / "hf"))
    b = models.create("pretrained_timesformer_k400")
    torch.testing.assert_close(b.predict(torch.zeros(1, 4, 3, 32, 32)), a.predict(torch.zeros(1, 4, 3, 32, 32)))


def test_known_id_from_xaibench_weights_folder(tmp_path, monkeypatch):
    m = tiny_vit()
    m.save_pretrained(tmp_path / "google--vit-base-patch16-224")
    monkeypatch.setenv("XAIBENCH_WEIGHTS", str(tmp_path))
    a = models.create("pretrained_vit_b16")
    assert a.name == "pretrained_vit_b16"
    same_logits(a, m, video=False)


def test_missing_hf_weights_say_what_and_how(tmp_path, monkeypatch):
    monkeypatch.setenv("XAIBENCH_HF_HOME", str(tmp_path / "empty"))
    with pytest.raises(UserError) as e:
        models.create("pretrained_swin_t")
    msg = str(e.value)
    assert "microsoft/swin-tiny-patch4-window7-224" in msg
    assert "huggingface-cli download microsoft/swin-tiny-patch4-window7-224" in msg
    assert "XAIBENCH_HF_HOME" in msg and "XAIBENCH_WEIGHTS" in msg
    # a folder with a config but no weights (an interrupted download)
    tiny_vit().config.save_pretrained(tmp_path / "partial")
    with pytest.raises(UserError, match="no weights"):
        models.create("hf_pretrained", path_or_id=str(tmp_path / "partial"))
    # the same in the hub cache
    snap = fake_hub_cache(tmp_path / "c", "google/vit-base-patch16-224", tiny_vit())
    (snap / "model.safetensors").unlink()
    with pytest.raises(UserError, match="no weights file"):
        models.create("pretrained_vit_b16", cache_dir=str(tmp_path / "c"))


def tiny_timm(name, **kw):
    import timm

    torch.manual_seed(3)
    return timm.create_model(name, pretrained=False, num_classes=5, **kw)


VIT_KW = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
SWIN_KW = dict(img_size=32, window_size=4, embed_dim=24, depths=(2, 2), num_heads=(2, 4))


def timm_same_logits(adapter, model):
    x = torch.rand(2, 1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    cfg = model.pretrained_cfg
    xn = (x[:, 0] - torch.tensor(cfg["mean"]).view(1, 3, 1, 1)) / torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = model.eval()(xn)
    torch.testing.assert_close(adapter.predict(x), ref)


def test_timm_vit_from_safetensors(tmp_path):
    m = tiny_timm("vit_base_patch16_224", **VIT_KW)
    save_file(m.state_dict(), str(tmp_path / "w.safetensors"))
    a = models.create("timm_pretrained", model_name="vit_base_patch16_224", checkpoint=str(tmp_path / "w.safetensors"),
                      **VIT_KW)
    assert a.family == "timm_vit" and a.meta["source"] == "timm" and a.num_classes == 5  # the checkpoint's head
    assert a.layout == TokenLayout(frames=1, stages=((4, 4),), prefix=1, readout="cls")
    assert a.preprocess["resize"] == int(32 / 0.9) and a.preprocess["interpolation"] == "bicubic"
    timm_same_logits(a, m)
    tr = a.trace(torch.rand(1, 1, 3, 32, 32), attentions=True)
    assert len(tr.attentions) == 2 and tr.attentions[0].probs.shape == (1, 2, 17, 17)  # fused attention undone


def test_timm_deit_from_a_pth_with_a_wrapped_state_dict(tmp_path):
    m = tiny_timm("deit_small_patch16_224", **VIT_KW)
    torch.save({"model": m.state_dict(), "epoch": 3}, tmp_path / "deit.pth")  # the DeiT release format
    a = models.create("pretrained_deit_s", checkpoint=str(tmp_path / "deit.pth"), **VIT_KW)
    assert a.name == "pretrained_deit_s" and a.preprocess["mean"] == (0.485, 0.456, 0.406)
    timm_same_logits(a, m)


def test_timm_swin_from_weights_dir_and_hub_cache(tmp_path, monkeypatch):
    m = tiny_timm("swin_tiny_patch4_window7_224", **SWIN_KW)
    w = tmp_path / "weights"
    w.mkdir()
    save_file(m.state_dict(), str(w / "swin_tiny_patch4_window7_224.safetensors"))
    monkeypatch.setenv("XAIBENCH_WEIGHTS", str(w))
    a = models.create("pretrained_timm_swin_t", **SWIN_KW)
    assert a.family == "timm_swin" and a.layout.stages == ((8, 8), (4, 4)) and a.layout.readout == "pool"
    timm_same_logits(a, m)
    monkeypatch.delenv("XAIBENCH_WEIGHTS")
    # timm names are looked up in the hub cache under their pretrained_cfg.hf_hub_id
    root = tmp_path / "hub" / "models--timm--swin_tiny_patch4_window7_224.ms_in1k"
    (root / "snapshots" / SHA).mkdir(parents=True)
    save_file(m.state_dict(), str(root / "snapshots" / SHA / "model.safetensors"))
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(SHA)
    b = models.create("pretrained_timm_swin_t", cache_dir=str(tmp_path / "hub"), **SWIN_KW)
    timm_same_logits(b, m)


def test_timm_errors_are_clear(tmp_path):
    with pytest.raises(UserError) as e:
        models.create("pretrained_timm_vit_b16")
    msg = str(e.value)
    assert "vit_base_patch16_224" in msg and "huggingface-cli download timm/vit_base_patch16_224" in msg
    with pytest.raises(UserError, match="does not exist"):
        models.create("pretrained_deit_s", checkpoint=str(tmp_path / "nope.pth"))
    m = tiny_timm("vit_base_patch16_224", **VIT_KW)
    save_file(m.state_dict(), str(tmp_path / "w.safetensors"))
    with pytest.raises(UserError, match="does not fit"):  # built with the default (base) size
        models.create("timm_pretrained", model_name="vit_base_patch16_224", checkpoint=str(tmp_path / "w.safetensors"),
                      img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=2)
    with pytest.raises(UserError, match="unknown timm model"):
        models.create("timm_pretrained", model_name="not_a_model")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="could not read"):
        models.create("timm_pretrained", model_name="vit_base_patch16_224",
                      checkpoint=str(tmp_path / "junk.safetensors"))


# ---------------------------------------------------------------------- DINOv2 (the family added last)
def tiny_dinov2(image_size=64):
    torch.manual_seed(5)
    return models.raw_model("hf_dinov2", num_labels=5, image_size=image_size, patch_size=8, hidden_size=16,
                            num_hidden_layers=2, num_attention_heads=2, layerscale_value=0.5)


def test_dinov2_from_a_folder_at_its_processors_crop(tmp_path):
    """DINOv2 checkpoints are evaluated at the processor's crop (224 of a 518-px config): the adapter takes the
    crop as its input size, and equals the model on what the checkpoint's own BitImageProcessor makes of the
    pixels (position embeddings interpolated by the model itself)."""
    import numpy as np
    from transformers import BitImageProcessor

    m = tiny_dinov2(image_size=64)
    m.save_pretrained(tmp_path)
    proc = BitImageProcessor(size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32}, resample=3,
                             image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    proc.save_pretrained(tmp_path)
    a = models.create("hf_pretrained", path_or_id=str(tmp_path))
    assert a.family == "hf_dinov2" and a.input_shape == (1, 3, 32, 32) and a.layout.grid == (4, 4)
    assert a.layout.readout == "cls+patches" and a.preprocess["resize"] == 40
    assert a.preprocess["interpolation"] == "bicubic" and a.card.image_size == 32
    v = (torch.rand(32, 32, 3, generator=torch.Generator().manual_seed(0)).numpy() * 255).astype(np.uint8)
    u = torch.from_numpy(v).float().div(255).permute(2, 0, 1)[None, None]
    ref = proc(v, do_resize=False, do_center_crop=False, return_tensors="pt").pixel_values
    torch.testing.assert_close(a.normalise(u)[:, 0], ref)
    with torch.no_grad():
        torch.testing.assert_close(a.predict(u), m.eval()(pixel_values=ref).logits)
    from xaibench.models import conformance as C

    C.conform(a, checks=["readout", "attention", "reshape_tokens", "blocks"])


def test_known_dinov2_id_from_xaibench_weights(tmp_path, monkeypatch):
    m = tiny_dinov2(image_size=32)
    m.save_pretrained(tmp_path / "facebook--dinov2-small-imagenet1k-1-layer")
    monkeypatch.setenv("XAIBENCH_WEIGHTS", str(tmp_path))
    a = models.create("pretrained_dinov2_s")
    assert a.name == "pretrained_dinov2_s" and a.card.hub_id == "facebook/dinov2-small-imagenet1k-1-layer"
    assert a.card.label_set == "imagenet1k" and a.preprocess["source"] == "defaults" and a.input_shape[-1] == 32
    same_logits(a, m, video=False)
    with pytest.raises(UserError, match="hf_dinov2"):  # a checkpoint of another family under this name
        tiny_vit().save_pretrained(tmp_path / "other")
        models.create("pretrained_dinov2_s", path_or_id=str(tmp_path / "other"))


# ---------------------------------------------------------------------- identity and unsafe files
class _NotATensor:
    def __reduce__(self):
        return (print, ("this should never run",))


def test_a_pickled_pytorch_model_bin_is_one_clear_error(tmp_path, capsys):
    m = tiny_vit()
    m.config.save_pretrained(tmp_path)
    state = dict(m.state_dict())
    state["extra"] = _NotATensor()
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(UserError) as e:
        models.create("hf_pretrained", path_or_id=str(tmp_path))
    msg = str(e.value)
    assert "pytorch_model.bin" in msg and "safetensors" in msg and "pickled" in msg
    assert "weights_only=False" not in msg and "weights_only` set to `False" not in msg
    assert "this should never run" not in capsys.readouterr().out
    torch.save({"model": state}, tmp_path / "deit.pth")  # the same through the timm loader
    with pytest.raises(UserError, match="pickled"):
        models.create("timm_pretrained", model_name="vit_base_patch16_224", checkpoint=str(tmp_path / "deit.pth"))


def test_weights_digest_is_the_state_dict_and_follows_changes(tmp_path):
    import hashlib

    m = tiny_vit()
    m.save_pretrained(tmp_path)
    a = models.create("hf_pretrained", path_or_id=str(tmp_path))
    b = models.create("hf_pretrained", path_or_id=str(tmp_path))
    h = hashlib.sha256()
    for name, t in sorted(a.model.state_dict().items()):
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(repr(tuple(t.shape)).encode())
        h.update(t.contiguous().numpy().tobytes())
    assert a.weights_digest() == b.weights_digest() == h.hexdigest()
    assert a.identity() == {"weights_sha256": h.hexdigest(), "expected_sha256": None, "matches": None}
    with torch.no_grad():
        a.model.classifier.bias[0] += 1e-3
    assert a.weights_digest() != b.weights_digest()  # an in-place change is seen (not a stale cache)
    assert a.randomised(0, seed=1).weights_digest() not in (a.weights_digest(), b.weights_digest())
    assert a.describe()["weights_sha256"] == a.weights_digest()
