"""LRP methods (transformer_attribution, attnlrp, stdnorm base=transformer_attribution) and the block
description they run on (xaibench/models/blocks.py).

* Transformer Attribution against a dense, independent re-implementation written here: the forward pass
  re-done by calling the model's own modules (in float64) one by one, and every LRP rule of the paper with
  explicit contribution tensors ``z[t, i, j] = x[t, j] W[i, j]`` (linear, alpha1beta0) and
  ``c[h, i, k, d] = a[h, i, k] b[h, k, d]`` (matmuls), Eq. 2 / Eq. 8 for the two-operand operations, then
  the rollout with dense matrices -- compared per block (``R_A``) and on the final map;
* the paper's properties: conservation at every residual-stream tensor, non-negative relevance into the
  classifier, alpha1beta0 positivity; the layer-by-layer re-run reproduces the model's logits;
* std-norm: ``base=generic`` equals the dense generic formula (unchanged); ``base=transformer_attribution``
  equals the same formula on ``grad_A * R_A``;
* AttnLRP (lxt): conservation as lxt defines it (its conservation-check mode), determinism, batching.

Tiny seeded models: 2 blocks, 2 heads, hidden 16, 4 x 4 patches.
"""

from __future__ import annotations

import copy

import pytest
import torch

from xaibench import methods, models
from xaibench.errors import NotApplicable, UserError
from xaibench.methods import transformer_attribution as ta
from xaibench.models.blocks import Ops, check_rerun, describe_blocks, run, unsupported_reason

EPS = 1e-9  # the stabiliser the method documents
TINY = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8)
VITS = ["timm_vit", "hf_vit", "timm_deit"]


@pytest.fixture(scope="module")
def tiny():
    return {name: models.create(name, seed=3, **TINY) for name in VITS}


def pixels(adapter, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *adapter.input_shape, generator=g)


def traced(adapter, x, target):
    stack = describe_blocks(adapter)
    trace = adapter.trace(x, target=target, attentions=True, grads=True, ln_stats=True, capture=[stack.embed_name])
    return stack, trace


# --------------------------------------------------------------- dense reference (independent of the method)
def forward_ref(model, tokens):
    """The model's own modules, called one by one on one sample (float64 copy): per-block activations, logits."""
    m = copy.deepcopy(model).double()
    x = tokens.double()[None]
    acts = []
    timm = hasattr(m, "blocks")
    layers = m.blocks if timm else m.vit.layers
    for blk in layers:
        a = {"x0": x[0]}
        if timm:
            at, H = blk.attn, blk.attn.num_heads
            a["h1"] = blk.norm1(x)
            q, k, v = at.qkv(a["h1"]).reshape(1, -1, 3, H, at.head_dim).permute(2, 0, 3, 1, 4)
            scale, proj, norm2, fc1, act, fc2 = at.scale, at.proj, blk.norm2, blk.mlp.fc1, blk.mlp.act, blk.mlp.fc2
            a["W_qkv"] = [at.qkv.weight]
        else:
            at, H = blk.attention, blk.attention.num_attention_heads
            a["h1"] = blk.layernorm_before(x)
            q, k, v = (p(a["h1"]).reshape(1, -1, H, at.head_dim).transpose(1, 2)
                       for p in (at.q_proj, at.k_proj, at.v_proj))
            scale, proj, norm2, fc1, act, fc2 = at.scaling, at.o_proj, blk.layernorm_after, blk.mlp.fc1, \
                blk.mlp.activation_fn, blk.mlp.fc2
            a["W_qkv"] = [at.q_proj.weight, at.k_proj.weight, at.v_proj.weight]
        A = torch.softmax(q @ k.transpose(-1, -2) * scale, -1)
        o = (A @ v).transpose(1, 2).reshape(1, -1, H * q.shape[-1])
        att = proj(o)
        x1 = x + att
        h2 = norm2(x1)
        f1 = fc1(h2)
        g = act(f1)
        f2 = fc2(g)
        x = x1 + f2
        a.update(q=q[0], k=k[0], v=v[0], A=A[0], o=o[0], att=att[0], W_proj=proj.weight, x1=x1[0], h2=h2[0],
                 W_fc1=fc1.weight, g=g[0], W_fc2=fc2.weight, f2=f2[0], h1=a["h1"][0])
        acts.append(a)
    if timm:
        hN = m.norm(x)[0]
        heads = [(m.head, 0)] + ([(m.head_dist, 1)] if getattr(m, "head_dist", None) is not None else [])
    else:
        hN = m.vit.layernorm(x)[0]
        heads = [(m.classifier, 0)]
    zs = [hd(hN[t]) / len(heads) for hd, t in heads]
    return acts, hN, heads, zs, sum(zs)


