"""report.html (xaibench.analysis.report): structure, missing pieces, multirun, and a real browser."""

import base64
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from xaibench.analysis import report as R
from xaibench.analysis.gallery import Gallery

BENCHES = [("synthetic_video", "timesformer_synth"), ("synthetic_image", "vit_synth")]
METHODS = [("staa", {"lambda": 0.5, "layers": 1}), ("staa", {"lambda": 1.0, "layers": 1}),
           ("staa", {"lambda": 2.0, "layers": 1}), ("rollout", {"layers": None}), ("control_random", {"seed": 0})]
METRICS = [("insertion_auc", True), ("deletion_auc", False), ("iou", True), ("explain_time_s", False)]


def _summary() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for dataset, model in BENCHES:
        for metric, hib in METRICS:
            means = rng.uniform(0.2, 0.9, len(METHODS)) if metric != "explain_time_s" else \
                rng.uniform(0.01, 0.05, len(METHODS))
            for (method, params), mean in zip(METHODS, means):
                rows.append(dict(experiment="default", dataset=dataset, model=model, method=method,
                                 params=json.dumps(params, sort_keys=True), metric=metric, mean=mean, std=0.1, n=8,
                                 n_undefined=0, ci_low=mean - 0.05, ci_high=mean + 0.05, higher_is_better=hib,
                                 kind="control" if method.startswith("control") else "method",
                                 valid=not (metric == "iou" and model == "vit_synth"), best=""))
    s = pd.DataFrame(rows)
    # the hand-picked markers the page must show: rollout best and staa#1 tied on insertion_auc of the video model
    sel = (s["model"] == "timesformer_synth") & (s["metric"] == "insertion_auc")
    s.loc[sel & (s["method"] == "rollout"), ["mean", "ci_low", "ci_high", "best"]] = [0.951, 0.93, 0.97, "best"]
    s.loc[sel & (s["params"] == json.dumps({"lambda": 0.5, "layers": 1})), ["mean", "ci_low", "ci_high", "best"]] = \
        [0.932, 0.90, 0.96, "tied"]
    return s


def _sample(sid, T, seed):
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(T, 16, 16, dtype=torch.bool)
    mask[:, 4:10, 5:12] = True
    return SimpleNamespace(sample_id=sid, x=torch.rand(T, 3, 16, 16, generator=g), label=1, mask=mask,
                           frames=torch.tensor([t in (1, 2) for t in range(T)]) if T > 1 else None)


def _expl(T, seed):
    g = torch.Generator().manual_seed(seed)
    return SimpleNamespace(volume=torch.rand(T, 16, 16, generator=g), frame_scores=torch.rand(T, generator=g))


def make_run(path: Path, gallery=True, tables=True) -> Path:
    """A small run folder: every table the runner writes, and a gallery with one video and one image sample."""
    path.mkdir(parents=True, exist_ok=True)
    s = _summary()
    s.to_csv(path / "summary.csv", index=False)
    if tables:
        pd.DataFrame([dict(experiment="default", dataset="synthetic_image", model="vit_synth", metric="iou",
                           verdict="invalid", reason="the ground-truth control does not beat the random one")]
                     ).to_csv(path / "validity.csv", index=False)
        rk = s[s["metric"] != "explain_time_s"].copy()
        rk["mean_rank"] = rk.groupby(["dataset", "model", "metric"])["mean"].rank(ascending=False)
        rk.assign(n_samples=8, friedman_p=0.01)[["experiment", "dataset", "model", "metric", "method", "params",
                                                 "mean_rank", "n_samples", "friedman_p"]].to_csv(
            path / "ranking.csv", index=False)
        pd.DataFrame([dict(dataset="synthetic_video", model="timesformer_synth", metric="iou", method_a="staa",
                           method_b="rollout", p=0.2)]).to_csv(path / "comparisons.csv", index=False)
        pd.DataFrame([dict(model="vit_synth", dataset="synthetic_image", method="rollout", metric="miou",
                           mean=0.61, published=0.6295, diff=-0.0195, status="both", source="Chefer et al. 2021")]
                     ).to_csv(path / "reference_comparison.csv", index=False)
    prov = dict(created="2026-01-01T00:00:00+00:00", git_revision="abc123", seed=0, status="complete",
                versions={"python": "3.11", "torch": "2.14.1"}, device="cpu", wall_time_s=12.5,
                config={"experiment": {"name": "default"}}, forward_time_s={"timesformer_synth": 0.004})
    (path / "provenance.json").write_text(json.dumps(prov))
    if gallery:
        with Gallery(path / "gallery.h5", 1) as g:
            for (dataset, model), T in zip(BENCHES, (4, 1)):
                sample = _sample(f"{dataset}-0", T, 0)
                for i, label in enumerate(("staa#1", "rollout")):
                    g.add(dataset, model, sample, label, _expl(T, i))
    return path


