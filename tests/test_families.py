"""The VideoMAE, ViViT and DeiT-distilled families through the adapter contract.

References are the libraries themselves: transformers' ``output_attentions`` and
image processors, ``torch.autograd.grad`` through the library's own attention
tensors, and (timm has no ``output_attentions``) the DeiT forward written out
by hand from the model's weights.  All models are seeded tiny random-init
architectures, except the last test, which checks the shipped trained models.
"""

import json
import math

import numpy as np
import pytest
import torch

from xaibench import datasets, models
from xaibench.errors import UserError

VIDEO = ("hf_videomae", "hf_vivit")


def tiny(builder, layers=2, frames=4, seed=0):
    """A seeded tiny random-init adapter: 32 px, patches of 8 (a 4 x 4 grid), width 32, 2 heads."""
    kw = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2)
    if builder in VIDEO:
        kw["num_frames"] = frames
    return models.create(builder, seed=seed, **kw)


def rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ declarations
@pytest.mark.parametrize("builder, frames, tubelet, prefix, readout", [
    ("hf_videomae", 4, 2, 0, "pool"), ("hf_vivit", 4, 2, 1, "cls"), ("timm_deit", 1, 1, 2, "prefix_mean")])
def test_layout_declarations(builder, frames, tubelet, prefix, readout):
    a = tiny(builder, frames=8)
    L = a.layout
    assert (L.frames, L.tubelet, L.prefix, L.readout, L.stages) == (frames, tubelet, prefix, readout, ((4, 4),))
    assert a.input_shape == ((8 if builder in VIDEO else 1), 3, 32, 32)
    assert [p.kind for p in a.hook_points()] == ["global", "global"] and a.num_layers == 2


def test_readout_is_what_the_classifier_reads():
    """pool: the head reads the mean of *all* final tokens (VideoMAE has no prefix); cls: token 0 (ViViT);
    prefix_mean: the mean of the CLS and distillation heads (DeiT)."""
    mae, viv, deit = tiny("hf_videomae"), tiny("hf_vivit"), tiny("timm_deit")
    x = rand(2, 4, 3, 32, 32)
    with torch.no_grad():
        h = mae.model.videomae(pixel_values=mae.normalise(x)).last_hidden_state
        assert h.shape[1] == mae.layout.n_tokens()
        torch.testing.assert_close(mae.model.classifier(mae.model.fc_norm(h.mean(1))), mae.predict(x))
        h = viv.model.vivit(pixel_values=viv.normalise(x)).last_hidden_state
        assert h.shape[1] == viv.layout.n_tokens()
        torch.testing.assert_close(viv.model.classifier(h[:, 0]), viv.predict(x))
        xi = x[:, :1]
        h = deit.model.forward_features(deit.normalise(xi)[:, 0])
        assert h.shape[1] == deit.layout.n_tokens()
        torch.testing.assert_close((deit.model.head(h[:, 0]) + deit.model.head_dist(h[:, 1])) / 2, deit.predict(xi))


def test_videomae_without_mean_pooling_is_refused():
    from xaibench.models.hf_videomae import HFVideoMAEAdapter

    torch.manual_seed(0)
    m = models.raw_model("hf_videomae", image_size=32, num_frames=4, hidden_size=32, num_hidden_layers=1,
                         num_attention_heads=2)
    m.config.use_mean_pooling = False
    with pytest.raises(UserError, match="use_mean_pooling"):
        HFVideoMAEAdapter(m)


