"""Raw attention: the final layer's attention (head mean), one forward pass.

Formula (``A_L`` = last attention layer's probabilities, averaged over heads):

* ViT (CLS): ``M(p) = mean_h A_L[h, CLS, 1+p]`` -- the CLS row over the patch
  tokens ("raw attention" of Chefer et al., CVPR 2021, Table 1 and their
  reference code: ``attn[:, 0, 1:]`` of the last block).  A timm ViT without a
  CLS (global pooling) uses the Swin readout below.
* Swin (no CLS): the last block's window attention scattered into the global
  token matrix ``G`` (shift undone, :func:`xaibench.models.tokens.window_to_global`),
  column mean ``M(j) = (1/N) sum_i G[i, j]`` -- the attention token ``j``
  receives, averaged over all querying tokens (as in STAA's Swin branch).
* TimeSformer (divided space-time): the last layer's *spatial* attention,
  per frame t the CLS copy's row ``M_t(p) = mean_h S_L[t, h, CLS, 1+p]``; frame
  scores ``sum_p M_t(p)`` (the share of frame t's CLS attention that goes to
  its patches rather than to the CLS itself).

The token map is upsampled bilinearly to the input resolution.  No gradients;
``n_forward = 1``.
"""

from __future__ import annotations

import torch

from . import METHODS
from ._relevance import vecmul
from .base import Method, from_token_map


class Attention(Method):
    name = "attention"

    def __init__(self, upsample: str = "bilinear"):
        self.upsample = upsample

    def explain(self, adapter, x, target):
        # only the last attention record is read (for TimeSformer the last layer's spatial attention)
        trace = adapter.trace(x[None], target=target, attentions=True, layers=[-1])
        if adapter.arch == "timesformer":
            rec = trace.of_kind("spatial")[-1]
            m = rec.probs[0].mean(1)[:, 0, 1:]  # (T, P)
            h, w = adapter.grid
            return from_token_map(m.reshape(-1, h, w), adapter.image_size, mode=self.upsample, n_forward=1)
        if adapter.arch == "vit" and trace.of_kind("global")[-1].has_cls:
            a = trace.of_kind("global")[-1].probs[0].mean(0)  # (N, N)
            h, w = adapter.grid
            return from_token_map(a[0, -h * w:].reshape(1, h, w), adapter.image_size, mode=self.upsample,
                                  n_forward=1)
        rec = (trace.of_kind("window") or trace.of_kind("global"))[-1]
        blk = rec.probs[0].mean(dim=-3)
        n = blk.shape[-1] if rec.kind == "global" else rec.grid[0] * rec.grid[1]
        col = vecmul(rec, torch.full((n,), 1.0 / n, dtype=blk.dtype), blk)  # (1/N) 1^T G
        h, w = rec.grid if rec.kind == "window" else adapter.grid
        return from_token_map(col[-h * w:].reshape(1, h, w), adapter.image_size, mode=self.upsample,
                              n_forward=1)


@METHODS.register("attention")
def _attention(**params):
    return Attention(**params)
