"""The experiment runner: data -> explanation -> evaluation -> tidy rows.

For every benchmark (a model and a dataset) the runner loads the samples
(``workers`` processes; ``shard=I/N`` keeps every N-th), predicts them in one
batched pass, explains ``explain_batch_size`` samples at a time (methods
computed from one traced pass explain a whole batch at once, and the
parameter values of one method -- STAA's lambda, the layer count -- share
that trace), evaluates every metric on every explanation, and appends the
rows of each (sample, method) to ``rows.jsonl`` in the run folder, flushed at
once.  An interrupted run (Ctrl-C, SIGTERM) loses at most the batch in
progress, writes its tables and is continued with ``resume=true`` and the
same ``hydra.run.dir``; a resume refuses a configuration that differs in
anything that can change results.  See README.md, "Reliability".
"""

from __future__ import annotations

import json
import textwrap
import time
import zlib
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from ..datasets.base import SkipSample
from ..errors import NotApplicable, UserError
from ..methods.base import merge_requests, trace_kwargs
from ..metrics.base import EvalContext
from ..metrics.cost import Cost, measure
from . import plan as C
from ..io import atomic_write_text, repair_jsonl, safe_name
from .options import NEUTRAL_OPTIONS, deferred_signals, resolve_device, stop_on_sigterm, validate_options
from .provenance import provenance
from ..analysis.results import AGGREGATE, aggregate_rows

def _h(s) -> int:
    return zlib.crc32(str(s).encode())


# ------------------------------------------------------------- data loading
class _Guarded(torch.utils.data.Dataset):
    """The samples at ``indices``; a sample the dataset cannot produce comes back as its skip reason."""

    def __init__(self, dataset, indices):
        self.dataset, self.indices = dataset, list(indices)

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, k):
        i = self.indices[k]
        try:
            return i, self.dataset[i], None
        except SkipSample as e:
            return i, None, str(e)


def _collate(items):
    return items


def _fingerprint(cfg: DictConfig, plan: C.Plan) -> dict:
    """What a resumed run must share with the original: every option and component parameter that can
    change a result."""
    top = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items()
           if k not in NEUTRAL_OPTIONS and k not in C.GROUPS and k != "experiment"}
    return {"options": top, "experiment": str(cfg.experiment.get("name")),
            "benchmarks": [[m.label, m.params, d.label, d.params] for m, d in plan.benchmarks],
            "methods": [[c.label, c.name, c.params] for c in plan.methods],
            "metrics": [[c.label, c.name, c.params] for c in plan.metrics]}


def _diff(a, b, path="") -> List[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += _diff(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _diff(x, y, f"{path}[{i}]")]
    return [] if json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str) else \
        [f"{path}: {json.dumps(b, default=str)} -> {json.dumps(a, default=str)}"]


