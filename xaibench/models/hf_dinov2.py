"""Hugging Face DINOv2 with a linear classifier (``Dinov2ForImageClassification``; Oquab et al., TMLR 2024).

A plain ViT stack (pre-norm blocks with layer scale) with one [CLS] token; the classifier is one linear
layer on the concatenation of the final [CLS] and the **mean of the final patch tokens** -- readout
``cls+patches`` (weights 0.5 / 0.5).  The probabilities are the second output of each block's
``attention`` module (``Dinov2Attention``, the module transformers records for ``output_attentions``;
eager attention forced).  DINOv2 interpolates its position embeddings to the input, and its public
checkpoints are evaluated at the image processor's crop (224 px, patches of 14: a 16 x 16 grid), not at
the 518 px of their config: a loaded checkpoint takes the processor's crop as its input size.
Default normalisation: the ImageNet mean and std, bicubic resizing (the public ``BitImageProcessor``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..config import param
from .base import HookPoint, TokenLayout
from .card import ModelCard
from .family import ViTArchConfig, register_family
from .hf_base import HFAdapter, hf_labels, module_name
from .pretrained import declare_hf

IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


@dataclass
class Dinov2Config(ViTArchConfig):
    mlp_ratio: int = param(4, range=(1, 64), help="MLP width / token width")
    layerscale_value: float = param(1.0, range=(0, 10), help="initial layer-scale value")
    use_swiglu_ffn: bool = param(False, help="SwiGLU MLP (the giant models) instead of fc1 -> GELU -> fc2")


def build_hf_dinov2(cfg: Dinov2Config):
    from transformers import Dinov2Config as HFConfig, Dinov2ForImageClassification

    hf = HFConfig(num_labels=cfg.num_labels, image_size=cfg.image_size, patch_size=cfg.patch_size,
                  hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_hidden_layers,
                  num_attention_heads=cfg.num_attention_heads, mlp_ratio=cfg.mlp_ratio,
                  layerscale_value=cfg.layerscale_value, use_swiglu_ffn=cfg.use_swiglu_ffn,
                  attn_implementation="eager")
    return Dinov2ForImageClassification(hf)


@register_family("hf_dinov2", config=Dinov2Config, library="transformers", hf_model_type="dinov2",
                 hf_class="Dinov2ForImageClassification", processor_defaults=dict(IMAGENET, crop=True),
                 tiny=dict(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=2, num_attention_heads=2))
class HFDinov2Adapter(HFAdapter):
    default_card = ModelCard(readout="cls+patches", interpolation="bicubic", **IMAGENET)
    build = staticmethod(build_hf_dinov2)
    any_input_size = True  # position embeddings are interpolated to the input

    def __init__(self, model, card: Optional[ModelCard] = None, **card_values):
        card = self.make_card(card, **card_values)
        cfg = model.config
        size = int(card.image_size or cfg.image_size)
        g = size // int(cfg.patch_size)
        super().__init__(model, layout=TokenLayout(frames=1, stages=((g, g),), prefix=1, readout="cls+patches"),
                         num_frames=1, image_size=size, patch_size=cfg.patch_size, labels=hf_labels(model), card=card)
        self.gradcam_layer = module_name(model, self.blocks()[-1].norm1)

    def blocks(self):
        return self.encoder_layers()

    def hook_points(self):
        return [HookPoint(f"layer{i}", "global", i, b.attention, ln_module=b.norm1)
                for i, b in enumerate(self.blocks())]


declare_hf(ModelCard(
    name="pretrained_dinov2_s", family="hf_dinov2", hub_id="facebook/dinov2-small-imagenet1k-1-layer",
    description="DINOv2 ViT-S/14 with a linear ImageNet-1k head on [CLS, mean of patches]", frames=1,
    image_size=224, resize=256, interpolation="bicubic", num_classes=1000, label_set="imagenet1k",
    readout="cls+patches", **IMAGENET))
