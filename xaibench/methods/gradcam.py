"""Grad-CAM on a Transformer layer's token outputs (Selvaraju et al., ICCV 2017,
"Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
Localization"; token reshape as in pytorch-grad-cam's ``reshape_transform`` for
ViT / Swin, protocols.md s. 6).

Let ``A`` be the output of module ``layer`` (default: the adapter's
``gradcam_layer``, e.g. the last block's first layer norm for ViT) reshaped to
its token grid, ``A[c, t, y, x]`` (channels c, frames t, grid rows y, columns x;
prefix tokens such as the CLS dropped), and ``G = d y_target / d A`` (target-class
logit).  Then::

    w_c = mean_{t, y, x} G[c, t, y, x]         (pool="clip", default)
    w_{c,t} = mean_{y, x} G[c, t, y, x]        (pool="frame")
    cam[t, y, x] = relu( sum_c w_c A[c, t, y, x] )

``pool="clip"`` is Grad-CAM's global-average-pooled gradient over the whole
space-time volume (3D Grad-CAM for video); ``pool="frame"`` pools each frame
on its own (2D Grad-CAM per frame).  For images both coincide.
Frame scores are the per-frame sums of the cam.

Token layouts handled (B = 1 sample, T frames, P = h*w patches, k prefix tokens):

* ``(T, k + P, D)``: per-frame tokens (TimeSformer ``layernorm_before``, whose
  input is the spatial-attention batch ``(B*T, 1+P, D)``);
* ``(1, 1 + P*T, D)`` with T > 1: TimeSformer hidden states, HF order
  patch-major, frame-minor (token ``1 + p*T + t``);
* ``(1, k + P, D)``: ViT (k prefix tokens) or Swin (k = 0) tokens;
* ``(1, h, w, D)``: channels-last maps (timm Swin stage outputs).

The grid of the tokens is the adapter's grid when it fits, else the square
grid of the largest square number of tokens (Swin stages).  Cost: one
forward and one backward pass.
"""

from __future__ import annotations

import math

import torch

from ..errors import UserError
from . import METHODS
from .base import Method, from_token_map

POOLS = ("clip", "frame")


def _split_prefix(n: int, adapter_grid) -> tuple:
    """(prefix tokens, (h, w)) for n tokens of one frame."""
    h, w = adapter_grid
    if 0 <= n - h * w <= 8:
        return n - h * w, (h, w)
    for k in range(0, 9):
        r = math.isqrt(n - k)
        if r * r == n - k:
            return k, (r, r)
    raise UserError(f"cannot map {n} tokens to a square grid; choose a different Grad-CAM layer")


def tokens_to_grid(act: torch.Tensor, adapter) -> torch.Tensor:
    """Layer output of one sample -> (T, h, w, D) (see the module docstring)."""
    T = adapter.num_frames
    if act.dim() == 4:
        if act.shape[0] != 1:
            raise UserError(f"Grad-CAM layer output of shape {tuple(act.shape)} is not supported")
        return act  # (1, h, w, D) channels-last
    if act.dim() != 3:
        raise UserError(f"Grad-CAM needs a token layer (B, N, D); layer output has shape {tuple(act.shape)}")
    bp, n, d = act.shape
    if bp == T and T > 1:
        k, (h, w) = _split_prefix(n, adapter.grid)
        return act[:, k:].reshape(T, h, w, d)
    if bp != 1:
        raise UserError(f"Grad-CAM layer output batch {bp} matches neither 1 nor the {T} frames")
    if T > 1:
        P = (n - 1) // T
        h, w = adapter.grid
        if P != h * w or 1 + P * T != n:
            raise UserError(f"cannot map {n} tokens to 1 + {T} frames x {h}x{w} patches")
        return act[0, 1:].reshape(h, w, T, d).permute(2, 0, 1, 3)  # patch-major, frame-minor
    k, (h, w) = _split_prefix(n, adapter.grid)
    return act[:, k:].reshape(1, h, w, d)


class GradCAM(Method):
    name = "gradcam"

    def __init__(self, layer: str | None = None, pool: str = "clip", upsample: str = "bilinear"):
        if pool not in POOLS:
            raise UserError(f"method.pool={pool!r}; valid: {', '.join(POOLS)}")
        self.layer = layer
        self.pool = pool
        self.upsample = upsample

    def params(self):
        return {"layer": self.layer, "pool": self.pool}

    def explain(self, adapter, x, target):
        layer = self.layer or adapter.gradcam_layer
        if not layer:
            raise UserError(f"model {adapter.name!r} has no default Grad-CAM layer; set method.layer")
        trace = adapter.trace(x[None], target=target, grads=True, capture=[layer])
        if layer not in trace.activation_grads:
            raise UserError(f"Grad-CAM layer {layer!r} received no gradient from the target logit")
        a = tokens_to_grid(trace.activations[layer], adapter).float()
        g = tokens_to_grid(trace.activation_grads[layer], adapter).float()
        dims = (0, 1, 2) if self.pool == "clip" else (1, 2)
        wgt = g.mean(dim=dims, keepdim=True)  # (1|T, 1, 1, D)
        cam = (wgt * a).sum(-1).clamp(min=0)  # (T, h, w)
        return from_token_map(cam, adapter.image_size, mode=self.upsample, n_forward=1, n_backward=1)


@METHODS.register("gradcam")
def _gradcam(**params):
    return GradCAM(**params)
