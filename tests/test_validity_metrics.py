"""The metrics that carry the verdicts: the segmentation protocol against an independent re-implementation of
Chefer et al.'s evaluation code (degenerate maps included), the symmetric relevance gain, map properties, the
model-parameter randomisation test, and the validity verdicts on a shipped model."""

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from xaibench import methods, metrics, models
from xaibench.errors import UserError
from xaibench.datasets import create as make_dataset
from xaibench.datasets.base import Sample
from xaibench.explanation import Explanation
from xaibench.metrics.base import EvalItem, Services, evaluate_items


def chefer_eval(res: torch.Tensor, labels: torch.Tensor):
    """The per-image numbers of Chefer et al.'s imagenet_seg_eval.py, written out from its description:
    min-max (0/0 = NaN for a constant map), threshold at the mean, two channels (le, gt) and the soft map
    (1 - R, R) with NaN -> 0, channel argmax, histograms; AP with NaN -> 0."""
    r = (res - res.min()) / (res.max() - res.min())
    ret = r.mean()
    r1, r0 = r.gt(ret).float(), r.le(ret).float()
    r1_ap, r0_ap = r.clone(), 1 - r
    for t in (r1, r0, r1_ap, r0_ap):
        t[t != t] = 0
    output = torch.stack([r0, r1])  # (2, H, W)
    pred = output.argmax(0).numpy() + 1  # torch.max over channels; ties -> channel 0
    target = labels.numpy().astype(int) + 1
    correct, labelled = int(((pred == target) * (target > 0)).sum()), int((target > 0).sum())
    inter = pred * (pred == target)
    area_inter = np.histogram(inter, bins=2, range=(1, 2))[0]
    area_pred = np.histogram(pred, bins=2, range=(1, 2))[0]
    area_lab = np.histogram(target, bins=2, range=(1, 2))[0]
    soft = torch.stack([r0_ap, r1_ap]).numpy().reshape(-1)
    onehot = np.stack([labels.numpy() == 0, labels.numpy() == 1]).reshape(-1)
    ap = float(np.nan_to_num(average_precision_score(onehot, soft)))
    return correct, labelled, area_inter, area_pred + area_lab - area_inter, ap


