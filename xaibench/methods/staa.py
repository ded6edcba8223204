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
formula (protocols.md section 1); the choices above are ours and each is a
config value.  The default ``lambda`` was chosen on the synthetic validation
split (see ``results/lambda_selection.csv`` and the README).

Images (ViT, Swin; T = 1)
-------------------------
ViT: the CLS row of the last layers' attention.  Swin has no CLS token: the
attention each token receives, averaged over all querying tokens, of the last
blocks' window attention scattered into the global token matrix
(:func:`xaibench.models.tokens.window_to_global`).  ``tau = [1]``.
"""

from __future__ import annotations

import torch

from ..errors import UserError, check_range
from ..models.tokens import window_to_global
from . import METHODS
from .base import Explanation, Method, upsample

TEMPORAL = ("temporal_attention", "cls_mass", "uniform")
SMOOTHING = ("none", "ema")


def focus(token_map: torch.Tensor, lam: float) -> torch.Tensor:
    """Per-frame dynamic threshold: zero every value below ``mu_t + lam * sigma_t``."""
    flat = token_map.flatten(1)
    mu = flat.mean(1, keepdim=True)
    sigma = flat.std(1, unbiased=False, keepdim=True)
    theta = mu + lam * sigma
    return torch.where(flat >= theta, flat, torch.zeros_like(flat)).view_as(token_map)


def ema(maps: torch.Tensor, alpha: float) -> torch.Tensor:
    out = maps.clone()
    for t in range(1, maps.shape[0]):
        out[t] = alpha * maps[t] + (1 - alpha) * out[t - 1]
    return out


class STAA(Method):
    name = "staa"

    def __init__(self, layers: int = 1, enhance: bool = False, lam: float = 1.0, smoothing: str = "none",
                 alpha: float = 0.3, temporal: str = "temporal_attention", upsample: str = "bilinear"):
        self.layers = check_range("method.layers", layers, 1, 64, integer=True)
        self.enhance = bool(enhance)
        self.lam = check_range("method.lambda", lam, 0.0, 5.0)
        if smoothing not in SMOOTHING:
            raise UserError(f"method.smoothing={smoothing!r}; valid: {', '.join(SMOOTHING)}")
        self.smoothing = smoothing
        self.alpha = check_range("method.alpha", alpha, 0.0, 1.0)
        if temporal not in TEMPORAL:
            raise UserError(f"method.temporal={temporal!r}; valid: {', '.join(TEMPORAL)}")
        self.temporal = temporal
        self.upsample = upsample

    def params(self):
        p = {"layers": self.layers, "enhance": self.enhance, "temporal": self.temporal}
        if self.enhance:
            p.update({"lambda": self.lam, "smoothing": self.smoothing})
            if self.smoothing == "ema":
                p["alpha"] = self.alpha
        return p

    def _last(self, recs):
        if self.layers > len(recs):
            raise UserError(f"method.layers={self.layers} is out of range: the model has {len(recs)} layers "
                            f"(allowed range is [1, {len(recs)}])")
        return recs[-self.layers:]

    def raw_maps(self, trace, adapter):
        """(spatial maps m (T, h, w) each summing to 1, temporal importance tau (T,))."""
        if adapter.arch == "timesformer":
            spatial = self._last(trace.of_kind("spatial"))
            temporal = self._last(trace.of_kind("temporal"))
            cls = torch.stack([r.probs[0].mean(1)[:, 0, 1:] for r in spatial]).mean(0)  # (T, P)
            T = cls.shape[0]
            if self.temporal == "temporal_attention":
                tau = torch.stack([r.probs[0].mean(dim=(0, 1, 2)) for r in temporal]).mean(0)
            elif self.temporal == "cls_mass":
                tau = cls.sum(1)
            else:
                tau = torch.ones(T)
            m = cls
        elif adapter.arch == "vit":
            recs = self._last(trace.of_kind("global"))
            m = torch.stack([r.probs[0].mean(0)[0, 1:] for r in recs]).mean(0)[None]
            tau = torch.ones(1)
        elif adapter.arch == "swin":
            recs = trace.of_kind("window")
            last_grid = recs[-1].grid
            recs = self._last([r for r in recs if r.grid == last_grid])
            cols = []
            for r in recs:
                g = window_to_global(r.probs[:1], r.grid, r.window, r.shift)[0].mean(0)  # (N, N)
                cols.append(g.mean(0))
            m = torch.stack(cols).mean(0)[None]
            tau = torch.ones(1)
        else:
            raise UserError(f"STAA does not support architecture {adapter.arch!r}")
        h, w = last_grid if adapter.arch == "swin" else adapter.grid
        m = m / m.sum(1, keepdim=True).clamp_min(1e-12)
        tau = tau / tau.sum().clamp_min(1e-12)
        return m.view(-1, h, w), tau

    def explain(self, adapter, x, target):
        # record only the last layers' attention (TimeSformer: a temporal and a spatial record per layer)
        per_layer = 2 if adapter.arch == "timesformer" else 1
        n_points = len(adapter.attention_points())
        k = min(self.layers * per_layer, n_points)
        trace = adapter.trace(x[None], target=target, attentions=True, layers=range(-k, 0))
        if self.layers * per_layer > n_points:
            self._last([None] * (n_points // per_layer))  # raises the out-of-range message
        m, tau = self.raw_maps(trace, adapter)
        if self.enhance and self.smoothing == "ema":
            m = ema(m, self.alpha)
        token_map = tau[:, None, None] * m
        if self.enhance:
            token_map = focus(token_map, self.lam)
        vol = upsample(token_map, (adapter.image_size, adapter.image_size), self.upsample)
        return Explanation(volume=vol, frame_scores=tau, token_map=token_map, n_forward=1, n_backward=0)


@METHODS.register("staa")
def _staa(**params):
    if "lambda" in params:
        params["lam"] = params.pop("lambda")
    return STAA(**params)
