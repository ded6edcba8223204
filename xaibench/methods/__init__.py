"""Attribution methods, one file each, registered by name.

``create(name, **params)`` returns a :class:`~xaibench.methods.base.Method`;
``available()`` lists the names.
"""

from .base import METHODS, Explanation, Method  # noqa: E402,F401

import importlib as _importlib
import pkgutil as _pkgutil

# every module in this package registers its entries on import (one file per method)
for _m in sorted(m.name for m in _pkgutil.iter_modules(__path__)):
    if _m != "base":
        _importlib.import_module(f"{__name__}.{_m}")


def create(name: str, **params) -> Method:
    return METHODS.create(name, **params)


def available():
    return METHODS.available()