@pytest.mark.parametrize("size", [32, 224])  # 224: the radix-sort path of a paper-size map
@pytest.mark.parametrize("kind", ["smooth", "binary", "constant", "zero"])
def test_segmentation_matches_the_reference_evaluation(kind, size):
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(1, size, size, dtype=torch.bool)
    mask[0, size // 4:size * 5 // 8, size // 3:size * 4 // 5] = True
    vol = {"smooth": torch.rand(1, size, size, generator=g), "binary": mask.float(),
           "constant": torch.full((1, size, size), 0.3), "zero": torch.zeros(1, size, size)}[kind]
    expl = Explanation(volume=vol, frame_scores=vol.flatten(1).sum(1), token_map=vol)
    item = EvalItem(sample=Sample("s", torch.zeros(1, 3, size, size), 0, mask=mask), method="m", explanation=expl,
                    target=0, logits=torch.zeros(2), rng=np.random.default_rng(0))
    out, = evaluate_items(metrics.create("segmentation"), None, [item])
    correct, labelled, inter, union, ap = chefer_eval(vol[0], mask[0])
    assert out["_correct"] == correct and out["_labelled"] == labelled
    assert (out["_inter_bg"], out["_inter_fg"]) == tuple(inter)
    assert (out["_union_bg"], out["_union_fg"]) == tuple(union)
    # the reference normalises in float32 (as Chefer et al.'s torch code), we in float64 (as version 1): on a
    # large map float32 rounding ties a few more of the 2n scores
    assert out["map"] == pytest.approx(ap, abs=1e-12 if size == 32 else 1e-6)
    if kind in ("constant", "zero"):
        assert out["map"] == pytest.approx(0.5) and out["_inter_fg"] == 0  # empty foreground, AP 0.5


def _vit():
    adapter = models.create("vit_synth")
    ds = make_dataset("synthetic_image", n_samples=6)
    return adapter, [ds[i] for i in range(6)]


def _item(adapter, s, expl, method="m"):
    return EvalItem(sample=s, method=method, explanation=expl, target=int(s.label),
                    logits=adapter.predict(s.x[None])[0], rng=np.random.default_rng(0), shared_seed=(0, 1))


def _one(metric, adapter, s, expl):
    return evaluate_items(metric, adapter, [_item(adapter, s, expl)])[0]


def test_srg_is_antisymmetric_and_ranks_the_truth_above_noise():
    adapter, samples = _vit()
    srg = metrics.create("srg", n_steps=16)
    gt, inv, rnd = [], [], []
    for k, s in enumerate(samples):
        m = s.mask.float()
        noise = torch.rand(m.shape, generator=torch.Generator().manual_seed(k))
        for store, vol in ((gt, m), (inv, 1 - m), (rnd, noise)):
            store.append(_one(srg, adapter, s, Explanation(vol, vol.flatten(1).sum(1), vol))["srg"])
    gt, inv, rnd = map(np.array, (gt, inv, rnd))
    # the inverted map's MoRF curve is the map's LeRF curve and vice versa: equal in expectation over the orders
    # of the tied features, here up to the Monte Carlo error the tie rule leaves (its default tie_se)
    np.testing.assert_allclose(inv, -gt, atol=0.1)
    assert gt.mean() > rnd.mean() + 0.3 and abs(rnd.mean()) < 0.2


def test_map_properties():
    adapter, samples = _vit()
    mp = metrics.create("map_properties")
    s = samples[0]
    const = torch.ones(1, 64, 64)
    noise = torch.rand(1, 64, 64, generator=torch.Generator().manual_seed(0))
    # half the token cells share one value, the rest distinct: tie fraction = 1/2
    half = noise.clone()
    cell = adapter.image_size // adapter.layout.stages[0][0]
    half[:, :32] = 0.25
    vols = [const, noise, half, torch.zeros(1, 64, 64)]
    outs = evaluate_items(mp, adapter, [_item(adapter, s, Explanation(v, v.sum((1, 2)), v)) for v in vols])
    assert outs[0] == {"degenerate": 1.0, "tie_fraction": 1.0}
    assert outs[1] == {"degenerate": 0.0, "tie_fraction": 0.0}
    assert outs[2] == {"degenerate": 0.0, "tie_fraction": 0.5} and 32 % cell == 0
    assert outs[3] == {"degenerate": 1.0, "tie_fraction": 1.0}
    # against the shared primitives (xaibench.perturb) on random, tied and binary maps
    from xaibench.perturb import feature_ids, feature_means, tie_fraction

    ids = feature_ids((1, 64, 64), cell)
    g = torch.Generator().manual_seed(1)
    more = [torch.randint(0, 3, (1, 64, 64), generator=g).float(), (torch.rand(1, 64, 64, generator=g) > .5).float(),
            torch.rand(1, 64, 64, generator=g) ** 4]
    outs = evaluate_items(mp, adapter, [_item(adapter, s, Explanation(v, v.sum((1, 2)), v)) for v in more])
    for v, out in zip(more, outs):
        assert out["tie_fraction"] == tie_fraction(feature_means(v, ids))


def test_model_randomisation_tells_a_head_blind_method_from_a_gradient_method():
    """Attention-only maps ignore the classifier head (Spearman 1 after re-initialising it); Chefer's
    gradient-weighted rule does not; re-initialising every block changes both."""
    adapter, samples = _vit()
    mprt = metrics.create("mprt", blocks=[0, -1], seed=0)
    assert mprt.services == ("reexplain", "randomised") and mprt.outputs["mprt_head"].kind == "sanity"
    res = {}
    for name in ("attention", "chefer"):
        m = methods.create(name)
        items = [_item(adapter, s, m.explain_sample(adapter, s, int(s.label)), name) for s in samples[:3]]
        services = Services(reexplain=lambda item, ad, m=m: m.explain_sample(ad, item.sample, item.target),
                            randomised=lambda k, seed: adapter.randomised(k, seed))
        vals = evaluate_items(mprt, adapter, items, services=services)
        res[name] = {k: np.mean([v[k] for v in vals]) for k in vals[0]}
        # the batch equals the items one at a time, and scipy's Spearman of the token-grid means
        from scipy.stats import spearmanr

        from xaibench.perturb import feature_ids, feature_means

        ids = feature_ids((1, 64, 64), adapter.image_size // adapter.layout.stages[0][0])
        for it, v in zip(items, vals):
            assert evaluate_items(mprt, adapter, [it], services=services)[0] == pytest.approx(v, abs=1e-9)
            other = m.explain_sample(adapter.randomised(10 ** 6, 0), it.sample, it.target).volume
            a, b = feature_means(it.explanation.volume, ids).numpy(), feature_means(other, ids).numpy()
            ref = 0.0 if np.ptp(a) == 0 or np.ptp(b) == 0 else spearmanr(a, b).statistic
            assert v["mprt_all"] == pytest.approx(ref, abs=1e-9)
    with pytest.raises(UserError, match="reexplain"):
        evaluate_items(mprt, adapter, items)
    assert res["attention"]["mprt_head"] == pytest.approx(1.0)
    assert res["chefer"]["mprt_head"] < 0.9
    assert res["attention"]["mprt_all"] < 0.9 and res["chefer"]["mprt_all"] < 0.9
    # the randomised copies are seeded and leave the original untouched
    a, b = adapter.randomised(1, 5), adapter.randomised(1, 5)
    for (k, p), (_, q) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(p, q), k
    ref = models.create("vit_synth").model.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in adapter.model.state_dict().items())


def test_validity_verdicts_on_a_shipped_model(tmp_path):
    """On vit_synth: SRG and AP tell the truth from noise (valid); pixel accuracy rewards the empty map at a few
    per cent of foreground (invalid, with that reason)."""
    import pandas as pd
    from run_config import make_cfg

    from xaibench.run.runner import Runner

    cfg = make_cfg({"name": "v", "benchmarks": [{"model": "vit_synth", "dataset": "synthetic_image"}],
                    "methods": ["control_random", "control_constant", "control_gt", "control_gt_inverted"],
                    "metrics": [{"config": "srg", "n_steps": 10}, "localisation", "segmentation"]}, n_samples=8)
    Runner(cfg, tmp_path / "r").run()
    v = pd.read_csv(tmp_path / "r" / "validity.csv").set_index("metric")
    assert v.loc["srg", "verdict"] == "valid" and v.loc["ap", "verdict"] == "valid"
    assert v.loc["pixel_accuracy", "verdict"] == "invalid"
    assert v.loc["pixel_accuracy", "reason"].startswith("FAILS: constant better than random")
