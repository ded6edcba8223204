"""Models by name: one module per family, each registering its entries (:mod:`xaibench.models.family`).

* random-init architectures, sized by typed configs: ``hf_timesformer``, ``hf_videomae``, ``hf_vivit``,
  ``hf_vit``, ``hf_swin``, ``hf_dinov2``, ``timm_vit``, ``timm_deit``, ``timm_swin``;
* the project's own trained models (``models/weights``): ``timesformer_synth``, ``vit_synth``, ... ;
* published checkpoints from local files or the hub (``pretrained_*``, ``hf_pretrained``, ``timm_pretrained``:
  :mod:`xaibench.models.pretrained`) and models trained with ``xaibench-train`` (``trained``).

``create(name, **values)`` returns a :class:`~xaibench.models.base.ModelAdapter`; ``available()`` lists the
names; ``FAMILIES`` the families.  Importing this package imports neither ``transformers`` nor ``timm``:
a family imports its library when it builds or loads a model.
"""

from __future__ import annotations

import importlib as _importlib
import pkgutil as _pkgutil

from .base import MODELS, AttentionRecord, HookPoint, ModelAdapter, TokenLayout, Trace  # noqa: F401
from .card import ModelCard, Readout  # noqa: F401
from .family import (FAMILIES, SHIPPED, WEIGHTS_DIR, build, family, from_files, load_shipped,  # noqa: F401
                     raw_model, register_family, shipped_names, wrap)

#: modules that are not plugins (the conformance checks import the methods; hf is a compatibility module)
_NOT_PLUGINS = {"conformance", "hf"}

# every family module registers its entries on import (one file per family)
for _m in sorted(m.name for m in _pkgutil.iter_modules(__path__)):
    if _m not in _NOT_PLUGINS:
        _importlib.import_module(f"{__name__}.{_m}")


def create(name: str, **values) -> ModelAdapter:
    return MODELS.create(name, **values)


def available():
    return MODELS.available()
