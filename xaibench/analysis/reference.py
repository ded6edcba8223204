"""Our results next to the published ones, with what each comparison compares.

Reference tables
----------------
A reference table (``conf/reference/<experiment>.csv``, shipped with the configs) has one published number per
row, with the columns

``model, dataset, method, metric``
    the *labels* our experiment uses (model and method config names, e.g. ``pretrained_vit_b16``, ``stdnorm``)
    and the output name our metric reports (e.g. ``miou``); published percentages are stored as fractions
    (62.95 % -> 0.6295), as our metrics report them;
``value``
    the published number;
``source``, ``cite``
    where it was published, in full and in short (``cite``: the kind of source and the place, e.g. ``STAA paper
    (arXiv 2411.00630), recalled`` or ``VideoXAI notebook, cell 12``): two published numbers of one method and
    metric are told apart by it;
``settings``
    JSON of the settings the source computed the number with, by group: ``{"method": {...}, "metric": {...},
    "dataset": {...}, "run": {...}}`` (only what the source fixes; a setting it does not give is left out);
``comparable``
    ``yes``, or ``no: <why>`` when the source is known to measure something else (another model, another
    metric, another machine);
``note``, ``verified``
    what we know about the number, and how it was checked (``yes: <where>`` / ``no: <why>``).

Beside them, ``conf/reference/checkpoints.csv`` declares the published checkpoints, one row per model label:
``model, hub_id, weights_sha256, frames, image_size, num_classes, grid, reason``.  ``weights_sha256`` is
:meth:`xaibench.models.ModelAdapter.weights_digest` of the published checkpoint, or ``unknown`` (``reason``
says why); the other fields are facts of the published architecture.

What a comparison row says
--------------------------
:func:`compare` joins a run's summary with a reference table on ``(model, method, metric)`` (and ``dataset`` with
``on_dataset``); the join is outer.  Each row gets ``diff = mean - published``, a ``status`` (``both``, ``ours
only``, ``published only``) and ``comparable`` (True / False) with ``why_not``, every reason that applies:

* **model** -- the model is not the published checkpoint: its weights' sha256 differs from the declared one
  (compared when declared), or, when the published sha256 is unknown, its architecture (frames, input size,
  classes, token grid) differs from the published one, or its accuracy on the evaluated samples (the results'
  ``correct`` column) is not above chance: a one-sided exact binomial test of ``k`` correct out of ``n``
  against ``1 / classes`` at :data:`ALPHA` (scipy.stats.binomtest) -- random weights saved under a pretrained
  config's name are caught here, since their hash is unknown and their architecture may match.  A model
  whose weights can be checked neither way (unknown sha256, no labelled sample) is not compared either;
* **dataset** -- the run's dataset label is not the one of the published number;
* **settings** -- a setting of ``settings`` differs from the run's: method parameters from the summary's
  ``params``, metric parameters from the results' ``metric_params``, dataset settings from ``provenance.json``
  (the dataset's description, then its parameters), run settings from the run's config;
* **source** -- the reference table's ``comparable`` says ``no: <why>``.

The model's accuracy (``accuracy``: ``k/n``) and the checkpoint's status (``checkpoint``: ``verified``,
``differs: ...``, ``unverified: <why>``) are columns of every row of that model.  Without the run's
``provenance.json`` nothing can be checked, and no row is comparable.

:func:`format_comparison` is the terminal's short form (comparable rows first, then a count of the others per
reason; at most 120 columns); :func:`report_section` feeds the report's "Against the published numbers".
"""

from __future__ import annotations

import json
import math
import re
import textwrap
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import pandas as pd

from ..errors import UserError

REF_COLUMNS = ("model", "dataset", "method", "metric", "value", "source", "cite", "settings", "comparable", "note",
               "verified")
CHECKPOINT_COLUMNS = ("model", "hub_id", "weights_sha256", "frames", "image_size", "num_classes", "grid", "reason")
#: the columns of reference_comparison.csv, in order: what a reader needs first, the parameters last
COLUMNS = ["method", "metric", "mean", "published", "diff", "comparable", "why_not", "cite", "model", "dataset",
           "std", "n", "accuracy", "checkpoint", "status", "source", "note", "verified", "params"]
