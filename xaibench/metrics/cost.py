"""TRANSITION ONLY -- cost is measured by the harness (xaibench/run/measure.py); this metric goes away when the
runner writes the measurement rows itself.

Cost of an explanation and of its evaluation.

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

from ..analysis.schema import COST, Output
from ..run.measure import NAN, Measurement, measure  # noqa: F401  (moved; re-exported during the transition)
from .base import METRICS
from .base import Metric


@METRICS.register("cost")
class Cost(Metric):
    """Explanation and evaluation cost (module docstring); every output is lower-is-better.

    No formula beyond the definitions above; source: the STAA paper's
    compute comparison (seed 000, "time: one forward pass") extended with pass
    counts and memory.
    """

    name = "cost"
    outputs = {k: Output(False, COST) for k in ("explain_time_s", "n_forward", "n_backward", "explain_peak_mem_mb",
                                                "eval_time_s", "eval_n_forward")}

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
