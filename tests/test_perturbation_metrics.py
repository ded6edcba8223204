"""The perturbation metrics (deletion / insertion / SRG, STAA faithfulness and monotonicity, faithfulness
correlation, monotonicity and its correlation) against hand computations; batched evaluation of several
samples and methods equal to one item at a time; shared cuts; seeding, batching, the output cache, composing
and the memory bound of large requests.  Ties have their own file (tests/test_ties.py)."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from xaibench import metrics, models
from xaibench.errors import UserError
from xaibench.explanation import Explanation
from xaibench.metrics.base import EvalItem, evaluate_items
from xaibench.perturb import (Features, Perturber, compose, feature_ids, feature_means, feature_totals,
                              grid_features, make_baseline)

PERTURBATION = ["faithfulness_correlation", "monotonicity_correlation", "monotonicity", "deletion_auc",
                "insertion_auc", "srg", "staa_faithfulness", "staa_monotonicity"]


def item_for(adapter, x, vol, seed=0, target=None, method="m", sample_seed=None, sample_id="s"):
    """One (sample, method) item; ``sample_seed`` is the sample part of the shared seed."""
    logits = adapter.predict(x[None])[0]
    sample = SimpleNamespace(sample_id=sample_id, x=x, mask=None, frames=None, label=None)
    return EvalItem(sample=sample, method=method, explanation=Explanation(vol, vol.flatten(1).sum(1), vol),
                    target=int(logits.argmax()) if target is None else int(target), logits=logits,
                    rng=np.random.default_rng(seed), shared_seed=(0, seed if sample_seed is None else sample_seed))


def run(adapter, name, items, batch_size=4, clear=True, **params):
    if clear:
        adapter.cache.clear()
    return evaluate_items(metrics.create(name, **params), adapter, items, batch_size=batch_size)


@pytest.fixture(scope="module")
def mlp(net_adapter):
    torch.manual_seed(0)
    T, C, H, W = 2, 3, 8, 8
    net = nn.Sequential(nn.Linear(T * C * H * W, 16), nn.Tanh(), nn.Linear(16, 3))
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((T, C, H, W), dtype=np.float32))
    vol = torch.from_numpy(rng.random((T, H, W), dtype=np.float32))
    return net_adapter(net, frames=T, size=H, patch=4), x, vol  # 4-px tokens: 2 frames x 2 x 2 = 8 features


def cells_of(x, patch=4):
    T, C, H, W = x.shape
    return [(t, i, j) for t in range(T) for i in range(H // patch) for j in range(W // patch)]


def perturbed(x, cells, kept, patch=4, base=None):
    """x with only the cells of index set ``kept`` shown, the baseline (zero) elsewhere: explicit loops."""
    xp = torch.zeros_like(x) if base is None else base.clone()
    for f in kept:
        t, i, j = cells[f]
        sl = (t, slice(None), slice(i * patch, (i + 1) * patch), slice(j * patch, (j + 1) * patch))
        xp[sl] = x[sl]
    return xp


def cell_scores(vol, cells, patch=4):
    return np.array([vol[t, i * patch:(i + 1) * patch, j * patch:(j + 1) * patch].mean().item() for t, i, j in cells])


def prob(adapter, xp, target):
    return torch.softmax(adapter.predict(xp[None])[0].double(), -1)[target].item()


# --------------------------------------------------------------------------- hand computations
def reference_curve(adapter, x, vol, target, n_steps, insertion, least_first=False):
    """Hand-written deletion/insertion curve: explicit patch loops, one forward pass per step."""
    cells = cells_of(x)
    score = cell_scores(vol, cells)
    order = np.argsort(score if least_first else -score)  # distinct random scores: no ties
    F = len(cells)
    xs, ys = [], []
    for step in range(n_steps + 1):
        k = step * F // n_steps
        kept = order[:k] if insertion else order[k:]
        ys.append(prob(adapter, perturbed(x, cells, kept), target))
        xs.append(k / F)
    return sum((xs[i + 1] - xs[i]) * (ys[i] + ys[i + 1]) / 2 for i in range(n_steps))


@pytest.mark.parametrize("name,insertion", [("deletion_auc", False), ("insertion_auc", True)])
@pytest.mark.parametrize("n_steps", [3, 8])
def test_deletion_insertion_match_hand_computation(mlp, name, insertion, n_steps):
    ad, x, vol = mlp
    it = item_for(ad, x, vol)
    with ad.counting() as n:
        ours = run(ad, name, [it], n_steps=n_steps)[0]
    ref = reference_curve(ad, x, vol, it.target, n_steps, insertion)
    assert ours[name] == pytest.approx(ref, abs=1e-6)
    assert ours[f"{name}_tie_se"] == 0.0  # no ties: exact
    assert n["forward"] == n_steps  # the clean input's output comes from the item's logits


@pytest.mark.parametrize("n_steps", [3, 8])
def test_srg_matches_hand_computation(mlp, n_steps):
    ad, x, vol = mlp
    it = item_for(ad, x, vol)
    with ad.counting() as n:
        out = run(ad, "srg", [it], n_steps=n_steps)[0]
    morf = reference_curve(ad, x, vol, it.target, n_steps, insertion=False)
    lerf = reference_curve(ad, x, vol, it.target, n_steps, insertion=False, least_first=True)
    assert out["morf_auc"] == pytest.approx(morf, abs=1e-6) and out["lerf_auc"] == pytest.approx(lerf, abs=1e-6)
    assert out["srg"] == pytest.approx(lerf - morf, abs=1e-6)
    assert n["forward"] == 2 * n_steps - 1  # the all-removed input is one mask of both curves


def test_curve_points_dense_at_both_ends():
    from xaibench.metrics.deletion import steps

    k, x = steps(64, 10, "ends")
    assert k.tolist() == [0, 2, 4, 8, 16, 32, 48, 56, 60, 62, 64] and x[-1] == 1.0
    assert steps(64, 10)[0].tolist() == [(i * 64) // 10 for i in range(11)]  # uniform: the papers' points
    assert steps(8, 6, "ends")[0].tolist() == [0, 1, 2, 4, 6, 7, 8]
    assert len(steps(64, 11, "ends")[0]) == 12 and len(set(steps(6, 10, "ends")[0])) == len(steps(6, 10, "ends")[0])


def test_srg_with_points_dense_at_the_ends_matches_hand_computation(mlp):
    ad, x, vol = mlp  # 8 features, 6 steps: cuts after 0, 1, 2, 4, 6, 7, 8 features
    it = item_for(ad, x, vol)
    out = run(ad, "srg", [it], n_steps=6, spacing="ends")[0]
    cells = cells_of(x)
    score = cell_scores(vol, cells)
    ks = [0, 1, 2, 4, 6, 7, 8]

    def auc(order):
        ys = [prob(ad, perturbed(x, cells, order[k:]), it.target) for k in ks]
        return sum((ks[i + 1] - ks[i]) / 8 * (ys[i] + ys[i + 1]) / 2 for i in range(len(ks) - 1))

    morf, lerf = auc(np.argsort(-score)), auc(np.argsort(score))
    assert out["morf_auc"] == pytest.approx(morf, abs=1e-6) and out["srg"] == pytest.approx(lerf - morf, abs=1e-6)
    assert out["srg"] != pytest.approx(run(ad, "srg", [it], n_steps=6)[0]["srg"], abs=1e-6)  # other points


def test_staa_metrics_match_hand_computation(mlp):
    ad, x, vol = mlp
    it = item_for(ad, x, vol)
    cells = cells_of(x)
    order = np.argsort(-cell_scores(vol, cells))
    F = len(cells)

    def d(kept):
        z = ad.predict(perturbed(x, cells, kept)[None])[0].double()
        nz = (z - z.min()) / (z.max() - z.min())
        z0 = it.logits.double()
        n0 = (z0 - z0.min()) / (z0.max() - z0.min())
        return (n0 - nz).abs().mean().item()

    ratios = [0.1, 0.3, 0.5, 0.7, 0.9]
    dist = [d(order[:int(round(p * F))]) for p in ratios]
    tau = stats.kendalltau(ratios, dist).statistic
    out = run(ad, "staa_monotonicity", [it], ratios=ratios)[0]
    assert out["staa_monotonicity_tau"] == pytest.approx(tau, abs=1e-9)
    assert out["staa_monotonicity"] == pytest.approx(-tau, abs=1e-9)
    f = run(ad, "staa_faithfulness", [it], k=0.5)[0]["staa_faithfulness"]
    assert f == pytest.approx(1 - d(order[:4]), abs=1e-6)


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
    out = run(ad, "monotonicity", [item_for(ad, x, vol_good, target=0)], cell=1, features_in_step=4, abs=False)[0]
    assert out["monotonicity"] == pytest.approx(np.mean(np.diff(p) >= 0))
    assert out["monotonicity_all"] == float(np.all(np.diff(p) >= 0))
    # positive weights: every step adds evidence -> monotone (1, 1); reversed order -> never (0, 0)
    wp = np.abs(w) + 0.1
    ad = linear_adapter(net_adapter, wp, H)
    vol = torch.from_numpy(wp.reshape(1, H, W)).float()
    kw = dict(cell=1, features_in_step=4, abs=False, output="logit")
    out = run(ad, "monotonicity", [item_for(ad, x, vol, target=0)], **kw)[0]
    assert (out["monotonicity"], out["monotonicity_all"]) == (1.0, 1.0)
    ad_neg = linear_adapter(net_adapter, -wp, H)
    out = run(ad_neg, "monotonicity", [item_for(ad_neg, x, vol, target=0)], **kw)[0]
    assert (out["monotonicity"], out["monotonicity_all"]) == (0.0, 0.0)


def test_monotonicity_correlation_hand_computation(net_adapter):
    """v_j = (y(x without chunk j) - y0)^2 / y0^2 against the chunk's attribution, Spearman (scipy)."""
    H = 4
    rng = np.random.default_rng(3)
    w = rng.standard_normal(H * H)
    ad = linear_adapter(net_adapter, w, H)
    x = torch.from_numpy(rng.random((1, 3, H, H), dtype=np.float32))
    a = rng.standard_normal(H * H)
    vol = torch.from_numpy(a.reshape(1, H, H)).float()
    it = item_for(ad, x, vol, target=0)
    y0 = torch.softmax(it.logits.double(), -1)[0].item()
    order = np.argsort(np.abs(a.astype(np.float32)).astype(np.float64), kind="stable")
    att, v = [], []
    for c in order.reshape(4, 4):
        xp = x.clone().view(3, -1)
        xp[:, c] = 0
        y = torch.softmax(ad.predict(xp.view(1, 3, H, H)[None])[0].double(), -1)[0].item()
        v.append((y - y0) ** 2 / y0 ** 2)
        att.append(np.abs(a[c].astype(np.float32)).sum())
    out = run(ad, "monotonicity_correlation", [it], cell=1, features_in_step=4)[0]
    assert out["monotonicity_correlation"] == pytest.approx(stats.spearmanr(att, v).statistic, abs=1e-9)


