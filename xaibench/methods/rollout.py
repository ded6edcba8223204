"""Attention rollout (Abnar & Zuidema, ACL 2020, "Quantifying attention flow in Transformers";
the rule as in Chefer et al.'s reference code, docs/protocols.md "Chefer's rules").

Per attention layer ``l`` (heads averaged, identity for the residual path)::

    A'_l = rownorm(mean_h A_l + I)          R = A'_L A'_{L-1} ... A'_1

explanation = the readout row of ``R`` on the first used layer's patch tokens
(:mod:`xaibench.methods._relevance`): ``R[CLS, patches]`` for a CLS readout,
the mean of the CLS and distillation rows for DeiT, and the column mean
``(1/n) sum_i R[i, j]`` (the relevance of the pooled representation) for a
pooled readout (Swin, VideoMAE).

* Swin: ``A_l`` is block ``l``'s window attention scattered into the global
  token matrix of its stage (shift undone); between stages, patch merging
  joins 2x2 tokens and ``R_{s+1} = M R_s`` with ``M`` averaging the parents.
* Divided space-time (TimeSformer): every layer has a temporal then a spatial
  attention, each embedded into one matrix over the ``1 + T*P`` tokens: the
  temporal one block diagonal over patches (CLS untouched: identity row and
  column), the spatial one block diagonal over frames with the CLS row the
  frame mean of the CLS copies' rows (the model averages the copies);
  ``A'_l = S'_l T'_l``.  Joint space-time attention (ViViT, VideoMAE) is one
  global matrix per layer.

All matrices are row-stochastic, so the explanation sums to 1.  ``layers``:
how many last layers are used (default: all; Chefer et al.'s evaluation code
starts at layer 1 of ViT-B, i.e. ``layers = 11`` there, see stdnorm_paper).
Computed as vector-matrix products from the readout row; no gradients.
"""

from __future__ import annotations

from ._relevance import PropagationMethod, rollout_block
from .base import METHODS, Method


@METHODS.register("rollout")
class Rollout(PropagationMethod, Method):
    name = "rollout"
    residual = False
    pool = "mean"
    cls_self = 1.0
    cls_rows = "mean"

    def block(self, rec):
        return rollout_block(rec)
