"""Perturbation primitives shared by the perturbation methods (SHAP, LIME) and the perturbation metrics.

One vocabulary everywhere:

Features (``features``)
-----------------------
A *feature* is a group of input positions kept or removed together (all colour
channels at once).  :func:`feature_ids` labels every (t, y, x) position of a
(T, H, W) volume with its feature:

* ``grid``: ``cell x cell`` pixel squares, over ``frames_per_group`` consecutive
  frames (space-time *tubelets* for video; plain squares for images;
  ``cell = 1`` gives single pixels).  The default ``cell`` is the model's
  token size (:func:`token_cell`);
* ``slic``: SLIC superpixels (scikit-image) of the image, or supervoxels of the
  whole (T, H, W) clip (SLIC on the 3-D volume), with ``n_segments`` and
  ``compactness``.

Baselines (``baseline``)
------------------------
``zero`` (black), ``mean`` (per-channel mean of the sample), ``blur``
(Gaussian blur, sigma ``blur_sigma`` pixels, per frame), ``uniform`` (U[0, 1]
noise from a seeded generator).

Masking
-------
:func:`compose` builds ``x * m + b * (1 - m)`` for binary keep-masks ``m`` over
the features; :class:`Perturber` evaluates stacks of masks through the model
``batch_size`` at a time (inputs built per batch, so memory stays bounded),
on the adapter's device, with the adapter's in-run output cache
(:class:`xaibench.models.base.OutputCache`) so that a mask already evaluated
for this input (by another method, metric or parameter value) is not
evaluated again.

Ranking
-------
:func:`descending` orders features by decreasing score and returns the tie
groups; :func:`tie_orders` gives the orders a rank-based metric averages over
(random among tied features, seeded), so that no score depends on an arbitrary
order of tied features (docs/metrics.md, "Ties and degenerate maps").
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .errors import UserError, check_range

FEATURES = ("grid", "slic")
BASELINES = ("zero", "mean", "blur", "uniform")


def token_cell(adapter, stage: int = 0) -> int:
    """The side in pixels of one token of the model's ``stage`` (0: first; -1: last)."""
    return adapter.image_size // adapter.layout.stages[stage][0]


@dataclass
class FeatureSpec:
    """Validated feature and baseline parameters (the ``features`` vocabulary above)."""

    features: str = "grid"
    cell: Optional[int] = None
    frames_per_group: int = 1
    n_segments: int = 64
    compactness: float = 10.0
    baseline: str = "zero"
    blur_sigma: float = 4.0
    prefix: str = "method"  # config group named in error messages

    def __post_init__(self):
        p = self.prefix
        if self.features not in FEATURES:
            raise UserError(f"{p}.features={self.features!r}; valid: {', '.join(FEATURES)} (grid with cell=1 "
                            f"gives single pixels)")
        if self.baseline not in BASELINES:
            raise UserError(f"{p}.baseline={self.baseline!r}; valid: {', '.join(BASELINES)}")
        if self.cell is not None:
            self.cell = check_range(f"{p}.cell", self.cell, 1, 4096, integer=True)
        self.frames_per_group = check_range(f"{p}.frames_per_group", self.frames_per_group, 1, 4096, integer=True)
        self.n_segments = check_range(f"{p}.n_segments", self.n_segments, 2, 100000, integer=True)
        self.compactness = check_range(f"{p}.compactness", self.compactness, 1e-3, 1e4)
        self.blur_sigma = check_range(f"{p}.blur_sigma", self.blur_sigma, 1e-3, 1e3)

    def params(self) -> dict:
        p = {"features": self.features, "baseline": self.baseline}
        if self.features == "grid":
            p.update(cell=self.cell, frames_per_group=self.frames_per_group)
        else:
            p.update(n_segments=self.n_segments, compactness=self.compactness)
        if self.baseline == "blur":
            p["blur_sigma"] = self.blur_sigma
        return p

    def ids(self, x: torch.Tensor, default_cell: int) -> torch.Tensor:
        """(T, H, W) long feature ids 0..F-1 of the input ``x`` (T, C, H, W)."""
        T, _, H, W = x.shape
        if self.features == "grid":
            return feature_ids((T, H, W), self.cell or default_cell, self.frames_per_group, self.prefix)
        return slic_ids(x, self.n_segments, self.compactness)

    def cache_key(self, ids: torch.Tensor) -> str:
        """Identifies the features ``ids`` and the baseline for the :class:`OutputCache` ('' = not cacheable:
        a random baseline differs between calls)."""
        if self.baseline == "uniform":
            return ""
        digest = hashlib.sha1(ids.detach().cpu().numpy().tobytes()).hexdigest()[:16]
        return f"{digest}/{self.baseline}/{self.blur_sigma if self.baseline == 'blur' else ''}"


