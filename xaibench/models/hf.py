"""Compatibility names for code written before the families had one module each (import from the family
modules instead: :mod:`xaibench.models.hf_vit`, ``hf_swin``, ``hf_timesformer``, ``hf_base``).

``build_hf_*(**values)`` return the library model at random initialisation from the global RNG, sized by
typed values (:func:`xaibench.models.family.raw_model`).
"""

from __future__ import annotations

from .family import raw_model
from .hf_base import HFAdapter, force_eager, hf_labels, module_name  # noqa: F401
from .hf_swin import HFSwinAdapter  # noqa: F401
from .hf_timesformer import HFTimesformerAdapter  # noqa: F401
from .hf_vit import HFViTAdapter  # noqa: F401


def build_hf_timesformer(**values):
    return raw_model("hf_timesformer", **values)


def build_hf_vit(**values):
    return raw_model("hf_vit", **values)


def build_hf_swin(**values):
    return raw_model("hf_swin", **values)
