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

Each metric declares its outputs (:class:`Output`: direction, kind, aggregation)
on its class.  The aggregation is data, not code: :class:`Mean` (the summary's
mean of the per-sample values, the default) or a dataset-level reduction such as
:class:`RatioOfSums` over hidden per-sample state (keys starting with ``_``).
The runner journals the state with the declaration (:meth:`Output.to_dict`), so
:func:`reduce_state` recomputes an aggregate -- after a resume, across merged
shards -- without importing the metric.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

COLUMNS = ["experiment", "dataset", "model", "method", "params", "sample_id", "metric", "value",
           "higher_is_better", "metric_kind", "metric_params", "metric_version", "method_version", "label", "target",
           "correct", "seed", "note"]
KEYS = ["experiment", "dataset", "model", "method", "params", "metric"]
AGGREGATE = "__aggregate__"
SUMMARY_COLUMNS = KEYS + ["mean", "std", "n", "higher_is_better", "metric_kind", "n_undefined", "ci_low", "ci_high",
                          "kind", "valid", "best",
                          # the marks' evidence (xaibench.analysis.stats.marks): effect to the best with its
                          # interval, the n a comparison would need, why a cell has no mark
                          "effect", "effect_ci_low", "effect_ci_high", "n_needed", "mark_note"]
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


#: the descriptive output ``<metric>_tie_se`` is the standard error the tie rule left on ``<metric>``
#: (xaibench.metrics.perturbation.tie_se_outputs; docs/ties.md)
TIE_SE_SUFFIX = "_tie_se"


def tie_se_name(metric: str) -> str:
    """The name of ``metric``'s tie standard-error output."""
    return f"{metric}{TIE_SE_SUFFIX}"


def tie_se_base(metric: str, present: Iterable[str] = ()) -> Optional[str]:
    """The metric whose tie standard error ``metric`` is, or None; with ``present``, only when that metric is
    among them (so that a metric that merely ends in the suffix is not mistaken for one)."""
    m = str(metric)
    if not m.endswith(TIE_SE_SUFFIX) or len(m) == len(TIE_SE_SUFFIX):
        return None
    base = m[: -len(TIE_SE_SUFFIX)]
    present = set(present)
    return base if not present or base in present else None


def is_judged(kind: str) -> bool:
    """Quality outputs get validity verdicts, best marks and rankings; the other kinds never do."""
    return kind == QUALITY


# ------------------------------------------------------------------ dataset-level reductions
#: the denominator guard of the reductions (``numpy.spacing(1)``, the eps of Chefer et al.'s evaluation code)
EPS = 2.220446049250313e-16


@dataclass(frozen=True)
class Mean:
    """The aggregate of an output is the mean of its per-sample values (NaN left out; the summary computes
    it, so no aggregate row and no hidden state)."""

    state_keys = ()
    dataset_level = False

    def to_dict(self) -> dict:
        return {"type": "mean"}

    def compute(self, rows: Iterable[Mapping[str, float]]) -> float:  # pragma: no cover - the summary does it
        raise TypeError("Mean is computed by the summary from the per-sample values, not from state")


@dataclass(frozen=True)
class RatioOfSums:
    """``mean over terms (num, den) of sum_samples(num) / (eps + sum_samples(den))``.

    ``terms`` is a tuple of (numerator key, denominator key) pairs of hidden per-sample state (names starting
    with ``_``).  One term gives a pooled ratio (pixel accuracy = sum correct / sum labelled); two give the
    mean of two pooled ratios (mIoU over background and foreground, Chefer et al.'s ``batch_intersection_union``
    summed over the dataset).  With one sample it is that sample's own ratio.
    """

    terms: Tuple[Tuple[str, str], ...]
    eps: float = EPS
    dataset_level = True

    def __post_init__(self):
        terms = tuple(tuple(t) for t in self.terms)
        if not terms or any(len(t) != 2 for t in terms):
            raise ValueError(f"RatioOfSums needs (numerator, denominator) pairs, got {self.terms!r}")
        for k in (k for t in terms for k in t):
            if not (isinstance(k, str) and k.startswith("_")):
                raise ValueError(f"state key {k!r} must be a string starting with '_' (hidden state)")
        object.__setattr__(self, "terms", terms)

    @property
    def state_keys(self) -> Tuple[str, ...]:
        return tuple(dict.fromkeys(k for t in self.terms for k in t))

    def to_dict(self) -> dict:
        return {"type": "ratio_of_sums", "terms": [list(t) for t in self.terms], "eps": self.eps}

    def compute(self, rows: Iterable[Mapping[str, float]]) -> float:
        rows = list(rows)
        if not rows:
            return math.nan
        tot = {k: math.fsum(float(r[k]) for r in rows) for k in self.state_keys}
        return math.fsum(tot[n] / (self.eps + tot[d]) for n, d in self.terms) / len(self.terms)


