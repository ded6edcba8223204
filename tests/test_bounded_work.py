"""Bounded work (issue 20, item 8): sizes inside the allowed ranges never ask for more than a stated share of the
free memory -- the work is chunked, or the run refuses before it starts, naming the memory it would need.

The three reported cases, each with the mechanism that bounds it:

* ``{config: faithfulness_correlation, nr_runs: 1000000}``: the subsets are drawn a chunk of at most 4096 at a
  time, composed one model batch at a time within ``perturb.INPUT_SHARE`` of the free memory, and the output
  cache keeps at most ``perturb.CACHE_SHARE`` of it (:func:`xaibench.perturb.cache_rows`);
* ``explain_batch_size=100000`` (the range stops at 65536) with 20,000 samples: the samples held together are
  bounded by ``resources.HOST_SHARE`` of the available memory at ``resources.held_bytes`` a sample (which
  counts the method arms: :func:`xaibench.run.resources.explain_batch`),
  and a traced batch leaves nothing behind (the run's memory does not grow with the number of samples);
* ``{config: shap, n_samples: 10000000, budget: allow}``: refused at plan time with the memory it would need
  and the largest ``n_samples`` that fits (:meth:`CoalitionMethod.check_memory`, called by ``check_fit``).

The free memory is monkeypatched to small figures so that the bounds bite on small inputs; every test fails
when its bound is taken out.
"""

import gc
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from conftest import NetAdapter, small_component  # noqa: E402
from run_config import make_cfg  # noqa: E402

from xaibench import methods, metrics, perturb  # noqa: E402
from xaibench.errors import UserError  # noqa: E402
from xaibench.metrics import faithfulness  # noqa: E402
from xaibench.metrics.base import EvalBatch, EvalItem  # noqa: E402
from xaibench.explanation import Explanation  # noqa: E402
from xaibench.run import resources as R  # noqa: E402

MiB = 1 << 20


class _Lin(torch.nn.Module):
    """Two logits: the pixels' weighted sum and its negative."""

    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(torch.as_tensor(w, dtype=torch.float32), requires_grad=False)

    def forward(self, x):
        s = x.reshape(x.shape[0], -1, self.w.numel()).sum(1) @ self.w
        return torch.stack([s, -s], 1)


def _linear_item(H=8, seed=4):
    rng = np.random.default_rng(seed)
    ad = NetAdapter(_Lin(rng.standard_normal(H * H)), frames=1, size=H, patch=1, classes=2)
    x = torch.from_numpy(rng.random((1, 3, H, H), dtype=np.float32))
    vol = torch.from_numpy(rng.random((1, H, H), dtype=np.float32))
    from types import SimpleNamespace

    logits = ad.predict(x[None])[0]
    sample = SimpleNamespace(sample_id="s", x=x, mask=None, frames=None, label=None)
    item = EvalItem(sample=sample, method="m", explanation=Explanation(vol, vol.flatten(1).sum(1), vol), target=0,
                    logits=logits, rng=np.random.default_rng(0), shared_seed=(0, 0))
    return ad, item


def _watch(monkeypatch, ad):
    """Record the masks drawn per chunk and the inputs per model batch."""
    chunks, batches = [], []
    rows = faithfulness.SubsetMasks.rows
    monkeypatch.setattr(faithfulness.SubsetMasks, "rows",
                        lambda self, lo, hi: chunks.append(hi - lo) or rows(self, lo, hi))
    predict = ad.predict
    ad.predict = lambda xx, batch_size=32: batches.append(xx.shape[0]) or predict(xx, batch_size)
    return chunks, batches


