"""The metric interface: a metric scores a batch of (sample, method) explanations.

A metric is a class registered in :data:`METRICS` with

* ``Config``: its typed config (:class:`xaibench.config.ComponentConfig` dataclass); the registry builds and
  checks it and passes it to ``__init__(cfg)``;
* ``outputs``: ``{name: Output}`` (:class:`xaibench.analysis.schema.Output`): each reported number's
  direction, kind (quality, descriptive, sanity) and aggregation (the mean, or a declared dataset-level
  reduction over hidden state);
* ``requires``: the sample fields it needs (``mask`` for spatial ground truth, ``frames`` for temporal);
  the runner gives it only the items whose sample has them, and skips a metric a dataset cannot serve;
* ``services``: what it needs from the harness beyond the model (``reexplain``, ``randomised``,
  :class:`Services`); the runner fills only those;
* ``version``: bumped when the metric's values change for the same inputs (recorded on every row);
* ``evaluate(batch) -> [dict per item]``: for each :class:`EvalItem` of the :class:`EvalBatch`, in order,
  ``{output name: value}`` plus the hidden state (keys starting with ``_``) that declared reductions read.
  The default loops :meth:`Metric.evaluate_one`; batched metrics override ``evaluate`` and compute every
  item in one pass on the adapter's device (each value equal to the one-item computation to 1e-6).

All randomness comes from ``item.rng`` (seeded by the harness from the run seed, the sample, the method arm
and the metric label) or ``item.shared_rng(tag)`` (the same draws for every method of a sample), never from
a global generator.  Model passes are counted by the adapter, not by the metric; wall-clock time, memory and
pass counts are measured by the harness (:mod:`xaibench.run.measure`) and are not metrics.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from ..analysis.schema import KINDS, Output  # noqa: F401  (re-exported for metric modules)
from ..errors import UserError
from ..explanation import Explanation
from ..registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    from ..datasets.base import Sample

#: every metric by name (each module of this package registers its entries on import)
METRICS = Registry("metric")

#: the services a metric may declare (:class:`Services`)
SERVICES = ("reexplain", "randomised")


@dataclass
class EvalItem:
    """One (sample, method arm) explanation to score.

    ``sample`` is the whole sample (``x`` (T, C, H, W) pixels in [0, 1], ``mask`` (T, H, W) bool,
    ``frames`` (T,) bool, ``label``, ``sample_id``) with its tensors on the adapter's device; ``explanation``
    likewise.  ``logits`` are the clean input's (classes,) float32 logits (no extra pass needed).
    """

    sample: "Sample"
    method: str
    explanation: Explanation
    target: int
    logits: torch.Tensor
    rng: np.random.Generator
    shared_seed: Tuple[int, ...] = (0,)

    def shared_rng(self, tag: str) -> np.random.Generator:
        """A generator seeded by the run seed, the sample and ``tag`` only: every method of a sample gets
        the same draws (e.g. faithfulness correlation's subsets), so methods are compared on paired
        perturbations and their model outputs are shared."""
        return np.random.default_rng([*self.shared_seed, zlib.crc32(tag.encode())])

    # shorthands
    @property
    def x(self) -> torch.Tensor:
        return self.sample.x

    @property
    def mask(self) -> Optional[torch.Tensor]:
        return self.sample.mask

    @property
    def frames(self) -> Optional[torch.Tensor]:
        return self.sample.frames

    @property
    def label(self) -> Optional[int]:
        return self.sample.label


@dataclass
class Services:
    """What the harness lends a metric that declared it (``Metric.services``).

    * ``reexplain(item, adapter) -> Explanation``: the item's method on the item's sample and target, with
      another adapter (the randomisation test);
    * ``randomised(k, seed) -> adapter``: a copy of the batch's adapter with its classifier head and top
      ``k`` blocks re-initialised (``k`` >= the number of blocks: every block), made once per run and cached.
    """

    reexplain: Optional[Callable[[EvalItem, Any], Explanation]] = None
    randomised: Optional[Callable[[int, int], Any]] = None

    def need(self, name: str, metric: str = "this metric") -> Callable:
        fn = getattr(self, name, None)
        if fn is None:
            raise UserError(f"{metric} needs the harness's {name!r} service, which this caller did not provide "
                            f"(run it through xaibench, or pass Services({name}=...))")
        return fn


@dataclass
class EvalBatch:
    """Every (sample, method) item of a batch of samples, for one metric.

    ``batch_size`` is the model batch size for perturbed inputs: a batched metric packs the perturbed inputs
    of all its items into model batches up to it.
    """

    adapter: Any  # ModelAdapter
    items: List[EvalItem]
    batch_size: int = 32
    services: Services = field(default_factory=Services)

    @property
    def device(self) -> torch.device:
        dev = getattr(self.adapter, "device", None)
        if dev is not None:
            return torch.device(dev)
        return self.items[0].explanation.volume.device if self.items else torch.device("cpu")


class Metric:
    """Base class of every metric (module docstring).

    Subclasses set ``Config``, ``outputs``, ``requires``, ``services``, ``version`` and implement
    :meth:`evaluate_one` or, batched, :meth:`evaluate`.
    """

    Config: type = None  # set by each metric
    outputs: Dict[str, Output] = {}
    requires: Tuple[str, ...] = ()
    services: Tuple[str, ...] = ()
    version: str = "1"

    def __init__(self, cfg=None):
        if cfg is None and self.Config is not None:
            cfg = self.Config()
        self.cfg = cfg

    def params(self) -> dict:
        """The parameters recorded in the results' ``metric_params`` column (the config's active ones)."""
        return self.cfg.params() if self.cfg is not None else {}

    def evaluate(self, batch: EvalBatch) -> List[Dict[str, float]]:
        """One dict per item of ``batch``, in order: output name -> value, plus hidden ``_`` state."""
        return [self.evaluate_one(item, batch) for item in batch.items]

    def evaluate_one(self, item: EvalItem, batch: EvalBatch) -> Dict[str, float]:
        """The values of one item (override this, or :meth:`evaluate` for a batched metric)."""
        raise NotImplementedError(f"{type(self).__name__} implements neither evaluate nor evaluate_one")

    # ------------------------------------------------------------------ helpers
    def output(self, name: str) -> Output:
        """The declaration of ``name``; a hidden or undeclared name is an error (every output is declared)."""
        try:
            return self.outputs[name]
        except KeyError:
            raise KeyError(f"{type(self).__name__} returned {name!r}, which its outputs do not declare") from None


def evaluate_items(metric: Metric, adapter, items: List[EvalItem], batch_size: int = 32,
                   services: Optional[Services] = None) -> List[Dict[str, float]]:
    """``metric.evaluate`` on ``items`` (a convenience for tests and scripts)."""
    return metric.evaluate(EvalBatch(adapter=adapter, items=list(items), batch_size=batch_size,
                                     services=services or Services()))
