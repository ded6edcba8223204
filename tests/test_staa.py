"""STAA against attention captured independently (transformers' own ``output_attentions`` and our own
hooks), on divided (TimeSformer), joint (ViViT, VideoMAE) and image (ViT, DeiT) attention; the focusing
threshold and smoothing by hand; parameter values served from one trace."""

import pytest
import torch

from xaibench import methods, models
from xaibench.errors import UserError
from xaibench.methods.base import merge_requests, trace_kwargs
from xaibench.methods.staa import ema, focus


def seeded(shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def test_raw_staa_equals_attention_captured_directly_timesformer(tiny_models):
    a = tiny_models["hf_timesformer_tiny"]
    x = seeded(a.input_shape, 1)
    with a.counting() as n:
        e = methods.create("staa", enhance=False)(a, x, 0)
    assert n == {"forward": 1, "backward": 0}
    # independent capture: transformers' own spatial attentions + our own hook for the temporal ones
    layer = a.model.timesformer.encoder.layer[-1]
    got = {}
    h = layer.temporal_attention.attention.attn_drop.register_forward_hook(lambda m, i, o: got.update(t=o))
    with torch.no_grad():
        out = a.model(pixel_values=a.normalise(x[None]), output_attentions=True)
    h.remove()
    cls = out.attentions[-1].mean(1)[:, 0, 1:]  # (T, P): each frame's CLS copy over its patches
    m = cls / cls.sum(1, keepdim=True)
    tau = got["t"].mean(dim=(0, 1, 2))  # received temporal attention, over patches, heads and queries
    tau = tau / tau.sum()
    torch.testing.assert_close(e.frame_scores, tau)
    torch.testing.assert_close(e.token_map, (tau[:, None] * m).view(a.num_frames, *a.grid))
    assert e.volume.shape == (a.num_frames, 64, 64)


def test_raw_staa_equals_attention_captured_directly_vit(tiny_models):
    a = tiny_models["hf_vit_tiny"]
    x = seeded(a.input_shape, 2)
    e = methods.create("staa", enhance=False, layers=2)(a, x, 0)
    with torch.no_grad():
        out = a.model(pixel_values=a.normalise(x[None])[:, 0], output_attentions=True)
    cls = torch.stack([att.mean(1)[0, 0, 1:] for att in out.attentions[-2:]]).mean(0)
    torch.testing.assert_close(e.token_map.flatten(), cls / cls.sum())
    assert e.frame_scores.tolist() == [1.0]


@pytest.mark.parametrize("temporal", ["temporal_attention", "cls_mass"])
@pytest.mark.parametrize("name", ["hf_vivit_tiny", "hf_videomae_tiny"])
def test_staa_on_joint_space_time_attention(tiny_models, name, temporal):
    """Joint attention (one matrix over all tubelet tokens): the readout row (ViViT: CLS row; VideoMAE, mean
    pooled: the attention each token receives, averaged over queries) per token frame, and the share of the
    attention each frame receives; tubelets of 2 input frames share their token frame's map and score."""
    a = tiny_models[name]
    x = seeded(a.input_shape, 3)
    e = methods.create("staa", temporal=temporal)(a, x, 0)
    with torch.no_grad():
        att = a.model(pixel_values=a.normalise(x[None]), output_attentions=True).attentions[-1][0].mean(0).double()
    Tn, (h, w), k = a.layout.frames, a.grid, a.layout.prefix
    row = att[0] if a.layout.readout == "cls" else att[k:].mean(0)  # pool: the mean over the patch queries
    row = row[k:].reshape(Tn, h * w)
    m = row / row.sum(1, keepdim=True)
    if temporal == "temporal_attention":
        tau = att.mean(0)[k:].reshape(Tn, h * w).sum(1)
    else:
        tau = row.sum(1)
    tau = tau / tau.sum()
    torch.testing.assert_close(e.token_map.double(), (tau[:, None] * m).reshape(Tn, h, w), rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(e.frame_scores.double(), tau.repeat_interleave(2), rtol=1e-5, atol=1e-8)
    assert e.volume.shape == (a.num_frames, 64, 64)
    torch.testing.assert_close(e.volume[0::2], e.volume[1::2])  # both frames of a tubelet
    assert not torch.allclose(e.volume[0], e.volume[2])


def test_staa_deit_reads_the_cls_and_distillation_rows(tiny_models):
    a = tiny_models["timm_deit_tiny"]
    x = seeded(a.input_shape, 4)
    e = methods.create("staa")(a, x, 0)
    got = {}
    attn = a.model.blocks[-1].attn
    h = attn.attn_drop.register_forward_hook(lambda m, i, o: got.update(p=o))
    with torch.no_grad():
        a.predict(x[None])
    h.remove()
    p = got["p"][0].mean(0)  # (n, n), heads averaged
    row = (p[0] + p[1])[2:] / 2
    torch.testing.assert_close(e.token_map.flatten(), row / row.sum())


@pytest.mark.parametrize("name", ["hf_swin_tiny", "timm_swin_tiny", "timm_vit_tiny"])
def test_staa_runs_on_images(tiny_models, name):
    a = tiny_models[name]
    e = methods.create("staa", enhance=True)(a, seeded(a.input_shape, 5), 1)
    assert e.volume.shape == (1, 64, 64) and torch.isfinite(e.volume).all() and e.frame_scores.tolist() == [1.0]
    assert tuple(e.token_map.shape[1:]) == tuple(a.layout.stages[-1])  # the last stage's grid
    torch.testing.assert_close(focus(e.token_map, 1.0), e.token_map)  # focusing is idempotent


def test_threshold_on_a_hand_made_map():
    m = torch.tensor([[[1.0, 2.0], [3.0, 6.0]], [[0.0, 0.0], [0.0, 4.0]]])
    # frame 0: mu = 3, sigma = sqrt(3.5); lambda 0 keeps values >= 3
    torch.testing.assert_close(focus(m, 0.0)[0], torch.tensor([[0.0, 0.0], [3.0, 6.0]]))
    # lambda 1: theta = 3 + 1.8708 -> only 6 survives
    torch.testing.assert_close(focus(m, 1.0)[0], torch.tensor([[0.0, 0.0], [0.0, 6.0]]))
    # frame 1: mu = 1, sigma = sqrt(3); theta(1) = 2.73 keeps the 4, zeros stay zero
    torch.testing.assert_close(focus(m, 1.0)[1], m[1])
    # a flat frame (sigma = 0) is kept whole: nothing is strictly below the mean
    flat = torch.full((1, 2, 2), 0.25)
    torch.testing.assert_close(focus(flat, 2.0), flat)


def test_ema_smoothing_by_hand():
    m = torch.tensor([[[1.0]], [[0.0]], [[0.0]]])
    torch.testing.assert_close(ema(m, 0.3).flatten(), torch.tensor([1.0, 0.7, 0.49]))


def test_enhanced_differs_from_raw_only_by_focusing(tiny_models):
    a = tiny_models["hf_timesformer_tiny"]
    x = seeded(a.input_shape, 6)
    raw = methods.create("staa", enhance=False)(a, x, 0)
    enh = methods.create("staa", enhance=True, **{"lambda": 0.5})(a, x, 0)
    torch.testing.assert_close(enh.token_map, focus(raw.token_map, 0.5))
    torch.testing.assert_close(enh.frame_scores, raw.frame_scores)
    assert (enh.token_map == 0).sum() > (raw.token_map == 0).sum()


def test_parameter_values_share_one_trace(tiny_models):
    """Several lambdas and layer counts from one merged trace request equal their own explanations."""
    a = tiny_models["hf_timesformer_tiny"]
    xs = torch.stack([seeded(a.input_shape, 7), seeded(a.input_shape, 8)])
    arms = [methods.create("staa", enhance=True, **{"lambda": lam}, layers=k) for lam in (0.0, 1.0) for k in (1, 2)]
    req = merge_requests(m.trace_request(a) for m in arms)
    assert req["layers"] == 2 and req["attentions"] and not req["grads"]
    with a.counting() as n:
        trace = a.trace(xs, target=[0, 1], **trace_kwargs(req))
    assert n["forward"] == 2
    for m in arms:
        shared = m.explain_trace(a, trace)
        for i, x in enumerate(xs):
            own = m.explain(a, x, i)
            torch.testing.assert_close(shared[i].token_map, own.token_map, rtol=1e-5, atol=1e-7)
            torch.testing.assert_close(shared[i].frame_scores, own.frame_scores, rtol=1e-5, atol=1e-7)


def test_out_of_range_parameters():
    with pytest.raises(UserError, match=r"allowed range is \[0.0, 5.0\]"):
        methods.create("staa", **{"lambda": 7})
    with pytest.raises(UserError, match="smoothing"):
        methods.create("staa", smoothing="gaussian")
    with pytest.raises(UserError, match="temporal"):
        methods.create("staa", temporal="mean")
    a = models.create("hf_vit", hidden_size=32, num_hidden_layers=2, num_attention_heads=2)
    with pytest.raises(UserError, match=r"allowed range is \[1, 2\]"):
        methods.create("staa", layers=3)(a, torch.rand(*a.input_shape), 0)
    with pytest.raises(UserError, match="staa"):
        methods.create("staaa")
