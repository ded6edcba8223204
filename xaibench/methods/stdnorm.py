"""Std-normalised attribution (seed 001: "Inspecting Explainability of
Transformer Models with Additional Statistical Information", arXiv 2311.11378).

The paper builds on Chefer et al.'s gradient-weighted rule (:mod:`chefer`) and
adds the per-token standard deviation by which the layer norm before each
attention divides its input; it normalises each layer's matrix to sum to one
before adding the identity, averages the rows of merged patches in Swin, reads
out Swin by summing the final relevance matrix over its rows (column sums) and
uses the last two layers.  Its exact formula is not public (docs/protocols.md, "Std-normalised attribution");
ours is::

    s_l[j]  = 1 / sigma_l[j]      if use_std  else 1
    W_l     = mean_h( (grad_A_l * A_l).clamp(min=0) ) diag(s_l)
    Atil_l  = W_l / sum_{i,j} W_l[i, j]                (0 if the sum is 0)
    R = I;  R <- R + Atil_l R    for the last ``layers`` layers (default 2)

``sigma_l[j] = sqrt(Var(x_j) + eps)`` is the std the layer norm preceding
attention ``l`` computes for token ``j`` (the ``ln_std`` of the attention
record).  Rationale: attention ``l`` mixes the *normalised* tokens
``(x_j - mu_j) / sigma_j``, so the share of the raw token ``x_j`` in query
``i``'s output is ``A[i, j] / sigma_j``; dividing column ``j`` by ``sigma_j``
stops high-variance tokens (e.g. image corners) from dominating.  The sum in
``Atil`` runs over all entries of the layer's embedded global token matrix.

With all ``sigma_l[j]`` equal (or ``use_std=False``) the std term cancels in
the normalisation and the rule is Chefer's with per-layer sum normalisation.

Readout and token layouts as in :mod:`xaibench.methods.chefer` (see
:mod:`xaibench.methods._relevance`):

* CLS readout (ViT): ``R[CLS, patches]``.
* Swin (pooled): window matrices scattered into the stage's global token matrix with
  the cyclic shift undone; patch merging ``R <- M R`` (rows of the 2x2 merged
  patches averaged); readout: column sums ``sum_i R[i, j]``
  at the token grid of the first used block (for the last two blocks of
  Swin-T, its 7x7 final stage).
* Divided space-time attention (TimeSformer): each layer contributes its temporal then its spatial matrix,
  embedded over the ``1 + T*P`` tokens as in :mod:`chefer` (spatial CLS row =
  sum over frames of the copies' gradient-weighted rows), each normalised
  and std-weighted on its own (temporal: ``sigma`` of ``temporal_layernorm``
  per (patch, frame); spatial: ``sigma`` of ``layernorm_before`` per (frame,
  token), the CLS copy's own std in each frame); ``layers`` counts whole layers.

``base`` (which relevance the matrices are built from):

* ``generic`` (default): the rule above, on ``grad_A * A`` (Chefer et al., ICCV 2021, the generic rule);
* ``transformer_attribution``: ``A`` replaced by its LRP relevance ``R_A`` of Transformer Attribution
  (Chefer, Gur & Wolf, CVPR 2021; :mod:`xaibench.methods.transformer_attribution`), i.e.::

      W_l = mean_h( (grad_A_l * R_A_l).clamp(min=0) ) diag(s_l)

  and the rest unchanged (sum normalisation, ``R <- R + Atil_l R``, readout) -- the paper's own
  pairing of the std term with Transformer Attribution.  Only for models
  :mod:`xaibench.models.blocks` describes (ViT, DeiT); others raise ``NotApplicable``.  Cost: one more
  re-run and relevance pass of the blocks (float64, not counted as model passes).  ``params()`` lists
  ``base`` only when it is not ``generic``, so existing results keep their parameter key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..config import param
from ..errors import NotApplicable
from ..models.blocks import require_stack
from ._relevance import PropagationConfig, PropagationMethod, chefer_block, embedded_sum, propagate, scale_columns
from .base import METHODS, Method, from_token_map
from .transformer_attribution import attention_relevance, capture_request, ta_block

BASES = ("generic", "transformer_attribution")


def stdnorm_block(rec, use_std: bool, weighted=None) -> torch.Tensor:
    """``Atil_l`` in the record's block layout, for every sample of the batch.

    ``weighted``: the head-mean gradient-weighted matrix to start from (``base=transformer_attribution``);
    ``None``: ``mean_h((grad_A * A).clamp(min=0))``.
    """
    w = chefer_block(rec) if weighted is None else weighted
    if use_std:
        if rec.ln_std is None:
            raise NotApplicable(f"attention {rec.name} has no layer norm statistics (no layer norm before it)")
        w = scale_columns(rec, w, 1.0 / rec.ln_std.to(w.dtype))
    total = embedded_sum(rec, w, cls_rows="sum")
    shape = (-1,) + (1,) * (w.dim() - 1)
    return torch.where(total.view(shape) > 0, w / total.clamp_min(1e-300).view(shape), torch.zeros_like(w))


@dataclass
class StdNormConfig(PropagationConfig):
    layers: Optional[int] = param(2, range=(1, 1024), active=lambda c: c.start_layer is None,
                                  help="the last k blocks used (null: all)")
    use_std: bool = param(True, help="divide each column by the layer norm's std of its token")
    base: str = param("generic", choices=BASES, help="the gradient-weighted matrix it normalises")


@METHODS.register("stdnorm")
class StdNorm(PropagationMethod, Method):
    name = "stdnorm"
    Config = StdNormConfig
    grads = True
    residual = True
    pool = "sum"
    cls_self = 0.0
    cls_rows = "sum"

    @property
    def ln_stats(self):
        return self.use_std

    def check(self, adapter):
        if self.base == "transformer_attribution":
            require_stack(adapter)

    def block(self, rec):
        return stdnorm_block(rec, self.use_std)

    def trace_request(self, adapter):
        req = super().trace_request(adapter)
        return req if self.base == "generic" else capture_request(adapter, req)

    def explain_trace(self, adapter, trace):
        if self.base == "generic":
            return super().explain_trace(adapter, trace)
        recs, rel = attention_relevance(adapter, trace, self._last_k(adapter))
        blocks = [stdnorm_block(r, self.use_std, ta_block(r, ra)) for r, ra in zip(recs, rel)]
        maps = propagate(adapter.layout, recs, blocks, residual=self.residual, pool=self.pool,
                         cls_self=self.cls_self, cls_rows=self.cls_rows)
        return [from_token_map(m, adapter.image_size, adapter.layout.tubelet, mode=self.upsample) for m in maps]