class _Page(HTMLParser):
    """Tags with their attributes, section ids, and the text of the page."""

    def __init__(self):
        super().__init__()
        self.tags, self.text = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def _parse(html_text: str) -> _Page:
    p = _Page()
    p.feed(html_text)
    return p


def _decode(uri: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("run"))
    out = R.write_report(run)
    return out, out.read_text(encoding="utf-8")


def test_report_has_every_section_and_nothing_from_a_network(report):
    out, text = report
    assert out.name == "report.html"
    page = _parse(text)
    ids = {a.get("id") for _, a in page.tags}
    assert {"summary", "ranking", "cost", "ablations", "gallery", "published", "provenance"} <= ids
    assert "http://" not in text and "https://" not in text
    assert not [t for t, _ in page.tags if t in ("script", "link", "iframe", "object", "embed")]
    srcs = [a["src"] for t, a in page.tags if t == "img"]
    assert srcs and all(s.startswith("data:image/") for s in srcs)
    assert all(a["href"].startswith("#") for t, a in page.tags if t == "a")
    assert "@import" not in text and "url(" not in text


def test_gallery_video_is_animated_and_image_is_a_still(report):
    _, text = report
    srcs = [a["src"] for t, a in _parse(text).tags if t == "img"]
    gifs = [_decode(s) for s in srcs if s.startswith("data:image/gif")]
    # the video sample: its input and two methods, 4 frames each, bars beneath (taller than wide)
    assert len(gifs) == 3
    assert all(g.n_frames == 4 and g.size[1] > g.size[0] for g in gifs)
    stills = [_decode(s) for s in srcs if s.startswith("data:image/png")]
    assert len([im for im in stills if im.size == (16, 16)]) == 3  # the image sample's tiles, at its resolution
    tiles = [a for t, a in _parse(text).tags if t == "img" and "width" in a]
    assert len(tiles) == 6 and {a["width"] for a in tiles} == {"176"}  # shown enlarged 11 times
    assert [a["alt"] for a in tiles].count("staa#1") == 2 and [a["alt"] for a in tiles].count("rollout") == 2


def test_summary_table_marks_best_tied_controls_and_invalid(report):
    _, text = report
    video = text.split("default · synthetic_video · timesformer_synth", 1)[1].split("</table>", 1)[0]
    assert re.search(r'class="num best[^"]*"[^>]*><span class="m">0\.951</span>', video)
    assert re.search(r'class="num tied[^"]*"[^>]*><span class="m">0\.932</span>', video)
    assert '<tbody class="controls">' in video and "control_random" in video.split("controls", 1)[1]
    image = text.split("default · synthetic_image · vit_synth", 1)[1].split("</ol>", 1)[0]
    assert "✗<sup>1</sup>" in image and "iou: the ground-truth control does not beat the random one" in image
    assert "[0." in video  # intervals shown
    # the legend of the three staa settings
    assert "staa#3" in text and "lambda=2.0" in text


