"""Hydra callbacks of xaibench, and the launcher check of the app.

:class:`MergeSweep` runs at the end of every multirun (``xaibench -m ...``), in
the process that launched the sweep (with every launcher): it merges the run
folders of the sweep folder with :func:`xaibench.analysis.merge.merge_runs`
(marks computed across the competing points, see that module) and writes
``results.parquet``, ``results.csv``, ``summary.csv``, ``validity.csv``,
``comparisons.csv``, ``ranking.csv`` (one column per swept key), ``runs.csv``
and ``merge.json`` into the sweep folder, then the multirun report
(:func:`xaibench.analysis.report.write_report`).  It is registered by
``conf/hydra/callbacks/merge.yaml``.

It also records the sweep's outcome in :data:`OUTCOME`: the points that did not
finish (``provenance.json`` status ``failed`` or ``interrupted``: a point whose
configuration was refused, whose process was killed, or that was stopped) and
the sweep folder; xaibench's local launcher adds the points whose process died.
The app prints them with the command that continues the sweep
(:func:`outcome_lines`, :func:`xaibench.run.runner.resume_command`) and exits 1
(the points may have run in other processes, which the app cannot see).

:func:`check_launcher` tells, before Hydra composes, that a launcher config needs
a plugin of the ``cluster`` extra that is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from pathlib import Path
from typing import List, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from ..errors import UserError

log = logging.getLogger(__name__)

#: the outcome of the multirun of this process: ``{"sweep_dir": str, "failed": [point folders]}`` (filled by
#: :class:`MergeSweep` and by xaibench's local launcher; read by the app through :func:`outcome_lines`)
OUTCOME: dict = {}


def note_points(sweep_dir, failed) -> None:
    """Record ``failed`` point folders of the sweep in ``sweep_dir`` in :data:`OUTCOME`."""
    OUTCOME["sweep_dir"] = str(sweep_dir)
    known = OUTCOME.setdefault("failed", [])
    known += [str(p) for p in failed if str(p) not in known]

#: launcher configs (``hydra/launcher=NAME``) -> the plugin module they need; ``local`` is xaibench's own
LAUNCHER_PLUGINS = {"slurm": "hydra_plugins.hydra_submitit_launcher",
                    "slurm_local": "hydra_plugins.hydra_submitit_launcher",
                    "submitit_slurm": "hydra_plugins.hydra_submitit_launcher",
                    "submitit_local": "hydra_plugins.hydra_submitit_launcher",
                    "joblib": "hydra_plugins.hydra_joblib_launcher"}
PLUGIN_PACKAGES = {"hydra_plugins.hydra_submitit_launcher": "hydra-submitit-launcher",
                   "hydra_plugins.hydra_joblib_launcher": "hydra-joblib-launcher"}


def check_launcher(args: List[str]) -> None:
    """``hydra/launcher=NAME`` on the command line whose plugin is not installed: one clear line (a
    :class:`~xaibench.errors.UserError`, exit 2) instead of Hydra's "Could not load 'hydra/launcher/...'"."""
    for a in args:
        key, sep, name = a.lstrip("+").partition("=")
        if not sep or key not in ("hydra/launcher", "override hydra/launcher"):
            continue
        module = LAUNCHER_PLUGINS.get(name.strip())
        if module is None or _importable(module):
            continue
        raise UserError(f"hydra/launcher={name} needs the {PLUGIN_PACKAGES[module]} plugin, which is not installed: "
                        f"pip install 'xaibench[cluster]' (or use hydra/launcher=local, which needs nothing more)")


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def unfinished_points(sweep_dir: Path) -> List[str]:
    """The point folders of a sweep whose ``provenance.json`` says ``failed`` or ``interrupted`` (or that have an
    ``error.txt`` and no provenance)."""
    out = []
    for prov in sorted(Path(sweep_dir).glob("*/provenance.json")):
        try:
            status = json.loads(prov.read_text()).get("status", "complete")
        except (OSError, ValueError):
            status = "failed"
        if status != "complete":
            out.append(str(prov.parent))
    for err in sorted(Path(sweep_dir).glob("*/error.txt")):
        if not (err.parent / "provenance.json").exists():
            out.append(str(err.parent))
    return out


def sweep_resume_command(sweep_dir: Path) -> str:
    """The command that continues the sweep in ``sweep_dir`` (its points in their own folders)."""
    from .runner import resume_command

    try:
        sweep = json.loads(os.environ.get("XAIBENCH_SWEEP", "{}") or "{}")
    except ValueError:
        sweep = {}
    sweep["dir"] = str(sweep_dir)
    if not sweep.get("command"):
        return f"xaibench -m <the same overrides> resume=true hydra.sweep.dir={sweep_dir}"
    return resume_command(Path(sweep_dir), [], sweep)


class MergeSweep(Callback):
    """Merge the sweep folder's run folders when a multirun ends (see the module docstring)."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from ..analysis.merge import merge_runs, write_merged

        sweep_dir = Path(config.hydra.sweep.dir)
        note_points(sweep_dir, unfinished_points(sweep_dir))
        allow = _allowed(config)
        try:
            merged = merge_runs([sweep_dir], allow_change=allow)
            write_merged(merged, sweep_dir)
        except UserError as e:
            log.warning(f"sweep not merged: {e}")
            return
        for w in merged.warnings:
            log.warning(w)
        swept = f"; swept: {', '.join(merged.swept)}" if merged.swept else ""
        log.info(f"merged {len(merged.runs)} run folders{swept} into {sweep_dir}/summary.csv")
        try:
            from ..analysis.report import write_report

            write_report(sweep_dir, merged=merged)
        except Exception as e:  # the report is an extra: the merged tables are already written
            log.warning(f"multirun report not written: {type(e).__name__}: {e}")


def _allowed(config: DictConfig) -> list:
    """The sweep's ``allow_change`` option (fingerprint parts a resume may change): the merge accepts them too."""
    from ..analysis.merge import FINGERPRINT_PARTS

    try:
        value = config.get("allow_change") or []
        return [str(x) for x in value if str(x) in FINGERPRINT_PARTS]
    except Exception:  # noqa: BLE001 - a config without the option
        return []


def outcome_lines(failed=()) -> Optional[str]:
    """What the app prints after a sweep whose points did not all finish: the points (``failed``: those the app
    saw itself, plus :data:`OUTCOME`'s) and the command that continues the sweep; None when all finished."""
    pts = list(dict.fromkeys([str(p) for p in failed] + list(OUTCOME.get("failed", []))))
    if not pts:
        return None
    sweep_dir = OUTCOME.get("sweep_dir") or str(Path(pts[0]).parent)
    return (f"xaibench: {len(pts)} point(s) of the sweep did not finish (see error.txt in): " + ", ".join(pts)
            + f"\ncontinue the sweep (finished points are kept) with:\n  {sweep_resume_command(Path(sweep_dir))}")
