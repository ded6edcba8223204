"""Token-relevance machinery of the attention-based methods (``attention``, ``staa``, ``rollout``,
``chefer``, ``stdnorm``), written against the adapter's declarations only.

Stage token vectors (:mod:`xaibench.models.base`): ``prefix + frames*h*w``
entries, prefix tokens first, patches frame-major.  Each attention record
embeds into one token-to-token matrix ``G`` over its stage's token vector,
according to its ``kind`` (heads already reduced; ``B`` = batch):

=========  =====================  ==============================================
kind       block shape            embedded matrix G (token -> token)
=========  =====================  ==============================================
global     (B, n, n)              G = block (joint space-time when frames > 1)
window     (B, nW, q, q)          window k's block scattered onto the original
                                  (unshifted) indices of its tokens, zero outside
                                  windows (the tests check this against a dense scatter)
temporal   (B, P, T, T)           G[(t,p),(t',p)] = block[p, t, t'] (block diagonal
                                  over patches); CLS row/column zero except
                                  G[CLS, CLS] = ``cls_self``
spatial    (B, T, 1+P, 1+P)       frame t's block over [CLS copy, its P patches]:
                                  G[(t,p),(t,q)] = block[t, 1+p, 1+q],
                                  G[(t,p), CLS] = block[t, 1+p, 0],
                                  G[CLS, (t,q)] = c * block[t, 0, 1+q],
                                  G[CLS, CLS]   = c * sum_t block[t, 0, 0]
                                  with c = 1/T (``cls_rows="mean"``) or 1 (``"sum"``)
=========  =====================  ==============================================

The spatial CLS row models what divided space-time attention does (HF
TimeSformer): the CLS is copied into every frame, each copy attends within its
frame, and the new CLS is the old one plus the *mean over frames* of the
copies' outputs, so the true mixing matrix has the frame mean of the copies'
rows as its CLS row (``cls_rows="mean"``, for attention matrices: rollout).
For gradient-weighted matrices (``grad_A * A``, Chefer / stdnorm) the block
holds ``A_t * dy/dA_t``; since ``G[CLS, (t,q)] = A_t[0, 1+q] / T`` gives
``dy/dG = T dy/dA_t``, the gradient-weighted mixing matrix ``G * dy/dG`` has
CLS entries ``A_t[0, 1+q] dy/dA_t[0, 1+q]`` with no 1/T (``cls_rows="sum"``).

Readout (``layout.readout``)
---------------------------
The row vector ``v0`` that selects what the classifier reads, from the weights the
model declares per token group (:class:`xaibench.models.card.Readout`):
``v0 = w_cls e_0 + w_dist e_1 + w_patches u``, with ``e_i`` the one-hot of prefix
token ``i`` and ``u`` spread over the patch tokens, each ``1/n`` (``pool="mean"``,
what a mean over the patches passes on) or ``1`` (``pool="sum"``, the column sums of
Chefer et al.'s Swin readout; a pure scale, so it applies only to a readout of the
patches alone, and a mixed readout always uses the mean).  ``cls`` -> the one-hot of
token 0; ``prefix_mean`` (DeiT) -> 1/2 on the CLS and distillation tokens; ``pool`` ->
the patches; ``cls+patches`` (DINOv2) -> 1/2 on [CLS] and 1/(2n) on each patch.

Propagation without dense matrices
----------------------------------
Every explanation here is ``v0^T M_L ... M_1`` restricted to the patch tokens of
the first used layer (``M_l = G_l``, or ``I + G_l`` for ``R <- R + G R``),
computed right-to-left as vector-matrix products block by block, never forming
``G`` (1569 x 1569 per layer for TimeSformer-base, 3136 x 3136 for Swin-T's
first stage).  Between stages whose grids shrink by a factor ``f`` (Swin's
2 x 2 patch merging) the relevance of a merged token is the average of its
parents' rows, ``R_{s+1} = M R_s`` with ``M`` the ``f x f`` block-averaging
matrix, so ``v_s = v_{s+1} M``.  Tests check all of this against dense
products.  Everything is batched over samples.
"""

from __future__ import annotations

from functools import lru_cache
from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch

from ..config import param
from ..errors import NotApplicable, UserError
from ..explanation import from_token_map
from .base import UpsampleConfig


