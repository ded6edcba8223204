"""The conformance suite: every registered model family is judged by the checks of
:mod:`xaibench.models.conformance` at its declared ``tiny`` size -- readout against the logits' gradient,
hooked attention against the library and autograd, the token order by marking a patch, blocks and head,
``randomised(k)`` at every cascade depth, every method runs or says why not.

No hand-kept list: the families registered when this module is collected are parametrised; a family
registered later (e.g. in a test module collected after this one, as tests/test_family_plugin.py) is judged
at run time by ``test_families_registered_after_collection_conform``.  Each check is also shown to fail on
a deliberately wrong declaration.  Then: readout rows from the declared weights, and ``metric=mprt`` through
the runner on every shipped and tiny model config.  (DINOv2 checkpoints: tests/test_pretrained.py; typed model
configs and lazy imports: tests/test_families.py; precision: tests/test_adapter.py.)
"""

import copy
import dataclasses
import json
import math

import pandas as pd
import pytest
import torch
from run_config import make_cfg

from xaibench import models
from xaibench.models import conformance as C
from xaibench.models.base import TokenLayout
from xaibench.models.card import Readout

#: every family registered when this module is collected
COLLECTED = sorted(models.FAMILIES)


def late_families():
    """Families registered after this module was collected (test modules collected later)."""
    return sorted(set(models.FAMILIES) - set(COLLECTED))


_TINY = {}


def tiny(name):
    if name not in _TINY:
        _TINY[name] = C.tiny(name)
    a = _TINY[name]
    a.cache.clear()
    return a


# ------------------------------------------------------------------ every family, every check
@pytest.mark.parametrize("check", list(C.CHECKS))
@pytest.mark.parametrize("family", COLLECTED)
def test_family_conforms(family, check):
    result = C.CHECKS[check](tiny(family))
    if check == "readout":
        assert {g for g, s in result.items() if s == "all"} == set(tiny(family).layout.readout.groups)
    if check == "methods":
        assert result and all(v == "ok" or v.startswith("not applicable: ") for v in result.values())
        assert {"attention", "rollout", "chefer", "gradcam", "staa"} <= {k for k, v in result.items() if v == "ok"}


def test_families_registered_after_collection_conform():
    for name in late_families():
        report = C.conform(C.tiny(name))
        assert set(report) == set(C.CHECKS)


def test_the_suite_covers_every_registered_family():
    assert set(COLLECTED) | set(late_families()) == set(models.FAMILIES)
    assert {"hf_timesformer", "hf_videomae", "hf_vivit", "hf_vit", "hf_swin", "hf_dinov2", "timm_vit", "timm_deit",
            "timm_swin"} <= set(COLLECTED)


# ------------------------------------------------------------------ wrong declarations fail
def _with_layout(a, **changes):
    b = copy.copy(a)
    b.layout = dataclasses.replace(a.layout, **changes)
    return b


@pytest.mark.parametrize("family", COLLECTED)
def test_a_wrong_readout_declaration_fails(family):
    a = tiny(family)
    true = a.layout.readout
    wrong = [r for r in ("cls", "prefix_mean", "pool", "cls+patches", "cls*0.1+patches*0.9")
             if Readout(r).groups != true.groups and Readout(r).prefix_needed <= a.layout.prefix]
    for r in wrong:
        with pytest.raises(C.ConformanceError, match="readout"):
            C.check_readout(_with_layout(a, readout=r))
    if not wrong:  # no prefix token: the only other declaration is one that invents a [CLS]
        with pytest.raises(C.ConformanceError, match="tokens"):
            C.check_readout(_with_layout(a, prefix=1, readout="cls"))


def test_dinov2_declared_cls_fails_the_readout_check():
    """The mistake the issue reports: DINOv2's head reads [CLS, mean of the patches]; declared ``cls`` it fails."""
    a = tiny("hf_dinov2")
    assert C.check_readout(a)["patches"] == "all"
    with pytest.raises(C.ConformanceError, match=r"non-zero on \['cls', 'patches'\]"):
        C.check_readout(_with_layout(a, readout="cls"))


