"""The adapter contract (xaibench/models/base.py) on every tiny model: token layout, records by kind, the
batch-first record layouts, layer selection, pass counting, precision, and Grad-CAM's token reshape;
hooked attention against what the models return themselves."""

import numpy as np
import pytest
import torch

from xaibench import models
from xaibench.errors import UserError
from xaibench.models.base import AttentionRecord, TokenLayout
from dense_tokens import merge_matrix, window_to_global


def seeded(shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def expected_probs_shape(r: AttentionRecord, B: int, heads: int):
    """The record layout table of :class:`AttentionRecord`, written out."""
    h, w = r.grid
    P, T = h * w, r.frames
    if r.kind == "global":
        n = r.prefix + T * P
        return (B, heads, n, n)
    if r.kind == "window":
        q = r.window ** 2
        return (B, P // q, heads, q, q)
    if r.kind == "spatial":
        return (B, T, heads, 1 + P, 1 + P)
    return (B, P, heads, T, T)


def expected_ln_shape(r: AttentionRecord, B: int):
    h, w = r.grid
    P, T = h * w, r.frames
    return {"global": (B, r.prefix + T * P), "window": (B, P), "spatial": (B, T, 1 + P),
            "temporal": (B, P, T)}[r.kind]


def test_trace_records_follow_the_declared_layout(tiny, tiny_name):
    a = tiny
    B = 2
    x = seeded((B, *a.input_shape))
    tr = a.trace(x, attentions=True, grads=True, ln_stats=True, capture=[a.gradcam_layer])
    assert tr.logits.shape == (B, a.num_classes) and tr.logits.dtype == torch.float32
    torch.testing.assert_close(tr.logits, a.predict(x), atol=1e-5, rtol=1e-4)
    L = a.layout
    assert L.frames * L.tubelet == a.num_frames and a.input_shape == (a.num_frames, 3, a.image_size, a.image_size)
    points = a.hook_points()
    assert [r.name for r in tr.attentions] == [p.name for p in points] == a.attention_points()
    assert [r.kind for r in tr.attentions] == [p.kind for p in points]
    assert a.num_layers == len({p.layer for p in points}) and sorted({p.layer for p in points}) == \
        list(range(a.num_layers))
    for r in tr.attentions:
        assert r.grid == tuple(L.stages[r.stage]) and r.frames == L.frames and r.prefix == L.prefix
        heads = r.probs.shape[-3]
        assert tuple(r.probs.shape) == expected_probs_shape(r, B, heads), (r.name, r.kind)
        if r.kind == "global":
            assert r.n_tokens == L.n_tokens(r.stage) == r.probs.shape[-1]
        for t in (r.probs, r.grad, r.ln_mean, r.ln_std):
            assert t is not None and t.dtype == torch.float32 and torch.isfinite(t).all()
        torch.testing.assert_close(r.probs.sum(-1), torch.ones_like(r.probs.sum(-1)))  # rows are distributions
        assert r.grad.shape == r.probs.shape and r.grad.abs().sum() > 0
        assert tuple(r.ln_std.shape) == tuple(r.ln_mean.shape) == expected_ln_shape(r, B)
        assert (r.ln_std > 0).all()
        one = r.select(1)
        torch.testing.assert_close(one.probs, r.probs[1:2])
        assert one.kind == r.kind and one.grid == r.grid
    act = tr.activations[a.gradcam_layer]
    assert act.dtype == tr.activation_grads[a.gradcam_layer].dtype == torch.float32
    assert tr.activation_grads[a.gradcam_layer].shape == act.shape
    grid = a.reshape_tokens(act, B)
    assert tuple(grid.shape[:4]) in [(B, L.frames, *s) for s in L.stages] and grid.shape[-1] == act.shape[-1]


def test_window_records_carry_window_and_shift(tiny_models):
    for name in ("hf_swin_tiny", "timm_swin_tiny"):
        a = tiny_models[name]
        tr = a.trace(seeded((1, *a.input_shape)), attentions=True)
        # depths (2, 2), window 4: every stage alternates an unshifted and a half-window-shifted block
        assert [(r.stage, r.grid, r.window, r.shift) for r in tr.attentions] == [
            (0, (16, 16), 4, 0), (0, (16, 16), 4, 2), (1, (8, 8), 4, 0), (1, (8, 8), 4, 2)]
        assert [r.layer for r in tr.attentions] == [0, 1, 2, 3] and a.num_layers == 4


def test_hf_vit_attention_equals_the_models_own_output(tiny_models):
    """Hooked probabilities and their gradients match what transformers returns itself."""
    a = tiny_models["hf_vit_tiny"]
    x = seeded((1, *a.input_shape))
    tr = a.trace(x, attentions=True, grads=True, target=1)
    xin = a.normalise(x)[:, 0].requires_grad_(True)
    with torch.enable_grad():
        out = a.model(pixel_values=xin, output_attentions=True)
        atts = out.attentions
        grads = torch.autograd.grad(out.logits[0, 1], atts)
    assert len(atts) == len(tr.attentions) == 2
    for r, ref, g in zip(tr.attentions, atts, grads):
        torch.testing.assert_close(r.probs, ref.detach())
        torch.testing.assert_close(r.grad, g)


@pytest.mark.parametrize("name", ["hf_vivit_tiny", "hf_videomae_tiny"])
def test_joint_video_attention_equals_the_models_own_output(tiny_models, name):
    a = tiny_models[name]
    x = seeded((1, *a.input_shape), 1)
    tr = a.trace(x, attentions=True)
    with torch.no_grad():
        out = a.model(pixel_values=a.normalise(x), output_attentions=True)
    assert len(out.attentions) == len(tr.attentions)
    for r, ref in zip(tr.attentions, out.attentions):
        assert r.kind == "global" and r.frames == 2
        torch.testing.assert_close(r.probs, ref)


def test_timesformer_spatial_equals_output_attentions_and_ln_stats(tiny_models):
    a = tiny_models["hf_timesformer_tiny"]
    x = seeded((1, *a.input_shape), 2)
    tr = a.trace(x, attentions=True, ln_stats=True)
    with torch.no_grad():
        out = a.model(pixel_values=a.normalise(x), output_attentions=True)
    assert len(out.attentions) == len(tr.of_kind("spatial")) == 2
    for r, ref in zip(tr.of_kind("spatial"), out.attentions):
        torch.testing.assert_close(r.probs, ref.reshape(1, a.num_frames, *ref.shape[1:]))
    # LN statistics against torch's own layer_norm: (x - mean) / std reproduces F.layer_norm
    layer = a.model.timesformer.encoder.layer[0]
    seen = {}
    h = layer.layernorm_before.register_forward_hook(lambda m, i, o: seen.update(inp=i[0], out=o))
    with torch.no_grad():
        a.predict(x)
    h.remove()
    r = tr.of_kind("spatial")[0]
    mean = r.ln_mean.reshape(-1, r.ln_mean.shape[-1], 1)
    std = r.ln_std.reshape(-1, r.ln_std.shape[-1], 1)
    normed = (seen["inp"] - mean) / std * layer.layernorm_before.weight + layer.layernorm_before.bias
    torch.testing.assert_close(normed, seen["out"], atol=1e-4, rtol=1e-4)


def test_timesformer_temporal_attention_is_uniform_for_a_static_clip():
    """With time embeddings zeroed, identical frames give identical queries/keys: attention 1/T."""
    a = models.create("hf_timesformer", num_frames=4, hidden_size=32, num_hidden_layers=1, num_attention_heads=2)
    with torch.no_grad():
        a.model.timesformer.embeddings.time_embeddings.zero_()
    frame = seeded((3, 64, 64), 3)
    x = frame.expand(4, 3, 64, 64)[None].clone()
    rec = a.trace(x, attentions=True).of_kind("temporal")[0]
    assert rec.probs.shape == (1, 64, 2, 4, 4)
    torch.testing.assert_close(rec.probs, torch.full_like(rec.probs, 0.25))


def _reference_window_to_global(win, h, w, ws, shift):
    """Brute force with the same np.roll the models use."""
    idx = np.roll(np.arange(h * w).reshape(h, w), (-shift, -shift), axis=(0, 1))
    heads = win.shape[2]
    out = np.zeros((heads, h * w, h * w), np.float32)
    k = 0
    for wy in range(h // ws):
        for wx in range(w // ws):
            tok = idx[wy * ws:(wy + 1) * ws, wx * ws:(wx + 1) * ws].reshape(-1)
            for qi, q in enumerate(tok):
                for ki, kk in enumerate(tok):
                    out[:, q, kk] = win[0, k, :, qi, ki]
            k += 1
    return out


@pytest.mark.parametrize("name", ["hf_swin_tiny", "timm_swin_tiny"])
def test_window_to_global_matches_brute_force(tiny_models, name):
    a = tiny_models[name]
    tr = a.trace(seeded((1, *a.input_shape), 4), attentions=True)
    for r in tr.attentions[:2]:
        ref = _reference_window_to_global(r.probs.numpy(), *r.grid, r.window, r.shift)
        got = window_to_global(r.probs, r.grid, r.window, r.shift)[0].numpy()
        np.testing.assert_allclose(got, ref, atol=1e-7)


def test_merge_matrix_averages_two_by_two_blocks():
    M = merge_matrix((4, 4))
    assert M.shape == (4, 16)
    v = torch.arange(16.0)
    # token 0 of the merged grid averages tokens 0, 1, 4, 5 of the 4x4 grid
    assert float(M[0] @ v) == pytest.approx((0 + 1 + 4 + 5) / 4)
    assert float(M[3] @ v) == pytest.approx((10 + 11 + 14 + 15) / 4)


def test_bad_input_shape_and_names(tiny_models):
    a = tiny_models["hf_vit_tiny"]
    with pytest.raises(UserError, match="expects input of shape"):
        a.predict(torch.rand(1, 1, 3, 32, 32))
    with pytest.raises(UserError, match="hf_timesformer"):
        models.create("hf_timesfromer")
    with pytest.raises(UserError, match="no module"):
        a.trace(torch.rand(1, *a.input_shape), capture=["nope"])
    with pytest.raises(UserError, match="target class out of range"):
        a.trace(torch.rand(1, *a.input_shape), target=a.num_classes, grads=True)
    with pytest.raises(UserError, match="precision"):
        a.to(precision="fp8")


def test_token_layout_validates_itself():
    with pytest.raises(ValueError, match="readout"):
        TokenLayout(readout="mean")
    with pytest.raises(ValueError, match="prefix"):
        TokenLayout(prefix=0, readout="cls")
    L = TokenLayout(frames=2, tubelet=2, stages=((4, 4), (2, 2)), prefix=1)
    assert L.grid == (4, 4) and L.n_tokens(0) == 1 + 2 * 16 and L.n_tokens(1) == 1 + 2 * 4


def test_trace_selects_transformer_blocks(tiny_models):
    """``layers`` picks blocks (negative from the end); a divided block yields its temporal and spatial record."""
    a = tiny_models["hf_timesformer_tiny"]
    x = seeded((1, *a.input_shape), 5)
    full = a.trace(x, attentions=True)
    last = a.trace(x, attentions=True, layers=[-1])
    assert [r.name for r in last.attentions] == ["layer1.temporal", "layer1.spatial"] == a.attention_points()[-2:]
    assert [r.layer for r in last.attentions] == [1, 1]
    for r, ref in zip(last.attentions, full.attentions[-2:]):
        torch.testing.assert_close(r.probs, ref.probs)
    assert [r.name for r in a.trace(x, attentions=True, layers=[0]).attentions] == ["layer0.temporal",
                                                                                  "layer0.spatial"]
    swin = tiny_models["hf_swin_tiny"]
    tr = swin.trace(seeded((1, *swin.input_shape), 6), attentions=True, layers=range(-2, 0))
    assert [(r.layer, r.stage) for r in tr.attentions] == [(2, 1), (3, 1)]


def test_passes_are_counted_by_the_adapter(tiny_models):
    a = tiny_models["hf_vit_tiny"]
    x = seeded((5, *a.input_shape), 7)
    with a.counting() as n:
        a.predict(x, batch_size=2)  # 3 batches, 5 inputs
    assert n == {"forward": 5, "backward": 0}
    with a.counting() as n:
        a.trace(x[:3], attentions=True, grads=True)
        a.trace(x[:1], attentions=True)
    assert n == {"forward": 4, "backward": 3}


def test_low_precision_runs_forward_passes_on_a_copy_and_gradients_in_fp32(tiny, tiny_name):
    """precision=bf16: predictions and traces without gradients run a bf16 copy of the weights (the numbers
    change; everything returned is float32, close to fp32: bf16 keeps 8 significant bits, so after a few layers
    the logits move by well under 10 % of their scale and the probabilities by well under 2^-6); traces with
    gradients run the float32 weights, exactly as with fp32.  The float32 weights are never changed.
    (Measured on the tiny models: logits 0.4-4 % of their scale, probabilities at most 2^-10.)"""
    a = tiny
    x = seeded((2, *a.input_shape), 8)
    ref = a.trace(x, attentions=True, grads=True, ln_stats=True, capture=[a.gradcam_layer])
    ref_pred = a.predict(x)
    digest = a.weights_digest()
    try:
        a.to(precision="bf16")
        pred = a.predict(x)
        fwd = a.trace(x, attentions=True, ln_stats=True, capture=[a.gradcam_layer])
        grad = a.trace(x, attentions=True, grads=True, ln_stats=True, capture=[a.gradcam_layer])
        assert pred.dtype == fwd.logits.dtype == fwd.activations[a.gradcam_layer].dtype == torch.float32
        assert all(p.dtype == torch.float32 for p in a.model.parameters())
        assert all(p.dtype == torch.bfloat16 for p in a._lowp.parameters())
        for logits in (pred, fwd.logits):
            diff = (logits - ref_pred).abs().max()
            assert 0 < diff <= 0.1 * ref_pred.abs().max()
        for r, q in zip(fwd.attentions, ref.attentions):
            assert r.probs.dtype == r.ln_std.dtype == torch.float32
            torch.testing.assert_close(r.probs, q.probs, atol=2 ** -6, rtol=0)
        torch.testing.assert_close(grad.logits, ref.logits, atol=0, rtol=0)
        for r, q in zip(grad.attentions, ref.attentions):
            torch.testing.assert_close(r.probs, q.probs, atol=0, rtol=0)
            torch.testing.assert_close(r.grad, q.grad, atol=0, rtol=0)
        torch.testing.assert_close(grad.activation_grads[a.gradcam_layer], ref.activation_grads[a.gradcam_layer],
                                   atol=0, rtol=0)
    finally:
        a.to(precision="fp32")
    assert a.precision == "fp32" and a._lowp is None and a.weights_digest() == digest
    torch.testing.assert_close(a.predict(x), ref_pred, atol=0, rtol=0)


def test_timesformer_reshape_tokens_undoes_the_hf_token_order(tiny_models):
    """HF TimeSformer keeps patch tokens patch-major, frame-minor; reshape_tokens returns (B, T, h, w, D)."""
    a = tiny_models["hf_timesformer_tiny"]
    T, (h, w) = a.num_frames, a.grid
    grid = torch.randn(1, T, h, w, 5, generator=torch.Generator().manual_seed(0))
    # hidden states (B, 1 + h*w*T, D): token 1 + p*T + t holds frame t, patch p
    hs = torch.cat([torch.zeros(1, 1, 5), grid[0].permute(1, 2, 0, 3).reshape(1, h * w * T, 5)], 1)
    torch.testing.assert_close(a.reshape_tokens(hs, 1), grid)
    # per-frame token sets (B*T, 1 + P, D), as layernorm_before of the spatial attention sees them
    per_frame = torch.cat([torch.zeros(T, 1, 5), grid[0].reshape(T, h * w, 5)], 1)
    torch.testing.assert_close(a.reshape_tokens(per_frame, 1), grid)
    with pytest.raises(UserError, match="not a token map"):
        a.reshape_tokens(torch.zeros(1, 7, 5), 1)


def test_describe_names_the_declarations(tiny_models):
    for name, a in tiny_models.items():
        d = a.describe()
        assert d["layout"]["stages"] == [list(s) for s in a.layout.stages]
        assert d["attention_kinds"] == sorted({p.kind for p in a.hook_points()}) and d["name"]
