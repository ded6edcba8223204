"""Hugging Face VideoMAE (``VideoMAEForVideoClassification``; Tong et al., NeurIPS 2022): *joint*
space-time attention over tubelet tokens, no [CLS].

One ``Conv3d`` (kernel = stride = ``(tubelet, patch, patch)``) cuts the clip into tubelets and ``flatten(2)``
orders them frame-major, row-major -- the stage token vector with no reordering (the conformance suite
marks one tubelet).  Every block attends over all tokens of all token frames: one ``global`` record per
block, the second output of ``VideoMAESelfAttention`` (``layer.attention.attention``, the module
transformers records for ``output_attentions``).  With ``use_mean_pooling`` (the fine-tuned checkpoints)
the head reads ``fc_norm(mean of the final tokens)``: readout ``pool``.  Default normalisation: the
ImageNet mean / std of the original VideoMAE code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..config import param
from ..errors import UserError
from .base import HookPoint, TokenLayout
from .card import ModelCard
from .family import VideoArchConfig, declare_shipped, divides, register_family
from .hf_base import HFAdapter, hf_labels, module_name
from .pretrained import declare_hf

IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


@dataclass
class VideoMAEConfig(VideoArchConfig):
    tubelet_size: int = param(2, range=(1, 64), help="input frames per token frame (divides num_frames)")
    intermediate_size: Optional[int] = param(None, range=(1, 65536), help="MLP width (null: 4 x hidden_size)")

    def validate(self):
        super().validate()
        divides(self, "tubelet_size", "num_frames")


def build_hf_videomae(cfg: VideoMAEConfig):
    from transformers import VideoMAEConfig as HFConfig, VideoMAEForVideoClassification

    hf = HFConfig(num_labels=cfg.num_labels, image_size=cfg.image_size, patch_size=cfg.patch_size,
                  num_frames=cfg.num_frames, tubelet_size=cfg.tubelet_size, hidden_size=cfg.hidden_size,
                  num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
                  intermediate_size=cfg.intermediate_size or 4 * cfg.hidden_size, use_mean_pooling=True,
                  attn_implementation="eager")
    return VideoMAEForVideoClassification(hf)


def tubelet_layout(cfg, tubelet: int, patch: int, prefix: int, readout: str) -> TokenLayout:
    if cfg.num_frames % tubelet or cfg.image_size % patch:
        raise UserError(f"{cfg.num_frames} frames of {cfg.image_size} px do not split into tubelets of "
                        f"{tubelet} frames x {patch} px")
    g = cfg.image_size // patch
    return TokenLayout(frames=cfg.num_frames // tubelet, tubelet=tubelet, stages=((g, g),), prefix=prefix,
                       readout=readout)


@register_family("hf_videomae", config=VideoMAEConfig, library="transformers", hf_model_type="videomae",
                 hf_class="VideoMAEForVideoClassification", processor_defaults=dict(IMAGENET, crop=True),
                 tiny=dict(image_size=32, patch_size=8, num_frames=4, tubelet_size=2, hidden_size=16,
                           num_hidden_layers=2, num_attention_heads=2))
class HFVideoMAEAdapter(HFAdapter):
    default_card = ModelCard(readout="pool", **IMAGENET)
    build = staticmethod(build_hf_videomae)
    video = True

    def __init__(self, model, card: Optional[ModelCard] = None, **card_values):
        cfg = model.config
        if not cfg.use_mean_pooling:
            raise UserError("VideoMAE with use_mean_pooling=False reads its first *patch* token (it has no CLS); "
                            "only mean-pooled classifiers (the fine-tuned checkpoints) are supported")
        layout = tubelet_layout(cfg, int(cfg.tubelet_size), int(cfg.patch_size), prefix=0, readout="pool")
        super().__init__(model, layout=layout, num_frames=cfg.num_frames, image_size=cfg.image_size,
                         patch_size=int(cfg.patch_size), labels=hf_labels(model),
                         card=self.make_card(card, **card_values))
        self.gradcam_layer = module_name(model, self.blocks()[-1].layernorm_before)

    def blocks(self):
        return self.encoder_layers()

    def hook_points(self):
        return [HookPoint(f"layer{i}", "global", i, b.attention.attention, ln_module=b.layernorm_before)
                for i, b in enumerate(self.blocks())]


declare_hf(ModelCard(
    name="pretrained_videomae_k400", family="hf_videomae", hub_id="MCG-NJU/videomae-base-finetuned-kinetics",
    description="VideoMAE-base fine-tuned on Kinetics-400 (16 x 224 x 224, tubelets of 2, mean-pooled head)",
    frames=16, image_size=224, resize=224, num_classes=400, label_set="kinetics400", readout="pool", **IMAGENET))

declare_shipped(ModelCard(
    name="videomae_synth", family="hf_videomae", label_set="synthetic_video", readout="pool", frames=8,
    image_size=64, description="the project's small VideoMAE trained from scratch on the synthetic video benchmark",
    mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), num_classes=4, dataset="synthetic_video",
    weights_sha256="e97810f9a05e286fe2d1a5caa059d23e9f117cc6aaf5fdd36836a60ee4587264"))
