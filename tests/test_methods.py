"""Attribution methods against independent references, on every tiny model.

* rollout / chefer / stdnorm: the batched structured propagation against dense
  token-to-token matrices built here (Swin: ``window_to_global`` and
  ``merge_matrix``; TimeSformer: explicit loops; readouts written out from the
  layout), against closed forms for uniform / identity attention, and the
  TimeSformer embedding against the real HF layer made linear;
* chefer on a one-layer model against gradients taken by ``torch.autograd``
  of the attentions transformers itself returns;
* Grad-CAM against captum's ``LayerGradCam`` (activations) and against the
  per-head formula on transformers' attentions (attention source);
* SHAP against exact Shapley values by enumeration and the efficiency axiom;
  LIME against the lime package's own ``LimeImageExplainer``; the budget rule;
* every registered method on every tiny model: shapes, finiteness, the passes
  the adapter counts, and batched explanations equal to one-at-a-time ones.
"""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
from conftest import check_explanation
import torch
from torch import nn

from xaibench import methods, models
from xaibench.run.plan import component, conf_dir
from xaibench.datasets.base import Sample
from xaibench.errors import NotApplicable, UserError
from xaibench.methods.base import Method
from xaibench.methods._relevance import vecmul
from xaibench.models.base import AttentionRecord, TokenLayout, Trace
from dense_tokens import merge_matrix, window_to_global
from xaibench.perturb import FeatureSpec, feature_ids

#: methods documented to run on every model (the others may declare NotApplicable with a reason)
ANY_MODEL = {"attention", "rollout", "chefer", "stdnorm", "gradcam", "shap", "lime", "staa", "control_random",
             "control_constant", "control_gt", "control_gt_inverted"}
#: small budgets; ``coarsen`` makes the budget rule pick features these budgets can afford
FAST = {"shap": dict(n_samples=32, batch_size=64, budget="coarsen"),
        "lime": dict(n_samples=32, batch_size=64, budget="coarsen")}


