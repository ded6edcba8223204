"""Cost of an explanation.

* ``explain_time_s`` (lower is better): wall-clock seconds of the method's
  ``explain`` call for this sample (``time.perf_counter``, measured by the
  harness around the call, after one warm-up explanation per model and method);
* ``n_forward`` / ``n_backward`` (lower is better): model passes the method
  used, as reported in its :class:`~xaibench.methods.base.Explanation`.
"""

from __future__ import annotations

from . import METRICS
from .base import Metric


@METRICS.register("cost")
class Cost(Metric):
    name = "cost"
    outputs = {"explain_time_s": False, "n_forward": False, "n_backward": False}

    def compute(self, ctx):
        return {
            "explain_time_s": float(ctx.timing.get("explain_s", float("nan"))),
            "n_forward": float(ctx.explanation.n_forward),
            "n_backward": float(ctx.explanation.n_backward),
        }
