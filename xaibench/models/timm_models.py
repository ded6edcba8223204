"""Adapters over ``timm`` ViT / DeiT and Swin.

timm computes attention with a fused kernel by default, so the probabilities
never exist; the adapters turn ``fused_attn`` off on every attention module and
hook ``attn_drop`` (protocols.md section 5).  timm Swin keeps (B, H, W, C)
maps; its window partition order and cyclic shift match Hugging Face's.
"""

from __future__ import annotations

from typing import List

from torch import nn

from .base import ModelAdapter


def _unfuse(model: nn.Module) -> None:
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False


class TimmAdapter(ModelAdapter):
    source = "timm"

    @property
    def num_classes(self) -> int:
        return int(self.model.num_classes)

    default_mean = (0.5, 0.5, 0.5)
    default_std = (0.5, 0.5, 0.5)

    def __init__(self, model, *, name, mean=None, std=None, labels=None, gradcam_layer=None):
        _unfuse(model)
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        super().__init__(
            model,
            name=name,
            num_frames=1,
            image_size=model.patch_embed.img_size[0],
            patch_size=model.patch_embed.patch_size[0],
            mean=mean or cfg.get("mean", self.default_mean),
            std=std or cfg.get("std", self.default_std),
            labels=labels,
            gradcam_layer=gradcam_layer,
        )

    def _run(self, x):
        return self.model(x[:, 0])


class TimmViTAdapter(TimmAdapter):
    arch = "vit"

    def __init__(self, model, *, name="timm_vit", mean=None, std=None, labels=None):
        self.has_cls = getattr(model, "cls_token", None) is not None
        self.num_prefix = int(getattr(model, "num_prefix_tokens", 1))
        super().__init__(model, name=name, mean=mean, std=std, labels=labels,
                         gradcam_layer=f"blocks.{len(model.blocks) - 1}.norm1")

    def _hook_points(self):
        return [
            dict(name=f"layer{i}", kind="global", probs_module=b.attn.attn_drop, ln_module=b.norm1,
                 has_cls=self.has_cls)
            for i, b in enumerate(self.model.blocks)
        ]


class TimmSwinAdapter(TimmAdapter):
    arch = "swin"
    default_mean = (0.485, 0.456, 0.406)
    default_std = (0.229, 0.224, 0.225)

    def __init__(self, model, *, name="timm_swin", mean=None, std=None, labels=None):
        self.blocks: List[nn.Module] = [b for layer in model.layers for b in layer.blocks]
        names = {m: n for n, m in model.named_modules()}
        super().__init__(model, name=name, mean=mean, std=std, labels=labels,
                         gradcam_layer=names[self.blocks[-1].norm2])

    def _hook_points(self):
        return [
            dict(name=f"block{i}", kind="window", probs_module=b.attn.attn_drop, ln_module=b.norm1, block=b,
                 grid=tuple(b.input_resolution), has_cls=False)
            for i, b in enumerate(self.blocks)
        ]


def build_timm_vit(num_labels=4, image_size=64, patch_size=8, hidden_size=96, num_hidden_layers=4,
                   num_attention_heads=4, **kw):
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(img_size=image_size, patch_size=patch_size, embed_dim=hidden_size,
                             depth=num_hidden_layers, num_heads=num_attention_heads, num_classes=num_labels, **kw)


def build_timm_swin(num_labels=4, image_size=64, patch_size=4, embed_dim=48, depths=(2, 2), num_heads=(3, 6),
                    window_size=4, **kw):
    from timm.models.swin_transformer import SwinTransformer

    return SwinTransformer(img_size=image_size, patch_size=patch_size, embed_dim=embed_dim, depths=tuple(depths),
                           num_heads=tuple(num_heads), window_size=window_size, num_classes=num_labels, **kw)