# ------------------------------------------------------------------- runner
class Runner:
    def __init__(self, cfg: DictConfig, out_dir: Path, choices: Optional[dict] = None):
        self.cfg = cfg
        self.out = Path(out_dir)
        self.exp = cfg.experiment
        self.opts = validate_options(cfg)
        self.seed = self.opts.seed
        self.choices = dict(choices or {})
        self.rows_path = self.out / "rows.jsonl"
        self.rows: List[dict] = []
        self.hidden: List[list] = []
        self.skipped_samples: List[dict] = []
        self.done: set = set()
        self.stats = {"forward": 0, "backward": 0, "cache_hits": 0, "forward_time_s": {}, "models": {}}

    # ------------------------------------------------------------ persistence
    def _load_previous(self, fingerprint: dict):
        fp_path = self.out / "run_config.json"
        if not self.rows_path.exists():
            atomic_write_text(fp_path, json.dumps(fingerprint, indent=1, default=str))
            return
        if not self.opts.resume:
            raise UserError(f"{self.out} already holds results (rows.jsonl); pass resume=true to continue that run "
                            f"or choose another hydra.run.dir")
        if fp_path.exists():
            old = json.loads(fp_path.read_text())
            diffs = _diff(json.loads(json.dumps(fingerprint, default=str)), old)
            if diffs:
                raise UserError("resume=true, but the configuration differs from the run in "
                                f"{self.out} in what can change results:\n  " + "\n  ".join(diffs[:20]) +
                                "\nRerun with the original values, or start a new run folder (hydra.run.dir=...)")
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
                elif rec.get("kind") == "skip_sample":
                    self.skipped_samples.append(rec["info"])

    def _append(self, rec: dict):
        with open(self.rows_path, "a") as f:
            f.write(json.dumps(rec, default=float) + "\n")
            f.flush()

    # ------------------------------------------------------------------ main
    def run(self):
        with C.hydra_context():
            plan = C.plan(self.cfg, self.choices)
        self._seed_components(plan)
        self.plan = plan
        self.device = resolve_device(self.opts.device)
        self.out.mkdir(parents=True, exist_ok=True)
        self._load_previous(_fingerprint(self.cfg, plan))
        t_start = time.time()
        status = "complete"
        prov = provenance(OmegaConf.to_container(self.cfg, resolve=True), self.seed)
        prov.update(device=str(self.device), precision=self.opts.precision, choices=self.choices,
                    shard=None if self.opts.shard is None else "/".join(map(str, self.opts.shard)), components=[])
        try:
            with stop_on_sigterm():
                for model_c, adapter, data_c, dataset in self._benchmarks():
                    prov["components"].append(self._run_benchmark(model_c, adapter, data_c, dataset))
        except KeyboardInterrupt:
            status = "interrupted"
            print(f"\ninterrupted: {len(self.done)} finished results are saved in {self.rows_path}; continue with "
                  f"resume=true hydra.run.dir={self.out}")
        with deferred_signals() as got:
            summary = self._finish(prov, status, t_start)
        if got and status == "complete":
            status = "interrupted"
        return summary, status

    def _finish(self, prov, status, t_start):
        from ..analysis.results import write_tables

        rows = self.rows + aggregate_rows(self.hidden, str(self.exp.name), self.seed)
        rows += self._skip_rows()
        summary = write_tables(rows, self.out, seed=self.seed, alpha=self.opts.alpha)
        prov.update(status=status, wall_time_s=round(time.time() - t_start, 2),
                    skipped_samples=self.skipped_samples, n_skipped_samples=len(self.skipped_samples),
                    n_rows=len(rows), passes={k: self.stats[k] for k in ("forward", "backward", "cache_hits")},
                    forward_time_s=self.stats["forward_time_s"])
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
        """One ``n_skipped_samples`` row per benchmark with skipped samples (lower is better)."""
        counts: Dict[tuple, int] = {}
        for s in self.skipped_samples:
            counts[(s["dataset"], s["model"])] = counts.get((s["dataset"], s["model"]), 0) + 1
        return [dict(experiment=str(self.exp.name), dataset=d, model=m, method="(all)", params="{}",
                     sample_id=AGGREGATE, metric="n_skipped_samples", value=float(n), higher_is_better=False,
                     metric_params="{}", seed=self.seed, note=f"n={n}") for (d, m), n in counts.items()]

    def _print(self, summary, status, prov):
        try:
            from ..analysis.table import format_table

            import pandas as pd

            vpath = self.out / "validity.csv"
            validity = pd.read_csv(vpath) if vpath.exists() else None
            text = format_table(summary, validity=validity)
        except ImportError:
            from ..analysis.results import format_summary

            text, validity = format_summary(summary), None
        print(f"\n== {self.exp.name}: summary ({status}, {prov['wall_time_s']} s) ==")
        print(text)
        if validity is not None and len(validity):
            print("\nmetric validity (controls: gt > random, gt > inverted gt, constant not > random; validity.csv):")
            from ..analysis.schema import COST_METRICS, DESCRIPTIVE_METRICS

            for (d, m), g in validity.groupby(["dataset", "model"], sort=False):
                g = g[~g.metric.isin(COST_METRICS + DESCRIPTIVE_METRICS)]  # not scores of the explanation
                parts = [f"{v} {', '.join(g[g.verdict == v].metric)}" for v in ("valid", "invalid", "untestable")
                         if (g.verdict == v).any()]
                print(textwrap.fill(f"{m} on {d}: " + "; ".join(parts), 120, subsequent_indent="    "))
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
        import pandas as pd

        from ..analysis.reference import compare, reference_path

        table = compare(summary, reference_path(self.exp.reference))
        from ..io import atomic_to_csv

        atomic_to_csv(table, self.out / "reference_comparison.csv", index=False)
        with pd.option_context("display.width", 120, "display.max_columns", 20, "display.max_colwidth", 30):
            print("\n== against the published numbers ==")
            print(table.drop(columns=[c for c in ("source", "note", "params", "verified") if c in table]).to_string(
                index=False))

    def _seed_components(self, plan: C.Plan):
        """``seed`` seeds every seeded method and metric (SHAP, LIME, controls ...) unless set explicitly."""
        for c in plan.methods + plan.metrics:
            acc = c.accepted()
            if acc is not None and C.SEED_KEY in acc and c.params.get(C.SEED_KEY) is None:
                c.params[C.SEED_KEY] = self.seed

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
                raise UserError(problems[0] if len(problems) == 1 else
                                f"no dataset of the experiment fits model {model_c.label!r}: " + "; ".join(problems)
                                + f". Choose one with dataset=NAME (valid: {', '.join(C.options('dataset'))})")
            for p in problems:
                print(textwrap.fill(f"(skipping a dataset that does not fit {model_c.label}: {p})", 120,
                                    subsequent_indent="    "))
            for data_c, dataset in runs:
                yield model_c, adapter, data_c, dataset

    def _run_benchmark(self, model_c: C.Component, adapter, data_c: C.Component, dataset) -> dict:
        mlabel, dlabel = model_c.label, data_c.label
        methods = []
        for c in self.plan.methods:
            methods.append((c, c.create()))
        metrics = [(c, c.create()) for c in self.plan.metrics]
        base = dict(experiment=str(self.exp.name), dataset=dlabel, model=mlabel, seed=self.seed)

        runnable = []
        for c, m in methods:
            reason = None
            try:
                m.check(adapter)
            except NotApplicable as e:
                reason = str(e)
            sample_needs = [r for r in getattr(m, "requires", ()) if not getattr(dataset, "has_" + r, False)]
            if sample_needs:
                reason = f"needs ground truth ({', '.join(sample_needs)}) that {dlabel} does not have"
            if reason:
                self._skip_pair(base, c, m, reason)
            else:
                runnable.append((c, m))
        self.stats["forward_time_s"][mlabel] = self._forward_time(adapter, dataset)
        indices = list(range(len(dataset)))
        if self.opts.shard is not None:
            i, n = self.opts.shard
            indices = indices[i::n]
        pending = [i for i in indices if not all((dlabel, mlabel, c.label, "i", i) in self.done for c, _ in runnable)
                   and ("skip", dlabel, mlabel, i) not in self.done]
        loader = torch.utils.data.DataLoader(_Guarded(dataset, pending), batch_size=self.opts.explain_batch_size,
                                             num_workers=self.opts.workers, collate_fn=_collate, shuffle=False)
        groups = self._groups(runnable, adapter)
        warmed = not self.opts.warmup
        arms = max(1, len(runnable))
        done_units = sum(1 for i in indices for c, _ in runnable if (dlabel, mlabel, c.label, "i", i) in self.done)
        # one unit per (sample, method): SHAP / LIME move the bar sample by sample inside a batch
        self._bar = bar = tqdm(total=len(indices) * arms, initial=done_units, desc=f"{mlabel} on {dlabel}",
                               unit="expl", smoothing=0.1)
        before = dict(adapter.passes)
        try:
            for batch in loader:
                samples = []
                for i, sample, reason in batch:
                    if sample is None:
                        self._skip_sample(dlabel, mlabel, i, reason)
                        bar.update(arms)
                    else:
                        samples.append((i, sample))
                if samples:
                    if not warmed:
                        self._warmup(adapter, groups, samples[0][1])
                        warmed = True
                    self._run_batch(base, adapter, groups, metrics, samples)
                bar.set_postfix(skipped=sum(1 for s in self.skipped_samples
                                            if s["dataset"] == dlabel and s["model"] == mlabel))
        finally:
            bar.close()
            self.stats["forward"] += adapter.passes["forward"] - before["forward"]
            self.stats["backward"] += adapter.passes["backward"] - before["backward"]
            if adapter.cache is not None:
                self.stats["cache_hits"] += adapter.cache.hits
                adapter.cache.hits = 0
        return {"model": mlabel, "model_params": model_c.params, "adapter": adapter.describe(), "dataset": dlabel,
                "dataset_params": data_c.params, "dataset_info": dataset.describe(),
                "methods": {c.label: m.params() for c, m in methods},
                "metrics": {c.label: m.params() for c, m in metrics}}

    def _forward_time(self, adapter, dataset) -> float:
        """Seconds of one single-sample forward pass (median of 3, after a warm-up), for cost ratios."""
        x = torch.zeros(1, *adapter.input_shape)
        with adapter.counting():
            adapter.predict(x)
            ts = []
            for _ in range(3):
                t0 = time.perf_counter()
                adapter.predict(x)
                if adapter.device.type == "cuda":
                    torch.cuda.synchronize(adapter.device)
                ts.append(time.perf_counter() - t0)
        adapter.passes["forward"] -= 4  # not part of the experiment
        return float(np.median(ts))

    def _skip_pair(self, base, c, method, reason):
        """Record once that ``method`` does not apply to this model, with the reason."""
        key = ("skip", base["dataset"], base["model"], c.label)
        if key not in self.done:
            row = dict(base, method=c.label, params=json.dumps(method.params(), sort_keys=True, default=str),
                       sample_id="", metric="skipped", value=float("nan"), note=reason)
            self.rows.append(row)
            self._append({"kind": "sample", "key": list(key), "rows": [row]})
            self.done.add(key)
        print(textwrap.fill(f"skipping {c.label} on {base['model']}: {reason}", 120, subsequent_indent="    "))

    def _skip_sample(self, dlabel, mlabel, i, reason):
        key = ("skip", dlabel, mlabel, i)
        if key in self.done:
            return
        info = {"dataset": dlabel, "model": mlabel, "index": i, "reason": reason}
        self.skipped_samples.append(info)
        self._append({"kind": "skip_sample", "key": list(key), "info": info})
        self.done.add(key)

    # ------------------------------------------------------------- methods
    @staticmethod
    def _groups(runnable, adapter):
        """Arms sharing one trace: trace-based arms of the same method; every other arm on its own."""
        groups: Dict[str, list] = {}
        out = []
        for c, m in runnable:
            if m.batchable and m.trace_request(adapter) is not None:
                groups.setdefault(c.name, []).append((c, m))
            else:
                out.append([(c, m)])
        return list(groups.values()) + out

    def _warmup(self, adapter, groups, sample):
        """One untimed explanation per trace-based group (first-call overheads kept out of the timings)."""
        with adapter.counting() as n:
            for g in groups:
                c, m = g[0]
                if m.batchable:
                    try:
                        self._explain_group(adapter, g, [sample], [0])
                    except (NotApplicable, UserError):
                        pass
        for k in n:  # not part of the experiment
            adapter.passes[k] -= n[k]
        if adapter.cache is not None:
            adapter.cache.clear()

    def _explain_group(self, adapter, group, samples, targets):
        """{label: ([explanations], seconds per sample, forward, backward per sample)} for one group."""
        B = len(samples)
        c0, m0 = group[0]
        out = {}
        if m0.batchable and m0.trace_request(adapter) is not None:
            req = merge_requests(m.trace_request(adapter) for _, m in group)
            xs = torch.stack([s.x for s in samples]).to(adapter.device)
            with adapter.counting() as n, measure() as t:
                trace = adapter.trace(xs, target=targets, **trace_kwargs(req))
                self._sync(adapter)
            for c, m in group:
                with measure() as tm:
                    expl = m.explain_trace(adapter, trace)
                    self._sync(adapter)
                out[c.label] = (expl, (t.seconds + tm.seconds) / B, max(t.peak_mb, tm.peak_mb),
                                n["forward"] / B, n["backward"] / B)
            return out
        c, m = group[0]
        expls, secs, mem, fw, bw = [], [], [], [], []
        for s, tgt in zip(samples, targets):
            with adapter.counting() as n, measure() as t:
                expls.append(m.explain_sample(adapter, s, int(tgt)))
                self._sync(adapter)
            secs.append(t.seconds)
            mem.append(t.peak_mb)
            fw.append(n["forward"])
            bw.append(n["backward"])
        out[c.label] = (expls, secs, mem, fw, bw)
        return out

    def _randomised(self, adapter, k: int, seed: int):
        """Copies with the head and top k blocks re-initialised, made once per run (mprt metric)."""
        cache = self.__dict__.setdefault("_random_copies", {})
        key = (id(adapter), min(k, adapter.num_layers), seed)
        if key not in cache:
            cache[key] = adapter.randomised(k, seed)
        return cache[key]

    @staticmethod
    def _sync(adapter):
        if adapter.device.type == "cuda":
            torch.cuda.synchronize(adapter.device)

    def _run_batch(self, base, adapter, groups, metrics, samples):
        dlabel, mlabel = base["dataset"], base["model"]
        xs = torch.stack([s.x for _, s in samples])
        logits = adapter.predict(xs, batch_size=self.opts.batch_size)
        preds = logits.argmax(-1).tolist()
        targets = []
        for (_, s), p in zip(samples, preds):
            targets.append(int(s.label) if self.opts.target == "label" and s.label is not None else int(p))
        for group in groups:
            todo = [k for k, (i, s) in enumerate(samples)
                    if not all((dlabel, mlabel, c.label, "i", i) in self.done for c, _ in group)]
            if not todo:
                continue
            sub = [samples[k][1] for k in todo]
            try:
                results = self._explain_group(adapter, group, sub, [targets[k] for k in todo])
            except NotApplicable as e:  # found out only once the method looked at the model
                for c, m in group:
                    self._skip_pair(base, c, m, str(e))
                groups.remove(group)
                continue
            for c, m in group:
                expls, secs, mem, fw, bw = results[c.label]
                for j, k in enumerate(todo):
                    i, s = samples[k]
                    key = (dlabel, mlabel, c.label, "i", i)
                    if key in self.done:
                        continue
                    pick = (lambda v: v[j] if isinstance(v, list) else v)
                    explain = {"explain_s": pick(secs), "explain_peak_mb": pick(mem), "forward": pick(fw),
                               "backward": pick(bw)}
                    rows, hidden = self._evaluate(base, c, m, metrics, adapter, s, expls[j], logits[k], targets[k],
                                                  preds[k], explain)
                    self.rows.extend(rows)
                    self.hidden.extend(hidden)
                    self._append({"kind": "sample", "key": list(key), "index": i, "rows": rows, "hidden": hidden})
                    self.done.add(key)
                    self._bar.update(1)
                    self._save(base, c, s, i, expls[j], targets[k])
        if adapter.cache is not None:
            adapter.cache.clear()

    def _save(self, base, c, sample, index, expl, target):
        if index < self.opts.save_figures:
            from ..analysis.figures import save_figure

            name = "__".join(safe_name(v, 60) for v in (base["dataset"], base["model"], c.label, sample.sample_id))
            save_figure(self.out / "figures" / f"{name}.png", sample, expl.cpu(),
                        title=f"{base['model']} / {c.label} / {sample.sample_id} (target {target})")
        if index < self.opts.gallery:
            from ..analysis.gallery import Gallery

            if not hasattr(self, "_gallery"):
                self._gallery = Gallery(self.out / "gallery.h5", self.opts.gallery)
            self._gallery.add(base["dataset"], base["model"], sample, c.label, expl.cpu())

    # ------------------------------------------------------------- metrics
    def _evaluate(self, base, comp, method, metrics, adapter, sample, expl, logits, target, pred, explain):
        """Every metric on one explanation.  The cost metric runs last and sees the other metrics'
        summed evaluation time and forward passes."""
        rows, hidden = [], []
        timing = {"explain_s": explain["explain_s"], "explain_peak_mb": explain["explain_peak_mb"], "eval_s": 0.0}
        counters = {"explain_forward": explain["forward"], "explain_backward": explain["backward"],
                    "eval_forward": 0}
        metrics = sorted(metrics, key=lambda cm: isinstance(cm[1], Cost))
        params = json.dumps(method.params(), sort_keys=True, default=str)
        common = dict(base, method=comp.label, params=params, sample_id=sample.sample_id, label=sample.label,
                      target=target, correct=None if sample.label is None else bool(pred == sample.label))
        dev = adapter.device
        for mc, metric in metrics:
            if any(getattr(sample, r, None) is None for r in metric.requires):
                continue
            rng = np.random.default_rng([self.seed, _h(sample.sample_id), _h(comp.label), _h(mc.label)])
            ctx = EvalContext(adapter=adapter, x=sample.x.to(dev), target=target, explanation=expl, logits=logits,
                              rng=rng, batch_size=self.opts.batch_size, label=sample.label,
                              mask=None if sample.mask is None else sample.mask.to(dev),
                              frames=None if sample.frames is None else sample.frames.to(dev), timing=timing,
                              counters=counters, shared_seed=(self.seed, _h(sample.sample_id)),
                              reexplain=lambda ad, s=sample, t=target: method.explain_sample(ad, s, t),
                              randomised=lambda k, seed, ad=adapter: self._randomised(ad, k, seed))
            with adapter.counting() as n:
                t0 = time.perf_counter()
                values = metric.compute(ctx)
                self._sync(adapter)
                dt = time.perf_counter() - t0
            if not isinstance(metric, Cost):
                timing["eval_s"] += dt
                counters["eval_forward"] += n["forward"]
            mp = json.dumps(metric.params(), sort_keys=True, default=str)
            for name, value in values.items():
                if name.startswith("_"):
                    continue
                rows.append(dict(common, metric=name, value=float(value),
                                 higher_is_better=bool(metric.outputs.get(name, True)), metric_params=mp))
            if hasattr(metric, "reduce"):
                hv = {k: v for k, v in values.items() if k.startswith("_")}
                hidden.append([[base["dataset"], base["model"], comp.label, mc.label, params, mp, mc.name], hv])
        return rows, hidden
