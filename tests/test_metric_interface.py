"""The metric interface (issue 16 section 2, issue 17 item 1): every registered metric declares its outputs
(direction, kind, aggregation), version, requirements and services; the analysis reads the kinds from the rows,
never from a list of names; average precision in torch equals scikit-learn's (ties included); the batched
metrics equal their one-item results and the numpy / scikit-learn implementation they replace."""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import average_precision_score

from xaibench import metrics
from xaibench.analysis.schema import (COST, DESCRIPTIVE, KINDS, QUALITY, Mean, Output, RatioOfSums,
                                      declared_reductions, hidden_state, reduce_state)
from xaibench.config import ComponentConfig
from xaibench.datasets.base import Sample
from xaibench.explanation import Explanation
from xaibench.metrics.base import SERVICES, EvalBatch, EvalItem, Metric, evaluate_items
from xaibench.metrics.segmentation import average_precision, two_channel_ap

MINE = ("segmentation", "localisation", "map_properties", "mprt")


# --------------------------------------------------------------------------- declarations
@pytest.mark.parametrize("name", metrics.available())
def test_every_registered_metric_declares_its_outputs(name):
    m = metrics.create(name)
    assert isinstance(m, Metric) and m.outputs, name
    for out_name, out in m.outputs.items():
        assert isinstance(out, Output), (name, out_name)
        assert out.kind in KINDS and out.kind != COST, (name, out_name)  # cost rows are the harness's
        assert out.higher_is_better in (True, False, None)
        if out.kind == QUALITY:
            assert out.higher_is_better is not None
        assert not out_name.startswith("_")
        for key in out.aggregation.state_keys:
            assert key.startswith("_")
    assert isinstance(m.version, str) and m.version
    assert set(m.requires) <= {"mask", "frames"} and set(m.services) <= set(SERVICES)
    cfg = metrics.METRICS.config(name)
    if name in MINE or cfg is not None:
        assert issubclass(cfg, ComponentConfig)
        assert m.params() == m.cfg.params()


def test_output_declarations_round_trip_and_are_checked():
    for o in (Output(True), Output(None, DESCRIPTIVE), Output(False, aggregation=RatioOfSums((("_a", "_b"),)))):
        assert Output.from_dict(o.to_dict()) == o
    with pytest.raises(ValueError):
        Output(True, kind="fancy")
    with pytest.raises(ValueError):
        Output(None, QUALITY)  # a quality score needs a direction
    with pytest.raises(ValueError):
        RatioOfSums((("a", "_b"),))  # state keys are hidden (underscore)
    assert Output(True).aggregation == Mean() and declared_reductions({"x": Output(True)}) == {}


def test_ratio_of_sums_is_the_pooled_ratio():
    agg = RatioOfSums((("_i1", "_u1"), ("_i2", "_u2")))
    rows = [{"_i1": 1, "_u1": 4, "_i2": 3, "_u2": 3}, {"_i1": 2, "_u1": 2, "_i2": 0, "_u2": 5}]
    assert agg.compute(rows) == pytest.approx((3 / 6 + 3 / 8) / 2)
    declared = {"m": Output(True, aggregation=agg).to_dict()}
    assert reduce_state(declared, rows) == {"m": agg.compute(rows)}
    assert reduce_state(declared, []) == {}


# --------------------------------------------------------------------------- the analysis reads kinds from rows
class NewProperty(Metric):
    """A descriptive metric that no list anywhere names: the share of the map above its mean."""

    outputs = {"share_above_mean_xyz": Output(None, DESCRIPTIVE)}

    def evaluate_one(self, item, batch):
        v = item.explanation.volume
        return {"share_above_mean_xyz": float((v > v.mean()).double().mean())}


class QualityTwin(Metric):
    """The same number declared as a quality score (higher is better)."""

    outputs = {"share_twin_xyz": Output(True, QUALITY)}

    def evaluate_one(self, item, batch):
        v = item.explanation.volume
        return {"share_twin_xyz": float((v > v.mean()).double().mean())}


