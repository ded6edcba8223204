"""From the composed Hydra config to a plan: which models, datasets, methods and metrics, with which parameters.

One configuration mechanism, Hydra:

* the config groups ``model/``, ``dataset/``, ``method/``, ``metric/`` and
  ``experiment/`` live in the package (``xaibench.conf``, the repository's
  top-level ``conf/`` folder) and are found through Hydra's search path
  (``pkg://xaibench.conf``), together with any ``--config-dir`` /
  ``hydra.searchpath`` a user adds;
* ``model=M dataset=D method=X metric=Y`` select one component of a group (and
  ``-m method=a,b`` sweeps them); a selection replaces the experiment's list
  for that group;
* an experiment (``experiment=NAME``) lists benchmarks, methods and metrics by
  config name; those names are loaded through the same search path with
  Hydra's compose API (:func:`load`), never read from files by hand;
* the top-level ``model`` / ``dataset`` / ``method`` / ``metric`` nodes, when
  no component of that group is selected, hold *global overrides*: each key is
  applied to every component of the experiment that accepts it
  (``method.lambda=0.5``).  A key that no component accepts is an error that
  names the near keys.

A list value of a method parameter (``method.lambda=[0,0.5,1]``) expands into
one method arm per value, labelled by the value; arms that differ only in
parameters that do not change the forward pass share one trace.

Components are then created through their registry (:mod:`xaibench.registry`),
which declares the one translation of config names to Python names
(``lambda`` -> ``lam``).
"""

from __future__ import annotations

import difflib
import itertools
import json
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from omegaconf import DictConfig, ListConfig, OmegaConf

from ..config import CONF_DIR, CONFIG_MODULE, conf_dir  # noqa: F401  (re-exported)
from ..errors import UserError

GROUPS = ("model", "dataset", "method", "metric")
#: keys of a component config that are not parameters of the component
NOT_PARAMS = ("name", "train", "label", "config")
#: config keys that seed a component with the run's ``seed`` unless set explicitly
SEED_KEY = "seed"


