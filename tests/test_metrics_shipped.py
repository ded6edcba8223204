"""On the shipped models, the ground-truth mask as attribution beats a random and an inverted one.

The synthetic benchmarks put all class evidence inside the mask (the rest of the
clip is label-independent by construction, ``tests/test_synthetic.py``), so a
trained model's output depends on the masked pixels and every metric must rank
the mask above a random map and above its complement, in its own direction
(``Metric.outputs``).  Means over a few test samples; small budgets.

Arya et al.'s ``monotonicity`` is deliberately not in the list: it adds the
features back in *increasing* attribution order, so for the mask the first
~97 % of the steps add background (ties at 0) onto a black clip whose evidence
is still missing, and the target probability wanders around chance (about half
of the steps decrease), while the complement adds the evidence first and then
background that raises the probability further.  On ``timesformer_synth`` (6
test clips, n_steps 16) it gives mask 0.51, random 0.88, inverted 0.92: the
metric rewards the wrong map here (see its docstring); it is checked against
hand computations in ``tests/test_metrics.py`` instead.

Two metrics are used with parameters at which they can see the difference on
these models (measured on the first 6 test samples):

* ``staa_faithfulness`` with ``k = 0.1`` instead of the paper's 0.7: keeping
  70 % of the features leaves enough evidence in a *random* map that the mask
  and a random map both score ~0.999 (timesformer_synth 0.9955 / 0.9952,
  vit_synth 0.9986 / 0.9988: the order is noise); keeping the top tenth only
  keeps the evidence when the map points at it (0.99 against 0.83 / 0.66);
* ``faithfulness_correlation`` is not ranked on ``timesformer_synth``: removing
  a random tenth of its 512 space-time patches changes the target logit by
  less than 1e-3 on most subsets (the evidence square spans several frames), so
  the mask's per-sample correlations are noise, from -0.81 to 0.98 (mean -0.02
  with 40 subsets, -0.02 with 200; the earlier code's draw happened to give
  +0.05).  What is checked there instead is the pairing that shared subsets
  give: every map of a sample is scored on the same perturbations, so with
  features of equal size the complement's correlation is exactly the mask's
  negative.  On ``vit_synth`` the metric separates the maps (0.86 / 0.16 / -0.86)
  and is ranked.
* ``staa_monotonicity`` is not ranked on ``vit_synth``: keeping more of *any*
  ranking's top features brings the output closer to the original, so noise
  and the constant map score as well as the mask there (6 samples: mask 0.48,
  random 0.54).  The main job's validity verdict says the same (invalid on both
  image benchmarks, README "Metric validity on the main job"); the metric stays
  because it is the STAA authors' protocol.
"""

import numpy as np
import pytest
import torch

from xaibench import datasets, metrics, models
from xaibench.errors import UserError
from xaibench.explanation import Explanation
from xaibench.analysis.schema import QUALITY, declared_reductions, hidden_state, reduce_state
from xaibench.metrics.base import EvalItem, evaluate_items

N = 6
BUDGET = {"faithfulness_correlation": dict(nr_runs=40), "monotonicity_correlation": dict(n_steps=16),
          "srg": dict(n_steps=10),
          "deletion_auc": dict(n_steps=10), "insertion_auc": dict(n_steps=10), "staa_faithfulness": dict(k=0.1)}
METRICS = ["faithfulness_correlation", "monotonicity_correlation", "deletion_auc", "insertion_auc", "srg",
           "staa_faithfulness", "staa_monotonicity", "segmentation", "localisation"]
CASES = [("timesformer_synth", "synthetic_video"), ("vit_synth", "synthetic_image")]
NOT_RANKED = {"timesformer_synth": {"faithfulness_correlation"},
              "vit_synth": {"staa_monotonicity"}}  # see the module docstring


def load(model):
    try:
        return models.create(model)
    except UserError as e:
        pytest.skip(f"shipped weights not present yet: {e}")


def attributions(mask, rng):
    m = mask.float()
    return {"mask": m, "random": torch.from_numpy(rng.random(tuple(m.shape), dtype=np.float32)), "inverted": 1 - m}


@pytest.mark.parametrize("model,dataset", CASES)
def test_ground_truth_attribution_scores_best(model, dataset):
    adapter = load(model)
    ds = datasets.create(dataset, split="test", n_samples=N)
    scores = {}  # (attribution, output) -> list of per-sample values
    hidden = {}  # (attribution, metric) -> list of per-sample hidden state (for the declared reductions)
    made = {name: metrics.create(name, **BUDGET.get(name, {})) for name in METRICS}
    for i in range(N):
        s = ds[i]
        logits = adapter.predict(s.x[None])[0]
        kinds = attributions(s.mask, np.random.default_rng(i))
        for name, m in made.items():
            # the three maps of a sample in one batch; one sample: the same shared draws for every map
            items = [EvalItem(sample=s, method=kind, explanation=Explanation(volume=vol,
                                                                             frame_scores=vol.flatten(1).mean(1),
                                                                             token_map=vol),
                              target=s.label, logits=logits, rng=np.random.default_rng([i, 7]), shared_seed=(0, i))
                     for kind, vol in kinds.items()]
            for kind, out in zip(kinds, evaluate_items(m, adapter, items, batch_size=32)):
                hidden.setdefault((kind, name), []).append(hidden_state(out))
                for k, v in out.items():
                    if not k.startswith("_"):
                        scores.setdefault((kind, k), []).append(v)
    means = {key: np.nanmean(v) if np.isfinite(v).any() else np.nan for key, v in scores.items()}
    for name, metric in made.items():  # dataset-level numbers replace the means, as in the analysis
        declared = declared_reductions(metric.outputs)
        for kind in ("mask", "random", "inverted"):
            for k, v in reduce_state(declared, hidden[(kind, name)]).items():
                means[(kind, k)] = v
    # shared subsets: equal-size features and a 0/1 map give the complement the mask's negative correlation
    np.testing.assert_allclose(scores[("inverted", "faithfulness_correlation")],
                               -np.asarray(scores[("mask", "faithfulness_correlation")]), atol=1e-9)
    outputs = {k: o.higher_is_better for name in METRICS if name not in NOT_RANKED.get(model, ())
               for k, o in made[name].outputs.items() if o.kind == QUALITY}
    failures, table = [], []
    for out, higher in outputs.items():
        vals = {kind: means.get((kind, out), np.nan) for kind in ("mask", "random", "inverted")}
        table.append(f"{out:26s} " + " ".join(f"{k}={v:.4f}" for k, v in vals.items()))
        if not np.isfinite(vals["mask"]):
            continue  # undefined for this data (e.g. temporal_ap on images)
        for other in ("random", "inverted"):
            better = vals["mask"] > vals[other] if higher else vals["mask"] < vals[other]
            if not better:
                failures.append(f"{out}: mask {vals['mask']:.4f} vs {other} {vals[other]:.4f}")
    print("\n".join(table))
    assert not failures, failures
