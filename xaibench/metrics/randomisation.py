"""Model-parameter randomisation test (Adebayo, Gilmer, Muelly, Goodfellow, Hardt & Kim, NeurIPS 2018,
"Sanity Checks for Saliency Maps"; cascading, from the top of the network, as Quantus's ``MPRT``).

The explanation of the trained model is compared with the explanation the same
method gives, for the same input and target class, on copies of the model
whose classifier head and top ``k`` transformer blocks are re-initialised
(seeded; :meth:`xaibench.models.base.ModelAdapter.randomised`; the copies are
made once per run and reused for every sample and method).  For each
``k`` in ``blocks`` (``-1``: every block) it reports::

    mprt_<k> = spearman( e(x; theta), e(x; theta_randomised_top_k) )

the Spearman rank correlation (``scipy.stats.spearmanr``) of the two maps
over the features of the model's token grid (mean attribution per feature).
Names: ``mprt_head`` (k = 0: only the head re-initialised), ``mprt_top<k>``,
``mprt_all``.  Lower is better: an explanation that depends on what the model
learnt must change when the model's parameters are destroyed; a correlation
near 1 means the explanation ignores them (e.g. attention-only maps ignore
the head: their ``mprt_head`` is 1).  A constant map on either side gives 0
(the correlation policy of :mod:`xaibench.metrics.faithfulness`).

Cost: one extra explanation per step and sample (for SHAP / LIME, their whole
budget again), which is why the default experiment leaves it out; the
``sanity`` experiment runs it.
"""

from __future__ import annotations

import numpy as np

from ..errors import UserError
from ..perturb import feature_ids, feature_means, token_cell
from .base import METRICS
from .base import Metric


def _name(k: int) -> str:
    return "mprt_head" if k == 0 else ("mprt_all" if k < 0 else f"mprt_top{k}")


@METRICS.register("mprt")
class ModelRandomisation(Metric):
    name = "mprt"
    list_parameters = ("blocks",)

    def __init__(self, blocks=(0, 1, -1), seed: int = 0):
        try:
            self.blocks = [int(b) for b in blocks]
        except (TypeError, ValueError):
            raise UserError(f"metric.blocks={blocks!r} must be a list of block counts (0: head only, -1: all)") \
                from None
        if not self.blocks or any(b < -1 for b in self.blocks):
            raise UserError(f"metric.blocks={blocks!r}: give counts >= 0, or -1 for every block")
        self.seed = 0 if seed is None else int(seed)
        self.outputs = {_name(b): False for b in self.blocks}

    def params(self):
        return {"blocks": self.blocks, "seed": self.seed}

    def compute(self, ctx):
        from scipy.stats import spearmanr

        if ctx.reexplain is None or ctx.randomised is None:
            raise UserError("the mprt metric needs the harness (it re-explains with randomised model copies)")
        T, _, H, W = ctx.x.shape
        ids = feature_ids((T, H, W), token_cell(ctx.adapter, 0)).to(ctx.explanation.volume.device)
        ref = feature_means(ctx.explanation.volume, ids).cpu().numpy()
        out = {}
        for k in self.blocks:
            other = ctx.reexplain(ctx.randomised(k if k >= 0 else 10 ** 6, self.seed))
            v = feature_means(other.volume.to(ids.device), ids).cpu().numpy()
            if np.ptp(ref) == 0 or np.ptp(v) == 0:
                out[_name(k)] = 0.0
            else:
                out[_name(k)] = float(spearmanr(ref, v).statistic)
        return out
