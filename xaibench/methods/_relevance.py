"""Shared token-relevance machinery of the attention-propagation methods
(``attention``, ``rollout``, ``chefer``, ``stdnorm``).

Token layouts ("global" token vectors)
-------------------------------------
* ViT: the model's ``N`` tokens (prefix tokens first: the CLS at index 0).
* Swin: the ``h*w`` tokens of a stage in row-major, *unshifted* order.
* TimeSformer: ``1 + T*P`` tokens, ``0`` = CLS, ``1 + t*P + p`` = patch ``p``
  (row-major in the ``h x w`` grid) of frame ``t`` (frame-major; this is our
  own order, the HF hidden states are patch-major, which never matters here
  because the records are already split into frames / patches).

Per-record matrices (``block`` layout, heads already reduced)
--------------------------------------------------------------
=========  ===================  ==============================================
kind       block shape          embedded global matrix G (token -> token)
=========  ===================  ==============================================
global     (N, N)               G = block
window     (nW, q, q)           window k's block scattered onto the original
                                (unshifted) token indices of its tokens, zero
                                outside windows -- exactly
                                :func:`xaibench.models.tokens.window_to_global`
temporal   (P, T, T)            G[(t,p),(t',p)] = block[p, t, t'] (block
                                diagonal over patches); CLS row/column zero
                                except G[CLS, CLS] = ``cls_self``
spatial    (T, 1+P, 1+P)        frame t's block over [CLS copy, its P patches]:
                                G[(t,p),(t,q)] = block[t, 1+p, 1+q],
                                G[(t,p), CLS] = block[t, 1+p, 0],
                                G[CLS, (t,q)] = c * block[t, 0, 1+q],
                                G[CLS, CLS]   = c * sum_t block[t, 0, 0]
                                with c = 1/T (``cls_rows="mean"``) or 1 (``"sum"``)
=========  ===================  ==============================================

The spatial row of the CLS models what HF TimeSformer does: the CLS is copied
into every frame (all copies are the same vector, the layer's input CLS),
each copy attends within its frame, and the CLS residual is the *mean over
frames* of the copies' attention outputs (``torch.mean(cls_token, 1)`` in
``TimesformerLayer.forward``).  So the layer's true token-mixing matrix has the
frame *mean* of the copies' attention rows as its CLS row (``cls_rows="mean"``,
used for attention matrices: rollout).  For gradient-weighted matrices
(``grad_A * A``, Chefer / stdnorm) the block already holds
``A_t * dy/dA_t``; since ``G[CLS, (t,q)] = A_t[0, 1+q] / T`` gives
``dy/dG[CLS, (t,q)] = T dy/dA_t[0, 1+q]``, the gradient-weighted mixing matrix
``G * dy/dG`` has CLS entries ``A_t[0, 1+q] dy/dA_t[0, 1+q]`` with no 1/T
(``cls_rows="sum"``; the CLS-to-CLS entry sums the frames' entries).

Propagation without dense matrices
----------------------------------
Every readout needed is a row vector times a product of layer matrices,
``r = v0^T M_L ... M_1`` (``v0`` = the CLS one-hot, or the all-ones vector for
column sums), so it is computed right-to-left as vector-matrix products
``v <- v G_l`` (or ``v <- v + v G_l`` for ``R <- R + G R``), each done
block-wise (:func:`vecmul`) without forming ``G`` (which for TimeSformer-base
would be 1569 x 1569 per layer and for Swin-T's first stage 3136 x 3136).
Between Swin stages the vector is multiplied by the patch-merging averaging
matrix ``merge_matrix`` (:func:`xaibench.models.tokens.merge_matrix`):
``R_{s+1} = M R_s`` averages the rows of the 2x2 merged patches, so
``v_s = v_{s+1} M``.  Tests check all of this against the dense products.
"""

from __future__ import annotations

from functools import lru_cache
from typing import List, Sequence

import torch

from ..errors import NotApplicable, UserError, check_range
from ..models.tokens import merge_matrix


def shifted_index(grid, window: int, shift: int) -> torch.Tensor:
    """(nW, ws*ws) original (unshifted, row-major) token index of each window position.

    Same convention as :func:`xaibench.models.tokens.window_to_global`.  Cached; never modify the result.
    """
    return _shifted_index(tuple(int(g) for g in grid), int(window), int(shift))


