"""Localisation against known ground truth (the synthetic benchmarks).

* ``ap`` (higher is better): average precision of the attribution volume
  (T, H, W), every voxel a score, against the ground-truth evidence mask
  (``sklearn.metrics.average_precision_score``).
* ``iou`` (higher is better): the volume min-max normalised and thresholded at
  its mean (foreground = value > mean, the Chefer et al. segmentation protocol,
  docs/protocols.md, "ImageNet-segmentation"); intersection over union with the mask.
* ``temporal_ap`` (higher is better): average precision of the frame scores
  (T,) against the evidence frames; reported only when the sample has
  ground-truth frames and T > 1 (not for images), NaN for a clip whose frames
  are all evidence or none.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score

from .base import METRICS
from .base import Metric
from .segmentation import normalise


def binarise(volume: np.ndarray) -> np.ndarray:
    """Foreground = min-max normalised value above its mean (the segmentation protocol's threshold)."""
    v = normalise(volume)
    return v > v.mean()


def iou(pred: np.ndarray, mask: np.ndarray) -> float:
    union = np.logical_or(pred, mask).sum()
    return float(np.logical_and(pred, mask).sum() / union) if union else float("nan")


@METRICS.register("localisation")
class Localisation(Metric):
    name = "localisation"
    outputs = {"ap": True, "iou": True, "temporal_ap": True}
    requires = ("mask",)

    def compute(self, ctx):
        vol = ctx.explanation.volume.detach().cpu().numpy()
        mask = ctx.mask.cpu().numpy().astype(bool)
        out = {"ap": float("nan"), "iou": iou(binarise(vol), mask)}
        if mask.any() and not mask.all():
            out["ap"] = float(average_precision_score(mask.reshape(-1), vol.reshape(-1)))
        if ctx.frames is not None and len(ctx.frames) > 1:
            fr = ctx.frames.cpu().numpy().astype(bool)
            out["temporal_ap"] = float("nan")
            if fr.any() and not fr.all():
                out["temporal_ap"] = float(average_precision_score(fr, ctx.explanation.frame_scores.cpu().numpy()))
        return out
