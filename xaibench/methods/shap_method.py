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

Seeding: KernelExplainer draws from numpy's *global* generator; the call runs
under ``np.random.seed(seed)`` and restores the previous global state after,
so equal seeds give identical values.  Model evaluations are batched
(``batch_size``); the adapter counts every evaluated input (the coalitions,
``f(x)`` and ``f(b)``).  ``seed`` defaults to the run's ``seed``.  Feature values are painted onto their regions
(``volume``); see :func:`xaibench.methods._perturbation.to_explanation`.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np

from .base import METHODS
from ._perturbation import FEATURE_PARAMS, PerturbationSetup, to_explanation
from .base import Method


@METHODS.register("shap")
class Shap(Method):
    name = "shap"
    extra_parameters = FEATURE_PARAMS

    def __init__(self, n_samples: int = 512, batch_size: int = 32, seed: int = 0, budget: str = "refuse",
                 **features):
        self.setup = PerturbationSetup(n_samples, batch_size, seed, budget, lo=1, **features)

    def params(self):
        return self.setup.params()

    def explain(self, adapter, x, target):
        import shap
        from threadpoolctl import threadpool_limits

        s = self.setup
        ids, cell = s.features(adapter, x, "shap")
        f = s.value_function(adapter, x, target, ids)
        M = int(ids.max()) + 1
        state = np.random.get_state()
        shap_log = logging.getLogger("shap")
        level = shap_log.level
        try:
            np.random.seed(s.seed)
            shap_log.setLevel(logging.ERROR)
            # one BLAS thread for the small regressions: multi-threaded BLAS idling in spin waits
            # beside the model's threads cost more than the solve itself
            with warnings.catch_warnings(), threadpool_limits(1, user_api="blas"):
                warnings.simplefilter("ignore")
                explainer = shap.KernelExplainer(f, np.zeros((1, M)))
                phi = explainer.shap_values(np.ones((1, M)), nsamples=s.n_samples, l1_reg=False, silent=True)
        finally:
            np.random.set_state(state)
            shap_log.setLevel(level)
        phi = np.asarray(phi, dtype=np.float64).reshape(-1)[:M]
        return to_explanation(phi, ids, adapter, cell=np.float64(cell),
                              expected_value=np.asarray(explainer.expected_value, dtype=np.float64))
