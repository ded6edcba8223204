"""Adapters over ``timm`` ViT / DeiT (with or without a distillation token) and Swin.

timm computes attention with a fused kernel by default, so the probabilities
never exist; the adapters turn ``fused_attn`` off on every attention module and
hook ``attn_drop`` (docs/protocols.md, "Models").  timm Swin keeps (B, H, W, C)
maps; its window partition order and cyclic shift match Hugging Face's.

Readout, from the model's own attributes: a distillation token
(``VisionTransformerDistilled``: the head averages the CLS and distillation
heads) -> ``prefix_mean``; ``global_pool='token'`` -> ``cls``;
``global_pool='avg'`` -> ``pool`` (mean of the patch tokens).
"""

from __future__ import annotations

from typing import List

from torch import nn

from ..errors import UserError
from .base import HookPoint, ModelAdapter, TokenLayout


def _unfuse(model: nn.Module) -> None:
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False


def _pair(v):
    return tuple(int(a) for a in v) if isinstance(v, (tuple, list)) else (int(v), int(v))


class TimmAdapter(ModelAdapter):
    default_mean = (0.5, 0.5, 0.5)
    default_std = (0.5, 0.5, 0.5)

    @property
    def num_classes(self) -> int:
        return int(self.model.num_classes)

    def _init(self, model, *, name, layout, mean, std, labels, gradcam_layer):
        _unfuse(model)
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        super().__init__(model, name=name, layout=layout, num_frames=1,
                         image_size=_pair(model.patch_embed.img_size)[0],
                         patch_size=_pair(model.patch_embed.patch_size)[0],
                         mean=mean or cfg.get("mean", self.default_mean), std=std or cfg.get("std", self.default_std),
                         labels=labels, gradcam_layer=gradcam_layer)

    def _run(self, x):
        return self.model(x[:, 0])


class TimmViTAdapter(TimmAdapter):
    family = "timm_vit"

    def __init__(self, model, *, name="timm_vit", mean=None, std=None, labels=None):
        prefix = int(getattr(model, "num_prefix_tokens", 1))
        if getattr(model, "dist_token", None) is not None:
            readout = "prefix_mean"
        elif getattr(model, "global_pool", "token") == "token":
            readout = "cls"
        elif model.global_pool == "avg":
            readout = "pool"
        else:
            raise UserError(f"timm ViT with global_pool={model.global_pool!r} is not supported (token or avg)")
        grid = _pair(model.patch_embed.grid_size)
        self._init(model, name=name, layout=TokenLayout(frames=1, stages=(grid,), prefix=prefix, readout=readout),
                   mean=mean, std=std, labels=labels, gradcam_layer=f"blocks.{len(model.blocks) - 1}.norm1")

    def hook_points(self):
        return [HookPoint(f"layer{i}", "global", i, b.attn.attn_drop, ln_module=b.norm1)
                for i, b in enumerate(self.model.blocks)]


class TimmSwinAdapter(TimmAdapter):
    family = "timm_swin"
    default_mean = (0.485, 0.456, 0.406)
    default_std = (0.229, 0.224, 0.225)

    def __init__(self, model, *, name="timm_swin", mean=None, std=None, labels=None):
        self.blocks: List[nn.Module] = [b for layer in model.layers for b in layer.blocks]
        grids = [_pair(b.input_resolution) for b in self.blocks]
        stages = tuple(sorted(set(grids), key=grids.index))
        self.stage_of = [stages.index(g) for g in grids]
        names = {m: n for n, m in model.named_modules()}
        self._init(model, name=name, layout=TokenLayout(frames=1, stages=stages, prefix=0, readout="pool"),
                   mean=mean, std=std, labels=labels, gradcam_layer=names[self.blocks[-1].norm2])

    def hook_points(self):
        return [HookPoint(f"block{i}", "window", i, b.attn.attn_drop, stage=self.stage_of[i], ln_module=b.norm1,
                          window_shift=(lambda b=b: (_pair(b.window_size)[0], _pair(b.shift_size)[0])))
                for i, b in enumerate(self.blocks)]


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


def build_timm_deit(num_labels=4, image_size=64, patch_size=8, hidden_size=96, num_hidden_layers=4,
                    num_attention_heads=4, **kw):
    """DeiT with a distillation token (``VisionTransformerDistilled``, Touvron et al., ICML 2021), as timm's
    ``deit_tiny_distilled_patch16_224`` but sized by the arguments; the head averages the CLS and distillation
    heads at inference (readout ``prefix_mean``)."""
    from timm.models.deit import VisionTransformerDistilled

    return VisionTransformerDistilled(img_size=image_size, patch_size=patch_size, embed_dim=hidden_size,
                                      depth=num_hidden_layers, num_heads=num_attention_heads,
                                      num_classes=num_labels, **kw)