def test_analysis_judges_by_the_declared_kind_not_by_name():
    """Rows written from the declarations: the quality twin gets a validity verdict and marks; the new
    descriptive metric (a name no list holds) gets neither, without editing anything."""
    from xaibench.analysis.results import tables, to_frame

    rng = np.random.default_rng(0)
    methods = {"control_gt": 0.9, "control_random": 0.5, "control_gt_inverted": 0.1, "control_constant": 0.05,
               "good": 0.8, "bad": 0.3}
    rows = []
    for i in range(24):
        for meth, level in methods.items():
            vol = torch.from_numpy((rng.random((1, 8, 8)) < level + rng.normal(0, 0.03)).astype(np.float32))
            vol[0, 0, 0] = 0.5  # never constant
            item = EvalItem(sample=Sample(f"s{i}", torch.zeros(1, 3, 8, 8), 0), method=meth,
                            explanation=Explanation(vol, vol.sum((1, 2)), vol), target=0, logits=torch.zeros(2),
                            rng=np.random.default_rng(i))
            for metric in (NewProperty(), QualityTwin()):
                (values,) = evaluate_items(metric, None, [item])
                for name, value in values.items():
                    rows.append(dict(experiment="e", dataset="d", model="m", method=meth, params="{}",
                                     sample_id=f"s{i}", metric=name, value=value, metric_params="{}", seed=0,
                                     **metric.outputs[name].row_fields()))
    df = to_frame(rows)
    assert set(df.loc[df.metric == "share_above_mean_xyz", "metric_kind"]) == {DESCRIPTIVE}
    t = tables(df)
    v, s = t["validity"], t["summary"]
    assert "share_twin_xyz" in set(v["metric"]) and "share_above_mean_xyz" not in set(v["metric"])
    desc = s[s.metric == "share_above_mean_xyz"]
    twin = s[s.metric == "share_twin_xyz"]
    assert len(desc) == len(methods) and desc["metric_kind"].eq(DESCRIPTIVE).all()
    assert not desc["best"].fillna("").astype(str).str.strip().any()
    assert not desc["valid"].fillna("").astype(str).str.strip().any()
    assert twin["valid"].fillna("").astype(str).str.strip().all()  # the twin is judged


# --------------------------------------------------------------------------- average precision
def _sk(y, s):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return average_precision_score(y, s)


def _cases(seed):
    rng = np.random.default_rng(seed)
    for n in (7, 300, 40000):  # below and above the radix-sort threshold
        yield rng.random(n).astype(np.float32)  # distinct
        yield rng.integers(0, 4, n).astype(np.float32)  # heavy ties
        yield np.round(rng.standard_normal(n), 1).astype(np.float32)  # ties, negative scores, -0.0 and 0.0
        yield np.exp(8 * rng.standard_normal(n)).astype(np.float32)  # many orders of magnitude
        yield rng.random(n)  # float64
        yield np.where(rng.random(n) < 0.5, 0.0, rng.random(n)).astype(np.float32)  # a block of zeros


@pytest.mark.parametrize("seed", [0, 1])
def test_average_precision_equals_scikit_learn(seed):
    rng = np.random.default_rng(100 + seed)
    for s in _cases(seed):
        y = rng.random(s.size) < rng.uniform(0.05, 0.95)
        y[0], y[-1] = True, False
        if s.size == 300:
            s[np.flatnonzero(s == s[0])[:1]] = -0.0
        got = average_precision(torch.from_numpy(s), torch.from_numpy(y))
        assert got == pytest.approx(_sk(y, s), abs=1e-9), (s.dtype, s.size)


def test_average_precision_undefined_cases():
    s = torch.rand(10)
    assert np.isnan(average_precision(s, torch.ones(10, dtype=torch.bool)))
    assert np.isnan(average_precision(s, torch.zeros(10, dtype=torch.bool)))
    s[3] = float("nan")
    assert np.isnan(average_precision(s, torch.arange(10) % 2 == 0))


