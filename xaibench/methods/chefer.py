"""Generic attention explainability (Chefer, Gur & Wolf, ICCV 2021, "Generic Attention-model
Explainability for Interpreting Bi-Modal and Encoder-Decoder Transformers"; rule as in the authors'
reference code, docs/protocols.md "Chefer's rules").

With ``grad_A = d y_target / d A`` (the target-class *logit*), per layer::

    R = I
    Abar_l = mean_h( (grad_A_l * A_l).clamp(min=0) )
    R <- R + Abar_l R            for l = first used layer, ..., L

i.e. ``R = (I + Abar_L) ... (I + Abar_1)``; only the last ``layers`` layers are
used (default: all).  Explanation: the readout row of ``R`` on the first used
layer's patch tokens -- ``R[CLS, patches]`` (CLS readout), the mean of the CLS
and distillation rows (DeiT), or the column sums ``sum_i R[i, j]`` (pooled
readout: Swin, VideoMAE) -- see :mod:`xaibench.methods._relevance` for the
window scatter, Swin's patch merging and divided space-time attention, where
the spatial CLS row is the *sum* over frames of the copies'
gradient-weighted rows (``G * dy/dG = A_t * dy/dA_t``, no 1/T).

Cost: one forward and one backward pass.
"""

from __future__ import annotations

from ._relevance import PropagationMethod, chefer_block
from .base import METHODS, Method


@METHODS.register("chefer")
class Chefer(PropagationMethod, Method):
    name = "chefer"
    grads = True
    residual = True
    pool = "sum"
    cls_self = 0.0
    cls_rows = "sum"

    def block(self, rec):
        return chefer_block(rec)