@lru_cache(maxsize=64)
def _shifted_index(grid, window: int, shift: int) -> torch.Tensor:
    h, w = grid
    ws = window
    if h % ws or w % ws:
        raise NotApplicable(f"token grid {grid} is not divisible by the window {ws} (padded windows are not "
                            f"supported)")
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    orig = ((ys + shift) % h) * w + (xs + shift) % w
    return orig.view(h // ws, ws, w // ws, ws).permute(0, 2, 1, 3).reshape(-1, ws * ws)


def shifted_index(grid, window: int, shift: int, device=None) -> torch.Tensor:
    """(nW, window**2) original (unshifted, row-major) token index of each window position (cached)."""
    return _shifted_index(tuple(int(g) for g in grid), int(window), int(shift)).to(device)


@lru_cache(maxsize=16)
def _pool_matrix(grid, coarse) -> torch.Tensor:
    (h, w), (hh, ww) = grid, coarse
    if h % hh or w % ww:
        raise NotApplicable(f"stage grid {grid} does not pool evenly into {coarse}")
    fy, fx = h // hh, w // ww
    rows = (torch.arange(h)[:, None] // fy) * ww + torch.arange(w)[None, :] // fx
    M = torch.zeros(hh * ww, h * w, dtype=torch.float64)
    M[rows.reshape(-1), torch.arange(h * w)] = 1.0 / (fy * fx)
    return M


def head_mean(t: torch.Tensor) -> torch.Tensor:
    """Average over the heads axis (-3) of a record tensor."""
    return t.mean(dim=-3)


def vecmul(rec, v: torch.Tensor, block: torch.Tensor, cls_self: float = 0.0, cls_rows: str = "mean") -> torch.Tensor:
    """``v @ G`` for a batch of row vectors ``v`` (B, n) and the embedded matrices ``G`` of ``block``."""
    kind, B = rec.kind, v.shape[0]
    if kind == "global":
        return torch.bmm(v[:, None], block)[:, 0]
    if kind == "window":
        idx = shifted_index(rec.grid, rec.window, rec.shift, v.device).reshape(-1)
        q = block.shape[-1]
        y = v[:, idx].view(B, -1, 1, q) @ block  # (B, nW, 1, q)
        out = torch.empty_like(v)
        out[:, idx] = y.reshape(B, -1)
        return out
    if rec.prefix != 1:
        raise NotApplicable(f"divided attention with {rec.prefix} prefix tokens is not supported (one CLS)")
    T = rec.frames
    if kind == "temporal":
        P = block.shape[1]
        vp = v[:, 1:].view(B, T, P).transpose(1, 2)[:, :, None]  # (B, P, 1, T)
        y = (vp @ block)[:, :, 0].transpose(1, 2).reshape(B, -1)
        return torch.cat([v[:, :1] * cls_self, y], 1)
    if kind == "spatial":
        n1 = block.shape[-1]
        c = 1.0 / T if cls_rows == "mean" else 1.0
        w = torch.cat([(v[:, None, :1] * c).expand(B, T, 1), v[:, 1:].view(B, T, n1 - 1)], 2)  # (B, T, 1+P)
        y = (w[:, :, None] @ block)[:, :, 0]  # (B, T, 1+P)
        return torch.cat([y[:, :, 0].sum(1, keepdim=True), y[:, :, 1:].reshape(B, -1)], 1)
    raise ValueError(kind)


def embedded_sum(rec, block: torch.Tensor, cls_self: float = 0.0, cls_rows: str = "mean") -> torch.Tensor:
    """(B,) sum of all entries of each embedded matrix ``G``."""
    B = block.shape[0]
    if rec.kind == "spatial":
        c = 1.0 / block.shape[1] if cls_rows == "mean" else 1.0
        return block[:, :, 1:, :].reshape(B, -1).sum(1) + block[:, :, 0, :].reshape(B, -1).sum(1) * c
    if rec.kind == "temporal":
        return block.reshape(B, -1).sum(1) + cls_self
    return block.reshape(B, -1).sum(1)


def scale_columns(rec, block: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``G diag(s)`` in block layout; ``s`` (B, ...) is per token in the record's ln layout."""
    if rec.kind == "global":
        return block * s[:, None, :]
    if rec.kind == "window":
        idx = shifted_index(rec.grid, rec.window, rec.shift, block.device)
        return block * s[:, idx][:, :, None, :]
    return block * s[:, :, None, :]  # spatial (B, T, 1+P), temporal (B, P, T)


def readout_vector(layout, n: int, batch: int, pool: str = "mean", dtype=torch.float64, device=None):
    """(B, n) readout rows ``v0`` of a stage token vector of length ``n`` (module docstring)."""
    weights = layout.readout.weights
    v = torch.zeros(batch, n, dtype=dtype, device=device)
    if "cls" in weights:
        v[:, 0] = weights["cls"]
    if "dist" in weights:
        v[:, 1] = weights["dist"]
    if "patches" in weights:
        k = layout.prefix
        w = weights["patches"]
        v[:, k:] = w / (n - k) if (pool == "mean" or len(weights) > 1) else w
    return v


def patch_part(rec, v: torch.Tensor) -> torch.Tensor:
    """(B, n) stage token vector -> (B, T', h, w) patch tokens of ``rec``'s stage."""
    h, w = rec.grid
    k = 0 if rec.kind == "window" else rec.prefix
    return v[:, k:].reshape(v.shape[0], rec.frames, h, w)


def last_layers(recs: Sequence, layers: Optional[int], n_layers: int) -> List:
    """Records of the model's last ``layers`` transformer blocks (all if ``None``)."""
    if layers is None:
        if recs and min(r.layer for r in recs) != 0:
            raise ValueError("the trace does not hold every layer")
        return list(recs)
    if not 1 <= layers <= n_layers:
        raise UserError(f"method.layers={layers} is out of range for this model: it has {n_layers} layers "
                        f"(allowed range is [1, {n_layers}], or null for all)")
    return [r for r in recs if r.layer >= n_layers - layers]


def propagate(layout, recs: Sequence, blocks: Sequence[torch.Tensor], *, residual: bool, pool: str,
              cls_self: float, cls_rows: str) -> torch.Tensor:
    """Readout rows ``v0^T M_L ... M_1`` of the composed relevance, as (B, T', h, w) token maps.

    ``residual=False``: ``M_l = G_l`` (rollout; blocks already include the identity);
    ``residual=True``: ``M_l = I + G_l`` (Chefer's ``R <- R + G R``).
    """
    last = recs[-1]
    v = readout_vector(layout, last.n_tokens, blocks[-1].shape[0], pool, blocks[-1].dtype, blocks[-1].device)
    stage = last.stage
    for rec, blk in zip(reversed(recs), reversed(blocks)):
        if rec.stage != stage:  # stage boundary (e.g. Swin patch merging): v <- v M
            if rec.prefix and rec.kind != "window":
                raise NotApplicable("several stages with prefix tokens are not supported")
            M = _pool_matrix(tuple(rec.grid), tuple(layout.stages[stage])).to(v)
            v = v @ M
            stage = rec.stage
        u = vecmul(rec, v, blk, cls_self, cls_rows)
        v = v + u if residual else u
    return patch_part(recs[0], v)


def rollout_block(rec) -> torch.Tensor:
    """``rownorm(mean_h A + I)`` per block (the identity of each block's own tokens)."""
    a = head_mean(rec.probs).double()
    a = a + torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    return a / a.sum(-1, keepdim=True)


def chefer_block(rec) -> torch.Tensor:
    """``mean_h((grad_A * A).clamp(min=0))`` per block."""
    if rec.grad is None:
        raise RuntimeError(f"attention record {rec.name} has no gradient; trace with grads=True")
    return head_mean((rec.grad * rec.probs).clamp(min=0)).double()


@dataclass
class PropagationConfig(UpsampleConfig):
    """The layers a propagation rule uses: the last ``layers`` blocks (null: all), or every block from
    ``start_layer`` on (the reference codes' convention); not both."""

    layers: Optional[int] = param(None, range=(1, 1024), active=lambda c: c.start_layer is None,
                                  help="the last k blocks used (null: all)")
    start_layer: Optional[int] = param(None, range=(0, 1023), active=lambda c: c.start_layer is not None,
                                       help="use every block from this index on (instead of layers)")

    def validate(self):
        default = type(self).__dataclass_fields__["layers"].default
        if self.start_layer is not None and self.layers not in (None, default):
            raise UserError("give either method.layers (the last k blocks) or method.start_layer (every block "
                            "from index s on), not both")


class PropagationMethod:
    Config = PropagationConfig
    """Mixin for the layer-propagation methods (rollout, chefer, stdnorm): which layers are used --
    ``layers`` (the last k; ``None`` = all) or ``start_layer`` (every block from index s on, as Chefer et
    al.'s evaluation code's ``start_layer``; the two are exclusive) -- and ``upsample``, and the batched
    skeleton trace -> blocks -> propagate."""

    grads = False
    ln_stats = False
    residual = False
    pool = "mean"
    cls_self = 0.0
    cls_rows = "mean"

    def _last_k(self, adapter) -> Optional[int]:
        """The number of last blocks used (None: all)."""
        n = adapter.num_layers
        if self.start_layer is not None:
            if self.start_layer >= n:
                raise UserError(f"method.start_layer={self.start_layer} is out of range for this model: it has {n} "
                                f"layers (allowed range is [0, {n - 1}])")
            return n - self.start_layer
        return self.layers

    def block(self, rec) -> torch.Tensor:
        raise NotImplementedError

    def trace_request(self, adapter):
        k = self._last_k(adapter)
        if k is not None:
            last_layers([], k, adapter.num_layers)  # the out-of-range message, before any pass
        return {"attentions": True, "grads": self.grads, "ln_stats": self.ln_stats, "layers": k}

    def explain_trace(self, adapter, trace):
        recs = last_layers(trace.attentions, self._last_k(adapter), adapter.num_layers)
        maps = propagate(adapter.layout, recs, [self.block(r) for r in recs], residual=self.residual, pool=self.pool,
                         cls_self=self.cls_self, cls_rows=self.cls_rows)
        return [from_token_map(m, adapter.image_size, adapter.layout.tubelet, mode=self.upsample) for m in maps]


def readout_rows(layout, recs: Sequence, pool: str = "mean") -> torch.Tensor:
    """(B, L, T', h, w): for each record, the readout row of its head-mean attention (``v0 A``) on the patches.

    For a CLS readout this is the CLS-to-patch attention (per frame for divided attention: each frame's CLS
    copy); for a pooled readout the attention each patch receives, averaged over all querying tokens.
    """
    rows = []
    for rec in recs:
        blk = head_mean(rec.probs).double()
        v0 = readout_vector(layout, rec.n_tokens, blk.shape[0], pool, blk.dtype, blk.device)
        rows.append(patch_part(rec, vecmul(rec, v0, blk, cls_rows="sum")))
    return torch.stack(rows, 1)