# ------------------------------------------------------- attention and gradients
@pytest.mark.parametrize("builder", VIDEO)
def test_attention_and_gradients_equal_the_librarys_own(builder):
    """Hooked probabilities = transformers' ``output_attentions`` (same layer count); hooked gradients =
    ``torch.autograd.grad`` of the target logits w.r.t. those very tensors."""
    a = tiny(builder)
    x = rand(2, *a.input_shape)
    target = torch.tensor([1, 3])
    tr = a.trace(x, target=target, attentions=True, grads=True)
    xin = a.normalise(x).requires_grad_(True)  # the parameters are frozen: give autograd a leaf
    out = a.model(pixel_values=xin, output_attentions=True)
    grads = torch.autograd.grad(out.logits.gather(1, target[:, None]).sum(), out.attentions)
    assert len(out.attentions) == len(tr.attentions) == a.model.config.num_hidden_layers == a.num_layers
    torch.testing.assert_close(tr.logits, out.logits.detach())
    n = a.layout.n_tokens()
    for rec, ref, g in zip(tr.attentions, out.attentions, grads):
        assert rec.kind == "global" and rec.probs.shape == (2, 2, n, n) and rec.n_tokens == n
        torch.testing.assert_close(rec.probs, ref.detach())
        torch.testing.assert_close(rec.grad, g)


def deit_by_hand(model, xn):
    """timm's DeiT forward written out from its weights: logits and each layer's ``softmax(q k^T / sqrt(d))``.

    Tokens [CLS, DIST, patches] plus position embedding (``_pos_embed``); pre-norm blocks
    ``x += proj(A v)``, ``x += mlp(norm2(x))``; the head averages the CLS and distillation heads.
    """
    x = model._pos_embed(model.patch_embed(xn))
    probs = []
    for blk in model.blocks:
        h = blk.norm1(x)
        B, N, C = h.shape
        heads = blk.attn.num_heads
        q, k, v = blk.attn.qkv(h).reshape(B, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
        p = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(C // heads), dim=-1)
        probs.append(p)
        x = x + blk.attn.proj((p @ v).transpose(1, 2).reshape(B, N, C))
        x = x + blk.mlp(blk.norm2(x))
    x = model.norm(x)
    return (model.head(x[:, 0]) + model.head_dist(x[:, 1])) / 2, probs


def test_deit_attention_and_gradients_equal_a_hand_written_forward():
    a = tiny("timm_deit")
    x = rand(2, 1, 3, 32, 32)
    target = torch.tensor([2, 0])
    tr = a.trace(x, target=target, attentions=True, grads=True)
    xin = a.normalise(x)[:, 0].requires_grad_(True)
    logits, probs = deit_by_hand(a.model, xin)
    with torch.no_grad():
        torch.testing.assert_close(logits, a.model(xin))  # the hand-written forward is the model
    grads = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), probs)
    assert len(tr.attentions) == len(probs) == 2
    for rec, ref, g in zip(tr.attentions, probs, grads):
        assert rec.probs.shape == (2, 2, 2 + 16, 2 + 16)
        torch.testing.assert_close(rec.probs, ref.detach())
        torch.testing.assert_close(rec.grad, g)


# ------------------------------------------------------------------- token order
@pytest.mark.parametrize("builder", VIDEO + ("timm_deit",))
def test_reshape_tokens_places_a_marked_tubelet_at_its_t_y_x(builder):
    """With one block, the default Grad-CAM layer (the block's first layer norm) sees the embeddings, where
    tokens do not mix yet: changing the pixels of tubelet (t, y, x) must change exactly the reshaped token
    (t, y, x), and no prefix token.  This checks the library's own token order, not only the reshape."""
    a = tiny(builder, layers=1, frames=6)
    T, (h, w), p, k = a.layout.frames, a.grid, a.patch_size, a.layout.tubelet
    t, y, x = (2, 1, 3) if builder in VIDEO else (0, 1, 3)
    x0 = rand(1, *a.input_shape)
    x1 = x0.clone()
    x1[:, t * k:(t + 1) * k, :, y * p:(y + 1) * p, x * p:(x + 1) * p] = rand(1, k, 3, p, p, seed=1)
    acts = [a.trace(v, capture=[a.gradcam_layer]).activations[a.gradcam_layer] for v in (x0, x1)]
    grids = [a.reshape_tokens(act, 1) for act in acts]
    assert grids[0].shape == (1, T, h, w, acts[0].shape[-1])
    changed = (grids[1] - grids[0]).abs().amax(-1)[0] > 1e-4
    expected = torch.zeros(T, h, w, dtype=torch.bool)
    expected[t, y, x] = True
    assert torch.equal(changed, expected)
    torch.testing.assert_close(acts[0][:, :a.layout.prefix], acts[1][:, :a.layout.prefix])


