"""SHAP and LIME over several samples at once (issue 17 item 3): equal to one sample at a time, packed into
full model batches, with a progress hook; the memory bound (issue 20 item 8); typed parameters."""

import numpy as np
import pytest
import torch

from xaibench import methods, models
from xaibench.errors import UserError


@pytest.fixture(scope="module")
def video():
    ad = models.create("hf_timesformer", num_frames=4, image_size=32, patch_size=8, hidden_size=32,
                       num_hidden_layers=2, num_attention_heads=2, seed=1)
    g = torch.Generator().manual_seed(3)
    xs = torch.rand(3, 4, 3, 32, 32, generator=g)
    return ad, xs


KW = dict(n_samples=128, cell=8, frames_per_group=2, seed=4, batch_size=16)  # 2 x 16 = 32 features


@pytest.mark.parametrize("name", ["shap", "lime"])
def test_several_samples_in_one_batch_equal_one_at_a_time(video, name):
    ad, xs = video
    targets = [0, 1, 1]
    m = methods.create(name, **KW)
    calls, orig = [], ad.predict
    ad.predict = lambda x, batch_size=32: calls.append(x.shape[0]) or orig(x, batch_size)
    try:
        ad.cache.clear()
        with ad.counting() as nb:
            together = m.explain_batch(ad, xs, targets)
        batch_calls = list(calls)
        alone, n_alone = [], 0
        for x, t in zip(xs, targets):
            ad.cache.clear()
            with ad.counting() as n1:
                alone.append(methods.create(name, **KW)(ad, x, t))
            n_alone += n1["forward"]
    finally:
        ad.predict = orig
    for a, b in zip(together, alone):
        torch.testing.assert_close(a.volume, b.volume, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(a.frame_scores, b.frame_scores, rtol=1e-5, atol=1e-6)
        for k in b.extras:
            torch.testing.assert_close(a.extras[k], b.extras[k], rtol=1e-5, atol=1e-6)
    assert nb["forward"] == n_alone > 0  # every sample's coalitions once, none twice
    # the coalitions of the three samples share model batches: all calls full but the last
    assert all(c == 16 for c in batch_calls[:-1]) and sum(batch_calls) == n_alone
    assert len(batch_calls) == -(-n_alone // 16)


@pytest.mark.parametrize("name", ["shap", "lime"])
def test_progress_hook_reports_coalitions(video, name):
    ad, xs = video
    m = methods.create(name, **KW)
    seen = []
    m.progress = lambda done, total: seen.append((done, total))
    ad.cache.clear()
    m.explain_batch(ad, xs[:2], [0, 1])
    assert len(seen) >= 2 and len({t for _, t in seen}) == 1
    dones = [d for d, _ in seen]
    assert dones == sorted(dones) and dones[-1] == seen[-1][1]
    total = seen[-1][1]
    assert total >= 2 * (128 if name == "lime" else 100)  # every coalition of both samples is counted


@pytest.mark.parametrize("name", ["shap", "lime"])
def test_huge_budgets_are_refused_before_anything_is_drawn(video, name, monkeypatch):
    """``n_samples=10^7`` with ``budget=allow`` would need tens of GiB for the coalitions: a UserError naming
    the parameter, the memory and what fits, before the library is called or the model runs."""
    import shap

    from xaibench.methods import _perturbation

    ad, xs = video
    monkeypatch.setattr(_perturbation, "available_memory", lambda device=None: 8 << 30)

    def boom(*a, **k):
        raise AssertionError("the library was called")

    monkeypatch.setattr(shap, "KernelExplainer", boom)
    monkeypatch.setattr(np.random, "RandomState", boom)  # LIME's draw
    m = methods.create(name, n_samples=10 ** 7, budget="allow", seed=0)
    with ad.counting() as n, pytest.raises(UserError, match=r"method\.n_samples=10000000 .* GiB.*at most about \d+ fits"):
        m(ad, xs[0], 0)
    assert n["forward"] == 0
    # a budget that fits passes the check (and then runs)
    monkeypatch.undo()
    ad.cache.clear()
    e = methods.create(name, **KW)(ad, xs[0], 0)
    assert torch.isfinite(e.volume).all()


def test_typed_parameters():
    p = methods.create("shap").params()
    assert p["n_samples"] == 512 and p["frames_per_group"] == 2 and p["budget"] == "refuse" and "n_segments" not in p
    assert "cell" not in methods.create("lime", features="slic").params()
    assert methods.create("lime", baseline="blur").params()["blur_sigma"] == 4.0
    with pytest.raises(UserError, match="out of range"):
        methods.create("lime", n_samples=1)
    with pytest.raises(UserError, match="out of range"):
        methods.create("shap", n_samples=10 ** 8)
    with pytest.raises(UserError, match="kernel_width"):
        methods.create("lime", kernel_width=0)
    with pytest.raises(UserError, match="budget"):
        methods.create("shap", budget="maybe")
