"""Attribution methods against independent references.

* rollout / chefer / stdnorm: the fast structured propagation against dense
  token-to-token matrices built here (Swin: ``window_to_global`` and
  ``merge_matrix``; TimeSformer: explicit loops), against closed forms for
  uniform / identity attention, and the TimeSformer embedding against the real
  HF layer made linear;
* chefer on a one-layer model against gradients taken by ``torch.autograd``
  of the attentions transformers itself returns;
* gradcam against captum's ``LayerGradCam``;
* SHAP against exact Shapley values by enumeration and the efficiency axiom;
  LIME against the lime package's own ``LimeImageExplainer``.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from xaibench import methods, models
from xaibench.errors import NotApplicable, UserError
from xaibench.methods._relevance import chefer_block, rollout_block, vecmul
from xaibench.models.base import AttentionRecord, Trace
from xaibench.models.tokens import merge_matrix, window_to_global

ARCHS = ["hf_timesformer", "hf_vit", "hf_swin", "timm_vit", "timm_swin"]
ALL_METHODS = ["attention", "rollout", "chefer", "stdnorm", "gradcam", "shap", "lime"]
FAST = {"shap": dict(n_samples=40, batch_size=16), "lime": dict(n_samples=40, batch_size=16)}


# ------------------------------------------------------------------ helpers
class StubAdapter:
    """Adapter whose trace is a hand-built (or pre-recorded, edited) Trace."""

    def __init__(self, arch, trace, num_frames=1, image_size=32, patch_size=8, name="stub"):
        self.arch, self._trace, self.num_frames = arch, trace, num_frames
        self.image_size, self.patch_size, self.name = image_size, patch_size, name

    @property
    def grid(self):
        g = self.image_size // self.patch_size
        return (g, g)

    def trace(self, x, **kw):
        return self._trace


def dense_G(rec, block, T=1, cls_self=0.0, c=None):
    """Embedded global matrix, built entry by entry (independent of _relevance.vecmul).

    ``c``: weight of the frames' CLS-copy rows in the CLS row (1/T: attention; 1: gradient-weighted)."""
    c = 1.0 / T if c is None else c
    if rec.kind == "global":
        return block.clone()
    if rec.kind == "window":
        return window_to_global(block[None], rec.grid, rec.window, rec.shift)[0]
    P = rec.grid[0] * rec.grid[1]
    N = 1 + T * P
    G = torch.zeros(N, N, dtype=block.dtype)
    tok = lambda t, p: 1 + t * P + p  # noqa: E731
    if rec.kind == "temporal":
        G[0, 0] = cls_self
        for p in range(P):
            for t in range(T):
                for t2 in range(T):
                    G[tok(t, p), tok(t2, p)] = block[p, t, t2]
        return G
    for t in range(T):  # spatial
        G[0, 0] += block[t, 0, 0] * c
        for p in range(P):
            G[0, tok(t, p)] = block[t, 0, 1 + p] * c
            G[tok(t, p), 0] = block[t, 1 + p, 0]
            for q in range(P):
                G[tok(t, p), tok(t, q)] = block[t, 1 + p, 1 + q]
    return G


def dense_relevance(recs, blocks, T, residual, cls_self):
    """R = M_L ... M_1 with dense matrices (M = G or I + G), Swin stage changes by merge_matrix."""
    R, prev = None, None
    for rec, blk in zip(recs, blocks):
        G = dense_G(rec, blk, T, cls_self, c=1.0 if residual else None)
        if R is None:
            R = torch.eye(G.shape[0], dtype=G.dtype)
        elif rec.kind == "window" and rec.grid != prev.grid:
            R = merge_matrix(prev.grid, dtype=G.dtype) @ R
        R = R + G @ R if residual else G @ R
        prev = rec
    return R


def readout(R, arch, recs, T, how):
    if arch == "swin" or how != "cls":
        v = R.sum(0) if how in ("sum", "cls") else R.mean(0)
        h, w = recs[0].grid
        return v.view(1, h, w)
    h, w = recs[0].grid
    return R[0, 1:].view(T, h, w) if arch == "timesformer" else R[0, -h * w:].view(1, h, w)