@pytest.mark.parametrize("builder", VIDEO + ("timm_deit",))
def test_reshape_tokens_maps_the_stage_vector_index(builder):
    """Token ``prefix + (t*h + y)*w + x`` of a (B, n, D) layer output lands at [b, t, y, x] (B = 2)."""
    a = tiny(builder, frames=6)
    L, (h, w) = a.layout, a.grid
    n = L.n_tokens()
    act = torch.arange(2 * n, dtype=torch.float32).view(2, n, 1).expand(2, n, 3)
    g = a.reshape_tokens(act, 2)
    assert g.shape == (2, L.frames, h, w, 3)
    for b, t, y, x in [(0, 0, 0, 0), (1, L.frames - 1, 2, 1), (0, L.frames // 2, 3, 3)]:
        assert g[b, t, y, x, 0] == b * n + L.prefix + (t * h + y) * w + x


# -------------------------------------------------------------------- pretrained
SHA = "0123456789abcdef0123456789abcdef01234567"



def tiny_hf(kind):
    torch.manual_seed(4)
    m = models.raw_model(f"hf_{kind}", num_labels=5, image_size=32, patch_size=8, num_frames=4, hidden_size=32,
                         num_hidden_layers=2, num_attention_heads=2)
    m.config._attn_implementation = "sdpa"  # saved without "eager": loading must force it
    return m


def processor(kind):
    from transformers import VideoMAEImageProcessor, VivitImageProcessor

    if kind == "videomae":
        return VideoMAEImageProcessor(size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32},
                                      image_mean=[0.4, 0.45, 0.5], image_std=[0.2, 0.225, 0.25])
    return VivitImageProcessor(size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32})  # offset to [-1, 1]


def check_against_processor(adapter, model, proc):
    """The adapter on pixels u in [0, 1] = the model on what the checkpoint's own image processor makes of
    the 8-bit frames v = 255 u (resize and crop off: same size)."""
    v = (rand(4, 32, 32, 3).numpy() * 255).astype(np.uint8)
    u = torch.from_numpy(v).float().div(255).permute(0, 3, 1, 2)[None]
    ref = proc(list(v), do_resize=False, do_center_crop=False, return_tensors="pt").pixel_values
    torch.testing.assert_close(adapter.normalise(u), ref)
    with torch.no_grad():
        torch.testing.assert_close(adapter.predict(u), model.eval()(pixel_values=ref).logits)


@pytest.mark.parametrize("kind", ["videomae", "vivit"])
def test_hf_video_from_a_save_pretrained_folder(tmp_path, no_network, kind):
    m = tiny_hf(kind)
    m.save_pretrained(tmp_path)
    proc = processor(kind)
    proc.save_pretrained(tmp_path)
    a = models.create("hf_pretrained", path_or_id=str(tmp_path))
    assert a.model.config._attn_implementation == "eager" and a.input_shape == (4, 3, 32, 32)
    assert a.preprocess["resize"] == 40 and a.preprocess["size"] == 32 and a.preprocess["frames"] == 4
    check_against_processor(a, m, proc)
    if kind == "vivit":  # (v / 127.5 - 1 - 0.5) / 0.5 = (u - 0.75) / 0.25
        assert a.preprocess["mean"] == pytest.approx((0.75,) * 3) and a.preprocess["std"] == pytest.approx((0.25,) * 3)
    tr = a.trace(rand(1, 4, 3, 32, 32), attentions=True, grads=True)
    assert [r.kind for r in tr.attentions] == ["global", "global"]
    assert all(r.probs.shape[-1] == a.layout.n_tokens() and r.grad is not None for r in tr.attentions)


