"""timm ViT (``VisionTransformer``) and DeiT with a distillation token (``VisionTransformerDistilled``;
Touvron et al., ICML 2021): global attention over [prefix tokens, patches].

Readout, declared from the model's own configuration: with a distillation token the head averages the
CLS and distillation heads at inference (``prefix_mean`` = ``cls`` 0.5 + ``dist`` 0.5); ``global_pool=
'token'`` reads [CLS] (``cls``); ``global_pool='avg'`` the mean of the patch tokens (``pool``).  The
probabilities are hooked at each block's ``attn.attn_drop`` with fused attention turned off.  Blocks:
``model.blocks`` (an ``nn.Sequential``); head: ``head`` (and ``head_dist``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..config import param
from ..errors import UserError
from .base import HookPoint, TokenLayout
from .card import ModelCard
from .family import ViTArchConfig, declare_shipped, register_family
from .pretrained import declare_timm
from .timm_base import TimmAdapter, pair

IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
TINY = dict(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=2, num_attention_heads=2)


@dataclass
class TimmViTConfig(ViTArchConfig):
    mlp_ratio: float = param(4.0, range=(0.25, 64), help="MLP width / token width")
    init_values: Optional[float] = param(None, range=(0, 10), help="layer scale initial value (null: none)")
    global_pool: str = param("token", choices=("token", "avg"), help="what the head reads: [CLS] or the patch mean")


@dataclass
class TimmDeiTConfig(ViTArchConfig):
    mlp_ratio: float = param(4.0, range=(0.25, 64), help="MLP width / token width")


def _kw(cfg) -> dict:
    kw = dict(img_size=cfg.image_size, patch_size=cfg.patch_size, embed_dim=cfg.hidden_size,
              depth=cfg.num_hidden_layers, num_heads=cfg.num_attention_heads, num_classes=cfg.num_labels)
    if cfg.mlp_ratio != 4.0:
        kw["mlp_ratio"] = cfg.mlp_ratio
    return kw


def build_timm_vit(cfg: TimmViTConfig):
    from timm.models.vision_transformer import VisionTransformer

    kw = _kw(cfg)
    if cfg.init_values is not None:
        kw["init_values"] = cfg.init_values
    if cfg.global_pool != "token":
        kw["global_pool"] = cfg.global_pool
    return VisionTransformer(**kw)


def build_timm_deit(cfg: TimmDeiTConfig):
    """As timm's ``deit_tiny_distilled_patch16_224`` but sized by the config; the head averages the CLS and
    distillation heads at inference (readout ``prefix_mean``)."""
    from timm.models.deit import VisionTransformerDistilled

    return VisionTransformerDistilled(**_kw(cfg))


@register_family("timm_vit", config=TimmViTConfig, library="timm", timm_classes=("VisionTransformer",), tiny=TINY)
class TimmViTAdapter(TimmAdapter):
    default_card = ModelCard(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), readout="cls")
    build = staticmethod(build_timm_vit)

    @staticmethod
    def readout_of(model) -> str:
        if getattr(model, "dist_token", None) is not None:
            return "prefix_mean"
        pool = getattr(model, "global_pool", "token")
        if pool in ("token", "avg"):
            return "cls" if pool == "token" else "pool"
        raise UserError(f"timm ViT with global_pool={pool!r} is not supported (token or avg)")

    def __init__(self, model, card: Optional[ModelCard] = None, **card_values):
        readout = self.readout_of(model)
        layout = TokenLayout(frames=1, stages=(pair(model.patch_embed.grid_size),),
                             prefix=int(getattr(model, "num_prefix_tokens", 1)), readout=readout)
        super().__init__(model, layout=layout, card=self.make_card(card, **card_values),
                         gradcam_layer=f"blocks.{len(model.blocks) - 1}.norm1")

    def blocks(self):
        return list(self.model.blocks)

    def hook_points(self):
        return [HookPoint(f"layer{i}", "global", i, b.attn.attn_drop, ln_module=b.norm1)
                for i, b in enumerate(self.blocks())]


@register_family("timm_deit", config=TimmDeiTConfig, library="timm", timm_classes=("VisionTransformerDistilled",),
                 tiny=TINY)
class TimmDeiTAdapter(TimmViTAdapter):
    default_card = ModelCard(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), readout="prefix_mean")
    build = staticmethod(build_timm_deit)


declare_timm(ModelCard(
    name="pretrained_timm_vit_b16", family="timm_vit", timm_name="vit_base_patch16_224",
    description="timm ViT-B/16 (default tag augreg2_in21k_ft_in1k)", frames=1, image_size=224,
    num_classes=1000, label_set="imagenet1k", readout="cls"))

declare_timm(ModelCard(
    name="pretrained_deit_s", family="timm_vit", timm_name="deit_small_patch16_224",
    description="timm DeiT-S (fb_in1k, no distillation token)", frames=1, image_size=224, num_classes=1000,
    label_set="imagenet1k", readout="cls", **IMAGENET))

declare_shipped(ModelCard(
    name="timm_vit_synth", family="timm_vit", label_set="synthetic_image", readout="cls", frames=1, image_size=64,
    description="the project's small timm ViT trained on the synthetic image benchmark",
    mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), num_classes=4, dataset="synthetic_image",
    weights_sha256="5a8aa3907e7648e386cdfb30d2af78111506e89332031dbd000658827575d963"))

declare_shipped(ModelCard(
    name="deit_synth", family="timm_deit", label_set="synthetic_image", readout="prefix_mean", frames=1,
    image_size=64, description="the project's small DeiT with a distillation token on the synthetic images",
    mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), num_classes=4, dataset="synthetic_image",
    weights_sha256="09b67b435df7d4d279e599ed2337b094441acadf5da348ce1097d927d44d1231"))
