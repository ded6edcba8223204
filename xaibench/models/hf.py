"""Compatibility names for code written before the families had one module each (import from the family
modules instead: :mod:`xaibench.models.hf_vit`, ``hf_swin``, ``hf_timesformer``, ``hf_base``).

``build_hf_*(**values)`` return the library model at random initialisation from the global RNG, sized by
typed values (:func:`xaibench.models.family.raw_model`); ``id2label`` / ``label2id`` name its classes.
"""

from __future__ import annotations

from .family import raw_model
from .hf_base import HFAdapter, force_eager, hf_labels, module_name  # noqa: F401
from .hf_swin import HFSwinAdapter  # noqa: F401
from .hf_timesformer import HFTimesformerAdapter  # noqa: F401
from .hf_vit import HFViTAdapter  # noqa: F401


def _build(family: str, values: dict):
    labels = {k: values.pop(k) for k in ("id2label", "label2id") if k in values}
    model = raw_model(family, **values)
    if "id2label" in labels:
        model.config.id2label = {int(i): str(c) for i, c in labels["id2label"].items()}
        model.config.label2id = {c: i for i, c in model.config.id2label.items()}
    elif "label2id" in labels:
        model.config.label2id = {str(c): int(i) for c, i in labels["label2id"].items()}
        model.config.id2label = {i: c for c, i in model.config.label2id.items()}
    return model


def build_hf_timesformer(**values):
    return _build("hf_timesformer", values)


def build_hf_vit(**values):
    return _build("hf_vit", values)


def build_hf_swin(**values):
    return _build("hf_swin", values)