def stab(z):
    return z + EPS * torch.where(z >= 0, 1.0, -1.0).to(z)


def eq8(ru, rv, r):
    su, sv, s = ru.sum(), rv.sum(), r.sum()
    return ru * su.abs() / (su.abs() + sv.abs()) * s / su, rv * sv.abs() / (su.abs() + sv.abs()) * s / sv


def lin_ab(x, W, R):
    """alpha1beta0 with the explicit contribution tensor z[t, i, j] = x[t, j] W[i, j]."""
    zp = (x[:, None, :] * W[None]).clamp(min=0)
    return torch.einsum("tij,ti->tj", zp / (zp.sum(-1, keepdim=True) + EPS), R)


def add_rule(u, v, R):
    return eq8(u / stab(u + v) * R, v / stab(u + v) * R, R)


def matmul_rule(a, b, R):
    """Eq. 2 for both operands of a batched a @ b, with c[h, i, k, d] = a[h, i, k] b[h, k, d]; then Eq. 8."""
    c = a[:, :, :, None] * b[:, None, :, :]
    frac = c / stab(c.sum(2))[:, :, None, :]
    return eq8(torch.einsum("hikd,hid->hik", frac, R), torch.einsum("hikd,hid->hkd", frac, R), R)


def lrp_ref(model, tokens, target):
    """R_A of every block (heads, n, n) and the relevance of every block's input, for one sample."""
    acts, hN, heads, zs, logits = forward_ref(model, tokens)
    R0 = torch.zeros_like(logits)
    R0[target] = 1.0
    Rz = [R0] if len(zs) == 1 else list(add_rule(zs[0], zs[1], R0))
    R = torch.zeros_like(hN)
    for (hd, t), r in zip(heads, Rz):
        R[t] = lin_ab(hN[t][None], hd.weight, r[None])[0]
    R_head = R.clone()
    r_attn, r_in = [], []
    for a in reversed(acts):
        H, n, hd = a["q"].shape
        r_x1, r_f2 = add_rule(a["x1"], a["f2"], R)
        r_x1 = r_x1 + lin_ab(a["h2"], a["W_fc1"], lin_ab(a["g"], a["W_fc2"], r_f2))
        r_x0, r_att = add_rule(a["x0"], a["att"], r_x1)
        r_O = lin_ab(a["o"], a["W_proj"], r_att).reshape(n, H, hd).transpose(0, 1)
        r_A, r_v = matmul_rule(a["A"], a["v"], r_O)
        r_q, r_kT = matmul_rule(a["q"], a["k"].transpose(-1, -2), r_A)
        parts = [t.transpose(0, 1).reshape(n, H * hd) for t in (r_q, r_kT.transpose(-1, -2), r_v)]
        if len(a["W_qkv"]) == 1:
            r_h1 = lin_ab(a["h1"], a["W_qkv"][0], torch.cat(parts, -1))
        else:
            r_h1 = sum(lin_ab(a["h1"], W, p) for W, p in zip(a["W_qkv"], parts))
        R = r_x0 + r_h1
        r_attn.insert(0, r_A)
        r_in.insert(0, R)
    return r_attn, r_in, R_head, logits


def dense_map(blocks, prefix, grid):
    """R = I; R <- R + B R (dense); the mean of the prefix rows on the patch columns."""
    n = blocks[0].shape[-1]
    R = torch.eye(n, dtype=torch.float64)
    for B in blocks:
        R = R + B @ R
    return R[:prefix, prefix:].mean(0).reshape(1, *grid)


# --------------------------------------------------------------- the description and the re-run
@pytest.mark.parametrize("name", VITS)
def test_rerun_reproduces_model_logits(tiny, name):
    a = tiny[name]
    x = pixels(a, 2)
    stack, trace = traced(a, x, 0)
    tokens = trace.activations[stack.embed_name]
    plain = run(stack, tokens.double())
    torch.testing.assert_close(plain, a.predict(x).double(), rtol=0, atol=1e-5)
    # the rules' forward is the plain computation
    logits, _, _ = ta.relevance_pass(stack, tokens, trace.target)
    torch.testing.assert_close(logits, plain, rtol=0, atol=1e-12)
    # and so is the independent module-by-module forward of the reference
    _, _, _, _, ref = forward_ref(a.model, tokens[0])
    torch.testing.assert_close(ref, plain[0], rtol=0, atol=1e-12)


