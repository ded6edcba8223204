"""The tie rule (docs/ties.md): rankings and their seeded, antithetic tie draws; exact expectations where they
exist (cuts on group boundaries, enumerable subsets, cancelling terms) against the closed form of a linear
model; adaptive draws with a reported standard error elsewhere; whole tie orders for the rank statistics,
against the brute-force mean over every order."""

import itertools
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from xaibench import metrics
from xaibench.explanation import Explanation
from xaibench.metrics.base import EvalItem, evaluate_items
from xaibench.metrics.perturbation import kendall_tau_b, pearson_rows, spearman_rows
from xaibench.perturb import Ranking


class Lin(nn.Module):
    """Logit 0 = sum_p w_p x_p over the pixels of channel 0; class 1's logit is 0."""

    def __init__(self, weights):
        super().__init__()
        self.w = torch.as_tensor(np.asarray(weights), dtype=torch.float32)

    def forward(self, z):
        z = z.view(z.shape[0], 3, -1)[:, 0]
        return torch.stack([z @ self.w, torch.zeros(z.shape[0])], -1)


class Three(Lin):
    """Three classes whose min-max normalisation changes with the input (for the STAA distance)."""

    def forward(self, z):
        s = super().forward(z)[:, 0]
        return torch.stack([s, s * s / 10, torch.ones_like(s)], -1)


def setup(net_adapter, w, xpix, scores, H, net=Lin):
    ad = net_adapter(net(w), frames=1, size=H, patch=1, classes=2 if net is Lin else 3)
    x = torch.from_numpy(np.broadcast_to(np.asarray(xpix).reshape(1, 1, H, H), (1, 3, H, H)).copy()).float()
    vol = torch.from_numpy(np.asarray(scores, dtype=np.float64).reshape(1, H, H)).float()
    return ad, x, vol


def item(ad, x, vol, seed=7):
    logits = ad.predict(x[None])[0]
    sample = SimpleNamespace(sample_id="s", x=x, mask=None, frames=None, label=None)
    return EvalItem(sample=sample, method="m", explanation=Explanation(vol, vol.flatten(1).sum(1), vol), target=0,
                    logits=logits, rng=np.random.default_rng(seed), shared_seed=(0, seed))


def evaluate(ad, it, name, **kw):
    ad.cache.clear()
    if "output" in metrics.METRICS.config(name).keys():
        kw.setdefault("output", "logit")
    with ad.counting() as n:
        out = evaluate_items(metrics.create(name, cell=1, **kw), ad, [it], batch_size=256)[0]
    return out, n["forward"]


# --------------------------------------------------------------------------- rankings and draws
def test_ranking_groups_and_cuts():
    r = Ranking(torch.tensor([1.0, 3.0, 1.0, 3.0, 2.0, 1.0]), seed=(0, 1))
    assert r.order.tolist() == [1, 3, 4, 0, 2, 5] and r.bounds.tolist() == [0, 2, 3, 6]
    assert r.group_at(1) == (0, 2) and r.group_at(2) is None and r.group_at(4) == (3, 6)
    assert r.group_at(0) is None and r.group_at(6) is None
    assert Ranking(torch.rand(9)).untied and not r.untied


def test_tie_draws_are_seeded_antithetic_and_shared():
    s = torch.tensor([2.0] * 6 + [1.0] * 6 + [5.0])
    r = Ranking(s, seed=(0, 1))
    p0, p1 = r.perm(1, 7, 0), r.perm(1, 7, 1)
    assert sorted(p0.tolist()) == list(range(6)) and p1.tolist() == p0[::-1].tolist()  # a pair: an order, its reverse
    assert np.array_equal(Ranking(s.clone(), seed=(0, 1)).perm(1, 7, 0), p0)  # same scores, same sample: same draw
    assert not all(np.array_equal(Ranking(s, seed=(0, 2)).perm(1, 7, d), r.perm(1, 7, d)) for d in range(0, 8, 2))
    draws = {tuple(r.perm(1, 7, d)) for d in range(0, 40, 2)}
    assert len(draws) > 10  # random orders
    pos = r.positions(((1, 7, 0),))
    assert pos[12] == 0 and sorted(pos[:6].tolist()) == list(range(1, 7))  # only the group's order changes
    assert r.order[1:7][p0].tolist() == np.argsort(pos)[1:7].tolist()


