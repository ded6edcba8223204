"""Name -> component registries (in the spirit of timm's model registry), each entry with its typed config.

Each component family (models, datasets, methods, metrics) owns one
:class:`Registry`.  An entry is a factory (a class or a function) that takes
one argument, its typed config (:mod:`xaibench.config`), and is registered
with that config class::

    @METHODS.register("staa")          # the config class is STAA.Config
    class STAA(Method):
        Config = STAAConfig

    MODELS.register("vit_synth", config=ShippedConfig)(load_vit_synth)

Registering also puts the config's schema into Hydra's ConfigStore
(``schema/<group>/<name>``), which the group's YAML files extend.  An unknown
name raises :class:`~xaibench.errors.UserError` listing the valid ones.

Transition: an entry registered without a typed config is created from
keyword arguments as before (``aliases`` translate config names); such
entries are being migrated and :meth:`Registry.untyped` lists them.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from typing import Any, Callable, Dict, List, Optional

from .config import ComponentConfig, build, store, unknown_key_error
from .errors import UserError


def _takes_config(obj) -> bool:
    """Whether a class's constructor takes one config argument (``__init__(self, cfg=None)``)."""
    if not inspect.isclass(obj):
        return True
    params = [p for p in inspect.signature(obj.__init__).parameters.values() if p.name != "self"]
    return len(params) == 1 and params[0].name == "cfg"


class Registry:
    def __init__(self, kind: str):
        self.kind = kind  # the config group: model, dataset, method, metric
        self._entries: Dict[str, Callable[..., Any]] = {}
        self._configs: Dict[str, Optional[type]] = {}

    # ------------------------------------------------------------------ registering
    def register(self, name: Optional[str] = None, *, config: Optional[type] = None):
        def deco(obj):
            key = name or getattr(obj, "name", None) or obj.__name__
            if key in self._entries and self._entries[key] is not obj:
                raise RuntimeError(f"{self.kind} {key!r} registered twice")
            cfg_cls = config or getattr(obj, "Config", None)
            if config is None and cfg_cls is not None and not _takes_config(obj):
                cfg_cls = None  # a class still created from keywords (being migrated)
            if cfg_cls is not None:
                if not (isinstance(cfg_cls, type) and issubclass(cfg_cls, ComponentConfig)
                        and dataclasses.is_dataclass(cfg_cls)):
                    raise TypeError(f"{self.kind} {key!r}: its config must be a ComponentConfig dataclass")
                if cfg_cls.registry_name and cfg_cls.registry_name != key:
                    # one config class serving several names (e.g. shipped models): a subclass per name
                    cfg_cls = dataclasses.dataclass(type(cfg_cls.__name__, (cfg_cls,),
                                                         {"__module__": cfg_cls.__module__}))
                cfg_cls.group, cfg_cls.registry_name = self.kind, key
                store(cfg_cls)
            self._entries[key] = obj
            self._configs[key] = cfg_cls
            return obj

        return deco

    # ------------------------------------------------------------------ looking up
    def get(self, name: str):
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(str(name), self._entries, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UserError(
                f"unknown {self.kind} {name!r}.{hint} Valid {self.kind}s: {', '.join(self.available())}"
            ) from None

    def config(self, name: str) -> Optional[type]:
        """The typed config class of ``name`` (None for an entry not yet migrated)."""
        self.get(name)
        return self._configs[name]

    def untyped(self) -> List[str]:
        """Entries registered without a typed config."""
        return sorted(k for k, c in self._configs.items() if c is None)

    def parameters(self, name: str) -> Optional[List[str]]:
        """The user-facing parameter names of ``name`` (``None``: an untyped entry taking any keyword)."""
        cfg = self.config(name)
        if cfg is not None:
            return list(cfg.keys())
        factory = self.get(name)
        if inspect.isclass(factory) and factory.__init__ is object.__init__:
            return sorted(getattr(factory, "extra_parameters", ()))
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

    # ------------------------------------------------------------------ creating
    def build_config(self, name: str, values: Optional[dict] = None, where: str = ""):
        """A checked config instance of ``name`` from user-facing values (:func:`xaibench.config.build`)."""
        cfg = self.config(name)
        if cfg is None:
            raise TypeError(f"{self.kind} {name!r} has no typed config yet")
        return build(cfg, values, where=where or self.kind)

    def create(self, name: str, cfg=None, **values):
        """The component ``name`` from a config instance, or from user-facing values (checked)."""
        factory = self.get(name)
        cfg_cls = self._configs[name]
        if cfg_cls is not None:
            if cfg is None:
                cfg = build(cfg_cls, values, where=self.kind)
            elif values:
                raise TypeError("give a config instance or values, not both")
            return factory(cfg)
        aliases = getattr(factory, "aliases", {})
        kwargs = {aliases.get(k, k): v for k, v in values.items()}
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

    def __iter__(self):
        return iter(self.available())


__all__ = ["Registry", "unknown_key_error"]
