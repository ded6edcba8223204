"""Hugging Face ViViT (``VivitForVideoClassification``; Arnab et al., ICCV 2021, the unfactorised "model 1"):
*joint* space-time attention over tubelet tokens, with a [CLS] before them; the head reads the final [CLS].

Tubelets as VideoMAE's (:mod:`xaibench.models.hf_videomae`: frame-major, row-major).  Probabilities: the
second output of ``VivitAttention`` (``layer.attention``; eager attention forced).  Default normalisation:
the public ``VivitImageProcessor`` maps 8-bit pixels ``v`` to ``(v / 127.5 - 1 - 0.5) / 0.5``, i.e.
``(u - 0.75) / 0.25`` for ``u = v / 255`` in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..config import param
from ..errors import UserError
from .base import HookPoint
from .card import ModelCard
from .family import VideoArchConfig, declare_shipped, divides, register_family
from .hf_base import HFAdapter, hf_labels, module_name
from .hf_videomae import tubelet_layout
from .pretrained import declare_hf


@dataclass
class VivitConfig(VideoArchConfig):
    tubelet_size: int = param(2, range=(1, 64), help="input frames per token frame (divides num_frames)")
    intermediate_size: Optional[int] = param(None, range=(1, 65536), help="MLP width (null: 4 x hidden_size)")

    def validate(self):
        super().validate()
        divides(self, "tubelet_size", "num_frames")


def build_hf_vivit(cfg: VivitConfig):
    from transformers import VivitConfig as HFConfig, VivitForVideoClassification

    hf = HFConfig(num_labels=cfg.num_labels, image_size=cfg.image_size, num_frames=cfg.num_frames,
                  tubelet_size=[cfg.tubelet_size, cfg.patch_size, cfg.patch_size], hidden_size=cfg.hidden_size,
                  num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
                  intermediate_size=cfg.intermediate_size or 4 * cfg.hidden_size, attn_implementation="eager")
    return VivitForVideoClassification(hf)


@register_family("hf_vivit", config=VivitConfig, library="transformers", hf_model_type="vivit",
                 hf_class="VivitForVideoClassification",
                 processor_defaults=dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop=True,
                                         rescale_factor=1 / 127.5, offset=True),
                 tiny=dict(image_size=32, patch_size=8, num_frames=4, tubelet_size=2, hidden_size=16,
                           num_hidden_layers=2, num_attention_heads=2))
class HFVivitAdapter(HFAdapter):
    default_card = ModelCard(mean=(0.75, 0.75, 0.75), std=(0.25, 0.25, 0.25), readout="cls")
    build = staticmethod(build_hf_vivit)
    video = True

    def __init__(self, model, card: Optional[ModelCard] = None, **card_values):
        cfg = model.config
        t, ph, pw = (int(v) for v in cfg.tubelet_size)
        if ph != pw:
            raise UserError(f"ViViT tubelets of {ph} x {pw} px are not square; only square patches are supported")
        layout = tubelet_layout(cfg, t, ph, prefix=1, readout="cls")
        super().__init__(model, layout=layout, num_frames=cfg.num_frames, image_size=cfg.image_size, patch_size=ph,
                         labels=hf_labels(model), card=self.make_card(card, **card_values))
        self.gradcam_layer = module_name(model, self.blocks()[-1].layernorm_before)

    def blocks(self):
        return self.encoder_layers()

    def hook_points(self):
        return [HookPoint(f"layer{i}", "global", i, b.attention, ln_module=b.layernorm_before)
                for i, b in enumerate(self.blocks())]


declare_hf(ModelCard(
    name="pretrained_vivit_k400", family="hf_vivit", hub_id="google/vivit-b-16x2-kinetics400",
    description="ViViT-B 16x2 on Kinetics-400 (32 x 224 x 224, tubelets of 2, CLS head)", frames=32,
    image_size=224, resize=224, mean=(0.75, 0.75, 0.75), std=(0.25, 0.25, 0.25), num_classes=400,
    label_set="kinetics400", readout="cls"))

declare_shipped(ModelCard(
    name="vivit_synth", family="hf_vivit", label_set="synthetic_video", readout="cls", frames=8, image_size=64,
    description="the project's small ViViT trained from scratch on the synthetic video benchmark",
    mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), num_classes=4, dataset="synthetic_video",
    weights_sha256="81d6299bc5131c9c4135aff6b236ed89944fb20b4364154ae93a586703c09ecc"))
