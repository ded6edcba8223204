"""What the timm families share: unfused attention and the adapter base.

timm computes attention with a fused kernel by default, so the probabilities never exist; the adapters
turn ``fused_attn`` off on every attention module and hook ``attn_drop`` (docs/protocols.md, "Models").
timm has no ``output_attentions``.  Nothing here imports timm.
"""

from __future__ import annotations

from typing import List

from torch import nn

from .base import ModelAdapter


def unfuse(model: nn.Module) -> None:
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False


def pair(v):
    return tuple(int(a) for a in v) if isinstance(v, (tuple, list)) else (int(v), int(v))


class TimmAdapter(ModelAdapter):
    """Base of the timm adapters: images (B, C, H, W) in, logits out."""

    def __init__(self, model, **kw):
        unfuse(model)
        super().__init__(model, num_frames=1, image_size=pair(model.patch_embed.img_size)[0],
                         patch_size=pair(model.patch_embed.patch_size)[0], **kw)

    @property
    def num_classes(self) -> int:
        return int(self.model.num_classes)

    def _run(self, x):
        return self.model(x[:, 0])

    def head_modules(self) -> List[nn.Module]:
        return [m for n, m in self.model.named_children() if n in ("head", "head_dist")]
