"""What SHAP and LIME share on top of :mod:`xaibench.perturb`: feature set-up, the budget rule, the
coalition value function and painting feature values back onto the input.

Interpretable features: ``features`` / ``cell`` / ``frames_per_group`` /
``n_segments`` / ``compactness`` / ``baseline`` as in :mod:`xaibench.perturb`;
the default ``cell`` is the model's *final* token size (its patch size for
ViT / TimeSformer, ``image_size / final grid`` for Swin).

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

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError, check_range
from ..explanation import Explanation
from ..perturb import FeatureSpec, Perturber, make_baseline, n_features, token_cell

BUDGETS = ("refuse", "coarsen", "allow")
#: the feature / baseline parameters SHAP and LIME accept besides their own (see xaibench.perturb.FeatureSpec)
FEATURE_PARAMS = ("features", "cell", "frames_per_group", "n_segments", "compactness", "baseline", "blur_sigma")


def min_samples(m: int) -> int:
    """The budget rule: evaluations needed for ``m`` features."""
    return min(4 * m, 2 ** m) if m < 62 else 4 * m


class PerturbationSetup:
    """Parameters shared by SHAP and LIME (validated): features, baseline, budget, batch size, seed."""

    def __init__(self, n_samples: int, batch_size: int = 32, seed: int = 0, budget: str = "refuse",
                 lo: int = 1, **features):
        self.n_samples = check_range("method.n_samples", n_samples, lo, 10 ** 7, integer=True)
        self.batch_size = check_range("method.batch_size", batch_size, 1, 1 << 20, integer=True)
        self.seed = 0 if seed is None else check_range("method.seed", seed, 0, 2 ** 32 - 1, integer=True)
        if budget not in BUDGETS:
            raise UserError(f"method.budget={budget!r}; valid: {', '.join(BUDGETS)}")
        self.budget = budget
        features.setdefault("frames_per_group", 2)
        self.spec = FeatureSpec(prefix="method", **features)
        self._noted: set = set()

    def params(self) -> dict:
        return {"n_samples": self.n_samples, "seed": self.seed, "budget": self.budget, **self.spec.params()}

    def features(self, adapter, x: torch.Tensor, method: str):
        """(ids, cell) for ``x``, applying the budget rule."""
        cell = self.spec.cell or token_cell(adapter, -1)
        fpg = self.spec.frames_per_group
        while True:
            spec = FeatureSpec(**{**self.spec.__dict__, "cell": cell, "frames_per_group": fpg})
            ids = spec.ids(x, cell)
            m = n_features(ids)
            if self.n_samples >= min_samples(m) or self.budget == "allow":
                return ids, cell
            if self.budget == "refuse" or spec.features != "grid":
                raise UserError(
                    f"{method}: {self.n_samples} model evaluations are too few for {m} features (the rule is "
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
            if note not in self._noted:  # once per setting, not once per sample
                self._noted.add(note)
                warnings.warn(note, stacklevel=2)

    def value_function(self, adapter, x, target, ids):
        """``f(z)``: the target logit with the features of ``z`` kept and the others at the baseline."""
        base = make_baseline(x, self.spec.baseline, np.random.default_rng(self.seed), self.spec.blur_sigma)
        pert = Perturber(adapter, x, ids, base, self.batch_size, self.spec.cache_key(ids))

        def f(z) -> np.ndarray:
            keep = torch.as_tensor(np.asarray(z) > 0.5)
            return pert.logits(keep)[:, int(target)].double().cpu().numpy()

        return f


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
