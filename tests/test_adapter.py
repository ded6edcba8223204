import numpy as np
import pytest
import torch

from xaibench import models
from xaibench.errors import UserError
from xaibench.models.tokens import merge_matrix, window_to_global

ARCHS = ["hf_timesformer", "hf_vit", "hf_swin", "timm_vit", "timm_swin"]


@pytest.mark.parametrize("name", ARCHS)
def test_trace_shapes_and_probabilities(tiny_models, name):
    a = tiny_models[name]
    x = torch.rand(2, *a.input_shape)
    tr = a.trace(x, attentions=True, grads=True, ln_stats=True, capture=[a.gradcam_layer])
    assert tr.logits.shape == (2, a.num_classes)
    torch.testing.assert_close(tr.logits, a.predict(x), atol=1e-5, rtol=1e-4)
    T, (h, w) = a.num_frames, a.grid
    kinds = [r.kind for r in tr.attentions]
    if a.arch == "timesformer":
        assert kinds == ["temporal", "spatial"] * 2
        for r in tr.attentions:
            shape = (2, h * w, 2, T, T) if r.kind == "temporal" else (2, T, 2, 1 + h * w, 1 + h * w)
            assert tuple(r.probs.shape) == shape
            assert r.ln_std.shape == r.probs.shape[:2] + (r.probs.shape[-1],)
    elif a.arch == "vit":
        assert kinds == ["global"] * 2
        assert all(tuple(r.probs.shape) == (2, 2, 1 + h * w, 1 + h * w) for r in tr.attentions)
    else:
        assert kinds == ["window"] * 4
        assert [r.shift for r in tr.attentions] == [0, 2, 0, 2] and [r.grid for r in tr.attentions][2] == (8, 8)
        assert tuple(tr.attentions[0].probs.shape) == (2, 16, 2, 16, 16)
    for r in tr.attentions:
        torch.testing.assert_close(r.probs.sum(-1), torch.ones_like(r.probs.sum(-1)))
        assert r.grad is not None and r.grad.shape == r.probs.shape and torch.isfinite(r.grad).all()
        assert r.ln_std is not None and (r.ln_std > 0).all()
    assert tr.activation_grads[a.gradcam_layer].shape == tr.activations[a.gradcam_layer].shape


def test_hf_vit_attention_equals_the_models_own_output(tiny_models):
    """Hooked probabilities and their gradients match what transformers returns itself."""
    a = tiny_models["hf_vit"]
    x = torch.rand(1, *a.input_shape)
    tr = a.trace(x, attentions=True, grads=True, target=1)
    xin = a.normalise(x)[:, 0].requires_grad_(True)
    out = a.model(pixel_values=xin, output_attentions=True)
    atts = out.attentions
    grads = torch.autograd.grad(out.logits[0, 1], atts)
    for r, ref, g in zip(tr.attentions, atts, grads):
        torch.testing.assert_close(r.probs, ref.detach())
        torch.testing.assert_close(r.grad, g)


def test_timesformer_spatial_equals_output_attentions_and_ln_stats(tiny_models):
    a = tiny_models["hf_timesformer"]
    x = torch.rand(1, *a.input_shape)
    tr = a.trace(x, attentions=True, ln_stats=True)
    with torch.no_grad():
        out = a.model(pixel_values=a.normalise(x), output_attentions=True)
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
    frame = torch.rand(3, 64, 64)
    x = frame.expand(4, 3, 64, 64)[None].clone()
    rec = a.trace(x, attentions=True).of_kind("temporal")[0]
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


@pytest.mark.parametrize("name", ["hf_swin", "timm_swin"])
def test_window_to_global_matches_brute_force(tiny_models, name):
    a = tiny_models[name]
    tr = a.trace(torch.rand(1, *a.input_shape), attentions=True)
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
    a = tiny_models["hf_vit"]
    with pytest.raises(UserError, match="expects input of shape"):
        a.predict(torch.rand(1, 1, 3, 32, 32))
    with pytest.raises(UserError, match="hf_timesformer"):
        models.create("hf_timesfromer")
    with pytest.raises(UserError, match="no module"):
        a.trace(torch.rand(1, *a.input_shape), capture=["nope"])


def test_trace_can_record_only_selected_layers(tiny_models):
    a = tiny_models["hf_timesformer"]
    x = torch.rand(1, *a.input_shape)
    full = a.trace(x, attentions=True)
    last = a.trace(x, attentions=True, layers=range(-2, 0))
    assert [r.name for r in last.attentions] == a.attention_points()[-2:] == ["layer1.temporal", "layer1.spatial"]
    for r, ref in zip(last.attentions, full.attentions[-2:]):
        torch.testing.assert_close(r.probs, ref.probs)
