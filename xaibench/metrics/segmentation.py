"""Segmentation of the ground truth by the explanation (Chefer, Gur & Wolf, CVPR 2021 protocol).

The protocol of the ImageNet-segmentation evaluation in Chefer et al.'s
reference code (docs/protocols.md, "ImageNet-segmentation"), applied to the attribution volume
``V`` (T, H, W) at input resolution; T = 1 for images, and in space-time
(T > 1) against the synthetic space-time mask:

1. min-max normalise over the whole volume: ``N = (V - min V) / (max V - min V)``
   (a constant volume gives ``N = 0``);
2. foreground prediction ``P = N > mean(N)``;
3. against the boolean mask ``M`` (every voxel labelled):

   * ``pixel_accuracy`` = ``sum correct / sum labelled``, correct = ``P == M``;
   * ``miou`` = mean over the two classes c in {background, foreground} of
     ``sum I_c / sum U_c`` with ``I_c = |P = c and M = c|``,
     ``U_c = |P = c| + |M = c| - I_c``;
   * ``map`` = mean over samples of the average precision
     (``sklearn.metrics.average_precision_score``) of the reference code's
     two-channel soft prediction ``[1 - N, N]`` against the one-hot mask
     ``[M = 0, M = 1]``, both flattened together (``get_ap_scores`` in Chefer et
     al.'s code; NaN -> 0 as there).  A constant (degenerate) map normalises to
     0/0 = NaN there, which becomes 0 in *both* channels, so every score ties and
     its AP is the positive rate of the two-channel target, exactly 0.5; its
     foreground prediction is empty (``NaN > NaN`` is false), as here;
   The foreground-only average precision of the soft map against the mask (the
   simpler reading of the protocol in docs/protocols.md) is the ``ap`` output of the
   ``localisation`` metric; it is not repeated here.

All three are higher-is-better.  ``pixel_accuracy`` and ``miou`` are
*dataset-level*: the sums run over every sample (the per-sample values
reported are the same formulas on one sample).  ``compute`` therefore also
returns the hidden counts ``_correct``, ``_labelled``, ``_inter_bg``,
``_inter_fg``, ``_union_bg``, ``_union_fg``, and :meth:`Segmentation.reduce`
turns the list of per-sample dicts of one (benchmark, method) into the
dataset-level numbers (see :mod:`xaibench.metrics.base`).  Divisions add the
reference code's ``eps = np.spacing(1)`` to the denominator.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import average_precision_score

from ..errors import UserError
from .base import METRICS
from .base import Metric

EPS = np.spacing(1)
HIDDEN = ("_correct", "_labelled", "_inter_bg", "_inter_fg", "_union_bg", "_union_fg")


def normalise(volume: np.ndarray) -> np.ndarray:
    v = np.asarray(volume, dtype=np.float64)
    lo, hi = v.min(), v.max()
    return (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)


def counts(norm: np.ndarray, mask: np.ndarray) -> dict:
    """The per-sample histogram counts of the protocol (module docstring)."""
    pred = norm > norm.mean()
    inter_fg = int(np.sum(pred & mask))
    inter_bg = int(np.sum(~pred & ~mask))
    n_pred_fg, n_mask_fg = int(pred.sum()), int(mask.sum())
    n = int(mask.size)
    return {
        "_correct": inter_fg + inter_bg,
        "_labelled": n,
        "_inter_bg": inter_bg,
        "_inter_fg": inter_fg,
        "_union_bg": (n - n_pred_fg) + (n - n_mask_fg) - inter_bg,
        "_union_fg": n_pred_fg + n_mask_fg - inter_fg,
    }


def _ap(y: np.ndarray, s: np.ndarray) -> float:
    if y.all() or not y.any():
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(average_precision_score(y, s))


@METRICS.register("segmentation")
class Segmentation(Metric):
    """Chefer et al. (CVPR 2021) segmentation protocol: pixel accuracy, mIoU, mAP (module docstring)."""

    name = "segmentation"
    outputs = {"pixel_accuracy": True, "miou": True, "map": True}
    requires = ("mask",)

    def compute(self, ctx):
        vol = ctx.explanation.volume.detach().cpu().numpy()
        mask = ctx.mask.detach().cpu().numpy().astype(bool)
        if vol.shape != mask.shape:
            raise UserError(f"explanation volume {vol.shape} and ground-truth mask {mask.shape} differ in shape; "
                            f"the dataset's mask must be at the model's input resolution")
        norm = normalise(vol)
        c = counts(norm, mask)
        y2 = np.concatenate([~mask.reshape(-1), mask.reshape(-1)])
        if vol.max() > vol.min():
            s2 = np.concatenate([1.0 - norm.reshape(-1), norm.reshape(-1)])
        else:  # as the reference code: min-max of a constant map is 0/0 = NaN, set to 0 in *both* channels
            s2 = np.zeros(2 * norm.size)
        out = {**c, **self.reduce([c])}
        out["map"] = float(np.nan_to_num(_ap(y2, s2)))
        return out

    @classmethod
    def reduce(cls, rows) -> dict:
        """Dataset-level ``pixel_accuracy`` and ``miou`` from the hidden per-sample counts (summed).

        ``map`` is a plain mean of the per-sample values, which the
        harness's usual aggregation already gives; it is not returned here.
        """
        rows = list(rows)
        if not rows:
            return {}
        tot = {k: float(sum(r[k] for r in rows)) for k in HIDDEN}
        out = {
            "pixel_accuracy": tot["_correct"] / (EPS + tot["_labelled"]),
            "miou": 0.5 * (tot["_inter_bg"] / (EPS + tot["_union_bg"]) + tot["_inter_fg"] / (EPS + tot["_union_fg"])),
        }
        return out
