"""A tiny name -> factory registry (in the spirit of timm's model registry).

Each component family (methods, metrics, datasets, models) owns one
:class:`Registry`.  Factories (classes or functions) register with a decorator
and are created by name; an unknown name raises
:class:`~xaibench.errors.UserError` listing the valid ones.

Configs keep user-facing parameter names.  Where a Python keyword differs
(``lambda`` is reserved in Python), the factory declares it once in its
``aliases`` mapping (config name -> keyword), and :meth:`Registry.create`
translates; :meth:`Registry.parameters` lists the config names a factory accepts.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable, Dict, List, Optional

from .errors import UserError


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: Dict[str, Callable[..., Any]] = {}

    def register(self, name: str | None = None):
        def deco(obj):
            key = name or getattr(obj, "name", None) or obj.__name__
            if key in self._entries and self._entries[key] is not obj:
                raise RuntimeError(f"{self.kind} {key!r} registered twice")
            self._entries[key] = obj
            return obj

        return deco

    def get(self, name: str):
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(str(name), self._entries, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UserError(
                f"unknown {self.kind} {name!r}.{hint} Valid {self.kind}s: {', '.join(self.available())}"
            ) from None

    def parameters(self, name: str) -> Optional[List[str]]:
        """Config parameter names the factory accepts (``None``: any, it takes ``**kwargs``)."""
        factory = self.get(name)
        if inspect.isclass(factory) and factory.__init__ is object.__init__:
            return sorted(getattr(factory, "extra_parameters", ()))  # a class without parameters
        target = factory.__init__ if inspect.isclass(factory) else factory
        sig = inspect.signature(target)
        if any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
            extra = getattr(factory, "extra_parameters", None)
            if extra is None:
                return None
        else:
            extra = ()
        back = {v: k for k, v in getattr(factory, "aliases", {}).items()}
        names = [back.get(p, p) for p, v in sig.parameters.items()
                 if p != "self" and v.kind not in (v.VAR_KEYWORD, v.VAR_POSITIONAL)]
        return sorted(set(names) | set(extra))

    def create(self, name: str, **kwargs):
        factory = self.get(name)
        aliases = getattr(factory, "aliases", {})
        kwargs = {aliases.get(k, k): v for k, v in kwargs.items()}
        try:
            return factory(**kwargs)
        except TypeError as e:  # wrong parameter names are a user mistake
            if any(t in str(e) for t in ("unexpected keyword argument", "missing", "takes no arguments")):
                raise UserError(f"bad parameters for {self.kind} {name!r}: {e}") from None
            raise

    def available(self) -> List[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries
