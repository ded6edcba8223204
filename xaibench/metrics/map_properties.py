"""Descriptive properties of an attribution map (not quality scores): is it degenerate, how tied is it.

* ``degenerate``: 1 when the attribution volume is constant (all-zero
  included): it ranks nothing, so every rank-based metric scores it as a random
  order by the tie policy (docs/metrics.md, "Ties and degenerate maps"), and
  correlation metrics score it 0; else 0.
* ``tie_fraction``: the share of features (the model's token grid, the same
  features as the perturbation metrics' default) whose mean attribution equals
  another feature's (:func:`xaibench.perturb.tie_fraction`); 0 for a map
  without ties, 1 for a constant or binary map.  A high value means the
  rank-based metrics averaged over many tie orders for this map.

Both are reported per sample so that a table can say how many maps were
degenerate and how tied the maps of a method are; they carry no direction
(``higher_is_better`` False by convention) and are exempt from the
metric-validity verdicts.
"""

from __future__ import annotations

from ..perturb import feature_ids, feature_means, tie_fraction, token_cell
from .base import METRICS
from .base import Metric


@METRICS.register("map_properties")
class MapProperties(Metric):
    name = "map_properties"
    outputs = {"degenerate": False, "tie_fraction": False}
    descriptive = ("degenerate", "tie_fraction")

    def compute(self, ctx):
        vol = ctx.explanation.volume.detach()
        T, _, H, W = ctx.x.shape
        ids = feature_ids((T, H, W), token_cell(ctx.adapter, 0)).to(vol.device)
        return {"degenerate": float(bool(vol.max() <= vol.min())),
                "tie_fraction": tie_fraction(feature_means(vol, ids))}
