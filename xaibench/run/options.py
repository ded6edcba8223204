"""The top-level options of a run (checked, with a clear message for every bad value), device selection, and
the signal handling that makes an interruption clean (SIGTERM like Ctrl-C; no interruption while the tables
are written)."""

from __future__ import annotations

import signal
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Optional

import torch
from omegaconf import DictConfig

from ..errors import UserError, check_range

#: top-level options that cannot change any result: a resumed run may differ in them
NEUTRAL_OPTIONS = ("resume", "threads", "print_summary", "save_figures", "gallery", "report", "workers", "warmup",
                   "batch_size", "explain_batch_size", "cache", "hydra")
DEVICES = "auto, cpu, cuda or cuda:N"


@dataclass
class Options:
    seed: int
    batch_size: int
    explain_batch_size: int
    target: str
    warmup: bool
    save_figures: int
    gallery: int
    resume: bool
    threads: Optional[int]
    workers: int
    print_summary: bool
    report: bool
    device: str
    precision: str
    shard: Optional[tuple]
    alpha: float
    cache: bool


def _bool(name, v) -> bool:
    if isinstance(v, bool):
        return v
    raise UserError(f"{name}={v!r} must be true or false")


def _int(name, v, lo, hi=2 ** 31 - 1) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float)) and not str(v).lstrip("-").isdigit():
        raise UserError(f"{name}={v!r} must be an integer in [{lo}, {hi}]")
    return check_range(name, v, lo, hi, integer=True)


def validate_options(cfg: DictConfig) -> Options:
    """Every top-level option, checked: a clear message (exit 2) instead of a traceback later."""
    g = cfg.get
    target = g("target", "predicted")
    if target not in ("predicted", "label"):
        raise UserError(f"target={target!r}; valid: predicted (explain the predicted class), label (the true one)")
    threads = g("threads")
    device = str(g("device", "auto"))
    if not (device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())):
        raise UserError(f"device={device!r}; valid: {DEVICES}")
    precision = str(g("precision", "fp32"))
    if precision not in ("fp32", "bf16", "fp16"):
        raise UserError(f"precision={precision!r}; valid: fp32, bf16, fp16")
    shard = g("shard")
    if shard is not None:
        parts = str(shard).split("/")
        if len(parts) != 2 or not all(p.isdigit() for p in parts) or not 0 <= int(parts[0]) < int(parts[1]):
            raise UserError(f"shard={shard!r} must be I/N with 0 <= I < N (e.g. shard=0/4 ... shard=3/4)")
        shard = (int(parts[0]), int(parts[1]))
    alpha = g("alpha", 0.05)
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not 0 < alpha < 1:
        raise UserError(f"alpha={alpha!r} must be a significance level in (0, 1), e.g. 0.05")
    return Options(
        seed=_int("seed", g("seed", 0), 0, 2 ** 32 - 1), batch_size=_int("batch_size", g("batch_size", 32), 1),
        explain_batch_size=_int("explain_batch_size", g("explain_batch_size", 8), 1), target=target,
        warmup=_bool("warmup", g("warmup", True)), save_figures=_int("save_figures", g("save_figures", 0), 0),
        gallery=_int("gallery", g("gallery", 0), 0), resume=_bool("resume", g("resume", False)),
        threads=None if threads is None else _int("threads", threads, 1, 1024),
        workers=_int("workers", g("workers", 0), 0, 256), print_summary=_bool("print_summary",
                                                                               g("print_summary", True)),
        report=_bool("report", g("report", False)), device=device, precision=precision, shard=shard,
        alpha=float(alpha), cache=_bool("cache", g("cache", True)))


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