def test_faithfulness_correlation_hand_computation(net_adapter):
    H = W = 4
    rng = np.random.default_rng(2)
    w = rng.standard_normal(H * W)
    ad = linear_adapter(net_adapter, w, H)
    x = torch.from_numpy(rng.random((1, 3, H, W), dtype=np.float32))
    # attribution = exact contribution w_p x_p: the logit drop of a subset is its attribution sum -> r = 1
    contrib = torch.from_numpy((w * x[0, 0].numpy().reshape(-1)).reshape(1, H, W)).float()
    kw = dict(cell=1, nr_runs=30, subset_size=5)
    out = run(ad, "faithfulness_correlation", [item_for(ad, x, contrib, target=0),
                                               item_for(ad, x, -contrib, target=0),
                                               item_for(ad, x, torch.ones(1, H, W), target=0)], **kw)
    assert out[0]["faithfulness_correlation"] == pytest.approx(1.0, abs=1e-6)
    assert out[1]["faithfulness_correlation"] == pytest.approx(-1.0, abs=1e-6)
    # the degenerate-map policy: a constant map ranks nothing, no association (0); constant model effects
    # (a model blind to the input) leave the correlation undefined (NaN)
    assert out[2]["faithfulness_correlation"] == 0.0
    blind = linear_adapter(net_adapter, np.zeros(H * W), H)
    assert np.isnan(run(blind, "faithfulness_correlation", [item_for(blind, x, contrib, target=0)],
                        **kw)[0]["faithfulness_correlation"])


