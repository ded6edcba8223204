"""Descriptive properties of an attribution map (not quality scores): is it degenerate, how tied is it.

* ``degenerate``: 1 when the attribution volume is constant (all-zero
  included): ``max V <= min V``.  It ranks nothing, so every rank-based metric scores it as a random
  order by the tie policy (docs/metrics.md, "Ties and degenerate maps"), and
  correlation metrics score it 0; else 0.
* ``tie_fraction``: the share of features whose mean attribution equals another
  feature's, ``|{f : exists g != f, a_f = a_g}| / F``, over the features of the
  model's first-stage token grid (cells of ``image_size / tokens per side`` pixels, one frame each; the
  perturbation metrics' default features), ``a_f`` = the float64 mean of the volume over cell ``f``
  (the definition of :func:`xaibench.perturb.tie_fraction` on
  :func:`xaibench.perturb.feature_means`); 0 for a map without ties, 1 for a constant or binary map.  A high
  value means the rank-based metrics averaged over many tie orders for this map.

Both are reported per sample so that a table can say how many maps were
degenerate and how tied the maps of a method are.  They are declared
``descriptive`` with no direction: the analysis never judges or marks them.
Every item of a batch is computed in one call on the explanation's device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..analysis.schema import DESCRIPTIVE, Output
from ..config import ComponentConfig
from ..errors import UserError
from ..perturb import token_cell
from .base import METRICS, EvalBatch, Metric


def grid_means(volumes: torch.Tensor, cell: int) -> torch.Tensor:
    """(B, F) float64 mean of each (B, T, H, W) volume over the ``cell`` x ``cell`` cells of each frame, features
    in frame-major, row-major order (the ids of :func:`xaibench.perturb.feature_ids`)."""
    B, T, H, W = volumes.shape
    if H % cell or W % cell:
        raise UserError(f"the token cell {cell} px must divide the input size {H}x{W}")
    v = volumes.detach().double().reshape(B, T, H // cell, cell, W // cell, cell)
    return v.sum((3, 5)).reshape(B, -1) / float(cell * cell)


def tie_fractions(scores: torch.Tensor) -> torch.Tensor:
    """(B,) share of the entries of each row of ``scores`` (B, F) equal to another entry of the row."""
    s = torch.sort(scores, dim=1).values
    eq = s[:, 1:] == s[:, :-1]
    tied = torch.zeros_like(s, dtype=torch.bool)
    tied[:, 1:] |= eq
    tied[:, :-1] |= eq
    return tied.double().mean(1)


@dataclass
class MapPropertiesConfig(ComponentConfig):
    """Map properties have no parameters (the features are the model's token grid)."""


@METRICS.register("map_properties")
class MapProperties(Metric):
    """Degenerate flag and tie fraction of each map (module docstring)."""

    Config = MapPropertiesConfig
    outputs = {"degenerate": Output(None, DESCRIPTIVE), "tie_fraction": Output(None, DESCRIPTIVE)}
    version = "2"  # batched torch implementation; values equal to version 1

    def evaluate(self, batch: EvalBatch):
        if not batch.items:
            return []
        cell = token_cell(batch.adapter, 0)
        out = []
        groups: dict = {}
        for k, it in enumerate(batch.items):
            groups.setdefault(tuple(it.explanation.volume.shape), []).append(k)
        res = [None] * len(batch.items)
        for shape, ks in groups.items():
            for lo in range(0, len(ks), 64):  # bounded memory per call
                part = ks[lo:lo + 64]
                vol = torch.stack([batch.items[k].explanation.volume.detach() for k in part])
                flat = vol.reshape(len(part), -1)
                degenerate = (flat.max(1).values <= flat.min(1).values).tolist()
                ties = tie_fractions(grid_means(vol, cell)).tolist()
                for j, k in enumerate(part):
                    res[k] = {"degenerate": float(degenerate[j]), "tie_fraction": ties[j]}
        out.extend(res)
        return out
