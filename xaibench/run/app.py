"""``xaibench``: the Hydra entry point.

    xaibench                                        # the default experiment
    xaibench experiment=NAME                        # conf/experiment/NAME.yaml
    xaibench model=vit_synth dataset=synthetic_image method=chefer
    xaibench -m method=staa,chefer                  # a sweep (one run folder per value)
    xaibench dataset.n_samples=8                    # limit every dataset of the experiment
    xaibench resume=true hydra.run.dir=DIR          # continue an interrupted run

The configs are the package's ``xaibench.conf`` (the repository's ``conf/``),
found through Hydra's ``pkg://`` search path, so an installed wheel runs from
any folder; ``--config-dir DIR`` or ``hydra.searchpath=[file://DIR]`` add a
user's own config folders.  Every run folder gets the tables of
:mod:`xaibench.analysis.results` and ``provenance.json``.

Exit status: 0 complete, 2 a user mistake (a message, no traceback), 130
interrupted; in a multirun a failing point is recorded in its folder
(``error.txt``, provenance status ``failed``), the other points still run and
the command exits 1 at the end.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from ..errors import UserError

FAILED: list = []


def _schema():
    """Open (non-struct) ``model``, ``dataset``, ``method`` and ``metric`` nodes: any key may be given as a
    global override without Hydra's ``+``; the runner checks the keys against the experiment's components."""
    node = OmegaConf.create({g: {} for g in ("model", "dataset", "method", "metric")})
    for g in ("model", "dataset", "method", "metric"):
        OmegaConf.set_struct(node[g], False)
    ConfigStore.instance().store(name="xaibench_schema", node=node)


_schema()


def register_schemas() -> None:
    """Import the component registries: each registration stores its typed config in Hydra's ConfigStore
    (``schema/<group>/<name>``), which the YAML files of the group extend.  Must run before Hydra composes."""
    from .. import datasets, methods, metrics, models  # noqa: F401


def _task(cfg: DictConfig):
    import torch

    from .runner import Runner

    hc = HydraConfig.get()
    out = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    try:
        threads = cfg.get("threads")
        if threads is not None:
            if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
                raise UserError(f"threads={threads!r} must be a positive integer (or null for torch's default)")
            torch.set_num_threads(int(threads))
        choices = {g: hc.runtime.choices.get(g) for g in ("model", "dataset", "method", "metric")}
        summary, status = Runner(cfg, out, choices).run()
    except UserError as e:
        print(f"xaibench: error: {e}", file=sys.stderr)
        if not multirun:
            sys.exit(2)
        _record_failure(out, e)
        return None
    if status != "complete":
        sys.exit(130)
    return summary


def _record_failure(out: Path, e: Exception):
    """A failing point of a sweep: its error in its own folder; the other points go on."""
    from ..io import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "error.txt", f"{type(e).__name__}: {e}\n")
    prov = out / "provenance.json"
    data = json.loads(prov.read_text()) if prov.exists() else {}
    data.update(status="failed", error=str(e))
    atomic_write_text(prov, json.dumps(data, indent=2, default=str))
    FAILED.append(str(out))


def _check_folder(arg: str):
    """``hydra.run.dir`` / ``hydra.sweep.dir``: an existing file, or a folder that cannot be created, is a
    clear error before Hydra tries (Hydra itself would print a traceback)."""
    key, _, value = arg.partition("=")
    p = Path(os.path.expanduser(value))
    if p.exists() and not p.is_dir():
        raise UserError(f"{key}={value} is a file, not a folder; choose a folder for the run's results")
    parent = p
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{key}={value}: {parent} is a file, so the folder cannot be created")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{key}={value}: {parent} is not writable; choose a folder you can write to")


def main():
    args = sys.argv[1:]
    try:
        for a in args:
            if a.lstrip("+").startswith(("hydra.run.dir=", "hydra.sweep.dir=")):
                _check_folder(a.lstrip("+"))
    except UserError as e:
        print(f"xaibench: error: {e}", file=sys.stderr)
        sys.exit(2)
    register_schemas()
    hydra.main(config_path="pkg://xaibench.conf", config_name="config", version_base="1.3")(_task)()
    if FAILED:
        print(f"xaibench: {len(FAILED)} point(s) of the sweep failed (see error.txt in): " + ", ".join(FAILED),
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