def feature_ids(shape, cell: int, frames_per_group: int = 1, prefix: str = "metric") -> torch.Tensor:
    """(T, H, W) integer label of the ``grid`` feature of every position (labels 0 .. F-1, frame-group-major).

    Tubelets of the last group are shorter when ``frames_per_group`` does not divide T.
    """
    T, H, W = shape
    if H % cell or W % cell:
        raise UserError(f"{prefix}.cell={cell} must divide the input size {H}x{W}")
    t = torch.arange(T) // frames_per_group
    y = torch.arange(H) // cell
    x = torch.arange(W) // cell
    gh, gw = H // cell, W // cell
    return (t[:, None, None] * gh + y[None, :, None]) * gw + x[None, None, :]


def slic_ids(x: torch.Tensor, n_segments: int, compactness: float) -> torch.Tensor:
    """SLIC superpixels (T = 1) or supervoxels (T > 1) of ``x`` (T, C, H, W), as dense ids 0..F-1."""
    from skimage.segmentation import slic

    T, _, H, W = x.shape
    img = x.detach().cpu().permute(0, 2, 3, 1).numpy().astype(np.float64)
    seg = slic(img if T > 1 else img[0], n_segments=n_segments, compactness=compactness, channel_axis=-1,
               start_label=0)
    _, ids = torch.unique(torch.from_numpy(np.asarray(seg)).long(), return_inverse=True)
    return ids.reshape(T, H, W)


def n_features(ids: torch.Tensor) -> int:
    return int(ids.max()) + 1


def feature_totals(volume: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Summed attribution of each feature over its positions: (F,) float64."""
    v = volume.reshape(-1).double()
    return torch.zeros(n_features(ids), dtype=torch.float64, device=v.device).index_add_(
        0, ids.reshape(-1).to(v.device), v)


def feature_means(volume: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Mean attribution of each feature over its positions: (F,) float64."""
    ones = torch.ones_like(volume, dtype=torch.float64)
    return feature_totals(volume, ids) / feature_totals(ones, ids)


def descending(scores: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(order, group) for ``scores`` (F,): feature indices by decreasing score (ties by index), and for each
    position of ``order`` the index of its tie group (0 for the highest score; equal scores share a group)."""
    s = scores.detach().double().cpu()
    order = torch.argsort(-s, stable=True)
    srt = s[order]
    new = torch.ones_like(srt, dtype=torch.long)
    new[1:] = (srt[1:] != srt[:-1]).long()
    return order, torch.cumsum(new, 0) - 1


def tie_orders(scores: torch.Tensor, rng: np.random.Generator, draws: int = 2):
    """Orders of the features by decreasing score, the tie policy of docs/metrics.md.

    Features with distinct scores keep their order; tied features (equal
    scores) are ordered at random.  Without ties there is one order (the
    ranking is unique); with ties, ``draws`` seeded random orders, so that a
    metric averaged over them estimates its expectation over all orders of the
    tied features instead of depending on an arbitrary (e.g. index) order.
    The draws come in antithetic pairs -- a random order of each tie group and
    its reverse -- which lowers the variance of the estimate for effects that
    grow with a feature's position.  A constant map is one tie group: its
    orders are random.
    """
    order, group = descending(scores)
    if int(group[-1]) + 1 == order.numel():
        return [order]
    out = []
    g = group.numpy()
    for d in range(int(draws)):
        if d % 2 == 0:
            key = rng.random(order.numel())
        else:
            key = -key  # the antithetic partner: the same tie groups in reverse order
        # within each tie group (consecutive positions of `order`), sort by the key
        out.append(order[torch.from_numpy(np.lexsort((key, g)))])
    return out


def tie_fraction(scores: torch.Tensor) -> float:
    """Share of features whose score equals another feature's score."""
    _, group = descending(scores)
    sizes = torch.bincount(group)
    return float(sizes[sizes > 1].sum()) / float(group.numel())


def make_baseline(x: torch.Tensor, kind: str = "zero", rng: np.random.Generator | None = None,
                  blur_sigma: float = 4.0) -> torch.Tensor:
    """Baseline of the same shape as ``x`` (T, C, H, W)."""
    if kind == "zero":
        return torch.zeros_like(x)
    if kind == "mean":
        return x.mean(dim=(0, 2, 3), keepdim=True).expand_as(x).clone()
    if kind == "uniform":
        if rng is None:
            raise ValueError("uniform baseline needs a generator")
        return torch.from_numpy(rng.random(tuple(x.shape), dtype=np.float32)).to(x)
    if kind == "blur":
        r = max(1, int(3 * blur_sigma))
        k = torch.exp(-(torch.arange(-r, r + 1, dtype=torch.float32) ** 2) / (2 * blur_sigma**2))
        k = (k / k.sum()).to(x)
        C = x.shape[1]
        y = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).repeat(C, 1, 1, 1), groups=C)
        y = F.conv2d(F.pad(y, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).repeat(C, 1, 1, 1), groups=C)
        return y
    raise UserError(f"unknown baseline {kind!r}; valid: {', '.join(BASELINES)}")