def test_ablation_curve_over_lambda_and_cost_relative_to_forward(report):
    _, text = report
    assert "staa: lambda" in text and "(0.5, 1.0, 2.0)" in text
    cost = text.split('id="cost"', 1)[1].split("</section>", 1)[0]
    assert "forward pass 0.004 s" in cost
    assert "Chefer et al. 2021" in text and "0.6295" in text
    assert "abc123" in text and "12.5" in text


def test_mean_ranks_from_the_summary_match_scipy():
    from scipy.stats import rankdata

    s = _summary()
    s = s[s["model"] == "timesformer_synth"]
    ranks = R.mean_ranks(R._prepare(s), None)
    for metric, hib in METRICS[:3]:
        m = s[s["metric"] == metric]
        ref = rankdata(-m["mean"] if hib else m["mean"])
        got = ranks[ranks["metric"] == metric]["rank"].to_numpy()
        np.testing.assert_array_equal(got, ref)
    assert "explain_time_s" not in set(ranks["metric"])


def test_ablations_find_one_parameter_at_a_time():
    rows = []
    for lam in (0.5, 1.0):
        for layers in (1, 2, 4):
            rows.append(dict(experiment="e", dataset="d", model="m", method="staa", metric="ap", mean=0.5,
                             higher_is_better=True, params=json.dumps({"lambda": lam, "layers": layers})))
    rows.append(dict(rows[0], method="rollout", params=json.dumps({"layers": 1})))
    found = {(a["method"], a["param"]): a["rows"] for a in R.ablations(R._prepare(pd.DataFrame(rows)))}
    assert set(found) == {("staa", "lambda"), ("staa", "layers")}
    assert sorted(set(found[("staa", "layers")]["rest"])) == ["lambda=0.5", "lambda=1.0"]  # one curve per lambda


def _tiny_summary(path: Path) -> Path:
    path.mkdir(parents=True)
    s = _summary()
    s[(s["model"] == "vit_synth") & (s["method"] != "staa")].to_csv(path / "summary.csv", index=False)
    return path


def test_missing_pieces_do_not_break_the_report(tmp_path):
    # only a summary, and a gallery file that is not HDF5
    only = _tiny_summary(tmp_path / "only_summary")
    (only / "gallery.h5").write_bytes(b"not hdf5")
    text = R.write_report(only).read_text()
    assert 'id="summary"' in text and 'id="gallery"' not in text and "no provenance.json" in text
    assert "gallery.h5 could not be read" in text
    # an interrupted run: rows.jsonl with a line cut by the interruption, no tables
    cut = tmp_path / "interrupted"
    cut.mkdir()
    rows = [dict(experiment="e", dataset="d", model="m", method="staa", params="{}", sample_id=f"s{i}",
                 metric="ap", value=v, higher_is_better=True) for i, v in enumerate((0.2, 0.4))]
    (cut / "rows.jsonl").write_text("".join(json.dumps({"kind": "sample", "key": [i], "rows": [r]}) + "\n"
                                            for i, r in enumerate(rows)) + '{"kind": "sam')
    text = R.write_report(cut).read_text()
    assert "computed from the finished samples in rows.jsonl" in text
    assert re.search(r'<span class="m">0\.300</span>', text)  # mean of 0.2 and 0.4


