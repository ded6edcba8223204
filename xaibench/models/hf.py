"""Adapters over Hugging Face ``transformers`` TimeSformer, ViT (and DeiT) and Swin.

Attention is captured with forward hooks on the modules that produce the
probabilities actually multiplied with the values:

* TimeSformer (divided space-time): ``attn_drop`` of the spatial
  (``layer.attention``) and temporal (``layer.temporal_attention``)
  self-attention; the temporal one is never returned by
  ``output_attentions`` (docs/protocols.md, "STAA").  HF keeps TimeSformer
  patch tokens patch-major, frame-minor; the temporal attention batch axis is
  ``b * P + p``, the spatial one ``b * T + t``.
* ViT / Swin: the attention module's output tuple ``(context, probs)``; this
  needs ``eager`` attention (SDPA never materialises the probabilities), which
  :func:`force_eager` sets.

VideoMAE and ViViT live in :mod:`xaibench.models.hf_video`.
"""

from __future__ import annotations

from typing import List

from torch import nn

from .base import HookPoint, ModelAdapter, TokenLayout


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


def hf_labels(model) -> list:
    id2label = getattr(model.config, "id2label", None) or {}
    n = model.config.num_labels
    return [str(id2label.get(i, id2label.get(str(i), f"class_{i}"))) for i in range(n)]


def module_name(model: nn.Module, module: nn.Module) -> str:
    return next(n for n, m in model.named_modules() if m is module)


class HFAdapter(ModelAdapter):
    @property
    def num_classes(self) -> int:
        return int(self.model.config.num_labels)


class HFTimesformerAdapter(HFAdapter):
    family = "hf_timesformer"

    def __init__(self, model, *, name="hf_timesformer", mean=(0.45, 0.45, 0.45), std=(0.225, 0.225, 0.225)):
        cfg = model.config
        if cfg.attention_type != "divided_space_time":
            raise ValueError("only divided space-time TimeSformer is supported")
        g = cfg.image_size // cfg.patch_size
        super().__init__(
            model, name=name, layout=TokenLayout(frames=cfg.num_frames, stages=((g, g),), prefix=1, readout="cls"),
            num_frames=cfg.num_frames, image_size=cfg.image_size, patch_size=cfg.patch_size, mean=mean, std=std,
            labels=hf_labels(model),
            gradcam_layer=f"timesformer.encoder.layer.{cfg.num_hidden_layers - 1}.layernorm_before",
        )
        self.layers = list(model.timesformer.encoder.layer)

    def _run(self, x):
        return self.model(pixel_values=x).logits

    def hook_points(self) -> List[HookPoint]:
        pts = []
        for i, layer in enumerate(self.layers):
            pts.append(HookPoint(f"layer{i}.temporal", "temporal", i, layer.temporal_attention.attention.attn_drop,
                                 ln_module=layer.temporal_layernorm))
            pts.append(HookPoint(f"layer{i}.spatial", "spatial", i, layer.attention.attention.attn_drop,
                                 ln_module=layer.layernorm_before))
        return pts

    def reshape_tokens(self, act, batch):
        L = self.layout
        h, w = L.grid
        if act.dim() == 3 and act.shape[0] == batch and act.shape[1] == 1 + L.frames * h * w:
            # hidden states: [CLS] + patches in HF's patch-major, frame-minor order (token 1 + p*T + t)
            return act[:, 1:].reshape(batch, h, w, L.frames, -1).permute(0, 3, 1, 2, 4)
        return super().reshape_tokens(act, batch)


def find_blocks(model: nn.Module) -> List[nn.Module]:
    """Transformer blocks in forward order: modules with ``attention`` and ``layernorm_before``."""
    return [m for m in model.modules() if hasattr(m, "attention") and hasattr(m, "layernorm_before")]


class HFViTAdapter(HFAdapter):
    family = "hf_vit"

    def __init__(self, model, *, name="hf_vit", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)):
        force_eager(model)
        cfg = model.config
        self.blocks = find_blocks(model)
        g = cfg.image_size // cfg.patch_size
        super().__init__(
            model, name=name, layout=TokenLayout(frames=1, stages=((g, g),), prefix=1, readout="cls"),
            num_frames=1, image_size=cfg.image_size, patch_size=cfg.patch_size, mean=mean, std=std,
            labels=hf_labels(model), gradcam_layer=module_name(model, self.blocks[-1].layernorm_before),
        )

    def _run(self, x):
        return self.model(pixel_values=x[:, 0]).logits

    def hook_points(self):
        return [HookPoint(f"layer{i}", "global", i, b.attention, ln_module=b.layernorm_before)
                for i, b in enumerate(self.blocks)]


def _first(v) -> int:
    return int(v[0] if isinstance(v, (tuple, list)) else v)


class HFSwinAdapter(HFAdapter):
    family = "hf_swin"

    def __init__(self, model, *, name="hf_swin", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)):
        force_eager(model)
        cfg = model.config
        self.blocks = find_blocks(model)
        grids = [tuple(int(v) for v in b.input_resolution) for b in self.blocks]
        self.stage_of = [sorted(set(grids), key=grids.index).index(g) for g in grids]
        super().__init__(
            model, name=name,
            layout=TokenLayout(frames=1, stages=tuple(sorted(set(grids), key=grids.index)), prefix=0,
                               readout="pool"),
            num_frames=1, image_size=cfg.image_size, patch_size=cfg.patch_size, mean=mean, std=std,
            labels=hf_labels(model), gradcam_layer=module_name(model, self.blocks[-1].layernorm_after),
        )

    def _run(self, x):
        return self.model(pixel_values=x[:, 0]).logits

    def hook_points(self):
        return [HookPoint(f"block{i}", "window", i, b.attention, stage=self.stage_of[i], ln_module=b.layernorm_before,
                          window_shift=(lambda b=b: (_first(b.window_size), _first(b.shift_size))))
                for i, b in enumerate(self.blocks)]


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
