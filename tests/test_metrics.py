"""Segmentation and localisation metrics against hand computations and scikit-learn; the harness's memory
measurement.  (The perturbation metrics and the tie rule are tested in tests/test_perturbation_metrics.py,
tests/test_ties.py and tests/test_metrics_quantus.py.)"""

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from xaibench import metrics
from xaibench.datasets.base import Sample
from xaibench.explanation import Explanation
from xaibench.metrics.base import EvalItem, evaluate_items


# --------------------------------------------------------------------------- segmentation
def seg_item(vol, mask, frames=None):
    """One (sample, method) item with ground truth, for the segmentation and localisation metrics."""
    T, H, W = vol.shape
    sample = Sample(sample_id="s", x=torch.zeros(T, 3, H, W), label=0, mask=mask, frames=frames)
    return EvalItem(sample=sample, method="m", explanation=Explanation(vol, vol.flatten(1).sum(1), vol), target=0,
                    logits=torch.zeros(2), rng=np.random.default_rng(0))


def evaluate(name, items, **params):
    return evaluate_items(metrics.create(name, **params), None, items)


def test_segmentation_hand_computed_case():
    # 1 frame, 2x3: normalised map [0, .25, 1; .5, 0, .75] -> mean .4167 -> pred [0,0,1;1,0,1]
    vol = torch.tensor([[[0.0, 1.0, 4.0], [2.0, 0.0, 3.0]]])
    mask = torch.tensor([[[False, True, True], [True, False, False]]])
    out, = evaluate("segmentation", [seg_item(vol, mask)])
    # pred fg = {(0,2), (1,0), (1,2)}; mask fg = {(0,1), (0,2), (1,0)}
    # correct: (0,0) bg/bg, (0,2), (1,0), (1,1) bg/bg -> 4 / 6
    assert out["pixel_accuracy"] == pytest.approx(4 / 6)
    # fg: I = 2, U = 3 + 3 - 2 = 4; bg: I = 2, U = 3 + 3 - 2 = 4 -> mIoU = .5
    assert out["miou"] == pytest.approx(0.5)
    assert (out["_correct"], out["_labelled"], out["_inter_fg"], out["_union_fg"]) == (4, 6, 2, 4)
    norm = np.array([0, 0.25, 1, 0.5, 0, 0.75])
    m = mask.numpy().reshape(-1)
    ap = evaluate("localisation", [seg_item(vol, mask)])[0]["ap"]
    assert ap == pytest.approx(average_precision_score(m, norm))
    assert out["map"] == pytest.approx(average_precision_score(np.r_[~m, m], np.r_[1 - norm, norm]))


def test_segmentation_reduction_sums_histograms_over_the_dataset():
    """The declared reductions (recomputed by the analysis from the journalled state, without the metric) equal
    the counts summed over the dataset by hand."""
    from xaibench.analysis.schema import declared_reductions, hidden_state, reduce_state

    rng = np.random.default_rng(3)
    items, ref = [], dict(correct=0, n=0, ib=0, ub=0, i_f=0, uf=0)
    for i in range(4):
        vol = torch.from_numpy(rng.random((2, 6, 6)))
        mask = torch.from_numpy(rng.random((2, 6, 6)) < 0.3)
        items.append(seg_item(vol, mask))
        v = vol.numpy()
        nrm = (v - v.min()) / (v.max() - v.min())
        pred, gt = nrm > nrm.mean(), mask.numpy()
        ref["correct"] += (pred == gt).sum()
        ref["n"] += gt.size
        ref["i_f"] += (pred & gt).sum()
        ref["uf"] += (pred | gt).sum()
        ref["ib"] += (~pred & ~gt).sum()
        ref["ub"] += (~pred | ~gt).sum()
    seg = metrics.create("segmentation")
    outs = evaluate_items(seg, None, items)
    for it, out in zip(items, outs):
        fg_ap = evaluate("localisation", [it])[0]["ap"]
        assert fg_ap == pytest.approx(average_precision_score(it.mask.numpy().ravel(),
                                                              it.explanation.volume.numpy().ravel()))
    declared = declared_reductions(seg.outputs)
    assert set(declared) == {"pixel_accuracy", "miou"}
    agg = reduce_state(declared, [hidden_state(o) for o in outs])
    assert agg["pixel_accuracy"] == pytest.approx(ref["correct"] / ref["n"])
    assert agg["miou"] == pytest.approx((ref["i_f"] / ref["uf"] + ref["ib"] / ref["ub"]) / 2)
    # one sample's reported values are the same reduction over that sample alone
    one = reduce_state(declared, [hidden_state(outs[0])])
    assert outs[0]["pixel_accuracy"] == one["pixel_accuracy"] and outs[0]["miou"] == one["miou"]


# --------------------------------------------------------------------------- harness measurements
def test_measure_sees_torch_cpu_allocations():
    """In a fresh process (in a long test session the allocator may already hold enough freed, resident memory
    to serve the allocation without raising the RSS: the measurement is a documented lower bound)."""
    import subprocess
    import sys

    code = ("import torch; from xaibench.run.measure import measure\n"
            "with measure() as m:\n    t = torch.ones(64 * 1024 * 1024 // 4); del t\n"
            "with measure() as m2:\n    pass\n"
            "print(m.method, m.peak_mb, m.seconds, m2.peak_mb)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    method, peak, secs, idle = out.stdout.split()
    assert float(secs) > 0
    if method == "vmhwm":
        assert 60 <= float(peak) <= 200
    assert float(idle) < 16