def test_multirun_folder_uses_merge_runs(tmp_path, monkeypatch):
    sweep = tmp_path / "sweep"
    summaries = []
    for i, lam in enumerate((0.5, 2.0)):
        run = make_run(sweep / str(i), gallery=(i == 0), tables=False)
        s = pd.read_csv(run / "summary.csv")
        s = s[s["params"] == json.dumps({"lambda": 1.0, "layers": 1})].copy()  # the run's own lambda
        s["params"] = json.dumps({"lambda": lam, "layers": 1})
        summaries.append(s.assign(**{"method.lambda": lam}))
        summaries.append(pd.read_csv(run / "summary.csv").query("method == 'rollout'").assign(**{"method.lambda": lam}))
    merged = pd.concat(summaries, ignore_index=True)
    calls = []

    def fake_merge_runs(dirs):
        calls.append(list(dirs))
        return SimpleNamespace(results=pd.DataFrame(), summary=merged, swept=["method.lambda"],
                               runs=pd.DataFrame({"path": [str(sweep / "0"), str(sweep / "1")],
                                                  "overrides": ["method.lambda=0.5", "method.lambda=2.0"]}))

    import xaibench.analysis.merge as M

    monkeypatch.setattr(M, "merge_runs", fake_merge_runs)
    text = R.write_report(sweep).read_text()
    assert calls == [[sweep]]
    assert "sweep of 2 runs over method.lambda" in text
    assert "staa: lambda" in text  # the swept values became an ablation
    # rollout did not use lambda: its two identical settings are one row, not rollout#1/#2
    assert "rollout#2" not in text and "staa#2" in text
    assert "method.lambda=0.5" in text  # the gallery and run list name the run


def test_multirun_with_the_real_merge(tmp_path):
    M = pytest.importorskip("xaibench.analysis.merge")
    from xaibench.analysis.results import to_frame

    sweep = tmp_path / "sweep"
    for i, lam in enumerate((0.5, 2.0)):
        run = sweep / str(i)
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "overrides.yaml").write_text(f"- method.lambda={lam}\n")
        rows = [dict(experiment="e", dataset="d", model="m", method="staa",
                     params=json.dumps({"lambda": lam}), sample_id=f"s{k}", metric="ap", value=lam / 4 + k / 10,
                     higher_is_better=True, seed=0) for k in range(3)]
        to_frame(rows).to_parquet(run / "results.parquet", index=False)
        (run / "provenance.json").write_text(json.dumps({"status": "complete", "seed": 0,
                                                         "config": {"experiment": {"name": "e"}}}))
    assert len(M.find_run_folders([sweep])) == 2
    text = R.write_report(sweep).read_text()
    assert "staa: lambda" in text and "staa#2" in text