@contextmanager
def hydra_context():
    """Hydra's global state: the running app's (search path with the user's config dirs), or, outside an app
    (library use, tests), the packaged configs."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        yield
        return
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        yield


def options(group: str) -> List[str]:
    """The config names available in a group (over the whole search path)."""
    from hydra.core.global_hydra import GlobalHydra

    with hydra_context():
        return sorted(GlobalHydra.instance().config_loader().get_group_options(group))


def load(group: str, name: str) -> dict:
    """The config ``<group>/<name>.yaml`` composed by Hydra from the search path, as a plain dict."""
    from hydra import compose
    from hydra.errors import ConfigCompositionException, MissingConfigException

    if group in GROUPS:
        registry(group)  # registers the group's schemas (schema/<group>/<name>) that the YAML files extend
    with hydra_context():
        try:
            cfg = compose(config_name=f"{group}/{name}")
        except MissingConfigException:  # (a subclass of ConfigCompositionException: caught first)
            valid = options(group)
            close = difflib.get_close_matches(str(name), valid, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UserError(f"unknown {group} config {name!r}.{hint} Valid {group} configs: {', '.join(valid)} "
                            f"(add your own with --config-dir DIR holding {group}/NAME.yaml)") from None
        except ConfigCompositionException as e:
            raise UserError(f"{group} config {name!r} could not be composed: {e}") from None
    node = cfg.get(group, cfg)
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else {}


def registry(group: str):
    from .. import datasets, methods, metrics, models

    return {"model": models.MODELS, "dataset": datasets.DATASETS, "method": methods.METHODS,
            "metric": metrics.METRICS}[group]


@dataclass
class Component:
    """One configured component: its label (config name, or ``label``), registry name and parameters."""

    group: str
    label: str
    name: str
    params: dict = field(default_factory=dict)

    def accepted(self) -> Optional[List[str]]:
        return registry(self.group).parameters(self.name)

    def config(self):
        """The checked typed config (:mod:`xaibench.config`); a bad value is a UserError naming the field and
        the component.  ``None`` for an entry without a typed config (being migrated)."""
        reg = registry(self.group)
        if reg.config(self.name) is None:
            return None
        return reg.build_config(self.name, self.params, where=self.where)

    @property
    def where(self) -> str:
        return self.group if self.label == self.name else f"{self.group} {self.label}:{self.group}"

    def check(self) -> None:
        """Check every value now (before any model or data loads)."""
        self.config()

    def create(self):
        cfg = self.config()
        if cfg is None:
            return registry(self.group).create(self.name, **self.params)
        return registry(self.group).create(self.name, cfg)


def _plain(v):
    return OmegaConf.to_container(v, resolve=True) if isinstance(v, (DictConfig, ListConfig)) else v


def component(group: str, entry) -> Component:
    """A component from an experiment entry: a config name, or a mapping ``{config: NAME, label: ..., **params}``."""
    entry = _plain(entry)
    if isinstance(entry, dict):
        entry = dict(entry)
        cfg_name = entry.pop("config", None) or entry.get("name")
        if cfg_name is None:
            raise UserError(f"a {group} entry needs `config` (a {group} config name): {entry}")
        label = entry.pop("label", cfg_name)
        params = load(group, str(cfg_name))
        params.update(entry)
    else:
        label = str(entry)
        params = load(group, label)
    return from_params(group, label, params)


def from_params(group: str, label: str, params: dict) -> Component:
    params = {k: v for k, v in dict(params).items() if k not in ("train", "label", "config")}
    name = params.pop("name", None)
    if name is None:
        raise UserError(f"{group} config {label!r} has no `name` (the registry name of the component)")
    return Component(group, label, str(name), params)


def check_keys(group: str, keys, comps: List[Component], *, selected: bool):
    """Refuse override keys that no component of ``comps`` accepts, naming the near keys."""
    accepted, anything = set(), False
    for c in comps:
        acc = c.accepted()
        if acc is None:
            anything = True
        else:
            accepted |= set(acc)
    for k in keys:
        if anything or k in accepted:
            continue
        close = difflib.get_close_matches(k, sorted(accepted), n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        who = ", ".join(sorted({c.label for c in comps}))
        if not accepted:
            reasons = {getattr(registry(group).config(c.name), "fixed_reason", "") for c in comps} - {""}
            if len(reasons) == 1:  # e.g. a shipped trained model: say why, and what to use instead
                raise UserError(f"{group}.{k}: {reasons.pop()}")
            raise UserError(f"{group}.{k}: {who} take(s) no parameters.{hint}")
        raise UserError(f"{group}.{k} matches no parameter of the experiment's {group}s ({who}).{hint} "
                        f"Valid {group} parameters: {', '.join(sorted(accepted))}")


def apply_overrides(group: str, comps: List[Component], overrides: dict) -> List[Component]:
    """Global overrides: every key the user gave goes to each component that accepts it (``null`` included: it
    unsets an optional parameter, e.g. ``dataset.n_per_class=null``)."""
    check_keys(group, overrides, comps, selected=False)
    out = []
    for c in comps:
        acc = c.accepted()
        p = dict(c.params)
        for k, v in overrides.items():
            if acc is None or k in acc:
                if group == "model" and acc == []:
                    continue
                p[k] = v
        out.append(Component(c.group, c.label, c.name, p))
    return out


def expand_lists(comp: Component, list_keys=None) -> List[Component]:
    """A method whose parameters hold lists (``lambda: [0, 0.5]``) -> one arm per combination, labelled
    ``label[key=value,...]``; parameters that take lists by nature (``ratios``, ``depths``) are kept."""
    reg = registry(comp.group)
    cfg_cls = reg.config(comp.name)
    if cfg_cls is not None:
        acc_lists = {s.key for s in cfg_cls.specs() if s.list_value or _is_list_type(s.type)}
    else:
        acc_lists = set(getattr(reg.get(comp.name), "list_parameters", ()))
    keys = [k for k, v in comp.params.items() if isinstance(v, list) and k not in acc_lists]
    if not keys:
        return [comp]
    if cfg_cls is not None:
        # a list for a parameter that does not matter in this configuration (STAA's lambda without enhance)
        # makes no arms: the component runs once with its own value
        probe = dict(comp.params)
        probe.update({k: comp.params[k][0] for k in keys if comp.params[k]})
        try:
            cfg = reg.build_config(comp.name, probe, where=comp.where)
        except UserError:
            cfg = None
        if cfg is not None:
            inactive = [k for k in keys if not cfg.is_active(k)]
            if inactive:
                comp = Component(comp.group, comp.label, comp.name,
                                 {k: v for k, v in comp.params.items() if k not in inactive})
                keys = [k for k in keys if k not in inactive]
                if not keys:
                    return [comp]
    arms = []
    for values in itertools.product(*(comp.params[k] for k in keys)):
        p = dict(comp.params)
        p.update(zip(keys, values))
        tag = ",".join(f"{k}={_fmt(v)}" for k, v in zip(keys, values))
        arms.append(Component(comp.group, f"{comp.label}[{tag}]", comp.name, p))
    return arms


def _is_list_type(tp) -> bool:
    import typing

    base = [a for a in typing.get_args(tp) if a is not type(None)] if typing.get_origin(tp) is typing.Union else [tp]
    return any(typing.get_origin(b) in (list, tuple) for b in base)


def _fmt(v) -> str:
    return json.dumps(v) if not isinstance(v, str) else v


@dataclass
class Plan:
    benchmarks: List[Tuple[Component, Component]]  # (model, dataset), dataset possibly "auto" (fit to model)
    methods: List[Component]
    metrics: List[Component]
    selected: Dict[str, Optional[str]]


def plan(cfg: DictConfig, choices: Dict[str, Optional[str]]) -> Plan:
    """Resolve the composed config into components (module docstring).  ``choices``: the group options the
    user selected (``hydra.runtime.choices``; None where none)."""
    exp = cfg.experiment
    sel = {g: choices.get(g) for g in GROUPS}
    for group, key in (("method", "methods"), ("metric", "metrics")):
        if not sel[group] and not exp.get(key):
            raise UserError(f"the experiment has no {group}s: list some in experiment.{key}, or select one with "
                            f"{group}=NAME (valid: {', '.join(options(group))})")
    if not (sel["model"] and sel["dataset"]) and not exp.get("benchmarks"):
        raise UserError("the experiment has no benchmarks: list {model: ..., dataset: ...} pairs in "
                        "experiment.benchmarks, or select model=NAME dataset=NAME")

    def selected_component(group):
        node = _plain(cfg.get(group)) or {}
        return from_params(group, sel[group], node)

    def listed(group, entries):
        if sel[group]:
            comp = selected_component(group)
            check_keys(group, comp.params, [Component(group, comp.label, comp.name, {})], selected=True)
            return [comp]
        comps = [component(group, e) for e in (entries or [])]
        return apply_overrides(group, comps, _plain(cfg.get(group)) or {})

    methods = [arm for c in listed("method", exp.get("methods")) for arm in expand_lists(c)]
    metrics = listed("metric", exp.get("metrics"))
    seen: Dict[str, Component] = {}
    for c in metrics:  # one metric's outputs are its rows' names: two settings of it would share them
        if c.name in seen:
            raise UserError(f"the experiment lists the metric {c.name!r} twice ({seen[c.name].label!r} and "
                            f"{c.label!r}); its rows are named by its outputs, so one run holds one setting of "
                            f"it. Compare settings with a sweep instead, e.g. xaibench -m 'metric.PARAM=A,B'")
        seen[c.name] = c
    bench = [_plain(b) for b in (exp.get("benchmarks") or [])]

    def key(c: Component) -> str:
        return json.dumps([c.label, c.params], sort_keys=True, default=str)

    found = {}  # group -> {key of the experiment's component: that component after the overrides}
    for group in ("model", "dataset"):
        if not sel[group]:
            raw = {}
            for b in bench:
                c = component(group, b[group])
                raw.setdefault(key(c), c)
            found[group] = dict(zip(raw, apply_overrides(group, list(raw.values()), _plain(cfg.get(group)) or {})))
    if sel["model"] or sel["dataset"]:
        # a selection: every model with every dataset that fits it (checked when the model is built)
        models = listed("model", None) if sel["model"] else list(found["model"].values())
        datasets = listed("dataset", None) if sel["dataset"] else list(found["dataset"].values())
        pairs = [(m, d) for m in models for d in datasets]
    else:  # the experiment's own pairing, with the overrides applied
        pairs = [(found["model"][key(component("model", b["model"]))],
                  found["dataset"][key(component("dataset", b["dataset"]))]) for b in bench]
    if not pairs:
        raise UserError("the experiment has no benchmarks: list {model: ..., dataset: ...} pairs in "
                        "experiment.benchmarks, or select model=NAME dataset=NAME")
    return Plan(pairs, methods, metrics, sel)


def user_errors():
    """Print a UserError's message (no traceback) and exit with status 2."""
    return _UserErrors()


class _UserErrors:
    def __enter__(self):
        return self

    def __exit__(self, typ, e, tb):
        if typ is not None and issubclass(typ, UserError):
            print(f"xaibench: error: {e}", file=sys.stderr)
            sys.exit(2)
        return False