def used(adapter, trace, layers):
    recs = trace.attentions
    per = 2 if adapter.arch == "timesformer" else 1
    return recs if layers is None else recs[-layers * per:]


# ------------------------------------------- dense references on real traces
@pytest.mark.parametrize("name", ARCHS)
def test_rollout_equals_dense_product(tiny_models, name):
    a = tiny_models[name]
    x = torch.rand(*a.input_shape)
    trace = a.trace(x[None], target=1, attentions=True)
    e = methods.create("rollout")(StubAdapter(a.arch, trace, a.num_frames, a.image_size, a.patch_size), x, 1)
    T = a.num_frames
    R = dense_relevance(trace.attentions, [rollout_block(r) for r in trace.attentions], T, False, 1.0)
    ref = readout(R, a.arch, trace.attentions, T, "cls" if a.arch != "swin" else "mean")
    torch.testing.assert_close(e.token_map, ref, rtol=1e-4, atol=1e-6)
    if a.arch != "swin":
        # rows are stochastic: the CLS row over all tokens sums to one
        torch.testing.assert_close(R[0].sum(), torch.tensor(1.0), rtol=1e-5, atol=1e-5)
    else:
        torch.testing.assert_close(e.token_map.sum(), torch.tensor(1.0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ARCHS)
@pytest.mark.parametrize("layers", [None, 1])
def test_chefer_equals_dense_product(tiny_models, name, layers):
    a = tiny_models[name]
    x = torch.rand(*a.input_shape)
    trace = a.trace(x[None], target=2, attentions=True, grads=True)
    stub = StubAdapter(a.arch, trace, a.num_frames, a.image_size, a.patch_size)
    e = methods.create("chefer", layers=layers)(stub, x, 2)
    recs = used(a, trace, layers)
    R = dense_relevance(recs, [chefer_block(r) for r in recs], a.num_frames, True, 0.0)
    ref = readout(R, a.arch, recs, a.num_frames, "cls" if a.arch != "swin" else "sum")
    torch.testing.assert_close(e.token_map, ref, rtol=1e-4, atol=1e-7)
    assert e.n_forward == 1 and e.n_backward == 1


@pytest.mark.parametrize("name", ARCHS)
def test_stdnorm_equals_dense_formula(tiny_models, name):
    a = tiny_models[name]
    x = torch.rand(*a.input_shape)
    trace = a.trace(x[None], target=0, attentions=True, grads=True, ln_stats=True)
    stub = StubAdapter(a.arch, trace, a.num_frames, a.image_size, a.patch_size)
    e = methods.create("stdnorm")(stub, x, 0)
    recs = used(a, trace, 2)
    T = a.num_frames
    blocks = []
    for r in recs:  # W = mean_h((g*A)^+) diag(1/sigma), normalised by the sum of its dense embedding
        s = r.ln_std[0]
        if r.kind == "spatial":  # (T, 1+P): each frame's keys, incl. its CLS copy, scaled inside the frame
            G = dense_G(r, chefer_block(r) / s[:, None, :], T, 0.0, c=1.0)
        else:
            if r.kind == "temporal":  # (P, T) -> our frame-major token order; CLS column is zero anyway
                s = torch.cat([torch.ones(1), s.t().reshape(-1)])
            G = dense_G(r, chefer_block(r), T, 0.0, c=1.0) / s[None, :]
        blocks.append(G / G.sum())
    R = None
    prev = None
    for r, G in zip(recs, blocks):
        if R is None:
            R = torch.eye(G.shape[0])
        elif r.kind == "window" and r.grid != prev.grid:
            R = merge_matrix(prev.grid) @ R
        R = R + G @ R
        prev = r
    ref = readout(R, a.arch, recs, T, "cls" if a.arch != "swin" else "sum")
    torch.testing.assert_close(e.token_map, ref, rtol=1e-4, atol=1e-7)


def test_stdnorm_equal_stds_and_switch_reduce_to_normalised_chefer(tiny_models):
    for name in ARCHS:
        a = tiny_models[name]
        x = torch.rand(*a.input_shape)
        trace = a.trace(x[None], target=1, attentions=True, grads=True, ln_stats=True)
        stub = StubAdapter(a.arch, trace, a.num_frames, a.image_size, a.patch_size)
        nostd = methods.create("stdnorm", use_std=False, layers=None)(stub, x, 1).token_map
        with_std = methods.create("stdnorm", use_std=True, layers=None)(stub, x, 1).token_map
        for r in trace.attentions:
            r.ln_std = torch.full_like(r.ln_std, 0.37)
        equal_std = methods.create("stdnorm", use_std=True, layers=None)(stub, x, 1).token_map
        # normalised Chefer rule by hand (dense): R <- R + (G / sum G) R over all layers
        recs = trace.attentions
        blocks = [chefer_block(r) for r in recs]
        T = a.num_frames
        R, prev = None, None
        for r, b in zip(recs, blocks):
            G = dense_G(r, b, T, 0.0, c=1.0)
            G = G / G.sum()
            if R is None:
                R = torch.eye(G.shape[0])
            elif r.kind == "window" and r.grid != prev.grid:
                R = merge_matrix(prev.grid) @ R
            R = R + G @ R
            prev = r
        ref = readout(R, a.arch, recs, T, "cls" if a.arch != "swin" else "sum")
        torch.testing.assert_close(nostd, ref, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(equal_std, ref, rtol=1e-4, atol=1e-7)
        assert not torch.allclose(with_std, ref, rtol=1e-4, atol=1e-7), name  # real stds differ


# ------------------------------------------------- closed forms, hand-built
def _vit_trace(L, N, probs_fn, grad_fn=None, heads=2):
    recs = []
    for i in range(L):
        p = probs_fn(i).expand(1, heads, N, N).clone()
        g = None if grad_fn is None else grad_fn(i).expand(1, heads, N, N).clone()
        recs.append(AttentionRecord(name=f"l{i}", kind="global", probs=p, grad=g, grid=(4, 4),
                                    ln_std=torch.ones(1, N)))
    return Trace(logits=torch.zeros(1, 3), attentions=recs)


def test_rollout_identity_and_uniform_attention_vit():
    N, L = 17, 3  # CLS + 4x4
    x = torch.rand(1, 3, 32, 32)
    ident = StubAdapter("vit", _vit_trace(L, N, lambda i: torch.eye(N)))
    e = methods.create("rollout")(ident, x, 0)
    # A' = rownorm(I + I) = I, so R = I and R[CLS, patches] = 0 everywhere: a flat map
    assert torch.count_nonzero(e.token_map) == 0
    uni = StubAdapter("vit", _vit_trace(L, N, lambda i: torch.full((N, N), 1.0 / N)))
    e = methods.create("rollout")(uni, x, 0)
    # A' = I/2 + J/(2N)  =>  A'^L = 2^-L I + (1 - 2^-L) J/N  =>  R[0, j] = (1 - 2^-L)/N
    torch.testing.assert_close(e.token_map, torch.full((1, 4, 4), (1 - 2.0 ** -L) / N))
    torch.testing.assert_close(e.volume, torch.full_like(e.volume, (1 - 2.0 ** -L) / N))


def test_rollout_uniform_attention_timesformer_and_swin_is_uniform():
    T, g = 3, 2
    P = g * g
    recs = []
    for i in range(2):
        recs.append(AttentionRecord(name=f"t{i}", kind="temporal", probs=torch.full((1, P, 2, T, T), 1.0 / T),
                                    grid=(g, g), has_cls=False))
        recs.append(AttentionRecord(name=f"s{i}", kind="spatial", probs=torch.full((1, T, 2, 1 + P, 1 + P),
                                                                                    1.0 / (1 + P)), grid=(g, g)))
    stub = StubAdapter("timesformer", Trace(logits=torch.zeros(1, 2), attentions=recs), num_frames=T,
                       image_size=16, patch_size=8)
    e = methods.create("rollout")(stub, torch.rand(T, 3, 16, 16), 0)
    m = e.token_map
    torch.testing.assert_close(m, torch.full_like(m, m.flatten()[0].item()))
    assert m.flatten()[0] > 0
    # Swin: uniform windows over two stages (8x8 -> 4x4), shifted and unshifted
    recs = []
    for grid, shift in [((8, 8), 0), ((8, 8), 2), ((4, 4), 0), ((4, 4), 2)]:
        nW = (grid[0] // 4) * (grid[1] // 4)
        recs.append(AttentionRecord(name="b", kind="window", probs=torch.full((1, nW, 2, 16, 16), 1 / 16),
                                    grid=grid, window=4, shift=shift, has_cls=False))
    stub = StubAdapter("swin", Trace(logits=torch.zeros(1, 2), attentions=recs), image_size=32, patch_size=4)
    e = methods.create("rollout")(stub, torch.rand(1, 3, 32, 32), 0)
    # window-uniform attention plus identity is doubly stochastic: column means stay uniform, 1/64 each
    torch.testing.assert_close(e.token_map, torch.full((1, 8, 8), 1 / 64))


def test_chefer_zero_gradients_gives_identity_readout(tiny_models):
    for name in ARCHS:
        a = tiny_models[name]
        x = torch.rand(*a.input_shape)
        trace = a.trace(x[None], target=0, attentions=True, grads=True)
        for r in trace.attentions:
            r.grad = torch.zeros_like(r.grad)
        stub = StubAdapter(a.arch, trace, a.num_frames, a.image_size, a.patch_size)
        m = methods.create("chefer")(stub, x, 0).token_map
        if a.arch == "swin":
            # R = M_1 ... (merges only): column sums of the merge matrices -> every first-stage token N2/N1
            recs = trace.attentions
            n_last = recs[-1].grid[0] * recs[-1].grid[1]
            n_first = recs[0].grid[0] * recs[0].grid[1]
            torch.testing.assert_close(m, torch.full_like(m, n_last / n_first))
        else:
            assert torch.count_nonzero(m) == 0  # R = I: R[CLS, patches] = 0


def test_chefer_one_layer_vit_by_hand():
    a = models.create("hf_vit", hidden_size=32, num_hidden_layers=1, num_attention_heads=4, seed=3)
    x = torch.rand(*a.input_shape)
    target = 2
    # independent: transformers' returned attentions and torch.autograd.grad
    with torch.enable_grad():
        pix = a.normalise(x[None])[:, 0].requires_grad_(True)  # parameters are frozen by the adapter
        out = a.model(pixel_values=pix, output_attentions=True)
        att = out.attentions[0]
        (g,) = torch.autograd.grad(out.logits[0, target], att)
    abar = (g * att).clamp(min=0).mean(1)[0]  # (N, N)
    expected = abar[0, 1:].reshape(1, *a.grid)  # R = I + Abar, row CLS, patches
    e = methods.create("chefer")(a, x, target)
    torch.testing.assert_close(e.token_map, expected, rtol=1e-4, atol=1e-8)
    assert expected.abs().sum() > 0


def _linearised_timesformer():
    """One HF TimeSformer layer made linear in its tokens (identity norms and value / output
    projections, no MLP, one head): layer_out = (I + G_S)(I + G_T) layer_in exactly."""
    a = models.create("hf_timesformer", num_frames=3, image_size=16, patch_size=8, hidden_size=8,
                      num_hidden_layers=1, num_attention_heads=1, seed=1)
    layer = a.model.timesformer.encoder.layer[0]
    D = 8
    with torch.no_grad():
        for att in (layer.attention, layer.temporal_attention):
            att.attention.qkv.weight[2 * D:] = torch.eye(D)
            if att.attention.qkv.bias is not None:
                att.attention.qkv.bias[2 * D:] = 0
            att.output.dense.weight.copy_(torch.eye(D))
            att.output.dense.bias.zero_()
        layer.temporal_dense.weight.copy_(torch.eye(D))
        layer.temporal_dense.bias.zero_()
        layer.output.dense.weight.zero_()
        layer.output.dense.bias.zero_()
    layer.temporal_layernorm = nn.Identity()
    layer.layernorm_before = nn.Identity()
    layer.layernorm_after = nn.Identity()
    return a, layer


def _frame_major(hs, T, P):
    """HF hidden states (1, 1 + P*T, D), patch-major frame-minor -> (1 + T*P, D) in our order."""
    D = hs.shape[-1]
    return torch.cat([hs[0, :1], hs[0, 1:].view(P, T, D).transpose(0, 1).reshape(T * P, D)])


def _G_from_vecmul(rec, blk, N, cls_rows):
    eye = torch.eye(N)
    return torch.stack([vecmul(rec, eye[i], blk, 0.0, cls_rows) for i in range(N)])  # row i = e_i^T G


def test_timesformer_embedding_matches_linearised_hf_layer():
    a, layer = _linearised_timesformer()
    io = {}
    h = layer.register_forward_hook(lambda m, i, o: io.update(i=i[0].detach(), o=o[0].detach()))
    x = torch.rand(*a.input_shape)
    trace = a.trace(x[None], attentions=True)
    h.remove()
    T, P = 3, 4
    N = 1 + T * P
    rt, rs = trace.attentions
    Gt = _G_from_vecmul(rt, rt.probs[0].mean(1), N, "mean")
    Gs = _G_from_vecmul(rs, rs.probs[0].mean(1), N, "mean")
    eye = torch.eye(N)
    expected = (eye + Gs) @ (eye + Gt) @ _frame_major(io["i"], T, P)
    torch.testing.assert_close(_frame_major(io["o"], T, P), expected, rtol=1e-4, atol=1e-5)
    # and vecmul agrees with the entry-by-entry construction
    torch.testing.assert_close(Gs, dense_G(rs, rs.probs[0].mean(1), T))
    torch.testing.assert_close(Gt, dense_G(rt, rt.probs[0].mean(1), T))


def test_timesformer_gradient_weighted_embedding_is_G_times_dG():
    """The Chefer/stdnorm embedding of ``grad_A * A`` (CLS row summed over frames) equals
    ``G * dy/dG`` for the layer's true mixing matrices, dy/dG by the chain rule through
    layer_out = (I + G_S)(I + G_T) layer_in with dy/d layer_out taken from the real model."""
    a, layer = _linearised_timesformer()
    name = "timesformer.encoder.layer.0"
    io = {}
    h = layer.register_forward_hook(lambda m, i, o: io.update(i=i[0].detach()))
    x = torch.rand(*a.input_shape)
    trace = a.trace(x[None], target=1, attentions=True, grads=True, capture=[name])
    h.remove()
    T, P = 3, 4
    N = 1 + T * P
    rt, rs = trace.attentions
    Gt = dense_G(rt, rt.probs[0].mean(1), T)
    Gs = dense_G(rs, rs.probs[0].mean(1), T)
    X = _frame_major(io["i"], T, P)
    gout = _frame_major(trace.activation_grads[name], T, P)  # dy / d layer_out
    eye = torch.eye(N)
    dGs = gout @ ((eye + Gt) @ X).t()  # y depends on G_S through (I + G_S) Z, Z = (I + G_T) X
    dGt = ((eye + Gs).t() @ gout) @ X.t()
    mask_s, mask_t = Gs != 0, Gt != 0  # entries that are variables of the layer
    ours_s = _G_from_vecmul(rs, (rs.grad[0] * rs.probs[0]).mean(1), N, "sum")
    ours_t = _G_from_vecmul(rt, (rt.grad[0] * rt.probs[0]).mean(1), N, "sum")
    torch.testing.assert_close(ours_s[mask_s], (Gs * dGs)[mask_s], rtol=1e-3, atol=1e-7)
    torch.testing.assert_close(ours_t[mask_t], (Gt * dGt)[mask_t], rtol=1e-3, atol=1e-7)
    assert (Gs * dGs)[0].abs().sum() > 0


# ------------------------------------------------------------------ Grad-CAM
class _Tap(nn.Module):
    def forward(self, t):
        return t


def _captum_gradcam(a, x, target, layer_name, to_grid, from_grid):
    """captum LayerGradCam on an identity module spliced after ``layer_name`` whose output is the
    reshaped token grid (B', D, ...)."""
    from captum.attr import LayerGradCam

    tap = _Tap()
    mod = dict(a.model.named_modules())[layer_name]

    def hook(m, i, o):
        t = o[0] if isinstance(o, tuple) else o
        return from_grid(tap(to_grid(t)), t)

    h = mod.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            cam = LayerGradCam(lambda inp: a._run(a.normalise(inp)), tap).attribute(
                x[None].clone().requires_grad_(True), target=target, relu_attributions=True)
    finally:
        h.remove()
    return cam.detach()


def test_gradcam_matches_captum_images(tiny_models):
    for name in ["hf_vit", "timm_vit", "hf_swin", "timm_swin"]:
        a = tiny_models[name]
        x = torch.rand(*a.input_shape)
        e = methods.create("gradcam")(a, x, 1)
        h, w = e.token_map.shape[1:]

        def to_grid(t):  # (1, k + h*w, D) -> (1, D, h, w)
            return t[:, -h * w:].transpose(1, 2).reshape(1, -1, h, w)

        def from_grid(gr, t):
            return torch.cat([t[:, : t.shape[1] - h * w], gr.reshape(1, t.shape[-1], h * w).transpose(1, 2)], 1)

        cam = _captum_gradcam(a, x, 1, a.gradcam_layer, to_grid, from_grid)
        torch.testing.assert_close(e.token_map, cam[0], rtol=1e-4, atol=1e-7)
        assert cam.abs().sum() > 0, name


@pytest.mark.parametrize("pool", ["frame", "clip"])
def test_gradcam_matches_captum_timesformer(tiny_models, pool):
    a = tiny_models["hf_timesformer"]
    x = torch.rand(*a.input_shape)
    T, (h, w) = a.num_frames, a.grid
    e = methods.create("gradcam", pool=pool)(a, x, 3)

    def to_grid(t):  # layernorm_before output (T, 1 + P, D)
        g = t[:, 1:].reshape(T, h, w, -1).permute(0, 3, 1, 2)  # (T, D, h, w): captum pools per frame
        return g if pool == "frame" else g.permute(1, 0, 2, 3)[None]  # (1, D, T, h, w): pools the clip

    def from_grid(gr, t):
        g = gr if pool == "frame" else gr[0].permute(1, 0, 2, 3)
        return torch.cat([t[:, :1], g.permute(0, 2, 3, 1).reshape(T, h * w, -1)], 1)

    cam = _captum_gradcam(a, x, 3, a.gradcam_layer, to_grid, from_grid)
    ref = cam[:, 0] if pool == "frame" else cam[0, 0]
    torch.testing.assert_close(e.token_map, ref, rtol=1e-4, atol=1e-7)


def test_gradcam_hidden_state_token_order():
    from xaibench.methods.gradcam import tokens_to_grid

    a = StubAdapter("timesformer", None, num_frames=3, image_size=16, patch_size=8)
    grid = torch.randn(3, 2, 2, 5)  # (T, h, w, D)
    # HF TimesformerLayer: hidden (B, 1 + h*w*T, D) = reshape(B, h, w, T, D) of the patch tokens
    hs = torch.cat([torch.zeros(1, 1, 5), grid.permute(1, 2, 0, 3).reshape(1, 12, 5)], 1)
    torch.testing.assert_close(tokens_to_grid(hs, a), grid)
    per_frame = torch.cat([torch.zeros(3, 1, 5), grid.reshape(3, 4, 5)], 1)
    torch.testing.assert_close(tokens_to_grid(per_frame, a), grid)


def test_gradcam_bad_layer_is_user_error(tiny_models):
    a = tiny_models["hf_vit"]
    with pytest.raises(UserError, match="no module"):
        methods.create("gradcam", layer="nope")(a, torch.rand(*a.input_shape), 0)
    with pytest.raises(UserError, match="pool"):
        methods.create("gradcam", pool="nope")


# ------------------------------------------------------------- SHAP and LIME
def _brute_force_shapley(f, M):
    """Exact Shapley values by enumerating all coalitions."""
    vals = {}
    for bits in itertools.product([0, 1], repeat=M):
        vals[bits] = float(f(np.array([bits], dtype=float))[0])
    phi = np.zeros(M)
    for i in range(M):
        for bits, v in vals.items():
            if bits[i]:
                continue
            s = sum(bits)
            with_i = list(bits)
            with_i[i] = 1
            w = math.factorial(s) * math.factorial(M - s - 1) / math.factorial(M)
            phi[i] += w * (vals[tuple(with_i)] - v)
    return phi


def test_shap_exact_on_small_feature_set_and_efficiency(tiny_models):
    from xaibench.methods._perturbation import FeatureConfig, make_masked_model

    a = tiny_models["hf_vit"]
    x = torch.rand(*a.input_shape)
    # 2x2 grid of 32-px cells: M = 4, KernelExplainer enumerates every coalition -> exact Shapley values
    e = methods.create("shap", cell=32, n_samples=100)(a, x, 2)
    f, ids = make_masked_model(a, x, 2, FeatureConfig(cell=32), 8, 0)
    exact = _brute_force_shapley(f, 4)
    got = np.array([e.volume[0, 0, 0], e.volume[0, 0, 32], e.volume[0, 32, 0], e.volume[0, 32, 32]], dtype=float)
    np.testing.assert_allclose(got, exact, rtol=1e-4, atol=1e-5)
    fx, fb = a.predict(torch.stack([x, torch.zeros_like(x)]))[:, 2].tolist()
    np.testing.assert_allclose(exact.sum(), fx - fb, rtol=1e-4, atol=1e-5)
    assert e.n_forward == 14 + 2  # 2^4 - 2 coalitions, f(x), f(baseline)


@pytest.mark.parametrize("name", ["hf_timesformer", "hf_swin"])
def test_shap_efficiency_sampled(tiny_models, name):
    a = tiny_models[name]
    x = torch.rand(*a.input_shape)
    e = methods.create("shap", n_samples=60, batch_size=16, seed=3)(a, x, 1)
    fx, fb = a.predict(torch.stack([x, torch.zeros_like(x)]))[:, 1].tolist()
    # feature values sum to f(x) - f(baseline); frame scores split them over the frames
    np.testing.assert_allclose(float(e.frame_scores.double().sum()), fx - fb, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(e.extras["expected_value"].reshape(()).float(), torch.tensor(fb), rtol=1e-5,
                               atol=1e-6)
    assert e.n_forward == 62


@pytest.mark.parametrize("method", ["shap", "lime"])
def test_perturbation_methods_seeded(tiny_models, method):
    a = tiny_models["hf_timesformer"]
    x = torch.rand(*a.input_shape)
    state = np.random.get_state()
    e1 = methods.create(method, n_samples=30, batch_size=7, seed=5)(a, x, 0)
    e2 = methods.create(method, n_samples=30, batch_size=30, seed=5)(a, x, 0)
    e3 = methods.create(method, n_samples=30, batch_size=7, seed=6)(a, x, 0)
    torch.testing.assert_close(e1.volume, e2.volume, rtol=1e-5, atol=1e-6)  # batch size never matters
    assert not torch.allclose(e1.volume, e3.volume)
    assert e1.n_forward == (32 if method == "shap" else 30)
    after = np.random.get_state()
    assert after[0] == state[0] and np.array_equal(after[1], state[1])  # global RNG untouched


def test_lime_equals_lime_image_explainer(tiny_models):
    from lime.lime_image import LimeImageExplainer

    a = tiny_models["hf_vit"]
    x = torch.rand(*a.input_shape)
    target, n = 3, 60
    e = methods.create("lime", n_samples=n, seed=11, batch_size=10)(a, x, target)
    from xaibench.methods._perturbation import FeatureConfig, feature_mask

    seg = feature_mask(a, x, FeatureConfig()).numpy()[0]

    def classifier(imgs):  # (n, H, W, 3) -> logits
        t = torch.from_numpy(np.ascontiguousarray(imgs)).float().permute(0, 3, 1, 2)[:, None]
        return a.predict(t, batch_size=10).numpy()

    expl = LimeImageExplainer(kernel_width=0.25, feature_selection="none", random_state=11).explain_instance(
        x[0].permute(1, 2, 0).numpy().astype(np.float64), classifier, labels=(target,), top_labels=None,
        hide_color=0, num_samples=n, batch_size=10, segmentation_fn=lambda img: seg,
        random_seed=0)  # given, so the explainer draws nothing before its coalitions
    ref = np.zeros(seg.max() + 1)
    for k, wgt in expl.local_exp[target]:
        ref[k] = wgt
    got = e.volume[0].numpy()
    np.testing.assert_allclose(got, ref[seg], rtol=1e-3, atol=1e-5)
    assert e.n_forward == n


def test_feature_masks():
    from xaibench.methods._perturbation import FeatureConfig, feature_mask

    a = StubAdapter("timesformer", None, num_frames=4, image_size=32, patch_size=8)
    ids = feature_mask(a, torch.rand(4, 3, 32, 32), FeatureConfig(frames_per_group=2))
    assert int(ids.max()) + 1 == 16 * 2
    assert torch.equal(ids[0], ids[1]) and not torch.equal(ids[1], ids[2])
    assert torch.equal(ids[0, :8, :8], torch.zeros(8, 8, dtype=torch.long))
    slic = feature_mask(a, torch.rand(4, 3, 32, 32), FeatureConfig(features="slic", n_segments=12))
    assert slic.shape == (4, 32, 32) and torch.equal(torch.unique(slic), torch.arange(int(slic.max()) + 1))
    with pytest.raises(UserError, match="cell"):
        feature_mask(a, torch.rand(4, 3, 32, 32), FeatureConfig(cell=7))
    with pytest.raises(UserError, match="features"):
        FeatureConfig(features="voronoi")


# ------------------------------------------------------ every method, every arch
@pytest.mark.parametrize("name", ARCHS)
@pytest.mark.parametrize("method", ALL_METHODS)
def test_every_method_every_architecture(tiny_models, name, method):
    a = tiny_models[name]
    x = torch.rand(*a.input_shape)
    e = methods.create(method, **FAST.get(method, {}))(a, x, 1)
    T = a.num_frames
    assert e.volume.shape == (T, a.image_size, a.image_size)
    assert e.frame_scores.shape == (T,)
    assert e.token_map.dim() == 3 and e.token_map.shape[0] == T
    assert torch.isfinite(e.volume).all() and torch.isfinite(e.frame_scores).all()
    assert torch.isfinite(e.token_map).all()
    assert e.volume.abs().sum() > 0
    assert e.n_forward >= 1


def test_bad_parameters_are_user_errors(tiny_models):
    a = tiny_models["hf_vit"]
    with pytest.raises(UserError, match="layers"):
        methods.create("chefer", layers=7)(a, torch.rand(*a.input_shape), 0)
    with pytest.raises(UserError, match="n_samples"):
        methods.create("shap", n_samples=0)
    with pytest.raises(UserError, match="unexpected keyword"):
        methods.create("rollout", lambda_=3)


def test_not_applicable_architecture():
    e = methods.create("rollout")
    with pytest.raises(NotApplicable, match="convnet"):
        e(StubAdapter("convnet", None), torch.rand(1, 3, 32, 32), 0)


def test_method_configs_load():
    from pathlib import Path

    import yaml

    conf = Path(__file__).resolve().parents[1] / "conf" / "method"
    for name in ["attention", "rollout", "chefer", "stdnorm", "stdnorm_nostd", "gradcam", "shap", "lime"]:
        cfg = yaml.safe_load((conf / f"{name}.yaml").read_text())
        m = methods.create(cfg.pop("name"), **cfg)
        if name == "stdnorm_nostd":
            assert m.params()["use_std"] is False
