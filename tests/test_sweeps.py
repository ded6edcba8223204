"""Sweeps as results: one merged table per sweep whose marks compare the competing points (never across
models), arms shared by points taken once, fingerprints compared before merging, and the merged tables never
written into a run folder.  Hand-made run folders (tests/sweep_fixtures.py); the statistics are those of
xaibench.analysis.results / stats on the same per-sample values held in one run."""

import json

import numpy as np
import pandas as pd
import pytest

from sweep_fixtures import (FP, STAA, arm_rows, control_rows, lambda_sweep, make_point, noisy, staa_params)
from xaibench.analysis import merge as M
from xaibench.analysis.results import summarise, to_frame

KEY = ["model", "method", "params", "metric"]


def _marks(summary):
    s = summary[summary["metric_kind"] == "quality"]
    return {(r["model"], r["method"], r["params"]): ("" if pd.isna(r["best"]) else r["best"]) for _, r in s.iterrows()}


@pytest.mark.parametrize("scoped", [True, False])
def test_lambda_sweep_marks_compare_the_points(tmp_path, scoped):
    sweep = lambda_sweep(tmp_path / "sweep", scoped=scoped)
    m = M.merge_runs([sweep])
    assert m.swept == ["method.lambda"] and m.contexts == []
    s = m.summary
    q = s[s["metric_kind"] == "quality"]
    # one row per arm: staa at three lambdas, staa_raw and rollout once each, four controls
    assert len(q) == 3 + 2 + 4 and not q.duplicated(KEY).any()
    assert sorted(q.loc[q["method"] == STAA, "method.lambda"]) == [0, 1, 2]
    assert q.loc[q["method"] != STAA, "method.lambda"].isna().all()  # they do not take lambda
    # the marks compare every arm of the sweep: lambda=2 is the one best, nothing else is marked
    marks = _marks(s)
    assert marks[("vit", STAA, staa_params(2.0))] == "best"
    assert sum(v == "best" for v in marks.values()) == 1 and sum(v == "tied" for v in marks.values()) == 0
    assert (q["valid"] == "valid").all()
    # the same as one run holding every arm (the reference: results.summarise on the pooled rows)
    pooled = pd.concat([pd.read_parquet(p / "results.parquet") for p in sorted(sweep.iterdir())])
    ref = summarise(to_frame(pooled.drop_duplicates(["model", "method", "params", "metric", "sample_id"])
                             .to_dict("records")))
    got = s.set_index(KEY).sort_index()
    ref = ref.set_index(KEY).sort_index()
    assert list(got.index) == list(ref.index)
    for c in ("mean", "std", "ci_low", "ci_high", "effect"):
        np.testing.assert_allclose(got[c].astype(float), ref[c].astype(float), rtol=1e-12, equal_nan=True)
    assert list(got["best"].fillna("")) == list(ref["best"].fillna(""))
    # per point (what each point's own summary says) the lambda=0 point marks staa_raw / rollout instead
    own = pd.read_csv(sweep / "0_method.lambda=0" / "summary.csv")
    assert own.loc[own["method"] == "rollout", "best"].eq("best").any()
    # the merged comparisons and ranking hold every arm of the benchmark
    assert set(m.tables["ranking"]["method"]) == {STAA, "staa_raw", "rollout"}
    assert len(m.tables["ranking"]) == 5
    res = m.results
    assert len(res[(res["method"] == "rollout") & (res["metric"] == "iou")]) == 16  # not once per point
    assert not m.warnings


def test_points_that_disagree_on_a_shared_arm_are_reported(tmp_path):
    sweep = lambda_sweep(tmp_path / "sweep", scoped=False, shared_values=lambda i: 0.01 * i)
    m = M.merge_runs([sweep])
    assert any("differ" in w and "first point's are kept" in w for w in m.warnings)
    roll = m.results[(m.results["method"] == "rollout") & (m.results["metric"] == "iou")]
    np.testing.assert_allclose(sorted(roll["value"]), sorted(noisy(0.5, 16, seed=21)))  # point 0's


def test_model_sweep_keeps_models_apart(tmp_path):
    """``-m model=vit,swin``: separate statistics per model; each model's best is its own."""
    sweep = tmp_path / "sweep"
    for i, (model, best) in enumerate((("vit", STAA), ("swin", "rollout"))):
        rows = control_rows(model=model)
        for method, params in ((STAA, staa_params(1.0)), ("rollout", json.dumps({"layers": None}))):
            rows += arm_rows(method, params, noisy(0.9 if method == best else 0.4, seed=i), model=model)
        make_point(sweep / f"{i}_model={model}", [f"model={model}"], rows)
    m = M.merge_runs([sweep])
    assert m.swept == ["model"] and m.contexts == ["model"]
    assert m.summary.columns[0] == "model" and list(m.summary.columns).count("model") == 1  # the swept column
    assert list(m.results.columns).count("model") == 1
    marks = _marks(m.summary)
    assert marks[("vit", STAA, staa_params(1.0))] == "best" and marks[("vit", "rollout", '{"layers": null}')] == ""
    assert marks[("swin", "rollout", '{"layers": null}')] == "best" and marks[("swin", STAA, staa_params(1.0))] == ""
    assert set(m.tables["validity"]["model"]) == {"vit", "swin"}
    assert set(m.tables["comparisons"]["model"]) == {"vit", "swin"}  # never a comparison across the models
    assert (m.tables["comparisons"]["best_method"].to_numpy() != m.tables["comparisons"]["method"]).all()


