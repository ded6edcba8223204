"""Features, baselines and perturbations shared by the perturbation metrics.

Features
--------
A *feature* is a group of input positions that is kept or removed together.
:func:`feature_ids` labels every (t, y, x) position of a (T, H, W) volume:

* ``pixel``   : every position is its own feature (T*H*W features);
* ``patch``   : ``patch x patch`` squares in each frame (the model's token grid
  by default), T*(H/patch)*(W/patch) features;
* ``tubelet`` : ``patch x patch`` squares over ``frames_per_group``
  consecutive frames (space-time tubelets).

A feature's attribution is the *mean* of the attribution volume over its
positions (:func:`feature_scores`).  Colour channels are always perturbed together.

Baselines
---------
``zero`` (black), ``mean`` (per-channel mean of the sample), ``blur`` (Gaussian
blur, sigma = ``blur_sigma`` pixels, per frame), ``uniform`` (U[0, 1] noise
drawn from the metric's seeded generator).

Ranking
-------
:func:`rank` orders features by decreasing attribution; ties (e.g. the zeros of
a thresholded map) are broken by a random permutation from the seeded
generator, never by position, so that a map with many ties is not favoured or
penalised by the order of the pixels.

The shared parameters and batched prediction of the perturbation metrics are in
:mod:`xaibench.metrics.perturbation` (this module imports nothing from the
metric package, so methods may use its helpers).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError

FEATURE_KINDS = ("pixel", "patch", "tubelet")
BASELINES = ("zero", "mean", "blur", "uniform")
OUTPUTS = ("logit", "prob")  # model output a perturbation metric reads


def feature_ids(shape, kind: str = "patch", patch: int = 8, frames_per_group: int = 1) -> torch.Tensor:
    """(T, H, W) integer label of the feature every position belongs to (labels 0 .. F-1).

    Tubelets of the last group are shorter when ``frames_per_group`` does not
    divide T.
    """
    T, H, W = shape
    if kind not in FEATURE_KINDS:
        raise UserError(f"unknown feature grouping {kind!r}; valid: {', '.join(FEATURE_KINDS)}")
    if kind == "pixel":
        return torch.arange(T * H * W).view(T, H, W)
    if patch is None or int(patch) != patch or patch < 1 or H % patch or W % patch:
        raise UserError(f"feature patch size {patch} must be a positive integer that divides the input size "
                        f"{H}x{W}; set the metric's `patch`")
    patch = int(patch)
    if kind == "tubelet" and (int(frames_per_group) != frames_per_group or frames_per_group < 1):
        raise UserError(f"frames_per_group={frames_per_group!r} must be a positive integer")
    fg = 1 if kind == "patch" else max(1, int(frames_per_group))
    t = torch.arange(T) // fg
    y = torch.arange(H) // patch
    x = torch.arange(W) // patch
    gh, gw = H // patch, W // patch
    return (t[:, None, None] * gh + y[None, :, None]) * gw + x[None, None, :]


def feature_scores(volume: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Mean attribution of each feature: (F,)."""
    n = int(ids.max()) + 1
    flat = ids.reshape(-1)
    s = torch.zeros(n, dtype=torch.float64).index_add_(0, flat, volume.reshape(-1).double())
    c = torch.zeros(n, dtype=torch.float64).index_add_(0, flat, torch.ones_like(flat, dtype=torch.float64))
    return s / c


def feature_totals(volume: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Summed attribution of each feature over its positions: (F,) float64."""
    n = int(ids.max()) + 1
    return torch.zeros(n, dtype=torch.float64).index_add_(0, ids.reshape(-1), volume.reshape(-1).double())


def rank(scores: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Feature indices by decreasing score, ties broken by a seeded random permutation."""
    n = scores.numel()
    perm = torch.from_numpy(rng.permutation(n))
    order = torch.argsort(-scores[perm], stable=True)
    return perm[order]


def make_baseline(x: torch.Tensor, kind: str = "zero", rng: np.random.Generator | None = None,
                  blur_sigma: float = 4.0) -> torch.Tensor:
    """Baseline of the same shape as ``x`` (T, C, H, W)."""
    if kind == "blur" and not (isinstance(blur_sigma, (int, float)) and blur_sigma > 0):
        raise UserError(f"blur_sigma={blur_sigma!r} must be a positive number of pixels")
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
    """Perturbed inputs: where ``keep[k, feature]`` is True the input, else the baseline.

    ``keep``: (K, F) bool -> returns (K, T, C, H, W).
    """
    m = keep.bool()[:, ids][:, :, None]  # (K, T, 1, H, W)
    return torch.where(m, x[None], base[None])

