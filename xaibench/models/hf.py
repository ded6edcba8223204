"""Adapters over Hugging Face ``transformers`` TimeSformer, ViT (and DeiT) and Swin.

Attention is captured with forward hooks on the modules that produce the
probabilities actually multiplied with the values:

* TimeSformer: ``attn_drop`` of the spatial (``layer.attention``) and temporal
  (``layer.temporal_attention``) self-attention, the latter never being returned
  by ``output_attentions`` (protocols.md section 1).  HF orders TimeSformer
  patch tokens patch-major, frame-minor; the temporal attention batch axis is
  ``b * P + p``, the spatial one ``b * T + t``.
* ViT / Swin: the attention module's output tuple ``(context, probs)``; this
  needs ``eager`` attention (SDPA never materialises the probabilities), which
  :func:`force_eager` sets.
"""

from __future__ import annotations

from typing import List

import torch
from torch import nn

from .base import ModelAdapter


def force_eager(model: nn.Module) -> nn.Module:
    """Switch a transformers model to eager attention so probabilities exist."""
    if hasattr(model, "set_attn_implementation"):
        try:
            model.set_attn_implementation("eager")
        except Exception:  # older API
            model.config._attn_implementation = "eager"
    else:
        model.config._attn_implementation = "eager"
    for m in model.modules():
        cfg = getattr(m, "config", None)
        if cfg is not None and hasattr(cfg, "_attn_implementation"):
            cfg._attn_implementation = "eager"
    return model


def _labels(model) -> list:
    id2label = getattr(model.config, "id2label", None) or {}
    n = model.config.num_labels
    return [str(id2label.get(i, id2label.get(str(i), f"class_{i}"))) for i in range(n)]


class HFAdapter(ModelAdapter):
    source = "hf"

    @property
    def num_classes(self) -> int:
        return int(self.model.config.num_labels)


class HFTimesformerAdapter(HFAdapter):
    arch = "timesformer"

    def __init__(self, model, *, name="hf_timesformer", mean=(0.45, 0.45, 0.45), std=(0.225, 0.225, 0.225)):
        cfg = model.config
        if cfg.attention_type != "divided_space_time":
            raise ValueError("only divided space-time TimeSformer is supported")
        super().__init__(
            model,
            name=name,
            num_frames=cfg.num_frames,
            image_size=cfg.image_size,
            patch_size=cfg.patch_size,
            mean=mean,
            std=std,
            labels=_labels(model),
            gradcam_layer=f"timesformer.encoder.layer.{cfg.num_hidden_layers - 1}.layernorm_before",
        )
        self.layers = list(model.timesformer.encoder.layer)

    def _run(self, x):
        return self.model(pixel_values=x).logits

    def _hook_points(self) -> List[dict]:
        pts = []
        for i, layer in enumerate(self.layers):
            pts.append(
                dict(
                    name=f"layer{i}.temporal",
                    kind="temporal",
                    probs_module=layer.temporal_attention.attention.attn_drop,
                    ln_module=layer.temporal_layernorm,
                    has_cls=False,
                )
            )
            pts.append(
                dict(
                    name=f"layer{i}.spatial",
                    kind="spatial",
                    probs_module=layer.attention.attention.attn_drop,
                    ln_module=layer.layernorm_before,
                )
            )
        return pts

    def _layout(self, rec, t, batch):
        if rec.kind == "temporal":  # (B*P, Hd, T, T) with P in (h, w) row-major order
            return t.reshape(batch, -1, *t.shape[1:])
        return super()._layout(rec, t, batch)


def _find_blocks(model: nn.Module) -> List[nn.Module]:
    """Transformer blocks in forward order: modules with ``attention`` and ``layernorm_before``."""
    return [m for m in model.modules() if hasattr(m, "attention") and hasattr(m, "layernorm_before")]


class HFImageAdapter(HFAdapter):
    """Shared construction of the HF image models (ViT/DeiT, Swin): eager attention, blocks in forward order."""

    gradcam_attr = "layernorm_before"  # default Grad-CAM module of the last block

    def __init__(self, model, *, name, mean, std):
        force_eager(model)
        cfg = model.config
        self.blocks = _find_blocks(model)
        names = {m: n for n, m in model.named_modules()}
        super().__init__(
            model,
            name=name,
            num_frames=1,
            image_size=cfg.image_size,
            patch_size=cfg.patch_size,
            mean=mean,
            std=std,
            labels=_labels(model),
            gradcam_layer=names[getattr(self.blocks[-1], self.gradcam_attr)],
        )

    def _run(self, x):
        return self.model(pixel_values=x[:, 0]).logits


class HFViTAdapter(HFImageAdapter):
    arch = "vit"

    def __init__(self, model, *, name="hf_vit", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)):
        super().__init__(model, name=name, mean=mean, std=std)

    def _hook_points(self):
        return [
            dict(name=f"layer{i}", kind="global", probs_module=b.attention, ln_module=b.layernorm_before)
            for i, b in enumerate(self.blocks)
        ]


class HFSwinAdapter(HFImageAdapter):
    arch = "swin"
    gradcam_attr = "layernorm_after"

    def __init__(self, model, *, name="hf_swin", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)):
        super().__init__(model, name=name, mean=mean, std=std)

    def _hook_points(self):
        return [
            dict(
                name=f"block{i}",
                kind="window",
                probs_module=b.attention,
                ln_module=b.layernorm_before,
                block=b,
                grid=tuple(b.input_resolution),
                has_cls=False,
            )
            for i, b in enumerate(self.blocks)
        ]


# ----------------------------------------------------------------- builders
def build_hf_timesformer(num_labels=4, image_size=64, patch_size=8, num_frames=8, hidden_size=96,
                         num_hidden_layers=4, num_attention_heads=4, intermediate_size=None, **kw):
    from transformers import TimesformerConfig, TimesformerForVideoClassification

    cfg = TimesformerConfig(
        num_labels=num_labels, image_size=image_size, patch_size=patch_size, num_frames=num_frames,
        hidden_size=hidden_size, num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size or 4 * hidden_size, **kw,
    )
    return TimesformerForVideoClassification(cfg)


def build_hf_vit(num_labels=4, image_size=64, patch_size=8, hidden_size=96, num_hidden_layers=4,
                 num_attention_heads=4, intermediate_size=None, **kw):
    from transformers import ViTConfig, ViTForImageClassification

    cfg = ViTConfig(
        num_labels=num_labels, image_size=image_size, patch_size=patch_size, hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size or 4 * hidden_size, attn_implementation="eager", **kw,
    )
    return ViTForImageClassification(cfg)


def build_hf_swin(num_labels=4, image_size=64, patch_size=4, embed_dim=48, depths=(2, 2), num_heads=(3, 6),
                  window_size=4, **kw):
    from transformers import SwinConfig, SwinForImageClassification

    cfg = SwinConfig(
        num_labels=num_labels, image_size=image_size, patch_size=patch_size, embed_dim=embed_dim,
        depths=list(depths), num_heads=list(num_heads), window_size=window_size,
        attn_implementation="eager", **kw,
    )
    return SwinForImageClassification(cfg)