def test_description_reads_layout_and_modules(tiny):
    st = describe_blocks(tiny["timm_deit"])
    assert (st.prefix, st.readout, len(st.blocks)) == (2, "prefix_mean", 2)
    assert [(h.token, h.weight) for h in st.heads] == [(0, 0.5), (1, 0.5)]
    assert len(st.blocks[0].attn.qkv) == 1 and st.blocks[0].attn.heads == 2
    hf = describe_blocks(tiny["hf_vit"])
    assert len(hf.blocks[0].attn.qkv) == 3 and hf.readout == "cls" and hf.embed_name == "vit.embeddings"


def test_unsupported_models_say_why():
    swin = models.create("timm_swin", embed_dim=16, num_heads=(2, 2))
    assert describe_blocks(swin) is None and "readout 'pool'" in unsupported_reason(swin)
    scaled = models.create("timm_vit", init_values=0.1, **TINY)  # layer scale
    assert describe_blocks(scaled) is None and "layer scale" in unsupported_reason(scaled)
    for method in ("transformer_attribution", "attnlrp"):
        with pytest.raises(NotApplicable, match="readout"):
            methods.create(method)(swin, pixels(swin, 1)[0], 0)


def test_hf_deit_mismatches_with_the_hf_adapter_layout_are_refused():
    from transformers import DeiTConfig, DeiTForImageClassification, DeiTForImageClassificationWithTeacher

    from xaibench.models.hf_vit import HFViTAdapter

    cfg = DeiTConfig(num_labels=3, image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=64, attn_implementation="eager")
    torch.manual_seed(0)
    teacher = HFViTAdapter(DeiTForImageClassificationWithTeacher(cfg), name="hf_deit_teacher")
    assert describe_blocks(teacher) is None and "2 classifier head(s)" in unsupported_reason(teacher)
    plain = HFViTAdapter(DeiTForImageClassification(cfg), name="hf_deit")  # 2 prefix tokens, layout says 1
    assert describe_blocks(plain) is not None
    for method in ("transformer_attribution", "attnlrp"):
        with pytest.raises(NotApplicable, match="layout declares 17"):
            methods.create(method)(plain, pixels(plain, 1)[0], 0)


def test_rerun_guard_refuses_lookalike_post_norm_blocks():
    from timm.models.vision_transformer import ResPostBlock

    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)  # same module names as a pre-norm ViT, norm after attention
    post = models.wrap("timm_vit", VisionTransformer(img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2,
                                                     num_classes=4, block_fn=ResPostBlock))
    assert describe_blocks(post) is not None
    with pytest.raises(NotApplicable, match="does not reproduce"):
        methods.create("transformer_attribution")(post, pixels(post, 1)[0], 1)
    with pytest.raises(NotApplicable):
        check_rerun(torch.zeros(1, 3), torch.ones(1, 3))


# --------------------------------------------------------------- Transformer Attribution
@pytest.mark.parametrize("name", VITS)
def test_transformer_attribution_equals_dense_reference(tiny, name):
    a = tiny[name]
    x = pixels(a, 2, seed=1)
    targets = [1, 2]
    stack, trace = traced(a, x, targets)
    _, rel = ta.attention_relevance(a, trace)
    tokens = trace.activations[stack.embed_name]
    explained = methods.create("transformer_attribution").explain_batch(a, x, targets)
    for i in range(2):
        r_attn, _, _, _ = lrp_ref(a.model, tokens[i], targets[i])
        for b in range(2):
            torch.testing.assert_close(rel[b][i], r_attn[b], rtol=1e-6, atol=1e-12)
        blocks = [(rec.grad[i].double() * r).clamp(min=0).mean(0) for rec, r in zip(trace.attentions, r_attn)]
        ref = dense_map(blocks, stack.prefix, a.grid).float()
        torch.testing.assert_close(explained[i].token_map, ref, rtol=1e-6, atol=1e-6 * ref.abs().max().item())
        assert explained[i].token_map.abs().max() > 0


def test_transformer_attribution_last_layer_only(tiny):
    a = tiny["hf_vit"]
    x = pixels(a, 1, seed=2)
    stack, trace = traced(a, x, 0)
    r_attn, _, _, _ = lrp_ref(a.model, trace.activations[stack.embed_name][0], 0)
    e = methods.create("transformer_attribution", layers=1)(a, x[0], 0)
    rec = trace.attentions[-1]
    ref = dense_map([(rec.grad[0].double() * r_attn[-1]).clamp(min=0).mean(0)], 1, a.grid).float()
    torch.testing.assert_close(e.token_map, ref, rtol=1e-6, atol=1e-6 * ref.abs().max().item())
    with pytest.raises(UserError, match="out of range"):
        methods.create("transformer_attribution", layers=3)(a, x[0], 0)