_REDUCTIONS = {"mean": Mean, "ratio_of_sums": RatioOfSums}


def reduction_from_dict(d: Mapping) -> object:
    """The reduction a journal recorded (:meth:`RatioOfSums.to_dict`)."""
    kind = d.get("type")
    if kind == "mean":
        return Mean()
    if kind == "ratio_of_sums":
        return RatioOfSums(terms=tuple(tuple(t) for t in d["terms"]), eps=float(d.get("eps", EPS)))
    raise ValueError(f"unknown reduction {kind!r}; known: {', '.join(_REDUCTIONS)}")


@dataclass(frozen=True)
class Output:
    """What a metric declares about one reported number.

    * ``higher_is_better``: True, False, or None for a number without a direction (descriptive);
    * ``kind``: one of :data:`KINDS`;
    * ``aggregation``: :class:`Mean` (default) or a dataset-level reduction (:class:`RatioOfSums`) over hidden
      per-sample state that the metric returns beside the value.
    """

    higher_is_better: Optional[bool]
    kind: str = QUALITY
    aggregation: object = Mean()

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown output kind {self.kind!r}; valid: {', '.join(KINDS)}")
        if self.higher_is_better is not None and not isinstance(self.higher_is_better, bool):
            raise ValueError(f"higher_is_better must be True, False or None, got {self.higher_is_better!r}")
        if self.kind == QUALITY and self.higher_is_better is None:
            raise ValueError("a quality output needs a direction (higher_is_better True or False)")
        if not isinstance(self.aggregation, tuple(_REDUCTIONS.values())):
            raise ValueError(f"aggregation must be one of {', '.join(c.__name__ for c in _REDUCTIONS.values())}")

    @property
    def direction(self) -> bool:
        """The ``higher_is_better`` column of a row: the direction, False for an output without one."""
        return bool(self.higher_is_better)

    def row_fields(self) -> dict:
        """The columns of a results row this declaration fills."""
        return {"higher_is_better": self.direction, "metric_kind": self.kind}

    def to_dict(self) -> dict:
        return {"higher_is_better": self.higher_is_better, "kind": self.kind,
                "aggregation": self.aggregation.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Output":
        hib = d.get("higher_is_better")
        return cls(None if hib is None else bool(hib), d.get("kind", QUALITY),
                   reduction_from_dict(d.get("aggregation") or {"type": "mean"}))


def declared_reductions(outputs: Mapping[str, Output]) -> Dict[str, dict]:
    """``{name: Output.to_dict()}`` of the outputs with a dataset-level reduction: what the runner journals
    beside the hidden state of each sample (empty: the metric needs no aggregate rows)."""
    return {n: o.to_dict() for n, o in outputs.items() if o.aggregation.dataset_level}


def hidden_state(values: Mapping[str, float]) -> Dict[str, float]:
    """The hidden per-sample state (``_`` keys) of a metric's value dict."""
    return {k: float(v) for k, v in values.items() if k.startswith("_")}


def reported(values: Mapping[str, float]) -> Dict[str, float]:
    """The reported values (every key not starting with ``_``) of a metric's value dict."""
    return {k: v for k, v in values.items() if not k.startswith("_")}


def reduce_state(declared: Mapping[str, Mapping], rows: List[Mapping[str, float]]) -> Dict[str, float]:
    """``{output name: aggregate}`` from the declarations :func:`declared_reductions` recorded and the
    per-sample state rows of one (benchmark, method, metric) group.  Pure: no metric is imported."""
    out = {}
    for name, d in declared.items():
        agg = Output.from_dict(d).aggregation
        if agg.dataset_level:
            usable = [r for r in rows if all(k in r for k in agg.state_keys)]
            if usable:
                out[name] = agg.compute(usable)
    return out


# Journals written before declarations were recorded beside the hidden state: their one dataset-level
# metric (by registry name) and its reductions then.
_LEGACY_REDUCTIONS = {"segmentation": {
    "pixel_accuracy": Output(True, QUALITY, RatioOfSums((("_correct", "_labelled"),))).to_dict(),
    "miou": Output(True, QUALITY, RatioOfSums((("_inter_bg", "_union_bg"), ("_inter_fg", "_union_fg")))).to_dict(),
}}


def legacy_reductions(registry_name: str) -> Dict[str, dict]:
    return dict(_LEGACY_REDUCTIONS.get(str(registry_name), {}))
