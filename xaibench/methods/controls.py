"""Control pseudo-methods: reference explanations that every table carries beside the real methods.

They make each table carry the evidence that its metrics can tell a good
explanation from a bad one (the metric-validity verdicts of
:mod:`xaibench.analysis.stats` compare them, sample by sample):

* ``control_random``: i.i.d. uniform noise at the model's token resolution
  (one value per token of each token frame), upsampled with nearest
  neighbours -- an explanation with no information, of the granularity of the
  attention methods; seeded by the run seed and the sample id;
* ``control_constant``: a constant map (every position 1) -- no ranking at all
  (a degenerate map: under the tie policy every order of it is random);
* ``control_gt``: the ground-truth evidence mask (1 inside, 0 outside; frame
  scores 1 on the evidence frames) -- the best explanation a localisation
  metric can see, and for our synthetic models, whose prediction depends only
  on the evidence (tests/test_synthetic.py), a faithful one;
* ``control_gt_inverted``: ``1 - mask`` -- the ground truth's worst opposite.

The ground-truth controls need a dataset with masks (``requires = ('mask',)``);
the harness skips them, with the reason, on data without one (Kinetics).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from ..config import param
from ..explanation import Explanation, from_token_map
from .base import METHODS, Method, MethodConfig


@dataclass
class SeedConfig(MethodConfig):
    seed: Optional[int] = param(None, range=(0, 2 ** 32 - 1), help="seed of the noise (null: the run's seed)")


class _Control(Method):
    def explain(self, adapter, x, target):
        raise NotImplementedError(f"{self.name} explains dataset samples (explain_sample)")


@METHODS.register("control_random")
class RandomControl(_Control):
    name = "control_random"
    Config = SeedConfig

    def explain_sample(self, adapter, sample, target):
        L = adapter.layout
        rng = np.random.default_rng([self.seed or 0, zlib.crc32(str(sample.sample_id).encode())])
        noise = torch.from_numpy(rng.random((L.frames, *L.grid)))
        return from_token_map(noise, adapter.image_size, L.tubelet, mode="nearest")


@METHODS.register("control_constant")
class ConstantControl(_Control):
    name = "control_constant"

    def explain_sample(self, adapter, sample, target):
        L = adapter.layout
        return from_token_map(torch.ones(L.frames, *L.grid), adapter.image_size, L.tubelet, mode="nearest")


def _from_mask(adapter, sample, inverted: bool) -> Explanation:
    m = sample.mask.detach().cpu().float()
    frames = None if sample.frames is None else sample.frames.detach().cpu().float()
    if inverted:
        m = 1.0 - m
        frames = None if frames is None else 1.0 - frames
    if frames is None:
        frames = m.flatten(1).amax(1)
    L = adapter.layout
    tok = torch.nn.functional.adaptive_avg_pool3d(m[None, None], (L.frames, *L.grid))[0, 0]
    return Explanation(volume=m, frame_scores=frames, token_map=tok)


@METHODS.register("control_gt")
class GroundTruthControl(_Control):
    name = "control_gt"
    requires = ("mask",)

    def explain_sample(self, adapter, sample, target):
        return _from_mask(adapter, sample, inverted=False)


@METHODS.register("control_gt_inverted")
class InvertedGroundTruthControl(_Control):
    name = "control_gt_inverted"
    requires = ("mask",)

    def explain_sample(self, adapter, sample, target):
        return _from_mask(adapter, sample, inverted=True)
