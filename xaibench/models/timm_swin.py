"""timm Swin Transformer (``SwinTransformer``): shifted-window attention in stages of (B, H, W, C) maps; no
prefix token, the head pools the final tokens (readout ``pool``).

The probabilities are hooked at each block's ``attn.attn_drop`` (fused attention off); its window
partition order and cyclic shift match Hugging Face's.  Blocks: ``layers[s].blocks[i]``; head: ``head``
(a ``ClassifierHead``).
"""

from __future__ import annotations

from typing import List, Optional

from torch import nn

from .base import HookPoint, TokenLayout
from .card import ModelCard
from .family import SwinArchConfig, declare_shipped, register_family
from .pretrained import declare_timm
from .timm_base import TimmAdapter, pair

IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def build_timm_swin(cfg: SwinArchConfig):
    from timm.models.swin_transformer import SwinTransformer

    return SwinTransformer(img_size=cfg.image_size, patch_size=cfg.patch_size, embed_dim=cfg.embed_dim,
                           depths=tuple(cfg.depths), num_heads=tuple(cfg.num_heads), window_size=cfg.window_size,
                           num_classes=cfg.num_labels)


@register_family("timm_swin", config=SwinArchConfig, library="timm", timm_classes=("SwinTransformer",),
                 tiny=dict(image_size=32, patch_size=4, embed_dim=8, depths=[2, 2], num_heads=[2, 2], window_size=4))
class TimmSwinAdapter(TimmAdapter):
    default_card = ModelCard(readout="pool", **IMAGENET)
    build = staticmethod(build_timm_swin)

    def __init__(self, model, card: Optional[ModelCard] = None, **card_values):
        grids = [pair(b.input_resolution) for b in self._blocks(model)]
        stages = tuple(sorted(set(grids), key=grids.index))
        names = {m: n for n, m in model.named_modules()}
        super().__init__(model, layout=TokenLayout(frames=1, stages=stages, prefix=0, readout="pool"),
                         card=self.make_card(card, **card_values), gradcam_layer=names[self._blocks(model)[-1].norm2])

    @staticmethod
    def _blocks(model) -> List[nn.Module]:
        return [b for layer in model.layers for b in layer.blocks]

    def blocks(self):
        return self._blocks(self.model)

    def hook_points(self):
        stages = list(self.layout.stages)
        return [HookPoint(f"block{i}", "window", i, b.attn.attn_drop, ln_module=b.norm1,
                          stage=stages.index(pair(b.input_resolution)),
                          window_shift=(lambda b=b: (pair(b.window_size)[0], pair(b.shift_size)[0])))
                for i, b in enumerate(self.blocks())]


declare_timm(ModelCard(
    name="pretrained_timm_swin_t", family="timm_swin", timm_name="swin_tiny_patch4_window7_224",
    description="timm Swin-T (ms_in1k)", frames=1, image_size=224, num_classes=1000, label_set="imagenet1k",
    readout="pool", **IMAGENET))

declare_shipped(ModelCard(
    name="timm_swin_synth", family="timm_swin", label_set="synthetic_image", readout="pool", frames=1, image_size=64,
    description="the project's small timm Swin trained on the synthetic image benchmark",
    mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), num_classes=4, dataset="synthetic_image",
    weights_sha256="40f339ee5f2fdacf7cdfb81a6c1df6529f20bf7c0e369ce83ef754daeaeaa219"))
