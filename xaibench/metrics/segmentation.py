"""Segmentation of the ground truth by the explanation (Chefer, Gur & Wolf, CVPR 2021 protocol).

The protocol of the ImageNet-segmentation evaluation in Chefer et al.'s
reference code (docs/protocols.md, "ImageNet-segmentation"), applied to the attribution volume
``V`` (T, H, W) at input resolution; T = 1 for images, and in space-time
(T > 1) against the synthetic space-time mask:

1. min-max normalise over the whole volume, in float64: ``N = (V - min V) / (max V - min V)``
   (a constant volume gives ``N = 0``);
2. foreground prediction ``P = N > mean(N)``;
3. against the boolean mask ``M`` (every voxel labelled):

   * ``pixel_accuracy`` = ``sum correct / (eps + sum labelled)``, correct = ``P == M``;
   * ``miou`` = mean over the two classes c in {background, foreground} of
     ``sum I_c / (eps + sum U_c)`` with ``I_c = |P = c and M = c|``,
     ``U_c = |P = c| + |M = c| - I_c``;
   * ``map`` = mean over samples of the average precision (:func:`average_precision`, equal to
     ``sklearn.metrics.average_precision_score``) of the reference code's
     two-channel soft prediction ``[1 - N, N]`` against the one-hot mask
     ``[M = 0, M = 1]``, both flattened together (``get_ap_scores`` in Chefer et
     al.'s code; NaN -> 0 as there).  A constant (degenerate) map normalises to
     0/0 = NaN there, which becomes 0 in *both* channels, so every score ties and
     its AP is the positive rate of the two-channel target, exactly 0.5; its
     foreground prediction is empty (``NaN > NaN`` is false), as here.  A volume
     with a non-finite value is treated as such a constant map.

   The foreground-only average precision of the soft map against the mask (the
   simpler reading of the protocol in docs/protocols.md) is the ``ap`` output of the
   ``localisation`` metric; it is not repeated here.

All three are higher-is-better quality scores.  ``pixel_accuracy`` and ``miou``
are *dataset-level*: the sums run over every sample.  Each is declared with a
:class:`~xaibench.analysis.schema.RatioOfSums` reduction over the hidden per-sample
counts ``_correct``, ``_labelled``, ``_inter_bg``, ``_union_bg``, ``_inter_fg``,
``_union_fg``; the per-sample values reported are the same reduction over one
sample.  ``eps = numpy.spacing(1)`` as in the reference code.

Average precision (:func:`average_precision`): with the scores sorted by
decreasing value and grouped into distinct values (thresholds) ``t_1 > t_2 > ...``,
``AP = sum_k (R_k - R_{k-1}) P_k`` with ``P_k = TP(>= t_k) / #(>= t_k)`` and
``R_k = TP(>= t_k) / #positives`` -- scikit-learn's definition (no interpolation;
tied scores form one threshold).  Computed in torch on the explanation's device, for
every (sample, method) item of a batch in one call.  On a CPU the sort is torch's
radix sort of 32-bit order-preserving keys: exact for float32 scores; for float64
scores in [0, 1] a key monotone in the value (float32 bits, mirrored above 1/2), the
rare runs of one key with values out of order re-sorted by value.  The two-channel
scores need one sort of ``n`` keys, not ``2n``: each sample has one score in each half
of [0, 1] (``f = min(N, 1 - N)`` and ``fl(1 - f)``), so the upper half is the lower
half reversed (:func:`_sorted_folded`).  ``bench/bench_segmentation.py`` times it
against the 1 ms-per-224x224-map target.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch

from ..analysis.schema import EPS, QUALITY, Output, RatioOfSums
from ..config import ComponentConfig
from ..errors import UserError
from .base import METRICS, EvalBatch, Metric

HIDDEN = ("_correct", "_labelled", "_inter_bg", "_inter_fg", "_union_bg", "_union_fg")
#: voxels per chunk of items computed together (about 100 bytes of temporaries per voxel: ~100 MiB a chunk)
CHUNK = 1 << 20
#: torch's CPU sort uses a radix sort for 1-D integer tensors from this size on
_RADIX_MIN = 1 << 15


# ---------------------------------------------------------------------------- average precision
def _key32_exact(s: torch.Tensor) -> torch.Tensor:
    """int32 keys whose order is the order of the float32 values ``s`` (-0.0 just below +0.0)."""
    b = s.contiguous().view(torch.int32)
    return b ^ ((b >> 31) & 0x7FFFFFFF)


_HALF_BITS = int(torch.tensor(0.5, dtype=torch.float32).view(torch.int32))


def _key32_unit(c: torch.Tensor) -> torch.Tensor:
    """int32 keys, monotone non-decreasing in the float64 values ``c`` in [0, 1]: the float32 bits of ``c``
    below 1/2, mirrored bits of ``1 - c`` (exact there, Sterbenz) from 1/2 on -- float32 resolution near 0 and
    near 1.  Distinct values may share a key (re-sorted exactly afterwards)."""
    low = c < 0.5
    k_low = c.float().view(torch.int32)
    k_high = 2 * _HALF_BITS - (1.0 - c).float().view(torch.int32)
    return torch.where(low, k_low, k_high)


def _ap_ascending(is_start: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """AP (float64, one per row) from labels ``ys`` (..., m) in ascending score order and ``is_start`` (..., m):
    whether each position starts a group of equal scores (a threshold).  Each positive ``i`` counts the
    precision at its group's threshold: ``AP = 1/P sum_{i positive} TP(>= s_i) / #(>= s_i)`` with
    ``#(>= s_i) = m - start(i)`` and ``TP(>= s_i) = P - (positives before start(i))`` -- scikit-learn's
    ``sum_k (R_k - R_{k-1}) P_k`` regrouped by positive."""
    m = ys.shape[-1]
    idx = torch.arange(m, dtype=torch.int32, device=ys.device).expand_as(ys)
    start = torch.cummax(torch.where(is_start, idx, 0), -1).values
    y = ys.to(torch.int32)
    cpos = torch.cumsum(y, -1, dtype=torch.int32)
    P = cpos[..., -1:].to(torch.float64)
    before = torch.gather(cpos - y, -1, start.to(torch.int64))
    prec = (P - before) / (m - start).to(torch.float64)
    return (prec * y).sum(-1) / P[..., 0]


def _starts(sorted_values: torch.Tensor) -> torch.Tensor:
    first = torch.ones_like(sorted_values, dtype=torch.bool)
    first[..., 1:] = sorted_values[..., 1:] != sorted_values[..., :-1]
    return first


def _sorted_cpu(s: torch.Tensor, y: torch.Tensor, unit: bool, key: Optional[torch.Tensor] = None):
    """(is_start, labels) in ascending score order of a 1-D CPU tensor, by a radix sort of int32 keys."""
    if key is None:
        key = _key32_exact(s + 0.0) if s.dtype == torch.float32 else _key32_unit(s)  # + 0.0: -0.0 -> +0.0
    ks, perm = torch.sort(key, stable=True)
    ys = y.index_select(0, perm)
    is_start = torch.ones_like(ks, dtype=torch.bool)
    if s.dtype == torch.float32:
        torch.ne(ks[1:], ks[:-1], out=is_start[1:])  # the key is exact: equal keys are equal values
        return is_start, ys
    # a float64 key may be shared by different values: groups by value; runs of one key whose values are out of
    # order are re-sorted by value (the key is monotone in the value: runs are in order relative to each other)
    vs = s.index_select(0, perm)
    torch.ne(vs[1:], vs[:-1], out=is_start[1:])
    inverted = vs[1:] < vs[:-1]
    if bool(inverted.any()):
        at = torch.nonzero(inverted).flatten()
        keys = torch.unique(ks.index_select(0, at))
        lo = torch.searchsorted(ks, keys, side="left").tolist()
        hi = torch.searchsorted(ks, keys, side="right").tolist()
        pos = torch.cat([torch.arange(a, b) for a, b in zip(lo, hi)])  # every position of a mixed run
        sv, so = torch.sort(vs[pos], stable=True)
        ys[pos] = ys[pos][so]
        vs[pos] = sv
        is_start[pos[1:]] = vs[pos[1:]] != vs[pos[1:] - 1]
    return is_start, ys


def average_precision(scores: torch.Tensor, labels: torch.Tensor, unit: bool = False) -> float:
    """scikit-learn's ``average_precision_score(labels, scores)`` of one score vector (module docstring).

    NaN when ``labels`` are all positive or all negative, or a score is not finite.  ``unit=True`` promises
    float64 scores in [0, 1] (enables the fast exact sort on a CPU).
    """
    s = scores.detach().reshape(-1)
    if not s.dtype.is_floating_point:
        s = s.double()
    y = labels.detach().reshape(-1).to(device=s.device, dtype=torch.bool)
    P = int(y.sum())
    if s.numel() == 0 or P == 0 or P == y.numel() or not bool(torch.isfinite(s).all()):
        return float("nan")
    if s.device.type == "cpu" and s.numel() >= _RADIX_MIN and (s.dtype == torch.float32 or
                                                                (unit and s.dtype == torch.float64)):
        is_start, ys = _sorted_cpu(s, y, unit)
    else:
        vs, perm = torch.sort(s, stable=True)
        is_start, ys = _starts(vs), y[perm]
    return float(_ap_ascending(is_start, ys))


def average_precisions(scores: Sequence[torch.Tensor], labels: Sequence[torch.Tensor]) -> List[float]:
    """:func:`average_precision` of several (scores, labels) pairs (the items of a batch)."""
    return [average_precision(s, y) for s, y in zip(scores, labels)]


# ---------------------------------------------------------------------------- the protocol
def normalise(volume: torch.Tensor) -> torch.Tensor:
    """Min-max normalisation over the whole tensor, float64 (a constant or non-finite volume: zeros)."""
    v = volume.detach().double()
    lo, hi = v.min(), v.max()
    if not bool(torch.isfinite(lo) & torch.isfinite(hi)) or not bool(hi > lo):
        return torch.zeros_like(v)
    return (v - lo) / (hi - lo)


def _normalise_rows(v: torch.Tensor):
    """Row-wise :func:`normalise` of (B, n) float64, in place; also whether each row is degenerate (constant or
    not finite: zeros)."""
    lo, hi = v.min(1, keepdim=True).values, v.max(1, keepdim=True).values
    ok = torch.isfinite(lo) & torch.isfinite(hi) & (hi > lo)
    v.sub_(torch.where(ok, lo, torch.zeros_like(lo))).div_(torch.where(ok, hi - lo, torch.ones_like(hi)))
    bad = ~ok[:, 0]
    if bool(bad.any()):
        v[bad] = 0.0
    return v, bad


def _counts_rows(norm: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, 6) float64 counts in the order of :data:`HIDDEN` (the per-sample histograms of the protocol)."""
    pred = norm > norm.mean(1, keepdim=True)
    n = torch.full((norm.shape[0],), float(norm.shape[1]), dtype=torch.float64, device=norm.device)
    cnt = (lambda b: b.sum(1, dtype=torch.int64).double())
    inter_fg = cnt(pred & mask)
    inter_bg = cnt(~pred & ~mask)
    n_pred_fg, n_mask_fg = cnt(pred), cnt(mask)
    return torch.stack([inter_fg + inter_bg, n, inter_bg, inter_fg, (n - n_pred_fg) + (n - n_mask_fg) - inter_bg,
                        n_pred_fg + n_mask_fg - inter_fg], 1)


