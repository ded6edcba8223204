"""Model-parameter randomisation test (Adebayo, Gilmer, Muelly, Goodfellow, Hardt & Kim, NeurIPS 2018,
"Sanity Checks for Saliency Maps"; cascading, from the top of the network, as Quantus's ``MPRT``).

The explanation of the trained model is compared with the explanation the same
method gives, for the same input and target class, on copies of the model
whose classifier head and top ``k`` transformer blocks are re-initialised
(seeded; :meth:`xaibench.models.base.ModelAdapter.randomised`; the harness makes
the copies once per run and reuses them for every sample and method -- the
``randomised`` service -- and re-explains through the ``reexplain`` service).
For each ``k`` in ``blocks`` (``-1``: every block) it reports::

    mprt_<k> = spearman( e(x; theta), e(x; theta_randomised_top_k) )

the Spearman rank correlation (Pearson correlation of the average ranks, ties
averaged: ``scipy.stats.spearmanr``, computed in torch) of the two maps over the
features of the model's token grid (mean attribution per feature).
Names: ``mprt_head`` (k = 0: only the head re-initialised), ``mprt_top<k>``,
``mprt_all``.  Lower is better: an explanation that depends on what the model
learnt must change when the model's parameters are destroyed; a correlation
near 1 means the explanation ignores them (e.g. attention-only maps ignore
the head: their ``mprt_head`` is 1).  A constant map on either side gives 0
(the correlation policy of :mod:`xaibench.metrics.faithfulness`).

Kind ``sanity``: a check of the method, not judged by the control methods (a
control's map does not depend on the model, so it scores 1 by construction).

Cost: one extra explanation per step and sample (for SHAP / LIME, their whole
budget again), which is why the default experiment leaves it out; the
``sanity`` experiment runs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch

from ..analysis.schema import SANITY, Output
from ..config import ComponentConfig, param
from ..errors import UserError
from ..perturb import token_cell
from .base import METRICS, EvalBatch, Metric
from .map_properties import grid_means


def _name(k: int) -> str:
    return "mprt_head" if k == 0 else ("mprt_all" if k < 0 else f"mprt_top{k}")


@dataclass
class MPRTConfig(ComponentConfig):
    blocks: List[int] = param(default_factory=lambda: [0, 1, -1], range=(-1, None), sweepable_list=True,
                              help="cascade steps: 0 the head only, k the head + top k blocks, -1 every block")
    seed: Optional[int] = param(None, range=(0, None), help="seed of the re-initialisation (null: the run's seed)")

    def validate(self):
        if not self.blocks:
            raise UserError("metric.blocks=[] is not allowed: give at least one block count (0: the head only, "
                            "k: the head + top k blocks, -1: every block)")
        if len(set(self.blocks)) != len(self.blocks):
            raise UserError(f"metric.blocks={list(self.blocks)} repeats a block count; give each once")


def _average_ranks(x: torch.Tensor) -> torch.Tensor:
    """(B, F) -> average ranks 1..F per row, ties sharing the mean of their ranks (scipy's ``rankdata``)."""
    B, F = x.shape
    s, order = torch.sort(x, dim=1, stable=True)
    new = torch.ones_like(s, dtype=torch.bool)
    new[:, 1:] = s[:, 1:] != s[:, :-1]
    pos = torch.arange(1, F + 1, device=x.device, dtype=torch.float64).expand(B, F)
    # first and last position of each element's tie group
    first = torch.cummax(torch.where(new, pos, torch.zeros_like(pos)), 1).values
    end_mark = torch.ones_like(new)
    end_mark[:, :-1] = new[:, 1:]
    big = torch.full_like(pos, F + 1.0)
    last = torch.flip(torch.cummin(torch.flip(torch.where(end_mark, pos, big), (1,)), 1).values, (1,))
    ranks = torch.empty_like(pos)
    ranks.scatter_(1, order, (first + last) / 2)
    return ranks


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise Spearman correlation of (B, F) float64 tensors; 0 where either row is constant."""
    ra, rb = _average_ranks(a), _average_ranks(b)
    ra = ra - ra.mean(1, keepdim=True)
    rb = rb - rb.mean(1, keepdim=True)
    den = torch.sqrt((ra * ra).sum(1) * (rb * rb).sum(1))
    const = (a.amax(1) <= a.amin(1)) | (b.amax(1) <= b.amin(1))
    r = (ra * rb).sum(1) / torch.where(den > 0, den, torch.ones_like(den))
    return torch.where(const, torch.zeros_like(r), r.clamp(-1.0, 1.0))


@METRICS.register("mprt")
class ModelRandomisation(Metric):
    """Cascading model-parameter randomisation test (module docstring)."""

    Config = MPRTConfig
    services = ("reexplain", "randomised")
    version = "2"  # batched torch Spearman; values equal to version 1 (scipy)

    def __init__(self, cfg: MPRTConfig = None):
        super().__init__(cfg)
        self.outputs = {_name(b): Output(False, SANITY) for b in self.cfg.blocks}

    def evaluate(self, batch: EvalBatch):
        items = batch.items
        if not items:
            return []
        reexplain = batch.services.need("reexplain", "the mprt metric")
        randomised = batch.services.need("randomised", "the mprt metric")
        seed = 0 if self.cfg.seed is None else int(self.cfg.seed)
        cell = token_cell(batch.adapter, 0)
        dev = items[0].explanation.volume.device
        ref = grid_means(torch.stack([it.explanation.volume.detach().to(dev) for it in items]), cell)
        out = [dict() for _ in items]
        for k in self.cfg.blocks:
            adapter_k = randomised(k if k >= 0 else 10 ** 6, seed)
            other = torch.stack([reexplain(it, adapter_k).volume.detach().to(dev) for it in items])
            r = spearman(ref, grid_means(other, cell)).tolist()
            for row, v in zip(out, r):
                row[_name(k)] = v
        return out
