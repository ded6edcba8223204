"""Perturbation and segmentation metrics against hand computations; the harness's memory measurement; the tie
policy against its closed-form expectation; seeding, batching and the output cache."""

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score
from torch import nn

from xaibench import metrics, models
from xaibench.datasets.base import Sample
from xaibench.errors import UserError
from xaibench.explanation import Explanation
from xaibench.metrics.base import EvalContext, EvalItem, evaluate_items
from xaibench.perturb import descending, feature_ids, feature_means, feature_totals, make_baseline, tie_orders

PERTURBATION = ["faithfulness_correlation", "monotonicity_correlation", "monotonicity", "deletion_auc",
                "insertion_auc", "staa_faithfulness", "staa_monotonicity"]


def ctx_for(adapter, x, vol, seed=0, batch_size=4, mask=None, target=None):
    """A metric context; the adapter's output cache is cleared so every context evaluates the model."""
    adapter.cache.clear()
    logits = adapter.predict(x[None])[0]
    expl = Explanation(volume=vol, frame_scores=vol.flatten(1).sum(1), token_map=vol)
    return EvalContext(adapter=adapter, x=x, target=int(logits.argmax()) if target is None else target,
                       explanation=expl, logits=logits, rng=np.random.default_rng(seed), batch_size=batch_size,
                       mask=mask, shared_seed=(seed,))


@pytest.fixture(scope="module")
def mlp(net_adapter):
    torch.manual_seed(0)
    T, C, H, W = 2, 3, 8, 8
    net = nn.Sequential(nn.Linear(T * C * H * W, 16), nn.Tanh(), nn.Linear(16, 3))
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((T, C, H, W), dtype=np.float32))
    vol = torch.from_numpy(rng.random((T, H, W), dtype=np.float32))
    return net_adapter(net, frames=T, size=H, patch=4), x, vol  # 4-px tokens: 2 frames x 2 x 2 = 8 features