def _two_channel_reference(vol, mask):
    """The numpy / scikit-learn implementation the torch one replaces (version 1 of the metric)."""
    v = vol.astype(np.float64)
    lo, hi = v.min(), v.max()
    norm = (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)
    m = mask.reshape(-1)
    s2 = np.concatenate([1.0 - norm.reshape(-1), norm.reshape(-1)]) if hi > lo else np.zeros(2 * norm.size)
    return float(np.nan_to_num(_sk(np.concatenate([~m, m]), s2))), norm


def _hard_maps(rng, size):
    """Maps whose float64 normalised values collide in float32 (clusters far below float32 resolution), with
    ties, tiny values next to zero, values near 1/2 and 1, and smooth bilinear ones."""
    from xaibench.explanation import upsample

    n = size * size
    yield upsample(torch.rand(1, 14, 14, generator=torch.Generator().manual_seed(int(rng.integers(1 << 30)))),
                   (size, size)).numpy()
    base = rng.choice([0.3, 0.5 - 1e-12, 0.5, 1 - 1e-9, 1e-20, 0.0], n)
    yield (base + rng.integers(-40, 40, n) * 1e-14).clip(0, 1).reshape(1, size, size)
    yield (rng.random(n) ** 12).astype(np.float32).reshape(1, size, size)
    yield np.round(rng.random(n), 3).reshape(1, size, size)


@pytest.mark.parametrize("size", [20, 150, 224])  # generic sort, 32-bit keys of 2n, folded keys of n
def test_two_channel_ap_equals_the_reference(size):
    rng = np.random.default_rng(size)
    for vol in _hard_maps(rng, size):
        mask = rng.random(vol.shape) < 0.3
        ref, norm = _two_channel_reference(vol, mask)
        got = two_channel_ap(torch.from_numpy(norm), torch.from_numpy(mask), bool(vol.max() <= vol.min()))
        assert got == pytest.approx(ref, abs=1e-9)


# --------------------------------------------------------------------------- batched == one item == version 1
def _item(vol, mask=None, frames=None, method="m"):
    T, H, W = vol.shape
    frame_scores = vol.flatten(1).sum(1) if frames is None else torch.linspace(0, 1, T) * torch.rand(T)
    return EvalItem(sample=Sample("s", torch.zeros(T, 3, H, W), 0, mask=mask, frames=frames), method=method,
                    explanation=Explanation(vol, frame_scores, vol), target=0, logits=torch.zeros(2),
                    rng=np.random.default_rng(0))


def _mixed_items():
    g = torch.Generator().manual_seed(3)
    items = []
    for k in range(5):  # 224 px images (the radix path), smooth / tied / constant maps
        vol = torch.nn.functional.interpolate(torch.rand(1, 1, 14, 14, generator=g), size=(224, 224),
                                              mode="bilinear")[0]
        if k == 1:
            vol = (vol > 0.5).float()
        if k == 2:
            vol = torch.zeros_like(vol)
        items.append(_item(vol, torch.rand(1, 224, 224, generator=g) < 0.2))
    for k in range(3):  # clips with evidence frames, another shape in the same batch
        vol = torch.rand(4, 16, 16, generator=g) ** 3
        frames = torch.tensor([False, True, True, False]) if k < 2 else torch.ones(4, dtype=torch.bool)
        items.append(_item(vol, torch.rand(4, 16, 16, generator=g) < 0.4, frames))
    return items