def test_faithfulness_correlation_subsets_are_shared_by_the_methods_of_a_sample(net_adapter):
    """Subsets come from the item's shared generator (run seed and sample only): two explanations of one
    sample are scored on the same perturbations (the same drops, evaluated once), whatever their own
    generators."""
    H = 4
    rng = np.random.default_rng(3)
    ad = linear_adapter(net_adapter, rng.standard_normal(H * H), H)
    x = torch.from_numpy(rng.random((1, 3, H, H), dtype=np.float32))
    m = metrics.create("faithfulness_correlation", cell=1, nr_runs=10, subset_size=4)
    i1 = item_for(ad, x, torch.from_numpy(rng.random((1, H, H), dtype=np.float32)), seed=0, target=0)
    i2 = item_for(ad, x, torch.from_numpy(rng.random((1, H, H), dtype=np.float32)), seed=99, sample_seed=0,
                  target=0)
    ad.cache.clear()
    from xaibench.metrics.base import EvalBatch

    with ad.counting() as n:
        s1, s2 = m.score_items(EvalBatch(adapter=ad, items=[i1, i2]))
    assert n["forward"] == 10  # the second method's subsets are answered by the output cache
    np.testing.assert_array_equal(s1["drops"], s2["drops"])
    assert not np.array_equal(s1["sums"], s2["sums"])
    i3 = item_for(ad, x, i1.explanation.volume, seed=1, target=0)  # another sample (shared seed)
    assert not np.array_equal(m.score_items(EvalBatch(adapter=ad, items=[i3]))[0]["drops"], s1["drops"])