# --------------------------------------------------------------------------- deletion / insertion
def reference_curve(adapter, x, vol, target, n_steps, insertion, patch=4):
    """Hand-written deletion/insertion curve: explicit patch loops, one forward pass per step."""
    T, C, H, W = x.shape
    cells = [(t, i, j) for t in range(T) for i in range(H // patch) for j in range(W // patch)]
    score = np.array([vol[t, i * patch:(i + 1) * patch, j * patch:(j + 1) * patch].mean().item() for t, i, j in cells])
    order = np.argsort(-score)  # distinct random scores: no ties
    F = len(cells)
    xs, ys = [], []
    for step in range(n_steps + 1):
        k = step * F // n_steps
        xp = torch.zeros_like(x) if insertion else x.clone()
        for f in order[:k]:
            t, i, j = cells[f]
            sl = (t, slice(None), slice(i * patch, (i + 1) * patch), slice(j * patch, (j + 1) * patch))
            xp[sl] = x[sl] if insertion else 0.0
        p = torch.softmax(adapter.predict(xp[None])[0].double(), -1)[target].item()
        xs.append(k / F)
        ys.append(p)
    return sum((xs[i + 1] - xs[i]) * (ys[i] + ys[i + 1]) / 2 for i in range(n_steps))


@pytest.mark.parametrize("name,insertion", [("deletion_auc", False), ("insertion_auc", True)])
@pytest.mark.parametrize("n_steps", [3, 8])
def test_deletion_insertion_match_hand_computation(mlp, name, insertion, n_steps):
    ad, x, vol = mlp
    ctx = ctx_for(ad, x, vol)
    with ad.counting() as n:
        ours = metrics.create(name, n_steps=n_steps).compute(ctx)[name]
    ref = reference_curve(ad, x, vol, ctx.target, n_steps, insertion)
    assert ours == pytest.approx(ref, abs=1e-6)
    assert n["forward"] == n_steps  # the clean input's output comes from ctx.logits


# --------------------------------------------------------------------------- linear models
class Lin(nn.Module):
    """Target logit 0 = sum_p w_p * x_p over the pixels of channel 0 (frame 0); class 1's logit is 0."""

    def __init__(self, weights):
        super().__init__()
        self.w = torch.as_tensor(np.asarray(weights), dtype=torch.float32)

    def forward(self, z):  # z: (B, 1*3*H*W) flattened pixels
        z = z.view(z.shape[0], 3, -1)[:, 0]
        return torch.stack([z @ self.w, torch.zeros(z.shape[0])], -1)


def linear_adapter(net_adapter, weights, size):
    return net_adapter(Lin(weights), frames=1, size=size, patch=1, classes=2)


def test_monotonicity_on_a_linear_model(net_adapter):
    # 4x4 image, pixel features (cell 1), 4 features per step; logit is linear in the pixels
    H = W = 4
    rng = np.random.default_rng(1)
    w = rng.standard_normal(H * W)
    ad = linear_adapter(net_adapter, w, H)
    x = torch.ones(1, 3, H, W)
    vol_good = torch.from_numpy(w.reshape(1, H, W)).float()  # contribution of each pixel = its weight
    # hand computation: ascending order of w, cumulative add-back from a zero input
    chunks = np.argsort(w).reshape(4, 4)
    logit = np.cumsum([w[c].sum() for c in chunks])
    p = 1 / (1 + np.exp(-logit))  # softmax of [logit, 0] for class 0
    expect = np.mean(np.diff(p) >= 0)
    out = metrics.create("monotonicity", cell=1, features_in_step=4, abs=False).compute(
        ctx_for(ad, x, vol_good, target=0))
    assert out["monotonicity"] == pytest.approx(expect)
    assert out["monotonicity_all"] == float(np.all(np.diff(p) >= 0))
    # positive weights: every step adds evidence -> monotone (1, 1); reversed order -> never (0, 0)
    wp = np.abs(w) + 0.1
    ad = linear_adapter(net_adapter, wp, H)
    vol = torch.from_numpy(wp.reshape(1, H, W)).float()
    m = metrics.create("monotonicity", cell=1, features_in_step=4, abs=False, output="logit")
    assert m.compute(ctx_for(ad, x, vol, target=0)) == {"monotonicity": 1.0, "monotonicity_all": 1.0}
    ad_neg = linear_adapter(net_adapter, -wp, H)
    assert m.compute(ctx_for(ad_neg, x, vol, target=0)) == {"monotonicity": 0.0, "monotonicity_all": 0.0}


def test_faithfulness_correlation_hand_computation(net_adapter):
    H = W = 4
    rng = np.random.default_rng(2)
    w = rng.standard_normal(H * W)
    ad = linear_adapter(net_adapter, w, H)
    x = torch.from_numpy(rng.random((1, 3, H, W), dtype=np.float32))
    # attribution = exact contribution w_p x_p: the logit drop of a subset is its attribution sum -> r = 1
    contrib = torch.from_numpy((w * x[0, 0].numpy().reshape(-1)).reshape(1, H, W)).float()
    m = metrics.create("faithfulness_correlation", cell=1, nr_runs=30, subset_size=5)
    assert m.compute(ctx_for(ad, x, contrib, target=0))["faithfulness_correlation"] == pytest.approx(1.0, abs=1e-6)
    assert m.compute(ctx_for(ad, x, -contrib, target=0))["faithfulness_correlation"] == pytest.approx(-1.0,
                                                                                                    abs=1e-6)
    # the degenerate-map policy: a constant map ranks nothing, no association (0); constant model effects
    # (a model blind to the input) leave the correlation undefined (NaN)
    assert m.compute(ctx_for(ad, x, torch.ones(1, H, W), target=0))["faithfulness_correlation"] == 0.0
    blind = linear_adapter(net_adapter, np.zeros(H * W), H)
    assert np.isnan(m.compute(ctx_for(blind, x, contrib, target=0))["faithfulness_correlation"])


def test_faithfulness_correlation_subsets_are_shared_by_the_methods_of_a_sample(net_adapter):
    """Subsets come from ``ctx.shared_rng`` (run seed and sample only): two explanations of one sample are
    scored on the same perturbations (the same drops), whatever their own generators."""
    H = 4
    rng = np.random.default_rng(3)
    ad = linear_adapter(net_adapter, rng.standard_normal(H * H), H)
    x = torch.from_numpy(rng.random((1, 3, H, H), dtype=np.float32))
    m = metrics.create("faithfulness_correlation", cell=1, nr_runs=10, subset_size=4)
    c1 = ctx_for(ad, x, torch.from_numpy(rng.random((1, H, H), dtype=np.float32)), target=0)
    c2 = ctx_for(ad, x, torch.from_numpy(rng.random((1, H, H), dtype=np.float32)), target=0)
    c2.rng = np.random.default_rng(99)
    s1, s2 = m.score(c1), m.score(c2)
    np.testing.assert_array_equal(s1["drops"], s2["drops"])
    assert not np.array_equal(s1["sums"], s2["sums"])
    c3 = ctx_for(ad, x, c1.explanation.volume, seed=1, target=0)  # another sample (shared seed)
    assert not np.array_equal(m.score(c3)["drops"], s1["drops"])


# --------------------------------------------------------------------------- the tie policy
def test_tie_orders():
    rng = np.random.default_rng(0)
    distinct = torch.tensor([0.3, 0.9, 0.1, 0.5])
    orders = tie_orders(distinct, rng, draws=5)
    assert len(orders) == 1 and orders[0].tolist() == [1, 3, 0, 2]  # a unique ranking: one order
    order, group = descending(torch.tensor([1.0, 3.0, 1.0, 3.0, 2.0, 1.0]))
    assert order.tolist() == [1, 3, 4, 0, 2, 5] and group.tolist() == [0, 0, 1, 2, 2, 2]
    scores = torch.tensor([2.0] * 6 + [1.0] * 6 + [5.0])
    orders = tie_orders(scores, np.random.default_rng(1), draws=20)
    assert len(orders) == 20
    for o in orders:
        assert sorted(o.tolist()) == list(range(13))
        assert o[0] == 12 and set(o[1:7].tolist()) == set(range(6)) and set(o[7:].tolist()) == set(range(6, 12))
    assert len({tuple(o.tolist()) for o in orders}) > 10  # tied features in random orders
    again = tie_orders(scores, np.random.default_rng(1), draws=20)
    assert all(torch.equal(a, b) for a, b in zip(orders, again))  # seeded


def expected_auc(c, scores, n_steps, insertion):
    """E over random orders of tied features of the logit deletion / insertion AUC of a linear model with
    contributions ``c`` (zero baseline, no bias).  Within a tie group of size g holding C of the contribution,
    removing m of its features removes m/g * C in expectation, so the expected curve is linear inside a tie
    group; the AUC is linear in the curve."""
    F = len(c)
    groups = [np.flatnonzero(scores == s) for s in sorted(set(scores.tolist()), reverse=True)]

    def top_mass(k):
        tot, left = 0.0, k
        for g in groups:
            take = min(left, len(g))
            tot += take / len(g) * c[g].sum()
            left -= take
        return tot

    ks = [(i * F) // n_steps for i in range(n_steps + 1)]
    y = [top_mass(k) if insertion else c.sum() - top_mass(k) for k in ks]
    return np.trapezoid(y, np.asarray(ks) / F)


def index_order_auc(c, scores, n_steps, insertion):
    """The same AUC for the one order that breaks ties by feature index (what the tie policy avoids)."""
    order = np.argsort(-scores, kind="stable")
    F = len(c)
    ks = [(i * F) // n_steps for i in range(n_steps + 1)]
    y = [c[order[:k]].sum() if insertion else c.sum() - c[order[:k]].sum() for k in ks]
    return np.trapezoid(y, np.asarray(ks) / F)


@pytest.mark.parametrize("name", ["deletion_auc", "insertion_auc"])
def test_rank_metric_does_not_depend_on_an_order_of_tied_features(net_adapter, name):
    """A linear model (logit output), an attribution with three tie groups: the metric, averaged over many
    seeded tie orders, is within Monte Carlo tolerance (4 standard errors of its per-order values) of the
    closed-form expectation over all orders, and relabelling the features (one permutation applied to the
    model's weights, the input's pixels and the attribution) leaves it there."""
    H, draws = 4, 300
    F = H * H
    rng = np.random.default_rng(4)
    w = 2 * rng.standard_normal(F)
    xpix = rng.uniform(0.2, 1.0, F)
    scores = rng.permutation(np.array([3.0] * 6 + [2.0] * 5 + [1.0] * 5))
    insertion = name == "insertion_auc"
    metric = metrics.create(name, cell=1, n_steps=F, output="logit", tie_draws=draws, batch_size=256)

    def run(perm):
        ad = linear_adapter(net_adapter, w[perm], H)
        x = torch.from_numpy(np.broadcast_to(xpix[perm].reshape(1, 1, H, H), (1, 3, H, H)).copy()).float()
        vol = torch.from_numpy(scores[perm].reshape(1, H, H)).float()
        value = metric.compute(ctx_for(ad, x, vol, seed=7, target=0))[name]
        xs, ys = metric.curves(ctx_for(ad, x, vol, seed=7, target=0))  # the same draws
        aucs = np.array([np.trapezoid(y, xs) for y in ys])
        assert len(aucs) == draws and value == pytest.approx(aucs.mean(), abs=1e-9)
        c = w[perm] * xpix[perm]
        return value, aucs.std(ddof=1) / np.sqrt(draws), expected_auc(c, scores[perm], F, insertion), \
            index_order_auc(c, scores[perm], F, insertion)

    ident = np.arange(F)
    relabel = np.random.default_rng(5).permutation(F)
    v0, se0, e0, i0 = run(ident)
    v1, se1, e1, i1 = run(relabel)
    assert e0 == pytest.approx(e1, abs=1e-12)  # the expectation is a property of the tie groups, not the labels
    assert abs(v0 - e0) <= 4 * se0 + 1e-6
    assert abs(v1 - e0) <= 4 * se1 + 1e-6
    # power: breaking ties by index gives label-dependent values far outside that tolerance
    assert abs(i0 - i1) > 8 * max(se0, se1)


def test_constant_map_scores_the_mean_over_orders(net_adapter):
    """A constant map is one tie group: its expected logit deletion curve is the straight line from f(x) to
    f(baseline), AUC (f(x) + f(0)) / 2 = f(x) / 2 for the linear model."""
    H, draws = 4, 300
    rng = np.random.default_rng(6)
    w = rng.standard_normal(H * H)
    ad = linear_adapter(net_adapter, w, H)
    x = torch.from_numpy(rng.random((1, 3, H, H), dtype=np.float32))
    metric = metrics.create("deletion_auc", cell=1, n_steps=16, output="logit", tie_draws=draws, batch_size=256)
    ctx = ctx_for(ad, x, torch.ones(1, H, H), seed=2, target=0)
    value = metric.compute(ctx)["deletion_auc"]
    xs, ys = metric.curves(ctx_for(ad, x, torch.ones(1, H, H), seed=2, target=0))
    se = np.std([np.trapezoid(y, xs) for y in ys], ddof=1) / np.sqrt(draws)
    fx = float(w @ x[0, 0].numpy().reshape(-1))
    assert abs(value - fx / 2) <= 4 * se + 1e-6 and se > 0


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


# --------------------------------------------------------------------------- seeds, batching, the cache
@pytest.fixture(scope="module")
def tiny_video():
    ad = models.create("hf_timesformer", num_frames=4, image_size=32, patch_size=8, hidden_size=32,
                       num_hidden_layers=2, num_attention_heads=2, seed=1)
    rng = np.random.default_rng(5)
    x = torch.from_numpy(rng.random((4, 3, 32, 32), dtype=np.float32))
    vol = torch.from_numpy(rng.random((4, 32, 32), dtype=np.float32))
    return ad, x, vol


SMALL = {"faithfulness_correlation": dict(nr_runs=12), "monotonicity_correlation": dict(n_steps=8, nr_samples=2),
         "monotonicity": dict(n_steps=8), "deletion_auc": dict(n_steps=6), "insertion_auc": dict(n_steps=6)}
FEATURES = {"patch": {}, "tubelet": dict(frames_per_group=2), "pixel": dict(cell=1)}


@pytest.mark.parametrize("name", PERTURBATION)
@pytest.mark.parametrize("baseline,features", [("zero", "patch"), ("uniform", "tubelet"), ("blur", "pixel")])
def test_same_seed_same_numbers_and_batch_size_changes_nothing(tiny_video, name, baseline, features):
    ad, x, vol = tiny_video
    kw = dict(SMALL.get(name, {}), baseline=baseline, **FEATURES[features])
    if features == "pixel" and name in ("monotonicity_correlation", "monotonicity"):
        kw["n_steps"] = 4
    runs = []
    for seed, bs in [(0, 1), (0, 5), (0, 64), (1, 5)]:
        ctx = ctx_for(ad, x, vol, seed=seed, batch_size=bs)  # the cache is cleared: every run evaluates
        runs.append(metrics.create(name, **kw).compute(ctx))
    a, b, c, d = runs
    for k in a:
        assert np.isfinite(a[k])
        # identical (bit for bit up to float32 batched-matmul rounding) across batch sizes
        assert a[k] == pytest.approx(b[k], abs=1e-6) and a[k] == pytest.approx(c[k], abs=1e-6)
    # a different seed changes the random parts (subsets, uniform noise)
    if name == "faithfulness_correlation" or baseline == "uniform":
        assert any(a[k] != d[k] for k in a)


def test_metric_batch_size_param_overrides_harness(tiny_video):
    ad, x, vol = tiny_video
    ctx = ctx_for(ad, x, vol, batch_size=1)
    calls = []
    orig = ad.predict
    ad.predict = lambda xs, batch_size=32: calls.append(batch_size) or orig(xs, batch_size)
    try:
        with ad.counting() as n:
            metrics.create("deletion_auc", n_steps=6, batch_size=3).compute(ctx)
    finally:
        ad.predict = orig
    assert calls == [3, 3] and n["forward"] == 6


def test_output_cache_serves_repeated_masks(tiny_video):
    """The same masks on the same input (another method, metric or parameter value of the sample) are looked
    up, not evaluated again, and give the same numbers."""
    ad, x, vol = tiny_video
    ctx = ctx_for(ad, x, vol)
    m = metrics.create("deletion_auc", n_steps=6)
    with ad.counting() as n1:
        first = m.compute(ctx)
    hits = ad.cache.hits
    with ad.counting() as n2:
        second = m.compute(ctx)
    assert n1["forward"] == 6 and n2["forward"] == 0 and ad.cache.hits == hits + 6
    assert first == second
    ctx_u = ctx_for(ad, x, vol)  # a random baseline is never cached
    with ad.counting() as n3:
        metrics.create("deletion_auc", n_steps=6, baseline="uniform").compute(ctx_u)
        metrics.create("deletion_auc", n_steps=6, baseline="uniform").compute(ctx_u)
    assert n3["forward"] == 12


# --------------------------------------------------------------------------- perturbation helpers
def test_feature_grouping_and_totals():
    ids = feature_ids((4, 8, 8), 4, frames_per_group=2)
    assert int(ids.max()) + 1 == 2 * 2 * 2
    assert (ids[0] == ids[1]).all() and not (ids[1] == ids[2]).any()
    vol = torch.arange(4 * 8 * 8, dtype=torch.float32).view(4, 8, 8)
    tot = feature_totals(vol, ids)
    assert tot[0].item() == vol[:2, :4, :4].sum().item()
    assert tot.sum().item() == pytest.approx(vol.sum().item())
    torch.testing.assert_close(feature_means(vol, ids), tot / 32)
    odd = feature_ids((3, 8, 8), 8, frames_per_group=2)  # the last tubelet is shorter
    assert odd.flatten(1)[:, 0].tolist() == [0, 0, 1]


def test_baselines():
    x = torch.rand(2, 3, 16, 16)
    assert make_baseline(x, "zero").abs().sum() == 0
    m = make_baseline(x, "mean")
    assert torch.allclose(m[1, 2, 5, 7], x[:, 2].mean())
    b = make_baseline(x, "blur", blur_sigma=2.0)
    assert b.shape == x.shape and b.std() < x.std()
    flat = torch.full_like(x, 0.3)
    torch.testing.assert_close(make_baseline(flat, "blur", blur_sigma=2.0), flat)  # a normalised kernel
    u1 = make_baseline(x, "uniform", np.random.default_rng(0))
    u2 = make_baseline(x, "uniform", np.random.default_rng(0))
    assert torch.equal(u1, u2) and 0 <= u1.min() and u1.max() <= 1


@pytest.mark.parametrize("name,kw,msg", [
    ("deletion_auc", dict(baseline="black"), "baseline"),
    ("insertion_auc", dict(features="voxel"), "features"),
    ("faithfulness_correlation", dict(nr_runs=1), "out of range"),
    ("monotonicity_correlation", dict(output="probability"), "output"),
    ("monotonicity", dict(blur_sigma=0), "out of range"),
    ("deletion_auc", dict(tie_draws=0), "out of range"),
    ("deletion_auc", dict(stepz=3), "bad parameters"),
])
def test_bad_parameters_raise_user_errors(name, kw, msg):
    with pytest.raises(UserError, match=msg):
        metrics.create(name, **kw)


def test_bad_subset_size_and_cell_are_user_errors(mlp):
    ad, x, vol = mlp
    with pytest.raises(UserError, match="subset size"):
        metrics.create("faithfulness_correlation", subset_size=10**6).compute(ctx_for(ad, x, vol))
    with pytest.raises(UserError, match="divide"):
        metrics.create("deletion_auc", cell=3).compute(ctx_for(ad, x, vol))


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
