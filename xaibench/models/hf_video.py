"""Adapters over Hugging Face VideoMAE and ViViT: *joint* space-time attention over tubelet tokens.

Both models cut the clip into tubelets with one ``Conv3d`` (kernel = stride =
``(tubelet, patch, patch)``) and flatten its output ``(B, D, T', h, w)`` with
``flatten(2)``, so the patch tokens are already frame-major, row-major
(token ``(t, y, x)`` at ``(t * h + y) * w + x``) -- the stage token vector of
:mod:`xaibench.models.base` with no reordering (``tests/test_families.py``
checks it by marking one tubelet).  Every layer attends over all tokens of all
token frames at once: one ``global`` record per layer.

* **VideoMAE** (``VideoMAEForVideoClassification``, Tong et al., NeurIPS 2022):
  no CLS token; with ``use_mean_pooling`` (the fine-tuned checkpoints) the head
  reads ``fc_norm(mean of the final tokens)`` -> prefix 0, readout ``pool``.
  The probabilities are the second output of ``VideoMAESelfAttention``
  (``layer.attention.attention``), the module transformers itself records for
  ``output_attentions``.  Default normalisation: the ImageNet mean / std of the
  original VideoMAE code.
* **ViViT** (``VivitForVideoClassification``, Arnab et al., ICCV 2021, the
  unfactorised "model 1"): a CLS token before the tubelets, the head reads the
  final CLS -> prefix 1, readout ``cls``.  Probabilities: the second output of
  ``VivitAttention`` (``layer.attention``).  Default normalisation: the public
  ``VivitImageProcessor`` maps 8-bit pixels ``v`` to ``(v / 127.5 - 1 - 0.5) / 0.5``,
  i.e. ``(u - 0.75) / 0.25`` for ``u = v / 255`` in [0, 1].

Both need ``eager`` attention (SDPA never materialises the probabilities),
which :func:`~xaibench.models.hf.force_eager` sets.  The default Grad-CAM layer
is the last block's ``layernorm_before`` (its output is the (B, n, D) stage
token vector that feeds the last attention), as for ViT.
"""

from __future__ import annotations

from typing import List

from ..errors import UserError
from .base import HookPoint, TokenLayout
from .hf import HFAdapter, find_blocks, force_eager, hf_labels, module_name


def _tubelet_layout(cfg, tubelet: int, patch: int, prefix: int, readout: str) -> TokenLayout:
    if cfg.num_frames % tubelet or cfg.image_size % patch:
        raise UserError(f"{cfg.num_frames} frames of {cfg.image_size} px do not split into tubelets of "
                        f"{tubelet} frames x {patch} px")
    g = cfg.image_size // patch
    return TokenLayout(frames=cfg.num_frames // tubelet, tubelet=tubelet, stages=((g, g),), prefix=prefix,
                       readout=readout)


class _HFJointVideoAdapter(HFAdapter):
    """Shared part: one ``global`` record per block, probabilities from ``probs_module(block)``."""

    def _init(self, model, *, name, layout, patch, mean, std):
        force_eager(model)
        self.blocks = find_blocks(model)
        cfg = model.config
        super().__init__(model, name=name, layout=layout, num_frames=cfg.num_frames, image_size=cfg.image_size,
                         patch_size=patch, mean=mean, std=std, labels=hf_labels(model),
                         gradcam_layer=module_name(model, self.blocks[-1].layernorm_before))

    def _run(self, x):
        return self.model(pixel_values=x).logits

    @staticmethod
    def probs_module(block):
        raise NotImplementedError

    def hook_points(self) -> List[HookPoint]:
        return [HookPoint(f"layer{i}", "global", i, self.probs_module(b), ln_module=b.layernorm_before)
                for i, b in enumerate(self.blocks)]


class HFVideoMAEAdapter(_HFJointVideoAdapter):
    family = "hf_videomae"

    def __init__(self, model, *, name="hf_videomae", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)):
        cfg = model.config
        if not cfg.use_mean_pooling:
            raise UserError("VideoMAE with use_mean_pooling=False reads its first *patch* token (it has no CLS); "
                            "only mean-pooled classifiers (the fine-tuned checkpoints) are supported")
        layout = _tubelet_layout(cfg, int(cfg.tubelet_size), int(cfg.patch_size), prefix=0, readout="pool")
        self._init(model, name=name, layout=layout, patch=int(cfg.patch_size), mean=mean, std=std)

    @staticmethod
    def probs_module(block):
        return block.attention.attention  # VideoMAESelfAttention -> (context, probs)


class HFVivitAdapter(_HFJointVideoAdapter):
    family = "hf_vivit"

    def __init__(self, model, *, name="hf_vivit", mean=(0.75, 0.75, 0.75), std=(0.25, 0.25, 0.25)):
        cfg = model.config
        t, ph, pw = (int(v) for v in cfg.tubelet_size)
        if ph != pw:
            raise UserError(f"ViViT tubelets of {ph} x {pw} px are not square; only square patches are supported")
        layout = _tubelet_layout(cfg, t, ph, prefix=1, readout="cls")
        self._init(model, name=name, layout=layout, patch=ph, mean=mean, std=std)

    @staticmethod
    def probs_module(block):
        return block.attention  # VivitAttention -> (output, probs)


# ----------------------------------------------------------------- builders
def build_hf_videomae(num_labels=4, image_size=64, patch_size=8, num_frames=8, tubelet_size=2, hidden_size=96,
                      num_hidden_layers=4, num_attention_heads=4, intermediate_size=None, **kw):
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification

    cfg = VideoMAEConfig(
        num_labels=num_labels, image_size=image_size, patch_size=patch_size, num_frames=num_frames,
        tubelet_size=tubelet_size, hidden_size=hidden_size, num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads, intermediate_size=intermediate_size or 4 * hidden_size,
        use_mean_pooling=True, attn_implementation="eager", **kw,
    )
    return VideoMAEForVideoClassification(cfg)


def build_hf_vivit(num_labels=4, image_size=64, patch_size=8, num_frames=8, tubelet_size=2, hidden_size=96,
                   num_hidden_layers=4, num_attention_heads=4, intermediate_size=None, **kw):
    from transformers import VivitConfig, VivitForVideoClassification

    cfg = VivitConfig(
        num_labels=num_labels, image_size=image_size, num_frames=num_frames,
        tubelet_size=[tubelet_size, patch_size, patch_size], hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size or 4 * hidden_size, attn_implementation="eager", **kw,
    )
    return VivitForVideoClassification(cfg)
