"""The experiment runner: data -> explanation -> evaluation -> tidy rows.

An experiment is a list of benchmarks (a model config and a dataset config),
a list of method configs and a list of metric configs (see
``conf/experiment/default.yaml``).  For every benchmark and every sample (with
a progress bar) the runner computes the model's prediction once, explains the
target class with every method (timed), evaluates every metric and appends the
rows of that sample to ``rows.jsonl`` in the run folder, flushed at once: an
interrupted run loses at most the sample in progress and is continued with
``resume=true`` and the same ``hydra.run.dir``.

Global overrides: the top-level ``model``, ``dataset``, ``method`` and
``metric`` nodes of the config hold keys that are applied to every component of
that kind that has the key (``method.lambda=0.5`` sets lambda on every method
with a ``lambda`` parameter; ``dataset.n_samples=8`` limits every dataset).
``null`` means "leave the component's own value".
"""

from __future__ import annotations

import json
import time
import zlib
from pathlib import Path
from typing import Dict, List

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from .. import datasets as D
from .. import methods as ME
from .. import metrics as MT
from .. import models as MO
from ..datasets.base import SkipSample
from ..errors import NotApplicable, UserError
from ..metrics.base import EvalContext
from ..metrics.cost import Cost, measure
from .config import load_component
from .provenance import provenance
from .results import AGGREGATE, format_summary, write_tables


def _h(s: str) -> int:
    return zlib.crc32(str(s).encode())


def component(group: str, entry, overrides: DictConfig | None) -> tuple[str, dict]:
    """Resolve an experiment entry (a config name, or a mapping with ``config`` and
    overrides) into (label, parameters) with the global overrides applied."""
    if isinstance(entry, (dict, DictConfig)):
        entry = OmegaConf.to_container(entry, resolve=True) if isinstance(entry, DictConfig) else dict(entry)
        cfg_name = entry.pop("config", None) or entry.get("name")
        label = entry.pop("label", cfg_name)
        params = OmegaConf.to_container(load_component(group, cfg_name), resolve=True)
        params.update(entry)
    else:
        label = str(entry)
        params = OmegaConf.to_container(load_component(group, label), resolve=True)
    for k, v in (OmegaConf.to_container(overrides, resolve=True) if overrides else {}).items():
        if v is not None and k in params:
            params[k] = v
    params.pop("train", None)
    return label, params


def _build(registry_create, group: str, params: dict):
    params = dict(params)
    name = params.pop("name", None)
    if name is None:
        raise UserError(f"a {group} config has no `name` (the registry name): {params}")
    return registry_create(name, **params)


