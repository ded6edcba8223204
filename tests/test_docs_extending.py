"""docs/extending.md stays true: every repository path it names exists, every Python block compiles, every
YAML block parses, and the guide's method, metric and dataset skeletons run as written (each registered under
a test-only name and removed again, so no other test module sees them) against independent references: the
method against the library's own ``output_attentions``, the metric against a numpy computation."""

import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "extending.md"
TEXT = GUIDE.read_text()

#: the example files the guide tells a reader to create (they are not in the repository)
NEW = {"xaibench/methods/mean_attention.py", "conf/method/mean_attention.yaml",
       "xaibench/metrics/energy_pointing.py", "conf/metric/energy_pointing.yaml",
       "xaibench/models/hf_myvit.py", "conf/model/hf_myvit_tiny.yaml",
       "xaibench/datasets/noise_square.py", "conf/dataset/noise_square.yaml"}

PATH_RE = re.compile(r"(?<![\w/.])((?:xaibench|conf|tests|docs)/[\w/.*<>\-]+)")


def blocks(lang):
    return re.findall(rf"^```{lang}\n(.*?)^```", TEXT, flags=re.S | re.M)


def block(first_line):
    """The Python block whose first line is ``first_line`` (the guide heads each skeleton with its path)."""
    found = [b for b in blocks("python") if b.splitlines()[0].strip() == first_line]
    assert len(found) == 1, first_line
    return found[0]


def test_every_path_named_in_the_guide_exists():
    paths = {p.rstrip(".,:;)") for p in PATH_RE.findall(TEXT)}
    assert "xaibench/models/hf_dinov2.py" in paths and "tests/test_conformance.py" in paths
    missing = []
    for p in sorted(paths):
        if p in NEW or "<" in p:  # the files to create, and patterns such as xaibench/methods/<name>.py
            continue
        if "*" in p:
            if not list(ROOT.glob(p)):
                missing.append(p)
        elif not (ROOT / p).exists():
            missing.append(p)
    assert not missing, f"docs/extending.md names paths that do not exist: {missing}"


def test_every_python_block_compiles_and_every_yaml_block_parses():
    py = blocks("python")
    assert len(py) >= 5
    for i, code in enumerate(py):
        compile(code, f"docs/extending.md:python-block-{i}", "exec")
    ys = blocks("yaml")
    assert len(ys) >= 5
    for code in ys:
        doc = yaml.safe_load(code)
        assert isinstance(doc, dict)
        if "defaults" in doc:  # a component YAML extends its schema
            assert re.fullmatch(r"/schema/(model|dataset|method|metric)/\w+@_here_", doc["defaults"][0])


# ------------------------------------------------------------------ running the skeletons
def _load(code: str, package: str, name: str, renames: dict):
    """Execute a skeleton as module ``package.<name>`` (relative imports work) with its registry names
    replaced by test-only ones."""
    for old, new in renames.items():
        assert f'"{old}"' in code
        code = code.replace(f'"{old}"', f'"{new}"')
    mod = types.ModuleType(f"{package}.{name}")
    mod.__package__ = package
    sys.modules[mod.__name__] = mod
    exec(compile(code, f"docs/extending.md ({name})", "exec"), mod.__dict__)
    return mod


def _unregister(registry, name, module_name):
    registry._entries.pop(name, None)
    registry._configs.pop(name, None)
    sys.modules.pop(module_name, None)
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().repo.get("schema", {}).get(registry.kind, {}).pop(f"{name}.yaml", None)


@pytest.fixture
def registered():
    """``registered(registry, code, package, example name)`` -> the test-only registry name; removed after."""
    done = []

    def add(registry, code, package, example, registration=None):
        name = f"test_docs_{example}"
        mod_name = f"{package}._test_docs_{example}"
        done.append((registry, name, mod_name))
        _load(code, package, f"_test_docs_{example}", {example: name})
        if registration is not None:  # a registration line kept in the package's __init__.py (datasets)
            registration = registration.replace(f"from .{example} import", f"from ._test_docs_{example} import")
            exec(registration.replace(f'"{example}"', f'"{name}"'),
                 {"__name__": package, "__package__": package, registry.kind.upper() + "S": registry})
        assert name in registry
        return name

    yield add
    for registry, name, mod_name in done:
        _unregister(registry, name, mod_name)


