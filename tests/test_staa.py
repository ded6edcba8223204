import pytest
import torch

from xaibench import methods, models
from xaibench.errors import UserError
from xaibench.methods.staa import ema, focus


def test_raw_staa_equals_attention_captured_directly_timesformer(tiny_models):
    a = tiny_models["hf_timesformer"]
    x = torch.rand(*a.input_shape)
    e = methods.create("staa", enhance=False)(a, x, 0)
    # independent capture: transformers' own spatial attentions + our own hook for the temporal ones
    layer = a.model.timesformer.encoder.layer[-1]
    got = {}
    h = layer.temporal_attention.attention.attn_drop.register_forward_hook(lambda m, i, o: got.update(t=o))
    with torch.no_grad():
        out = a.model(pixel_values=a.normalise(x[None]), output_attentions=True)
    h.remove()
    cls = out.attentions[-1].mean(1)[:, 0, 1:]  # (T, P)
    m = cls / cls.sum(1, keepdim=True)
    tau = got["t"].mean(dim=(0, 1, 2))
    tau = tau / tau.sum()
    torch.testing.assert_close(e.frame_scores, tau)
    torch.testing.assert_close(e.token_map, (tau[:, None] * m).view(a.num_frames, *a.grid))
    assert e.volume.shape == (a.num_frames, 64, 64) and e.n_forward == 1 and e.n_backward == 0


def test_raw_staa_equals_attention_captured_directly_vit(tiny_models):
    a = tiny_models["hf_vit"]
    x = torch.rand(*a.input_shape)
    e = methods.create("staa", enhance=False, layers=2)(a, x, 0)
    with torch.no_grad():
        out = a.model(pixel_values=a.normalise(x[None])[:, 0], output_attentions=True)
    cls = torch.stack([att.mean(1)[0, 0, 1:] for att in out.attentions[-2:]]).mean(0)
    torch.testing.assert_close(e.token_map.flatten(), cls / cls.sum())


@pytest.mark.parametrize("name", ["hf_swin", "timm_swin", "timm_vit"])
def test_staa_runs_on_images(tiny_models, name):
    a = tiny_models[name]
    e = methods.create("staa", enhance=True)(a, torch.rand(*a.input_shape), 1)
    assert e.volume.shape == (1, 64, 64) and torch.isfinite(e.volume).all() and e.frame_scores.tolist() == [1.0]


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
    a = tiny_models["hf_timesformer"]
    x = torch.rand(*a.input_shape)
    raw = methods.create("staa", enhance=False)(a, x, 0)
    enh = methods.create("staa", enhance=True, **{"lambda": 0.5})(a, x, 0)
    torch.testing.assert_close(enh.token_map, focus(raw.token_map, 0.5))
    assert (enh.token_map == 0).sum() > (raw.token_map == 0).sum()


def test_out_of_range_parameters():
    with pytest.raises(UserError, match=r"allowed range is \[0.0, 5.0\]"):
        methods.create("staa", **{"lambda": 7})
    with pytest.raises(UserError, match="smoothing"):
        methods.create("staa", smoothing="gaussian")
    a = models.create("hf_vit", hidden_size=32, num_hidden_layers=2, num_attention_heads=2)
    with pytest.raises(UserError, match=r"allowed range is \[1, 2\]"):
        methods.create("staa", layers=3)(a, torch.rand(*a.input_shape), 0)
    with pytest.raises(UserError, match="staa"):
        methods.create("staaa")
