"""What the Hugging Face families share: eager attention, label names, the adapter base.

Attention is captured with forward hooks on the modules that produce the
probabilities actually multiplied with the values (each family names them in
``hook_points``).  ``transformers`` computes them only with ``eager`` attention
(SDPA never materialises the probabilities), which :func:`force_eager` sets on
the model and every sub-config.  Nothing here imports ``transformers``: a
family imports its model classes when it builds or loads one.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from .base import ModelAdapter


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


def _first(v) -> int:
    return int(v[0] if isinstance(v, (tuple, list)) else v)


def layout_kind(kind: str, t: torch.Tensor, batch: int) -> torch.Tensor:
    """A library attention tensor in the record layout of ``kind`` (:class:`~xaibench.models.base.AttentionRecord`)."""
    if kind == "global":
        return t.reshape(batch, *t.shape[-3:])
    return t.reshape(batch, -1, *t.shape[-3:])


class HFAdapter(ModelAdapter):
    """Base of the Hugging Face adapters: ``pixel_values`` in, ``.logits`` out; the head is ``classifier``."""

    #: the model takes (B, T, C, H, W) clips (video) or (B, C, H, W) images
    video: bool = False
    #: the model needs ``eager`` attention for its probabilities to exist (set on construction and loading)
    eager: bool = True

    def __init__(self, model, **kw):
        if self.eager:
            force_eager(model)
        super().__init__(model, **kw)

    @property
    def num_classes(self) -> int:
        return int(self.model.config.num_labels)

    @property
    def backbone(self) -> nn.Module:
        """The base model (``model.vit``, ``model.timesformer``, ...: ``base_model_prefix``)."""
        return getattr(self.model, self.model.base_model_prefix)

    def encoder_layers(self) -> List[nn.Module]:
        """The blocks of a plain encoder: ``<base>.layers`` (transformers >= 5 for ViT / ViViT) or
        ``<base>.encoder.layer``."""
        b = self.backbone
        return list(b.layers) if hasattr(b, "layers") else list(b.encoder.layer)

    def _pixels(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.video else x[:, 0]

    def _run(self, x):
        return self.model(pixel_values=self._pixels(x)).logits

    def head_modules(self) -> List[nn.Module]:
        return [self.model.classifier]

    def library_records(self) -> List[Tuple[str, str]]:
        """(record name, kind) of the attentions ``output_attentions`` returns, in its order (default: all)."""
        return [(p.name, p.kind) for p in self.hook_points()]

    @torch.no_grad()
    def library_attentions(self, x: torch.Tensor) -> Optional[Dict[str, torch.Tensor]]:
        x = self.check_input(x)
        out = self.model(pixel_values=self._pixels(self.normalise(x)), output_attentions=True)
        atts = [a for a in (out.attentions or ()) if a is not None]
        names = self.library_records()
        if len(atts) != len(names):
            raise AssertionError(f"{self.name}: output_attentions gave {len(atts)} tensors, the adapter expects "
                                 f"{len(names)} ({[n for n, _ in names]})")
        return {n: layout_kind(k, a.float(), x.shape[0]) for (n, k), a in zip(names, atts)}
