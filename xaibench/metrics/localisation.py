"""Localisation against known ground truth (the synthetic benchmarks).

* ``ap`` (higher is better): average precision of the attribution volume
  (T, H, W), every voxel a score, against the ground-truth evidence mask
  (scikit-learn's ``average_precision_score``, computed in torch by
  :func:`xaibench.metrics.segmentation.average_precision`: tied scores form one
  threshold); NaN when the mask is empty or full.
* ``iou`` (higher is better): the volume min-max normalised and thresholded at
  its mean (foreground = value > mean, the Chefer et al. segmentation protocol,
  docs/protocols.md, "ImageNet-segmentation"); ``|P and M| / |P or M|``, NaN when
  both are empty.
* ``temporal_ap`` (higher is better): average precision of the frame scores
  (T,) against the evidence frames; reported only when the sample has
  ground-truth frames and T > 1 (not for images), NaN for a clip whose frames
  are all evidence or none.

All three are quality scores, aggregated by the mean over samples.  Every
(sample, method) item of a batch is computed in one call on the explanation's
device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..analysis.schema import QUALITY, Output
from ..config import ComponentConfig
from .base import METRICS, EvalBatch, Metric
from .segmentation import CHUNK, _normalise_rows, average_precision, check_shapes, normalise


def binarise(volume: torch.Tensor) -> torch.Tensor:
    """Foreground = min-max normalised value above its mean (the segmentation protocol's threshold)."""
    v = normalise(volume)
    return v > v.mean()


def iou(pred: torch.Tensor, mask: torch.Tensor) -> float:
    """Intersection over union of two boolean tensors (NaN when both are empty)."""
    union = int((pred | mask).sum())
    return float(int((pred & mask).sum()) / union) if union else float("nan")


@dataclass
class LocalisationConfig(ComponentConfig):
    """Localisation has no parameters."""


@METRICS.register("localisation")
class Localisation(Metric):
    """Average precision, IoU and temporal AP against the ground truth (module docstring)."""

    Config = LocalisationConfig
    outputs = {"ap": Output(True, QUALITY), "iou": Output(True, QUALITY), "temporal_ap": Output(True, QUALITY)}
    requires = ("mask",)
    version = "2"  # batched torch implementation; values equal to version 1 (scikit-learn)

    def evaluate(self, batch: EvalBatch):
        items = batch.items
        for it in items:
            check_shapes(it.explanation.volume, it.mask)
        out = [dict() for _ in items]
        # IoU of every item with the same shape at once (chunked)
        i = 0
        while i < len(items):
            shape = tuple(items[i].explanation.volume.shape)
            per = max(1, CHUNK // max(1, items[i].explanation.volume.numel()))
            j = i
            while j < len(items) and j - i < per and tuple(items[j].explanation.volume.shape) == shape:
                j += 1
            dev = items[i].explanation.volume.device
            vol = torch.stack([it.explanation.volume.detach().reshape(-1).to(dev) for it in items[i:j]]).double()
            mask = torch.stack([it.mask.reshape(-1).to(dev).bool() for it in items[i:j]])
            norm, _ = _normalise_rows(vol)
            pred = norm > norm.mean(1, keepdim=True)
            inter = (pred & mask).sum(1).tolist()
            union = (pred | mask).sum(1).tolist()
            for k in range(j - i):
                out[i + k]["iou"] = inter[k] / union[k] if union[k] else float("nan")
            i = j
        for it, row in zip(items, out):
            row["ap"] = average_precision(it.explanation.volume, it.mask)
            frames = it.frames
            if frames is not None and len(frames) > 1:
                row["temporal_ap"] = average_precision(it.explanation.frame_scores, frames)
        return [{"ap": r["ap"], "iou": r["iou"], **({"temporal_ap": r["temporal_ap"]} if "temporal_ap" in r else {})}
                for r in out]
