"""Our results next to the published ones.

A reference table (``conf/reference/<experiment>.csv``, shipped with the configs) has one published
number per row: ``model, dataset, method, metric, value, source, note``, with
``model`` / ``method`` the *labels* our experiment uses (model and method
config names, e.g. ``pretrained_vit_b16``, ``stdnorm``) and ``metric`` the name
our metric reports (e.g. ``miou``).  Published percentages are stored as
fractions (62.95 % -> 0.6295), as our metrics report them.

:func:`compare` joins a run's summary (columns ``model, method, metric, mean``
and optionally ``dataset, params, std, n``) with such a table on ``(model,
method, metric)`` (and ``dataset`` when ``on_dataset``) and adds ``diff = mean -
published``.  The join is outer: a published number we did not reproduce shows
with ``mean`` NaN (``status = published only``), our numbers without a published
counterpart with ``published`` NaN (``status = ours only``); several published
numbers for one key (different sources) give one row each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

import pandas as pd

from ..errors import UserError

REF_COLUMNS = ("model", "dataset", "method", "metric", "value", "source", "note", "verified")


def reference_path(ref: Union[str, Path]) -> Path:
    """An experiment's ``reference``: a name (``stdnorm_paper``: the packaged
    ``xaibench.conf/reference/<name>.csv``, the repository's ``conf/reference/``) or a CSV path."""
    p = Path(str(ref))
    if p.suffix != ".csv" and len(p.parts) == 1:
        from ..config import conf_dir

        return conf_dir() / "reference" / f"{p.name}.csv"
    return p


def read_reference(path: Union[str, Path]) -> pd.DataFrame:
    p = Path(path)
    if not p.exists():
        raise UserError(f"reference table {p} does not exist (experiment.reference)")
    ref = pd.read_csv(p)
    missing = [c for c in ("model", "method", "metric", "value", "source") if c not in ref.columns]
    if missing:
        raise UserError(f"reference table {p} lacks the columns {missing}; expected {', '.join(REF_COLUMNS)}")
    for c in REF_COLUMNS:
        if c not in ref:
            ref[c] = ""
    ref["value"] = pd.to_numeric(ref["value"], errors="coerce")
    return ref[list(REF_COLUMNS)].fillna({"note": "", "dataset": "", "verified": ""})


def compare(summary_df: pd.DataFrame, reference_csv: Union[str, Path, pd.DataFrame], on_dataset: bool = False,
            keep_unmatched: bool = True) -> pd.DataFrame:
    """Join our summary with the published numbers; see the module docstring.

    Returns columns ``model, dataset, method, metric, [params], mean, std, n,
    published, diff, status, source, note`` (``dataset`` is ours where we have
    the row, else the reference's).
    """
    ref = reference_csv if isinstance(reference_csv, pd.DataFrame) else read_reference(reference_csv)
    ref = ref.rename(columns={"value": "published", "dataset": "published_dataset"})
    need = [c for c in ("model", "method", "metric", "mean") if c not in summary_df.columns]
    if need:
        raise ValueError(f"summary lacks the columns {need}")
    ours = summary_df.copy()
    for c in ("std", "n"):
        if c not in ours:
            ours[c] = float("nan")
    if "dataset" not in ours:
        ours["dataset"] = ""
    keep = ["model", "dataset", "method", "metric"] + (["params"] if "params" in ours else []) + ["mean", "std", "n"]
    ours = ours[keep]
    keys = ["model", "method", "metric"]
    if on_dataset:
        ref["dataset"] = ref["published_dataset"]
        keys.append("dataset")
    how = "outer" if keep_unmatched else "inner"
    table = ours.merge(ref, on=keys, how=how, indicator=True)
    table["status"] = table["_merge"].map({"both": "both", "left_only": "ours only",
                                           "right_only": "published only"}).astype(str)
    table = table.drop(columns="_merge")
    table["dataset"] = table["dataset"].where(table["dataset"].notna() & (table["dataset"] != ""),
                                              table["published_dataset"])
    table["diff"] = table["mean"] - table["published"]
    cols = ["model", "dataset", "method", "metric"] + (["params"] if "params" in table else []) + \
        ["mean", "std", "n", "published", "diff", "status", "source", "note", "verified"]
    order = {"both": 0, "ours only": 1, "published only": 2}
    table = table.assign(_o=table["status"].map(order)).sort_values(
        ["_o", "model", "method", "metric"], kind="stable").drop(columns="_o")
    return table[cols].reset_index(drop=True)


def format_comparison(table: pd.DataFrame, width: int = 120) -> str:
    """The comparison as the terminal shows it (the verification notes and the parameters stay in the CSV)."""
    shown = table.drop(columns=[c for c in ("source", "note", "params", "verified") if c in table])
    with pd.option_context("display.width", width, "display.max_columns", 20, "display.max_colwidth", 30):
        return shown.to_string(index=False)
