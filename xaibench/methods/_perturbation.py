"""What SHAP and LIME share on top of :mod:`xaibench.perturb`: the typed parameters, the budget rule, the
memory bound, the packed evaluation of the coalitions of several samples, the progress hook, and painting
feature values back onto the input.

Interpretable features: ``features`` / ``cell`` / ``frames_per_group`` /
``n_segments`` / ``compactness`` / ``baseline`` / ``blur_sigma`` as in
:class:`xaibench.perturb.FeatureConfig` (declared there once); the default
``cell`` is the model's *final* token size (its patch size for ViT /
TimeSformer, ``image_size / final grid`` for Swin) and the default
``frames_per_group`` is 2.

Budget rule (``budget``)
------------------------
A surrogate over M features from n model evaluations is only well posed when
n is large against M; below that, the weighted least squares of KernelSHAP is
ill-conditioned (values of 1e11 were seen) and LIME's ridge fit is dominated
by sampling noise.  The rule: ``n_samples >= min(4 * M, 2**M)`` (``2**M``: all
coalitions enumerated, exact).  When it fails, ``budget=refuse`` (default)
stops with a message naming the numbers and the fixes; ``budget=coarsen``
doubles the grid ``cell`` (then ``frames_per_group``) until the rule holds and
records the cell used; ``budget=allow`` runs anyway (only to reproduce a
published protocol that used such a budget).

Memory bound
------------
The surrogate libraries hold every coalition in memory: KernelSHAP its sampled
design matrix, its mask matrix, the solver's weighted copies and a tuple of M
floats per distinct coalition; LIME the int64 draw, its float copy and the
ridge fit's copies -- a peak of about 49-50 bytes per coalition and feature
for both (measured with ``tracemalloc``, shap 0.51, lime 0.2), budgeted as
``bytes_per_value`` = 64.  Before anything is drawn, a sample whose
coalitions would need more than half of the available memory is refused with
a :class:`~xaibench.errors.UserError` naming ``method.n_samples``, the memory
it would need and the largest ``n_samples`` that fits; for grid features the
harness checks this at plan time (``check_fit``), before any sample is
explained, so such a run stops with that one line and exit status 2.  The model's inputs
are composed one model batch at a time (:class:`xaibench.perturb.Perturber`),
so their memory does not grow with ``n_samples``.

Several samples at once
-----------------------
``explain_batch`` draws every sample's coalitions first, then evaluates all of
them through one :class:`~xaibench.perturb.Perturber`, which packs the
perturbed inputs of several samples into full model batches (``batch_size``),
and then fits each sample's surrogate.  The coalitions of a sample depend
only on ``seed`` and M, so each sample's values equal those of
``explain`` on that sample alone (up to the float rounding of the batched
model; tested).  ``progress(done, total)`` -- an attribute the runner may set
on the method object -- is called after every model batch with the
coalitions answered so far and the total of the call.

From feature values to an explanation
-------------------------------------
Every position gets its feature's value ``phi_f`` (the convention of Captum and
of the LIME / SHAP image plots); the token map is the volume average-pooled to
the model's token grid; frame score ``t`` is ``sum_f phi_f * |f in frame t| / |f|``
(each feature's value split over the frames it spans in proportion to its
size there, so frame scores sum to ``sum_f phi_f``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..config import param
from ..errors import UserError
from ..explanation import Explanation
from ..perturb import FeatureConfig, Features, Perturber, available_memory, gib, token_cell
from .base import Method

BUDGETS = ("refuse", "coarsen", "allow")
#: the share of the available memory that one sample's coalitions may take
MEMORY_SHARE = 0.5


def min_samples(m: int) -> int:
    """The budget rule: evaluations needed for ``m`` features."""
    return min(4 * m, 2 ** m) if m < 62 else 4 * m


@dataclass
class CoalitionConfig(FeatureConfig):
    """Parameters of SHAP and LIME (module docstring)."""

    frames_per_group: int = param(2, range=(1, 4096), active=lambda c: c.features == "grid",
                                  help="consecutive frames per grid feature (space-time tubelets)")
    n_samples: int = param(512, range=(1, 10 ** 7), help="model evaluations (coalitions) per sample")
    batch_size: int = param(32, range=(1, 1 << 20), neutral=True, help="model batch size of the coalitions")
    seed: Optional[int] = param(None, range=(0, 2 ** 32 - 1), help="seed of the coalitions (null: the run's seed)")
    budget: str = param("refuse", choices=BUDGETS,
                        help="when n_samples < min(4 M, 2^M) for M features: refuse, coarsen the features, or allow")


@dataclass
class Plan:
    """One sample's work: its features, coalitions (K, M) and, once evaluated, their target logits."""

    adapter: object
    x: torch.Tensor
    target: int
    features: Features
    cell: int
    coalitions: Optional[np.ndarray] = None
    values: Optional[np.ndarray] = None
    state: object = None