def test_wrong_token_order_blocks_head_and_hook_points_fail():
    a = tiny("hf_vit")

    class Transposed(type(a)):
        def reshape_tokens(self, act, batch):
            return super().reshape_tokens(act, batch).transpose(2, 3)

    b = copy.copy(a)
    b.__class__ = Transposed
    with pytest.raises(C.ConformanceError, match="marking token"):
        C.check_reshape_tokens(b)

    class Reversed(type(a)):
        def blocks(self):
            return super().blocks()[::-1]

    b.__class__ = Reversed
    with pytest.raises(C.ConformanceError, match="forward order"):
        C.check_blocks(b)

    class NormAsHead(type(a)):  # a layer norm at its initial values: re-initialising it changes nothing
        def head_modules(self):
            return [self.model.vit.layernorm]

    b.__class__ = NormAsHead
    with torch.no_grad():
        a_ln = copy.deepcopy(a.model.vit.layernorm)
    assert torch.equal(a_ln.weight, torch.ones_like(a_ln.weight))
    with pytest.raises(C.ConformanceError, match="predicts exactly as the original"):
        C.check_randomised(b, depths=[0])

    from xaibench.models.base import HookPoint

    class LayerNormAsProbs(type(a)):
        def hook_points(self):
            return [HookPoint(p.name, p.kind, p.layer, p.ln_module, ln_module=p.ln_module)
                    for p in super().hook_points()]

    b.__class__ = LayerNormAsProbs
    with pytest.raises(C.ConformanceError, match="hook points fail"):
        C.check_attention(b)


def test_readout_rows_use_the_declared_weights():
    from xaibench.methods._relevance import readout_vector

    n, P = 1 + 16, 16
    for spec, cls, patch in [("cls", 1.0, 0.0), ("pool", 0.0, 1 / P), ("cls+patches", 0.5, 0.5 / P),
                             ("cls*0.25+patches*0.75", 0.25, 0.75 / P)]:
        L = TokenLayout(stages=((4, 4),), prefix=1, readout=spec)
        v = readout_vector(L, n, 2, "mean")
        assert v.shape == (2, n) and math.isclose(v[0, 0].item(), cls)
        torch.testing.assert_close(v[:, 1:], torch.full((2, P), patch, dtype=torch.float64))
        assert math.isclose(v[0].sum().item(), 1.0)
    deit = readout_vector(TokenLayout(stages=((4, 4),), prefix=2, readout="prefix_mean"), 18, 1)
    assert deit[0, :2].tolist() == [0.5, 0.5] and deit[0, 2:].abs().sum() == 0
    swin = readout_vector(TokenLayout(stages=((4, 4),), prefix=0, readout="pool"), 16, 1, "sum")
    assert torch.equal(swin, torch.ones(1, 16, dtype=torch.float64))  # Chefer's column sums for a pure pool


def test_readout_declarations_parse_and_keep_their_names():
    assert Readout("cls") == "cls" and Readout("pool").weights == {"patches": 1.0}
    assert Readout("prefix_mean").weights == {"cls": 0.5, "dist": 0.5} and Readout.of(cls=1, dist=1) == "prefix_mean"
    assert Readout.of(cls=2, patches=2) == "cls+patches" and Readout("cls*1+patches*3").weights["patches"] == 0.75
    assert json.dumps({"r": Readout("cls+patches")}) == '{"r": "cls+patches"}'
    for bad in ("mean", "cls+tokens", "cls*-1"):
        with pytest.raises(ValueError, match="readout"):
            Readout(bad)
    with pytest.raises(ValueError, match="prefix"):
        TokenLayout(prefix=1, readout="prefix_mean")


# ------------------------------------------------------------------ metric=mprt on every model config
def _model_configs():
    from conftest import tiny_config_names

    return tiny_config_names() + models.shipped_names()


def _geometry(name):
    from xaibench.run.plan import component

    if name in models.SHIPPED:
        card = models.SHIPPED[name]
        return card.frames, card.image_size
    p = component("model", name).params
    return int(p.get("num_frames", 1)), int(p["image_size"])


@pytest.mark.parametrize("name", _model_configs())
def test_mprt_runs_on_every_shipped_and_tiny_model_config(tmp_path, name):
    """``xaibench model=<name> dataset=<fitting synthetic> method=attention metric=mprt dataset.n_samples=1``
    through the runner: the cascade (head, top block, every block) runs on every family (timm included)."""
    from xaibench.run.runner import Runner

    frames, size = _geometry(name)
    ds = {"config": "synthetic_video", "frames": frames} if frames > 1 else {"config": "synthetic_image"}
    ds.update(size=size, n_samples=1)
    cfg = make_cfg({"name": "mprt_check", "benchmarks": [{"model": name, "dataset": ds}], "methods": ["attention"],
                    "metrics": ["mprt"]}, n_samples=1, threads=1)
    summary, status = Runner(cfg, tmp_path / "run").run()
    assert status == "complete"
    df = pd.read_csv(tmp_path / "run" / "results.csv")
    got = df[df.metric.astype(str).str.startswith("mprt_")]
    assert set(got.metric) == {"mprt_head", "mprt_top1", "mprt_all"}
    assert got["value"].map(lambda v: math.isfinite(float(v))).all()