def test_cli(tmp_path, capsys):
    assert R.main([str(tmp_path / "nope")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert R.main([str(tmp_path / "empty")]) == 2
    assert "holds no results" in capsys.readouterr().err
    run = _tiny_summary(tmp_path / "run")
    assert R.main([str(run), "-o", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").exists() and str(tmp_path / "r.html") in capsys.readouterr().out


# ------------------------------------------------------------------------------------------- browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(page: Path, shot: Path, profile: Path):
    """Headless Chromium renders ``page`` to ``shot``; returns its log (console messages are logged as CONSOLE)."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=1", "--window-size=1280,2400",
           f"--screenshot={shot}", page.resolve().as_uri()]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    return p.stdout + p.stderr


def _console_errors(log: str):
    """Console messages Chromium logged (errors and warnings of the page: failed loads, script errors)."""
    return [x for x in log.splitlines() if re.search(r"CONSOLE[(:]", x)]


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed")
def test_report_renders_in_chromium_without_console_errors(report, tmp_path):
    out, _ = report
    # first, a page with a console error: the log check must see it
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><p>x</p><script>console.error("deliberate-error")</script>'
                   "</body></html>")
    log = _chromium(bad, tmp_path / "bad.png", tmp_path / "profile0")
    assert any("deliberate-error" in x for x in _console_errors(log)), log[-3000:]
    shot = tmp_path / "report.png"
    log = _chromium(out, shot, tmp_path / "profile1")
    assert _console_errors(log) == []
    im = Image.open(shot)
    assert im.size == (1280, 2400) and shot.stat().st_size > 50_000
    # not a blank page: many distinct colours (tables, plots, heat maps)
    assert len(im.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 500


# ------------------------------------------------------------------------------------------- sweeps
def _sweep_report(folder: Path) -> str:
    return R.write_report(folder).read_text(encoding="utf-8")


def _method_sweep(root: Path) -> Path:
    """``xaibench -m method=staa,chefer,rollout``: one method per point, no controls (config-group sweep)."""
    from sweep_fixtures import arm_rows, make_point, noisy

    for i, method in enumerate(("staa", "chefer", "rollout")):
        make_point(root / f"{i}_method={method}", [f"method={method}"],
                   arm_rows(method, "{}", noisy(0.3 + 0.2 * i, seed=i)))
    return root


def _model_sweep(root: Path) -> Path:
    from sweep_fixtures import arm_rows, control_rows, make_point, noisy, staa_params

    for i, model in enumerate(("vit", "swin")):
        rows = control_rows(model=model) + arm_rows("staa", staa_params(1.0), noisy(0.6, seed=i), model=model)
        rows += arm_rows("rollout", "{}", noisy(0.5, seed=i + 3), model=model)
        make_point(root / f"{i}_model={model}", [f"model={model}"], rows)
    return root


def _list_arm_run(root: Path, key="lambda", values=(0.0, 0.5, 1.0)) -> Path:
    """One run with ``'method.KEY=[...]'``: arms ``staa[KEY=v]`` beside staa_raw and the controls, quality, cost
    and descriptive metrics."""
    from sweep_fixtures import arm_rows, control_rows, make_point, noisy, staa_params

    rows = control_rows() + arm_rows("staa_raw", staa_params(None), noisy(0.3, seed=1))
    for i, v in enumerate(values):
        label = f"staa[{key}={v:g}]"
        params = staa_params(1.0, layers=v) if key == "layers" else staa_params(v)
        rows += arm_rows(label, params, noisy(0.4 + 0.1 * i, seed=2 + i))
        rows += arm_rows(label, params, np.full(16, 0.01), metric="explain_time_s", kind="cost", hib=False)
        rows += arm_rows(label, params, np.full(16, 0.2), metric="tie_fraction", kind="descriptive", hib=None)
    make_point(root, [f"method.{key}=[{','.join(f'{v:g}' for v in values)}]"], rows)
    return root


def test_method_sweep_report_renders(tmp_path):
    """The README's first sweep (over the method config group): on b4e0241, KeyError: 'method'."""
    text = _sweep_report(_method_sweep(tmp_path / "sweep"))
    assert "sweep of 3 runs over method" in text and "could not be drawn" not in text
    table = text.split('id="summary"', 1)[1].split("</table>", 1)[0]
    assert all(f'<td class="method">{m}</td>' in table for m in ("staa", "chefer", "rollout"))
    assert 'id="ablations"' not in text  # a method is no parameter value
    assert R.main([str(tmp_path / "sweep")]) == 0


def test_model_sweep_report_keeps_models_apart(tmp_path):
    text = _sweep_report(_model_sweep(tmp_path / "sweep"))
    heads = re.findall(r"<h3>(toy · synthetic_image · \w+)</h3>", text.split('id="ranking"')[0])
    assert heads == ["toy · synthetic_image · vit", "toy · synthetic_image · swin"]
    assert "staa#" not in text and "rollout#" not in text and 'id="ablations"' not in text
    assert "could not be drawn" not in text


def test_list_arm_report_has_an_ablation(tmp_path):
    """``'method.lambda=[0,0.5,1]'``: the list arms staa[lambda=...] are one method's ablation; quality
    metrics only, the swept values as ticks, the controls as reference lines."""
    run = _list_arm_run(tmp_path / "run")
    d = R.load(run)
    s = R._prepare(d.summary)
    plots = R.ablation_plots(s, d.validity)
    assert [(p["method"], p["param"]) for p in plots] == [("staa", "lambda")]
    p = plots[0]
    assert p["metrics"] == ["iou"]  # no explain_time_s (cost) or tie_fraction (descriptive) panel
    assert p["xticks"] == ["0", "0.5", "1"] and p["references"] == 4  # gt, random, inverted, constant
    text = _sweep_report(run)
    table = text.split('id="summary"', 1)[1].split("</table>", 1)[0]
    assert "<h3>staa: lambda" in text and table.count('<td class="method">staa_raw</td>') == 1


def test_integer_parameters_get_integer_ticks():
    rows = [dict(experiment="e", dataset="d", model="m", method=f"staa[layers={k}]", metric="ap", mean=0.5 + k / 10,
                 std=0.1, ci_low=np.nan, ci_high=np.nan, higher_is_better=True, metric_kind="quality",
                 params=json.dumps({"layers": k, "lambda": 1.0})) for k in (1, 2, 4)]
    (p,) = R.ablation_plots(R._prepare(pd.DataFrame(rows)))
    assert p["xticks"] == ["1", "2", "4"] and p["param"] == "layers"


def test_lambda_sweep_report(tmp_path):
    from sweep_fixtures import lambda_sweep

    sweep = lambda_sweep(tmp_path / "sweep")
    text = _sweep_report(sweep)
    assert "<h3>staa: lambda" in text and "could not be drawn" not in text
    video = text.split('id="summary"', 1)[1].split("</table>", 1)[0]
    assert video.count('class="num best') == 1  # one best arm per column, across the points
    assert video.count('<td class="method">rollout</td>') == 1


CHROMIUM_SWEEPS = [("method", _method_sweep), ("model", _model_sweep), ("list arm", _list_arm_run)]


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed")
@pytest.mark.parametrize("kind, make", CHROMIUM_SWEEPS, ids=[k for k, _ in CHROMIUM_SWEEPS])
def test_sweep_reports_render_in_chromium(tmp_path, kind, make):
    out = R.write_report(make(tmp_path / "sweep"))
    shot = tmp_path / "report.png"
    log = _chromium(out, shot, tmp_path / "profile")
    assert _console_errors(log) == [], log[-2000:]
    im = Image.open(shot)
    assert im.size == (1280, 2400) and len(im.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 200


def test_export_markdown_and_latex_tables(report, tmp_path, capsys):
    out, _ = report
    run = out.parent
    assert R.main([str(run), "--export", "md,tex,png", "--export-dir", str(tmp_path / "x"), "-o",
                   str(tmp_path / "r.html")]) == 0
    assert "exported" in capsys.readouterr().out
    md = (tmp_path / "x" / "summary.md").read_text()
    video = md.split("### default · synthetic_video · timesformer_synth", 1)[1].split("###", 1)[0]
    lines = [x for x in video.splitlines() if x.startswith("|")]
    assert lines[0].startswith("| method | insertion_auc ↑ | deletion_auc ↓ | iou ↑ | explain_time_s ↓")
    assert len({x.count(" | ") for x in lines if not x.startswith("|:")}) == 1  # every row has every column
    assert "| rollout | **0.951** \\* [0.930,0.970]" in video and "0.932 ~ [0.900,0.960]" in video
    assert "| *control_random* |" in video and "staa#3: lambda=2.0" in md
    image = md.split("synthetic_image · vit_synth", 1)[1]
    assert "iou ↑ ✗1" in image and "✗1 iou: the ground-truth control does not beat the random one" in image
    tex = (tmp_path / "x" / "summary.tex").read_text()
    assert r"default / synthetic\_video / timesformer\_synth" in tex and r"\textbf{0.951}" in tex
    assert r"0.932$^{\sim}$ [0.900,0.960]" in tex and r"\textit{control\_random}" in tex
    for table in tex.split(r"\begin{tabular}")[1:]:
        spec = table.split("}", 1)[0].lstrip("{")
        body = table.split(r"\toprule", 1)[1].split(r"\bottomrule", 1)[0]
        rows = [x for x in body.splitlines() if x.endswith(r"\\")]
        assert rows and all(len(re.findall(r"(?<!\\)&", x)) == len(spec) - 1 for x in rows)
    pngs = list((tmp_path / "x" / "figures").rglob("*.png"))
    assert len(pngs) == 2 * 3  # two samples (video, image): the input and two methods each
    assert R.main([str(run), "--export", "docx"]) == 2 and "unknown format" in capsys.readouterr().err
