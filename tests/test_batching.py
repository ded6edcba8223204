"""Throughput features keep the results: batched explanations, shared traces, the output cache, data-loading
workers, sharding; and the GPU paths (run only where a CUDA GPU is present)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from run_config import make_cfg

from xaibench import methods, models
from xaibench.run.runner import Runner
from xaibench.datasets import create as make_dataset

BATCHABLE = [("attention", {}), ("rollout", {}), ("chefer", {}), ("stdnorm", {}), ("gradcam", {}),
             ("gradcam", {"source": "attention"}), ("staa", {"enhance": True}), ("staa", {"layers": 2})]


@pytest.fixture(scope="module")
def video_and_image():
    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2)
    vid = models.create("hf_timesformer", num_frames=4, seed=3, **small)
    swin = models.create("hf_swin", embed_dim=16, num_heads=(2, 2), seed=3)
    return vid, swin


@pytest.mark.parametrize("name,kw", BATCHABLE)
def test_batched_explanations_equal_one_at_a_time(video_and_image, name, kw):
    for adapter in video_and_image:
        g = torch.Generator().manual_seed(0)
        xs = torch.rand(3, *adapter.input_shape, generator=g)
        targets = [0, 2, 1]
        m = methods.create(name, **kw)
        assert m.batchable
        batched = m.explain_batch(adapter, xs, targets)
        for x, t, b in zip(xs, targets, batched):
            one = m.explain(adapter, x, t)
            # the same arithmetic; only the model's batched matrix products round differently
            torch.testing.assert_close(b.volume, one.volume, rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(b.frame_scores, one.frame_scores, rtol=1e-4, atol=1e-6)


def test_one_trace_serves_several_parameter_values(video_and_image):
    """STAA arms that differ in lambda / layers share one trace and give what each gives alone."""
    from xaibench.methods.base import merge_requests, trace_kwargs

    adapter = video_and_image[0]
    xs = torch.rand(2, *adapter.input_shape, generator=torch.Generator().manual_seed(1))
    arms = [methods.create("staa", enhance=True, layers=k, **{"lambda": lam}) for lam in (0.0, 2.0) for k in (1, 2)]
    req = merge_requests(a.trace_request(adapter) for a in arms)
    with adapter.counting() as n:
        trace = adapter.trace(xs, target=[1, 1], **trace_kwargs(req))
    assert n["forward"] == 2  # one pass per sample for all four arms
    for a in arms:
        shared = a.explain_trace(adapter, trace)
        alone = a.explain_batch(adapter, xs, [1, 1])
        for s, o in zip(shared, alone):
            torch.testing.assert_close(s.volume, o.volume)


def test_output_cache_evaluates_a_mask_once():
    from xaibench.perturb import Perturber, feature_ids

    adapter = models.create("hf_vit", hidden_size=32, num_hidden_layers=1, num_attention_heads=2, seed=0)
    x = torch.rand(*adapter.input_shape, generator=torch.Generator().manual_seed(0))
    ids = feature_ids((1, 64, 64), 16)
    keep = torch.rand(6, 16, generator=torch.Generator().manual_seed(1)) > 0.5
    p = Perturber(adapter, x, ids, torch.zeros_like(x), batch_size=4, key="k")
    with adapter.counting() as n:
        a = p.logits(keep)
        b = p.logits(torch.cat([keep, keep[:2]]))
    assert n["forward"] == 6 and adapter.cache.hits == 8
    torch.testing.assert_close(a, b[:6])
    torch.testing.assert_close(a, Perturber(adapter, x, ids, torch.zeros_like(x), batch_size=4).logits(keep))


def _cfg(experiment, **top):
    return make_cfg(experiment, n_samples=5, **top)


EXP = {"name": "t", "benchmarks": [{"model": "hf_vit_tiny", "dataset": "synthetic_image"}],
       "methods": ["attention", "chefer", {"config": "shap", "n_samples": 64, "cell": 16}],
       "metrics": [{"config": "faithfulness_correlation", "nr_runs": 10}, "localisation", "segmentation"]}


def _rows(out):
    df = pd.read_parquet(out / "results.parquet")
    df = df[~df.metric.isin(["explain_time_s", "eval_time_s", "explain_peak_mem_mb"])]
    return df.sort_values(["method", "sample_id", "metric"]).reset_index(drop=True)


def test_workers_and_explain_batch_size_keep_the_rows(tmp_path):
    Runner(_cfg(EXP), tmp_path / "a").run()
    Runner(_cfg(EXP, workers=2, explain_batch_size=3), tmp_path / "b").run()
    a, b = _rows(tmp_path / "a"), _rows(tmp_path / "b")
    pd.testing.assert_frame_equal(a.drop(columns="value"), b.drop(columns="value"))
    np.testing.assert_allclose(a.value, b.value, rtol=1e-4, atol=1e-5)


def test_shards_merged_give_the_rows_of_the_whole_run(tmp_path):
    from xaibench.analysis.merge import merge_runs

    Runner(_cfg(EXP), tmp_path / "whole").run()
    for i in range(3):
        Runner(_cfg(EXP, shard=f"{i}/3"), tmp_path / "shards" / f"s{i}").run()
    ids = [set(pd.read_parquet(tmp_path / "shards" / f"s{i}" / "results.parquet").sample_id) - {"__aggregate__"}
           for i in range(3)]
    assert not (ids[0] & ids[1]) and not (ids[1] & ids[2]) and sum(map(len, ids)) == 5
    # hydra would record the shard override; the stand-in says what merge needs to know
    for i in range(3):
        d = tmp_path / "shards" / f"s{i}" / ".hydra"
        d.mkdir()
        (d / "overrides.yaml").write_text(f"- shard={i}/3\n")
    merged = merge_runs([tmp_path / "shards"]).results
    whole = pd.read_parquet(tmp_path / "whole" / "results.parquet")
    key = ["method", "sample_id", "metric"]
    drop = ["explain_time_s", "eval_time_s", "explain_peak_mem_mb"]
    m = merged[~merged.metric.isin(drop)].sort_values(key).reset_index(drop=True)[whole.columns]
    w = whole[~whole.metric.isin(drop)].sort_values(key).reset_index(drop=True)
    norm = (lambda f: f.drop(columns="value").astype(object).where(f.drop(columns="value").notna(), None))
    pd.testing.assert_frame_equal(norm(m), norm(w), check_dtype=False)
    np.testing.assert_allclose(m.value, w.value, rtol=1e-9, atol=1e-12)  # aggregates recomputed over all shards


def test_provenance_records_passes_used_and_saved(tmp_path):
    Runner(_cfg(EXP), tmp_path / "r").run()
    prov = json.loads((tmp_path / "r" / "provenance.json").read_text())
    # faithfulness correlation draws one set of subsets per sample: the second and third method reuse them
    assert prov["passes"]["cache_hits"] >= 2 * 5 * 10
    assert prov["passes"]["forward"] > 0 and prov["forward_time_s"]["hf_vit_tiny"] > 0


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_gpu_run_matches_cpu(tmp_path, precision):
    Runner(_cfg(EXP), tmp_path / "cpu").run()
    Runner(_cfg(EXP, device="cuda", precision=precision), tmp_path / "gpu").run()
    a, b = _rows(tmp_path / "cpu"), _rows(tmp_path / "gpu")
    pd.testing.assert_frame_equal(a.drop(columns="value"), b.drop(columns="value"))
    tol = 1e-3 if precision == "fp32" else 0.1
    loc = a.metric.isin(["ap", "iou", "map"])
    np.testing.assert_allclose(a.value[loc], b.value[loc], atol=tol)


@cuda
def test_gpu_adapter_keeps_tensors_on_the_device():
    adapter = models.create("hf_vit", hidden_size=32, num_hidden_layers=2, num_attention_heads=2).to("cuda")
    x = torch.rand(2, *adapter.input_shape)
    tr = adapter.trace(x, attentions=True, grads=True, target=[0, 1])
    assert tr.logits.device.type == "cuda" and tr.attentions[0].grad.device.type == "cuda"
    e = methods.create("chefer").explain_batch(adapter, x.cuda(), [0, 1])
    assert e[0].volume.device.type == "cuda"


def test_cuda_request_without_a_gpu_is_a_clear_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    from xaibench.errors import UserError

    with pytest.raises(UserError, match="no CUDA GPU"):
        Runner(_cfg(EXP, device="cuda"), tmp_path / "r").run()


def test_batch_size_changes_metrics_only_by_float_rounding():
    """docs/metrics.md, "Batch size": logits within 1e-5 relative, faithfulness correlation within 1e-3."""
    from xaibench.metrics import create as make_metric
    from xaibench.metrics.base import EvalItem, evaluate_items

    for name, dname in (("vit_synth", "synthetic_image"), ("timesformer_synth", "synthetic_video")):
        adapter = models.create(name)
        s = make_dataset(dname, n_samples=1)[0]
        expl = methods.create("chefer").explain(adapter, s.x, int(s.label))
        logits = adapter.predict(s.x[None])[0]
        metric = make_metric("faithfulness_correlation", nr_runs=50)
        vals, outs = [], []
        for bs in (1, 7, 32):
            item = EvalItem(sample=s, method="chefer", explanation=expl, target=int(s.label), logits=logits,
                            rng=np.random.default_rng(0), shared_seed=(0, 1))
            vals.append(evaluate_items(metric, adapter, [item], batch_size=bs)[0]["faithfulness_correlation"])
            outs.append(adapter.predict(torch.stack([s.x] * 9), batch_size=bs))
        assert max(vals) - min(vals) <= 1e-3, (name, vals)
        for o in outs[1:]:
            torch.testing.assert_close(o, outs[0], rtol=1e-5, atol=1e-5)
