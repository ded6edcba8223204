"""``hydra/launcher=local``: the points of a sweep as separate processes on this machine, ``n_jobs`` at a time.

Each point runs in a process of its own (``multiprocessing``, ``spawn`` start method: a fresh interpreter,
no state shared with the launcher), and the launcher watches each one.  A point whose process dies --
killed (``SIGKILL``, the kernel's out-of-memory killer), crashed, or ended by an exception the task did not
handle -- is recorded as failed in its own folder (``error.txt``; ``provenance.json`` status ``failed``,
its finished samples stay in ``rows.jsonl``) and the other points go on.  A pool of worker processes
(joblib's loky, ``concurrent.futures``) aborts every pending job when one worker dies; here nothing else is
lost.  Rerunning the sweep's command with ``resume=true`` (and its ``hydra.sweep.dir``) continues every
point in its folder.

The configuration of every point is composed by the launcher (as Hydra's basic launcher does) and handed
to the process with Hydra's global state; the process runs the task through Hydra's ``run_job`` (job
callbacks, ``.hydra/`` files, logging) exactly as the basic launcher would in-process.  Only a small status
message travels back, so a large return value never blocks a pipe.

Ctrl-C reaches every point (same process group): each saves its finished work and stops; the launcher
waits for them and exits with status 130.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import traceback
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)


class LocalLauncher(Launcher):
    """Each point of a sweep in its own process, at most ``n_jobs`` at a time (``-1``: one per CPU core)."""

    def __init__(self, n_jobs: int = 2, start_method: str = "spawn") -> None:
        self.n_jobs = int(n_jobs)
        self.start_method = str(start_method)
        self.config: Optional[DictConfig] = None
        self.task_function: Optional[TaskFunction] = None
        self.hydra_context: Optional[HydraContext] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def _jobs(self) -> int:
        if self.n_jobs == 0 or self.n_jobs < -1:
            raise ValueError(f"hydra.launcher.n_jobs={self.n_jobs}: give a number of processes >= 1, or -1 for one "
                             f"per CPU core")
        return (os.cpu_count() or 1) if self.n_jobs == -1 else self.n_jobs

    def _point_config(self, overrides: Sequence[str], idx: int, sweep_dir: Path) -> DictConfig:
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(cfg):
            cfg.hydra.job.id = f"{cfg.hydra.job.name}_{idx}"
            cfg.hydra.job.num = idx
            cfg.hydra.sweep.dir = str(sweep_dir)  # resolved once (${now:...}), the same for every point
        return cfg

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        n_jobs = self._jobs()
        log.info(f"Local launcher: {len(job_overrides)} points in {sweep_dir}, {n_jobs} at a time, each in its own "
                 f"process")
        mp = multiprocessing.get_context(self.start_method)
        state = Singleton.get_state()
        pending = list(enumerate(job_overrides))
        results: List[Optional[JobReturn]] = [None] * len(job_overrides)
        running: Dict[Any, dict] = {}  # process sentinel -> the point
        try:
            while pending or running:
                while pending and len(running) < n_jobs:
                    i, overrides = pending.pop(0)
                    running_point = self._start(mp, i, initial_job_idx + i, overrides, sweep_dir, state)
                    running[running_point["proc"].sentinel] = running_point
                ready = wait(list(running) + [p["conn"] for p in running.values() if not p["closed"]])
                for obj in ready:
                    if obj in running:
                        continue
                    point = next(p for p in running.values() if p["conn"] is obj)
                    _receive(point)
                for s in [s for s in ready if s in running]:
                    point = running.pop(s)
                    point["proc"].join()
                    _receive(point)
                    results[point["i"]] = self._finish(point)
                    if (point["dir"] / "error.txt").exists():  # failed: refused by the app, or recorded above
                        _note_failed(sweep_dir, point["dir"])
        except KeyboardInterrupt:
            log.warning("interrupted: every point saves its finished samples and stops")
            for point in running.values():
                point["proc"].join(timeout=120)
            raise SystemExit(130) from None
        return results  # type: ignore[return-value]

    def _start(self, mp, i: int, idx: int, overrides, sweep_dir: Path, state) -> dict:
        cfg = self._point_config(overrides, idx, sweep_dir)
        HydraConfig.instance().set_config(cfg)
        point_dir = sweep_dir / str(OmegaConf.select(cfg, "hydra.sweep.subdir"))
        (point_dir / "error.txt").unlink(missing_ok=True)  # a previous attempt's (this attempt writes its own)
        recv, send = mp.Pipe(duplex=False)
        # cloudpickle: the composed config and Hydra's state hold classes made at run time (typed schemas)
        payload = _dumps((cfg, self.task_function, state))
        proc = mp.Process(target=_run_point, args=(payload, send), name=f"xaibench-point-{idx}")
        proc.start()
        send.close()
        log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))} (pid {proc.pid})")
        return {"i": i, "idx": idx, "proc": proc, "conn": recv, "closed": False, "msg": None, "dir": point_dir,
                "cfg": cfg, "overrides": list(overrides)}

    def _finish(self, point: dict) -> JobReturn:
        """The point's JobReturn.  A point that did not end normally is recorded in its folder and returned as
        completed with no value, so that the sweep goes on (the merge callback and the app report it)."""
        code, msg = point["proc"].exitcode, point["msg"] or {}
        ret = JobReturn(overrides=point["overrides"], working_dir=str(point["dir"]),
                        task_name=str(point["cfg"].hydra.job.name), status=JobStatus.COMPLETED)
        if msg.get("status") == "completed" and code == 0:
            return ret
        if msg.get("status") == "failed":
            why = f"the point's task raised {msg.get('error')}"
            log.error(f"point #{point['idx']} failed: {msg.get('error')}\n{msg.get('traceback', '')}")
        elif code is not None and code < 0:
            why = f"the point's process (pid {point['proc'].pid}) was killed by signal {_signal_name(-code)}"
        elif msg.get("status") == "exit":
            if code == 0:
                return ret
            why = f"the point's process exited with status {code}"
        else:
            why = f"the point's process (pid {point['proc'].pid}) ended with status {code} without a result"
        if not (point["dir"] / "error.txt").exists() or msg.get("status") != "exit":
            record_failure(point["dir"], why)
        log.error(f"point #{point['idx']} ({' '.join(filter_overrides(point['overrides']))}) did not finish: {why}; "
                  f"recorded in {point['dir'] / 'error.txt'}; the other points go on")
        return ret


def _note_failed(sweep_dir: Path, point_dir: Path) -> None:
    """Tell the app (same process) that a point failed, so that the sweep exits 1 with the resume command."""
    try:
        from xaibench.run.callbacks import note_points
    except ImportError:  # pragma: no cover - the launcher without xaibench
        return
    note_points(sweep_dir, [point_dir])


def _receive(point: dict) -> None:
    if point["closed"]:
        return
    try:
        if point["conn"].poll():
            point["msg"] = point["conn"].recv()
    except (EOFError, OSError):  # the process ended without a message
        point["closed"] = True
    except Exception as e:  # noqa: BLE001 - an unreadable message: the exit status still tells
        point["msg"] = {"status": "failed", "error": f"(the point's message could not be read: {e})"}
    if point["closed"] or point["msg"] is not None or not point["proc"].is_alive():
        point["closed"] = True
        point["conn"].close()


def _signal_name(n: int) -> str:
    import signal

    try:
        return f"{signal.Signals(n).name} ({n})"
    except ValueError:
        return str(n)


def record_failure(point_dir: Path, why: str) -> None:
    """``error.txt`` and ``provenance.json`` status ``failed`` in the point's folder (its other files kept: a
    resumed point continues from its ``rows.jsonl``); an ``interrupted`` status written by the run stays."""
    import json

    from xaibench.io import atomic_write_text

    point_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(point_dir / "error.txt", f"PointFailed: {why}\n")
    prov = point_dir / "provenance.json"
    try:
        data = json.loads(prov.read_text()) if prov.exists() else {}
    except (OSError, ValueError):
        data = {}
    if data.get("status") != "interrupted":
        data["status"] = "failed"
    data["error"] = why
    atomic_write_text(prov, json.dumps(data, indent=2, default=str))


def _dumps(obj) -> bytes:
    try:
        import cloudpickle
    except ImportError:  # pragma: no cover - shap and joblib (scikit-learn) bring it
        from joblib.externals import cloudpickle
    return cloudpickle.dumps(obj)


def _run_point(payload: bytes, conn) -> None:
    """In the point's own process: Hydra's state, then the task through ``run_job``; a status message back."""
    import pickle

    from hydra._internal.callbacks import Callbacks

    cfg, task_function, singleton_state = pickle.loads(payload)
    setup_globals()
    Singleton.set_state(singleton_state)
    HydraConfig.instance().set_config(cfg)
    msg = {"status": "exit"}
    try:
        ret = run_job(hydra_context=HydraContext(config_loader=None, callbacks=Callbacks(cfg)),  # type: ignore
                      task_function=task_function, config=cfg, job_dir_key="hydra.sweep.dir",
                      job_subdir_key="hydra.sweep.subdir")
        if ret.status == JobStatus.COMPLETED:
            msg = {"status": "completed"}
        else:
            e = ret._return_value
            msg = {"status": "failed", "error": f"{type(e).__name__}: {e}",
                   "traceback": "".join(traceback.format_exception(e))[-20000:]}
    except SystemExit as e:
        msg = {"status": "exit", "code": e.code}
        raise
    finally:
        try:
            conn.send(msg)
            conn.close()
        except Exception:  # noqa: BLE001 - the launcher reads the exit status instead
            pass
