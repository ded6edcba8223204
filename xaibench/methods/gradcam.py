"""Grad-CAM (Selvaraju et al., ICCV 2017, "Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization") on Transformer tokens, in two variants (``source``).

``source="activations"`` (default; as pytorch-grad-cam with a ``reshape_transform``)
    ``A`` = the output of module ``layer`` (default: the adapter's
    ``gradcam_layer``, e.g. the last block's first layer norm for ViT), mapped
    to its token grid by the adapter's :meth:`~xaibench.models.base.ModelAdapter.reshape_tokens`,
    ``A[c, t, y, x]`` (channels c, token frames t, rows y, columns x; prefix
    tokens dropped), ``G = d y_target / d A`` (target-class logit)::

        w_c = mean_{t, y, x} G[c, t, y, x]         (pool="clip", default)
        w_{c,t} = mean_{y, x} G[c, t, y, x]        (pool="frame")
        cam[t, y, x] = relu( sum_c w_c A[c, t, y, x] )

    ``pool="clip"`` pools the gradient over the whole space-time volume (3D
    Grad-CAM for video); ``pool="frame"`` pools each frame on its own.  For
    images both coincide.

``source="attention"`` (the Grad-CAM baseline of Chefer et al., CVPR 2021, as in their evaluation code)
    The last attention layer (for divided space-time attention, its spatial
    attention) with its heads as channels: per head ``h``, ``a_h`` = the
    readout row of ``A_h`` on the patch tokens (the CLS row for a CLS model)
    and ``g_h`` the same row of ``d y_target / d A_h``::

        cam = relu( mean_h ( mean(g_h) * a_h ) )

Frame scores are the per-frame sums of the cam.  Cost: one forward and one
backward pass.
"""

from __future__ import annotations

import torch

from ..errors import UserError
from dataclasses import dataclass
from typing import Optional

from ..config import param
from ._relevance import patch_part, readout_vector, vecmul
from .base import METHODS, Method, UpsampleConfig, from_token_map

POOLS = ("clip", "frame")
SOURCES = ("activations", "attention")


def per_head_rows(layout, rec, t: torch.Tensor) -> torch.Tensor:
    """(B, Hd, T', h, w): the readout row of each head's matrix of a record tensor ``t`` (probs or grads)."""
    B, Hd = t.shape[0], t.shape[-3]
    flat = t.double().movedim(-3, 1).reshape(B * Hd, *t.shape[1:-3], *t.shape[-2:])
    v0 = readout_vector(layout, rec.n_tokens, B * Hd, "mean", flat.dtype, flat.device)
    rows = patch_part(rec, vecmul(rec, v0, flat, cls_rows="sum"))
    return rows.reshape(B, Hd, *rows.shape[1:])


@dataclass
class GradCAMConfig(UpsampleConfig):
    source: str = param("activations", choices=SOURCES,
                        help="activations: a layer's token activations; attention: the last attention map "
                             "(Chefer et al.'s Grad-CAM baseline)")
    layer: Optional[str] = param(None, active=lambda c: c.source == "activations",
                                 help="module name (model.named_modules()); null: the model's declared layer")
    pool: str = param("clip", choices=POOLS, active=lambda c: c.source == "activations",
                      help="average the gradients over the whole clip or per frame")


@METHODS.register("gradcam")
class GradCAM(Method):
    name = "gradcam"
    Config = GradCAMConfig

    def _layer(self, adapter) -> str:
        layer = self.layer or adapter.gradcam_layer
        if not layer:
            raise UserError(f"model {adapter.name!r} has no default Grad-CAM layer; set method.layer")
        return layer

    def trace_request(self, adapter):
        if self.source == "attention":
            return {"attentions": True, "grads": True, "layers": 1}
        return {"grads": True, "capture": (self._layer(adapter),), "layers": 1}

    def explain_trace(self, adapter, trace):
        if self.source == "attention":
            cams = self._attention_cam(adapter, trace)
        else:
            cams = self._activation_cam(adapter, trace)
        return [from_token_map(c, adapter.image_size, adapter.layout.tubelet, mode=self.upsample) for c in cams]

    def _activation_cam(self, adapter, trace):
        layer = self._layer(adapter)
        if layer not in trace.activation_grads:
            raise UserError(f"Grad-CAM layer {layer!r} received no gradient from the target logit")
        B = trace.logits.shape[0]
        a = adapter.reshape_tokens(trace.activations[layer], B).double()  # (B, T', h, w, D)
        g = adapter.reshape_tokens(trace.activation_grads[layer], B).double()
        dims = (1, 2, 3) if self.pool == "clip" else (2, 3)
        wgt = g.mean(dim=dims, keepdim=True)
        return (wgt * a).sum(-1).clamp(min=0)  # (B, T', h, w)

    def _attention_cam(self, adapter, trace):
        rec = [r for r in trace.attentions if r.kind != "temporal"][-1]
        a = per_head_rows(adapter.layout, rec, rec.probs)  # (B, Hd, T', h, w)
        g = per_head_rows(adapter.layout, rec, rec.grad)
        w = g.mean(dim=(2, 3, 4), keepdim=True)
        return (w * a).mean(1).clamp(min=0)
