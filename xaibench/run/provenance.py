"""Provenance recorded beside every result table: versions, git revision, seed, config."""

from __future__ import annotations

import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

PACKAGES = ("xaibench", "torch", "torchvision", "transformers", "timm", "numpy", "pandas", "scikit-learn", "scipy",
            "shap", "lime", "captum", "hydra-core", "omegaconf", "h5py", "av", "safetensors", "quantus")


def git_revision(path: Path | None = None) -> str:
    """HEAD commit of the repository holding xaibench, with ``-dirty`` if it has uncommitted changes."""
    cwd = str(path or Path(__file__).resolve().parents[2])
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (rev + ("-dirty" if dirty else "")) if rev else "unknown"
    except Exception:
        return "unknown"


def versions() -> dict:
    out = {"python": sys.version.split()[0]}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return out


def provenance(config: dict, seed: int) -> dict:
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_revision": git_revision(),
        "seed": seed,
        "versions": versions(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "config": config,
    }