def counts(norm: torch.Tensor, mask: torch.Tensor) -> dict:
    """The per-sample counts of the protocol (module docstring) of one normalised volume and its mask."""
    c = _counts_rows(norm.reshape(1, -1).double(), mask.reshape(1, -1).bool())[0].tolist()
    return dict(zip(HIDDEN, c))


def _sorted_folded(N: torch.Tensor, M: torch.Tensor):
    """(is_start, labels), each (B, 2n), of the two-channel scores ``[1 - N, N]`` of each row of ``N`` (B, n)
    in ascending order, from ONE sort of ``n`` keys per row (a CPU radix sort of 32-bit keys).

    Every sample ``i`` puts one score at most 1/2 and one at least 1/2 into the two channels:
    ``f_i = min(N_i, 1 - N_i)`` (``1 - N_i`` is exact for ``N_i >= 1/2``) and ``u_i = fl(1 - f_i)``.  The
    lower half sorted by ``f`` is therefore followed by the upper half in the reverse order (``u`` is a
    non-increasing function of ``f``), and a sample's upper label is the opposite of its lower label.
    """
    B, n = N.shape
    low = N < 0.5
    f = torch.where(low, N, 1.0 - N)
    keys = f.float().view(torch.int32)  # f >= 0: the bits are in value order
    ks = torch.empty_like(keys)
    perm = torch.empty(B, n, dtype=torch.int64)
    for r in range(B):  # torch's radix sort runs on 1-D integer tensors
        torch.sort(keys[r], stable=True, out=(ks[r], perm[r]))
    flat = (perm + torch.arange(B).unsqueeze(1) * n).reshape(-1)
    fs = f.reshape(-1).index_select(0, flat).reshape(B, n)
    yl = (M == low).reshape(-1).index_select(0, flat).reshape(B, n)  # lower label: M in channel 1, else not M
    inverted = fs[:, 1:] < fs[:, :-1]
    for r in torch.nonzero(inverted.any(1)).flatten().tolist():
        # values sharing a float32 key out of order: re-sort their runs by value
        k, v = ks[r], fs[r]
        bad = torch.unique(k[1:][inverted[r]])
        lo = torch.searchsorted(k, bad, side="left").tolist()
        hi = torch.searchsorted(k, bad, side="right").tolist()
        pos = torch.cat([torch.arange(a, b) for a, b in zip(lo, hi)])
        sv, so = torch.sort(v[pos], stable=True)
        v[pos] = sv
        yl[r, pos] = yl[r, pos][so]
    values = torch.cat([fs, torch.flip(1.0 - fs, (1,))], 1)
    ys = torch.cat([yl, torch.flip(~yl, (1,))], 1)
    return _starts(values), ys