class CoalitionMethod(Method):
    """Base of SHAP and LIME: subclasses define :meth:`draw` (the coalitions of one sample, before any model
    evaluation), :meth:`fit` (the feature values from the evaluated coalitions) and ``bytes_per_value`` (the
    memory their library needs per coalition and feature)."""

    Config = CoalitionConfig
    bytes_per_value = 64
    #: ``progress(done, total)``: coalitions answered so far in the current call (set by the runner)
    progress: Optional[Callable[[int, int], None]] = None

    @property
    def seed_value(self) -> int:
        return 0 if self.cfg.seed is None else int(self.cfg.seed)

    def check_fit(self, adapter) -> None:
        """Plan time: grid features (and the budget rule) must fit the model's input, and their coalitions the
        memory bound (:meth:`check_memory`), before any sample is explained.  (SLIC features are counted, and
        checked, per sample.)"""
        if self.cfg.features == "grid":
            feats, _ = self.features(adapter, torch.zeros(adapter.input_shape))
            self.check_memory(feats.n)

    # ------------------------------------------------------------------ features and the budget rule
    def features(self, adapter, x: torch.Tensor):
        """(Features, cell) of ``x``, applying the budget rule."""
        c = self.cfg
        method = self.name
        cell = c.cell or token_cell(adapter, -1)
        fpg = c.frames_per_group
        noted = self.__dict__.setdefault("_noted", set())
        while True:
            spec = c.replace(cell=cell, frames_per_group=fpg)
            feats = spec.features_of(x, cell, "method")
            m = feats.n
            if c.n_samples >= min_samples(m) or c.budget == "allow":
                return feats, cell
            if c.budget == "refuse" or c.features != "grid":
                raise UserError(
                    f"{method}: {c.n_samples} model evaluations are too few for {m} features (the rule is "
                    f"n_samples >= min(4 M, 2^M) = {min_samples(m)}; below it the estimate is ill-conditioned). "
                    f"Raise method.n_samples to {min_samples(m)}, use coarser features (method.cell, "
                    f"method.frames_per_group), or set method.budget=coarsen")
            H = x.shape[-1]
            if cell * 2 <= H and H % (cell * 2) == 0:
                cell *= 2
            elif fpg < x.shape[0]:
                fpg *= 2
            else:
                raise UserError(f"{method}: cannot coarsen below {m} features; raise method.n_samples")
            note = f"{method}: budget rule: coarsened the features to cell={cell}, frames_per_group={fpg}"
            if note not in noted:  # once per setting, not once per sample
                noted.add(note)
                warnings.warn(note, stacklevel=3)

    def n_coalitions(self, m: int) -> int:
        """How many coalitions the surrogate evaluates for ``m`` features (at most ``n_samples``)."""
        return self.cfg.n_samples

    def check_memory(self, m: int) -> None:
        """Refuse, before anything is drawn, a sample whose coalitions would not fit (module docstring)."""
        n = self.n_coalitions(m)
        per = self.bytes_per_value * m + 64
        need, avail = n * per, available_memory("cpu")
        if need > MEMORY_SHARE * avail:
            fits = int(MEMORY_SHARE * avail // per)
            raise UserError(
                f"{self.name}: method.n_samples={self.cfg.n_samples} with {m} features would need about "
                f"{gib(need)} of memory for the coalitions ({self.bytes_per_value} bytes per coalition and "
                f"feature), more than half of the {gib(avail)} available; lower method.n_samples (at most about "
                f"{fits} fits) or use coarser features (method.cell, method.frames_per_group)")

    # ------------------------------------------------------------------ explaining
    def explain_batch(self, adapter, xs: torch.Tensor, targets: Sequence[int]) -> List[Explanation]:
        """Explanations of several samples whose coalitions are evaluated together (module docstring)."""
        c = self.cfg
        plans = []
        for x, t in zip(xs, targets):
            feats, cell = self.features(adapter, x)
            self.check_memory(feats.n)
            plans.append(Plan(adapter, x, int(t), feats, cell))
        for pl in plans:
            pl.coalitions = self.draw(pl)
        # evaluate in groups whose coalition matrices fit together in the memory bound
        budget = MEMORY_SHARE * available_memory("cpu")
        group: List[Plan] = []
        size = 0
        total = sum(len(pl.coalitions) for pl in plans)
        done = [0]
        for pl in plans:
            b = pl.coalitions.size + 16 * len(pl.coalitions)
            if group and size + b > budget:
                self._evaluate(adapter, group, done, total)
                group, size = [], 0
            group.append(pl)
            size += b
        if group:
            self._evaluate(adapter, group, done, total)
        return [self.fit(pl) for pl in plans]

    def _evaluate(self, adapter, plans: List[Plan], done: list, total: int):
        c = self.cfg
        start = done[0]

        def report(n, _):
            done[0] = start + n
            if self.progress is not None:
                self.progress(done[0], total)

        p = Perturber(adapter, batch_size=c.batch_size, progress=report)
        reqs = []
        for pl in plans:
            base = c.baseline_of(pl.x, np.random.default_rng(self.seed_value))
            src = p.source(pl.x, pl.features, base, cacheable=not c.random_baseline, baseline_key=c.baseline_key())
            reqs.append(p.add(src, torch.from_numpy(pl.coalitions), _TargetLogit(pl.target)))
        p.run()
        for pl, r in zip(plans, reqs):
            pl.values = r.values.cpu().numpy()

    def draw(self, plan: Plan) -> np.ndarray:
        raise NotImplementedError

    def fit(self, plan: Plan) -> Explanation:
        raise NotImplementedError


class _TargetLogit:
    """The target class's logit of each row, float64 (the surrogates' value function)."""

    def __init__(self, target: int):
        self.target = int(target)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return logits[:, self.target].double()


def to_explanation(phi: np.ndarray, ids: torch.Tensor, adapter, **extras) -> Explanation:
    """Paint feature values ``phi`` (M,) back onto the input positions (module docstring)."""
    phi_t = torch.as_tensor(np.asarray(phi, dtype=np.float64))
    ids = ids.cpu()
    vol = phi_t[ids].float()  # (T, H, W)
    T, M = ids.shape[0], phi_t.numel()
    counts = torch.stack([torch.bincount(ids[t].reshape(-1), minlength=M).double() for t in range(T)])
    frac = counts / counts.sum(0, keepdim=True).clamp_min(1)
    frame_scores = (frac * phi_t[None]).sum(1).float()
    L = adapter.layout
    token_map = F.adaptive_avg_pool3d(vol[None, None], (L.frames, *L.grid))[0, 0]
    return Explanation(volume=vol, frame_scores=frame_scores, token_map=token_map,
                       extras={k: torch.as_tensor(v) for k, v in extras.items()})
