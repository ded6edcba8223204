"""Cost of an explanation and of its evaluation.

Reported by the ``cost`` metric (all lower-is-better):

* ``explain_time_s``: wall-clock seconds of the method's ``explain`` call for
  this sample (``time.perf_counter``, measured by the harness around the call,
  after one warm-up explanation per model and method): ``ctx.timing['explain_s']``;
* ``n_forward`` / ``n_backward``: model passes the method used, counted by the
  adapter around the call (``ctx.counters['explain_forward']`` /
  ``['explain_backward']``; every input of a batch counts one pass; an
  explanation computed for a batch of B samples is charged 1/B of it);
* ``explain_peak_mem_mb``: peak additional resident memory (MiB) of the
  ``explain`` call, ``ctx.timing['explain_peak_mb']`` as measured by
  :func:`measure` (NaN if the harness did not measure it);
* ``eval_time_s``: wall-clock seconds the *other* metrics of this sample took,
  ``ctx.timing['eval_s']`` (NaN if not filled);
* ``eval_n_forward``: forward passes the other metrics of this sample used,
  ``ctx.counters['eval_forward']`` (counted by the adapter; passes answered
  by the in-run output cache are not passes).

Contract with the harness: it wraps ``method.explain`` in :func:`measure` and
stores ``m.seconds`` in ``ctx.timing['explain_s']`` and ``m.peak_mb`` in
``ctx.timing['explain_peak_mb']``; for ``eval_time_s`` / ``eval_n_forward`` it
computes ``cost`` *last* among a sample's metrics, with ``ctx.timing['eval_s']``
= the other metrics' summed wall-clock seconds and ``ctx.counters['eval_forward']``
= their summed forward passes.  The optional outputs (``explain_peak_mem_mb``,
``eval_time_s``, ``eval_n_forward``) are returned only when their input is in
``ctx.timing``, so a harness that does not measure them writes no NaN rows.

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

from .base import METRICS
from .base import Metric

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


@METRICS.register("cost")
class Cost(Metric):
    """Explanation and evaluation cost (module docstring); every output is lower-is-better.

    No formula beyond the definitions above; source: the STAA paper's
    compute comparison (seed 000, "time: one forward pass") extended with pass
    counts and memory.
    """

    name = "cost"
    outputs = {"explain_time_s": False, "n_forward": False, "n_backward": False, "explain_peak_mem_mb": False,
               "eval_time_s": False, "eval_n_forward": False}

    def compute(self, ctx):
        out = {
            "explain_time_s": float(ctx.timing.get("explain_s", NAN)),
            "n_forward": float(ctx.counters.get("explain_forward", NAN)),
            "n_backward": float(ctx.counters.get("explain_backward", NAN)),
        }
        # reported only when the harness measured them (no rows of NaN otherwise)
        if "explain_peak_mb" in ctx.timing:
            out["explain_peak_mem_mb"] = float(ctx.timing["explain_peak_mb"])
        if "eval_s" in ctx.timing:
            out["eval_time_s"] = float(ctx.timing["eval_s"])
            out["eval_n_forward"] = float(ctx.counters.get("eval_forward", 0))
        return out