def test_segmentation_and_localisation_batch_equal_version_one():
    items = _mixed_items()
    seg = evaluate_items(metrics.create("segmentation"), None, items)
    loc = evaluate_items(metrics.create("localisation"), None, items)
    for it, s, lo in zip(items, seg, loc):
        assert evaluate_items(metrics.create("segmentation"), None, [it])[0] == s
        assert evaluate_items(metrics.create("localisation"), None, [it])[0] == pytest.approx(lo, nan_ok=True)
        vol, mask = it.explanation.volume.numpy(), it.mask.numpy()
        ap2, norm = _two_channel_reference(vol, mask)
        assert s["map"] == pytest.approx(ap2, abs=1e-9)
        pred = norm > norm.mean()
        assert s["_correct"] == (pred == mask).sum() and s["_labelled"] == mask.size
        assert s["_inter_fg"] == (pred & mask).sum() and s["_union_fg"] == (pred | mask).sum()
        assert s["_inter_bg"] == (~pred & ~mask).sum() and s["_union_bg"] == (~pred | ~mask).sum()
        assert s["pixel_accuracy"] == pytest.approx((pred == mask).mean(), abs=1e-12)
        assert lo["ap"] == pytest.approx(_sk(mask.ravel(), vol.ravel()), abs=1e-9)
        union = (pred | mask).sum()
        assert lo["iou"] == pytest.approx((pred & mask).sum() / union if union else np.nan, nan_ok=True)
        if it.frames is not None:
            fr = it.frames.numpy()
            ref = _sk(fr, it.explanation.frame_scores.numpy()) if fr.any() and not fr.all() else np.nan
            assert lo["temporal_ap"] == pytest.approx(ref, abs=1e-9, nan_ok=True)
        else:
            assert "temporal_ap" not in lo
    assert seg[2]["map"] == 0.5 and seg[2]["_inter_fg"] == 0  # the constant map: Chefer's rule


def test_metrics_refuse_a_mask_of_another_shape():
    from xaibench.errors import UserError

    it = _item(torch.rand(1, 8, 8), torch.zeros(1, 4, 4, dtype=torch.bool))
    for name in ("segmentation", "localisation"):
        with pytest.raises(UserError, match="differ in shape"):
            evaluate_items(metrics.create(name), None, [it])


def test_spearman_equals_scipy():
    from scipy.stats import spearmanr

    from xaibench.metrics.randomisation import spearman

    rng = np.random.default_rng(0)
    a = np.round(rng.random((6, 50)), 1)  # ties
    b = rng.random((6, 50))
    b[1] = a[1]
    b[2] = -a[2]
    a[3] = 0.7  # constant: 0 by the policy
    got = spearman(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    for i in range(6):
        ref = 0.0 if np.ptp(a[i]) == 0 or np.ptp(b[i]) == 0 else spearmanr(a[i], b[i]).statistic
        assert got[i] == pytest.approx(ref, abs=1e-12)


def test_services_are_only_what_a_metric_declares():
    from xaibench.errors import UserError
    from xaibench.metrics.base import Services

    with pytest.raises(UserError, match="randomised"):
        Services().need("randomised", "the mprt metric")
    b = EvalBatch(adapter=None, items=[])
    assert b.services.reexplain is None and metrics.create("mprt").evaluate(b) == []


def test_hidden_state_and_reported_values_split():
    it = _mixed_items()[0]
    out = evaluate_items(metrics.create("segmentation"), None, [it])[0]
    state = hidden_state(out)
    assert set(state) == {"_correct", "_labelled", "_inter_bg", "_inter_fg", "_union_bg", "_union_fg"}
    assert set(out) - set(state) == set(metrics.create("segmentation").outputs)
    pd.testing.assert_series_equal(pd.Series(reduce_state(declared_reductions(
        metrics.create("segmentation").outputs), [state])).sort_index(),
        pd.Series({k: out[k] for k in ("miou", "pixel_accuracy")}).sort_index())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_on_the_gpu_the_values_equal_the_cpu_ones():
    items = _mixed_items()
    cpu = {n: evaluate_items(metrics.create(n), None, items) for n in ("segmentation", "localisation")}
    dev = torch.device("cuda")
    for it in items:
        it.sample = Sample(it.sample.sample_id, it.sample.x.to(dev), 0, mask=it.sample.mask.to(dev),
                           frames=None if it.sample.frames is None else it.sample.frames.to(dev))
        e = it.explanation
        it.explanation = Explanation(e.volume.to(dev), e.frame_scores.to(dev), e.token_map.to(dev))
    for n, ref in cpu.items():
        got = evaluate_items(metrics.create(n), None, items)
        for a, b in zip(got, ref):
            assert a == pytest.approx(b, abs=1e-6, nan_ok=True)