#: level of the binomial test "accuracy above chance"
ALPHA = 0.05
SETTING_GROUPS = ("method", "metric", "dataset", "run")
#: architecture facts of a published checkpoint, against the run's adapter description (provenance.json)
ARCH_FACTS = {"frames": "num_frames", "image_size": "image_size", "num_classes": "num_classes", "grid": "grid"}
WIDTH = 120
#: between the reasons of one row (``why_not``)
SEP = " | "


# ----------------------------------------------------------------------------------------- reading
def reference_path(ref: Union[str, Path]) -> Path:
    """An experiment's ``reference``: a name (``stdnorm_paper``: the packaged
    ``xaibench.conf/reference/<name>.csv``, the repository's ``conf/reference/``) or a CSV path."""
    p = Path(str(ref))
    if p.suffix != ".csv" and len(p.parts) == 1:
        from ..config import conf_dir

        return conf_dir() / "reference" / f"{p.name}.csv"
    return p


def checkpoints_path(reference: Union[str, Path, None] = None) -> Path:
    """``checkpoints.csv`` beside a reference table (the packaged one when the table's folder has none)."""
    if reference is not None:
        p = reference_path(reference).parent / "checkpoints.csv"
        if p.exists():
            return p
    from ..config import conf_dir

    return conf_dir() / "reference" / "checkpoints.csv"


def _text(v) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v).strip()


def read_reference(path: Union[str, Path]) -> pd.DataFrame:
    p = Path(path)
    if not p.exists():
        raise UserError(f"reference table {p} does not exist (experiment.reference)")
    ref = pd.read_csv(p, dtype={"settings": str, "comparable": str, "cite": str})
    missing = [c for c in ("model", "method", "metric", "value", "source") if c not in ref.columns]
    if missing:
        raise UserError(f"reference table {p} lacks the columns {missing}; expected {', '.join(REF_COLUMNS)}")
    for c in REF_COLUMNS:
        if c not in ref:
            ref[c] = ""
    ref["value"] = pd.to_numeric(ref["value"], errors="coerce")
    ref = ref[list(REF_COLUMNS)].copy()
    for c in ("dataset", "source", "cite", "settings", "comparable", "note", "verified"):
        ref[c] = ref[c].map(_text)
    ref["cite"] = [c or _short(s) for c, s in zip(ref["cite"], ref["source"])]
    for i, s in zip(ref.index, ref["settings"]):
        _parse_settings(s, f"{p}, row {i + 2}")
    bad = [c for c in ref["comparable"] if c and not re.fullmatch(r"yes|no: .+", c, flags=re.S)]
    if bad:
        raise UserError(f"reference table {p}: column comparable must be 'yes' or 'no: <why>', got {bad[0]!r}")
    return ref


def _short(source: str, n: int = 40) -> str:
    return source if len(source) <= n else source[:n - 1].rstrip() + "…"


def _parse_settings(text: str, where: str) -> Dict[str, dict]:
    if not text:
        return {}
    try:
        d = json.loads(text)
    except ValueError as e:
        raise UserError(f"{where}: settings is not JSON ({e}): {text!r}")
    if not isinstance(d, dict) or set(d) - set(SETTING_GROUPS) or not all(isinstance(v, dict) for v in d.values()):
        raise UserError(f"{where}: settings must map {', '.join(SETTING_GROUPS)} to objects, got {text!r}")
    return d


