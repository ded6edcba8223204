"""Generic attention explainability (Chefer, Gur & Wolf, ICCV 2021, "Generic
Attention-model Explainability for Interpreting Bi-Modal and Encoder-Decoder
Transformers"; rule as in the authors' reference code, protocols.md s. 3).

With ``grad_A = d y_target / d A`` (the target-class *logit*), per layer::

    R = I
    Abar_l = mean_h( (grad_A_l * A_l).clamp(min=0) )
    R <- R + Abar_l R            for l = first used layer, ..., L

i.e. ``R = (I + Abar_L) ... (I + Abar_1)``; only the last ``layers`` layers are
used (default: all; R starts as the identity at the first used layer).

* ViT: explanation ``R[CLS, patches]``; a ViT without a CLS uses the column sum.
* Swin: ``Abar_l`` is scattered from the windows into the global token matrix
  of its stage (shift undone); patch merging between stages by
  ``R <- M R`` with ``M = merge_matrix(grid)`` (rows of the four merged patches
  averaged); readout: column sum ``sum_i R[i, j]`` (no CLS; global pooling),
  at the token grid of the first used block.
* TimeSformer: per layer first the temporal then the spatial matrix, each
  embedded over the ``1 + T*P`` tokens as in :mod:`xaibench.methods.rollout`
  (temporal: block diagonal over patches, CLS row and column zero; spatial:
  block diagonal over frames, CLS column = the copies' entries), except that
  the spatial CLS row is the *sum* over frames of the copies' gradient-weighted
  rows, ``Abar[CLS, (t,q)] = mean_h((grad_A_t * A_t)^+)[0, 1+q]``: the true
  mixing matrix has ``G[CLS, (t,q)] = A_t[0, 1+q] / T`` (the model averages the
  copies) and hence ``dy/dG = T dy/dA_t``, so ``G * dy/dG = A_t * dy/dA_t``
  (see :mod:`xaibench.methods._relevance`);
  ``R <- R + Abar^temp_l R``, then ``R <- R + Abar^spat_l R``; explanation
  ``R[CLS, (t, p)]`` -> (T, h, w); frame scores = per-frame sums.

Computed as vector-matrix products from the readout row.  Cost: one forward
and one backward pass (``n_forward = 1``, ``n_backward = 1``).
"""

from __future__ import annotations

from . import METHODS
from ._relevance import PropagationMethod, chefer_block
from .base import Method


class Chefer(PropagationMethod, Method):
    name = "chefer"

    def explain(self, adapter, x, target):
        return self._explain(adapter, x, target, chefer_block, grads=True, residual=True, readout_no_cls="sum",
                             cls_self=0.0, cls_rows="sum")


@METHODS.register("chefer")
def _chefer(**params):
    return Chefer(**params)
