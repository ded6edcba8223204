"""The run's own options (the top level of ``conf/config.yaml``) as one typed config, device selection, and the
signal handling that makes an interruption clean (SIGTERM like Ctrl-C; no interruption while the tables are
written).

:class:`RunConfig` is the single source of the options' names, defaults, ranges and help (``xaibench --help``
prints them).  Its schema, with open ``experiment``/``model``/``dataset``/``method``/``metric`` nodes, is the
primary config's schema in Hydra's ConfigStore (``xaibench_schema``), so Hydra refuses an unknown top-level
key and :func:`run_options` checks every value before anything loads.
"""

from __future__ import annotations

import signal
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

import torch
from omegaconf import DictConfig, OmegaConf

from ..config import ComponentConfig, build, param
from ..errors import UserError

DEVICES = "auto, cpu, cuda or cuda:N"
#: the parts of a run's fingerprint that a resume / merge may be told to accept when they differ
FINGERPRINT_ITEMS = ("config", "code", "versions", "weights", "data")


def _auto_or_int(v) -> Optional[str]:
    if v == "auto":
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 65536:
        return "an integer in [1, 65536] or auto"
    return None


def _device(v) -> Optional[str]:
    v = str(v)
    if v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit()):
        return None
    return f"one of {DEVICES}"


def _shard(v) -> Optional[str]:
    if v is None:
        return None
    parts = str(v).split("/")
    if len(parts) != 2 or not all(p.isdigit() for p in parts) or not 0 <= int(parts[0]) < int(parts[1]):
        return "I/N with 0 <= I < N (e.g. shard=0/4 ... shard=3/4)"
    return None


def _allow(v) -> Optional[str]:
    bad = [x for x in (v or []) if x not in FINGERPRINT_ITEMS]
    return f"a list of {', '.join(FINGERPRINT_ITEMS)}" if bad else None


@dataclass
class RunConfig(ComponentConfig):
    """The top-level options of ``xaibench``."""

    seed: int = param(0, range=(0, 2 ** 32 - 1),
                      help="seeds every seeded method, metric and control (SHAP, LIME, subsets, noise, tie orders)")
    batch_size: Any = param("auto", check=_auto_or_int, neutral=True, allowed="an integer in [1, 65536] or auto",
                            help="model batch size of perturbed inputs (auto: chosen per model and device)")
    explain_batch_size: Any = param("auto", check=_auto_or_int, neutral=True,
                                    allowed="an integer in [1, 65536] or auto",
                                    help="samples explained and evaluated together (auto: bounded by memory)")
    target: str = param("predicted", choices=("predicted", "label"),
                        help="explain the predicted class or the true label")
    warmup: bool = param(True, neutral=True, help="one untimed explanation per model x method before timing")
    device: str = param("auto", check=_device, allowed=DEVICES, help="auto (a CUDA GPU when present) | cpu | cuda | cuda:N")
    precision: str = param("fp32", choices=("fp32", "bf16", "fp16"),
                           help="forward-only passes on a low-precision copy of the weights; gradients in fp32 "
                                "(docs/models.md)")
    workers: int = param(0, range=(0, 256), neutral=True, help="data-loading worker processes")
    shard: Optional[str] = param(None, check=_shard, allowed="I/N or null", help="I/N: run every N-th sample starting at I")
    cache: bool = param(True, neutral=True,
                        help="in-run cache of model outputs keyed by the perturbation (shared across methods)")
    alpha: float = param(0.05, range=(1e-6, 0.5), help="significance level of verdicts and comparisons")
    save_figures: int = param(0, range=(0, 100000), neutral=True, help="PNG figures of the first N samples")
    gallery: int = param(4, range=(0, 100000), neutral=True, help="samples kept in gallery.h5 for report.html")
    report: bool = param(True, neutral=True, help="write report.html at the end of the run")
    resume: bool = param(False, neutral=True, help="continue an interrupted run in the same hydra.run.dir")
    allow_change: List[str] = param(default_factory=list, check=_allow, neutral=True,
                                    allowed=f"a list of {', '.join(FINGERPRINT_ITEMS)}",
                                    help="on resume: accept these fingerprint differences "
                                         f"({', '.join(FINGERPRINT_ITEMS)}); recorded in provenance.json")
    threads: Optional[int] = param(None, range=(1, 1024), neutral=True, help="torch threads (null: torch's default)")
    print_summary: bool = param(True, neutral=True, help="print the table at the end")

    @property
    def shard_pair(self) -> Optional[Tuple[int, int]]:
        if self.shard is None:
            return None
        i, n = str(self.shard).split("/")
        return int(i), int(n)


GROUPS = ("experiment", "model", "dataset", "method", "metric")


def run_options(cfg: DictConfig) -> RunConfig:
    """The checked top-level options of a composed config (a UserError names a bad value and what is allowed)."""
    keys = set(RunConfig.keys())
    values = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k in keys}
    return build(RunConfig, values, where="")


def neutral_options() -> Tuple[str, ...]:
    """Options that cannot change a result: a resumed run may differ in them."""
    return tuple(s.key for s in RunConfig.specs() if s.neutral) + ("hydra",)


def store_schema() -> None:
    """The primary config's schema (``xaibench_schema``): the typed options plus the open component nodes
    (their keys are checked by the plan against the experiment's components)."""
    from dataclasses import field, make_dataclass

    from hydra.core.config_store import ConfigStore

    from ..config import _omegaconf_type

    fields = [(g, Any, field(default_factory=dict)) for g in GROUPS]
    for s in RunConfig.specs():
        d = s.default
        f = field(default_factory=lambda d=d: list(d)) if isinstance(d, (list, tuple)) else field(default=d)
        fields.append((s.key, _omegaconf_type(s.type), f))
    node = OmegaConf.structured(make_dataclass("XaibenchConfig", fields))
    for g in GROUPS[1:]:  # global overrides: any key
        OmegaConf.set_struct(node[g], False)
    ConfigStore.instance().store(name="xaibench_schema", node=node)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"device={name} but no CUDA GPU is available here (torch {torch.__version__}, "
                            f"cuda build: {torch.version.cuda or 'none'}); use device=cpu or device=auto")
        idx = int(name[5:]) if ":" in name else 0
        if idx >= torch.cuda.device_count():
            raise UserError(f"device={name} but this machine has {torch.cuda.device_count()} GPU(s): "
                            f"cuda:0 ... cuda:{torch.cuda.device_count() - 1}")
    return torch.device(name)


# ---------------------------------------------------------------- signals
class _Stop(KeyboardInterrupt):
    """SIGTERM (what Slurm and `timeout` send), handled like Ctrl-C."""


@contextmanager
def stop_on_sigterm():
    def handler(signum, frame):
        raise _Stop()

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextmanager
def deferred_signals():
    """Ctrl-C / SIGTERM while the tables are written: finish writing, then stop (no half-written state)."""
    got = []

    def handler(signum, frame):
        got.append(signum)
        print("\n(writing the tables; stopping when done)", flush=True)

    try:
        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:
        yield got
        return
    try:
        yield got
    finally:
        for s, h in old.items():
            signal.signal(s, h)
