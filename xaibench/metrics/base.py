"""Metric interface.

A metric is an object with ``outputs`` (metric name -> higher-is-better) and
``compute(ctx) -> {metric name: value}``.  One metric object may report several
numbers (e.g. ``staa_monotonicity`` and its raw Kendall tau).  ``requires``
names what the sample must carry (``mask`` for spatial ground truth,
``frames`` for temporal ground truth); the harness skips a metric whose
requirement a dataset cannot meet and records why.

All randomness comes from ``ctx.rng`` (a ``numpy.random.Generator`` seeded by
the harness from the run seed and the sample id), never from a global RNG.
Model passes are counted by the adapter, not by the metric.

Dataset-level metrics (the ``reduce`` hook)
-------------------------------------------
Some numbers are not means of per-sample numbers (e.g. pixel accuracy and mIoU
of the Chefer et al. segmentation protocol sum counts over the whole dataset).
Such a metric

* returns, from ``compute``, its reported per-sample values *and* hidden
  per-sample values whose names start with an underscore (e.g. ``_correct``);
  hidden values are not listed in ``outputs`` and are not reported per sample;
* defines ``reduce(rows) -> {name: value}`` (a classmethod or method), where
  ``rows`` is the list, over the samples of one (benchmark, method) pair, of
  the hidden (underscore) entries of the dicts ``compute`` returned; skipped
  samples are simply absent.  The keys it returns are names in ``outputs``;
  the harness writes them as aggregate rows (``sample_id = "__aggregate__"``)
  that replace the mean of the per-sample values for those names.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch

from ..explanation import Explanation

from ..registry import Registry

#: every metric by name (each module of this package registers its entries on import)
METRICS = Registry("metric")


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
    counters: Dict[str, float] = field(default_factory=dict)  # passes etc. filled by the harness
    shared_seed: Tuple[int, ...] = (0,)  # (run seed, sample) -- the same for every method of a sample
    #: the same method on the same sample and target with another adapter (the randomisation test)
    reexplain: Optional[Callable] = None
    #: ``randomised(k, seed)``: a cached copy of the adapter with its head and top k blocks re-initialised
    randomised: Optional[Callable] = None

    def shared_rng(self, tag: str) -> np.random.Generator:
        """A generator seeded by the run seed, the sample and ``tag`` only: every method of a sample gets
        the same draws (e.g. faithfulness correlation's subsets), so methods are compared on paired
        perturbations and their model outputs are shared."""
        return np.random.default_rng([*self.shared_seed, zlib.crc32(tag.encode())])


class Metric:
    """Base class: set ``name``, ``outputs``, ``requires``; implement ``compute``.

    Optionally define ``reduce(rows)`` for dataset-level numbers (module docstring).
    """

    name: str = ""
    outputs: Dict[str, bool] = {}  # reported name -> higher is better
    requires: Tuple[str, ...] = ()  # subset of ('mask', 'frames')

    def params(self) -> dict:
        return {}

    def compute(self, ctx: EvalContext) -> Dict[str, float]:
        raise NotImplementedError