def compose(x: torch.Tensor, base: torch.Tensor, ids: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Perturbed inputs (K, T, C, H, W): the input where ``keep[k, feature]`` is true, else the baseline.

    ``base`` is one baseline (T, C, H, W) or one per row (K, T, C, H, W).
    """
    m = keep.to(ids.device).bool()[:, ids][:, :, None]  # (K, T, 1, H, W)
    return torch.where(m, x[None], base if base.dim() == 5 else base[None])


class Perturber:
    """Model logits of perturbed copies of one input ``x`` (T, C, H, W).

    ``logits(keep)`` for a (K, F) keep-mask returns (K, classes) float32 logits
    on the adapter's device: rows are composed and evaluated ``batch_size`` at a
    time.  With a ``key`` (:meth:`FeatureSpec.cache_key`: the features and a
    deterministic baseline), rows already evaluated for this input are looked
    up in ``adapter.cache`` instead.  The adapter counts every real forward pass.
    """

    def __init__(self, adapter, x: torch.Tensor, ids: torch.Tensor, baseline: torch.Tensor, batch_size: int = 32,
                 key: str = ""):
        dev = adapter.device
        self.adapter, self.x, self.ids, self.base = adapter, x.to(dev), ids.to(dev), baseline.to(dev)
        self.batch_size = int(batch_size)
        self.cache = getattr(adapter, "cache", None) if key else None
        self.key = key + "/" + _digest(self.x) if key else ""
        self.n_features = n_features(ids)

    def _eval(self, keep: torch.Tensor, base=None) -> torch.Tensor:
        out = []
        for i in range(0, keep.shape[0], self.batch_size):
            b = self.base if base is None else base[i:i + self.batch_size]
            out.append(self.adapter.predict(compose(self.x, b, self.ids, keep[i:i + self.batch_size]),
                                            batch_size=self.batch_size))
        return torch.cat(out, 0) if out else torch.empty(0, self.adapter.num_classes, device=self.adapter.device)

    def logits(self, keep: torch.Tensor, base: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(K, classes) logits; ``base`` optionally gives one baseline per row (never cached)."""
        keep = torch.as_tensor(keep).bool()
        if keep.dim() == 1:
            keep = keep[None]
        if keep.shape[1] != self.n_features:
            raise ValueError(f"keep mask has {keep.shape[1]} features, the input {self.n_features}")
        if self.cache is None or base is not None:
            return self._eval(keep, base)
        rows = keep.cpu().numpy()
        keys = [(self.key, np.packbits(r).tobytes()) for r in rows]
        missing = [i for i, k in enumerate(keys) if k not in self.cache.store]
        uniq = list(dict.fromkeys(keys[i] for i in missing))
        first = {k: i for i, k in reversed(list(enumerate(keys)))}
        if uniq:
            idx = torch.tensor([first[k] for k in uniq])
            new = self._eval(keep[idx])
            for k, v in zip(uniq, new):
                self.cache.store[k] = v
        self.cache.hits += len(keys) - len(uniq)
        self.cache.misses += len(uniq)
        return torch.stack([self.cache.store[k] for k in keys])


def _digest(x: torch.Tensor) -> str:
    return hashlib.sha1(x.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]