@pytest.mark.parametrize("name", VITS)
def test_relevance_is_conserved_and_positive_into_the_classifier(tiny, name, monkeypatch):
    a = tiny[name]
    x = pixels(a, 2, seed=4)
    stack, trace = traced(a, x, [0, 3])
    tokens = trace.activations[stack.embed_name]
    # R^(0) = 1_t sums to 1: so does the relevance of every residual-stream tensor and of the input tokens, up
    # to what the stabiliser takes (R_i eps / z_i per linear output; z_i ~ 1e-3 in these tiny random models)
    for eps, tol in ((ta.EPS, 1e-4), (1e-15, 1e-10)):
        monkeypatch.setattr(ta, "EPS", eps)
        _, rules, xin = ta.relevance_pass(stack, tokens, trace.target)
        for t in rules.stream + [xin]:
            torch.testing.assert_close(t.grad.reshape(2, -1).sum(1), torch.ones(2, dtype=torch.float64), rtol=0,
                                       atol=tol)
    monkeypatch.undo()
    _, rules, xin = ta.relevance_pass(stack, tokens, trace.target)
    last = [t for t in rules.stream if t.dim() == 3][-1]  # last block's output: what the classifier reads
    assert (last.grad >= 0).all() and (last.grad[:, stack.prefix:] == 0).all()
    # the dense reference agrees at every block input, and its classifier input matches too
    for i in range(2):
        _, r_in, r_head, _ = lrp_ref(a.model, tokens[i], int(trace.target[i]))
        torch.testing.assert_close(xin.grad[i], r_in[0], rtol=1e-6, atol=1e-12)
        torch.testing.assert_close(last.grad[i], r_head, rtol=1e-6, atol=1e-12)


