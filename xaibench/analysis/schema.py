"""The results schema: column names, the special sample id of dataset-level rows, and the kinds of metric outputs.

Every table of a run is built from the tidy per-sample rows whose columns are
:data:`COLUMNS`.  This module is the one place that names them and the one
place that knows what kind of number a metric output is:

* ``quality``: scores an explanation; gets validity verdicts, best marks, rankings;
* ``descriptive``: describes a map (degenerate, tie fraction) or the run (skipped samples); never judged;
* ``sanity``: a check of the method itself (model-parameter randomisation); not judged by the controls;
* ``cost``: measured by the harness (time, memory, model passes); lower is better, never a quality score.

Rows carry the kind in ``metric_kind``; the analysis reads that column
(:func:`metric_kinds`), never a list of metric names.
"""

from __future__ import annotations

COLUMNS = ["experiment", "dataset", "model", "method", "params", "sample_id", "metric", "value",
           "higher_is_better", "metric_kind", "metric_params", "label", "target", "correct", "seed", "note"]
KEYS = ["experiment", "dataset", "model", "method", "params", "metric"]
AGGREGATE = "__aggregate__"
SUMMARY_COLUMNS = KEYS + ["mean", "std", "n", "higher_is_better", "metric_kind", "n_undefined", "ci_low", "ci_high",
                          "kind", "valid", "best"]
TABLES = ("summary", "validity", "comparisons", "ranking")

QUALITY, DESCRIPTIVE, SANITY, COST = "quality", "descriptive", "sanity", "cost"
KINDS = (QUALITY, DESCRIPTIVE, SANITY, COST)

# Only for result files written before rows carried ``metric_kind`` (older baselines): the kinds their
# metric names had then.  New rows always carry the column.
_LEGACY_KINDS = {**{m: COST for m in ("explain_time_s", "n_forward", "n_backward", "explain_peak_mem_mb",
                                      "eval_time_s", "eval_n_forward")},
                 **{m: DESCRIPTIVE for m in ("degenerate", "tie_fraction", "n_skipped_samples")}}


def legacy_kind(metric: str) -> str:
    m = str(metric)
    if m.startswith("mprt"):
        return SANITY
    return _LEGACY_KINDS.get(m, QUALITY)


def metric_kinds(df):
    """The kind of each row of a results or summary frame (a pandas Series aligned with ``df``)."""
    import pandas as pd

    if "metric_kind" in df:
        kinds = df["metric_kind"].astype(object)
        missing = kinds.isna() | (kinds.astype(str) == "")
        if missing.any():
            kinds = kinds.where(~missing, df["metric"].map(legacy_kind))
        return kinds.astype(str)
    return pd.Series([legacy_kind(m) for m in df["metric"]], index=df.index, dtype=object)


def is_judged(kind: str) -> bool:
    """Quality outputs get validity verdicts, best marks and rankings; the other kinds never do."""
    return kind == QUALITY


# The names below are the ones the harness gives its own rows; they are not metric outputs.
COST_METRICS = tuple(m for m, k in _LEGACY_KINDS.items() if k == COST)  # kept until the runner writes kinds
DESCRIPTIVE_METRICS = tuple(m for m, k in _LEGACY_KINDS.items() if k == DESCRIPTIVE)
