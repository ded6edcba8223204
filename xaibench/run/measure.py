"""What the harness measures around each explanation and evaluation: time, memory and model passes.

These are not metrics: the runner measures them and writes them as rows of kind ``cost``
(:data:`xaibench.analysis.schema.COST`), lower is better, never judged.  :data:`COST_OUTPUTS` declares them
the way a metric declares its outputs:

* ``explain_time_s``: wall-clock seconds of the method's ``explain`` call for this sample
  (``time.perf_counter`` around the call, after one warm-up explanation per model and method; an explanation
  computed for a batch of B samples is charged 1/B of the batch's time);
* ``n_forward`` / ``n_backward``: model passes the method used, counted by the adapter around the call (every
  input of a batch counts one pass; a batch's passes are charged 1/B to each sample);
* ``explain_peak_mem_mb``: peak additional resident memory (MiB) of the ``explain`` call (:func:`measure`);
* ``eval_time_s``: wall-clock seconds the metrics of this (sample, method) took;
* ``eval_n_forward``: forward passes the metrics of this (sample, method) used (passes answered by the in-run
  output cache are not passes).

Source: the STAA paper's compute comparison ("time: one forward pass"), extended with pass counts and memory.

Memory measurement (:func:`measure`)
------------------------------------
torch's CPU allocations bypass ``tracemalloc``, so we measure the process's
resident set.  On Linux the kernel's peak-RSS mark (``VmHWM`` in
``/proc/self/status``) is reset before the call (writing ``5`` to
``/proc/self/clear_refs``) and read after it; ``peak_mb = VmHWM_after -
VmRSS_before``.  It is exact at page granularity and costs nothing during the
call, but it is a *lower bound* of the method's working set: memory the
process had already freed into its allocator's cache (glibc / torch) is reused
without raising the RSS.  Values are comparable between methods measured after
the same warm-up.  Where the reset is impossible (not Linux, no permission)
the fallback is ``ru_maxrss`` (process-lifetime peak) after minus the RSS
before, floored at 0, which undercounts whenever an earlier peak was higher;
``m.method`` records which of ``vmhwm`` / ``ru_maxrss`` was used.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass

from ..analysis.schema import COST, Output

NAN = float("nan")


def _status_kb(field: str) -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return float(line.split()[1])
    except OSError:
        pass
    return NAN


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _ru_maxrss_kb() -> float:
    try:
        import resource
        import sys

        v = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        return v / 1024.0 if sys.platform == "darwin" else v  # bytes on macOS, KiB on Linux
    except Exception:  # pragma: no cover - platform without resource
        return NAN


@dataclass
class Measurement:
    seconds: float = NAN
    peak_mb: float = NAN
    method: str = ""


@contextmanager
def measure():
    """Wall-clock seconds and peak additional resident memory (MiB) of the enclosed block.

    ``with measure() as m: ...`` then read ``m.seconds``, ``m.peak_mb``, ``m.method``.
    """
    m = Measurement()
    rss0 = _status_kb("VmRSS")
    exact = rss0 == rss0 and _reset_peak()
    if not exact:
        rss0 = rss0 if rss0 == rss0 else _ru_maxrss_kb()
    t0 = time.perf_counter()
    try:
        yield m
    finally:
        m.seconds = time.perf_counter() - t0
        if exact:
            m.peak_mb, m.method = max(0.0, _status_kb("VmHWM") - rss0) / 1024.0, "vmhwm"
        else:
            m.peak_mb, m.method = max(0.0, _ru_maxrss_kb() - rss0) / 1024.0, "ru_maxrss"


#: the harness's measurement rows, declared like metric outputs (every one lower-is-better, kind ``cost``)
COST_OUTPUTS = {name: Output(higher_is_better=False, kind=COST)
                for name in ("explain_time_s", "n_forward", "n_backward", "explain_peak_mem_mb", "eval_time_s",
                             "eval_n_forward")}
