"""The shipped small models: loadable offline, accurate, right for the right reason, and explained by every
method (one test sample each)."""

import json
import warnings

import numpy as np
import pytest
from conftest import check_explanation
import torch

from xaibench import datasets, methods, models
from xaibench.errors import NotApplicable, UserError

#: methods documented to run on every model (the others may declare NotApplicable with a reason)
ANY_MODEL = {"attention", "rollout", "chefer", "stdnorm", "gradcam", "shap", "lime", "staa", "control_random",
             "control_constant", "control_gt", "control_gt_inverted"}
#: small budgets; ``coarsen`` lets the budget rule pick features these budgets can afford
FAST = {"shap": dict(n_samples=32, batch_size=64, budget="coarsen"),
        "lime": dict(n_samples=32, batch_size=64, budget="coarsen")}


def dataset_of(adapter, split="test", n=1):
    meta = adapter.meta
    return datasets.create(meta["dataset"], split=split, n_samples=n, **meta.get("dataset_params", {}))


def test_every_shipped_name_is_registered_and_fixed():
    names = models.shipped_names()
    assert {"timesformer_synth", "vit_synth", "swin_synth", "timm_vit_synth", "timm_swin_synth"} <= set(names)
    assert set(names) <= set(models.available())
    with pytest.raises(UserError, match="takes no parameters"):
        models.load_shipped("vit_synth", hidden_size=8)


def test_shipped_model_is_accurate_and_blind_without_the_evidence(shipped_models, shipped_name):
    a = shipped_models(shipped_name)
    meta = json.loads((models.WEIGHTS_DIR / f"{shipped_name}.json").read_text())
    assert meta["train"]["test_acc"] >= 0.95
    assert (models.WEIGHTS_DIR / f"{shipped_name}.safetensors").stat().st_size <= 10 * 2**20
    ds = dataset_of(a, n=64)
    x = torch.stack([ds[i].x for i in range(64)])
    y = torch.tensor([ds[i].label for i in range(64)])
    assert (a.predict(x).argmax(-1) == y).float().mean() >= 0.95
    # the same clips with the evidence painted over: the model must fall to chance (1 / classes);
    # 3 binomial standard deviations at n = 64 and p = 0.25 are 0.16
    xb = torch.stack([torch.from_numpy(ds.render(i, int(y[i]), blank_evidence=True)[0]) for i in range(64)])
    acc_blank = (a.predict(xb).argmax(-1) == y).float().mean().item()
    chance = 1 / a.num_classes
    assert abs(acc_blank - chance) <= 3 * np.sqrt(chance * (1 - chance) / 64), acc_blank


@pytest.mark.parametrize("method", methods.available())
def test_every_method_on_every_shipped_model(shipped_models, shipped_name, method):
    a = shipped_models(shipped_name)
    s = dataset_of(a)[0]
    m = methods.create(method, **FAST.get(method, {}))
    target = int(a.predict(s.x[None]).argmax())
    try:
        m.check(a)
        with a.counting() as n, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # budget=coarsen warns
            e = m.explain_sample(a, s, target)
    except NotApplicable as err:
        if method in ANY_MODEL:
            raise
        pytest.skip(f"{method} does not apply to {shipped_name}: {err}")
    req = check_explanation(e, a, method, m, n)
    if req is None and not method.startswith("control_"):  # perturbation methods: their budget of forward passes
        assert n["forward"] >= 1 and n["backward"] == 0


def test_shipped_cards_declare_what_loads(shipped_models, shipped_name):
    """The card of each shipped model states its input, normalisation, readout, benchmark and the sha256 of its
    weights; loading gives exactly those (xaibench-train ship=true: update weights_sha256 in the family module)."""
    a = shipped_models(shipped_name)
    card = models.SHIPPED[shipped_name]
    assert a.identity()["matches"] is True, (f"weights of {shipped_name} changed: {a.weights_digest()} (update "
                                              f"weights_sha256 in {models.FAMILIES[card.family].module})")
    assert (a.num_frames, a.image_size, a.num_classes) == (card.frames, card.image_size, card.num_classes)
    assert a.mean.flatten().tolist() == list(card.mean) == a.meta["mean"]
    assert a.std.flatten().tolist() == list(card.std) == a.meta["std"]
    assert a.layout.readout == card.readout and a.family == card.family == a.meta["builder"]
    assert card.dataset == a.meta["dataset"] and a.card.source == "shipped"