# --------------------------------------------------------------------------- batches of items
@pytest.fixture(scope="module")
def tiny_video():
    ad = models.create("hf_timesformer", num_frames=4, image_size=32, patch_size=8, hidden_size=32,
                       num_hidden_layers=2, num_attention_heads=2, seed=1)
    rng = np.random.default_rng(5)
    xs = [torch.from_numpy(rng.random((4, 3, 32, 32), dtype=np.float32)) for _ in range(3)]
    vols = [torch.from_numpy(rng.random((4, 32, 32), dtype=np.float32)) for _ in range(4)]
    return ad, xs, vols


SMALL = {"faithfulness_correlation": dict(nr_runs=12), "monotonicity_correlation": dict(n_steps=8, nr_samples=2),
         "monotonicity": dict(n_steps=8), "deletion_auc": dict(n_steps=6), "insertion_auc": dict(n_steps=6),
         "srg": dict(n_steps=5), "staa_monotonicity": dict(ratios=[0.2, 0.5, 0.8])}


@pytest.mark.parametrize("name", PERTURBATION)
@pytest.mark.parametrize("baseline,tied", [("zero", False), ("zero", True), ("uniform", True)])
def test_a_batch_of_samples_and_methods_equals_one_item_at_a_time(tiny_video, name, baseline, tied):
    """Items of three samples and two or three methods each (with ``tied``, one of them a binary map) in one
    batch: every value equals the item's value alone to 1e-6 and the batch costs no more passes than the
    items alone.  Without ties the model calls are full batches (only the last may be shorter); the tie
    rule's refinement rounds each end with one shorter batch."""
    ad, xs, vols = tiny_video
    binary = (vols[3] > 0.5).float() if tied else vols[3]

    def items():  # fresh generators each time
        out = []
        for s, x in enumerate(xs):
            for m, v in enumerate([vols[s], vols[(s + 1) % 3], binary][: 3 if s == 0 else 2]):
                out.append(item_for(ad, x, v, seed=10 * s + m, method=f"m{m}", sample_seed=s, sample_id=f"s{s}"))
        return out

    kw = dict(SMALL.get(name, {}), baseline=baseline)
    calls, orig = [], ad.predict
    ad.predict = lambda x, batch_size=32: calls.append(x.shape[0]) or orig(x, batch_size)
    try:
        todo = items()
        calls.clear()
        with ad.counting() as nb:
            together = run(ad, name, todo, batch_size=5, **kw)
        batch_calls = list(calls)
        alone, n_alone = [], 0
        for one in items():
            ad.cache.clear()
            with ad.counting() as n1:
                alone.append(run(ad, name, [one], batch_size=5, clear=False, **kw)[0])
            n_alone += n1["forward"]
    finally:
        ad.predict = orig
    for a, b in zip(together, alone):
        assert set(a) == set(b)
        for k in a:
            assert np.isfinite(a[k]) and a[k] == pytest.approx(b[k], abs=1e-6), k
    assert nb["forward"] <= n_alone
    if not tied:
        assert all(c == 5 for c in batch_calls[:-1]) and 0 < batch_calls[-1] <= 5


