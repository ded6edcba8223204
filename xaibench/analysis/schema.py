"""The results schema: column names, the special sample id of dataset-level rows, and the kinds of metric outputs.

Every table of a run is built from the tidy per-sample rows whose columns are
:data:`COLUMNS`.  This module is the one place that names them.
"""

from __future__ import annotations

COLUMNS = ["experiment", "dataset", "model", "method", "params", "sample_id", "metric", "value",
           "higher_is_better", "metric_params", "label", "target", "correct", "seed", "note"]
KEYS = ["experiment", "dataset", "model", "method", "params", "metric"]
AGGREGATE = "__aggregate__"
SUMMARY_COLUMNS = KEYS + ["mean", "std", "n", "higher_is_better", "n_undefined", "ci_low", "ci_high", "kind",
                          "valid", "best"]
TABLES = ("summary", "validity", "comparisons", "ranking")

# the outputs of xaibench.metrics.cost.Cost: they measure a method's cost, not its explanation's quality
COST_METRICS = ("explain_time_s", "n_forward", "n_backward", "explain_peak_mem_mb", "eval_time_s", "eval_n_forward")
# descriptive properties of a map (xaibench.metrics.map_properties) and run bookkeeping: not quality scores
DESCRIPTIVE_METRICS = ("degenerate", "tie_fraction", "n_skipped_samples")
