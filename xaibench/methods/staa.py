"""STAA: spatio-temporal attention attribution (Wang & Liu, arXiv 2411.00630, seed 000).

One forward pass; the attention of the last ``layers`` layers (default 1).

Raw STAA (TimeSformer, divided space-time attention)
---------------------------------------------------
Let ``S_l`` (T, heads, 1+P, 1+P) be layer ``l``'s spatial attention and
``A_l`` (P, heads, T, T) its temporal attention, for the last ``L = layers`` layers.

* spatial map of frame t:   ``m_t(p) = mean_l mean_heads S_l[t, :, 0, 1+p]``
  (the CLS-to-patch attention of frame t's CLS copy), renormalised to sum 1
  over the P patches;
* temporal importance (``temporal``):
  - ``temporal_attention`` (default): ``tau_t = mean_l mean_{p, heads, t'} A_l[p, :, t', t]``,
    the temporal attention frame t *receives*, averaged over patches, heads and
    querying frames (sums to 1 over t);
  - ``cls_mass``: ``tau_t`` proportional to ``sum_p S_l[t, :, 0, 1+p]`` (how much of
    frame t's CLS attention goes to patches rather than to itself), normalised;
  - ``uniform``: ``tau_t = 1 / T``;
* token map ``M_t(p) = tau_t * m_t(p)`` (the whole map sums to 1; each frame
  sums to ``tau_t``), frame scores ``tau``; upsampled bilinearly (``upsample``)
  to the input resolution.

Enhanced STAA (``enhance=True``)
-------------------------------
1. temporal smoothing (``smoothing``): ``none``, or ``ema``:
   ``m~_0 = m_0``, ``m~_t = alpha * m_t + (1 - alpha) * m~_{t-1}`` on the spatial
   maps before weighting (the authors' exploratory code used alpha = 0.3);
2. attention focusing with a dynamic threshold per frame:
   ``theta_t = mu_t + lambda * sigma_t`` where ``mu_t`` and ``sigma_t`` are the mean
   and (population) standard deviation of frame t's token map; values below
   ``theta_t`` are set to zero, values at or above it are kept unchanged.
   Frame scores stay ``tau``.

The paper does not publish lambda, the temporal aggregation or the focusing
formula (docs/protocols.md, "STAA"); the choices above are ours and each is a
config value.  The default ``lambda`` was chosen on the synthetic validation
split (see ``results/lambda_selection.csv`` and the README).

Any model, from the adapter's declarations
------------------------------------------
The spatial map is the *readout row* of the last layers' attention (head mean),
``r_l = v0 A_l`` on the patch tokens (:func:`xaibench.methods._relevance.readout_rows`):
for a CLS readout the CLS-to-patch attention (with divided attention, each
frame's CLS copy: the formula above); for DeiT the mean of the CLS and
distillation rows; for a pooled readout (Swin, VideoMAE) the attention each
token receives, averaged over all querying tokens (Swin: the last stage's
window attention scattered into the global matrix).  ``m_t`` = ``mean_l r_l``
restricted to token frame t, renormalised to sum 1.

Temporal importance for *joint* space-time attention (ViViT, VideoMAE: one
attention over all frames' tokens, no separate temporal attention):

* ``temporal_attention``: ``tau_t = mean_l mean_{heads, queries i} sum_{j in frame t} A_l[i, j]``,
  the share of all attention that frame t's tokens receive (the joint
  analogue of the temporal attention a frame receives), normalised;
* ``cls_mass``: ``tau_t`` proportional to ``sum_{p in frame t} r(p)``, the share of the
  readout row that falls on frame t.

Token frames of a tubelet model (VideoMAE, ViViT: 2 input frames per token
frame) give the same map and score to both input frames.  Images: ``tau = [1]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import param
from ..errors import UserError
from ._relevance import head_mean, patch_part, readout_rows
from .base import METHODS, Method, UpsampleConfig, from_token_map

TEMPORAL = ("temporal_attention", "cls_mass", "uniform")
SMOOTHING = ("none", "ema")


def focus(token_map: torch.Tensor, lam: float) -> torch.Tensor:
    """Per-frame dynamic threshold: zero every value below ``mu_t + lam * sigma_t`` (token map (T, h, w))."""
    flat = token_map.flatten(1)
    mu = flat.mean(1, keepdim=True)
    sigma = flat.std(1, unbiased=False, keepdim=True)
    theta = mu + lam * sigma
    return torch.where(flat >= theta, flat, torch.zeros_like(flat)).view_as(token_map)


def ema(maps: torch.Tensor, alpha: float) -> torch.Tensor:
    """``m~_0 = m_0``, ``m~_t = alpha m_t + (1 - alpha) m~_{t-1}`` along the first axis."""
    out = maps.clone()
    for t in range(1, maps.shape[0]):
        out[t] = alpha * maps[t] + (1 - alpha) * out[t - 1]
    return out


@dataclass
class STAAConfig(UpsampleConfig):
    layers: int = param(1, range=(1, 64), help="last layers whose attention is averaged")
    enhance: bool = param(False, help="enhanced STAA: focus each frame with the dynamic threshold")
    lam: float = param(1.0, range=(0.0, 5.0), key="lambda", active=lambda c: c.enhance,
                       help="threshold mu_t + lambda sigma_t of the attention focusing")
    smoothing: str = param("none", choices=SMOOTHING, active=lambda c: c.enhance,
                           help="temporal smoothing of the spatial maps before focusing")
    alpha: float = param(0.3, range=(0.0, 1.0), active=lambda c: c.enhance and c.smoothing == "ema",
                         help="EMA weight of the current frame")
    temporal: str = param("temporal_attention", choices=TEMPORAL, help="temporal importance tau_t")


@METHODS.register("staa")
class STAA(Method):
    name = "staa"
    Config = STAAConfig

    def trace_request(self, adapter):
        """The one forward pass STAA needs: attention of the last ``layers`` blocks only."""
        n = adapter.num_layers
        if self.layers > n:
            raise UserError(f"method.layers={self.layers} is out of range: the model has {n} layers "
                            f"(allowed range is [1, {n}])")
        return {"attentions": True, "layers": self.layers}

    def raw_maps(self, adapter, trace):
        """(spatial maps m (B, T', h, w), each frame summing to 1; temporal importance tau (B, T'))."""
        n = adapter.num_layers
        mine = [r for r in trace.attentions if r.layer >= n - self.layers]
        recs = [r for r in mine if r.kind != "temporal"]
        recs = [r for r in recs if r.stage == recs[-1].stage]  # the last stage's token grid
        rows = readout_rows(adapter.layout, recs).mean(1)  # (B, T', h, w)
        B, T = rows.shape[:2]
        if self.temporal == "uniform" or T == 1:
            tau = torch.ones(B, T, dtype=rows.dtype, device=rows.device)
        elif self.temporal == "cls_mass":
            tau = rows.flatten(2).sum(2)
        else:
            temporal = [r for r in mine if r.kind == "temporal"]
            if temporal:  # divided attention: the temporal attention each frame receives
                tau = torch.stack([head_mean(r.probs).double().mean(dim=(1, 2)) for r in temporal]).mean(0)
            else:  # joint attention: the share of all attention that lands on each frame's tokens
                shares = []
                for r in recs:
                    received = head_mean(r.probs).double().mean(1)  # (B, n): mean over queries
                    shares.append(patch_part(r, received).flatten(2).sum(2))
                tau = torch.stack(shares).mean(0)
        m = rows / rows.flatten(2).sum(2).clamp_min(1e-12)[..., None, None]
        tau = tau / tau.sum(1, keepdim=True).clamp_min(1e-12)
        return m, tau

    def from_maps(self, adapter, m, tau):
        """Raw or enhanced STAA of one sample from its maps m (T', h, w) and tau (T',)."""
        if self.enhance and self.smoothing == "ema":
            m = ema(m, self.alpha)
        token_map = tau[:, None, None] * m
        if self.enhance:
            token_map = focus(token_map, self.lam)
        return from_token_map(token_map, adapter.image_size, adapter.layout.tubelet, frame_scores=tau,
                              mode=self.upsample)

    def explain_trace(self, adapter, trace):
        m, tau = self.raw_maps(adapter, trace)
        return [self.from_maps(adapter, m[i], tau[i]) for i in range(m.shape[0])]
