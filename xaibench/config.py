"""Typed component configs: one dataclass per component, the single source of its parameters.

Every component (model, dataset, method, metric) and the run itself declares a
dataclass derived from :class:`ComponentConfig`.  Its fields are the
component's parameters with their user-facing names, types, defaults, allowed
ranges or choices and a one-line help text (:func:`param`).  The dataclass is

* registered in Hydra's ConfigStore (group ``schema/<group>``, name = the
  registry name), and every YAML file of the group extends it
  (``defaults: [/schema/method/staa@_here_, _self_]``), so Hydra checks names
  and types when it composes the config and ``--cfg job`` shows every typed
  parameter with its default;
* used by :func:`build` to check ranges, choices and cross-field rules right
  after composition, before anything is loaded: a bad value is a
  :class:`~xaibench.errors.UserError` naming the field and what is allowed;
* the component's only description of its parameters: ``cfg.params()`` is what
  the results' ``params`` column records, ``describe()`` what ``--help`` prints.

A parameter whose user-facing name is not a Python identifier (STAA's
``lambda``) declares it once: ``lam: float = param(1.0, key="lambda")``.
"""

from __future__ import annotations

import dataclasses
import difflib
import keyword
import math
import typing
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, List, Optional, Sequence, Tuple

from .errors import UserError

CONFIG_MODULE = "xaibench.conf"
#: where the configs are in a checkout (the package ``xaibench.conf`` maps to it)
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def conf_dir() -> Path:
    """The folder of the packaged configs (works for a checkout, an editable and a wheel install)."""
    from importlib.resources import files

    return Path(str(files(CONFIG_MODULE)))

#: metadata key of our parameter declarations on dataclass fields
_META = "xaibench"


def param(default: Any = MISSING, *, range: Optional[Tuple[float, float]] = None,
          choices: Optional[Sequence[Any]] = None, key: Optional[str] = None, help: str = "",
          active: Optional[Callable[[Any], bool]] = None, check: Optional[Callable[[Any], Optional[str]]] = None,
          default_factory: Any = MISSING, neutral: bool = False, sweepable_list: bool = False,
          allowed: str = ""):
    """One typed parameter of a component config.

    * ``range=(lo, hi)``: inclusive bounds of a number (``None`` on a side: unbounded); integers must be
      whole numbers;
    * ``choices``: the allowed values (strings, usually);
    * ``key``: the user-facing name when it is not a Python identifier (``lambda``);
    * ``help``: one line for ``xaibench --help`` and docs;
    * ``active(cfg) -> bool``: whether the parameter matters for this configuration (e.g. STAA's lambda only
      when ``enhance``); an inactive parameter is left out of ``params()`` (the results' ``params`` column)
      and a list of values for it does not multiply the component into arms;
    * ``check(value) -> message or None``: any further rule (the message says what is allowed);
    * ``neutral``: the value cannot change a result (batch sizes, workers): a resumed run may change it;
    * ``sweepable_list``: the parameter takes a list by nature (``ratios``): a list value is one value, not
      one arm per element.
    """
    md = dict(range=range, choices=tuple(choices) if choices is not None else None, key=key, help=help,
              active=active, check=check, neutral=neutral, list_value=sweepable_list, allowed=allowed)
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata={_META: md})
    return field(default=default, metadata={_META: md})


@dataclass(frozen=True)
class ParamSpec:
    """What a config declares about one parameter (from its dataclass field)."""

    name: str        # the Python attribute
    key: str         # the user-facing name
    type: Any
    default: Any
    range: Optional[Tuple[float, float]]
    choices: Optional[Tuple[Any, ...]]
    help: str
    active: Optional[Callable]
    check: Optional[Callable]
    neutral: bool
    list_value: bool
    allowed_text: str = ""

    @property
    def required(self) -> bool:
        return self.default is MISSING

    def allowed(self) -> str:
        """What values are allowed, in words (for messages and --help)."""
        base, optional = _unwrap(self.type)
        if self.allowed_text:
            return self.allowed_text
        if self.choices is not None:
            text = "one of " + ", ".join(_show(c) for c in self.choices)
        elif self.range is not None:
            lo, hi = self.range
            text = f"{_tname(base)} in [{_show(lo) if lo is not None else '-inf'}, " \
                   f"{_show(hi) if hi is not None else 'inf'}]"
        else:
            text = _tname(base)
        return text + (" or null" if optional else "")