def two_channel_aps(norm: torch.Tensor, mask: torch.Tensor, constant: torch.Tensor) -> List[float]:
    """Chefer et al.'s ``get_ap_scores`` of each row of ``norm`` (B, n) (normalised maps) and ``mask`` (B, n): AP
    of ``[1 - N, N]`` against ``[M = 0, M = 1]``; a constant map is 0 in both channels (every score ties: AP 0.5,
    the positive rate of the two-channel target); NaN -> 0."""
    norm = norm.double()
    mask = mask.bool()
    out = [0.5] * norm.shape[0]
    rows = torch.nonzero(~constant.reshape(-1)).flatten().tolist()
    if not rows:
        return out
    if norm.device.type == "cpu" and norm.shape[1] >= _RADIX_MIN:
        idx = torch.tensor(rows)
        aps = _ap_ascending(*_sorted_folded(norm.index_select(0, idx), mask.index_select(0, idx))).tolist()
    else:
        aps = [average_precision(torch.cat([1.0 - norm[r], norm[r]]), torch.cat([~mask[r], mask[r]]), unit=True)
               for r in rows]
    for r, ap in zip(rows, aps):
        out[r] = 0.0 if ap != ap else ap
    return out


def two_channel_ap(norm: torch.Tensor, mask: torch.Tensor, constant: bool) -> float:
    """:func:`two_channel_aps` of one sample."""
    return two_channel_aps(norm.reshape(1, -1), mask.reshape(1, -1), torch.tensor([bool(constant)]))[0]


