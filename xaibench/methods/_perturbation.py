"""Shared machinery of the perturbation methods (``shap``, ``lime``).

Interpretable features
----------------------
A binary vector ``z`` in {0, 1}^M switches M input regions on (kept) or off
(replaced by the baseline).  The regions (:func:`feature_mask`, a (T, H, W)
integer map of feature ids):

* ``grid`` (default): ``cell x cell`` pixel squares (default ``cell``: the
  model's token size -- its patch size for ViT / TimeSformer, the final-stage
  token size ``image_size / final grid`` for Swin) times groups of
  ``frames_per_group`` consecutive frames (space-time tubelets for video;
  plain squares for images);
* ``slic``: SLIC superpixels (scikit-image ``slic``) of the image, or
  supervoxels of the whole (T, H, W) clip for video (SLIC on the 3-D volume),
  with ``n_segments`` and ``compactness``.

Colour channels are always switched together.  Baselines are those of the
perturbation metrics (:func:`xaibench.metrics.perturb.make_baseline`:
``zero`` = black, ``mean``, ``blur``).

Model evaluations
-----------------
:class:`MaskedModel` turns ``z`` rows into inputs ``x * m + b * (1 - m)``
(``m`` = ``z`` painted onto the regions), evaluates them ``batch_size`` at a
time (inputs are built per batch, so memory stays bounded) and returns the
target class's logit; it counts every evaluated input (``n_forward``).

From feature values to an explanation
-------------------------------------
Every position gets its feature's value ``phi_f`` (the usual convention of
Captum and of the LIME / SHAP image plots); the token map is the volume
average-pooled to the model's token grid; frame score ``t`` is
``sum_f phi_f * |f in frame t| / |f|`` (each feature's value split over the
frames it spans in proportion to its size there, so frame scores sum to
``sum_f phi_f``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError, check_range
from ..metrics.perturb import make_baseline
from .base import Explanation

FEATURES = ("grid", "slic")
BASELINES = ("zero", "mean", "blur")


class FeatureConfig:
    """Parameters shared by SHAP and LIME (validated)."""

    def __init__(self, features="grid", cell=None, frames_per_group=2, n_segments=64, compactness=10.0,
                 baseline="zero", blur_sigma=4.0):
        if features not in FEATURES:
            raise UserError(f"method.features={features!r}; valid: {', '.join(FEATURES)}")
        if baseline not in BASELINES:
            raise UserError(f"method.baseline={baseline!r}; valid: {', '.join(BASELINES)}")
        self.features = features
        self.cell = None if cell is None else check_range("method.cell", cell, 1, 4096, integer=True)
        self.frames_per_group = check_range("method.frames_per_group", frames_per_group, 1, 4096, integer=True)
        self.n_segments = check_range("method.n_segments", n_segments, 2, 100000, integer=True)
        self.compactness = check_range("method.compactness", compactness, 1e-3, 1e4)
        self.baseline = baseline
        self.blur_sigma = check_range("method.blur_sigma", blur_sigma, 1e-3, 1e3)

    def params(self):
        p = {"features": self.features, "baseline": self.baseline}
        if self.features == "grid":
            p.update(cell=self.cell, frames_per_group=self.frames_per_group)
        else:
            p.update(n_segments=self.n_segments, compactness=self.compactness)
        return p


def default_cell(adapter) -> int:
    if adapter.arch == "swin":
        last = adapter._hook_points()[-1].get("grid", adapter.grid)
        return adapter.image_size // last[0]
    return adapter.patch_size


def feature_mask(adapter, x: torch.Tensor, cfg: FeatureConfig) -> torch.Tensor:
    """(T, H, W) long tensor of feature ids 0..M-1 (every id used)."""
    T, _, H, W = x.shape
    if cfg.features == "grid":
        cell = cfg.cell or default_cell(adapter)
        if H % cell or W % cell:
            raise UserError(f"method.cell={cell} must divide the input size {H}x{W}")
        t = torch.arange(T) // cfg.frames_per_group
        y = torch.arange(H) // cell
        xx = torch.arange(W) // cell
        ids = (t[:, None, None] * (H // cell) + y[None, :, None]) * (W // cell) + xx[None, None, :]
    else:
        from skimage.segmentation import slic

        img = x.permute(0, 2, 3, 1).numpy().astype(np.float64)  # (T, H, W, C)
        seg = slic(img if T > 1 else img[0], n_segments=cfg.n_segments, compactness=cfg.compactness,
                   channel_axis=-1, start_label=0)
        ids = torch.from_numpy(np.asarray(seg)).long().reshape(T, H, W)
    _, ids = torch.unique(ids, return_inverse=True)  # dense ids 0..M-1
    return ids.reshape(T, H, W)


class MaskedModel:
    """``f(z)``: target logit of the input with the features of ``z`` kept, others at the baseline."""

    def __init__(self, adapter, x: torch.Tensor, target: int, ids: torch.Tensor, baseline: torch.Tensor,
                 batch_size: int):
        self.adapter, self.x, self.target, self.ids, self.base = adapter, x, int(target), ids, baseline
        self.batch_size = int(batch_size)
        self.n_forward = 0

    def __call__(self, z) -> np.ndarray:
        z = torch.as_tensor(np.asarray(z), dtype=torch.float32)
        if z.dim() == 1:
            z = z[None]
        out = []
        for i in range(0, z.shape[0], self.batch_size):
            m = z[i:i + self.batch_size][:, self.ids][:, :, None]  # (b, T, 1, H, W)
            xs = self.base[None] + m * (self.x - self.base)[None]
            logits = self.adapter.predict(xs, batch_size=self.batch_size)
            out.append(logits[:, self.target].double())
            self.n_forward += xs.shape[0]
        return torch.cat(out).numpy()


def make_masked_model(adapter, x, target, cfg: FeatureConfig, batch_size: int, seed: int):
    ids = feature_mask(adapter, x, cfg)
    base = make_baseline(x, cfg.baseline, np.random.default_rng(seed), cfg.blur_sigma)
    return MaskedModel(adapter, x, target, ids, base, batch_size), ids


def to_explanation(phi: np.ndarray, ids: torch.Tensor, adapter, n_forward: int, **extras) -> Explanation:
    phi_t = torch.as_tensor(np.asarray(phi, dtype=np.float64))
    vol = phi_t[ids].float()  # (T, H, W)
    T = ids.shape[0]
    M = phi_t.numel()
    counts = torch.zeros(T, M, dtype=torch.float64)
    for t in range(T):
        counts[t] = torch.bincount(ids[t].reshape(-1), minlength=M).double()
    frac = counts / counts.sum(0, keepdim=True).clamp_min(1)
    frame_scores = (frac * phi_t[None]).sum(1).float()
    token_map = F.adaptive_avg_pool2d(vol[:, None], adapter.grid)[:, 0]
    return Explanation(volume=vol, frame_scores=frame_scores, token_map=token_map, n_forward=n_forward,
                       n_backward=0, extras={k: torch.as_tensor(v) for k, v in extras.items()})
