"""LIME (Ribeiro, Singh & Guestrin, KDD 2016, "Why Should I Trust You?") with
the ``lime`` package's :class:`lime.lime_base.LimeBase`.

Over M interpretable features (superpixels for images, space-time tubelets or
SLIC supervoxels for video; :mod:`xaibench.perturb`), with the budget rule of
:mod:`xaibench.methods._perturbation` (``n_samples >= min(4 M, 2^M)``)::

    z_1 = 1 (the instance), z_2..z_n ~ Uniform({0, 1}^M)       (n = n_samples)
    y_k = f(x_{z_k}, b_{not z_k})        target-class logit, baseline b (black)
    d_k = cosine distance(z_k, 1)
    pi_k = sqrt(exp(-d_k^2 / kernel_width^2))                   (kernel_width 0.25)
    (phi, c) = argmin sum_k pi_k (y_k - c - phi . z_k)^2 + alpha ||phi||^2
                                           (sklearn Ridge, alpha = 1, all features)

These are exactly the sampling, distance, kernel and surrogate of the lime
package's ``LimeImageExplainer`` (``hide_color`` = the baseline), whose
weighting and fitting we call (``LimeBase.explain_instance_with_data`` with
``feature_selection='none'``).  ``LimeImageExplainer`` itself only takes 2-D
H x W x 3 images with a 2-D segmentation and evaluates the classifier on
numpy images, so the perturbed inputs for video tubelets are built here
(batched through the adapter, ``batch_size`` at a time); we chose this over
Captum's Lime because Captum's default kernel measures distance between the
perturbed *inputs* rather than in LIME's interpretable space and its default
surrogate is a Lasso, both departing from LIME as published.

Seeded: the coalitions are drawn exactly as ``LimeImageExplainer(random_state=seed)``
draws them (``numpy.random.RandomState(seed).randint(0, 2, n * M)``, a private
generator, the global one untouched) and Ridge is deterministic, so equal
seeds give identical values -- and, for an image with the same segmentation
and ``hide_color`` = 0, the same values as ``LimeImageExplainer`` itself (a
test checks this); it costs ``n_samples`` forward passes.  ``seed`` defaults
to the run's ``seed``.
"""

from __future__ import annotations

import numpy as np

from ..errors import check_range
from .base import METHODS
from ._perturbation import FEATURE_PARAMS, PerturbationSetup, to_explanation
from .base import Method


@METHODS.register("lime")
class Lime(Method):
    name = "lime"
    extra_parameters = FEATURE_PARAMS

    def __init__(self, n_samples: int = 512, batch_size: int = 32, seed: int = 0, kernel_width: float = 0.25,
                 budget: str = "refuse", **features):
        self.setup = PerturbationSetup(n_samples, batch_size, seed, budget, lo=2, **features)
        self.kernel_width = check_range("method.kernel_width", kernel_width, 1e-6, 1e6)

    def params(self):
        return {**self.setup.params(), "kernel_width": self.kernel_width}

    def explain(self, adapter, x, target):
        from lime.lime_base import LimeBase
        from sklearn.metrics import pairwise_distances
        from threadpoolctl import threadpool_limits

        s = self.setup
        ids, cell = s.features(adapter, x, "lime")
        f = s.value_function(adapter, x, target, ids)
        M = int(ids.max()) + 1
        # the draw of LimeImageExplainer(random_state=seed).data_labels, value for value
        z = np.random.RandomState(s.seed).randint(0, 2, s.n_samples * M).reshape(s.n_samples, M)
        z[0, :] = 1
        z = z.astype(np.float64)
        y = f(z)[:, None]
        d = pairwise_distances(z, z[:1], metric="cosine").ravel()
        kw = self.kernel_width

        def kernel(dist):
            return np.sqrt(np.exp(-(dist ** 2) / kw ** 2))

        base = LimeBase(kernel, verbose=False, random_state=s.seed)
        with threadpool_limits(1, user_api="blas"):  # small regression: one BLAS thread (see shap_method)
            intercept, exp, score, _ = base.explain_instance_with_data(z, y, d, 0, M, feature_selection="none")
        phi = np.zeros(M)
        for k, wgt in exp:
            phi[int(k)] = wgt
        return to_explanation(phi, ids, adapter, cell=np.float64(cell), intercept=np.float64(intercept),
                              score=np.float64(score))