@dataclass
class SegmentationConfig(ComponentConfig):
    """The segmentation protocol has no parameters (Chefer et al.'s evaluation, fixed)."""


def check_shapes(vol: torch.Tensor, mask: torch.Tensor) -> None:
    if tuple(vol.shape) != tuple(mask.shape):
        raise UserError(f"explanation volume {tuple(vol.shape)} and ground-truth mask {tuple(mask.shape)} differ "
                        f"in shape; the dataset's mask must be at the model's input resolution")


def _chunks(items, per_item: int):
    """Consecutive groups of items of equal volume shape, at most :data:`CHUNK` elements each."""
    group: list = []
    for it in items:
        if group and (tuple(it.explanation.volume.shape) != tuple(group[0].explanation.volume.shape)
                      or (len(group) + 1) * per_item > CHUNK):
            yield group
            group = []
        group.append(it)
    if group:
        yield group


@METRICS.register("segmentation")
class Segmentation(Metric):
    """Chefer et al. (CVPR 2021) segmentation protocol: pixel accuracy, mIoU, mAP (module docstring)."""

    Config = SegmentationConfig
    outputs = {
        "pixel_accuracy": Output(True, QUALITY, RatioOfSums((("_correct", "_labelled"),))),
        "miou": Output(True, QUALITY, RatioOfSums((("_inter_bg", "_union_bg"), ("_inter_fg", "_union_fg")))),
        "map": Output(True, QUALITY),
    }
    requires = ("mask",)
    version = "2"  # batched torch implementation; values equal to version 1 (numpy / scikit-learn)

    def evaluate(self, batch: EvalBatch):
        out: List[Optional[dict]] = []
        for it in batch.items:
            check_shapes(it.explanation.volume, it.mask)
        n_el = max((it.explanation.volume.numel() for it in batch.items), default=1)
        for group in _chunks(batch.items, n_el):
            dev = group[0].explanation.volume.device
            vol = torch.stack([it.explanation.volume.detach().reshape(-1) for it in group]).to(dev).double()
            mask = torch.stack([it.mask.reshape(-1).to(dev).bool() for it in group])
            norm, constant = _normalise_rows(vol)
            cnt = _counts_rows(norm, mask).cpu().tolist()
            aps = two_channel_aps(norm, mask, constant)
            for j in range(len(group)):
                state = dict(zip(HIDDEN, cnt[j]))
                row = {name: o.aggregation.compute([state]) for name, o in self.outputs.items()
                       if o.aggregation.dataset_level}
                row["map"] = aps[j]
                out.append({**row, **state})
        return out


__all__ = ["Segmentation", "SegmentationConfig", "average_precision", "average_precisions", "normalise", "counts",
           "two_channel_ap", "EPS", "HIDDEN"]