# ------------------------------------------------------------------------------------------ faithfulness nr_runs
def test_faithfulness_with_a_million_runs_draws_and_composes_in_bounded_chunks(monkeypatch):
    """``nr_runs=10^6`` (the top of its range): the first model batch comes after at most one chunk of 4096
    subsets was drawn, and it holds at most what fits in INPUT_SHARE of the free memory -- not 10^6 masks or
    inputs (which would be 3 GiB of 8x8 inputs here).  The run is stopped after that first batch."""
    ad, item = _linear_item()
    avail = 4 * MiB
    monkeypatch.setattr(perturb, "available_memory", lambda device=None: avail)
    chunks, batches = _watch(monkeypatch, ad)
    predict = ad.predict

    class Stop(Exception):
        pass

    def first_batch_only(xx, batch_size=32):
        predict(xx, batch_size)
        raise Stop

    ad.predict = first_batch_only
    m = metrics.create("faithfulness_correlation", cell=1, nr_runs=10 ** 6, subset_size=6)
    with pytest.raises(Stop):
        m.evaluate(EvalBatch(adapter=ad, items=[item], batch_size=1 << 20))
    row = 3 * 8 * 8 * 4  # bytes of one composed input
    assert sum(chunks) <= 4096 and max(chunks) <= 4096
    assert batches == [min(4096, int(perturb.INPUT_SHARE * avail) // row)]


def test_faithfulness_many_runs_keep_masks_batches_and_cache_within_their_shares(monkeypatch):
    """A whole run with more runs than any bound: every chunk <= 4096 subsets, every model batch within
    INPUT_SHARE and the output cache within CACHE_SHARE of the (patched) free memory, and the result is a
    correlation."""
    ad, item = _linear_item()
    avail = 4 * MiB
    monkeypatch.setattr(perturb, "available_memory", lambda device=None: avail)
    chunks, batches = _watch(monkeypatch, ad)
    ad.cache.clear()
    runs = 12000
    m = metrics.create("faithfulness_correlation", cell=1, nr_runs=runs, subset_size=6)
    out = m.evaluate(EvalBatch(adapter=ad, items=[item], batch_size=1 << 20))[0]
    assert -1 <= out["faithfulness_correlation"] <= 1
    assert sum(chunks) == runs and max(chunks) <= 4096
    row_in = 3 * 8 * 8 * 4
    assert max(batches) <= perturb.INPUT_SHARE * avail / row_in < runs
    cache_row = perturb.CACHE_ROW_BYTES + 4 * ad.num_classes
    assert 0 < len(ad.cache.store) <= perturb.CACHE_SHARE * avail / cache_row < runs


def test_the_cache_bound_follows_the_free_memory(monkeypatch):
    """2^20 rows of a 1000-class model (about 5 GiB) are kept only where four times that is free; a GPU's free
    memory bounds the logits kept there too."""
    monkeypatch.setattr(perturb, "available_memory", lambda device=None: 64 << 30)
    assert perturb.cache_rows(1000) == perturb.CACHE_MAX_ROWS
    monkeypatch.setattr(perturb, "available_memory", lambda device=None: 8 << 30)
    n = perturb.cache_rows(1000)
    assert n * (perturb.CACHE_ROW_BYTES + 4000) <= perturb.CACHE_SHARE * (8 << 30) and n < perturb.CACHE_MAX_ROWS
    # rows already held count as memory the cache may use, not as free memory lost
    assert perturb.cache_rows(1000, held=n) > n
    monkeypatch.setattr(perturb, "available_memory",
                        lambda device=None: (1 << 30) if torch.device(device or "cpu").type == "cuda" else 64 << 30)
    assert perturb.cache_rows(1000, "cuda:0") * 4000 <= perturb.CACHE_SHARE * (1 << 30)


# ------------------------------------------------------------------------------------------ explain_batch_size
def test_explain_batch_size_is_bounded_by_the_free_memory(monkeypatch):
    """``explain_batch_size=100000`` with 20,000 samples: at most what fits in HOST_SHARE of the available
    memory, with a note saying so; a size that fits is taken as given."""
    ad = small_component("hf_vit_tiny").create()
    monkeypatch.setattr(R, "available_host_bytes", lambda: 1 << 30)
    got, note = R.explain_batch(ad, 100000, torch.device("cpu"), 20000)
    assert got == int(R.HOST_SHARE * (1 << 30) // R.held_bytes(ad, 1)) and got < 20000
    assert "explain_batch_size=100000" in note and f"using {got}" in note
    assert R.explain_batch(ad, 10, torch.device("cpu"), 20000) == (10, "")
    # every method arm adds its explanations and the metrics' working copies: six arms, fewer samples
    six, _ = R.explain_batch(ad, 100000, torch.device("cpu"), 20000, arms=6)
    assert six == int(R.HOST_SHARE * (1 << 30) // R.held_bytes(ad, 6)) and six < got / 3


def test_the_runner_holds_no_more_samples_than_the_memory_rule_allows(tmp_path, monkeypatch):
    """A run with ``explain_batch_size=65536`` (the top of the range) never hands more samples at once to the
    explainers than the memory rule allows, and still explains every sample."""
    from xaibench.run.runner import Runner

    ad = small_component("hf_vit_tiny").create()
    bound = 3
    per = R.held_bytes(ad, 2)  # two arms
    monkeypatch.setattr(R, "available_host_bytes", lambda: int((bound + 0.5) * per / R.HOST_SHARE))
    exp = {"name": "t", "benchmarks": [{"model": "hf_vit_tiny", "dataset": "synthetic_image"}],
           "methods": ["attention", "control_random"], "metrics": ["localisation"]}
    r = Runner(make_cfg(exp, n_samples=8, explain_batch_size=65536), tmp_path / "run")
    sizes = []
    run_batch = r._run_batch
    r._run_batch = lambda base, adapter, explainer, evaluator, ms, samples, *a: (
        sizes.append(len(samples)) or run_batch(base, adapter, explainer, evaluator, ms, samples, *a))
    r.run()
    assert sum(sizes) == 8 and max(sizes) == bound


def test_a_traced_batch_leaves_nothing_behind():
    """A traced pass with gradients (Chefer, AttnLRP, ...) frees its records once the trace is dropped: before
    the fix each batch's attention, gradients and input stayed alive through a cycle in the autograd graph, so
    the run's memory grew with every batch (about 1 MB a sample on the synthetic ViT) however small the
    batches."""
    ad = small_component("hf_vit_tiny").create()
    x = torch.rand(2, *ad.input_shape)

    def live():
        gc.collect()
        with warnings.catch_warnings():  # walking every object touches deprecated module attributes
            warnings.simplefilter("ignore")
            return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor) and o.requires_grad)

    t = ad.trace(x, target=0, attentions=True, grads=True)
    assert t.attentions and t.attentions[0].grad is not None
    del t
    before = live()
    for _ in range(3):
        t = ad.trace(x, target=0, attentions=True, grads=True)
        del t
    assert live() == before


# ------------------------------------------------------------------------------------------ SHAP n_samples
SHAP_HUGE = {"config": "shap", "n_samples": 10 ** 7, "budget": "allow"}


def test_shap_with_ten_million_coalitions_is_refused_at_plan_time(tmp_path, monkeypatch):
    """``{config: shap, n_samples: 10000000, budget: allow}``: the run stops before any sample is explained
    (no arm, not even the cheap one listed first), naming the parameter, the memory it would need and what
    fits."""
    from xaibench.methods import _perturbation
    from xaibench.run import stages
    from xaibench.run.runner import Runner

    monkeypatch.setattr(_perturbation, "available_memory", lambda device=None: 8 << 30)

    def boom(*a, **k):
        raise AssertionError("a sample was explained")

    monkeypatch.setattr(stages.Explainer, "explain", boom)
    exp = {"name": "t", "benchmarks": [{"model": "hf_vit_tiny", "dataset": "synthetic_image"}],
           "methods": ["attention", SHAP_HUGE], "metrics": ["localisation"]}
    with pytest.raises(UserError, match=r"method\.n_samples=10000000 .* \d+\.\d GiB .*at most about \d+ fits"):
        Runner(make_cfg(exp, n_samples=2), tmp_path / "run").run()
    assert not (tmp_path / "run" / "rows.jsonl").exists() or not (tmp_path / "run" / "rows.jsonl").read_text()


def test_shap_check_fit_states_the_memory_it_would_need(monkeypatch):
    """The plan-time check itself: refused with less memory, accepted with enough (the same settings)."""
    from xaibench.methods import _perturbation

    ad = small_component("hf_vit_tiny").create()
    m = methods.create("shap", n_samples=10 ** 7, budget="allow", seed=0)
    monkeypatch.setattr(_perturbation, "available_memory", lambda device=None: 8 << 30)
    with pytest.raises(UserError, match=r"would need about \d+\.\d GiB"):
        m.check_fit(ad)
    monkeypatch.setattr(_perturbation, "available_memory", lambda device=None: 1 << 50)
    m.check_fit(ad)