def _show(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return repr(v)
    return str(v)


def _unwrap(tp) -> Tuple[Any, bool]:
    """(the type inside Optional[...], whether None is allowed)."""
    if typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
        return Any, True
    return tp, False


def _tname(tp) -> str:
    origin = typing.get_origin(tp)
    if origin in (list, tuple, List, Tuple):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return f"list of {_tname(args[0])}" if args else "list"
    return {int: "integer", float: "number", bool: "true/false", str: "text"}.get(tp, getattr(tp, "__name__", "value"))


class ComponentConfig:
    """Base of every typed component config (a dataclass).  Class attributes set by :func:`component`:

    * ``group``: ``model``, ``dataset``, ``method``, ``metric`` or ``run``;
    * ``registry_name``: the component's registry name (the ``name`` key of its YAML files);
    * ``fixed_reason``: for components without parameters that must refuse any (a shipped trained model),
      the sentence that says why.
    """

    group: ClassVar[str] = ""
    registry_name: ClassVar[str] = ""
    fixed_reason: ClassVar[str] = ""

    # ------------------------------------------------------------- declarations
    @classmethod
    def specs(cls) -> List[ParamSpec]:
        hints = typing.get_type_hints(cls)
        out = []
        # the component's own parameters first, the ones shared through base configs after them
        depth = {}
        for d, klass in enumerate(cls.__mro__):
            for name in getattr(klass, "__annotations__", {}):
                depth[name] = d
        for f in sorted(dataclasses.fields(cls), key=lambda f: depth.get(f.name, 0)):
            md = f.metadata.get(_META, {})
            default = f.default if f.default is not MISSING else (
                f.default_factory() if f.default_factory is not MISSING else MISSING)
            out.append(ParamSpec(f.name, md.get("key") or f.name, hints.get(f.name, Any), default,
                                 md.get("range"), md.get("choices"), md.get("help", ""), md.get("active"),
                                 md.get("check"), bool(md.get("neutral")), bool(md.get("list_value")),
                                 md.get("allowed", "")))
        return out

    @classmethod
    def keys(cls) -> List[str]:
        """The user-facing parameter names."""
        return [s.key for s in cls.specs()]

    @classmethod
    def spec(cls, key: str) -> ParamSpec:
        for s in cls.specs():
            if s.key == key:
                return s
        raise KeyError(key)

    # ------------------------------------------------------------- values
    def get(self, key: str):
        return getattr(self, self.spec(key).name)

    def values(self) -> Dict[str, Any]:
        """Every parameter by its user-facing name."""
        return {s.key: getattr(self, s.name) for s in self.specs()}

    def is_active(self, key: str) -> bool:
        s = self.spec(key)
        return s.active is None or bool(s.active(self))

    def params(self) -> Dict[str, Any]:
        """The parameters that matter for this configuration (the results' ``params`` column)."""
        return {s.key: _plain(getattr(self, s.name)) for s in self.specs()
                if s.active is None or s.active(self)}

    def replace(self, **changes) -> "ComponentConfig":
        return dataclasses.replace(self, **changes)

    def validate(self) -> None:
        """Cross-field rules of a component (override; raise :class:`UserError`)."""


def _plain(v):
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


# ------------------------------------------------------------------ checking values
def _coerce(where: str, spec: ParamSpec, value):
    """``value`` as the parameter's type, or a UserError naming the field and what is allowed."""
    tp, optional = _unwrap(spec.type)
    bad = UserError(f"{where}={_show_value(value)} is not allowed: {spec.key} must be {spec.allowed()}"
                    + (f" ({spec.help})" if spec.help else ""))
    if value is None:
        if optional or spec.default is None:
            return None
        raise bad
    if tp is Any:
        out = value
    elif tp is bool:
        if not isinstance(value, bool):
            raise bad
        out = value
    elif tp is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise bad
        out = value
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        out = float(value)
        if math.isnan(out):
            raise bad
    elif tp is str:
        if not isinstance(value, str):
            raise bad
        out = value
    elif typing.get_origin(tp) in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise bad
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        item = ParamSpec(spec.name, spec.key, args[0] if args else Any, MISSING, spec.range, spec.choices,
                         spec.help, None, None, False, False)
        items = [_coerce(f"{where}[{i}]", item, v) for i, v in enumerate(value)]
        out = tuple(items) if typing.get_origin(tp) is tuple else items
        if spec.check is not None:
            msg = spec.check(out)
            if msg:
                raise UserError(f"{where}={_show_value(value)} is not allowed: {msg}")
        return out
    else:  # a nested typed config or another declared type
        out = value
    if spec.choices is not None and out not in spec.choices:
        close = difflib.get_close_matches(str(out), [str(c) for c in spec.choices], n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UserError(f"{where}={_show_value(value)} is not allowed: valid values are "
                        f"{', '.join(_show(c) for c in spec.choices)}.{hint}")
    if spec.range is not None and isinstance(out, (int, float)) and not isinstance(out, bool):
        lo, hi = spec.range
        if (lo is not None and out < lo) or (hi is not None and out > hi):
            raise UserError(f"{where}={_show_value(value)} is out of range: allowed range is "
                            f"[{_show(lo) if lo is not None else '-inf'}, {_show(hi) if hi is not None else 'inf'}]"
                            + (f" ({spec.help})" if spec.help else ""))
    if spec.check is not None:
        msg = spec.check(out)
        if msg:
            raise UserError(f"{where}={_show_value(value)} is not allowed: {msg}")
    return out


def _show_value(v) -> str:
    if isinstance(v, str):
        return v
    return _show(v) if not isinstance(v, (list, tuple)) else "[" + ",".join(_show(x) for x in v) + "]"


def build(cls, values: Optional[dict] = None, *, where: Optional[str] = None):
    """A checked instance of the config class ``cls`` from user-facing ``values`` (missing keys: defaults).

    ``where`` prefixes every message (``method`` -> "method.lambda=-1 is out of range ...").  Unknown keys,
    wrong types, out-of-range values and failed cross-field rules are :class:`UserError` naming the field.
    """
    values = dict(values or {})
    prefix = (cls.group or "config") if where is None else where
    specs = {s.key: s for s in cls.specs()}
    unknown = [k for k in values if k not in specs]
    if unknown:
        raise unknown_key_error(cls, unknown[0], prefix)
    kwargs = {}
    for key, s in specs.items():
        if key in values:
            kwargs[s.name] = _coerce(_dotted(prefix, key), s, values[key])
        elif s.required:
            raise UserError(f"{_dotted(prefix, key)} is required: give {s.allowed()}" + (f" ({s.help})" if s.help else ""))
    cfg = cls(**kwargs)
    cfg.validate()
    return cfg


def _dotted(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def unknown_key_error(cls, key: str, prefix: str) -> UserError:
    keys = cls.keys()
    if not keys:
        reason = cls.fixed_reason or f"{cls.registry_name or prefix} takes no parameters"
        return UserError(f"{_dotted(prefix, key)}: {reason}")
    close = difflib.get_close_matches(str(key), keys, n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    what = cls.registry_name if cls.group != "run" else "xaibench (a top-level option)"
    return UserError(f"{_dotted(prefix, key)} is not a parameter of {what or prefix}.{hint} "
                     f"Its parameters: {', '.join(keys)}")


# ------------------------------------------------------------------ Hydra's ConfigStore
def schema(cls) -> type:
    """The dataclass Hydra composes against: the config's fields under their user-facing names, plus ``name``.

    A field with another user-facing name (``lambda``) cannot be a Python attribute, so the schema class is
    made without an ``__init__`` (OmegaConf reads only the fields and their defaults).
    """
    ann, ns = {"name": str}, {"name": cls.registry_name}
    for s in cls.specs():
        tp, optional = _unwrap(s.type)
        # a method parameter may hold a list of values (one method arm per value, xaibench.run.plan): Hydra
        # checks its name, :func:`build` its values
        ann[s.key] = Any if cls.group == "method" else _omegaconf_type(s.type)
        d = s.default
        if d is MISSING:
            ns[s.key] = MISSING
        elif isinstance(d, (list, tuple)):
            ns[s.key] = field(default_factory=lambda d=d: list(d))
        else:
            ns[s.key] = d
    ns["__annotations__"] = ann
    ns["__module__"] = cls.__module__
    return dataclass(init=False, repr=False, eq=False)(type(cls.__name__ + "Schema", (), ns))


def _omegaconf_type(tp):
    base, optional = _unwrap(tp)
    if base in (int, float, bool, str):
        out = base
    elif typing.get_origin(base) in (list, tuple):
        args = [a for a in typing.get_args(base) if a is not Ellipsis]
        inner = args[0] if args and args[0] in (int, float, bool, str) else Any
        out = List[inner]
    else:
        out = Any
    return Optional[out] if optional or out is Any else out


def store(cls) -> None:
    """Register ``cls`` in Hydra's ConfigStore as ``schema/<group>/<registry name>``."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(group=f"schema/{cls.group}", name=cls.registry_name, node=schema(cls))