@pytest.mark.parametrize("name", PERTURBATION)
@pytest.mark.parametrize("baseline,features", [("zero", "patch"), ("uniform", "tubelet"), ("blur", "pixel")])
def test_same_seed_same_numbers_and_batch_size_changes_nothing(tiny_video, name, baseline, features):
    ad, xs, vols = tiny_video
    kw = dict(SMALL.get(name, {}), baseline=baseline, **{"patch": {}, "tubelet": dict(frames_per_group=2),
                                                          "pixel": dict(cell=1)}[features])
    if features == "pixel" and name in ("monotonicity_correlation", "monotonicity"):
        kw["n_steps"] = 4
    runs = []
    for seed, bs in [(0, 1), (0, 5), (0, 64), (1, 5)]:
        runs.append(run(ad, name, [item_for(ad, xs[0], vols[0], seed=seed)], batch_size=bs, **kw)[0])
    a, b, c, d = runs
    # identical up to float32 batched-matmul rounding across batch sizes (a correlation of 12 small logit drops
    # can amplify that rounding to ~1e-6)
    tol = 1e-5 if name == "faithfulness_correlation" else 1e-6
    for k in a:
        assert np.isfinite(a[k])
        assert a[k] == pytest.approx(b[k], abs=tol) and a[k] == pytest.approx(c[k], abs=tol)
    # a different seed changes the random parts (subsets, uniform noise)
    if name == "faithfulness_correlation" or baseline == "uniform":
        assert any(a[k] != d[k] for k in a)


def test_metric_batch_size_param_overrides_harness(tiny_video):
    ad, xs, vols = tiny_video
    it = item_for(ad, xs[0], vols[0])
    calls, orig = [], ad.predict
    ad.predict = lambda x, batch_size=32: calls.append((x.shape[0], batch_size)) or orig(x, batch_size)
    try:
        with ad.counting() as n:
            ad.cache.clear()
            evaluate_items(metrics.create("deletion_auc", n_steps=6, batch_size=3), ad, [it], batch_size=1)
    finally:
        ad.predict = orig
    assert calls == [(3, 3), (3, 3)] and n["forward"] == 6


def test_output_cache_serves_repeated_masks(tiny_video):
    """The same masks on the same input (another method, metric or parameter value of the sample) are looked
    up, not evaluated again, and give the same numbers; a random baseline is never cached."""
    ad, xs, vols = tiny_video
    it = item_for(ad, xs[0], vols[0])
    ad.cache.clear()
    with ad.counting() as n1:
        first = run(ad, "deletion_auc", [it], clear=False, n_steps=6)
    hits = ad.cache.hits
    with ad.counting() as n2:
        second = run(ad, "deletion_auc", [it], clear=False, n_steps=6)
    assert n1["forward"] == 6 and n2["forward"] == 0 and ad.cache.hits == hits + 6
    assert first == second
    with ad.counting() as n3:
        run(ad, "deletion_auc", [it], clear=False, n_steps=6, baseline="uniform")
        run(ad, "deletion_auc", [it], clear=False, n_steps=6, baseline="uniform")
    assert n3["forward"] == 12


