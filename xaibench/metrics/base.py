"""Metric interface.

A metric is an object with ``outputs`` (metric name -> higher-is-better) and
``compute(ctx) -> {metric name: value}``.  One metric object may report several
numbers (e.g. ``staa_monotonicity`` and its raw Kendall tau).  ``requires``
names what the sample must carry (``mask`` for spatial ground truth,
``frames`` for temporal ground truth); the harness skips a metric whose
requirement a dataset cannot meet and records why.

All randomness comes from ``ctx.rng`` (a ``numpy.random.Generator`` seeded by
the harness from the run seed and the sample id), never from a global RNG.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from ..methods.base import Explanation


@dataclass
class EvalContext:
    adapter: object  # ModelAdapter
    x: torch.Tensor  # (T, C, H, W) pixels in [0, 1]
    target: int
    explanation: Explanation
    logits: torch.Tensor  # (num_classes,) logits of the unperturbed input
    rng: np.random.Generator
    batch_size: int = 32
    label: Optional[int] = None
    mask: Optional[torch.Tensor] = None  # (T, H, W) bool ground truth
    frames: Optional[torch.Tensor] = None  # (T,) bool evidence frames
    timing: Dict[str, float] = field(default_factory=dict)  # explain_s etc. filled by the harness
    counters: Dict[str, int] = field(default_factory=dict)  # forward passes used by metrics so far


class Metric:
    name: str = ""
    outputs: Dict[str, bool] = {}  # reported name -> higher is better
    requires: Tuple[str, ...] = ()  # subset of ('mask', 'frames')

    def params(self) -> dict:
        return {}

    def compute(self, ctx: EvalContext) -> Dict[str, float]:
        raise NotImplementedError


def forward_batched(ctx: EvalContext, xs: torch.Tensor) -> torch.Tensor:
    """Logits of a stack of perturbed inputs (K, T, C, H, W), ``ctx.batch_size`` at a time.

    Counts the forward passes in ``ctx.counters['forward']``.
    """
    out = ctx.adapter.predict(xs, batch_size=ctx.batch_size)
    ctx.counters["forward"] = ctx.counters.get("forward", 0) + xs.shape[0]
    return out