@lru_cache(maxsize=64)
def _shifted_index(grid, window: int, shift: int) -> torch.Tensor:
    h, w = grid
    ws = window
    if h % ws or w % ws:
        raise NotApplicable(f"token grid {grid} is not divisible by the window {ws} (padded Swin stages are "
                            f"not supported)")
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    orig = ((ys + shift) % h) * w + (xs + shift) % w
    return orig.view(h // ws, ws, w // ws, ws).permute(0, 2, 1, 3).reshape(-1, ws * ws)


@lru_cache(maxsize=16)
def _merge(grid, dtype) -> torch.Tensor:
    return merge_matrix(grid, dtype=dtype)


def n_tokens(rec, T: int = 1) -> int:
    """Length of the global token vector of a record's stage."""
    if rec.kind == "global":
        return rec.probs.shape[-1]
    if rec.kind == "window":
        return rec.grid[0] * rec.grid[1]
    P = rec.grid[0] * rec.grid[1]
    return 1 + T * P


def vecmul(rec, v: torch.Tensor, block: torch.Tensor, cls_self: float = 0.0,
           cls_rows: str = "mean") -> torch.Tensor:
    """``v @ G`` for the embedded global matrix ``G`` of ``block`` (see the module docstring)."""
    kind = rec.kind
    if kind == "global":
        return v @ block
    if kind == "window":
        idx = shifted_index(rec.grid, rec.window, rec.shift).reshape(-1)
        q = block.shape[-1]
        y = torch.bmm(v[idx].view(-1, 1, q), block)  # (nW, 1, q)
        out = torch.empty_like(v)
        out[idx] = y.reshape(-1)
        return out
    if kind == "temporal":
        P, T = block.shape[0], block.shape[-1]
        vp = v[1:].view(T, P).t().reshape(P, 1, T)
        y = torch.bmm(vp, block).view(P, T).t().reshape(-1)
        return torch.cat([v[:1] * cls_self, y])
    if kind == "spatial":
        T, n1 = block.shape[0], block.shape[-1]
        c = 1.0 / T if cls_rows == "mean" else 1.0
        w = torch.cat([(v[:1] * c).expand(T, 1), v[1:].view(T, n1 - 1)], 1)  # (T, 1+P)
        y = torch.bmm(w.view(T, 1, n1), block).view(T, n1)
        return torch.cat([y[:, 0].sum().view(1), y[:, 1:].reshape(-1)])
    raise ValueError(kind)


def embedded_sum(rec, block: torch.Tensor, cls_self: float = 0.0, cls_rows: str = "mean") -> torch.Tensor:
    """Sum of all entries of the embedded global matrix ``G``."""
    if rec.kind == "spatial":
        c = 1.0 / block.shape[0] if cls_rows == "mean" else 1.0
        return block[:, 1:, :].sum() + block[:, 0, :].sum() * c
    if rec.kind == "temporal":
        return block.sum() + cls_self
    return block.sum()


def scale_columns(rec, block: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``G diag(s)`` in block layout; ``s`` is a per-token vector in the record's ln layout
    (global (N,), window (h*w,), spatial (T, 1+P), temporal (P, T))."""
    if rec.kind == "global":
        return block * s[None, :]
    if rec.kind == "window":
        idx = shifted_index(rec.grid, rec.window, rec.shift)
        return block * s[idx][:, None, :]
    if rec.kind == "spatial":
        return block * s[:, None, :]
    if rec.kind == "temporal":
        return block * s[:, None, :]
    raise ValueError(rec.kind)


def rollout_block(rec) -> torch.Tensor:
    """``rownorm(mean_h A + I)`` per block (the identity of the block's own tokens)."""
    a = rec.probs[0].mean(dim=-3)
    eye = torch.eye(a.shape[-1], dtype=a.dtype)
    a = a + eye
    return a / a.sum(-1, keepdim=True)


def chefer_block(rec) -> torch.Tensor:
    """``mean_h((grad_A * A).clamp(min=0))`` per block."""
    if rec.grad is None:
        raise RuntimeError(f"attention record {rec.name} has no gradient; trace with grads=True")
    return (rec.grad[0] * rec.probs[0]).clamp(min=0).mean(dim=-3)


def last_layers(adapter, recs: List, layers) -> List:
    """The records of the last ``layers`` transformer layers (all if ``None``).

    A TimeSformer layer holds two records (temporal, spatial); a Swin block one.
    """
    per = 2 if adapter.arch == "timesformer" else 1
    n = len(recs) // per
    if layers is None:
        return recs
    if not 1 <= layers <= n:
        raise UserError(f"method.layers={layers} is out of range for model {adapter.name!r}: it has {n} "
                        f"layers (allowed range is [1, {n}], or null for all)")
    return recs[-layers * per:]


def attention_records(adapter, trace) -> List:
    if adapter.arch == "timesformer":
        return [r for r in trace.attentions if r.kind in ("temporal", "spatial")]
    if adapter.arch == "vit":
        return trace.of_kind("global")
    if adapter.arch == "swin":
        return trace.of_kind("window")
    raise NotApplicable(f"no attention propagation for architecture {adapter.arch!r}")


def uses_cls(adapter, recs) -> bool:
    return adapter.arch == "timesformer" or (adapter.arch == "vit" and recs[-1].has_cls)


def propagate(adapter, recs: Sequence, blocks: Sequence[torch.Tensor], *, residual: bool, readout: str,
              cls_self: float, cls_rows: str) -> torch.Tensor:
    """Readout row ``v0^T M_L ... M_1`` of the composed relevance, as a (T, h, w) token map.

    ``residual=False``: ``M_l = G_l`` (rollout; blocks already include the identity);
    ``residual=True``: ``M_l = I + G_l`` (Chefer's ``R <- R + G R``).
    ``cls_self``: temporal G[CLS, CLS]; ``cls_rows``: spatial CLS row aggregation (module docstring).
    ``readout``: ``cls`` (row of the CLS, ``R[CLS, patches]``), ``sum`` (column sums over all
    final tokens) or ``mean`` (column means).
    """
    T = adapter.num_frames if adapter.arch == "timesformer" else 1
    last = recs[-1]
    N = n_tokens(last, T)
    dtype = blocks[-1].dtype
    if readout == "cls":
        v = torch.zeros(N, dtype=dtype)
        v[0] = 1.0
    elif readout in ("sum", "mean"):
        v = torch.ones(N, dtype=dtype) / (N if readout == "mean" else 1)
    else:
        raise ValueError(readout)
    for i in range(len(recs) - 1, -1, -1):
        rec, blk = recs[i], blocks[i]
        if rec.kind == "window" and n_tokens(rec) != v.numel():  # Swin stage boundary: v <- v M
            v = v @ _merge(tuple(rec.grid), dtype)
        u = vecmul(rec, v, blk, cls_self, cls_rows)
        v = v + u if residual else u
    first = recs[0]
    if adapter.arch == "timesformer":
        h, w = first.grid
        return v[1:].view(T, h, w)
    if adapter.arch == "swin":
        h, w = first.grid
        return v.view(1, h, w)
    h, w = adapter.grid
    return v[-h * w:].view(1, h, w)


class PropagationMethod:
    """Mixin for the layer-propagation methods (rollout, chefer, stdnorm): the
    ``layers`` (how many last layers; ``None`` = all) and ``upsample`` parameters
    and the common explain skeleton ``trace -> per-layer blocks -> propagate``."""

    default_layers = None

    def __init__(self, layers="default", upsample: str = "bilinear"):
        layers = self.default_layers if layers == "default" else layers
        self.layers = None if layers is None else check_range("method.layers", layers, 1, 1024, integer=True)
        self.upsample = upsample

    def params(self):
        return {"layers": self.layers}

    def _explain(self, adapter, x, target, block, *, grads, residual, readout_no_cls, cls_self, cls_rows,
                 ln_stats=False):
        from .base import from_token_map

        trace = adapter.trace(x[None], target=target, attentions=True, grads=grads, ln_stats=ln_stats)
        recs = last_layers(adapter, attention_records(adapter, trace), self.layers)
        blocks = [block(r) for r in recs]
        readout = "cls" if uses_cls(adapter, recs) else readout_no_cls
        m = propagate(adapter, recs, blocks, residual=residual, readout=readout, cls_self=cls_self,
                      cls_rows=cls_rows)
        return from_token_map(m, adapter.image_size, mode=self.upsample, n_forward=1, n_backward=int(grads))