def test_known_ids_from_the_hub_cache_and_the_weights_folder(tmp_path, no_network, monkeypatch):
    # VideoMAE through a fake Hugging Face hub cache (models--org--name/{refs/main, snapshots/<sha>})
    m = tiny_hf("videomae")
    root = tmp_path / "hub" / "models--MCG-NJU--videomae-base-finetuned-kinetics"
    m.save_pretrained(root / "snapshots" / SHA)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(SHA)
    a = models.create("pretrained_videomae_k400", cache_dir=str(tmp_path / "hub"))
    assert a.name == "pretrained_videomae_k400" and a.layout.readout == "pool"
    assert a.preprocess["source"] == "defaults" and a.preprocess["mean"] == (0.485, 0.456, 0.406)
    x = rand(1, 4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(a.predict(x), m.eval()(pixel_values=a.normalise(x)).logits)
    # ViViT through $XAIBENCH_WEIGHTS/<org>--<name>, with its processor
    v = tiny_hf("vivit")
    folder = tmp_path / "w" / "google--vivit-b-16x2-kinetics400"
    v.save_pretrained(folder)
    proc = processor("vivit")
    proc.save_pretrained(folder)
    monkeypatch.setenv("XAIBENCH_WEIGHTS", str(tmp_path / "w"))
    b = models.create("pretrained_vivit_k400")
    assert b.name == "pretrained_vivit_k400" and b.layout.readout == "cls"
    check_against_processor(b, v, proc)


def test_missing_video_checkpoints_say_what_and_how(tmp_path, no_network, monkeypatch):
    monkeypatch.setenv("XAIBENCH_HF_HOME", str(tmp_path / "empty"))
    for name, repo in [("pretrained_videomae_k400", "MCG-NJU/videomae-base-finetuned-kinetics"),
                       ("pretrained_vivit_k400", "google/vivit-b-16x2-kinetics400")]:
        with pytest.raises(UserError) as e:
            models.create(name)
        assert f"huggingface-cli download {repo}" in str(e.value)


# ---------------------------------------------------------------------- shipped
@pytest.mark.parametrize("name, dataset", [("videomae_synth", "synthetic_video"), ("vivit_synth", "synthetic_video"),
                                           ("deit_synth", "synthetic_image")])
def test_shipped_model_is_accurate_on_held_out_clips(name, dataset):
    weights = models.WEIGHTS_DIR / f"{name}.safetensors"
    assert name in models.SHIPPED and weights.exists(), f"train it: xaibench-train model={name}"
    assert weights.stat().st_size <= 10 * 2**20
    meta = json.loads((models.WEIGHTS_DIR / f"{name}.json").read_text())
    assert meta["train"]["test_acc"] >= 0.95
    a = models.create(name)
    ds = datasets.create(dataset, split="test", n_samples=64)  # the test split: never seen in training
    x = torch.stack([ds[i].x for i in range(64)])
    y = torch.tensor([ds[i].label for i in range(64)])
    assert (a.predict(x).argmax(-1) == y).float().mean() >= 0.95


@pytest.mark.parametrize("name", ["videomae_synth", "vivit_synth"])
def test_staa_on_joint_attention_scores_the_evidence_frames_higher(name):
    """STAA on joint space-time attention: per-frame maps (T', h, w) that sum to the frame scores tau_t
    (raw STAA: M_t = tau_t m_t), tau shared by the two input frames of a tubelet and not constant over
    frames, and on the trained models the evidence frames score higher than the others: paired one-sided
    Wilcoxon signed-rank test over 32 held-out clips at the 1 % level (scipy.stats.wilcoxon)."""
    from scipy.stats import wilcoxon

    from xaibench import methods

    a = models.create(name)
    ds = datasets.create("synthetic_video", split="test", n_samples=32)
    samples = [ds[i] for i in range(32)]
    exps = methods.create("staa").explain_batch(a, torch.stack([s.x for s in samples]), [s.label for s in samples])
    diffs = []
    for s, e in zip(samples, exps):
        tau = e.frame_scores
        assert e.token_map.shape == (4, 8, 8) and tau.shape == (8,)
        torch.testing.assert_close(tau[0::2], tau[1::2])
        torch.testing.assert_close(e.token_map.flatten(1).sum(1), tau[0::2])
        assert tau.max() - tau.min() > 1e-3
        ev = s.frames.bool()
        diffs.append((tau[ev].mean() - tau[~ev].mean()).item())
    assert wilcoxon(diffs, alternative="greater").pvalue < 0.01


# -------------------------------------------------------------------- lazy imports
def test_importing_the_models_imports_no_model_library():
    """``import xaibench.models`` registers every family without importing transformers or timm; building a
    family imports its own library only."""
    import subprocess
    import sys

    code = ("import sys, xaibench.models as M\n"
            "libs = lambda: sorted({m.split('.')[0] for m in sys.modules} & {'transformers', 'timm'})\n"
            "print(libs(), len(M.FAMILIES))\n"
            "M.create('timm_vit', image_size=16, patch_size=8, hidden_size=8, num_hidden_layers=1, "
            "num_attention_heads=2)\n"
            "print(libs())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("[] ") and int(lines[0].split()[-1]) >= 9
    assert lines[1] == "['timm']"


# -------------------------------------------------------------------- typed configs
def test_every_model_entry_has_a_typed_config():
    assert models.MODELS.untyped() == []
    for name in models.available():
        assert models.MODELS.config(name) is not None


@pytest.mark.parametrize("name, values, needle", [
    ("hf_vit", {"num_layer": 3}, "Did you mean 'num_labels', 'num_hidden_layers'"),
    ("timm_swin", {"depth": [2, 2]}, "Did you mean 'depths'"),
    ("hf_vit", {"hidden_size": 0}, "out of range"),
    ("hf_vit", {"patch_size": 7}, "must divide model.image_size"),
    ("hf_vit", {"num_attention_heads": 5}, "must divide model.hidden_size"),
    ("hf_videomae", {"num_frames": 7}, "tubelet_size=2 must divide model.num_frames=7"),
    ("hf_swin", {"depths": [2, 2, 2]}, "one entry per stage"),
    ("hf_vit", {"mean": [0.5, 0.5]}, "three numbers"),
    ("timm_vit", {"global_pool": "max"}, "valid values are token, avg"),
    ("vit_synth", {"hidden_size": 8}, "takes no parameters"),
    ("hf_pretrained", {}, "needs model.path_or_id"),
    ("timm_pretrained", {}, "needs model.model_name"),
    ("trained", {"path": "x.pt"}, "must be the .safetensors file"),
    ("pretrained_vit_b16", {"checkpoint": "x"}, "Its parameters: path_or_id, cache_dir"),
])
def test_model_values_are_checked_before_anything_is_built(name, values, needle):
    with pytest.raises(UserError) as e:
        models.MODELS.build_config(name, values)
    assert needle in str(e.value)


def test_model_yaml_extends_the_schema_with_only_what_differs():
    """conf/model/*.yaml compose to the typed defaults plus their own values; a shipped config keeps its training
    recipe (read by xaibench-train) beside a schema without parameters."""
    from xaibench.run.plan import component, load

    tiny = load("model", "hf_timesformer_tiny")
    defaults = models.MODELS.config("hf_timesformer")().values()
    assert tiny["name"] == "hf_timesformer"
    assert {k: v for k, v in tiny.items() if k != "name" and v != defaults[k]} == {
        "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}
    shipped = load("model", "vit_synth")
    assert shipped["name"] == "vit_synth" and shipped["train"]["builder"] == "hf_vit"
    assert component("model", "vit_synth").params == {}
    assert models.MODELS.config("vit_synth").keys() == []


@pytest.mark.parametrize("pool, readout, groups", [("token", "cls", {"cls"}), ("avg", "pool", {"patches"})])
def test_timm_vit_readout_follows_its_configuration(pool, readout, groups):
    """The readout is declared from the model's own configuration, and the gradient agrees."""
    from xaibench.models import conformance as C

    a = C.tiny("timm_vit", global_pool=pool)
    assert a.layout.readout == readout and a.layout.prefix == 1
    support = C.check_readout(a)
    assert {g for g, s in support.items() if s == "all"} == groups
