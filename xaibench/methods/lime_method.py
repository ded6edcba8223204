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
(batched through the adapter, the coalitions of several samples packed into
the same model batches of ``batch_size``); we chose this over Captum's Lime
because Captum's default kernel measures distance between the perturbed
*inputs* rather than in LIME's interpretable space and its default surrogate
is a Lasso, both departing from LIME as published.

Seeded: the coalitions are drawn exactly as ``LimeImageExplainer(random_state=seed)``
draws them (``numpy.random.RandomState(seed).randint(0, 2, n * M)``, a private
generator, the global one untouched) and Ridge is deterministic, so equal
seeds give identical values -- and, for an image with the same segmentation
and ``hide_color`` = 0, the same values as ``LimeImageExplainer`` itself (a
test checks this); it costs ``n_samples`` forward passes (repeated coalitions
once).  ``seed`` defaults to the run's ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import param
from .base import METHODS
from ._perturbation import CoalitionConfig, CoalitionMethod, Plan, to_explanation


@dataclass
class LimeConfig(CoalitionConfig):
    n_samples: int = param(512, range=(2, 10 ** 7), help="model evaluations (coalitions) per sample")
    kernel_width: float = param(0.25, range=(1e-6, 1e6), help="width of LIME's exponential kernel")


@METHODS.register("lime")
class Lime(CoalitionMethod):
    name = "lime"
    Config = LimeConfig

    def draw(self, plan: Plan) -> np.ndarray:
        """LimeImageExplainer(random_state=seed)'s draw, value for value; the first row is the instance."""
        M, n = plan.features.n, self.cfg.n_samples
        z = np.random.RandomState(self.seed_value).randint(0, 2, n * M).reshape(n, M)
        z[0, :] = 1
        return z.astype(bool)

    def fit(self, plan: Plan):
        from lime.lime_base import LimeBase
        from sklearn.metrics import pairwise_distances
        from threadpoolctl import threadpool_limits

        M = plan.features.n
        z = plan.coalitions.astype(np.float64)
        y = plan.values[:, None]
        d = pairwise_distances(z, z[:1], metric="cosine").ravel()
        kw = self.cfg.kernel_width

        def kernel(dist):
            return np.sqrt(np.exp(-(dist ** 2) / kw ** 2))

        base = LimeBase(kernel, verbose=False, random_state=self.seed_value)
        with threadpool_limits(1, user_api="blas"):  # small regression: one BLAS thread (see shap_method)
            intercept, exp, score, _ = base.explain_instance_with_data(z, y, d, 0, M, feature_selection="none")
        phi = np.zeros(M)
        for k, wgt in exp:
            phi[int(k)] = wgt
        return to_explanation(phi, plan.features.ids, plan.adapter, cell=np.float64(plan.cell),
                              intercept=np.float64(intercept), score=np.float64(score))