# --------------------------------------------------------------------------- linear scores: exact where possible
def expected_auc(c, scores, n_steps, curve):
    """E over random orders of tied features of the logit AUC of a linear model with contributions ``c`` (zero
    baseline): removing m of a tie group of size g holding C of the contribution removes m/g C in expectation,
    and an AUC is linear in its points."""
    F = len(c)
    groups = [np.flatnonzero(scores == s) for s in sorted(set(scores.tolist()), reverse=True)]

    def top_mass(k):
        tot, left = 0.0, k
        for g in groups:
            take = min(left, len(g))
            tot += take / len(g) * c[g].sum()
            left -= take
        return tot

    ks = np.array([(i * F) // n_steps for i in range(n_steps + 1)])
    if curve == "insertion":
        y = [top_mass(k) for k in ks]
    elif curve == "morf":
        y = [c.sum() - top_mass(k) for k in ks]
    else:  # lerf: remove the bottom k = keep the top F - k
        y = [top_mass(F - k) for k in ks]
    return np.trapezoid(y, ks / F)


def _problem(seed, sizes):
    """Weights, pixels and a score map of 16 pixels with tie groups of the given sizes (the rest distinct)."""
    rng = np.random.default_rng(seed)
    F = 16
    w = 2 * rng.standard_normal(F)
    xpix = rng.uniform(0.2, 1.0, F)
    vals = []
    for g, size in enumerate(sizes):
        vals += [10.0 + g] * size
    vals += list(rng.uniform(0, 5, F - len(vals)))
    return w, xpix, rng.permutation(np.array(vals))


@pytest.mark.parametrize("name,curves", [("deletion_auc", ["morf"]), ("insertion_auc", ["insertion"]),
                                         ("srg", ["morf", "lerf"])])
def test_few_tied_subsets_are_enumerated_exactly(net_adapter, name, curves):
    """Tie groups of 3 and 4 features: every cut's subsets (at most C(4, 2) = 6) are evaluated, so the score is
    the closed-form expectation to float precision and its tie standard error is 0."""
    w, xpix, scores = _problem(1, (3, 4))
    ad, x, vol = setup(net_adapter, w, xpix, scores, 4)
    out, passes = evaluate(ad, item(ad, x, vol), name, n_steps=16)
    c = w * xpix
    exact = {k: expected_auc(c, scores, 16, k) for k in ("morf", "lerf", "insertion")}
    if name == "srg":
        assert out["morf_auc"] == pytest.approx(exact["morf"], abs=1e-5)
        assert out["lerf_auc"] == pytest.approx(exact["lerf"], abs=1e-5)
        assert out["srg"] == pytest.approx(exact["lerf"] - exact["morf"], abs=1e-5)
    else:
        assert out[name] == pytest.approx(exact[curves[0]], abs=1e-5)
    assert all(v == 0.0 for k, v in out.items() if k.endswith("_tie_se"))


@pytest.mark.parametrize("name,curve", [("deletion_auc", "morf"), ("insertion_auc", "insertion")])
def test_drawn_ties_are_within_their_error_of_the_expectation(net_adapter, name, curve):
    """Two tie groups of 8 features (up to C(8, 4) = 70 subsets per cut, more than the 64 draws allowed): the
    subsets are drawn, the reported tie standard error is positive and at most ``tie_se``, the value is within
    4 such errors of the closed form, relabelling the features leaves it there, and a tie order by index
    would be far off."""
    F = 16
    rng = np.random.default_rng(4)
    w = 2 * rng.standard_normal(F)
    xpix = rng.uniform(0.2, 1.0, F)
    scores = rng.permutation(np.array([3.0] * 8 + [1.0] * 8))
    c = w * xpix
    exact = expected_auc(c, scores, F, curve)
    tie_se = 0.02
    for perm in (np.arange(F), np.random.default_rng(5).permutation(F)):
        ad, x, vol = setup(net_adapter, w[perm], xpix[perm], scores[perm], 4)
        out, passes = evaluate(ad, item(ad, x, vol), name, n_steps=F, tie_se=tie_se, tie_max_draws=64)
        se = out[f"{name}_tie_se"]
        assert 0 < se <= tie_se
        assert abs(out[name] - exact) <= 4 * se + 1e-6
    order = np.argsort(-scores, kind="stable")  # ties broken by index: a label-dependent value
    ks = [(i * F) // F for i in range(F + 1)]
    by_index = np.trapezoid([c[order[:k]].sum() if curve == "insertion" else c.sum() - c[order[:k]].sum()
                             for k in ks], np.asarray(ks) / F)
    assert abs(by_index - exact) > 8 * tie_se


def test_a_smaller_tie_error_costs_more_draws_and_the_cap_is_reported(net_adapter):
    F = 16
    rng = np.random.default_rng(6)
    w = 2 * rng.standard_normal(F)
    ad, x, vol = setup(net_adapter, w, rng.uniform(0.2, 1, F), np.ones(F), 4)
    it = item(ad, x, vol)
    loose, n_loose = evaluate(ad, it, "deletion_auc", n_steps=8, tie_se=0.5)
    tight, n_tight = evaluate(ad, it, "deletion_auc", n_steps=8, tie_se=0.02, tie_max_draws=4096)
    capped, n_capped = evaluate(ad, it, "deletion_auc", n_steps=8, tie_se=0.0, tie_max_draws=8)
    assert n_loose < n_tight and loose["deletion_auc_tie_se"] > 0.02 >= tight["deletion_auc_tie_se"]
    assert n_capped <= 7 * 8 and capped["deletion_auc_tie_se"] > tight["deletion_auc_tie_se"]
    # the constant map's expected logit deletion curve is the straight line from f(x) to f(0) = 0
    fx = float(w @ x[0, 0].numpy().reshape(-1))
    assert abs(tight["deletion_auc"] - fx / 2) <= 4 * tight["deletion_auc_tie_se"] + 1e-6


def test_a_constant_map_has_srg_zero_exactly(net_adapter):
    """One tie group: each LeRF cut is distributed as the MoRF cut of the same step, so their terms cancel --
    SRG is 0 with no tie error, while its two AUCs are estimates with one."""
    rng = np.random.default_rng(2)
    ad, x, vol = setup(net_adapter, rng.standard_normal(16), rng.uniform(0.2, 1, 16), np.ones(16), 4)
    out, _ = evaluate(ad, item(ad, x, vol), "srg", n_steps=8)
    assert out["srg"] == 0.0 and out["srg_tie_se"] == 0.0
    assert out["morf_auc"] == out["lerf_auc"] and out["morf_auc_tie_se"] > 0


def test_staa_faithfulness_tie_rule(net_adapter):
    """A cut on a group boundary is exact (equal to the value with the ties broken in any order); inside a
    group the value is the mean over the group's subsets (enumerated: exact)."""
    w, xpix, scores = _problem(3, (4,))
    ad, x, vol = setup(net_adapter, w, xpix, scores, 4, net=Three)
    top = np.argsort(-scores, kind="stable")
    out, _ = evaluate(ad, item(ad, x, vol), "staa_faithfulness", k=0.25)  # keep 4: the tie group exactly
    assert out["staa_faithfulness_tie_se"] == 0.0
    noisy = vol + 1e-3 * torch.rand(vol.shape, generator=torch.Generator().manual_seed(0))
    ref, _ = evaluate(ad, item(ad, x, noisy), "staa_faithfulness", k=0.25)
    assert set(top[:4]) == set(np.argsort(-noisy.reshape(-1).numpy(), kind="stable")[:4])
    assert out["staa_faithfulness"] == pytest.approx(ref["staa_faithfulness"], abs=1e-12)
    half, _ = evaluate(ad, item(ad, x, vol), "staa_faithfulness", k=0.125)  # keep 2 of the 4 tied: 6 subsets
    z0 = ad.predict(x[None])[0].double()

    def d(kept):
        xp = torch.zeros_like(x).view(3, -1)
        xp[:, kept] = x.view(3, -1)[:, kept]
        z = ad.predict(xp.view(1, 3, 4, 4)[None])[0].double()
        nz, n0 = (z - z.min()) / (z.max() - z.min()), (z0 - z0.min()) / (z0.max() - z0.min())
        return (n0 - nz).abs().mean().item()

    exact = np.mean([1 - d(list(s)) for s in itertools.combinations(top[:4], 2)])
    assert half["staa_faithfulness"] == pytest.approx(exact, abs=1e-9) and half["staa_faithfulness_tie_se"] == 0


# --------------------------------------------------------------------------- order statistics
def test_order_metrics_are_exact_when_no_cut_splits_a_tie_group(net_adapter):
    """STAA monotonicity at ratios whose cuts fall on the boundaries of the tie groups: one order, no tie
    error, the value of any order of the ties."""
    rng = np.random.default_rng(8)
    scores = np.repeat([4.0, 3.0, 2.0, 1.0], 4)  # four groups of 4 features
    ad, x, vol = setup(net_adapter, rng.standard_normal(16), rng.uniform(0.2, 1, 16), rng.permutation(scores), 4,
                       net=Three)
    out, passes = evaluate(ad, item(ad, x, vol), "staa_monotonicity", ratios=[0.25, 0.5, 0.75])
    assert out["staa_monotonicity_tie_se"] == 0.0 and passes == 3
    noisy = vol + 1e-3 * torch.rand(vol.shape, generator=torch.Generator().manual_seed(1))
    ref, _ = evaluate(ad, item(ad, x, noisy), "staa_monotonicity", ratios=[0.25, 0.5, 0.75])
    assert np.isfinite(out["staa_monotonicity"]) and out["staa_monotonicity"] == ref["staa_monotonicity"]


def test_order_metric_mean_over_tie_orders_against_every_order(net_adapter):
    """Monotonicity correlation with two features per step on a map with two tie groups of 3 (the middle step
    takes one feature of each group, so the order inside the groups matters): the mean over drawn orders is
    within 4 standard errors of the brute-force mean over all 3! x 3! orders."""
    F = 6
    rng = np.random.default_rng(9)
    w = torch.as_tensor(rng.standard_normal(F), dtype=torch.float32)

    class Nonlin(nn.Module):  # a non-linear model of the 6 frames' single channel-0 pixel
        def forward(self, z):
            s = torch.tanh(z @ w + (z[:, :3] ** 2).sum(1))
            return torch.stack([s, -s], -1)

    # six 1-pixel frames: six features (cell 1)
    ad = net_adapter(Nonlin(), frames=F, size=1, patch=1, classes=2, view=lambda v: v[:, :, 0, 0, 0])
    x = torch.from_numpy(rng.uniform(0.2, 1, (F, 3, 1, 1)).astype(np.float32))
    a = np.array([2.0, 1.0, 2.0, 1.0, 2.0, 1.0])
    vol = torch.from_numpy(a.reshape(F, 1, 1)).float()
    it = item(ad, x, vol)
    kw = dict(features_in_step=2, abs=False, output="prob", tie_se=0.0, tie_max_draws=256)
    ad.cache.clear()
    out = evaluate_items(metrics.create("monotonicity_correlation", cell=1, **kw), ad, [it])[0]
    # brute force: ascending order = the 1-group (features 1, 3, 5) in any order, then the 2-group (0, 2, 4)
    p0 = torch.softmax(it.logits.double(), -1)[0].item()
    vals = []
    for lo in itertools.permutations([1, 3, 5]):
        for hi in itertools.permutations([0, 2, 4]):
            order = list(lo) + list(hi)
            v, att = [], []
            for j in range(0, F, 2):
                xp = x.clone()
                xp[order[j:j + 2]] = 0
                y = torch.softmax(ad.predict(xp[None])[0].double(), -1)[0].item()
                v.append((y - p0) ** 2 / p0 ** 2)
                att.append(a[order[j:j + 2]].sum())
            vals.append(spearman_rows(np.array(att)[None], np.array(v)[None])[0])
    se = out["monotonicity_correlation_tie_se"]
    assert se > 0 and abs(out["monotonicity_correlation"] - np.mean(vals)) <= 4 * se + 1e-9


def test_correlation_helpers_equal_scipy():
    from scipy import stats

    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(3, 12))
        a, b = rng.standard_normal(n), rng.standard_normal(n)
        b[: n // 3] = b[0]  # ties
        a[-2:] = a[-1]
        assert pearson_rows(a, b)[0] == pytest.approx(stats.pearsonr(a, b)[0], abs=1e-12)
        assert spearman_rows(a, b)[0] == pytest.approx(stats.spearmanr(a, b)[0], abs=1e-12)
        assert kendall_tau_b(a, b[None])[0] == pytest.approx(stats.kendalltau(a, b).statistic, abs=1e-12)
    assert np.isnan(kendall_tau_b(np.arange(4.0), np.ones((1, 4)))[0])
    assert pearson_rows(np.ones(4), np.arange(4.0))[0] == 0.0 and np.isnan(pearson_rows(np.arange(4.0), np.ones(4))[0])
