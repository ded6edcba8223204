"""The experiment runner: plan -> load -> explain -> evaluate -> record, one benchmark after the other.

* **Plan** (:mod:`xaibench.run.plan`): the components of the experiment, every value checked against its
  typed config before anything loads.
* **Load** (:class:`~xaibench.run.stages.Loader`): the samples of a benchmark (``shard=I/N`` keeps every
  N-th), ``workers`` processes loading ahead.
* **Explain** (:class:`~xaibench.run.stages.Explainer`): ``explain_batch_size`` samples at a time; arms of
  one trace-based method share one traced pass.
* **Evaluate** (:class:`~xaibench.run.stages.Evaluator`): every metric once per batch, with all its (sample,
  arm) items.
* **Record**: the rows of each (sample, arm) -- its metric values and what it cost (``cost`` rows measured by
  the harness) -- are appended to ``rows.jsonl``, flushed at once, keyed by the sample's id; the token maps
  go with them (``maps.npz`` at the end).

An interrupted run (Ctrl-C, SIGTERM) loses at most the batch in progress, writes its tables and continues
with ``resume=true`` in the same ``hydra.run.dir``.  A resume compares the run's fingerprint
(:mod:`xaibench.run.fingerprint`: config, code, versions, weights, data) with the interrupted run's and
refuses any difference, naming it, unless ``allow_change`` lists that part (recorded in the provenance).
"""

from __future__ import annotations

import json
import os
import textwrap
import time
import warnings
import zlib
from pathlib import Path
from typing import Dict, List, Optional

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from ..analysis.maps import decode, encode, write_maps
from ..analysis.results import AGGREGATE, aggregate_rows
from ..analysis.schema import DESCRIPTIVE, Output, declared_reductions, hidden_state
from ..errors import NotApplicable, UserError
from ..io import atomic_write_text, repair_jsonl, safe_name
from ..metrics.base import EvalItem, Services
from . import fingerprint as FP
from . import plan as C
from . import resources as R
from .options import deferred_signals, neutral_options, resolve_device, run_options, stop_on_sigterm
from .provenance import provenance
from .measure import COST_OUTPUTS
from .stages import Arm, Evaluator, Explainer, Loader, MetricRun, to_device

JOURNAL_FORMAT = 2
def _h(s) -> int:
    return zlib.crc32(str(s).encode())