def test_alpha1beta0_rule_is_positive_and_conservative():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 7, dtype=torch.float64, generator=g)
    W = torch.randn(4, 7, dtype=torch.float64, generator=g)
    R = torch.rand(5, 4, dtype=torch.float64, generator=g)
    xr = x.clone().requires_grad_(True)
    with torch.enable_grad():
        ta._Linear.apply(xr, W, torch.randn(4, dtype=torch.float64, generator=g)).backward(R)
    assert (xr.grad >= 0).all()
    torch.testing.assert_close(xr.grad, lin_ab(x, W, R), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(xr.grad.sum(), R.sum(), rtol=1e-7, atol=0)  # up to eps / z


@pytest.mark.parametrize("name", ["timm_vit", "timm_deit"])
def test_transformer_attribution_batch_equals_single(tiny, name):
    a = tiny[name]
    x = pixels(a, 3, seed=5)
    m = methods.create("transformer_attribution")
    batch = m.explain_batch(a, x, [0, 1, 2])
    for i in range(3):
        torch.testing.assert_close(batch[i].token_map, m.explain(a, x[i], i).token_map, rtol=1e-6, atol=1e-12)


# --------------------------------------------------------------- std-norm bases
def stdnorm_dense(trace, weights, layers=2):
    """W = mean_h((grad_A * base)^+) diag(1/sigma); Atil = W / sum W; R = I; R <- R + Atil R; CLS row."""
    blocks = []
    for rec, base in list(zip(trace.attentions, weights))[-layers:]:
        W = (rec.grad[0].double() * base).clamp(min=0).mean(0) / rec.ln_std[0].double()[None, :]
        blocks.append(W / W.sum())
    n = blocks[0].shape[-1]
    R = torch.eye(n, dtype=torch.float64)
    for B in blocks:
        R = R + B @ R
    return R[0, 1:]


def test_stdnorm_generic_base_unchanged(tiny):
    a = tiny["hf_vit"]
    x = pixels(a, 1, seed=6)
    stack, trace = traced(a, x, 1)
    e = methods.create("stdnorm")(a, x[0], 1)
    assert methods.create("stdnorm").params() == {"layers": 2, "use_std": True, "base": "generic", "upsample": "bilinear"}
    ref = stdnorm_dense(trace, [rec.probs[0].double() for rec in trace.attentions]).reshape(1, *a.grid).float()
    torch.testing.assert_close(e.token_map, ref, rtol=1e-5, atol=1e-7)
    same = methods.create("stdnorm", base="generic")(a, x[0], 1)
    torch.testing.assert_close(same.token_map, e.token_map, rtol=0, atol=0)


def test_stdnorm_transformer_attribution_base(tiny):
    a = tiny["timm_vit"]
    x = pixels(a, 1, seed=7)
    stack, trace = traced(a, x, 2)
    r_attn, _, _, _ = lrp_ref(a.model, trace.activations[stack.embed_name][0], 2)
    m = methods.create("stdnorm", base="transformer_attribution")
    assert m.params()["base"] == "transformer_attribution"
    e = m(a, x[0], 2)
    ref = stdnorm_dense(trace, r_attn).reshape(1, *a.grid).float()
    torch.testing.assert_close(e.token_map, ref, rtol=1e-5, atol=1e-7)
    with pytest.raises(UserError, match="base"):
        methods.create("stdnorm", base="lrp")
    swin = models.create("hf_swin", embed_dim=16, num_heads=(2, 2))
    with pytest.raises(NotApplicable):
        m(swin, pixels(swin, 1)[0], 0)


# --------------------------------------------------------------- AttnLRP (lxt)
@pytest.mark.parametrize("name", VITS)
def test_attnlrp_conserves_relevance_as_lxt_checks_it(tiny, name):
    lf = pytest.importorskip("lxt.explicit.functional")
    from xaibench.methods.attnlrp import token_relevance

    a = tiny[name]
    x = pixels(a, 1, seed=8)
    stack, trace = traced(a, x, 1)
    tokens = trace.activations[stack.embed_name]
    # lxt's check mode: every rule hands its output relevance on uniformly, so the input relevance sums to
    # the initial relevance (the target logit) iff every operation on the path is an lxt rule
    lf.CONSERVATION_CHECK_FLAG[0] = True
    try:
        logits, rel = token_relevance(stack, tokens, trace.target)
    finally:
        lf.CONSERVATION_CHECK_FLAG[0] = False
    torch.testing.assert_close(rel.sum(), logits[0, 1], rtol=1e-6, atol=0)  # lxt's check sums in float32
    torch.testing.assert_close(logits, trace.logits.double(), rtol=0, atol=1e-5)
    # the rules' forward is the plain re-run
    plain_logits, rel = token_relevance(stack, tokens, trace.target)
    torch.testing.assert_close(plain_logits, run(stack, tokens.double(), Ops()), rtol=0, atol=1e-12)
    assert rel.abs().sum() > 0


def test_attnlrp_is_deterministic_and_batchable(tiny):
    pytest.importorskip("lxt.explicit.functional")
    a = tiny["timm_deit"]
    x = pixels(a, 3, seed=9)
    m = methods.create("attnlrp")
    first = m.explain_batch(a, x, [0, 1, 2])
    again = m.explain_batch(a, x, [0, 1, 2])
    for i in range(3):
        assert torch.equal(first[i].token_map, again[i].token_map)
        torch.testing.assert_close(first[i].token_map, m.explain(a, x[i], i).token_map, rtol=1e-6, atol=1e-12)
        assert first[i].token_map.shape == (1, *a.grid)


def test_methods_share_one_merged_trace(tiny):
    """The harness serves several methods from one trace (merge_requests): each result equals its own pass."""
    from xaibench.methods.base import merge_requests, trace_kwargs

    a = tiny["timm_deit"]
    x = pixels(a, 2, seed=10)
    arms = [methods.create("transformer_attribution", layers=1), methods.create("transformer_attribution"),
            methods.create("stdnorm", base="transformer_attribution"), methods.create("stdnorm"),
            methods.create("chefer")]
    if __import__("importlib").util.find_spec("lxt") is not None:
        arms.append(methods.create("attnlrp"))
    trace = a.trace(x, target=[0, 1], **trace_kwargs(merge_requests(m.trace_request(a) for m in arms)))
    for m in arms:
        shared = m.explain_trace(a, trace)
        alone = m.explain_batch(a, x, [0, 1])
        for s, e in zip(shared, alone):
            torch.testing.assert_close(s.token_map, e.token_map, rtol=1e-6, atol=1e-12)


def test_attnlrp_without_lxt_is_skipped_with_the_install_hint(monkeypatch, tiny_models):
    """lxt is an extra (``xaibench[lrp]``): without it AttnLRP does not apply, and the reason says what to install."""
    import sys

    from xaibench import methods
    from xaibench.errors import NotApplicable

    for name in [m for m in sys.modules if m == "lxt" or m.startswith("lxt.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "lxt", None)  # import lxt -> ImportError
    with pytest.raises(NotApplicable, match=r"pip install 'xaibench\[lrp\]'"):
        methods.create("attnlrp").check(tiny_models["hf_vit_tiny"])
