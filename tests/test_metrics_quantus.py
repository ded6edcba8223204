"""Our faithfulness metrics against Quantus 0.6 (an independent implementation), same inputs and indices.

Quantus perturbs every array element (channels included) and draws its random
subsets from the global numpy RNG.  We compare on

* single-channel inputs with pixel features (``cell=1``): Quantus's subsets are replayed by
  re-seeding ``np.random`` and drawing the same ``np.random.choice`` sequence,
  then fed to :meth:`FaithfulnessCorrelation.score` (one :class:`EvalItem` on given subsets);
* three-channel inputs through a real (tiny, random-init) ViT adapter: our pixel
  features are Quantus's three channel elements of a pixel (Quantus's
  ``np.random.choice`` is monkeypatched to return the channel-expanded subsets
  ours used; for the monotonicity correlation the ascending sort puts the
  three equal channel attributions of a pixel next to each other, so
  ``features_in_step = 3 k`` in Quantus is ``k`` pixels in ours).
"""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

quantus = pytest.importorskip("quantus")

from xaibench import models  # noqa: E402
from xaibench.explanation import Explanation  # noqa: E402
from xaibench.metrics import create  # noqa: E402
from xaibench.metrics.base import EvalItem, evaluate_items  # noqa: E402

TOL = 1e-6


@pytest.fixture
def conv_adapter(net_adapter):
    """A one-channel conv net as a model adapter: (B, 1, 1, H, W) pixels -> net((B, 1, H, W))."""

    def make(net, size):
        return net_adapter(net, frames=1, size=size, channels=1, patch=4, view=lambda x: x[:, 0])

    return make


class AdapterAsModule(nn.Module):
    """A model adapter seen by Quantus: (B, C, H, W) pixels in [0, 1] -> logits (adapter normalises)."""

    def __init__(self, adapter):
        super().__init__()
        self.adapter = adapter
        self.inner = adapter.model  # so that .eval()/.training work as Quantus expects

    def forward(self, x):
        return self.adapter._run(self.adapter.normalise(x[:, None]))


def conv_net(c=1, h=12, w=12, k=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(c, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * h * w, k)).eval()


def make_item(adapter, x, a, seed=1):
    """One (sample, method) item of ``x`` explained by ``a``, the target the model's prediction (cache cleared)."""
    adapter.cache.clear()
    logits = adapter.predict(x[None])[0]
    expl = Explanation(volume=a, frame_scores=torch.ones(a.shape[0]), token_map=a)
    sample = SimpleNamespace(sample_id="s", x=x, mask=None, frames=None, label=None)
    return EvalItem(sample=sample, method="m", explanation=expl, target=int(logits.argmax()), logits=logits,
                    rng=np.random.default_rng(seed), shared_seed=(seed,))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_faithfulness_correlation_matches_quantus_single_channel(conv_adapter, seed):
    H = W = 12
    net = conv_net(h=H, w=W, seed=seed)
    ad = conv_adapter(net, H)
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.random((1, 1, H, W), dtype=np.float32))
    a = torch.from_numpy(rng.standard_normal((1, H, W)).astype(np.float32))
    item = make_item(ad, x, a)
    R, k = 25, 30
    np.random.seed(100 + seed)
    subsets = np.stack([np.random.choice(H * W, k, replace=False) for _ in range(R)])
    np.random.seed(100 + seed)
    q = quantus.FaithfulnessCorrelation(nr_runs=R, subset_size=k, perturb_baseline=0.0, disable_warnings=True,
                                        return_aggregate=False)
    ref = q(model=net, x_batch=x.numpy(), y_batch=np.array([item.target]), a_batch=a[None].numpy(), device="cpu")[0]
    ours = create("faithfulness_correlation", nr_runs=R, subset_size=k, cell=1).score(ad, item, subsets, batch_size=5)
    assert np.isfinite(ref)
    assert abs(ours["faithfulness_correlation"] - ref) < TOL
    # the subsets really were Quantus's: a different subset draw changes the number
    other = create("faithfulness_correlation", nr_runs=R, subset_size=k, cell=1).score(ad, item, batch_size=5)
    assert abs(other["faithfulness_correlation"] - ref) > TOL


