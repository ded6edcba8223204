"""What a comparison with published numbers compares (xaibench/analysis/reference.py, issue 19 points 10-12).

Hand-built runs (summary, provenance.json, per-sample results) against hand-written reference tables: every
reason a row is not comparable (the weights' sha256, the architecture, an accuracy at chance, a setting, the
dataset, the source), the binomial test against a hand computation, the terminal's short form and the report's
section, and the shipped reference tables (sources told apart, checkpoints declared, settings = the arms').
"""

import json
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from xaibench.analysis import reference as R
from xaibench.errors import UserError
from xaibench.run.plan import plan

H1, H2 = "a" * 64, "b" * 64
REF = pd.DataFrame([
    dict(model="m", dataset="d", method="a", metric="x", value=0.50, source="Paper A, table 2", cite="paper A",
         settings=json.dumps({"method": {"n_samples": 256}, "metric": {"k": 0.7}, "dataset": {"size": 224},
                              "run": {"target": "predicted"}}), comparable="yes", note="", verified=""),
    dict(model="m", dataset="d", method="a", metric="x", value=0.60, source="A blog post", cite="blog B",
         settings="", comparable="yes", note="", verified=""),
    dict(model="m", dataset="d", method="b", metric="x", value=0.30, source="Notebook C", cite="notebook C",
         settings="", comparable="no: their metric ranks attention entries", note="", verified=""),
    dict(model="m", dataset="d", method="lrp", metric="x", value=0.20, source="Paper A", cite="paper A",
         settings="", comparable="yes", note="", verified=""),
])


def ckpts(sha="unknown", **facts):
    row = dict(model="m", hub_id="org/m", weights_sha256=sha, frames="1", image_size="224", num_classes="400",
               grid="14x14", reason="not computed here (no hub)")
    row.update({k: str(v) for k, v in facts.items()})
    return pd.DataFrame([row])