def test_curves_share_their_cuts(tiny_video):
    """SRG after deletion pays only for its LeRF curve; STAA faithfulness after STAA monotonicity pays
    nothing (top 70 % is one of the monotonicity's cuts); on a tied map too (the tie draws are shared)."""
    ad, xs, vols = tiny_video
    for vol in (vols[0], (vols[1] > 0.5).float()):
        it = item_for(ad, xs[0], vol)
        ad.cache.clear()
        with ad.counting() as n_del:
            run(ad, "deletion_auc", [it], clear=False, n_steps=8)
        with ad.counting() as n_srg:
            run(ad, "srg", [it], clear=False, n_steps=8)
        ad.cache.clear()
        with ad.counting() as n_alone:
            run(ad, "srg", [it], clear=False, n_steps=8)
        assert 0 < n_srg["forward"] < n_alone["forward"]
        assert n_srg["forward"] + n_del["forward"] == n_alone["forward"]  # nothing of deletion's is paid twice
        ad.cache.clear()
        run(ad, "staa_monotonicity", [it], clear=False)
        with ad.counting() as n_f:
            run(ad, "staa_faithfulness", [it], clear=False)
        assert n_f["forward"] == 0


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


@pytest.mark.parametrize("T,fpg,cell", [(1, 1, 4), (5, 2, 8), (4, 4, 1), (3, 1, 16)])
def test_compose_grid_path_equals_the_gather_path(T, fpg, cell):
    """The broadcast grid composition equals ``where(keep[:, ids], x, base)`` built by hand, for one baseline
    and for one baseline per row, with tubelets that do not divide T."""
    g = torch.Generator().manual_seed(T * 100 + cell)
    x = torch.rand(T, 3, 16, 16, generator=g)
    base = torch.rand(T, 3, 16, 16, generator=g)
    f = grid_features((T, 16, 16), cell, fpg)
    keep = torch.rand(6, f.n, generator=g) > 0.5
    ref = torch.where(keep[:, f.ids][:, :, None], x[None], base[None])
    assert torch.equal(compose(x, base, f, keep), ref)
    generic = Features(f.ids, f.n, "", None)
    assert torch.equal(compose(x, base, generic, keep), ref)
    bases = torch.rand(6, T, 3, 16, 16, generator=g)
    ref_rows = torch.where(keep[:, f.ids][:, :, None], x[None], bases)
    assert torch.equal(compose(x, bases, f, keep), ref_rows)
    out = torch.empty(6, T, 3, 16, 16)
    assert compose(x, base, f, keep, out=out).data_ptr() == out.data_ptr() and torch.equal(out, ref)


def test_perturber_packs_several_inputs_into_full_batches(tiny_video):
    """Requests of three inputs, interleaved, in one run: model calls of ``batch_size`` (the last shorter),
    each mask of an input evaluated once, results equal to each input's own logits."""
    ad, xs, _ = tiny_video
    f = grid_features((4, 32, 32), 8, 2)
    g = torch.Generator().manual_seed(0)
    keeps = [torch.rand(n, f.n, generator=g) > 0.5 for n in (7, 3, 9)]
    keeps[1] = torch.cat([keeps[1], keeps[1][:2]])  # two repeated rows: looked up, not evaluated
    ad.cache.clear()
    p = Perturber(ad, batch_size=4)
    reqs = [p.add(p.source(x, f, torch.zeros_like(x)), k) for x, k in zip(xs, keeps)]
    calls, orig = [], ad.predict
    ad.predict = lambda x, batch_size=32: calls.append(x.shape[0]) or orig(x, batch_size)
    try:
        with ad.counting() as n:
            p.run()
    finally:
        ad.predict = orig
    assert n["forward"] == 7 + 3 + 9 and calls == [4, 4, 4, 4, 3]
    for x, k, r in zip(xs, keeps, reqs):
        ref = ad.predict(compose(x, torch.zeros_like(x), f, k))
        torch.testing.assert_close(r.values, ref, rtol=1e-5, atol=1e-5)


