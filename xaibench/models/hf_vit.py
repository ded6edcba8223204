"""Hugging Face ViT (``ViTForImageClassification``; Dosovitskiy et al., ICLR 2021): one [CLS] token before
the patches, global attention, the head reads the final [CLS].

The probabilities are the second output of the block's attention module (``layer.attention``), the tensor
transformers itself records for ``output_attentions``; eager attention is forced.  The adapter reads the
blocks through ``base_model_prefix``, so DeiT checkpoints in ViT form (``DeiTForImageClassification``) wrap
too (with their own layout caveats: docs/lrp.md).  Default normalisation: mean 0.5, std 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..config import param
from .base import HookPoint, TokenLayout
from .card import ModelCard
from .family import ViTArchConfig, declare_shipped, register_family
from .hf_base import HFAdapter, hf_labels, module_name
from .pretrained import declare_hf


@dataclass
class HFViTConfig(ViTArchConfig):
    intermediate_size: Optional[int] = param(None, range=(1, 65536), help="MLP width (null: 4 x hidden_size)")


def build_hf_vit(cfg: HFViTConfig):
    from transformers import ViTConfig, ViTForImageClassification

    hf = ViTConfig(num_labels=cfg.num_labels, image_size=cfg.image_size, patch_size=cfg.patch_size,
                   hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_hidden_layers,
                   num_attention_heads=cfg.num_attention_heads,
                   intermediate_size=cfg.intermediate_size or 4 * cfg.hidden_size, attn_implementation="eager")
    return ViTForImageClassification(hf)


@register_family("hf_vit", config=HFViTConfig, library="transformers", hf_model_type="vit",
                 hf_class="ViTForImageClassification",
                 processor_defaults=dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop=False),
                 tiny=dict(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=2, num_attention_heads=2))
class HFViTAdapter(HFAdapter):
    default_card = ModelCard(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), readout="cls")
    build = staticmethod(build_hf_vit)

    def __init__(self, model, card: Optional[ModelCard] = None, **card_values):
        cfg = model.config
        g = cfg.image_size // cfg.patch_size
        super().__init__(model, layout=TokenLayout(frames=1, stages=((g, g),), prefix=1, readout="cls"),
                         num_frames=1, image_size=cfg.image_size, patch_size=cfg.patch_size, labels=hf_labels(model),
                         card=self.make_card(card, **card_values))
        self.gradcam_layer = module_name(model, self.blocks()[-1].layernorm_before)

    def blocks(self):
        return self.encoder_layers()

    def hook_points(self):
        return [HookPoint(f"layer{i}", "global", i, b.attention, ln_module=b.layernorm_before)
                for i, b in enumerate(self.blocks())]


declare_hf(ModelCard(
    name="pretrained_vit_b16", family="hf_vit", hub_id="google/vit-base-patch16-224",
    description="ViT-B/16 (ImageNet-21k pre-trained, ImageNet-1k fine-tuned)", frames=1, image_size=224,
    resize=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), num_classes=1000, label_set="imagenet1k", readout="cls"))

declare_shipped(ModelCard(
    name="vit_synth", family="hf_vit", label_set="synthetic_image", readout="cls", frames=1, image_size=64,
    description="the project's small ViT trained on the synthetic image benchmark",
    mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), num_classes=4, dataset="synthetic_image",
    weights_sha256="7c9a24411edab319e2b84d7d986600716cd3d7fa5f5845b4fa3829853e7a0518"))
