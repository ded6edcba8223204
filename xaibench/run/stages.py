"""The stages of a benchmark run, each a small unit with a typed input and output:

* :class:`Loader`: dataset positions -> :class:`SampleBatch` (samples, or the reason a sample could not be
  read), loaded in worker processes with pinned memory and prefetch when asked;
* :class:`Explainer`: a batch of samples and their targets -> :class:`Explained` per method arm (the
  explanations and what they cost);
* :class:`Evaluator`: the (sample, arm) items of a batch -> each metric's values per item, every metric called
  once per batch with all its items (:class:`xaibench.metrics.base.EvalBatch`);
* the recording (rows, journal, maps) is the runner's (:mod:`xaibench.run.runner`).

The plan (which components, checked before anything loads) is :mod:`xaibench.run.plan`.
"""

from __future__ import annotations

import dataclasses
import inspect
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..datasets.base import Sample, SkipSample
from ..errors import NotApplicable, UserError
from ..methods.base import merge_requests, trace_kwargs
from ..metrics.base import EvalBatch, EvalItem, Services
from .measure import measure


# ------------------------------------------------------------------ load
@dataclass
class SampleBatch:
    """Samples of consecutive dataset positions: ``samples`` (position, sample) and ``skipped`` (position,
    sample id, reason)."""

    samples: List[Tuple[int, Sample]]
    skipped: List[Tuple[int, str, str]]


class _Guarded(torch.utils.data.Dataset):
    """The samples at ``indices``; a sample the dataset cannot produce comes back as its skip reason."""

    def __init__(self, dataset, indices, ids):
        self.dataset, self.indices, self.ids = dataset, list(indices), list(ids)

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, k):
        i = self.indices[k]
        try:
            return i, self.dataset[i], None, self.ids[k]
        except SkipSample as e:
            return i, None, str(e), self.ids[k]


def _collate(items):
    return items


class Loader:
    """Iterate :class:`SampleBatch` es of ``batch_size`` samples; ``workers`` processes load ahead (two batches
    each), with pinned memory when the model is on a GPU."""

    def __init__(self, dataset, indices: Sequence[int], ids: Sequence[str], batch_size: int, workers: int = 0,
                 device: Optional[torch.device] = None):
        kw = {}
        if workers > 0:
            kw.update(prefetch_factor=2, persistent_workers=False)
        self.loader = torch.utils.data.DataLoader(
            _Guarded(dataset, indices, ids), batch_size=max(1, int(batch_size)), num_workers=int(workers),
            collate_fn=_collate, shuffle=False, pin_memory=bool(device is not None and device.type == "cuda"), **kw)

    def __iter__(self):
        for batch in self.loader:
            yield SampleBatch(samples=[(i, s) for i, s, r, _ in batch if s is not None],
                              skipped=[(i, sid, r) for i, s, r, sid in batch if s is None])


def to_device(sample: Sample, device) -> Sample:
    """The sample with its tensors on ``device`` (non-blocking from pinned memory)."""
    mv = (lambda t: None if t is None else t.to(device, non_blocking=True))
    return dataclasses.replace(sample, x=mv(sample.x), mask=mv(sample.mask), frames=mv(sample.frames))


# ------------------------------------------------------------------ explain
@dataclass
class Explained:
    """One arm's explanations of a batch of samples and their cost per sample."""

    explanations: list
    seconds: List[float]
    peak_mb: List[float]
    forward: List[float]
    backward: List[float]


@dataclass
class Arm:
    """A method arm: its configured component (label, parameters) and the method object."""

    comp: object
    method: object

    @property
    def label(self) -> str:
        return self.comp.label


def _sync(adapter):
    if adapter.device.type == "cuda":
        torch.cuda.synchronize(adapter.device)