class Runner:
    def __init__(self, cfg: DictConfig, out_dir: Path):
        self.cfg = cfg
        self.out = Path(out_dir)
        self.exp = cfg.experiment
        self.seed = int(cfg.seed)
        self.rows_path = self.out / "rows.jsonl"
        self.rows: List[dict] = []
        self.hidden: Dict[tuple, List[dict]] = {}  # (dataset, model, method, metric) -> per-sample reduce inputs
        self.skipped_samples: List[dict] = []
        self.done: set = set()

    # ------------------------------------------------------------ persistence
    def _load_previous(self):
        if not self.rows_path.exists():
            return
        if not self.cfg.resume:
            raise UserError(f"{self.out} already holds results (rows.jsonl); pass resume=true to continue that run "
                            f"or choose another hydra.run.dir")
        with open(self.rows_path) as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:  # a line cut by the interruption
                    continue
                if rec.get("kind") == "sample":
                    self.done.add(tuple(rec["key"]))
                    self.rows.extend(rec["rows"])
                    for hk, hv in rec.get("hidden", []):
                        self.hidden.setdefault(tuple(hk), []).append(hv)
                elif rec.get("kind") == "skip_sample":
                    self.skipped_samples.append(rec["info"])
                    self.done.add(tuple(rec["key"]))

    def _append(self, rec: dict):
        with open(self.rows_path, "a") as f:
            f.write(json.dumps(rec, default=float) + "\n")
            f.flush()

    # ------------------------------------------------------------------ main
    def run(self):
        self.out.mkdir(parents=True, exist_ok=True)
        self._load_previous()
        t_start = time.time()
        status = "complete"
        prov = provenance(OmegaConf.to_container(self.cfg, resolve=True), self.seed)
        prov["components"] = []
        try:
            for bench in self.exp.benchmarks:
                prov["components"].append(self._run_benchmark(bench))
        except KeyboardInterrupt:
            status = "interrupted"
            print(f"\ninterrupted: {len(self.done)} finished (sample, method) results are saved in {self.rows_path}; "
                  f"continue with resume=true hydra.run.dir={self.out}")
        self._reduce()
        summary = write_tables(self.rows, self.out)
        prov.update(status=status, wall_time_s=round(time.time() - t_start, 2),
                    skipped_samples=self.skipped_samples, n_skipped_samples=len(self.skipped_samples),
                    n_rows=len(self.rows))
        (self.out / "provenance.json").write_text(json.dumps(prov, indent=2, default=str))
        if self.exp.get("reference"):
            self._compare_reference(summary)
        if self.cfg.get("print_summary", True):
            print(f"\n== {self.exp.name}: summary ({status}, {prov['wall_time_s']} s) ==")
            print(format_summary(summary))
            print(f"\nresults in {self.out}")
        return summary, status

    def _compare_reference(self, summary):
        from .reference import compare

        ref = Path(self.exp.reference)
        if not ref.is_absolute():
            ref = Path(__file__).resolve().parents[2] / ref
        table = compare(summary, ref)
        table.to_csv(self.out / "reference_comparison.csv", index=False)
        with pd.option_context("display.width", 250, "display.max_columns", 20):
            print("\n== against the published numbers ==")
            print(table.to_string(index=False))

    def _run_benchmark(self, bench) -> dict:
        mlabel, mparams = component("model", bench.model, self.cfg.get("model"))
        dlabel, dparams = component("dataset", bench.dataset, self.cfg.get("dataset"))
        adapter = _build(MO.create, "model", mparams)
        dataset = _build(D.create, "dataset", dparams)
        if hasattr(dataset, "bind"):  # real-data loaders take the model's frames, size, preprocessing and labels
            dataset.bind(adapter)
        if hasattr(dataset, "frames") and getattr(dataset, "frames", None) != adapter.num_frames:
            raise UserError(f"dataset {dlabel!r} has {dataset.frames} frames but model {mlabel!r} expects "
                            f"{adapter.num_frames}; set dataset.frames={adapter.num_frames}")
        methods = []
        for entry in self.exp.methods:
            label, params = component("method", entry, self.cfg.get("method"))
            methods.append((label, _build(ME.create, "method", params)))
        metrics = []
        for entry in self.exp.metrics:
            label, params = component("metric", entry, self.cfg.get("metric"))
            metrics.append((label, _build(MT.create, "metric", params)))

        base = dict(experiment=self.exp.name, dataset=dlabel, model=mlabel, seed=self.seed)

        def skip_pair(label, method, reason):
            """Record once that ``method`` does not apply to this model, with the reason."""
            key = ("skip", dlabel, mlabel, label)
            if key not in self.done:
                row = dict(base, method=label, params=json.dumps(method.params(), sort_keys=True), sample_id="",
                           metric="skipped", value=float("nan"), note=reason)
                self.rows.append(row)
                self._append({"kind": "sample", "key": list(key), "rows": [row]})
                self.done.add(key)
            print(f"skipping {label} on {mlabel}: {reason}")

        runnable = []
        for label, method in methods:
            try:
                method.check(adapter)
                runnable.append((label, method))
            except NotApplicable as e:
                skip_pair(label, method, str(e))
        warmed = set()
        bar = tqdm(range(len(dataset)), desc=f"{mlabel} on {dlabel}", unit="sample")
        for i in bar:
            try:
                sample = dataset[i]
            except SkipSample as e:
                sid = f"{dlabel}#{i}"
                key = ("skip_sample", dlabel, mlabel, sid)
                if key not in self.done:
                    info = {"dataset": dlabel, "model": mlabel, "index": i, "reason": str(e)}
                    self.skipped_samples.append(info)
                    self._append({"kind": "skip_sample", "key": list(key), "info": info})
                    self.done.add(key)
                continue
            logits = adapter.predict(sample.x[None])[0]
            pred = int(logits.argmax())
            if self.cfg.target == "label" and sample.label is not None:
                target = int(sample.label)
            else:
                target = pred
            for label, method in list(runnable):
                key = (dlabel, mlabel, label, sample.sample_id)
                if key in self.done:
                    continue
                try:
                    if self.cfg.get("warmup", True) and label not in warmed:
                        method(adapter, sample.x, target)  # not timed: first-call overheads
                        warmed.add(label)
                    with measure() as cost:  # wall clock and peak additional resident memory
                        expl = method(adapter, sample.x, target)
                    explain = {"explain_s": cost.seconds, "explain_peak_mb": cost.peak_mb}
                except NotApplicable as e:  # found out only once the method looked at the model
                    skip_pair(label, method, str(e))
                    runnable.remove((label, method))
                    continue
                rows, hidden = self._evaluate(base, label, method, metrics, adapter, sample, expl, logits, target,
                                              pred, explain)
                self.rows.extend(rows)
                for hk, hv in hidden:
                    self.hidden.setdefault(hk, []).append(hv)
                self._append({"kind": "sample", "key": list(key), "rows": rows,
                              "hidden": [[list(k), v] for k, v in hidden]})
                self.done.add(key)
                if self.cfg.get("save_figures", 0) and i < int(self.cfg.save_figures):
                    from .figures import save_figure

                    save_figure(self.out / "figures" / f"{dlabel}__{mlabel}__{label}__{sample.sample_id}.png",
                                sample, expl, title=f"{mlabel} / {label} / {sample.sample_id} (target {target})")
        return {"model": mlabel, "model_params": mparams, "adapter": adapter.describe(), "dataset": dlabel,
                "dataset_params": dparams, "dataset_info": dataset.describe(),
                "methods": {l: m.params() for l, m in methods}, "metrics": {l: m.params() for l, m in metrics}}

    def _evaluate(self, base, mlabel, method, metrics, adapter, sample, expl, logits, target, pred, explain):
        """Every metric on one explanation.  The cost metric runs last and sees the other metrics'
        summed evaluation time (``timing['eval_s']``) and forward passes (``counters['forward']``)."""
        rows, hidden = [], []
        timing = dict(explain, eval_s=0.0)
        counters: Dict[str, int] = {}
        metrics = sorted(metrics, key=lambda lm: isinstance(lm[1], Cost))
        common = dict(base, method=mlabel, params=json.dumps(method.params(), sort_keys=True),
                      sample_id=sample.sample_id, label=sample.label, target=target,
                      correct=None if sample.label is None else bool(pred == sample.label))
        for label, metric in metrics:
            missing = [r for r in metric.requires if getattr(sample, r, None) is None]
            if missing:
                continue
            rng = np.random.default_rng([self.seed, _h(sample.sample_id), _h(mlabel), _h(label)])
            ctx = EvalContext(adapter=adapter, x=sample.x, target=target, explanation=expl, logits=logits, rng=rng,
                              batch_size=int(self.cfg.batch_size), label=sample.label, mask=sample.mask,
                              frames=sample.frames, timing=timing, counters=counters)
            t0 = time.perf_counter()
            values = metric.compute(ctx)
            if not isinstance(metric, Cost):
                timing["eval_s"] += time.perf_counter() - t0
            mp = json.dumps(metric.params(), sort_keys=True, default=str)
            for name, value in values.items():
                if name.startswith("_"):
                    continue
                rows.append(dict(common, metric=name, value=float(value),
                                 higher_is_better=bool(metric.outputs.get(name, True)), metric_params=mp))
            if hasattr(metric, "reduce"):
                hv = {k: v for k, v in values.items() if k.startswith("_")}
                hidden.append(((base["dataset"], base["model"], mlabel, label, common["params"], mp), hv))
        return rows, hidden

    def _reduce(self):
        """Dataset-level metrics: ``metric.reduce(per-sample hidden outputs)`` -> aggregate rows."""
        cache = {}
        for (dlabel, mlabel, method, mlab, params, mp), values in self.hidden.items():
            if mlab not in cache:
                _, p = component("metric", mlab, self.cfg.get("metric"))
                cache[mlab] = _build(MT.create, "metric", p)
            metric = cache[mlab]
            for name, value in metric.reduce(values).items():
                self.rows.append(dict(experiment=self.exp.name, dataset=dlabel, model=mlabel, method=method,
                                      params=params, sample_id=AGGREGATE, metric=name, value=float(value),
                                      higher_is_better=bool(metric.outputs.get(name, True)), metric_params=mp,
                                      seed=self.seed, note=f"n={len(values)}"))