def test_seed_sweep_is_a_context_with_its_own_statistics(tmp_path):
    sweep = tmp_path / "sweep"
    for seed in (0, 1):
        rows = control_rows(seed=seed) + arm_rows(STAA, staa_params(1.0), noisy(0.6, seed=seed))
        rows += arm_rows("rollout", "{}", noisy(0.5, seed=seed + 5))
        for r in rows:
            r["seed"] = seed
        make_point(sweep / f"{seed}_seed={seed}", [f"seed={seed}"], rows)
    m = M.merge_runs([sweep])
    assert m.contexts == ["seed"]
    s = m.summary[m.summary["metric_kind"] == "quality"]
    assert s.columns[0] == "seed" and len(s) == 2 * 6  # each arm once per seed, not pooled
    assert sorted(m.tables["ranking"]["seed"]) == [0, 0, 1, 1]


# ------------------------------------------------------------------ fingerprints and the output folder
def _shards(root, fp1):
    a = make_point(root / "shard0", ["shard=0/2"], arm_rows(STAA, staa_params(1.0), noisy(0.5, 8)))
    rows = arm_rows(STAA, staa_params(1.0), noisy(0.5, 8, seed=3))
    for r in rows:
        r["sample_id"] = "t" + r["sample_id"]
    b = make_point(root / "shard1", ["shard=1/2"], rows, fingerprint=fp1)
    return a, b


def _fp(**changes):
    fp = json.loads(json.dumps(FP))
    for path, value in changes.items():
        node = fp
        keys = path.split("__")
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
    return fp


@pytest.mark.parametrize("change, part, words", [
    ({"code__source_sha256": "9" * 64, "code__git_revision": "b" * 40,
      "code__files": dict(FP["code"]["files"], **{"xaibench/metrics/localisation.py": "7" * 64})},
     "code", ["1 source file(s) differ: xaibench/metrics/localisation.py", "aaaaaaaaaaaa -> bbbbbbbbbbbb"]),
    ({"versions__torch": "2.14.0"}, "versions", ["torch 2.14.1 -> 2.14.0"]),
    ({"weights__vit": "0" * 64}, "weights", ["weights of model vit differ", "dddddddddddd -> 000000000000"]),
    ({"data__synthetic_image|vit__sample_ids_sha256": "0" * 64}, "data",
     ["data of benchmark synthetic_image|vit", "sample_ids_sha256"]),
])
def test_merge_refuses_shards_computed_under_other_conditions(tmp_path, capsys, change, part, words):
    a, b = _shards(tmp_path, _fp(**change))
    before = (a / "summary.csv").read_bytes()
    assert M.main([str(a), str(b), "--out", str(tmp_path / "merged")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("xaibench-merge: error: the runs were computed under different conditions")
    assert f"{part}: shard0 vs shard1" in err and all(w in err for w in words), err
    assert f"--allow-change {part}" in err and "Traceback" not in err
    assert not (tmp_path / "merged").exists() and (a / "summary.csv").read_bytes() == before
    # accepted on request, and recorded
    assert M.main([str(a), str(b), "--out", str(tmp_path / "merged"), "--allow-change", part]) == 0
    rec = json.loads((tmp_path / "merged" / "merge.json").read_text())
    assert rec["allowed_changes"] and all(x.startswith(f"{part}: shard0 vs shard1") for x in rec["allowed_changes"])
    assert "accepted (--allow-change)" in capsys.readouterr().err


def test_other_model_or_data_settings_may_change_weights_and_data(tmp_path):
    """A swept model parameter gives other weights by design: compared only between equal settings."""
    fp = _fp(weights__vit="0" * 64)
    fp["config"]["benchmarks"][0][1] = {"num_layers": 4}
    a, b = _shards(tmp_path, fp)
    assert M.merge_runs([a, b]).allowed == []


def test_merge_never_writes_into_a_run_folder(tmp_path, capsys):
    a, b = _shards(tmp_path, None)
    files = {p.name: p.read_bytes() for p in a.iterdir() if p.is_file()}
    for out in (a, a / "merged"):
        assert M.main([str(a), str(b), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"xaibench-merge: error: --out {out} is") and "run folder" in err
        assert len(err.splitlines()) == 1
    assert {p.name: p.read_bytes() for p in a.iterdir() if p.is_file()} == files
    assert not (a / "merged").exists()
    other = make_point(tmp_path / "other", ["seed=3"], arm_rows(STAA, "{}", noisy(0.5, 4)))
    assert M.main([str(a), str(b), "--out", str(other)]) == 2
    assert "is a run folder" in capsys.readouterr().err
    assert M.main([str(a), str(b), "--out", str(tmp_path / "merged")]) == 0  # and merging again works
    assert M.main([str(a), str(b), "--out", str(tmp_path / "merged")]) == 0
