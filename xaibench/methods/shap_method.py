"""KernelSHAP (Lundberg & Lee, NeurIPS 2017, "A Unified Approach to
Interpreting Model Predictions") with the ``shap`` package's ``KernelExplainer``.

Shapley values of the set function ``v(S) = f(x_S, b_{not S})`` -- ``f`` the
target-class logit, ``x_S`` the input with the interpretable features in ``S``
kept and all others replaced by the baseline ``b`` (black by default) -- over
M features (superpixels for images, space-time tubelets or SLIC supervoxels
for video; :mod:`xaibench.perturb`), with the budget rule of
:mod:`xaibench.methods._perturbation` (``n_samples >= min(4 M, 2^M)``)::

    phi = argmin_phi  sum_z  pi(z) (v(z) - v(0) - phi . z)^2
          s.t.        sum_f phi_f = v(1) - v(0) = f(x) - f(b)

with the Shapley kernel ``pi(z) = (M - 1) / (C(M, |z|) |z| (M - |z|))`` and
``n_samples`` coalitions ``z`` (complete subset sizes enumerated first, the
rest sampled, paired with their complements, as shap does), no L1 feature
selection (``l1_reg=False``: every feature gets a value).

Why KernelExplainer and not the Permutation explainer: its cost is set freely
by ``n_samples`` (the Permutation explainer needs at least ``2M + 1``
evaluations per permutation, 1,569 for a TimeSformer clip in 784 tubelets),
and the efficiency constraint is enforced exactly whatever the budget.  The
background is the single all-off coalition (the baseline input), so the
explainer's expected value is ``f(b)``.

Several samples in one model batch: KernelExplainer draws its coalitions
before it evaluates any of them, and the draw depends only on M, ``n_samples``
and the seed.  So each sample is explained twice by the library: first with a
recording value function that stops the explainer once its coalitions are
drawn (no model pass), then -- after the coalitions of every sample of the
batch were evaluated together (:class:`xaibench.perturb.Perturber`) -- with a
value function that serves those outputs in the order the explainer asks for
them (checked row by row).  The values are those of one sample at a time.

Seeding: KernelExplainer draws from numpy's *global* generator; each call runs
under ``np.random.seed(seed)`` and restores the previous global state after,
so equal seeds give identical values.  The adapter counts every evaluated
input (the coalitions, ``f(x)`` and ``f(b)``; repeated coalitions once).
``seed`` defaults to the run's ``seed``.  Feature values are painted onto
their regions (``volume``); see :func:`xaibench.methods._perturbation.to_explanation`.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np

from .base import METHODS
from ._perturbation import CoalitionConfig, CoalitionMethod, Plan, to_explanation


@dataclass
class ShapConfig(CoalitionConfig):
    """KernelSHAP's parameters: those of every coalition method (features, budget, seed, batch size)."""


class _Drawn(Exception):
    """Raised inside KernelExplainer once its coalitions are drawn (the recording pass)."""


class _Served:
    """The value function of the second pass: the evaluated outputs, in the recorded order."""

    def __init__(self, coalitions: np.ndarray, values: np.ndarray):
        self.z, self.v, self.i = coalitions, values, 0

    def __call__(self, data) -> np.ndarray:
        data = np.asarray(data) > 0.5
        n = data.shape[0]
        if not np.array_equal(data, self.z[self.i:self.i + n]):
            raise RuntimeError("KernelExplainer asked for other coalitions than it drew (shap changed?)")
        out = self.v[self.i:self.i + n]
        self.i += n
        return out


@METHODS.register("shap")
class Shap(CoalitionMethod):
    name = "shap"
    Config = ShapConfig

    def n_coalitions(self, m: int) -> int:
        n = self.cfg.n_samples
        return min(n, 2 ** m) if m <= 30 else n  # shap enumerates at most 2^M - 2 (+ f(x), f(b))

    def _kernel_shap(self, M: int, f):
        """(phi, expected value) of KernelExplainer on M features with value function ``f``, seeded."""
        import shap
        from threadpoolctl import threadpool_limits

        state = np.random.get_state()
        shap_log = logging.getLogger("shap")
        level = shap_log.level
        try:
            np.random.seed(self.seed_value)
            shap_log.setLevel(logging.ERROR)
            # one BLAS thread for the small regressions: multi-threaded BLAS idling in spin waits
            # beside the model's threads cost more than the solve itself
            with warnings.catch_warnings(), threadpool_limits(1, user_api="blas"):
                warnings.simplefilter("ignore")
                explainer = shap.KernelExplainer(f, np.zeros((1, M)))
                if getattr(f, "record", False):
                    def stop():
                        f.rows.append(np.asarray(explainer.synth_data[:explainer.nsamplesAdded]) > 0.5)
                        raise _Drawn

                    explainer.run = stop
                phi = explainer.shap_values(np.ones((1, M)), nsamples=self.cfg.n_samples, l1_reg=False, silent=True)
        finally:
            np.random.set_state(state)
            shap_log.setLevel(level)
        return np.asarray(phi, dtype=np.float64).reshape(-1)[:M], explainer.expected_value

    def draw(self, plan: Plan) -> np.ndarray:
        """Every coalition KernelExplainer evaluates, in its order: f(b), f(x), then its sampled design."""
        M = plan.features.n

        def f(data):
            f.rows.append(np.asarray(data) > 0.5)
            return np.zeros(np.asarray(data).shape[0])

        f.rows, f.record = [], True
        try:
            self._kernel_shap(M, f)
        except _Drawn:
            pass
        return np.concatenate(f.rows, 0)

    def fit(self, plan: Plan):
        M = plan.features.n
        phi, expected = self._kernel_shap(M, _Served(plan.coalitions, plan.values))
        return to_explanation(phi, plan.features.ids, plan.adapter, cell=np.float64(plan.cell),
                              expected_value=np.asarray(expected, dtype=np.float64))
