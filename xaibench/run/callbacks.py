"""Hydra callbacks of xaibench.

:class:`MergeSweep` runs at the end of every multirun (``xaibench -m ...``), in
the process that launched the sweep (also with the joblib and submitit
launchers): it merges the run folders of the sweep folder with
:func:`xaibench.analysis.merge.merge_runs` and writes ``results.parquet``,
``results.csv``, ``summary.csv`` (one column per swept key) and ``runs.csv``
into the sweep folder, then the multirun report if
``xaibench.analysis.report.write_report`` exists.  It is registered by
``conf/hydra/callbacks/merge.yaml``.

Hydra calls ``on_multirun_end`` only when every job of the sweep returned; after
a failed job, merge by hand: ``xaibench-merge SWEEP_DIR``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from ..errors import UserError

log = logging.getLogger(__name__)


class MergeSweep(Callback):
    """Merge the sweep folder's run folders when a multirun ends (see the module docstring)."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from ..analysis.merge import merge_runs, write_merged

        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            merged = merge_runs([sweep_dir])
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
        except ImportError:
            return
        try:
            write_report(sweep_dir)
        except Exception as e:  # the report is an extra: the merged tables are already written
            log.warning(f"multirun report not written: {type(e).__name__}: {e}")
