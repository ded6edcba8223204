"""Hugging Face TimeSformer (``TimesformerForVideoClassification``; Bertasius et al., ICML 2021): *divided*
space-time attention.

Each block attends first over time (every patch with its own T frames: ``temporal_attention``), then over
space (every frame's patches with a copy of [CLS]: ``attention``); the head reads the final [CLS].  The
probabilities are hooked at the ``attn_drop`` of both self-attentions; the temporal ones are never
returned by ``output_attentions`` (docs/protocols.md, "STAA").  HF keeps the patch tokens patch-major,
frame-minor (token ``1 + p * T + t``); the temporal attention's batch axis is ``b * P + p``, the spatial
one's ``b * T + t``.  Default normalisation: mean 0.45, std 0.225 (the public image processor).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from ..config import param
from ..errors import UserError
from .base import HookPoint, TokenLayout
from .card import ModelCard
from .family import VideoArchConfig, declare_shipped, register_family
from .hf_base import HFAdapter, hf_labels, module_name
from .pretrained import declare_hf


@dataclass
class TimesformerConfig(VideoArchConfig):
    intermediate_size: Optional[int] = param(None, range=(1, 65536), help="MLP width (null: 4 x hidden_size)")


def build_hf_timesformer(cfg: TimesformerConfig):
    from transformers import TimesformerConfig as HFConfig, TimesformerForVideoClassification

    hf = HFConfig(num_labels=cfg.num_labels, image_size=cfg.image_size, patch_size=cfg.patch_size,
                  num_frames=cfg.num_frames, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_hidden_layers,
                  num_attention_heads=cfg.num_attention_heads,
                  intermediate_size=cfg.intermediate_size or 4 * cfg.hidden_size)
    return TimesformerForVideoClassification(hf)


MEAN, STD = (0.45, 0.45, 0.45), (0.225, 0.225, 0.225)


@register_family("hf_timesformer", config=TimesformerConfig, library="transformers", hf_model_type="timesformer",
                 hf_class="TimesformerForVideoClassification",
                 processor_defaults=dict(mean=MEAN, std=STD, crop=True),
                 tiny=dict(image_size=32, patch_size=8, num_frames=4, hidden_size=16, num_hidden_layers=2,
                           num_attention_heads=2))
class HFTimesformerAdapter(HFAdapter):
    default_card = ModelCard(mean=MEAN, std=STD, readout="cls", interpolation="bilinear")
    build = staticmethod(build_hf_timesformer)
    video = True
    eager = False  # TimeSformer's attention is always computed eagerly

    def __init__(self, model, card: Optional[ModelCard] = None, **card_values):
        cfg = model.config
        if cfg.attention_type != "divided_space_time":
            raise UserError("only divided space-time TimeSformer is supported")
        g = cfg.image_size // cfg.patch_size
        super().__init__(
            model, layout=TokenLayout(frames=cfg.num_frames, stages=((g, g),), prefix=1, readout="cls"),
            num_frames=cfg.num_frames, image_size=cfg.image_size, patch_size=cfg.patch_size,
            labels=hf_labels(model), card=self.make_card(card, **card_values))
        self.gradcam_layer = module_name(model, self.blocks()[-1].layernorm_before)

    def blocks(self):
        return self.encoder_layers()

    def hook_points(self) -> List[HookPoint]:
        pts = []
        for i, layer in enumerate(self.blocks()):
            pts.append(HookPoint(f"layer{i}.temporal", "temporal", i, layer.temporal_attention.attention.attn_drop,
                                 ln_module=layer.temporal_layernorm))
            pts.append(HookPoint(f"layer{i}.spatial", "spatial", i, layer.attention.attention.attn_drop,
                                 ln_module=layer.layernorm_before))
        return pts

    def library_records(self):
        return [(p.name, p.kind) for p in self.hook_points() if p.kind == "spatial"]  # no temporal ones

    def reshape_tokens(self, act, batch):
        L = self.layout
        h, w = L.grid
        if act.dim() == 3 and act.shape[0] == batch and act.shape[1] == 1 + L.frames * h * w:
            # hidden states: [CLS] + patches in HF's patch-major, frame-minor order (token 1 + p*T + t)
            return act[:, 1:].reshape(batch, h, w, L.frames, -1).permute(0, 3, 1, 2, 4)
        return super().reshape_tokens(act, batch)


declare_hf(ModelCard(
    name="pretrained_timesformer_k400", family="hf_timesformer", hub_id="facebook/timesformer-base-finetuned-k400",
    description="TimeSformer-base fine-tuned on Kinetics-400 (8 x 224 x 224, 400 classes)",
    frames=8, image_size=224, resize=224, mean=MEAN, std=STD, num_classes=400, label_set="kinetics400",
    readout="cls"))

declare_shipped(ModelCard(
    name="timesformer_synth", family="hf_timesformer", label_set="synthetic_video", readout="cls",
    description="the project's small TimeSformer trained on the synthetic video benchmark",
    frames=8, image_size=64, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), num_classes=4,
    dataset="synthetic_video",
    weights_sha256="d24394189e9465b08de8929c5565436bac1057d6cdafcf602982050d74361a68"))
