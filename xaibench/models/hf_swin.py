"""Hugging Face Swin Transformer (``SwinForImageClassification``; Liu et al., ICCV 2021): shifted-window
attention in stages that halve the token grid (2 x 2 patch merging); no prefix token, the head reads the
mean of the final tokens.

The probabilities are the second output of each block's ``attention`` module (eager attention forced);
each record carries the block's window and shift (alternating 0 and window // 2).  ``output_attentions``
returns only the last block of each stage, which the conformance suite compares.  Default normalisation:
the ImageNet mean and std.
"""

from __future__ import annotations

from typing import Optional

from .base import HookPoint, TokenLayout
from .card import ModelCard
from .family import SwinArchConfig, declare_shipped, register_family
from .hf_base import HFAdapter, _first, hf_labels, module_name
from .pretrained import declare_hf

IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def build_hf_swin(cfg: SwinArchConfig):
    from transformers import SwinConfig, SwinForImageClassification

    hf = SwinConfig(num_labels=cfg.num_labels, image_size=cfg.image_size, patch_size=cfg.patch_size,
                    embed_dim=cfg.embed_dim, depths=list(cfg.depths), num_heads=list(cfg.num_heads),
                    window_size=cfg.window_size, attn_implementation="eager")
    return SwinForImageClassification(hf)


@register_family("hf_swin", config=SwinArchConfig, library="transformers", hf_model_type="swin",
                 hf_class="SwinForImageClassification", processor_defaults=dict(IMAGENET, crop=False),
                 tiny=dict(image_size=32, patch_size=4, embed_dim=8, depths=[2, 2], num_heads=[2, 2], window_size=4))
class HFSwinAdapter(HFAdapter):
    default_card = ModelCard(readout="pool", **IMAGENET)
    build = staticmethod(build_hf_swin)

    def __init__(self, model, card: Optional[ModelCard] = None, **card_values):
        cfg = model.config
        grids = [tuple(int(v) for v in b.input_resolution) for b in self._blocks(model)]
        stages = tuple(sorted(set(grids), key=grids.index))
        super().__init__(model, layout=TokenLayout(frames=1, stages=stages, prefix=0, readout="pool"),
                         num_frames=1, image_size=cfg.image_size, patch_size=cfg.patch_size, labels=hf_labels(model),
                         card=self.make_card(card, **card_values))
        self.gradcam_layer = module_name(model, self.blocks()[-1].layernorm_after)

    @staticmethod
    def _blocks(model):
        return [b for stage in getattr(model, model.base_model_prefix).encoder.layers for b in stage.blocks]

    def blocks(self):
        return self._blocks(self.model)

    def hook_points(self):
        stages = list(self.layout.stages)
        return [HookPoint(f"block{i}", "window", i, b.attention, ln_module=b.layernorm_before,
                          stage=stages.index(tuple(int(v) for v in b.input_resolution)),
                          window_shift=(lambda b=b: (_first(b.window_size), _first(b.shift_size))))
                for i, b in enumerate(self.blocks())]

    def library_records(self):
        last = {}
        for p in self.hook_points():
            last[p.stage] = (p.name, p.kind)  # output_attentions: the last block of each stage
        return [last[s] for s in sorted(last)]


declare_hf(ModelCard(
    name="pretrained_swin_t", family="hf_swin", hub_id="microsoft/swin-tiny-patch4-window7-224",
    description="Swin-T (ImageNet-1k)", frames=1, image_size=224, resize=224, num_classes=1000,
    label_set="imagenet1k", readout="pool", **IMAGENET))

declare_shipped(ModelCard(
    name="swin_synth", family="hf_swin", label_set="synthetic_image", readout="pool", frames=1, image_size=64,
    description="the project's small Swin trained on the synthetic image benchmark",
    mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), num_classes=4, dataset="synthetic_image",
    weights_sha256="56f71582a34f373e95eee672f13b1001c8871ce5c87221688c82683f0728317a"))