def read_checkpoints(path: Union[str, Path, None]) -> pd.DataFrame:
    """The declared published checkpoints (empty when the file does not exist)."""
    if path is None or not Path(path).exists():
        return pd.DataFrame(columns=list(CHECKPOINT_COLUMNS))
    ck = pd.read_csv(path, dtype=str).fillna("")
    if "model" not in ck or "weights_sha256" not in ck:
        raise UserError(f"{path} lacks the columns model / weights_sha256; expected {', '.join(CHECKPOINT_COLUMNS)}")
    for c in CHECKPOINT_COLUMNS:
        if c not in ck:
            ck[c] = ""
    for h in ck["weights_sha256"]:
        if h != "unknown" and not re.fullmatch(r"[0-9a-f]{64}", h):
            raise UserError(f"{path}: weights_sha256 must be 64 hex digits or 'unknown', got {h!r}")
    unknown = ck[(ck["weights_sha256"] == "unknown") & (ck["reason"].str.len() == 0)]
    if len(unknown):
        raise UserError(f"{path}: model {unknown['model'].iloc[0]} has weights_sha256 unknown without a reason")
    return ck[list(CHECKPOINT_COLUMNS)]


# ------------------------------------------------------------------------------------- the run's facts
def _read_run(run_dir: Path) -> Tuple[Optional[dict], Optional[pd.DataFrame]]:
    prov = None
    if (run_dir / "provenance.json").exists():
        prov = json.loads((run_dir / "provenance.json").read_text())
    results = None
    for name, reader in (("results.parquet", pd.read_parquet), ("results.csv", pd.read_csv)):
        if (run_dir / name).exists():
            results = reader(run_dir / name)
            break
    return prov, results


def accuracy(results: Optional[pd.DataFrame]) -> Dict[Tuple[str, str], Tuple[int, int]]:
    """(model, dataset) -> (correct, labelled) over the evaluated samples (one ``correct`` per sample)."""
    if results is None or "correct" not in results or not len(results):
        return {}
    r = results[["model", "dataset", "sample_id", "correct"]].copy()
    r["correct"] = r["correct"].map(_truth)
    r = r.dropna(subset=["correct"]).drop_duplicates(["model", "dataset", "sample_id"])
    return {(str(m), str(d)): (int(g["correct"].sum()), len(g)) for (m, d), g in r.groupby(["model", "dataset"])}


def _truth(v):
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, str):
        return {"true": True, "false": False}.get(v.strip().lower())
    return bool(v)


def binomial_p(k: int, n: int, p0: float) -> float:
    """One-sided exact binomial test P(X >= k), X ~ Bin(n, p0) (scipy.stats.binomtest, alternative greater)."""
    from scipy.stats import binomtest

    return float(binomtest(int(k), int(n), float(p0), alternative="greater").pvalue)


def _components(prov: Optional[dict]) -> Dict[Tuple[str, str], dict]:
    return {(str(c.get("model")), str(c.get("dataset"))): c for c in (prov or {}).get("components") or []}


def _component(comps: dict, model: str, dataset: str) -> Optional[dict]:
    return comps.get((model, dataset)) or next((c for (m, _), c in comps.items() if m == model), None)


def _grid(adapter: dict):
    stages = (adapter.get("layout") or {}).get("stages")
    return list(stages[-1]) if stages else None


