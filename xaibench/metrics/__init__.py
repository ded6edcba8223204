"""Evaluation metrics, one file per family, registered by name.

``create(name, **params)`` returns a :class:`~xaibench.metrics.base.Metric`;
``available()`` lists the names; ``higher_is_better(output_name)`` looks up the
direction of any reported number.
"""

from .base import METRICS, EvalContext, Metric  # noqa: E402,F401

import importlib as _importlib
import pkgutil as _pkgutil

# every module in this package registers its entries on import (one file per metric)
for _m in sorted(m.name for m in _pkgutil.iter_modules(__path__)):
    if _m != "base":
        _importlib.import_module(f"{__name__}.{_m}")


def create(name: str, **params) -> Metric:
    return METRICS.create(name, **params)


def available():
    return METRICS.available()
