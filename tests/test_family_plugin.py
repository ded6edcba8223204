"""A model family defined only here, in a test module: a small pure-torch ViT whose head reads a *weighted*
combination of [CLS] (1/4) and the mean of the patch tokens (3/4).

Registering it with ``register_family`` is all it takes: the conformance suite (tests/test_conformance.py)
judges it with every other family -- at collection when this module is collected first, otherwise at run
time (``test_families_registered_after_collection_conform``); the methods use its declared weights.
"""

from dataclasses import dataclass
from typing import Optional

import pytest
import torch
from torch import nn

from xaibench import methods, models
from xaibench.models import conformance as C
from xaibench.models.base import HookPoint, ModelAdapter, TokenLayout
from xaibench.models.card import ModelCard
from xaibench.models.family import ViTArchConfig, register_family

W_CLS = 0.25


class ToyAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.probs = nn.Identity()  # its output is the probability tensor (the hook point)

    def forward(self, x):
        B, N, D = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        a = self.probs(torch.softmax(q @ k.transpose(-2, -1) * self.scale, dim=-1))
        return self.proj((a @ v).transpose(1, 2).reshape(B, N, D))


class ToyBlock(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), ToyAttention(dim, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim), nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(),
                                                                nn.Linear(2 * dim, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ToyViT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, self.image_size, self.patch = cfg.hidden_size, cfg.image_size, cfg.patch_size
        n = (cfg.image_size // cfg.patch_size) ** 2
        self.embed = nn.Conv2d(3, d, cfg.patch_size, cfg.patch_size)
        self.cls = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, 1 + n, d) * 0.02)
        self.blocks = nn.ModuleList(ToyBlock(d, cfg.num_attention_heads) for _ in range(cfg.num_hidden_layers))
        self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, cfg.num_labels)

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], 1) + self.pos
        for b in self.blocks:
            t = b(t)
        t = self.norm(t)
        return self.head(W_CLS * t[:, 0] + (1 - W_CLS) * t[:, 1:].mean(1))


@dataclass
class ToyConfig(ViTArchConfig):
    pass


@register_family("test_toy_vit", config=ToyConfig,
                 tiny=dict(image_size=16, patch_size=4, hidden_size=8, num_hidden_layers=2, num_attention_heads=2))
class ToyAdapter(ModelAdapter):
    default_card = ModelCard(readout=f"cls*{W_CLS}+patches*{1 - W_CLS}")
    build = staticmethod(ToyViT)

    def __init__(self, model, card: Optional[ModelCard] = None, **card_values):
        g = model.image_size // model.patch
        super().__init__(model, layout=TokenLayout(stages=((g, g),), prefix=1, readout=self.default_card.readout),
                         num_frames=1, image_size=model.image_size, patch_size=model.patch,
                         card=self.make_card(card, **card_values),
                         gradcam_layer=f"blocks.{len(model.blocks) - 1}.norm1")

    @property
    def num_classes(self):
        return self.model.head.out_features

    def _run(self, x):
        return self.model(x[:, 0])

    def blocks(self):
        return list(self.model.blocks)

    def head_modules(self):
        return [self.model.head]

    def hook_points(self):
        return [HookPoint(f"layer{i}", "global", i, b.attn.probs, ln_module=b.norm1)
                for i, b in enumerate(self.blocks())]


def test_the_family_is_registered_with_its_typed_config():
    assert "test_toy_vit" in models.FAMILIES and "test_toy_vit" in models.available()
    a = models.create("test_toy_vit", image_size=16, patch_size=4, hidden_size=8, num_hidden_layers=1,
                      num_attention_heads=2, num_labels=3)
    assert a.family == "test_toy_vit" and a.num_classes == 3 and a.layout.readout.weights == {"cls": 0.25,
                                                                                            "patches": 0.75}
    from xaibench.errors import UserError

    with pytest.raises(UserError, match="num_hidden_layers"):
        models.create("test_toy_vit", num_hidden_layer=3)


def test_the_conformance_suite_sees_this_family():
    """However pytest ordered the modules, test_conformance judges this family: by parametrisation when it was
    registered before test_conformance was collected, else by the run-time sweep over late families."""
    import test_conformance as T

    assert "test_toy_vit" in set(T.COLLECTED) | set(T.late_families())
    C.conform(C.tiny("test_toy_vit"), checks=["readout", "attention", "reshape_tokens", "blocks", "randomised"])


def test_methods_use_the_declared_readout_weights():
    """Attention rows read with the declared weights: v0 = 1/4 e_CLS + 3/4 mean over the patches, so the
    explanation of ``attention`` is (1/4) A[CLS, patches] + (3/4) mean_i A[patch_i, patches] (head mean)."""
    a = C.tiny("test_toy_vit")
    x = C.sample_input(a, 1, seed=5)
    tr = a.trace(x, attentions=True, layers=[-1])
    A = tr.attentions[-1].probs[0].mean(0).double()  # (n, n)
    expected = (W_CLS * A[0, 1:] + (1 - W_CLS) * A[1:, 1:].mean(0)).reshape(*a.grid)
    e = methods.create("attention").explain_batch(a, x, [0])[0]
    torch.testing.assert_close(e.token_map[0], expected.float())