def fake_run(correct=(True, True, False, True), digest=H1, image_size=224, classes=400, n_samples=256, k=0.7,
             size=224, target="predicted", label="m", dataset="d"):
    """(summary, provenance, results) of a run of model ``label`` with methods a, b and chefer on metric x."""
    params = {"a": {"n_samples": n_samples}, "b": {}, "chefer": {"layers": None}}
    summary = pd.DataFrame([dict(experiment="e", dataset=dataset, model=label, method=m, params=json.dumps(p),
                                 metric="x", mean=mean, std=0.1, n=len(correct))
                            for (m, p), mean in zip(params.items(), (0.55, 0.25, 0.4))])
    rows = [dict(experiment="e", dataset=dataset, model=label, method=m, params=json.dumps(params[m]),
                 sample_id=f"s{i}", metric="x", value=0.5, metric_params=json.dumps({"k": k}), correct=c)
            for i, c in enumerate(correct) for m in params]
    prov = {"config": {"target": target, "seed": 0},
            "components": [{"model": label, "dataset": dataset, "dataset_params": {"size": None},
                            "dataset_info": {"size": size},
                            "adapter": {"num_frames": 1, "image_size": image_size, "num_classes": classes,
                                        "layout": {"stages": [[image_size // 16, image_size // 16]]},
                                        "weights_sha256": digest, "expected_sha256": None}}]}
    return summary, prov, pd.DataFrame(rows)


def run_compare(ck, **kw):
    s, p, r = fake_run(**kw)
    return R.compare(s, REF.copy(), provenance=p, results=r, checkpoints=ck)


def row(t, method, cite=None):
    sel = t[(t.method == method) & ((t.cite == cite) if cite else True)]
    assert len(sel) == 1, sel
    return sel.iloc[0]


# ------------------------------------------------------------------------------------- the reasons
def test_verified_weights_and_matching_settings_compare():
    t = run_compare(ckpts(sha=H1))
    a = row(t, "a", "paper A")
    assert a["comparable"] and a["why_not"] == "" and a["checkpoint"].startswith("verified")
    assert a["accuracy"].startswith("3/4 (above chance 1/400") and a["diff"] == pytest.approx(0.55 - 0.50)
    assert row(t, "a", "blog B")["comparable"]
    # the source says it measures something else
    b = row(t, "b")
    assert not b["comparable"] and b["why_not"] == "source: their metric ranks attention entries"
    # ours without a published number, published without ours: never comparable, with the reason
    assert row(t, "chefer")["why_not"] == "no published number for method chefer"
    assert row(t, "lrp")["why_not"] == "not run: method lrp is not in this run"
    # comparable rows come first
    assert list(t["comparable"]) == sorted(t["comparable"], reverse=True)
    assert list(t.columns[:7]) == ["method", "metric", "mean", "published", "diff", "comparable", "why_not"]
    assert t.columns[-1] == "params"


def test_weights_that_are_not_the_declared_checkpoint_are_not_compared():
    t = run_compare(ckpts(sha=H2))
    a = row(t, "a", "paper A")
    assert not a["comparable"] and a["checkpoint"].startswith("differs")
    assert "the weights are not the published checkpoint (sha256 aaaaaaaaaaaa… vs bbbbbbbbbbbb…)" in a["why_not"]


@pytest.mark.parametrize("setting, text", [
    (dict(n_samples=32), "method a settings differ: n_samples=32 (published 256)"),
    (dict(k=0.5), "metric x settings differ: k=0.5 (published 0.7)"),
    (dict(size=64), "dataset settings differ: size=64 (published 224)"),
    (dict(target="label"), 'run settings differ: target="label" (published "predicted")'),
])
def test_a_protocol_setting_that_differs_is_named(setting, text):
    t = run_compare(ckpts(sha=H1), **setting)
    a = row(t, "a", "paper A")
    assert not a["comparable"] and a["why_not"] == text
    assert row(t, "a", "blog B")["comparable"]  # that source declares no setting
    # two groups that differ: two reasons
    t = run_compare(ckpts(sha=H1), n_samples=32, size=64)
    assert row(t, "a", "paper A")["why_not"] == ("method a settings differ: n_samples=32 (published 256) | dataset "
                                                 "settings differ: size=64 (published 224)")


def test_another_dataset_is_named():
    s, p, r = fake_run(dataset="d2")
    t = R.compare(s, REF.copy(), provenance=p, results=r, checkpoints=ckpts(sha=H1))
    assert "dataset: d2 (published on d)" in row(t, "a", "paper A")["why_not"]


def test_unknown_hash_falls_back_on_the_architecture_and_the_accuracy():
    # architecture differs from the published checkpoint's (a tiny model saved under the real name)
    t = run_compare(ckpts(), image_size=32)
    a = row(t, "a", "paper A")
    assert not a["comparable"]
    assert "model: not the published checkpoint's architecture: image_size 32 (published 224), grid [2, 2] " \
           "(published [14, 14])" in a["why_not"]
    # same architecture, accuracy above chance: compared, the checkpoint marked unverified with its reason
    t = run_compare(ckpts(), correct=(False, True, False, False))
    a = row(t, "a", "paper A")
    assert a["comparable"] and a["checkpoint"] == "unverified: published sha256 unknown (not computed here (no hub))"
    # same architecture, accuracy at chance: random weights saved under the published name are never compared
    t = run_compare(ckpts(), correct=(False,) * 4)
    assert not t["comparable"].any()
    assert "model: accuracy 0/4 is not above chance (1/400; binomial p = 1): untrained weights?" in \
        row(t, "a", "paper A")["why_not"]
    text = R.format_comparison(t)
    assert text.startswith("!! WARNING: m classified 0/4 (not above chance 1/400: binomial p = 1) of the evaluated d")
    assert "its weights look untrained or are not the published checkpoint" in " ".join(text.split())
    assert "comparable: none of the 4 published numbers" in text
    # no labelled sample and no known hash: the weights cannot be checked
    t = run_compare(ckpts(), correct=(None,) * 4)
    assert not row(t, "a", "paper A")["comparable"] and row(t, "a", "paper A")["accuracy"] == "no labelled sample"
    assert "its weights cannot be checked" in row(t, "a", "paper A")["why_not"]


def test_without_provenance_nothing_is_comparable():
    s, _, _ = fake_run()
    t = R.compare(s, REF.copy(), checkpoints=ckpts(sha=H1))
    assert not t["comparable"].any()
    assert "model: not checked (the run's provenance.json is missing)" in row(t, "a", "paper A")["why_not"]


@pytest.mark.parametrize("k, n, classes", [(0, 4, 400), (1, 4, 400), (1, 2, 4), (2, 4, 4), (3, 3, 10), (5, 40, 10)])
def test_binomial_p_is_the_upper_tail(k, n, classes):
    p0 = 1 / classes
    by_hand = sum(stats.binom.pmf(j, n, p0) for j in range(k, n + 1))  # P(X >= k)
    assert R.binomial_p(k, n, p0) == pytest.approx(by_hand, rel=1e-9, abs=1e-15)
    if (k, n, classes) == (1, 4, 400):
        assert R.binomial_p(k, n, p0) == pytest.approx(1 - (399 / 400) ** 4)


def test_accuracy_counts_each_sample_once_and_leaves_out_unlabelled_ones():
    r = pd.DataFrame(dict(model="m", dataset="d", sample_id=["s0", "s0", "s1", "s1", "s2", "s3"],
                          correct=[True, True, False, False, None, "true"]))
    assert R.accuracy(r) == {("m", "d"): (2, 3)}


# ------------------------------------------------------------------------------------- terminal and report
def substitute_run():
    """A substitute (hf_timesformer_tiny, random weights) on staa_paper: every row is ours only or published
    only."""
    s, p, r = fake_run(label="hf_timesformer_tiny", dataset="kinetics400_staa", correct=(False,) * 4)
    metrics = ["staa_faithfulness", "staa_monotonicity", "staa_monotonicity_tau", "faithfulness_correlation",
               "explain_time_s", "eval_time_s", "n_forward", "n_backward", "explain_peak_mem_mb", "eval_n_forward",
               "staa_faithfulness_tie_se", "tie_se", "tau_tie_se"]
    methods = ["staa_raw", "staa", "shap", "lime", "gradcam", "rollout", "chefer"]
    s = pd.DataFrame([dict(model="hf_timesformer_tiny", dataset="kinetics400_staa", method=m,
                           params=json.dumps({"a_long_parameter_name": "x" * 80}), metric=x, mean=0.5, std=0.1, n=4)
                      for m in methods for x in metrics])
    return R.compare(s, R.reference_path("staa_paper"), provenance=p, results=r)


def test_the_terminal_shows_a_short_comparison():
    t = substitute_run()
    assert len(t) == 91 + 20 and not t["comparable"].any()
    text = R.format_comparison(t)
    lines = text.splitlines()
    assert max(map(len, lines)) <= 120 and len(lines) <= 14, text
    assert "comparable: none of the 20 published numbers" in text
    assert "not compared: 91 of our rows have no published number:" in text
    assert "91 x no published number for model hf_timesformer_tiny (published: pretrained_timesformer_k400)" in text
    assert "20 x not run: model pretrained_timesformer_k400 is not in this run" in text
    assert "a substitute" in text and "WARNING" in text


def staa_paper_run(correct=(True, True, False, True)):
    """pretrained_timesformer_k400 with the published architecture, above chance, on the protocol's settings."""
    ref = R.read_reference(R.reference_path("staa_paper"))
    arms = {c.label: c for c in plan_of("staa_paper").methods}
    metrics = sorted(set(ref["metric"]))
    s = pd.DataFrame([dict(model="pretrained_timesformer_k400", dataset="kinetics400_staa", method=m,
                           params=json.dumps(created_params(arms[m])), metric=x, mean=0.8, std=0.1, n=len(correct))
                      for m in sorted(set(ref["method"])) for x in metrics])
    _, p, r = fake_run(label="pretrained_timesformer_k400", dataset="kinetics400_staa", correct=correct)
    p["components"][0]["adapter"].update(num_frames=8)
    p["components"][0]["dataset_info"] = {"split": "val", "sampling": "first", "frames": 8, "size": 224,
                                          "resize": 224}
    mp = {x: json.dumps({"k": 0.7, "ratios": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9], "baseline": "zero"})
          for x in metrics}
    r = pd.DataFrame([dict(model="pretrained_timesformer_k400", dataset="kinetics400_staa", method=m,
                           sample_id=f"s{i}", metric=x, metric_params=mp[x], correct=c)
                      for i, c in enumerate(correct) for m in set(ref["method"]) for x in metrics])
    return R.compare(s, R.reference_path("staa_paper"), provenance=p, results=r)


def test_the_two_published_staa_faithfulness_numbers_are_told_apart_by_their_source():
    t = staa_paper_run()
    both = t[(t.method == "staa") & (t.metric == "staa_faithfulness")]
    assert sorted(both["published"]) == [0.844, 0.87] and both["comparable"].all()
    assert both["cite"].nunique() == 2
    text = R.format_comparison(t)
    line = {v: next(ln for ln in text.splitlines() if ln.startswith("staa ") and R.fmt_value(v) in ln)
            for v in (0.844, 0.87)}
    assert "STAA paper (arXiv 2411.00630), recalled" in line[0.844]
    assert "xaiport.com blog" in line[0.87]
    flat = " ".join(text.split())
    assert "checkpoint: unverified: published sha256 unknown" in flat
    assert f"accuracy 3/4 (above chance 1/400: binomial p = {R.binomial_p(3, 4, 1 / 400):.2g})" in flat
    # the comparable rows come first in the terminal, then the counts of the others
    assert text.index("comparable: ") < text.index("not comparable: ")
    # the notebook's numbers are beside ours but measure something else
    raw = t[(t.method == "staa_raw") & (t.metric == "staa_faithfulness")].iloc[0]
    assert not raw["comparable"] and raw["why_not"].startswith("source: their faithfulness and monotonicity rank")


class _Table(HTMLParser):
    """The header cells and the <details> of the published-numbers table."""

    def __init__(self):
        super().__init__()
        self.inside, self.cell, self.heads, self.details, self.alerts, self._t = False, None, [], 0, [], None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table" and "published" in (a.get("class") or ""):
            self.inside = True
        if self.inside and tag == "th":
            self.cell = ""
        if self.inside and tag == "details":
            self.details += 1
        if a.get("role") == "alert":
            self._t = ""

    def handle_endtag(self, tag):
        if tag == "table":
            self.inside = False
        if tag == "th" and self.cell is not None:
            self.heads.append(self.cell.strip())
            self.cell = None
        if tag == "p" and self._t is not None:
            self.alerts.append(self._t)
            self._t = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data
        if self._t is not None:
            self._t += data


def test_report_section_puts_the_numbers_first_and_folds_the_parameters(tmp_path):
    from xaibench.analysis.report import write_report

    t = substitute_run()
    run = tmp_path / "run"
    run.mkdir()
    pd.DataFrame([dict(experiment="e", dataset="kinetics400_staa", model="hf_timesformer_tiny", method="staa",
                       params="{}", metric="staa_faithfulness", mean=0.5, std=0.1, n=4, higher_is_better=True)]
                 ).to_csv(run / "summary.csv", index=False)
    t.to_csv(run / "reference_comparison.csv", index=False)
    sec = R.report_section(pd.read_csv(run / "reference_comparison.csv"))
    assert sec["columns"][:6] == ["method", "metric", "ours", "published", "diff", "comparable"]
    assert sec["warnings"] and sec["warnings"][0].startswith("WARNING: hf_timesformer_tiny")
    assert any("91 of our rows without a published number" in s for s in sec["summary"])
    html = write_report(run).read_text()
    p = _Table()
    p.feed(html)
    assert p.heads[:6] == ["method", "metric", "ours", "published", "diff", "comparable"]
    assert p.heads[-1] == "parameters" and p.details == 91  # every row's params, folded
    assert p.alerts and "0/4 (not above chance 1/400" in p.alerts[0]
    # an earlier version's table (no comparable column) still renders, said to be unchecked
    old = pd.DataFrame([dict(model="m", dataset="d", method="a", metric="x", mean=0.61, published=0.6295,
                             diff=-0.0195, status="both", source="Chefer et al. 2021")])
    sec = R.report_section(old)
    assert sec["columns"][:5] == ["method", "metric", "ours", "published", "diff"]
    assert sec["summary"] == ["written by an earlier version: comparability not checked"]


# ------------------------------------------------------------------------------------- the shipped tables
def plan_of(name):
    from test_protocol_settings import experiment_cfg

    return plan(experiment_cfg(name), {})


def created_params(comp):
    import dataclasses

    if "seed" in comp.params and comp.params["seed"] is None:
        comp = dataclasses.replace(comp, params={**comp.params, "seed": 0})
    return comp.create().params()


@pytest.mark.parametrize("name", ["staa_paper", "stdnorm_paper"])
def test_shipped_reference_tables_say_what_they_compare(name):
    ref = R.read_reference(R.reference_path(name))
    assert (ref["cite"].str.len().between(8, 60)).all()
    # two published numbers of one key are told apart by their short source
    for key, g in ref.groupby(["model", "method", "metric"]):
        assert g["cite"].nunique() == len(g), key
    assert ref["comparable"].str.fullmatch(r"yes|no: .{20,}").all()
    # every model has a declared checkpoint; an unknown hash has its reason
    ck = R.read_checkpoints(R.checkpoints_path(name))
    assert set(ref["model"]) <= set(ck["model"])
    for _, c in ck.iterrows():
        assert c["weights_sha256"] == "unknown" and len(c["reason"]) > 40 and c["hub_id"]
    # the protocol arms of the experiment run the settings the sources declare (so a faithful run compares)
    arms = {c.label: c for c in plan_of(name).methods}
    for _, r in ref.iterrows():
        s = json.loads(r["settings"]) if r["settings"] else {}
        if r["method"] in arms and s.get("method"):
            got = created_params(arms[r["method"]])
            assert {k: got.get(k, "(absent)") for k in s["method"]} == s["method"], (r["method"], r["cite"])
    data = next(d for _, d in plan_of(name).benchmarks).params
    for _, r in ref.iterrows():
        s = json.loads(r["settings"]) if r["settings"] else {}
        for k, v in (s.get("dataset") or {}).items():
            assert data.get(k) in (v, None), (k, v)  # None: the model's own (224 for the published checkpoints)


def test_a_shipped_protocol_run_compares_where_the_sources_allow():
    t = staa_paper_run()
    comp = t[t.comparable]
    # the paper's and the blog's numbers compare; the notebook's are of another metric, model or machine
    assert set(comp["cite"].str.split(",").str[0]) == {"STAA paper (arXiv 2411.00630)", "xaiport.com blog"}
    assert len(comp) == 11
    assert not t[t.cite.str.startswith("VideoXAI")]["comparable"].any()


def test_bad_reference_and_checkpoint_tables_are_user_errors(tmp_path):
    bad = tmp_path / "r.csv"
    REF.assign(settings='{"methods": {}}').to_csv(bad, index=False)
    with pytest.raises(UserError, match="settings must map method, metric, dataset, run"):
        R.read_reference(bad)
    REF.assign(comparable="maybe").to_csv(bad, index=False)
    with pytest.raises(UserError, match="'yes' or 'no: <why>'"):
        R.read_reference(bad)
    ck = tmp_path / "checkpoints.csv"
    ckpts(sha="1234").to_csv(ck, index=False)
    with pytest.raises(UserError, match="64 hex digits or 'unknown'"):
        R.read_checkpoints(ck)
    ckpts(reason="").to_csv(ck, index=False)
    with pytest.raises(UserError, match="without a reason"):
        R.read_checkpoints(ck)
    np.testing.assert_array_equal(R.read_checkpoints(tmp_path / "absent.csv").columns, R.CHECKPOINT_COLUMNS)
