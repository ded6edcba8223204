"""Attention rollout (Abnar & Zuidema, ACL 2020, "Quantifying attention flow in
Transformers"; the rule as in Chefer et al.'s reference code, protocols.md s. 3).

Per attention layer ``l`` (heads averaged, identity for the residual path)::

    A'_l = rownorm(mean_h A_l + I)          R = A'_L A'_{L-1} ... A'_1

* ViT: explanation ``R[CLS, patches]``; a ViT without a CLS token uses the
  column mean below.
* Swin (no CLS, global average pooling): ``A_l`` is block ``l``'s window
  attention scattered into the global token matrix of its stage (shift undone,
  :func:`xaibench.models.tokens.window_to_global`).  Between stages, patch
  merging joins each 2x2 group of tokens into one; the relevance of a merged
  token is the average of its four parents' rows, ``R_{s+1} = M R_s`` with
  ``M = merge_matrix(grid_s)`` (N_s/4 x N_s, 1/4 on the parents).  The full
  product is ``R = A'_L ... M ... A'_1`` (N_last x N_first); the explanation is
  its column mean ``(1/N_last) sum_i R[i, j]`` (the relevance of the pooled
  representation) at the first stage's token grid.
* TimeSformer (divided space-time): every layer has a temporal then a spatial
  attention; each is embedded into one token-to-token matrix over the
  ``1 + T*P`` tokens (see :mod:`xaibench.methods._relevance`):

  - ``T'_l``: block diagonal over patches, patch p's block
    ``rownorm(mean_h A^temp_{l,p} + I)`` over its T frames; the CLS is
    untouched by temporal attention, so its row and column are the identity's;
  - ``S'_l``: block diagonal over frames, frame t's block
    ``B_t = rownorm(mean_h A^spat_{l,t} + I)`` over [CLS copy, P patches];
    patch rows ``S'[(t,p), .] = B_t[1+p, .]`` (the CLS column receives the
    weight on the CLS copy); the CLS row is the mean over frames of the copies'
    rows, ``S'[CLS, (t,q)] = B_t[0, 1+q] / T`` and
    ``S'[CLS, CLS] = mean_t B_t[0, 0]``, because the model sets the new CLS to
    the old CLS plus the frame mean of the copies' attention outputs;

  ``A'_l = S'_l T'_l`` (temporal first, then spatial), ``R = A'_L ... A'_1``;
  explanation ``R[CLS, (t, p)]`` -> (T, h, w); frame scores = per-frame sums.

All matrices are row-stochastic, so the explanation sums to 1.  Computed as
vector-matrix products from the readout row (no dense N x N product);
``n_forward = 1``, no gradients.
"""

from __future__ import annotations

from . import METHODS
from ._relevance import PropagationMethod, rollout_block
from .base import Method


class Rollout(PropagationMethod, Method):
    name = "rollout"

    def explain(self, adapter, x, target):
        return self._explain(adapter, x, target, rollout_block, grads=False, residual=False, readout_no_cls="mean",
                             cls_self=1.0, cls_rows="mean")


@METHODS.register("rollout")
def _rollout(**params):
    return Rollout(**params)
