"""Evaluation metrics, one file per family, registered by name (the interface: :mod:`xaibench.metrics.base`).

``create(name, **params)`` returns a :class:`~xaibench.metrics.base.Metric` built from its typed config
(unknown or out-of-range parameters are a :class:`~xaibench.errors.UserError`); ``available()`` lists the
names.  A metric scores a batch: ``metric.evaluate(EvalBatch(adapter, items, batch_size, services))``, one dict
per item; what each number is (direction, kind, aggregation) is declared in ``metric.outputs``.
"""

from .base import METRICS, EvalBatch, EvalItem, Metric, Services, evaluate_items  # noqa: E402,F401

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