class Explainer:
    """Explains batches: arms of one trace-based method share one traced pass (STAA's lambda, the layer count);
    SHAP / LIME explain the batch together when they can; the rest one sample at a time.

    ``max_trace`` bounds the samples traced together (attention records grow with the batch): larger batches
    are traced in chunks.
    """

    def __init__(self, adapter, arms: List[Arm], max_trace: int = 8, progress: Optional[Callable] = None):
        self.adapter, self.max_trace, self.progress = adapter, max(1, int(max_trace)), progress
        self.groups = self._groups(arms, adapter)

    @staticmethod
    def _groups(arms, adapter) -> List[List[Arm]]:
        groups: Dict[str, list] = {}
        out = []
        for a in arms:
            if a.method.batchable and a.method.trace_request(adapter) is not None:
                groups.setdefault(a.comp.name, []).append(a)
            else:
                out.append([a])
        return list(groups.values()) + out

    def drop(self, group):
        self.groups = [g for g in self.groups if g is not group]

    def explain(self, group: List[Arm], samples: List[Sample], targets: List[int]) -> Dict[str, Explained]:
        """``{arm label: Explained}`` for ``samples`` (raises NotApplicable when the method finds out only now)."""
        m0 = group[0].method
        if m0.batchable and m0.trace_request(self.adapter) is not None:
            parts = [self._traced(group, samples[i:i + self.max_trace], targets[i:i + self.max_trace])
                     for i in range(0, len(samples), self.max_trace)]
            return {a.label: Explained(*[sum((getattr(p[a.label], f.name) for p in parts), [])
                                         for f in dataclasses.fields(Explained)]) for a in group}
        return {group[0].label: self._one_by_one(group[0], samples, targets)}

    def _traced(self, group, samples, targets) -> Dict[str, Explained]:
        adapter, B = self.adapter, len(samples)
        req = merge_requests(a.method.trace_request(adapter) for a in group)
        xs = torch.stack([s.x for s in samples]).to(adapter.device)
        with adapter.counting() as n, measure() as t:
            trace = adapter.trace(xs, target=targets, **trace_kwargs(req))
            _sync(adapter)
        out = {}
        for a in group:
            with measure() as tm:
                expl = a.method.explain_trace(adapter, trace)
                _sync(adapter)
            out[a.label] = Explained(list(expl), [(t.seconds + tm.seconds) / B] * B, [max(t.peak_mb, tm.peak_mb)] * B,
                                     [n["forward"] / B] * B, [n["backward"] / B] * B)
        if self.progress:
            self.progress(("explain", group[0].label), B)
        return out

    def _one_by_one(self, arm: Arm, samples, targets) -> Explained:
        m, adapter = arm.method, self.adapter
        many = getattr(m, "explain_samples", None)
        if many is not None and len(samples) > 1:  # the method packs the samples' model passes together
            kw = {}
            if "progress" in inspect.signature(many).parameters and self.progress is not None:
                kw["progress"] = lambda k, label=arm.label: self.progress(("sub", label), k)
            with adapter.counting() as n, measure() as t:
                expls = list(many(adapter, samples, [int(x) for x in targets], **kw))
                _sync(adapter)
            B = len(samples)
            res = Explained(expls, [t.seconds / B] * B, [t.peak_mb] * B, [n["forward"] / B] * B,
                            [n["backward"] / B] * B)
        else:
            res = Explained([], [], [], [], [])
            for s, tgt in zip(samples, targets):
                with adapter.counting() as n, measure() as t:
                    res.explanations.append(m.explain_sample(adapter, s, int(tgt)))
                    _sync(adapter)
                res.seconds.append(t.seconds)
                res.peak_mb.append(t.peak_mb)
                res.forward.append(n["forward"])
                res.backward.append(n["backward"])
        if self.progress:
            self.progress(("explain", arm.label), len(samples))
        return res

    def warmup(self, sample: Sample, target: int):
        """One untimed explanation per trace-based group (first-call overheads kept out of the timings)."""
        with self.adapter.counting() as n:
            for g in self.groups:
                if g[0].method.batchable and g[0].method.trace_request(self.adapter) is not None:
                    try:
                        self._traced(g, [sample], [target])
                    except (NotApplicable, UserError):
                        pass
        for k in n:  # not part of the experiment
            self.adapter.passes[k] -= n[k]
        if self.adapter.cache is not None:
            self.adapter.cache.clear()


# ------------------------------------------------------------------ evaluate
@dataclass
class MetricRun:
    """One configured metric: its component (label, parameters) and the metric object."""

    comp: object
    metric: object


@dataclass
class Evaluated:
    """One metric's values for the items it scored (positions into the batch's item list) and its cost."""

    values: Dict[int, dict] = field(default_factory=dict)
    seconds: float = 0.0
    forward: int = 0


class Evaluator:
    """Scores the (sample, arm) items of a batch: each metric is called once with all the items it can score."""

    def __init__(self, adapter, metrics: List[MetricRun], batch_size: int, services: Services, seed: int = 0,
                 progress: Optional[Callable] = None, other_adapters: Optional[Callable] = None):
        self.adapter, self.metrics, self.batch_size = adapter, metrics, batch_size
        self.services, self.progress, self.seed = services, progress, seed
        #: the adapters a metric may run besides the batch's (the randomised copies): their passes count too
        self.other_adapters = other_adapters or (lambda: [])

    def _passes(self) -> int:
        return sum(a.passes["forward"] for a in [self.adapter, *self.other_adapters()])

    def evaluate(self, items: List[EvalItem]) -> Dict[str, Evaluated]:
        """``items``: every (sample, arm) of the batch (their ``rng`` is set here, per metric)."""
        out = {}
        for mr in self.metrics:
            m = mr.metric
            pos = [k for k, it in enumerate(items) if all(getattr(it.sample, r, None) is not None for r in m.requires)]
            ev = Evaluated()
            if pos:
                declared = set(getattr(m, "services", ()) or ())
                services = Services(**{k: getattr(self.services, k) for k in ("reexplain", "randomised")
                                       if k in declared})
                mine = [dataclasses.replace(items[k], rng=item_rng(self.seed, items[k].sample.sample_id,
                                                                   items[k].method, mr.comp.label)) for k in pos]
                batch = EvalBatch(adapter=self.adapter, items=mine, batch_size=self.batch_size, services=services)
                before = self._passes()
                t0 = time.perf_counter()
                values = m.evaluate(batch)
                _sync(self.adapter)
                ev.seconds = time.perf_counter() - t0
                ev.forward = self._passes() - before
                if len(values) != len(pos):
                    raise RuntimeError(f"metric {mr.comp.label} returned {len(values)} results for {len(pos)} items")
                ev.values = dict(zip(pos, values))
            out[mr.comp.label] = ev
            if self.progress:
                self.progress(("metric", mr.comp.label), len(pos))
        return out


def item_rng(seed: int, sample_id: str, method: str, metric: str) -> np.random.Generator:
    import zlib

    h = (lambda s: zlib.crc32(str(s).encode()))
    return np.random.default_rng([seed, h(sample_id), h(method), h(metric)])
