"""The tiny method base class.

A method is a callable object: ``method(adapter, x, target) -> Explanation``
(:mod:`xaibench.explanation`).  ``x`` is one sample of pixels in [0, 1] with
shape (T, C, H, W) (T = 1 for images); ``target`` the class index explained.
Methods that can explain several samples in one pass implement
:meth:`Method.explain_batch` (``xs`` (B, T, C, H, W), ``targets`` (B,)); the
results equal those of one sample at a time (up to float rounding of the
batched model).  Methods computed from one traced forward pass declare what
they need (:meth:`Method.trace_request`) and compute from a trace
(:meth:`Method.explain_trace`), so that the harness can serve several
parameter values of a method (STAA's lambda, the layer count) from one trace.

Architecture knowledge comes from the adapter's declarations
(:mod:`xaibench.models.base`), never from the architecture's name.  A method
that cannot run on a model raises :class:`~xaibench.errors.NotApplicable`
with the reason (in :meth:`Method.check`, or inside ``explain`` when it only
finds out there); the harness records the pair as skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch

from ..config import ComponentConfig, build, param
from ..explanation import Explanation, from_token_map, upsample  # noqa: F401  (re-exported for methods)
from ..registry import Registry

#: every method by name (each module of this package registers its entries on import)
METHODS = Registry("method")


UPSAMPLE_MODES = ("bilinear", "nearest", "bicubic")


@dataclass
class MethodConfig(ComponentConfig):
    """A method without parameters."""


@dataclass
class UpsampleConfig(MethodConfig):
    """Methods that compute a token map and upsample it to the input resolution."""

    upsample: str = param("bilinear", choices=UPSAMPLE_MODES,
                          help="interpolation of the token map to the input resolution")


class Method:
    """Base class.  Subclasses set ``name`` and ``Config`` (their typed config, :mod:`xaibench.config`) and
    implement :meth:`explain`, :meth:`explain_batch` or :meth:`explain_trace`.

    The method is created from a checked config instance (``METHODS.create(name, **values)`` checks the
    values); its parameters are read as attributes (``self.layers`` is ``self.cfg.layers``).
    """

    name: str = ""
    Config = MethodConfig
    requires: tuple = ()  # what the sample must carry ('mask', 'frames'): the controls built from ground truth
    #: bump when the method's explanations change for the same input (recorded with every result row)
    version: str = "1"

    def __init__(self, cfg: Optional[ComponentConfig] = None):
        self.cfg = cfg if cfg is not None else build(type(self).Config, {}, where="method")

    def __getattr__(self, name):
        cfg = self.__dict__.get("cfg")
        if cfg is not None and name in {f for f in type(cfg).__dataclass_fields__}:
            return getattr(cfg, name)
        raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")

    def params(self) -> dict:
        """The method's parameters, as recorded in the results' ``params`` column (the active ones)."""
        return self.cfg.params()

    @property
    def batchable(self) -> bool:
        """True when :meth:`explain_batch` explains several samples in one model pass."""
        return type(self).explain_batch is not Method.explain_batch or type(self).trace_request is not \
            Method.trace_request

    def check(self, adapter) -> None:
        """Raise :class:`NotApplicable` (with the reason) if the method cannot run on ``adapter``."""

    def explain(self, adapter, x: torch.Tensor, target: int) -> Explanation:
        if self.batchable:
            return self.explain_batch(adapter, x[None], [int(target)])[0]
        raise NotImplementedError

    def explain_batch(self, adapter, xs: torch.Tensor, targets: Sequence[int]) -> List[Explanation]:
        req = self.trace_request(adapter)
        if req is not None:
            return self.explain_trace(adapter, adapter.trace(xs, target=targets, **trace_kwargs(req)))
        return [self.explain(adapter, x, int(t)) for x, t in zip(xs, targets)]

    # --- methods computed from one traced forward pass (attention records, gradients, activations) ---
    def trace_request(self, adapter) -> Optional[dict]:
        """What the method needs from :meth:`ModelAdapter.trace`, or ``None`` if it is not trace-based:
        ``attentions``, ``grads``, ``ln_stats`` (bools), ``capture`` (module names) and ``layers`` (the last
        k blocks; ``None`` = all).  Requests of several methods (or parameter values) merge with
        :func:`merge_requests`, so one trace can serve them all."""
        return None

    def explain_trace(self, adapter, trace) -> List[Explanation]:
        """The explanations of every sample of a trace made with (at least) :meth:`trace_request`."""
        raise NotImplementedError

    def explain_sample(self, adapter, sample, target: int) -> Explanation:
        """Explain a dataset sample (the controls read its ground truth; methods only its pixels)."""
        return self.explain(adapter, sample.x, target)

    def __call__(self, adapter, x: torch.Tensor, target: int) -> Explanation:
        self.check(adapter)
        return self.explain(adapter, x, target)


def merge_requests(reqs) -> dict:
    """One trace request that serves all of ``reqs`` (booleans or-ed, captures joined, the most layers)."""
    reqs = list(reqs)
    layers = [r.get("layers") for r in reqs]
    return {"attentions": any(r.get("attentions") for r in reqs), "grads": any(r.get("grads") for r in reqs),
            "ln_stats": any(r.get("ln_stats") for r in reqs),
            "capture": tuple(sorted({c for r in reqs for c in r.get("capture", ())})),
            "layers": None if any(v is None for v in layers) else max(layers)}


def trace_kwargs(req: dict) -> dict:
    """Keyword arguments of :meth:`ModelAdapter.trace` for a request."""
    k = req.get("layers")
    return {"attentions": bool(req.get("attentions")), "grads": bool(req.get("grads")),
            "ln_stats": bool(req.get("ln_stats")), "capture": tuple(req.get("capture", ())),
            "layers": None if k is None else range(-int(k), 0)}