def test_large_requests_are_drawn_and_evaluated_in_bounded_chunks(net_adapter, monkeypatch):
    """faithfulness_correlation with many runs never asks for more than one chunk of masks at a time and never
    composes more than one model batch: memory bounded whatever ``nr_runs`` (issue 20, item 8)."""
    from xaibench.metrics import faithfulness

    H = 8
    rng = np.random.default_rng(4)
    ad = linear_adapter(net_adapter, rng.standard_normal(H * H), H)
    x = torch.from_numpy(rng.random((1, 3, H, H), dtype=np.float32))
    vol = torch.from_numpy(rng.random((1, H, H), dtype=np.float32))
    chunks, batches = [], []
    orig_rows = faithfulness.SubsetMasks.rows
    monkeypatch.setattr(faithfulness.SubsetMasks, "rows",
                        lambda self, lo, hi: chunks.append(hi - lo) or orig_rows(self, lo, hi))
    orig = ad.predict
    ad.predict = lambda xx, batch_size=32: batches.append(xx.shape[0]) or orig(xx, batch_size)
    try:
        out = run(ad, "faithfulness_correlation", [item_for(ad, x, vol, target=0)], batch_size=256, cell=1,
                  nr_runs=10000, subset_size=6)[0]
    finally:
        ad.predict = orig
    assert sum(chunks) == 10000 and max(chunks) <= 4096 and max(batches) <= 256
    assert -1 <= out["faithfulness_correlation"] <= 1


# --------------------------------------------------------------------------- parameters
@pytest.mark.parametrize("name,kw,msg", [
    ("deletion_auc", dict(baseline="black"), "baseline"),
    ("insertion_auc", dict(features="voxel"), "features"),
    ("faithfulness_correlation", dict(nr_runs=1), "out of range"),
    ("monotonicity_correlation", dict(output="probability"), "output"),
    ("monotonicity", dict(blur_sigma=0), "out of range"),
    ("deletion_auc", dict(tie_se=-1), "out of range"),
    ("srg", dict(tie_max_draws=1), "out of range"),
    ("deletion_auc", dict(stepz=3), "n_steps"),  # did you mean
    ("staa_monotonicity", dict(ratios=[0.5, 1.5]), "out of range"),
])
def test_bad_parameters_raise_user_errors(name, kw, msg):
    with pytest.raises(UserError, match=msg):
        metrics.create(name, **kw)


def test_typed_configs_record_only_active_parameters():
    p = metrics.create("deletion_auc").params()
    assert p["cell"] is None and "n_segments" not in p and "blur_sigma" not in p and p["n_steps"] == 20
    p = metrics.create("srg", features="slic", baseline="blur").params()
    assert "cell" not in p and p["n_segments"] == 64 and p["blur_sigma"] == 4.0
    assert "nr_samples" not in metrics.create("monotonicity_correlation").params()
    assert "nr_samples" in metrics.create("monotonicity_correlation", baseline="uniform").params()
    assert "subset_fraction" not in metrics.create("faithfulness_correlation", subset_size=3).params()


def test_bad_subset_size_and_cell_are_user_errors(mlp):
    ad, x, vol = mlp
    with pytest.raises(UserError, match="subset size"):
        run(ad, "faithfulness_correlation", [item_for(ad, x, vol)], subset_size=10 ** 6)
    with pytest.raises(UserError, match="divide"):
        run(ad, "deletion_auc", [item_for(ad, x, vol)], cell=3)


@pytest.mark.parametrize("name", ["deletion_auc", "srg", "faithfulness_correlation", "staa_faithfulness"])
def test_a_grid_cell_that_cannot_tile_the_input_is_refused_at_plan_time(mlp, name):
    """``check_fit(adapter)`` (called by the runner before any sample): an 8-px input cannot be cut into 3-px
    cells; a cell that divides it passes without evaluating the model."""
    adapter, _, _ = mlp
    with pytest.raises(UserError, match=r"cell=3 must divide the input size 8x8"):
        metrics.create(name, cell=3).check_fit(adapter)
    with adapter.counting() as n:
        metrics.create(name, cell=2).check_fit(adapter)
    assert n["forward"] == 0