def _same(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or (isinstance(a, bool) and isinstance(b, bool) and a == b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _show(v) -> str:
    return json.dumps(v) if isinstance(v, (str, list, dict, bool)) or v is None else f"{v:g}" \
        if isinstance(v, float) else str(v)


def _params(text) -> dict:
    if isinstance(text, dict):
        return text
    try:
        d = json.loads(text) if _text(text) else {}
    except ValueError:
        return {}
    return d if isinstance(d, dict) else {}


class _Model:
    """What a run says about one benchmark's model: checkpoint status, accuracy, the reasons not to compare it,
    a warning to print."""

    def __init__(self, model: str, dataset: str, comp: Optional[dict], acc: Optional[Tuple[int, int]],
                 ckpt: Optional[dict], has_prov: bool, published_models: List[str]):
        self.model, self.dataset = model, dataset
        substitute = model not in published_models
        self.reasons: List[str] = []
        self.warning = ""
        self.accuracy = ""
        if not has_prov or comp is None:
            self.checkpoint = "not checked: no provenance.json"
            self.reasons.append("model: not checked (the run's provenance.json is missing)")
            return
        adapter = comp.get("adapter") or {}
        digest = _text(adapter.get("weights_sha256"))
        declared = _text((ckpt or {}).get("weights_sha256"))
        expected = declared if re.fullmatch(r"[0-9a-f]{64}", declared) else _text(adapter.get("expected_sha256"))
        verified = False
        if expected:
            if digest == expected:
                verified = True
                self.checkpoint = "verified: sha256 matches the published checkpoint"
            else:
                self.checkpoint = f"differs: sha256 {digest[:12]}… is not the published {expected[:12]}…"
                self.reasons.append(f"model: the weights are not the published checkpoint (sha256 {digest[:12]}… "
                                    f"vs {expected[:12]}…)")
        else:
            diffs = []
            for key, field in ARCH_FACTS.items():
                want = _text((ckpt or {}).get(key))
                if not want:
                    continue
                have = _grid(adapter) if key == "grid" else adapter.get(field)
                want_v = [int(v) for v in re.findall(r"\d+", want)] if key == "grid" else int(float(want))
                if have is None or not _same(have, want_v):
                    diffs.append(f"{key} {_show(have)} (published {_show(want_v)})")
            if diffs:
                self.checkpoint = "differs: " + ", ".join(diffs)
                self.reasons.append("model: not the published checkpoint's architecture: " + ", ".join(diffs))
            elif substitute:
                self.checkpoint = f"none, a substitute (the published numbers are for {', '.join(published_models)})"
            elif ckpt is None:
                self.checkpoint = f"unverified: no published checkpoint is declared for {model}"
            else:
                self.checkpoint = f"unverified: published sha256 unknown ({_text(ckpt.get('reason')) or 'no reason'})"
        classes = adapter.get("num_classes")
        if acc is None or acc[1] == 0:
            self.accuracy = "no labelled sample"
            if not verified:
                self.reasons.append("model: its weights cannot be checked (published sha256 unknown, no labelled "
                                    "sample for the accuracy)")
            return
        k, n = acc
        self.accuracy = f"{k}/{n}"
        if classes:
            p = binomial_p(k, n, 1.0 / int(classes))
            above = p < ALPHA
            self.accuracy += f" ({'above' if above else 'not above'} chance 1/{classes}: binomial p = {p:.2g})"
            if not above:
                self.reasons.append(f"model: accuracy {k}/{n} is not above chance (1/{classes}; binomial p = "
                                    f"{p:.2g}): untrained weights?")
                self.warning = _warning(model, dataset, self.accuracy, substitute)

    def line(self) -> str:
        return _model_line(self.model, self.dataset, self.accuracy, self.checkpoint)


def _warning(model: str, dataset: str, acc: str, substitute: bool) -> str:
    return (f"WARNING: {model} classified {acc} of the evaluated {dataset} samples correctly: its weights "
            + ("look untrained. It is a substitute: no published number is for it." if substitute else
               "look untrained or are not the published checkpoint. None of its rows is compared."))


def _model_line(model: str, dataset: str, acc: str, checkpoint: str) -> str:
    """One line per model: its accuracy and its checkpoint's status (a reason in parentheses left out)."""
    acc = f"accuracy {acc} on the evaluated samples" if re.match(r"\d+/\d+", acc) else acc
    short = re.sub(r" \(.*\)$", "", checkpoint, flags=re.S) if checkpoint.startswith("unverified") else checkpoint
    return f"{model} on {dataset}: {acc}; checkpoint: {short}"


def _run_settings(group: str, row, comp: Optional[dict], prov: Optional[dict], metric_params: dict) -> dict:
    if group == "method":
        return _params(row.get("params"))
    if group == "metric":
        return metric_params.get((row["model"], row["dataset"], row["method"], row["metric"]), {})
    if group == "dataset":
        if comp is None:
            return {}
        return {**(comp.get("dataset_params") or {}), **{k: v for k, v in (comp.get("dataset_info") or {}).items()
                                                        if v is not None}}
    return ((prov or {}).get("config") or {})


def _setting_diffs(settings: Dict[str, dict], row, comp, prov, metric_params) -> List[str]:
    """One reason per group of settings that differ, e.g. ``method shap settings differ: cell=32 (published
    224)``."""
    out = []
    for group in SETTING_GROUPS:
        want = settings.get(group) or {}
        if not want:
            continue
        have = _run_settings(group, row, comp, prov, metric_params)
        diffs = []
        for k, v in want.items():
            if k not in have:
                diffs.append(f"{k} not set (published {_show(v)})")
            elif not _same(have[k], v):
                diffs.append(f"{k}={_show(have[k])} (published {_show(v)})")
        if diffs:
            who = {"method": f"method {row['method']} ", "metric": f"metric {row['metric']} "}.get(group, group + " ")
            out.append(f"{who}settings differ: " + ", ".join(diffs))
    return out


def _metric_params(results: Optional[pd.DataFrame]) -> dict:
    if results is None or "metric_params" not in results or not len(results):
        return {}
    r = results.dropna(subset=["metric_params"]).drop_duplicates(["model", "dataset", "method", "metric"])
    return {(str(a), str(b), str(c), str(d)): _params(p)
            for a, b, c, d, p in r[["model", "dataset", "method", "metric", "metric_params"]].itertuples(index=False)}


# ------------------------------------------------------------------------------------------ compare
def compare(summary_df: pd.DataFrame, reference_csv: Union[str, Path, pd.DataFrame], on_dataset: bool = False,
            keep_unmatched: bool = True, *, run_dir: Union[str, Path, None] = None, provenance: Optional[dict] = None,
            results: Optional[pd.DataFrame] = None,
            checkpoints: Union[str, Path, pd.DataFrame, None] = None) -> pd.DataFrame:
    """Join our summary with the published numbers and say, per row, whether it compares (module docstring).

    ``run_dir``: the run folder, whose ``provenance.json`` and ``results.parquet`` (or ``results.csv``) give
    the models' identity, accuracy and settings (``provenance`` / ``results`` given directly take precedence);
    ``checkpoints``: the published checkpoints (default: ``checkpoints.csv`` beside the reference table).
    Returns the columns :data:`COLUMNS`, comparable rows first.
    """
    ref = reference_csv if isinstance(reference_csv, pd.DataFrame) else read_reference(reference_csv)
    for c in REF_COLUMNS:
        if c not in ref:
            ref[c] = ""
    if isinstance(checkpoints, pd.DataFrame):
        ck = checkpoints
    else:
        ck = read_checkpoints(checkpoints if checkpoints is not None else checkpoints_path(
            None if isinstance(reference_csv, pd.DataFrame) else reference_csv))
    if run_dir is not None:
        p, r = _read_run(Path(run_dir))
        provenance = provenance if provenance is not None else p
        results = results if results is not None else r
    need = [c for c in ("model", "method", "metric", "mean") if c not in summary_df.columns]
    if need:
        raise ValueError(f"summary lacks the columns {need}")

    ours = summary_df.copy()
    for c in ("std", "n"):
        if c not in ours:
            ours[c] = float("nan")
    if "dataset" not in ours:
        ours["dataset"] = ""
    if "params" not in ours:
        ours["params"] = ""
    ours = ours[["model", "dataset", "method", "metric", "params", "mean", "std", "n"]]
    ref = ref.rename(columns={"value": "published", "dataset": "published_dataset",
                              "comparable": "source_comparable"})
    keys = ["model", "method", "metric"]
    if on_dataset:
        ref["dataset"] = ref["published_dataset"]
        keys.append("dataset")
    table = ours.merge(ref, on=keys, how="outer" if keep_unmatched else "inner", indicator=True)
    table["status"] = table["_merge"].map({"both": "both", "left_only": "ours only",
                                           "right_only": "published only"}).astype(str)
    table = table.drop(columns="_merge")
    ds = table["dataset"].map(_text)
    table["dataset"] = ds.where(ds != "", table["published_dataset"].map(_text))
    table["diff"] = table["mean"] - table["published"]

    comps = _components(provenance)
    acc = accuracy(results)
    ck_rows = {str(r["model"]): dict(r) for _, r in ck.iterrows()}
    mparams = _metric_params(results)
    run_models = sorted(set(map(str, ours["model"])))
    ref_models = sorted(set(map(str, ref["model"])))
    checks: Dict[Tuple[str, str], _Model] = {}

    def check(model, dataset):
        if (model, dataset) not in checks:
            checks[(model, dataset)] = _Model(model, dataset, _component(comps, model, dataset),
                                              acc.get((model, dataset)), ck_rows.get(model), provenance is not None,
                                              ref_models)
        return checks[(model, dataset)]

    ran = {c: set(map(str, ours[c])) for c in ("method", "metric")}
    ref_keys = {c: set(zip(ref["model"].map(str), ref[c].map(str))) for c in ("method",)}
    comparable, why, accs, ckpts = [], [], [], []
    for _, row in table.iterrows():
        model, status = str(row["model"]), row["status"]
        reasons: List[str] = []
        if status == "ours only":
            m = check(model, str(row["dataset"]))
            accs.append(m.accuracy)
            ckpts.append(m.checkpoint)
            if model not in ref_models:
                reasons.append(f"no published number for model {model} (published: {', '.join(ref_models)})")
            elif (model, str(row["method"])) not in ref_keys["method"]:
                reasons.append(f"no published number for method {row['method']}")
            else:
                reasons.append(f"{PAIR}{row['method']} x {row['metric']}")
        elif status == "published only":
            accs.append("")
            ckpts.append("")
            if model not in run_models:
                reasons.append(f"not run: model {model} is not in this run (this run: {', '.join(run_models)})")
            elif str(row["method"]) not in ran["method"]:
                reasons.append(f"not run: method {row['method']} is not in this run")
            else:
                reasons.append(f"not run: metric {row['metric']} is not in this run")
        else:
            m = check(model, str(row["dataset"]))
            accs.append(m.accuracy)
            ckpts.append(m.checkpoint)
            reasons += m.reasons
            pub_ds = _text(row["published_dataset"])
            if pub_ds and str(row["dataset"]) != pub_ds:
                reasons.append(f"dataset: {row['dataset']} (published on {pub_ds})")
            settings = _parse_settings(_text(row.get("settings")), "reference table")
            diffs = _setting_diffs(settings, row, _component(comps, model, str(row["dataset"])), provenance, mparams)
            reasons += diffs
            src = _text(row.get("source_comparable"))
            if src.startswith("no"):
                reasons.append("source: " + src.split(":", 1)[-1].strip())
        comparable.append(status == "both" and not reasons)
        why.append(SEP.join(reasons))
    table["comparable"] = comparable
    table["why_not"] = why
    table["accuracy"] = accs
    table["checkpoint"] = ckpts
    rank = {"both": 1, "ours only": 2, "published only": 3}
    order = [rank[st] - int(c) for st, c in zip(table["status"], table["comparable"])]
    table = table.assign(_o=order).sort_values(["_o", "model", "method", "metric", "cite"], kind="stable")
    table = table.rename(columns={"published_dataset": "_pd"})
    table.attrs["models"] = {f"{k[0]}|{k[1]}": {"line": v.line(), "warning": v.warning} for k, v in checks.items()}
    return table[COLUMNS].reset_index(drop=True)


def compare_run(run_dir: Union[str, Path], reference: Union[str, Path, pd.DataFrame]) -> pd.DataFrame:
    """:func:`compare` of a finished run folder (its ``summary.csv``, ``provenance.json`` and results)."""
    run_dir = Path(run_dir)
    if not (run_dir / "summary.csv").exists():
        raise UserError(f"{run_dir} has no summary.csv: not a finished run folder")
    return compare(pd.read_csv(run_dir / "summary.csv"), reference_path(reference)
                   if not isinstance(reference, pd.DataFrame) else reference, run_dir=run_dir)


# ---------------------------------------------------------------------------------------- presenting
def fmt_value(v) -> str:
    """Numbers as the comparison shows them: 4 decimals below 100, 1 above; '' for missing."""
    try:
        v = float(v)
    except (TypeError, ValueError):
        return _text(v)
    if math.isnan(v):
        return ""
    return f"{v:.1f}" if abs(v) >= 100 else f"{v:.4f}"


def _model_lines(table: pd.DataFrame) -> Tuple[List[str], List[str]]:
    """(one line per model of the run: accuracy and checkpoint; loud warnings)."""
    info = table.attrs.get("models")
    if info:
        return [v["line"] for v in info.values()], [v["warning"] for v in info.values() if v["warning"]]
    lines, warns = [], []
    if "accuracy" not in table:
        return lines, warns
    for (model, dataset), g in table[table["status"] != "published only"].groupby(["model", "dataset"], sort=True):
        a, c = _text(g["accuracy"].iloc[0]), _text(g["checkpoint"].iloc[0]) if "checkpoint" in g else ""
        lines.append(_model_line(str(model), str(dataset), a, c))
        if "not above chance" in a:
            warns.append(_warning(str(model), str(dataset), a, c.startswith("none, a substitute")))
    return lines, warns


def _reason_counts(rows: pd.DataFrame) -> List[Tuple[int, str]]:
    counts: Dict[str, int] = {}
    for w in rows["why_not"].map(_text):
        for part in [p for p in w.split(SEP) if p] or ["(no reason recorded)"]:
            counts[part] = counts.get(part, 0) + 1
    return sorted(((n, r) for r, n in counts.items()), key=lambda t: (-t[0], t[1]))


def _fill(text: str, width: int, indent: str = "    ", max_lines: Optional[int] = None):
    """``text`` wrapped to ``width`` (a string); with ``max_lines``, a list of at most that many lines."""
    if max_lines is None:
        return textwrap.fill(text, width, subsequent_indent=indent, break_on_hyphens=False)
    return textwrap.wrap(text, width, subsequent_indent=indent, break_on_hyphens=False, max_lines=max_lines,
                         placeholder=" …")


def format_comparison(table: pd.DataFrame, width: int = WIDTH, max_reasons: int = 6) -> str:
    """The comparison as the terminal shows it: each model's accuracy and checkpoint, loud warnings, the
    comparable rows (method, metric, ours, published, diff, n, source), then a count of the other rows per
    reason.  Every line fits ``width`` columns; the full table is ``reference_comparison.csv``."""
    if "comparable" not in table:  # a table of an earlier version
        table = table.assign(comparable=False, why_not="(not checked: written by an earlier version)")
    out: List[str] = []
    lines, warns = _model_lines(table)
    for w in warns:
        out.append(_fill("!! " + w, width, "   "))
    for ln in lines:
        out.append(_fill(ln, width))
    comp = table[table["comparable"].astype(bool)]
    n_pub = int((table["status"] != "ours only").sum())
    if len(comp):
        out.append(f"comparable: {len(comp)} of the {n_pub} published numbers")
        cells = [["method", "metric", "ours", "published", "diff", "n", "source"]]
        for _, r in comp.iterrows():
            cells.append([_text(r["method"]), _text(r["metric"]), fmt_value(r["mean"]), fmt_value(r["published"]),
                          ("+" if _num(r["diff"]) > 0 else "") + fmt_value(r["diff"]),
                          "" if pd.isna(r["n"]) else str(int(r["n"])), _text(r["cite"])])
        out += _columns(cells, right=(2, 3, 4, 5), width=width)
    else:
        out.append(f"comparable: none of the {n_pub} published numbers")
    groups = [("both", "not comparable: {n} rows beside a published number, because (a row may have several "
                       "reasons):"),
              ("ours only", "not compared: {n} of our rows have no published number:"),
              ("published only", "not run: {n} published numbers:")]
    for status, head in groups:
        rows = table[(table["status"] == status) & ~table["comparable"].astype(bool)]
        if not len(rows):
            continue
        out.append(head.format(n=len(rows)))
        counts = _reason_counts(rows)
        pairs = [r for _, r in counts if r.startswith(PAIR)]
        if len(pairs) > 1:  # "no published number for method x metric: a x b": one line for all of them
            counts = [c for c in counts if not c[1].startswith(PAIR)]
            metrics = sorted({r.rsplit(" x ", 1)[-1] for r in pairs})
            counts.append((len(pairs), f"no published number for that method and metric ({len(metrics)} metrics: "
                                       + ", ".join(metrics) + ")"))
            counts.sort(key=lambda t: -t[0])
        for n, r in counts[:max_reasons]:
            out += _fill(f"  {n} x {r}", width, "      ", max_lines=2)
        if len(counts) > max_reasons:
            out.append(f"  ... and {len(counts) - max_reasons} more reasons (why_not in reference_comparison.csv)")
    out.append("every row with its reasons and parameters: reference_comparison.csv")
    return "\n".join(out)


#: the reason of an ours-only row whose method has published numbers for other metrics
PAIR = "no published number for method x metric: "


def _columns(cells: List[List[str]], right=(), width: int = WIDTH) -> List[str]:
    """Rows of cells as aligned text columns (two spaces apart; ``right``: right-aligned columns)."""
    w = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    lines = []
    for r in cells:
        parts = [c.rjust(w[i]) if i in right else c.ljust(w[i]) for i, c in enumerate(r)]
        lines.append("  ".join(parts).rstrip()[:width])
    return lines


#: the report's columns, in order (the parameters come last, folded)
REPORT_COLUMNS = [("method", "method"), ("metric", "metric"), ("ours", "mean"), ("published", "published"),
                  ("diff", "diff"), ("comparable", "comparable"), ("why not", "why_not"), ("source", "cite"),
                  ("model", "model"), ("dataset", "dataset"), ("n", "n"), ("accuracy", "accuracy")]


def report_section(table: Optional[pd.DataFrame], max_rows: int = 300) -> Optional[dict]:
    """What the report's "Against the published numbers" shows, from ``reference_comparison.csv``:
    ``warnings``, ``models`` (one line per model), ``summary`` (counts), ``columns`` and ``rows`` (``cells``,
    ``comparable``, ``params``), ``more`` (rows left out).  Tables of earlier versions (no ``comparable``
    column) are shown with the columns they have."""
    if table is None or table.empty:
        return None
    t = table.copy()
    if "mean" not in t and "ours" in t:
        t["mean"] = t["ours"]
    if "cite" not in t and "source" in t:
        t["cite"] = t["source"].map(lambda s: _short(_text(s)))
    checked = "comparable" in t
    if checked:
        t["comparable"] = t["comparable"].map(_truth).fillna(False).astype(bool)
    lines, warns = _model_lines(t) if checked else ([], [])
    cols = [(h, c) for h, c in REPORT_COLUMNS if c in t]
    rows = []
    for _, r in t.head(max_rows).iterrows():
        cells = []
        for h, c in cols:
            v = r[c]
            if c in ("mean", "published", "diff"):
                cells.append(("+" if c == "diff" and _num(v) > 0 else "") + fmt_value(v))
            elif c == "comparable":
                cells.append("yes" if v else "no")
            elif c == "n":
                cells.append("" if pd.isna(v) else str(int(v)))
            else:
                cells.append(_text(v))
        params = _text(r.get("params"))
        rows.append({"cells": cells, "comparable": bool(r["comparable"]) if checked else None,
                     "params": params if params not in ("", "{}") else ""})
    summary = []
    if checked:
        n_pub = int((t["status"] != "ours only").sum()) if "status" in t else len(t)
        summary.append(f"{int(t['comparable'].sum())} of the {n_pub} published numbers are comparable")
        if "status" in t:
            for status, what in (("both", "beside a published number but not comparable"),
                                 ("ours only", "of our rows without a published number"),
                                 ("published only", "published numbers not run")):
                n = int(((t["status"] == status) & ~t["comparable"]).sum())
                if n:
                    summary.append(f"{n} {what}")
    else:
        summary.append("written by an earlier version: comparability not checked")
    return {"warnings": warns, "models": lines, "summary": summary, "columns": [h for h, _ in cols], "rows": rows,
            "more": max(len(t) - max_rows, 0)}


def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")