def test_the_method_skeleton_runs_and_equals_the_librarys_attentions(registered):
    from xaibench import methods
    from xaibench.errors import NotApplicable, UserError
    from xaibench.models import conformance as C

    name = registered(methods.METHODS, block("# xaibench/methods/mean_attention.py"), "xaibench.methods",
                      "mean_attention")
    a = C.tiny("hf_vit")  # 32 px, 8-px patches, 2 layers
    x = C.sample_input(a, 2, seed=7)
    with torch.no_grad():
        ref = a.model(pixel_values=a.normalise(x)[:, 0], output_attentions=True).attentions
    g = a.grid
    for k in (1, 2):
        m = methods.create(name, layers=k)
        assert m.params() == {"upsample": "bilinear", "layers": k}
        es = m.explain_batch(a, x, [0, 1])
        for b, e in enumerate(es):
            expected = torch.stack([att[b].mean(0)[0, 1:] for att in ref[-k:]]).mean(0).reshape(1, *g)
            torch.testing.assert_close(e.token_map, expected.float(), rtol=1e-5, atol=1e-6)
            assert e.volume.shape == (1, 32, 32)
        single = m(a, x[1], 1)  # check + explain on one sample equals the batch
        torch.testing.assert_close(single.token_map, es[1].token_map)
        # one trace of every layer serves every arm (the harness merges the requests of list arms)
        full = m.explain_trace(a, a.trace(x, target=[0, 1], attentions=True))
        for f, e in zip(full, es):
            torch.testing.assert_close(f.token_map, e.token_map)
    with pytest.raises(UserError, match="layers=3"):
        methods.create(name, layers=3)(a, x[0], 0)
    # what the conformance suite asks of every method on every family: a map, or NotApplicable with a reason
    assert C.check_methods(a, names=[name]) == {name: "ok"}
    swin = C.tiny("hf_swin")  # two stages of two blocks: the last three layers span both
    assert C.check_methods(swin, names=[name]) == {name: "ok"}
    with pytest.raises(NotApplicable, match="stages"):
        methods.create(name, layers=3).check(swin)


def test_the_metric_skeleton_equals_a_numpy_computation(registered):
    from xaibench import metrics
    from xaibench.analysis.schema import QUALITY
    from xaibench.datasets.base import Sample
    from xaibench.explanation import Explanation
    from xaibench.metrics.base import EvalItem, evaluate_items

    name = registered(metrics.METRICS, block("# xaibench/metrics/energy_pointing.py"), "xaibench.metrics",
                      "energy_pointing")
    g = torch.Generator().manual_seed(0)
    items, refs = [], []
    for k in range(3):
        vol = torch.randn(2, 8, 8, generator=g)
        mask = torch.rand(2, 8, 8, generator=g) < 0.3
        if k == 2:
            vol = -vol.abs()  # no positive attribution: undefined
        items.append(EvalItem(sample=Sample("s", torch.zeros(2, 3, 8, 8), 0, mask=mask), method="m",
                              explanation=Explanation(vol, vol.flatten(1).sum(1), vol), target=0,
                              logits=torch.zeros(2), rng=np.random.default_rng(0)))
        v, msk = vol.numpy().astype(np.float64), mask.numpy()
        pos, ab = np.maximum(v, 0), np.abs(v)
        refs.append((pos[msk].sum() / pos.sum() if pos.sum() > 0 else np.nan, ab[msk].sum() / ab.sum()))
    m = metrics.create(name)
    assert m.outputs["energy_in_mask"].kind == QUALITY and m.requires == ("mask",)
    got = evaluate_items(m, None, items)
    got_abs = evaluate_items(metrics.create(name, positive_only=False), None, items)
    for r, ra, (pos_ref, abs_ref) in zip(got, got_abs, refs):
        assert r["energy_in_mask"] == pytest.approx(pos_ref, nan_ok=True)
        assert ra["energy_in_mask"] == pytest.approx(abs_ref)
    assert np.isnan(got[2]["energy_in_mask"])


def test_the_dataset_skeleton_yields_what_a_sample_carries(registered):
    from xaibench import datasets

    registration = block("# in xaibench/datasets/__init__.py, beside the other registrations")
    name = registered(datasets.DATASETS, block("# xaibench/datasets/noise_square.py"), "xaibench.datasets",
                      "noise_square", registration)
    ds = datasets.create(name, n_samples=6, size=32, frames=2, seed=3)
    assert len(ds) == 6 and ds.has_mask and ds.has_frames and (ds.frames, ds.size) == (2, 32)
    for i in range(len(ds)):
        s = ds[i]
        assert s.sample_id == ds.sample_id(i) and s.x.shape == (2, 3, 32, 32) and s.x.dtype == torch.float32
        assert s.mask.shape == (2, 32, 32) and s.mask.dtype == torch.bool and s.frames.tolist() == [True, True]
        assert 0 <= float(s.x.min()) and float(s.x.max()) <= 1
        assert torch.all(s.x[:, :, s.mask[0]] == 1)  # the square is the evidence ...
        ys, xs = torch.nonzero(s.mask[0], as_tuple=True)
        assert s.label == 2 * int(ys.float().mean() >= 16) + int(xs.float().mean() >= 16)  # ... its quadrant
    again = datasets.create(name, n_samples=6, size=32, frames=2, seed=3)
    assert torch.equal(again[4].x, ds[4].x)  # seeded by the dataset, not by any global generator
    assert ds.fingerprint()["n"] == 6


def test_the_skeletons_leave_nothing_registered():
    """Runs after the three above (file order): their test-only entries are gone again."""
    from xaibench import datasets, methods, metrics

    for registry in (methods.METHODS, metrics.METRICS, datasets.DATASETS):
        assert not [n for n in registry.available() if n.startswith("test_docs_")]
    assert not [m for m in sys.modules if "._test_docs_" in m]