@pytest.mark.parametrize("fis", [1, 4, 9])
def test_monotonicity_correlation_matches_quantus_single_channel(conv_adapter, fis):
    H = W = 12
    net = conv_net(h=H, w=W, seed=fis)
    ad = conv_adapter(net, H)
    rng = np.random.default_rng(fis)
    x = torch.from_numpy(rng.random((1, 1, H, W), dtype=np.float32))
    a = torch.from_numpy(rng.standard_normal((1, H, W)).astype(np.float32))  # abs=True as Quantus
    item = make_item(ad, x, a)
    q = quantus.MonotonicityCorrelation(nr_samples=2, features_in_step=fis, perturb_baseline=0.0,
                                        disable_warnings=True)
    ref = q(model=net, x_batch=x.numpy(), y_batch=np.array([item.target]), a_batch=a[None].numpy(), device="cpu")[0]
    ours = evaluate_items(create("monotonicity_correlation", features_in_step=fis, cell=1), ad, [item], batch_size=5)[0]
    assert np.isfinite(ref)
    assert abs(ours["monotonicity_correlation"] - ref) < TOL


@pytest.fixture(scope="module")
def tiny_vit():
    return models.create("hf_vit", image_size=24, patch_size=4, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=2, seed=3)


def test_faithfulness_correlation_matches_quantus_rgb_vit(tiny_vit, monkeypatch):
    ad = tiny_vit
    H = W = 24
    rng = np.random.default_rng(7)
    x = torch.from_numpy(rng.random((1, 3, H, W), dtype=np.float32))
    a = torch.from_numpy(rng.random((1, H, W), dtype=np.float32))
    item = make_item(ad, x, a)
    metric = create("faithfulness_correlation", nr_runs=20, subset_size=40, cell=1)
    subsets = metric.draw_subsets(np.random.default_rng(11), H * W)
    expanded = iter([np.concatenate([s + c * H * W for c in range(3)]) for s in subsets])
    monkeypatch.setattr(np.random, "choice", lambda n, size, replace=True: next(expanded))
    q = quantus.FaithfulnessCorrelation(nr_runs=20, subset_size=120, perturb_baseline=0.0, disable_warnings=True,
                                        return_aggregate=False)
    ref = q(model=AdapterAsModule(ad).eval(), x_batch=x.numpy(), y_batch=np.array([item.target]),
            a_batch=a[None].numpy(), device="cpu")[0]
    monkeypatch.undo()
    ours = metric.score(ad, item, subsets, batch_size=6)["faithfulness_correlation"]
    assert np.isfinite(ref) and abs(ours - ref) < TOL


def test_monotonicity_correlation_matches_quantus_rgb_vit(tiny_vit):
    ad = tiny_vit
    H = W = 24
    rng = np.random.default_rng(8)
    x = torch.from_numpy(rng.random((1, 3, H, W), dtype=np.float32))
    a = torch.from_numpy(rng.random((1, H, W), dtype=np.float32))
    item = make_item(ad, x, a)
    k = 8
    q = quantus.MonotonicityCorrelation(nr_samples=1, features_in_step=3 * k, perturb_baseline=0.0,
                                        disable_warnings=True)
    ref = q(model=AdapterAsModule(ad).eval(), x_batch=x.numpy(), y_batch=np.array([item.target]),
            a_batch=a[None].numpy(), device="cpu")[0]
    ours = evaluate_items(create("monotonicity_correlation", features_in_step=k, cell=1), ad, [item],
                          batch_size=16)[0]
    assert np.isfinite(ref) and abs(ours["monotonicity_correlation"] - ref) < TOL
