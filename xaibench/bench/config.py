"""Locating and loading the component configs under ``conf/``.

``conf/<group>/<name>.yaml`` (group = model, dataset, method, metric) is a flat
mapping: ``name`` (the registry name) plus the component's parameters.  The
configuration folder is ``$XAIBENCH_CONF`` if set, else the repository's
``conf/``.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..errors import UserError

CONF_DIR = Path(os.environ.get("XAIBENCH_CONF", Path(__file__).resolve().parents[2] / "conf"))
GROUPS = ("model", "dataset", "method", "metric", "experiment")


def available(group: str):
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def load_component(group: str, name: str) -> DictConfig:
    if group not in GROUPS:
        raise ValueError(group)
    path = CONF_DIR / group / f"{name}.yaml"
    if not path.exists():
        raise UserError(f"unknown {group} config {name!r} (no {path}); valid {group} configs: "
                        f"{', '.join(available(group))}")
    cfg = OmegaConf.load(path)
    cfg.pop("defaults", None)
    return cfg


@contextmanager
def user_errors():
    """Print a UserError's message (no traceback) and exit with status 2."""
    try:
        yield
    except UserError as e:
        print(f"xaibench: error: {e}", file=sys.stderr)
        sys.exit(2)
