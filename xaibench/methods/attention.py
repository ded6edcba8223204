"""Raw attention: the final layer's attention (head mean), one forward pass.

With ``A_L`` the last attention layer's probabilities averaged over heads and
``v0`` the model's readout row (:mod:`xaibench.methods._relevance`), the
explanation is ``v0 A_L`` on the patch tokens:

* a CLS readout (ViT, ViViT, TimeSformer): the CLS row over the patches
  ("raw attention" of Chefer et al., CVPR 2021, Table 1 and their reference
  code: ``attn[:, 0, 1:]`` of the last block); with divided space-time
  attention (TimeSformer) the last *spatial* attention, per frame the CLS
  copy's row, so frame scores ``sum_p M_t(p)`` are the share of frame t's
  CLS attention that goes to its patches;
* a DeiT readout (CLS and distillation tokens): the mean of their two rows;
* a pooled readout (Swin, VideoMAE): the attention each token receives,
  averaged over all querying tokens, ``M(j) = (1/n) sum_i G[i, j]`` (Swin's
  windows scattered into the global matrix with the shift undone).

The token map is upsampled bilinearly to the input resolution (and repeated
over each token frame's input frames).  No gradients.
"""

from __future__ import annotations

from ._relevance import readout_rows
from .base import METHODS, Method, UpsampleConfig, from_token_map


@METHODS.register("attention")
class Attention(Method):
    name = "attention"
    Config = UpsampleConfig

    def trace_request(self, adapter):
        return {"attentions": True, "layers": 1}

    def explain_trace(self, adapter, trace):
        rec = [r for r in trace.attentions if r.kind != "temporal"][-1]
        maps = readout_rows(adapter.layout, [rec])[:, 0]
        return [from_token_map(m, adapter.image_size, adapter.layout.tubelet, mode=self.upsample) for m in maps]