def seeded(shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def fresh(tiny_models, name):
    a = tiny_models[name]
    a.cache.clear()
    return a


# ------------------------------------------------------------------ dense references (written independently)
def dense_G(rec, block, cls_self=0.0, c=None):
    """One sample's embedded token-to-token matrix, built entry by entry (independent of ``vecmul``).

    ``c``: weight of the frames' CLS-copy rows in the CLS row (1/T: attention; 1: gradient-weighted)."""
    T = rec.frames
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


def dense_product(recs, Gs, residual):
    """R = M_L ... M_1 (M = G or I + G), ``merge_matrix`` at stage changes (Swin patch merging)."""
    R, prev = None, None
    for rec, G in zip(recs, Gs):
        if R is None:
            R = torch.eye(G.shape[0], dtype=G.dtype)
        elif rec.stage != prev.stage:
            R = merge_matrix(prev.grid, dtype=G.dtype) @ R
        R = R + G @ R if residual else G @ R
        prev = rec
    return R


def readout_row(layout, n, pool):
    """The classifier's readout row over a stage token vector of length ``n``."""
    v = torch.zeros(n, dtype=torch.float64)
    w = layout.readout.weights  # declared weights per token group (xaibench.models.card.Readout)
    v[0] += w.get("cls", 0.0)
    if "dist" in w:
        v[1] += w["dist"]
    if "patches" in w:  # the mean over the patches; Chefer's column sums (pool="sum") for a patches-only readout
        v[layout.prefix:] += w["patches"] / (n - layout.prefix) if pool == "mean" or len(w) > 1 else w["patches"]
    return v


def token_map(layout, R, first, pool):
    """Readout row of ``R`` on the patch tokens of the first used record, as (T', h, w)."""
    row = readout_row(layout, R.shape[0], pool) @ R
    k = 0 if first.kind == "window" else first.prefix
    return row[k:].reshape(first.frames, *first.grid), row


def mean_heads(t):
    return t.mean(-3).double()


def rollout_G(rec):  # rownorm(mean_h A + I), for one sample
    a = mean_heads(rec.probs[0])
    a = a + torch.eye(a.shape[-1], dtype=a.dtype)
    return dense_G(rec, a / a.sum(-1, keepdim=True), cls_self=1.0)


def chefer_weights(rec):  # mean_h((grad * A)^+), for one sample
    return mean_heads((rec.grad[0] * rec.probs[0]).clamp(min=0))


# ------------------------------------------------------------------ propagation methods on real traces
def test_rollout_equals_dense_product(tiny, tiny_name):
    a = tiny
    x = seeded(a.input_shape, 1)
    with a.counting() as n:
        e = methods.create("rollout")(a, x, 1)
    assert n == {"forward": 1, "backward": 0}
    tr = a.trace(x[None], target=1, attentions=True)
    R = dense_product(tr.attentions, [rollout_G(r) for r in tr.attentions], residual=False)
    ref, row = token_map(a.layout, R, tr.attentions[0], "mean")
    torch.testing.assert_close(e.token_map, ref.float(), rtol=1e-4, atol=1e-6)
    # rows are stochastic and the readout row sums to one, so the relevance over all tokens sums to one
    torch.testing.assert_close(row.sum(), torch.tensor(1.0, dtype=torch.float64), rtol=1e-5, atol=1e-5)
    if a.layout.prefix == 0:
        torch.testing.assert_close(e.token_map.sum(), torch.tensor(1.0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layers", [None, 1])
def test_chefer_equals_dense_product(tiny, tiny_name, layers):
    a = tiny
    x = seeded(a.input_shape, 2)
    with a.counting() as n:
        e = methods.create("chefer", layers=layers)(a, x, 2)
    assert n == {"forward": 1, "backward": 1}
    tr = a.trace(x[None], target=2, attentions=True, grads=True)
    recs = tr.attentions if layers is None else [r for r in tr.attentions if r.layer >= a.num_layers - layers]
    R = dense_product(recs, [dense_G(r, chefer_weights(r), 0.0, c=1.0) for r in recs], residual=True)
    ref, _ = token_map(a.layout, R, recs[0], "sum")
    torch.testing.assert_close(e.token_map, ref.float(), rtol=1e-4, atol=1e-7)


def stdnorm_G(r, use_std=True):
    """W = mean_h((g*A)^+) diag(1/sigma), divided by the sum of its dense embedding."""
    w = chefer_weights(r)
    if not use_std:
        G = dense_G(r, w, 0.0, c=1.0)
        return G / G.sum()
    s = r.ln_std[0].double()
    if r.kind == "spatial":  # (T, 1+P): each frame's keys, incl. its CLS copy, scaled inside the frame
        G = dense_G(r, w / s[:, None, :], 0.0, c=1.0)
    else:
        if r.kind == "temporal":  # (P, T) -> frame-major token order; the CLS column is zero anyway
            s = torch.cat([torch.ones(1, dtype=s.dtype), s.t().reshape(-1)])
        G = dense_G(r, w, 0.0, c=1.0) / s[None, :]  # global: (n,); window: (h*w,) unshifted row-major
    return G / G.sum()


def test_stdnorm_equals_dense_formula(tiny, tiny_name):
    a = tiny
    x = seeded(a.input_shape, 3)
    e = methods.create("stdnorm")(a, x, 0)
    tr = a.trace(x[None], target=0, attentions=True, grads=True, ln_stats=True)
    recs = [r for r in tr.attentions if r.layer >= a.num_layers - 2]  # default: the last two layers
    R = dense_product(recs, [stdnorm_G(r) for r in recs], residual=True)
    ref, _ = token_map(a.layout, R, recs[0], "sum")
    torch.testing.assert_close(e.token_map, ref.float(), rtol=1e-4, atol=1e-7)


def test_stdnorm_equal_stds_and_switch_reduce_to_normalised_chefer(tiny, tiny_name):
    a = tiny
    x = seeded(a.input_shape, 4)
    tr = a.trace(x[None], target=1, attentions=True, grads=True, ln_stats=True)
    nostd = methods.create("stdnorm", use_std=False, layers=None).explain_trace(a, tr)[0].token_map
    with_std = methods.create("stdnorm", use_std=True, layers=None).explain_trace(a, tr)[0].token_map
    R = dense_product(tr.attentions, [stdnorm_G(r, use_std=False) for r in tr.attentions], residual=True)
    ref, _ = token_map(a.layout, R, tr.attentions[0], "sum")
    torch.testing.assert_close(nostd, ref.float(), rtol=1e-4, atol=1e-7)
    for r in tr.attentions:
        r.ln_std = torch.full_like(r.ln_std, 0.37)
    equal_std = methods.create("stdnorm", use_std=True, layers=None).explain_trace(a, tr)[0].token_map
    torch.testing.assert_close(equal_std, ref.float(), rtol=1e-4, atol=1e-7)
    assert not torch.allclose(with_std, ref.float(), rtol=1e-4, atol=1e-7)  # the real stds differ


def test_chefer_zero_gradients_gives_identity_readout(tiny, tiny_name):
    a = tiny
    x = seeded(a.input_shape, 5)
    tr = a.trace(x[None], target=0, attentions=True, grads=True)
    for r in tr.attentions:
        r.grad = torch.zeros_like(r.grad)
    m = methods.create("chefer").explain_trace(a, tr)[0].token_map
    recs = tr.attentions
    if a.layout.readout == "pool":
        # R = merges only; the summed readout's column sums give every first-stage token N_last / N_first
        n_last = recs[-1].grid[0] * recs[-1].grid[1]
        n_first = recs[0].grid[0] * recs[0].grid[1]
        torch.testing.assert_close(m, torch.full_like(m, n_last / n_first))
    elif "patches" in a.layout.readout.weights:  # R = I: the readout row itself, w_patches / P on every patch
        torch.testing.assert_close(m, torch.full_like(m, a.layout.readout.weights["patches"] / m[0].numel()))
    else:
        assert torch.count_nonzero(m) == 0  # R = I: the prefix rows hold no patch relevance


# ------------------------------------------------- closed forms, hand-built records
class StubAdapter:
    """An adapter whose trace is a hand-built Trace (methods read only the declarations)."""

    def __init__(self, layout, trace, image_size, num_layers, name="stub"):
        self.layout, self._trace, self.image_size, self.num_layers, self.name = \
            layout, trace, image_size, num_layers, name

    def trace(self, x, **kw):
        return self._trace


def _vit_trace(L, N, probs_fn, grad_fn=None, heads=2):
    recs = []
    for i in range(L):
        p = probs_fn(i).expand(1, heads, N, N).clone()
        g = None if grad_fn is None else grad_fn(i).expand(1, heads, N, N).clone()
        recs.append(AttentionRecord(name=f"l{i}", kind="global", layer=i, stage=0, grid=(4, 4), frames=1, prefix=1,
                                    probs=p, grad=g, ln_std=torch.ones(1, N)))
    return Trace(logits=torch.zeros(1, 3), attentions=recs)


VIT_LAYOUT = TokenLayout(frames=1, stages=((4, 4),), prefix=1, readout="cls")


def test_rollout_identity_and_uniform_attention_vit():
    N, L = 17, 3  # CLS + 4x4
    x = torch.rand(1, 3, 32, 32)
    ident = StubAdapter(VIT_LAYOUT, _vit_trace(L, N, lambda i: torch.eye(N)), 32, L)
    e = methods.create("rollout")(ident, x, 0)
    # A' = rownorm(I + I) = I, so R = I and R[CLS, patches] = 0 everywhere: a flat map
    assert torch.count_nonzero(e.token_map) == 0
    uni = StubAdapter(VIT_LAYOUT, _vit_trace(L, N, lambda i: torch.full((N, N), 1.0 / N)), 32, L)
    e = methods.create("rollout")(uni, x, 0)
    # A' = I/2 + J/(2N)  =>  A'^L = 2^-L I + (1 - 2^-L) J/N  =>  R[0, j] = (1 - 2^-L)/N
    torch.testing.assert_close(e.token_map, torch.full((1, 4, 4), (1 - 2.0 ** -L) / N))
    torch.testing.assert_close(e.volume, torch.full_like(e.volume, (1 - 2.0 ** -L) / N))


def test_rollout_uniform_attention_timesformer_and_swin_is_uniform():
    T, g = 3, 2
    P = g * g
    recs = []
    for i in range(2):
        recs.append(AttentionRecord(name=f"t{i}", kind="temporal", layer=i, stage=0, grid=(g, g), frames=T, prefix=1,
                                    probs=torch.full((1, P, 2, T, T), 1.0 / T)))
        recs.append(AttentionRecord(name=f"s{i}", kind="spatial", layer=i, stage=0, grid=(g, g), frames=T, prefix=1,
                                    probs=torch.full((1, T, 2, 1 + P, 1 + P), 1.0 / (1 + P))))
    layout = TokenLayout(frames=T, stages=((g, g),), prefix=1, readout="cls")
    stub = StubAdapter(layout, Trace(logits=torch.zeros(1, 2), attentions=recs), 16, 2)
    m = methods.create("rollout")(stub, torch.rand(T, 3, 16, 16), 0).token_map
    assert m.shape == (T, g, g)
    torch.testing.assert_close(m, torch.full_like(m, m.flatten()[0].item()))
    assert m.flatten()[0] > 0
    # Swin: uniform windows over two stages (8x8 -> 4x4), shifted and unshifted
    recs = []
    for i, (stage, grid, shift) in enumerate([(0, (8, 8), 0), (0, (8, 8), 2), (1, (4, 4), 0), (1, (4, 4), 2)]):
        nW = (grid[0] // 4) * (grid[1] // 4)
        recs.append(AttentionRecord(name=f"b{i}", kind="window", layer=i, stage=stage, grid=grid, frames=1,
                                    prefix=0, probs=torch.full((1, nW, 2, 16, 16), 1 / 16), window=4, shift=shift))
    layout = TokenLayout(frames=1, stages=((8, 8), (4, 4)), prefix=0, readout="pool")
    stub = StubAdapter(layout, Trace(logits=torch.zeros(1, 2), attentions=recs), 32, 4)
    e = methods.create("rollout")(stub, torch.rand(1, 3, 32, 32), 0)
    # window-uniform attention plus identity is doubly stochastic: column means stay uniform, 1/64 each
    torch.testing.assert_close(e.token_map, torch.full((1, 8, 8), 1 / 64))


def test_deit_readout_is_the_mean_of_its_prefix_rows():
    """prefix_mean (CLS and distillation token): rollout of one layer is the mean of rows 0 and 1 of A'."""
    N = 2 + 16
    A = torch.rand(N, N, generator=torch.Generator().manual_seed(0))
    A = A / A.sum(1, keepdim=True)
    rec = AttentionRecord(name="l0", kind="global", layer=0, stage=0, grid=(4, 4), frames=1, prefix=2,
                          probs=A.expand(1, 2, N, N).clone())
    layout = TokenLayout(frames=1, stages=((4, 4),), prefix=2, readout="prefix_mean")
    stub = StubAdapter(layout, Trace(logits=torch.zeros(1, 2), attentions=[rec]), 32, 1)
    m = methods.create("rollout")(stub, torch.rand(1, 3, 32, 32), 0).token_map
    Ap = (A + torch.eye(N)) / 2
    torch.testing.assert_close(m, ((Ap[0] + Ap[1]) / 2)[2:].reshape(1, 4, 4))


def test_chefer_one_layer_vit_by_hand():
    a = models.create("hf_vit", hidden_size=32, num_hidden_layers=1, num_attention_heads=4, seed=3)
    x = seeded(a.input_shape, 6)
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


def _linearised_timesformer(uniform_spatial=False):
    """One HF TimeSformer layer made linear in its tokens (identity norms and value / output
    projections, no MLP, one head): layer_out = (I + G_S)(I + G_T) layer_in exactly.

    ``uniform_spatial``: zero query / key weights of the spatial attention, so that G_S (uniform inside each
    frame) does not depend on G_T's output and dy/dG_T is exactly ((I + G_S)^T dy/dout) in^T."""
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
        if uniform_spatial:
            layer.attention.attention.qkv.weight[:2 * D] = 0
            if layer.attention.attention.qkv.bias is not None:
                layer.attention.attention.qkv.bias[:2 * D] = 0
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
    """Row i = e_i^T G, all rows at once as one batch of N row vectors."""
    return vecmul(rec, torch.eye(N), blk[None].expand(N, *blk.shape), 0.0, cls_rows)


def test_timesformer_embedding_matches_linearised_hf_layer():
    a, layer = _linearised_timesformer()
    io = {}
    h = layer.register_forward_hook(lambda m, i, o: io.update(i=i[0].detach(), o=o[0].detach()))
    x = seeded(a.input_shape, 7)
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
    torch.testing.assert_close(Gs, dense_G(rs, rs.probs[0].mean(1)))
    torch.testing.assert_close(Gt, dense_G(rt, rt.probs[0].mean(1)))


@pytest.mark.parametrize("uniform_spatial", [False, True])
def test_timesformer_gradient_weighted_embedding_is_G_times_dG(uniform_spatial):
    """The Chefer/stdnorm embedding of ``grad_A * A`` (CLS row summed over frames) equals
    ``G * dy/dG`` for the layer's true mixing matrices, dy/dG by the chain rule through
    layer_out = (I + G_S)(I + G_T) layer_in with dy/d layer_out taken from the real model.

    G_S is the last operation, so dy/dG_S is exact in both cases; G_T also feeds G_S's queries and keys,
    so dy/dG_T is exact only when G_S does not depend on them (``uniform_spatial``)."""
    a, layer = _linearised_timesformer(uniform_spatial)
    name = "timesformer.encoder.layer.0"
    io = {}
    h = layer.register_forward_hook(lambda m, i, o: io.update(i=i[0].detach()))
    x = seeded(a.input_shape, 8)
    trace = a.trace(x[None], target=1, attentions=True, grads=True, capture=[name])
    h.remove()
    T, P = 3, 4
    N = 1 + T * P
    rt, rs = trace.attentions
    Gt = dense_G(rt, rt.probs[0].mean(1))
    Gs = dense_G(rs, rs.probs[0].mean(1))
    X = _frame_major(io["i"], T, P)
    gout = _frame_major(trace.activation_grads[name], T, P)  # dy / d layer_out
    eye = torch.eye(N)
    mask_s, mask_t = Gs != 0, Gt != 0  # entries that are variables of the layer
    dGs = gout @ ((eye + Gt) @ X).t()  # y depends on G_S through (I + G_S) Z, Z = (I + G_T) X
    ours_s = _G_from_vecmul(rs, (rs.grad[0] * rs.probs[0]).mean(1), N, "sum")
    torch.testing.assert_close(ours_s[mask_s], (Gs * dGs)[mask_s], rtol=1e-3, atol=1e-7)
    assert (Gs * dGs)[0].abs().sum() > 0
    if uniform_spatial:
        torch.testing.assert_close(Gs[1:5, 1:5], torch.full((4, 4), 1 / 5))
        dGt = ((eye + Gs).t() @ gout) @ X.t()
        ours_t = _G_from_vecmul(rt, (rt.grad[0] * rt.probs[0]).mean(1), N, "sum")
        torch.testing.assert_close(ours_t[mask_t], (Gt * dGt)[mask_t], rtol=1e-3, atol=1e-7)
        assert (Gt * dGt)[mask_t].abs().sum() > 0


# ------------------------------------------------------------------ Grad-CAM
class _Tap(nn.Module):
    def forward(self, t):
        return t


def _captum_gradcam(a, x, target, pool, Tn, h, w):
    """captum ``LayerGradCam`` on an identity module spliced after the adapter's Grad-CAM layer, whose output
    is the token grid as a channels-first map: (1, D, T', h, w) pools the whole clip, (T', D, h, w) each frame.

    The layer's tokens are read here without the adapter: (1, k + T'*h*w, D) frame-major stage vectors
    (prefix first), or (T', k + h*w, D) per-frame token sets (TimeSformer's spatial part)."""
    from captum.attr import LayerGradCam

    tap = _Tap()
    mod = dict(a.model.named_modules())[a.gradcam_layer]

    def to_grid(t):
        D = t.shape[-1]
        g = (t[:, -Tn * h * w:] if t.shape[0] == 1 else t[:, -h * w:]).reshape(1, Tn, h, w, D)
        return g.permute(0, 4, 1, 2, 3) if pool == "clip" else g[0].permute(0, 3, 1, 2)

    def from_grid(gr, t):
        D = t.shape[-1]
        g = gr.permute(0, 2, 3, 4, 1) if pool == "clip" else gr.permute(0, 2, 3, 1)[None]  # (1, T', h, w, D)
        if t.shape[0] == 1:
            return torch.cat([t[:, :t.shape[1] - Tn * h * w], g.reshape(1, Tn * h * w, D)], 1)
        return torch.cat([t[:, :t.shape[1] - h * w], g[0].reshape(Tn, h * w, D)], 1)

    def hook(m, i, o):
        t = o[0] if isinstance(o, tuple) else o
        return from_grid(tap(to_grid(t)), t)

    handle = mod.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            cam = LayerGradCam(lambda inp: a._run(a.normalise(inp)), tap).attribute(
                x[None].clone().requires_grad_(True), target=target, relu_attributions=True)
    finally:
        handle.remove()
    cam = cam.detach()
    return cam[0, 0] if pool == "clip" else cam[:, 0]


@pytest.mark.parametrize("pool", ["clip", "frame"])
def test_gradcam_matches_captum(tiny, tiny_name, pool):
    a = tiny
    x = seeded(a.input_shape, 9)
    with a.counting() as n:
        e = methods.create("gradcam", pool=pool)(a, x, 1)
    assert n == {"forward": 1, "backward": 1}
    Tn, h, w = e.token_map.shape
    assert Tn == a.layout.frames
    ref = _captum_gradcam(a, x, 1, pool, Tn, h, w)
    torch.testing.assert_close(e.token_map, ref, rtol=1e-4, atol=1e-7)
    assert ref.abs().sum() > 0


def test_gradcam_attention_source_matches_the_per_head_formula(tiny_models):
    """source=attention: relu(mean_h mean(g_h) a_h) with a_h, g_h the CLS rows of the last attention and of
    its gradient, here from transformers' own attentions and torch.autograd; every class as the target."""
    a = fresh(tiny_models, "hf_vit_tiny")
    x = seeded(a.input_shape, 10)
    nonzero = 0
    for target in range(a.num_classes):
        with torch.enable_grad():
            pix = a.normalise(x[None])[:, 0].requires_grad_(True)
            out = a.model(pixel_values=pix, output_attentions=True)
            att = out.attentions[-1]
            (g,) = torch.autograd.grad(out.logits[0, target], att)
        rows_a, rows_g = att[0, :, 0, 1:].detach(), g[0, :, 0, 1:]  # (heads, P)
        cam = (rows_g.mean(1, keepdim=True) * rows_a).mean(0).clamp(min=0).reshape(1, *a.grid)
        e = methods.create("gradcam", source="attention")(a, x, target)
        torch.testing.assert_close(e.token_map, cam, rtol=1e-4, atol=1e-8)
        nonzero += bool(cam.abs().sum() > 0)
    assert nonzero > 0


def test_gradcam_bad_layer_is_user_error(tiny_models):
    a = fresh(tiny_models, "hf_vit_tiny")
    with pytest.raises(UserError, match="no module"):
        methods.create("gradcam", layer="nope")(a, torch.rand(*a.input_shape), 0)
    with pytest.raises(UserError, match="pool"):
        methods.create("gradcam", pool="nope")
    with pytest.raises(UserError, match="source"):
        methods.create("gradcam", source="logits")
    with pytest.raises(UserError, match="not a token map"):  # a layer whose output is not tokens
        methods.create("gradcam", layer="classifier")(a, torch.rand(*a.input_shape), 0)


# ------------------------------------------------------------- SHAP and LIME
def _brute_force_shapley(v, M):
    """Exact Shapley values by enumerating all coalitions of the set function ``v``."""
    vals = {bits: v(bits) for bits in itertools.product([0, 1], repeat=M)}
    phi = np.zeros(M)
    for i in range(M):
        for bits, val in vals.items():
            if bits[i]:
                continue
            s = sum(bits)
            with_i = list(bits)
            with_i[i] = 1
            w = math.factorial(s) * math.factorial(M - s - 1) / math.factorial(M)
            phi[i] += w * (vals[tuple(with_i)] - val)
    return phi


def test_shap_exact_on_small_feature_set_and_efficiency(tiny_models):
    a = fresh(tiny_models, "hf_vit_tiny")
    x = seeded(a.input_shape, 11)
    target = 2

    def v(bits):  # the target logit with the 32-px cells of `bits` kept, the rest black (row-major cells)
        m = torch.zeros(1, 1, 64, 64)
        for k, b in enumerate(bits):
            m[..., 32 * (k // 2):32 * (k // 2 + 1), 32 * (k % 2):32 * (k % 2 + 1)] = b
        return float(a.predict((x * m)[None])[0, target])

    # 2x2 grid of 32-px cells: M = 4, KernelExplainer enumerates every coalition -> exact Shapley values
    with a.counting() as n:
        e = methods.create("shap", cell=32, n_samples=100, seed=0)(a, x, target)
    assert n["forward"] == 2 ** 4  # 14 coalitions, f(x) and f(baseline)
    exact = _brute_force_shapley(v, 4)
    got = np.array([e.volume[0, 0, 0], e.volume[0, 0, 32], e.volume[0, 32, 0], e.volume[0, 32, 32]], dtype=float)
    np.testing.assert_allclose(got, exact, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(exact.sum(), v((1, 1, 1, 1)) - v((0, 0, 0, 0)), rtol=1e-4, atol=1e-5)


def test_shap_efficiency_sampled(tiny, tiny_name):
    """Sampled KernelSHAP on every tiny model (seeded weights and input) with a well-posed budget:
    n_samples = 4 M (the budget rule) for M = 16 cells x frame groups.  The efficiency constraint is solved
    exactly, so the feature values sum to f(x) - f(b) up to float64 rounding and the float32 frame scores,
    whatever the CPU: atol 1e-5 (1 + sum |phi|)."""
    a = tiny
    x = seeded(a.input_shape, 12)
    cell = a.image_size // 4
    M = 16 * math.ceil(a.num_frames / 2)  # frames_per_group 2
    with a.counting() as n:
        e = methods.create("shap", n_samples=4 * M, cell=cell, batch_size=64, seed=3)(a, x, 1)
    assert n["forward"] <= 4 * M + 2
    ids = feature_ids((a.num_frames, a.image_size, a.image_size), cell, 2)
    assert int(ids.max()) + 1 == M
    flat, fid = e.volume.reshape(-1).double(), ids.reshape(-1)
    phi = torch.stack([flat[fid == f][0] for f in range(M)])
    assert torch.equal(flat, phi[fid])  # every position carries its feature's value
    fx, fb = a.predict(torch.stack([x, torch.zeros_like(x)]))[:, 1].double().tolist()
    tol = 1e-5 * (1 + float(phi.abs().sum()))
    assert abs(float(phi.sum()) - (fx - fb)) <= tol
    # frame scores split each feature's value over its frames: they sum to f(x) - f(b) too
    assert abs(float(e.frame_scores.double().sum()) - (fx - fb)) <= tol
    assert abs(float(e.extras["expected_value"].reshape(())) - fb) <= 1e-5 * (1 + abs(fb))


def test_budget_rule(tiny_models):
    from xaibench.methods._perturbation import min_samples

    assert [min_samples(m) for m in (1, 2, 3, 4, 5, 10, 64)] == [2, 4, 8, 16, 20, 40, 256]
    a = fresh(tiny_models, "hf_vit_tiny")
    x = seeded(a.input_shape, 13)
    # default features: the 8-px tokens, M = 64 features need min(256, 2^64) = 256 evaluations
    with pytest.raises(UserError, match=r"64 features.*256"):
        methods.create("shap", n_samples=64)(a, x, 0)
    with pytest.raises(UserError, match="budget"):
        methods.create("lime", n_samples=64, budget="maybe")
    with pytest.warns(UserWarning, match="cell=16"):
        e = methods.create("lime", n_samples=64, budget="coarsen", seed=1)(a, x, 0)
    assert float(e.extras["cell"]) == 16  # 16 features: 64 >= min(64, 2^16)
    assert torch.equal(e.volume[0, :16, :16], e.volume[0, :1, :1].expand(16, 16))  # constant on each cell
    e = methods.create("lime", n_samples=20, budget="allow", seed=1)(a, x, 0)
    assert float(e.extras["cell"]) == 8
    v = fresh(tiny_models, "hf_timesformer_tiny")  # 4 frames, tubelets of 2: 8 px -> 128, 16 px -> 32, 32 px -> 8
    with pytest.warns(UserWarning):
        e = methods.create("shap", n_samples=40, budget="coarsen")(v, seeded(v.input_shape, 14), 0)
    assert float(e.extras["cell"]) == 32


@pytest.mark.parametrize("method", ["shap", "lime"])
def test_perturbation_methods_seeded(tiny_models, method):
    a = fresh(tiny_models, "hf_timesformer_tiny")
    x = seeded(a.input_shape, 15)
    kw = dict(n_samples=40, cell=32, frames_per_group=2)  # 8 features: 40 >= min(32, 256)
    state = np.random.get_state()
    runs = []
    for bs, seed in [(7, 5), (40, 5), (7, 6)]:
        a.cache.clear()  # so that every run really evaluates the model
        with a.counting() as n:
            runs.append((methods.create(method, batch_size=bs, seed=seed, **kw)(a, x, 0), n))
    (e1, n1), (e2, n2), (e3, n3) = runs
    torch.testing.assert_close(e1.volume, e2.volume, rtol=1e-5, atol=1e-6)  # batch size never matters
    assert not torch.allclose(e1.volume, e3.volume)
    after = np.random.get_state()
    assert after[0] == state[0] and np.array_equal(after[1], state[1])  # global RNG untouched
    if method == "lime":
        # LimeImageExplainer's draw; every distinct coalition is evaluated once (the output cache)
        z = np.random.RandomState(5).randint(0, 2, 40 * 8).reshape(40, 8)
        z[0] = 1
        assert n1["forward"] == n2["forward"] == len({tuple(r) for r in z})
    else:
        assert n1["forward"] == n2["forward"] <= 40 + 2


def test_lime_equals_lime_image_explainer(tiny_models):
    from lime.lime_image import LimeImageExplainer

    a = fresh(tiny_models, "hf_vit_tiny")
    x = seeded(a.input_shape, 16)
    target, n = 3, 64  # 16-px cells: 16 features, 64 >= min(64, 2^16)
    e = methods.create("lime", n_samples=n, seed=11, batch_size=10, cell=16)(a, x, target)
    seg = feature_ids((1, 64, 64), 16)[0].numpy()

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
    np.testing.assert_allclose(e.volume[0].numpy(), ref[seg], rtol=1e-3, atol=1e-5)
    assert np.abs(ref).sum() > 0


def test_feature_specs():
    x = torch.rand(4, 3, 32, 32)
    ids = FeatureSpec(frames_per_group=2).ids(x, 8)
    assert int(ids.max()) + 1 == 16 * 2
    assert torch.equal(ids[0], ids[1]) and not torch.equal(ids[1], ids[2])
    assert torch.equal(ids[0, :8, :8], torch.zeros(8, 8, dtype=torch.long))
    assert torch.equal(FeatureSpec(cell=1).ids(x[:1], 8)[0], torch.arange(32 * 32).view(32, 32))  # single pixels
    slic = FeatureSpec(features="slic", n_segments=12).ids(x, 8)
    assert slic.shape == (4, 32, 32) and torch.equal(torch.unique(slic), torch.arange(int(slic.max()) + 1))
    with pytest.raises(UserError, match="cell"):
        FeatureSpec(cell=7).ids(x, 8)
    with pytest.raises(UserError, match="features"):
        FeatureSpec(features="voronoi")
    with pytest.raises(UserError, match="baseline"):
        FeatureSpec(baseline="black")


# ------------------------------------------------------ every method, every tiny model
def make_sample(a, seed=0) -> Sample:
    """A sample of the model's input shape with a ground-truth box in the second half of the clip."""
    T, H = a.num_frames, a.image_size
    mask = torch.zeros(T, H, H, dtype=torch.bool)
    mask[T // 2:, H // 8: H // 2, H // 4: 3 * H // 4] = True
    return Sample(sample_id=f"s{seed}", x=seeded((T, 3, H, H), seed), label=1, mask=mask,
                  frames=mask.flatten(1).any(1))


def _explain_or_skip(method, m, a, sample, target):
    try:
        m.check(a)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # budget=coarsen warns
            return m.explain_sample(a, sample, target)
    except NotApplicable as e:
        if method in ANY_MODEL:
            raise
        pytest.skip(f"{method} does not apply to {a.name}: {e}")


@pytest.mark.parametrize("method", methods.available())
def test_every_method_every_tiny_model(tiny, tiny_name, method):
    a = tiny
    m = methods.create(method, **FAST.get(method, {}))
    sample = make_sample(a)
    with a.counting() as n:
        e = _explain_or_skip(method, m, a, sample, 1)
    req = check_explanation(e, a, method, m, n)
    if req is None and not method.startswith("control_"):  # perturbation methods: their budget of forward passes
        assert n["forward"] >= 1 and n["backward"] == 0


#: methods computed from one traced pass (they explain a whole batch from one trace)
TRACE_METHODS = [m for m in methods.available() if methods.METHODS.get(m).trace_request is not Method.trace_request]


@pytest.mark.parametrize("method", TRACE_METHODS)
def test_batched_explanations_equal_one_at_a_time(tiny, tiny_name, method):
    a = tiny
    m = methods.create(method, **FAST.get(method, {}))
    s0, s1 = make_sample(a, 0), make_sample(a, 1)
    try:
        m.check(a)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            batch = m.explain_batch(a, torch.stack([s0.x, s1.x]), [1, 2])
            single = [m.explain(a, s0.x, 1), m.explain(a, s1.x, 2)]
    except NotApplicable as e:
        if method in ANY_MODEL:
            raise
        pytest.skip(f"{method} does not apply to {a.name}: {e}")
    assert len(batch) == 2
    for b, s in zip(batch, single):
        scale = float(s.volume.abs().max())
        torch.testing.assert_close(b.volume, s.volume, rtol=1e-4, atol=1e-5 * scale)
        torch.testing.assert_close(b.token_map, s.token_map, rtol=1e-4, atol=1e-5 * float(s.token_map.abs().max()))
        torch.testing.assert_close(b.frame_scores, s.frame_scores, rtol=1e-4,
                                   atol=1e-5 * float(s.frame_scores.abs().max()))
    assert not torch.allclose(single[0].volume, single[1].volume)  # two different samples


def test_controls(tiny_models):
    a = fresh(tiny_models, "hf_videomae_tiny")  # tubelets: 4 input frames, 2 token frames
    s = make_sample(a)
    gt = methods.create("control_gt").explain_sample(a, s, 1)
    torch.testing.assert_close(gt.volume, s.mask.float())
    torch.testing.assert_close(gt.frame_scores, s.frames.float())
    inv = methods.create("control_gt_inverted").explain_sample(a, s, 1)
    torch.testing.assert_close(inv.volume, 1 - s.mask.float())
    torch.testing.assert_close(inv.frame_scores, 1 - s.frames.float())
    const = methods.create("control_constant").explain_sample(a, s, 1)
    assert torch.equal(const.volume, torch.ones_like(const.volume))
    r1 = methods.create("control_random", seed=0).explain_sample(a, s, 1)
    r2 = methods.create("control_random", seed=0).explain_sample(a, s, 2)
    r3 = methods.create("control_random", seed=1).explain_sample(a, s, 1)
    other = methods.create("control_random", seed=0).explain_sample(a, make_sample(a, 5), 1)
    assert torch.equal(r1.volume, r2.volume)  # seeded by the run seed and the sample id only
    assert not torch.equal(r1.volume, r3.volume) and not torch.equal(r1.volume, other.volume)
    assert r1.token_map.shape == (2, 8, 8)
    # one value per token, repeated over its 8x8 pixels and its tubelet's 2 frames (nearest upsampling)
    torch.testing.assert_close(r1.volume, r1.token_map.repeat_interleave(2, 0).repeat_interleave(8, 1)
                               .repeat_interleave(8, 2).float())
    assert methods.METHODS.get("control_gt").requires == ("mask",)
    with pytest.raises(NotImplementedError):
        methods.create("control_gt")(a, s.x, 1)


def test_bad_parameters_are_user_errors(tiny_models):
    a = fresh(tiny_models, "hf_vit_tiny")
    with pytest.raises(UserError, match=r"layers.*\[1, 2\]"):
        methods.create("chefer", layers=7)(a, torch.rand(*a.input_shape), 0)
    with pytest.raises(UserError, match="n_samples"):
        methods.create("shap", n_samples=0)
    with pytest.raises(UserError, match="not a parameter of rollout"):
        methods.create("rollout", lambda_=3)
    with pytest.raises(UserError, match="seed"):
        methods.create("lime", seed=-1)


def test_not_applicable_token_layouts():
    """What the propagation cannot express is NotApplicable, with the reason (the harness skips the pair)."""
    T, g = 2, 2
    P = g * g
    recs = [AttentionRecord(name="s0", kind="spatial", layer=0, stage=0, grid=(g, g), frames=T, prefix=2,
                            probs=torch.full((1, T, 2, 2 + P, 2 + P), 1 / (2 + P)))]
    layout = TokenLayout(frames=T, stages=((g, g),), prefix=2, readout="prefix_mean")
    stub = StubAdapter(layout, Trace(logits=torch.zeros(1, 2), attentions=recs), 16, 1)
    with pytest.raises(NotApplicable, match="prefix"):
        methods.create("rollout")(stub, torch.rand(T, 3, 16, 16), 0)
    recs = [AttentionRecord(name="w0", kind="window", layer=0, stage=0, grid=(6, 6), frames=1, prefix=0,
                            probs=torch.full((1, 4, 2, 9, 9), 1 / 9), window=4, shift=0)]
    layout = TokenLayout(frames=1, stages=((6, 6),), prefix=0, readout="pool")
    stub = StubAdapter(layout, Trace(logits=torch.zeros(1, 2), attentions=recs), 24, 1)
    with pytest.raises(NotApplicable, match="divisible"):
        methods.create("rollout")(stub, torch.rand(1, 3, 24, 24), 0)


def test_method_configs_load():
    """Every conf/method/*.yaml composes (Hydra) and creates its method; its keys are the method's parameters."""
    names = sorted(p.stem for p in (conf_dir() / "method").glob("*.yaml"))
    assert {"staa", "attention", "rollout", "chefer", "stdnorm", "stdnorm_nostd", "gradcam", "shap", "lime",
            "control_random"} <= set(names)
    for name in names:
        comp = component("method", name)
        accepted = comp.accepted()
        if accepted is not None:
            assert set(comp.params) <= set(accepted), (name, comp.params, accepted)
        if comp.params.get("seed", 0) is None:  # seed: null = the run's seed, filled in by the runner
            comp.params["seed"] = 0
        m = comp.create()
        assert isinstance(m.params(), dict) and m.name == comp.name
        if name == "stdnorm_nostd":
            assert m.params()["use_std"] is False