class Runner:
    def __init__(self, cfg: DictConfig, out_dir: Path, choices: Optional[dict] = None,
                 sweep: Optional[dict] = None, overrides: Optional[List[str]] = None):
        self.cfg = cfg
        self.out = Path(out_dir)
        self.exp = cfg.experiment
        self.opts = run_options(cfg)
        self.seed = self.opts.seed
        self.choices = dict(choices or {})
        self.sweep = dict(sweep or {})  # {"keys": [...], "job": n, "command": [...]}: a -m sweep
        self.overrides = list(overrides or [])  # the run's command-line overrides (for the resume command)
        self.rows_path = self.out / "rows.jsonl"
        self.rows: List[dict] = []
        self.hidden: List[list] = []
        self.maps: Dict[tuple, object] = {}
        self.skipped_samples: List[dict] = []
        self.done: set = set()
        self.stats = {"forward": 0, "backward": 0, "cache_hits": 0, "forward_time_s": {}, "batch_sizes": {}}
        #: wall-clock seconds per stage (bench/bench_overhead.py reads them from provenance.json)
        self.stage_seconds = {k: 0.0 for k in ("load", "predict", "explain", "evaluate", "record")}
        self._fp_path = self.out / "run_config.json"
        self._fp: dict = {}
        self._fp_written = False
        self.allowed_changes: List[str] = []

    # ------------------------------------------------------------ fingerprint and journal
    def _fingerprint_config(self, plan: C.Plan) -> dict:
        neutral = set(neutral_options())
        top = {k: v for k, v in OmegaConf.to_container(self.cfg, resolve=True).items()
               if k not in neutral and k not in C.GROUPS and k != "experiment"}
        return {"options": top, "experiment": str(self.exp.get("name")),
                "benchmarks": [[m.label, m.params, d.label, d.params] for m, d in plan.benchmarks],
                "methods": [[c.label, c.name, c.params] for c in plan.methods],
                "metrics": [[c.label, c.name, c.params] for c in plan.metrics]}

    def _check_part(self, part: str, new, old) -> None:
        """Refuse a resume whose ``part`` of the fingerprint differs (unless allowed)."""
        if old is None:
            return
        diffs = FP.diff(old, new, part)
        if not diffs:
            return
        if part in self.opts.allow_change:
            self.allowed_changes += diffs
            print(textwrap.fill(f"resume: accepting a change of {part} (allow_change): " + "; ".join(diffs[:5]),
                                120, subsequent_indent="    "))
            return
        raise UserError(f"resume=true, but the {part} differs from the interrupted run in {self.out}:\n  "
                        + "\n  ".join(diffs[:20]) + f"\nFinished and new results would come from two different {part}s. Rerun with the "
                        f"original {part}, start a new run folder (hydra.run.dir=...), or accept the difference "
                        f"with allow_change=[{part}] (recorded in provenance.json)")

    def _open_journal(self, plan: C.Plan):
        """Fresh run: nothing yet (the fingerprint is written with the first record).  Resume: check the
        fingerprint's config, code and versions, and read what is finished."""
        for tmp in self.out.glob(".tmp-*"):  # left by a kill during an atomic write
            tmp.unlink(missing_ok=True)
        self._fp = {"format": JOURNAL_FORMAT, "config": self._fingerprint_config(plan), "code": FP.code(),
                    "versions": FP.versions(), "weights": {}, "data": {}}
        has_rows = self.rows_path.exists() and self.rows_path.stat().st_size > 0
        if not has_rows:
            self.rows_path.unlink(missing_ok=True)
            return
        if not self.opts.resume:
            raise UserError(f"{self.out} already holds results (rows.jsonl); pass resume=true to continue that run "
                            f"or choose another hydra.run.dir")
        if not self._fp_path.exists():
            raise UserError(f"resume=true, but {self.out} has no run_config.json, so nothing says which "
                            f"configuration, code and data its results came from; start a new run folder")
        old = json.loads(self._fp_path.read_text())
        if old.get("format") != JOURNAL_FORMAT:
            raise UserError(f"{self.out} was written by an older xaibench (journal format "
                            f"{old.get('format', 1)}, now {JOURNAL_FORMAT}); start a new run folder")
        for part in ("config", "code", "versions"):
            self._check_part(part, self._fp[part], old.get(part))
        self._fp["weights"], self._fp["data"] = dict(old.get("weights", {})), dict(old.get("data", {}))
        self._old_fp = old
        self._fp_written = True
        dropped = repair_jsonl(self.rows_path)
        if dropped:
            print(f"resume: dropped a record cut by the interruption ({dropped} bytes); it is recomputed")
        with open(self.rows_path) as f:
            for line in f:
                rec = json.loads(line)
                key = tuple(rec["key"])
                self.done.add(key)
                if rec.get("kind") == "sample":
                    self.rows.extend(rec["rows"])
                    self.hidden.extend(rec.get("hidden", []))
                    if rec.get("map"):
                        self.maps[tuple(rec["map"]["key"])] = rec["map"]["data"]
                elif rec.get("kind") == "skip_sample":
                    self.skipped_samples.append(rec["info"])

    def _check_benchmark(self, model_label: str, adapter, bench: str, dataset):
        """Weights and data of a benchmark against the interrupted run's (resume), then recorded."""
        w, d = FP.weights_digest(adapter), dataset.fingerprint()
        old = getattr(self, "_old_fp", {})
        self._check_part("weights", {model_label: w}, {model_label: old.get("weights", {}).get(model_label, w)})
        self._check_part("data", {bench: d}, {bench: old.get("data", {}).get(bench, d)})
        self._fp["weights"][model_label], self._fp["data"][bench] = w, d
        if self._fp_written:
            atomic_write_text(self._fp_path, json.dumps(self._fp, indent=1, default=str))

    def _append(self, rec: dict):
        if not self._fp_written:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self._fp_path, json.dumps(self._fp, indent=1, default=str))
            self._fp_written = True
        with open(self.rows_path, "a") as f:
            f.write(json.dumps(rec, default=float) + "\n")
            f.flush()

    # ------------------------------------------------------------------ main
    def run(self):
        with C.hydra_context():
            plan = C.plan(self.cfg, self.choices)
        for c in plan.methods + plan.metrics + [m for m, _ in plan.benchmarks] + [d for _, d in plan.benchmarks]:
            c.check()  # every value against its typed config, before anything loads
        self._seed_components(plan)
        plan = self._sweep_scope(plan)
        self.plan = plan
        self.device = resolve_device(self.opts.device)
        self.out.mkdir(parents=True, exist_ok=True)
        self._open_journal(plan)
        t_start = time.time()
        status = "complete"
        prov = provenance(OmegaConf.to_container(self.cfg, resolve=True), self.seed)
        prov.update(device=str(self.device), precision=self.opts.precision, choices=self.choices,
                    shard=self.opts.shard, components=[], sweep=self.sweep or None)
        try:
            with stop_on_sigterm(), _warnings_through_tqdm():
                for model_c, adapter, data_c, dataset in self._benchmarks():
                    prov["components"].append(self._run_benchmark(model_c, adapter, data_c, dataset))
        except KeyboardInterrupt:
            status = "interrupted"
            print(f"\ninterrupted: {len(self.done)} finished results are saved in {self.rows_path}; continue with:\n"
                  f"  {resume_command(self.out, self.overrides, self.sweep)}")
        with deferred_signals() as got:
            summary = self._finish(prov, status, t_start, got)
        if got and status == "complete":
            status = "interrupted"
        return summary, status

    def _finish(self, prov, status, t_start, got):
        from ..analysis.results import write_tables

        rows = self.rows + aggregate_rows(self.hidden, str(self.exp.name), self.seed) + self._skip_rows()
        summary = write_tables(rows, self.out, seed=self.seed, alpha=self.opts.alpha)
        if self.maps:
            write_maps(((k, decode(v)) for k, v in self.maps.items()), self.out)
        if got and status == "complete":
            status = "interrupted"
        fp = {k: (v if k != "code" else {kk: vv for kk, vv in v.items() if kk != "files"}) for k, v in self._fp.items()}
        prov.update(status=status, wall_time_s=round(time.time() - t_start, 2), fingerprint=fp,
                    allowed_changes=self.allowed_changes, skipped_samples=self.skipped_samples,
                    n_skipped_samples=len(self.skipped_samples), n_rows=len(rows),
                    passes={k: self.stats[k] for k in ("forward", "backward", "cache_hits")},
                    forward_time_s=self.stats["forward_time_s"], batch_sizes=self.stats["batch_sizes"],
                    stage_seconds={k: round(v, 4) for k, v in self.stage_seconds.items()})
        atomic_write_text(self.out / "provenance.json", json.dumps(prov, indent=2, default=str))
        if self.exp.get("reference"):
            self._compare_reference(summary)
        if self.opts.print_summary:
            self._print(summary, status, prov)
        if self.opts.report:
            try:
                from ..analysis.report import write_report

                path = write_report(self.out)
                if self.opts.print_summary:
                    print(f"report: {path}")
            except Exception as e:  # a report must never lose a run's results
                print(f"(report.html not written: {type(e).__name__}: {e})")
        return summary

    def _skip_rows(self) -> List[dict]:
        """One ``n_skipped_samples`` row per benchmark with skipped samples (descriptive)."""
        counts: Dict[tuple, int] = {}
        for s in self.skipped_samples:
            counts[(s["dataset"], s["model"])] = counts.get((s["dataset"], s["model"]), 0) + 1
        return [dict(experiment=str(self.exp.name), dataset=d, model=m, method="(all)", params="{}",
                     sample_id=AGGREGATE, metric="n_skipped_samples", value=float(n), higher_is_better=False,
                     metric_kind=DESCRIPTIVE, metric_params="{}", seed=self.seed, note=f"n={n}")
                for (d, m), n in counts.items()]

    def _print(self, summary, status, prov):
        import pandas as pd

        from ..analysis.table import format_table, format_validity

        vpath = self.out / "validity.csv"
        validity = pd.read_csv(vpath) if vpath.exists() else None
        print(f"\n== {self.exp.name}: summary ({status}, {prov['wall_time_s']} s) ==")
        print(format_table(summary, validity=validity))
        if validity is not None and len(validity):
            print("\n" + format_validity(validity))
        if self.skipped_samples:
            reasons: Dict[str, int] = {}
            for s in self.skipped_samples:
                reasons[s["reason"]] = reasons.get(s["reason"], 0) + 1
            print(f"\n{len(self.skipped_samples)} sample(s) skipped:")
            for r, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:10]:
                print(f"  {n} x {r}")
        p = prov["passes"]
        print(f"\nmodel passes: {p['forward']} forward, {p['backward']} backward; {p['cache_hits']} forward "
              f"passes saved by the output cache")
        print(f"results in {self.out}")

    def _compare_reference(self, summary):
        from ..analysis.reference import compare, format_comparison, reference_path
        from ..io import atomic_to_csv

        table = compare(summary, reference_path(self.exp.reference), run_dir=self.out)
        atomic_to_csv(table, self.out / "reference_comparison.csv", index=False)
        print("\n== against the published numbers ==")
        print(format_comparison(table))

    def _seed_components(self, plan: C.Plan):
        """``seed`` seeds every seeded method and metric (SHAP, LIME, controls ...) unless set explicitly."""
        for c in plan.methods + plan.metrics:
            acc = c.accepted()
            if acc is not None and C.SEED_KEY in acc and c.params.get(C.SEED_KEY) is None:
                c.params[C.SEED_KEY] = self.seed

    def _sweep_scope(self, plan: C.Plan) -> C.Plan:
        """A ``-m`` sweep over method parameters given as global overrides (``-m method.lambda=0,1,2``): the
        first point runs every method, the others only the methods the swept parameters apply to -- the
        others' results would be the same at every point (the merged sweep table takes them from the first)."""
        keys = [k for k in self.sweep.get("keys", ()) if k.startswith("method.")]
        if not keys or len(keys) != len(self.sweep.get("keys", ())) or self.choices.get("method") \
                or int(self.sweep.get("job", 0)) == 0:
            return plan
        names = [k.split(".", 1)[1] for k in keys]
        kept = []
        for c in plan.methods:
            cfg = c.config()
            if cfg is not None and any(n in type(cfg).keys() and cfg.is_active(n) for n in names):
                kept.append(c)
        if not kept:
            return plan
        print(textwrap.fill(f"sweep point {self.sweep.get('job')}: runs only the methods that "
                            f"{', '.join(keys)} applies to ({', '.join(c.label for c in kept)}); the other methods "
                            f"ran in the sweep's first point", 120, subsequent_indent="    "))
        return C.Plan(plan.benchmarks, kept, plan.metrics, plan.selected)

    # ------------------------------------------------------------- benchmark
    def _fits(self, adapter, dataset) -> Optional[str]:
        frames = getattr(dataset, "frames", None)
        if frames is not None and frames != adapter.num_frames:
            return (f"dataset {dataset.name!r} has {frames} frames but model {adapter.name!r} expects "
                    f"{adapter.num_frames}; set dataset.frames={adapter.num_frames}")
        size = getattr(dataset, "size", None)
        if size is not None and size != adapter.image_size:
            return (f"dataset {dataset.name!r} has {size}-px images but model {adapter.name!r} expects "
                    f"{adapter.image_size}; set dataset.size={adapter.image_size}")
        return None

    def _benchmarks(self):
        """(model component, adapter, dataset component, dataset) of every benchmark to run.

        The experiment's own pairs must fit (frames, size); with ``model=`` / ``dataset=`` selected, every
        selected model runs on each of the datasets that fit it, and a model that no dataset fits is an
        error that says how to fix it.
        """
        by_model: Dict[str, list] = {}
        for m, d in self.plan.benchmarks:
            by_model.setdefault(m.label, []).append((m, d))
        selection = bool(self.plan.selected.get("model") or self.plan.selected.get("dataset"))
        for pairs in by_model.values():
            model_c = pairs[0][0]
            adapter = model_c.create()
            adapter.to(self.device, self.opts.precision)
            if not self.opts.cache:
                adapter.cache = None
            runs, problems = [], []
            for _, data_c in pairs:
                dataset = data_c.create()
                if hasattr(dataset, "bind"):  # real-data loaders take the model's frames, size and labels
                    dataset.bind(adapter)
                problem = self._fits(adapter, dataset)
                if problem is None:
                    runs.append((data_c, dataset))
                elif not selection:
                    raise UserError(problem)
                else:
                    problems.append(problem)
            if not runs:
                raise UserError(f"no dataset of the experiment fits model {model_c.label!r}: " + "; ".join(problems)
                                + f". Choose one with dataset=NAME (valid: {', '.join(C.options('dataset'))})")
            for p in problems:
                print(textwrap.fill(f"(skipping a dataset that does not fit {model_c.label}: {p})", 120,
                                    subsequent_indent="    "))
            for data_c, dataset in runs:
                yield model_c, adapter, data_c, dataset

    def _preflight(self, adapter, dataset, arms: List[Arm], metrics: List[MetricRun]):
        """Settings that cannot fit this model fail now, before any sample is explained."""
        for obj in [a.method for a in arms] + [m.metric for m in metrics]:
            fit = getattr(obj, "check_fit", None)
            if fit is not None:
                fit(adapter)

    def _run_benchmark(self, model_c: C.Component, adapter, data_c: C.Component, dataset) -> dict:
        mlabel, dlabel = model_c.label, data_c.label
        base = dict(experiment=str(self.exp.name), dataset=dlabel, model=mlabel, seed=self.seed)
        arms_all = [Arm(c, c.create()) for c in self.plan.methods]
        metrics = [MetricRun(c, c.create()) for c in self.plan.metrics]
        arms = []
        for a in arms_all:
            reason = None
            try:
                a.method.check(adapter)
            except NotApplicable as e:
                reason = str(e)
            needs = [r for r in getattr(a.method, "requires", ()) if not getattr(dataset, "has_" + r, False)]
            if needs:
                reason = f"needs ground truth ({', '.join(needs)}) that {dlabel} does not have"
            if reason:
                self._skip_pair(base, a, reason)
            else:
                arms.append(a)
        self._preflight(adapter, dataset, arms, metrics)
        self._check_benchmark(mlabel, adapter, f"{dlabel}|{mlabel}", dataset)

        indices = list(range(len(dataset)))
        if self.opts.shard_pair is not None:
            i, n = self.opts.shard_pair
            indices = indices[i::n]
        ids = [dataset.sample_id(i) for i in indices]
        pending = [(i, sid) for i, sid in zip(indices, ids)
                   if not all((dlabel, mlabel, a.label, sid) in self.done for a in arms)
                   and ("skip", dlabel, mlabel, sid) not in self.done]
        batch = R.model_batch(adapter, self.opts.batch_size, self.device)
        n_explain, note = R.explain_batch(adapter, self.opts.explain_batch_size, self.device, len(pending),
                                          arms=len(arms))
        chunk = min(n_explain, R.trace_chunk(adapter, self.device))
        if note:
            print(note)
        self.stats["batch_sizes"][f"{dlabel}|{mlabel}"] = {"model": batch, "explain": n_explain, "trace": chunk}
        self.stats["forward_time_s"][mlabel] = self._forward_time(adapter)

        weights = self._weights(adapter, arms, metrics, batch)
        total = len(indices) * sum(weights.values())
        done_w = sum(weights[a.label] for sid in ids for a in arms if (dlabel, mlabel, a.label, sid) in self.done)
        bar = tqdm(total=max(total, 1e-9), initial=done_w, desc=f"{mlabel} on {dlabel}", unit="pass",
                   smoothing=0.05, bar_format="{l_bar}{bar}| {percentage:3.0f}% [{elapsed}<{remaining}{postfix}]")
        self._bar, self._bar_weights = bar, weights
        progress = self._progress(bar)
        explainer = Explainer(adapter, arms, max_trace=chunk, progress=progress)
        services = Services(reexplain=lambda item, ad, arms=arms: self._reexplain(arms, item, ad),
                            randomised=lambda k, seed, ad=adapter: self._randomised(ad, k, seed))
        evaluator = Evaluator(adapter, metrics, batch, services, seed=self.seed, progress=progress,
                              other_adapters=lambda: list(self.__dict__.get("_random_copies", {}).values()))
        before = dict(adapter.passes)
        warmed = not self.opts.warmup
        loader = Loader(dataset, [i for i, _ in pending], [s for _, s in pending], n_explain, self.opts.workers,
                        self.device)
        try:
            t_load = time.perf_counter()
            for sb in loader:
                self.stage_seconds["load"] += time.perf_counter() - t_load
                for i, sid, reason in sb.skipped:
                    self._skip_sample(dlabel, mlabel, sid, reason)
                    bar.update(sum(weights.values()))
                if not sb.samples:
                    continue
                samples = [to_device(s, self.device) for _, s in sb.samples]
                if not warmed:
                    explainer.warmup(samples[0], 0)
                    warmed = True
                self._run_batch(base, adapter, explainer, evaluator, metrics, samples,
                                [i for i, _ in sb.samples], batch)
                bar.set_postfix_str(f"skipped {sum(1 for s in self.skipped_samples if s['dataset'] == dlabel and s['model'] == mlabel)}")
                t_load = time.perf_counter()
        finally:
            bar.close()
            self.stats["forward"] += adapter.passes["forward"] - before["forward"]
            self.stats["backward"] += adapter.passes["backward"] - before["backward"]
            for copy in self.__dict__.get("_random_copies", {}).values():  # the randomisation test's copies
                for k in ("forward", "backward"):
                    self.stats[k] += copy.passes[k]
                    copy.passes[k] = 0
            if adapter.cache is not None:
                self.stats["cache_hits"] += adapter.cache.hits
                adapter.cache.hits = 0
        describe = getattr(adapter, "describe", lambda: {})
        return {"model": mlabel, "model_params": model_c.params, "adapter": describe(), "dataset": dlabel,
                "dataset_params": data_c.params, "dataset_info": dataset.describe(),
                "methods": {a.label: a.method.params() for a in arms_all},
                "metrics": {m.comp.label: m.metric.params() for m in metrics},
                "batch_sizes": self.stats["batch_sizes"][f"{dlabel}|{mlabel}"]}

    # --------------------------------------------------------------- progress
    @staticmethod
    def _weights(adapter, arms, metrics, batch) -> Dict[str, float]:
        """Expected model passes of each arm per sample (its explanation and its metrics): the unit of the
        progress bar, so that SHAP's 256 passes weigh 256 times an attention map."""
        def expected(obj):
            fn = getattr(obj, "expected_passes", None)
            try:
                return float(fn(adapter)) if fn is not None else 1.0
            except Exception:
                return 1.0

        per_metric = sum(expected(m.metric) for m in metrics)
        return {a.label: max(0.1, expected(a.method)) + per_metric for a in arms}

    @staticmethod
    def _progress(bar):
        """Sub-progress of long explanations (SHAP / LIME coalitions) in the bar's postfix; the bar itself
        moves by an arm's weight when its results are recorded (:meth:`_record`)."""
        def cb(what, k):
            kind, label = what
            if kind == "sub":
                bar.set_postfix_str(f"{label}: {k} passes", refresh=True)
        return cb

    # --------------------------------------------------------------- a batch
    def _run_batch(self, base, adapter, explainer, evaluator, metrics, samples, positions, batch):
        dlabel, mlabel = base["dataset"], base["model"]
        xs = torch.stack([s.x for s in samples])
        t0 = time.perf_counter()
        logits = adapter.predict(xs, batch_size=batch)
        self.stage_seconds["predict"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        preds = logits.argmax(-1).tolist()
        targets = [int(s.label) if self.opts.target == "label" and s.label is not None else int(p)
                   for s, p in zip(samples, preds)]
        results, order = {}, []
        for group in list(explainer.groups):
            todo = [k for k, s in enumerate(samples)
                    if not all((dlabel, mlabel, a.label, s.sample_id) in self.done for a in group)]
            if not todo:
                continue
            try:
                got = explainer.explain(group, [samples[k] for k in todo], [targets[k] for k in todo])
            except NotApplicable as e:  # found out only once the method looked at the model
                for a in group:
                    self._skip_pair(base, a, str(e))
                explainer.drop(group)
                continue
            for a in group:
                ex = got[a.label]
                for j, k in enumerate(todo):
                    if (dlabel, mlabel, a.label, samples[k].sample_id) not in self.done:
                        results[(a.label, k)] = (a, j, ex)
                        order.append((a.label, k))
        if not order:
            return
        items = []
        for label, k in order:
            a, j, ex = results[(label, k)]
            s = samples[k]
            items.append(EvalItem(sample=s, method=label, explanation=ex.explanations[j], target=targets[k],
                                  logits=logits[k], rng=None, shared_seed=(self.seed, _h(s.sample_id))))
        self.stage_seconds["explain"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        evaluated = evaluator.evaluate(items)
        self.stage_seconds["evaluate"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        n_items = {m.comp.label: max(1, len(evaluated[m.comp.label].values)) for m in metrics}
        for pos, (label, k) in enumerate(order):
            a, j, ex = results[(label, k)]
            s = samples[k]
            eval_s = sum(evaluated[m.comp.label].seconds / n_items[m.comp.label] for m in metrics
                         if pos in evaluated[m.comp.label].values)
            eval_fw = sum(evaluated[m.comp.label].forward / n_items[m.comp.label] for m in metrics
                          if pos in evaluated[m.comp.label].values)
            cost = {"explain_time_s": ex.seconds[j], "n_forward": ex.forward[j], "n_backward": ex.backward[j],
                    "explain_peak_mem_mb": ex.peak_mb[j], "eval_time_s": eval_s, "eval_n_forward": eval_fw}
            per_metric = {m.comp.label: evaluated[m.comp.label].values.get(pos) for m in metrics}
            self._record(base, a, s, positions[k], ex.explanations[j], logits[k], targets[k], preds[k], metrics,
                         per_metric, cost)
        if adapter.cache is not None:
            adapter.cache.clear()
        self.stage_seconds["record"] += time.perf_counter() - t0

    def _record(self, base, arm, sample, position, expl, logits, target, pred, metrics, per_metric, cost):
        dlabel, mlabel = base["dataset"], base["model"]
        params = json.dumps(arm.method.params(), sort_keys=True, default=str)
        mver = str(getattr(arm.method, "version", "1"))
        common = dict(base, method=arm.label, params=params, sample_id=sample.sample_id, label=sample.label,
                      target=target, correct=None if sample.label is None else bool(pred == sample.label),
                      method_version=mver)
        rows, hidden = [], []
        for m in metrics:
            values = per_metric.get(m.comp.label)
            if values is None:
                continue
            metric = m.metric
            mp = json.dumps(metric.params(), sort_keys=True, default=str)
            for name, value in values.items():
                if name.startswith("_"):
                    continue
                out = metric.outputs.get(name)
                if not isinstance(out, Output):
                    raise RuntimeError(f"metric {m.comp.label} returned {name!r}, which its outputs do not declare")
                rows.append(dict(common, metric=name, value=float(value), metric_params=mp,
                                 metric_version=str(getattr(metric, "version", "1")), **out.row_fields()))
            declared = declared_reductions({k: v for k, v in metric.outputs.items() if isinstance(v, Output)})
            if declared:
                hidden.append([[dlabel, mlabel, arm.label, m.comp.label, params, mp, m.comp.name],
                               hidden_state(values), declared])
        for name, value in cost.items():
            rows.append(dict(common, metric=name, value=float(value), metric_params="{}", metric_version="harness",
                             **COST_OUTPUTS[name].row_fields()))
        key = (dlabel, mlabel, arm.label, sample.sample_id)
        map_key = (dlabel, mlabel, arm.label, params, sample.sample_id)
        enc = encode(expl.token_map)
        self.rows.extend(rows)
        self.hidden.extend(hidden)
        self.maps[map_key] = enc
        self._append({"kind": "sample", "key": list(key), "index": position, "rows": rows, "hidden": hidden,
                      "map": {"key": list(map_key), "data": enc}})
        self.done.add(key)
        self._bar.update(self._bar_weight(arm))
        self._save(base, arm, sample, position, expl, target)

    def _bar_weight(self, arm) -> float:
        w = getattr(self, "_bar_weights", None)
        return 1.0 if w is None else w.get(arm.label, 1.0)

    def _save(self, base, arm, sample, index, expl, target):
        if index < self.opts.save_figures:
            from ..analysis.figures import save_figure

            name = "__".join(safe_name(v, 60) for v in (base["dataset"], base["model"], arm.label, sample.sample_id))
            save_figure(self.out / "figures" / f"{name}.png", _cpu(sample), expl.cpu(),
                        title=f"{base['model']} / {arm.label} / {sample.sample_id} (target {target})")
        if index < self.opts.gallery:
            from ..analysis.gallery import Gallery

            if not hasattr(self, "_gallery"):
                self._gallery = Gallery(self.out / "gallery.h5", self.opts.gallery)
            self._gallery.add(base["dataset"], base["model"], _cpu(sample), arm.label, expl.cpu())

    # --------------------------------------------------------------- services
    def _reexplain(self, arms, item, adapter):
        by = {a.label: a for a in arms}
        return by[item.method].method.explain_sample(adapter, item.sample, int(item.target))

    def _randomised(self, adapter, k: int, seed: int):
        """Copies with the head and top k blocks re-initialised, made once per run (mprt metric)."""
        cache = self.__dict__.setdefault("_random_copies", {})
        key = (id(adapter), min(k, adapter.num_layers), seed)
        if key not in cache:
            cache[key] = adapter.randomised(k, seed)
        return cache[key]

    def _forward_time(self, adapter) -> float:
        """Seconds of one single-sample forward pass (median of 3, after a warm-up), for cost ratios."""
        import numpy as np

        x = torch.zeros(1, *adapter.input_shape)
        with adapter.counting() as n:
            adapter.predict(x)
            ts = []
            for _ in range(3):
                t0 = time.perf_counter()
                adapter.predict(x)
                if adapter.device.type == "cuda":
                    torch.cuda.synchronize(adapter.device)
                ts.append(time.perf_counter() - t0)
        for k in n:  # not part of the experiment
            adapter.passes[k] -= n[k]
        return float(np.median(ts))

    # --------------------------------------------------------------- skips
    def _skip_pair(self, base, arm, reason):
        """Record once that a method does not apply to this model, with the reason."""
        key = ("skip", base["dataset"], base["model"], arm.label)
        if key not in self.done:
            row = dict(base, method=arm.label, params=json.dumps(arm.method.params(), sort_keys=True, default=str),
                       sample_id="", metric="skipped", value=float("nan"), note=reason)
            self.rows.append(row)
            self._append({"kind": "sample", "key": list(key), "rows": [row]})
            self.done.add(key)
        print(textwrap.fill(f"skipping {arm.label} on {base['model']}: {reason}", 120, subsequent_indent="    "))

    def _skip_sample(self, dlabel, mlabel, sample_id, reason):
        key = ("skip", dlabel, mlabel, sample_id)
        if key in self.done:
            return
        info = {"dataset": dlabel, "model": mlabel, "sample_id": sample_id, "reason": reason}
        self.skipped_samples.append(info)
        self._append({"kind": "skip_sample", "key": list(key), "info": info})
        self.done.add(key)


def _cpu(sample):
    import dataclasses

    mv = (lambda t: None if t is None else t.detach().cpu())
    return dataclasses.replace(sample, x=mv(sample.x), mask=mv(sample.mask), frames=mv(sample.frames))


def resume_command(out: Path, overrides: List[str] = (), sweep: Optional[dict] = None) -> str:
    """The command that continues the run in ``out``, as typed in a POSIX shell: the run's own overrides
    (each quoted), ``resume=true`` and its folder; for a point of a sweep, the whole sweep's command (its
    points are continued in their own folders)."""
    import shlex

    def keep(o):
        k = o.lstrip("+~").split("=", 1)[0]
        return k not in ("resume", "hydra.run.dir", "hydra.sweep.dir")

    if sweep and sweep.get("command"):
        args = ["-m"] + [o for o in sweep["command"] if keep(o) and o not in ("-m", "--multirun")]
        args += ["resume=true", f"hydra.sweep.dir={sweep.get('dir', out.parent)}"]
    else:
        args = [o for o in overrides if keep(o)] + ["resume=true", f"hydra.run.dir={out}"]
    return "xaibench " + " ".join(shlex.quote(a) for a in args)


class _warnings_through_tqdm:
    """Warnings during a run print as one line through the progress bar's writer (no source line)."""

    def __enter__(self):
        self._old = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            tqdm.write(f"warning: {str(message).splitlines()[0] if str(message) else category.__name__}")

        warnings.showwarning = show
        return self

    def __exit__(self, *exc):
        warnings.showwarning = self._old
        return False
