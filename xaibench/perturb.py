"""Perturbation primitives shared by the perturbation methods (SHAP, LIME) and the perturbation metrics.

One vocabulary everywhere:

Features (``features``)
-----------------------
A *feature* is a group of input positions kept or removed together (all colour
channels at once).  :meth:`FeatureConfig.features_of` labels every (t, y, x)
position of a (T, H, W) volume with its feature (:class:`Features`):

* ``grid``: ``cell x cell`` pixel squares, over ``frames_per_group`` consecutive
  frames (space-time *tubelets* for video; plain squares for images;
  ``cell = 1`` gives single pixels).  The default ``cell`` is the model's
  token size (:func:`token_cell`);
* ``slic``: SLIC superpixels (scikit-image) of the image, or supervoxels of the
  whole (T, H, W) clip (SLIC on the 3-D volume), with ``n_segments`` and
  ``compactness``.

Baselines (``baseline``)
------------------------
``zero`` (black), ``mean`` (per-channel mean of the sample), ``blur``
(Gaussian blur, sigma ``blur_sigma`` pixels, per frame), ``uniform`` (U[0, 1]
noise from a seeded generator).

The seven parameters above are declared once, in :class:`FeatureConfig`; the
typed configs of SHAP, LIME and every perturbation metric extend it.

Masking
-------
:func:`compose` builds ``x * m + b * (1 - m)`` for binary keep-masks ``m`` over
the features (a broadcast ``torch.where``; grid features never expand the mask
to pixels).  :class:`Perturber` evaluates the keep-masks of *several* inputs
at once: it packs the rows of every request (one input each: a sample, a
method, a metric step) into model batches of ``batch_size``, composes each
batch into one reused buffer on the adapter's device (memory bounded by the
batch, never by the number of masks; masks may be generated lazily, chunk by
chunk) and looks every row up in the adapter's in-run output cache first
(:class:`xaibench.models.base.OutputCache`, keyed by the input, its features,
its baseline and the mask), so a mask already evaluated for this input (by
another method, metric or parameter value) is not evaluated again; the cache
keeps at most :data:`CACHE_SHARE` of the available memory (:func:`cache_rows`).

Ranking and ties
----------------
:class:`Ranking` orders features by decreasing score and knows the tie groups
(equal scores) and the seeded tie orders of the tie rule (docs/ties.md): a
cut that falls inside a tie group removes a uniformly random subset of it.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .config import ComponentConfig, build, param
from .errors import UserError

FEATURES = ("grid", "slic")
BASELINES = ("zero", "mean", "blur", "uniform")


def token_cell(adapter, stage: int = 0) -> int:
    """The side in pixels of one token of the model's ``stage`` (0: first; -1: last)."""
    return adapter.image_size // adapter.layout.stages[stage][0]


# ---------------------------------------------------------------------------------------------- memory bounds
def available_memory(device=None) -> int:
    """Bytes that can still be allocated on ``device``: free GPU memory, or the host's available memory."""
    device = torch.device(device or "cpu")
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - exotic platforms
        return 8 << 30


#: the share of available memory that one buffer of composed inputs may take (the rest is the model's)
INPUT_SHARE = 0.25
#: the output cache stops growing beyond this many rows, or when its rows would take more than
#: :data:`CACHE_SHARE` of the available memory (:func:`cache_rows`); rows beyond it are evaluated but not kept
CACHE_MAX_ROWS = 1 << 20
CACHE_SHARE = 0.25
#: host bytes of one cached row besides its logits (key, digest, tensor view; measured: about 0.8 KB)
CACHE_ROW_BYTES = 1024


def cache_rows(num_classes: int, device=None, held: int = 0) -> int:
    """How many rows the output cache may hold: at most :data:`CACHE_MAX_ROWS`, and all of them -- the ``held``
    rows already in it included -- within :data:`CACHE_SHARE` of the available memory (host memory for the keys
    and tensor objects, and the device's free memory for the logits on a GPU).  A row costs
    ``CACHE_ROW_BYTES + 4 * classes`` bytes, so 2^20 rows of a 1000-class model (about 5 GiB) are kept only where
    four times that is available."""
    logits = 4 * max(1, int(num_classes))
    row = CACHE_ROW_BYTES + logits
    n = int(CACHE_SHARE * (available_memory("cpu") + held * row)) // row
    device = torch.device(device or "cpu")
    if device.type == "cuda":
        n = min(n, int(CACHE_SHARE * (available_memory(device) + held * logits)) // logits)
    return max(0, min(CACHE_MAX_ROWS, n))


def gib(n_bytes: float) -> str:
    return f"{n_bytes / 2 ** 30:.1f} GiB"


# ---------------------------------------------------------------------------------------------- features
def _grid(c) -> bool:
    return c.features == "grid"


def _slic(c) -> bool:
    return c.features == "slic"


@dataclass
class FeatureConfig(ComponentConfig):
    """The feature and baseline parameters of every perturbing component (module docstring)."""

    features: str = param("grid", choices=FEATURES,
                          help="grid: cell x cell squares over frames_per_group frames; slic: superpixels "
                               "(images) or supervoxels (video)")
    cell: Optional[int] = param(None, range=(1, 4096), active=_grid,
                                help="side of a grid feature in pixels (null: the model's token size; 1: pixels)")
    frames_per_group: int = param(1, range=(1, 4096), active=_grid,
                                  help="consecutive frames per grid feature (space-time tubelets)")
    n_segments: int = param(64, range=(2, 100000), active=_slic, help="SLIC: about how many segments")
    compactness: float = param(10.0, range=(1e-3, 1e4), active=_slic, help="SLIC: colour vs space weight")
    baseline: str = param("zero", choices=BASELINES,
                          help="value of removed features: zero (black), mean (per-channel mean of the "
                               "input), blur (Gaussian blur), uniform (seeded U[0, 1] noise)")
    blur_sigma: float = param(4.0, range=(1e-3, 1e3), active=lambda c: c.baseline == "blur",
                              help="Gaussian blur sigma in pixels")

    # ------------------------------------------------------------------ use
    @property
    def random_baseline(self) -> bool:
        """A baseline drawn at random (``uniform``): its outputs are never cached or shared."""
        return self.baseline == "uniform"

    def features_of(self, x: torch.Tensor, default_cell: int, where: str = "") -> "Features":
        """The :class:`Features` of the input ``x`` (T, C, H, W); ``default_cell`` when ``cell`` is null."""
        T, _, H, W = x.shape
        where = where or self.group or "metric"
        if self.features == "grid":
            return grid_features((T, H, W), self.cell or default_cell, self.frames_per_group, where)
        return slic_features(x, self.n_segments, self.compactness)

    def ids(self, x: torch.Tensor, default_cell: int) -> torch.Tensor:
        """(T, H, W) long feature ids 0..F-1 of the input ``x`` (T, C, H, W)."""
        return self.features_of(x, default_cell).ids

    def baseline_of(self, x: torch.Tensor, rng: Optional[np.random.Generator] = None) -> torch.Tensor:
        return make_baseline(x, self.baseline, rng, self.blur_sigma)

    def baseline_key(self) -> str:
        return f"{self.baseline}:{self.blur_sigma}" if self.baseline == "blur" else self.baseline


def FeatureSpec(prefix: str = "method", **values) -> FeatureConfig:
    """A checked :class:`FeatureConfig` from user-facing values (``prefix`` names the config group in
    messages)."""
    return build(FeatureConfig, values, where=prefix)


@dataclass
class Features:
    """A partition of the (T, H, W) positions of an input into ``n`` features.

    ``ids`` (T, H, W) long labels 0..n-1; ``key`` identifies the partition (output-cache keys);
    ``grid`` = (cell, frames_per_group) when the features are a regular grid (the fast compose path).
    """

    ids: torch.Tensor
    n: int
    key: str
    grid: Optional[Tuple[int, int]] = None

    def to(self, device) -> "Features":
        if self.ids.device == torch.device(device):
            return self
        return Features(self.ids.to(device), self.n, self.key, self.grid)

    @classmethod
    def of(cls, ids: torch.Tensor, key: str = "") -> "Features":
        """Features from a bare id volume (an arbitrary partition)."""
        ids = torch.as_tensor(ids).long()
        return cls(ids, n_features(ids), key or "ids:" + _digest(ids))


def grid_features(shape, cell: int, frames_per_group: int = 1, where: str = "metric") -> Features:
    """Regular grid features (``grid``) of a (T, H, W) volume."""
    T, H, W = shape
    ids = feature_ids(shape, cell, frames_per_group, where)
    return Features(ids, n_features(ids), f"grid:{T}x{H}x{W}:{cell}:{frames_per_group}", (int(cell),
                                                                                            int(frames_per_group)))


def slic_features(x: torch.Tensor, n_segments: int, compactness: float) -> Features:
    ids = slic_ids(x, n_segments, compactness)
    return Features(ids, n_features(ids), "slic:" + _digest(ids))


def feature_ids(shape, cell: int, frames_per_group: int = 1, prefix: str = "metric") -> torch.Tensor:
    """(T, H, W) integer label of the ``grid`` feature of every position (labels 0 .. F-1, frame-group-major).

    Tubelets of the last group are shorter when ``frames_per_group`` does not divide T.
    """
    T, H, W = shape
    if H % cell or W % cell:
        raise UserError(f"{prefix}.cell={cell} must divide the input size {H}x{W}")
    t = torch.arange(T) // frames_per_group
    y = torch.arange(H) // cell
    x = torch.arange(W) // cell
    gh, gw = H // cell, W // cell
    return (t[:, None, None] * gh + y[None, :, None]) * gw + x[None, None, :]


def slic_ids(x: torch.Tensor, n_segments: int, compactness: float) -> torch.Tensor:
    """SLIC superpixels (T = 1) or supervoxels (T > 1) of ``x`` (T, C, H, W), as dense ids 0..F-1."""
    from skimage.segmentation import slic

    T, _, H, W = x.shape
    img = x.detach().cpu().permute(0, 2, 3, 1).numpy().astype(np.float64)
    seg = slic(img if T > 1 else img[0], n_segments=n_segments, compactness=compactness, channel_axis=-1,
               start_label=0)
    _, ids = torch.unique(torch.from_numpy(np.asarray(seg)).long(), return_inverse=True)
    return ids.reshape(T, H, W)


def n_features(ids: torch.Tensor) -> int:
    return int(ids.max()) + 1


def feature_totals(volume: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Summed attribution of each feature over its positions: (F,) float64."""
    v = volume.reshape(-1).double()
    return torch.zeros(n_features(ids), dtype=torch.float64, device=v.device).index_add_(
        0, ids.reshape(-1).to(v.device), v)


def feature_means(volume: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Mean attribution of each feature over its positions: (F,) float64."""
    ones = torch.ones_like(volume, dtype=torch.float64)
    return feature_totals(volume, ids) / feature_totals(ones, ids)


# ---------------------------------------------------------------------------------------------- baselines
def make_baseline(x: torch.Tensor, kind: str = "zero", rng: np.random.Generator | None = None,
                  blur_sigma: float = 4.0) -> torch.Tensor:
    """Baseline of the same shape as ``x`` (T, C, H, W)."""
    if kind == "zero":
        return torch.zeros_like(x)
    if kind == "mean":
        return x.mean(dim=(0, 2, 3), keepdim=True).expand_as(x).clone()
    if kind == "uniform":
        if rng is None:
            raise ValueError("uniform baseline needs a generator")
        return torch.from_numpy(rng.random(tuple(x.shape), dtype=np.float32)).to(x)
    if kind == "blur":
        r = max(1, int(3 * blur_sigma))
        k = torch.exp(-(torch.arange(-r, r + 1, dtype=torch.float32) ** 2) / (2 * blur_sigma**2))
        k = (k / k.sum()).to(x)
        C = x.shape[1]
        y = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).repeat(C, 1, 1, 1), groups=C)
        y = F.conv2d(F.pad(y, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).repeat(C, 1, 1, 1), groups=C)
        return y
    raise UserError(f"unknown baseline {kind!r}; valid: {', '.join(BASELINES)}")


# ---------------------------------------------------------------------------------------------- composing
def compose(x: torch.Tensor, base: torch.Tensor, features, keep: torch.Tensor,
            out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Perturbed inputs (K, T, C, H, W): the input where ``keep[k, feature]`` is true, else the baseline.

    ``features`` is a :class:`Features` (or a bare (T, H, W) id volume); ``base`` one baseline (T, C, H, W) or
    one per row (K, T, C, H, W); ``out`` an optional (K, T, C, H, W) buffer written in place.  Grid features
    broadcast the (K, F) mask over each cell's pixels instead of expanding it (one pass over the output).
    """
    if not isinstance(features, Features):
        features = Features(features, n_features(features), "", None)
    T, C, H, W = x.shape
    K = keep.shape[0]
    keep = keep.to(x.device, torch.bool)
    grid = features.grid
    if out is None:
        out = torch.empty((K, T, C, H, W), dtype=x.dtype, device=x.device)
    if grid is not None and H % grid[0] == 0 and W % grid[0] == 0:
        cell, fpg = grid
        gh, gw, tg = H // cell, W // cell, -(-T // fpg)
        m = keep.view(K, tg, gh, gw)
        if fpg > 1:
            m = m.index_select(1, torch.arange(T, device=x.device) // fpg)
        m = m.view(K, T, 1, gh, 1, gw, 1)
        shape7 = (T, C, gh, cell, gw, cell)
        b = base.view(-1, *shape7) if base.dim() == 5 else base.view(1, *shape7)
        torch.where(m, x.view(1, *shape7), b, out=out.view(K, *shape7))
        return out
    m = keep.index_select(1, features.ids.to(x.device).reshape(-1)).view(K, T, 1, H, W)
    torch.where(m, x[None], base if base.dim() == 5 else base[None], out=out)
    return out


# ---------------------------------------------------------------------------------------------- masks
class Masks:
    """Keep-masks over ``n_features`` features, produced ``rows(lo, hi)`` at a time (CPU bool (hi - lo, F)),
    so that a request of many masks never holds them all in memory."""

    n_features: int

    def __len__(self) -> int:
        raise NotImplementedError

    def rows(self, lo: int, hi: int) -> torch.Tensor:
        raise NotImplementedError


class TensorMasks(Masks):
    """Masks given as one (K, F) bool tensor."""

    def __init__(self, keep):
        keep = torch.as_tensor(keep)
        if keep.dim() == 1:
            keep = keep[None]
        self.keep = keep.detach().to("cpu", torch.bool)
        self.n_features = self.keep.shape[1]

    def __len__(self):
        return self.keep.shape[0]

    def rows(self, lo, hi):
        return self.keep[lo:hi]


def as_masks(masks) -> Masks:
    return masks if isinstance(masks, Masks) else TensorMasks(masks)


# ---------------------------------------------------------------------------------------------- the evaluator
class Source:
    """One input to perturb: pixels ``x`` (T, C, H, W) on the device, its :class:`Features` and baseline.

    ``key`` prefixes the output-cache keys of its masks; a source with a random baseline gets a private key
    (its outputs are shared with nothing and forgotten with it)."""

    _private = itertools.count()

    def __init__(self, x: torch.Tensor, features: Features, base: torch.Tensor, key: Optional[str]):
        self.x, self.features, self.base = x, features, base
        self.cacheable = key is not None
        self.key = key if key is not None else f"private:{next(Source._private)}"
        self.local: dict = {}  # outputs of a private source

    @property
    def n_features(self) -> int:
        return self.features.n


class Request:
    """Masks of one source to evaluate; after :meth:`Perturber.run`, ``values`` holds one result per mask:
    ``reduce(logits)`` when a reducer was given (e.g. the target class's probability), else the logits."""

    def __init__(self, source: Source, masks: Masks, reduce: Optional[Callable] = None):
        self.source, self.masks, self.reduce = source, masks, reduce
        self.values: Optional[torch.Tensor] = None

    def __len__(self):
        return len(self.masks)


class Perturber:
    """Model outputs of perturbed inputs of one or many sources, packed into full model batches.

    Batched use (metrics, SHAP/LIME over several samples)::

        p = Perturber(adapter, batch_size=32, progress=callback)
        src = p.source(x, features, baseline)                # one per input
        req = p.add(src, keep_masks, reduce=target_prob)     # any number of requests, any sources
        p.run()                                              # req.values: (K,) or (K, classes)

    Single-input use (the old API): ``Perturber(adapter, x, ids, baseline, batch_size, key).logits(keep)``.

    Every row is looked up by (source key, mask digest) in the adapter's output cache (``adapter.cache``;
    ``None`` = off) and among the rows already queued, so each distinct mask of an input is evaluated once.
    Rows are composed batch by batch into one buffer of ``batch_size`` inputs (fewer when that buffer would
    take more than :data:`INPUT_SHARE` of the free memory) and evaluated with ``adapter.predict``, which
    counts the forward passes.  ``progress(done, total)`` is called after each model batch with the masks
    answered so far (evaluated or looked up) out of those queued.
    """

    def __init__(self, adapter, x: Optional[torch.Tensor] = None, ids=None, baseline: Optional[torch.Tensor] = None,
                 batch_size: int = 32, key: str = "", *, progress: Optional[Callable[[int, int], None]] = None):
        self.adapter = adapter
        self.device = torch.device(getattr(adapter, "device", "cpu"))
        self.batch_size = max(1, int(batch_size))
        self.progress = progress
        self.cache = getattr(adapter, "cache", None)
        self.pending: List[Request] = []
        self._digests: dict = {}
        self.default: Optional[Source] = None
        if x is not None:  # the single-input API
            feats = ids if isinstance(ids, Features) else Features.of(ids, key=key)
            self.default = self.source(x, feats, baseline, cacheable=bool(key))

    # ------------------------------------------------------------------ building requests
    def source(self, x: torch.Tensor, features, baseline: torch.Tensor, cacheable: bool = True,
               baseline_key: str = "") -> Source:
        """A :class:`Source`; ``cacheable`` only for a deterministic baseline (``baseline_key`` names it)."""
        if not isinstance(features, Features):
            features = Features.of(features)
        key = None
        if cacheable and self.cache is not None:
            key = f"{features.key}/{baseline_key}/{self.input_key(x)}"
        x = x.detach().to(self.device, torch.float32)
        return Source(x, features.to(self.device), baseline.detach().to(self.device, torch.float32), key)

    def input_key(self, x: torch.Tensor) -> str:
        """A digest of the input's pixels (computed once per tensor)."""
        k = (id(x), x.data_ptr(), tuple(x.shape))
        if k not in self._digests:
            self._digests[k] = (_digest(x), x)  # keeps x alive, so the id is not reused
        return self._digests[k][0]

    def add(self, source: Source, masks, reduce: Optional[Callable] = None) -> Request:
        masks = as_masks(masks)
        if masks.n_features != source.n_features:
            raise ValueError(f"keep masks have {masks.n_features} features, the input {source.n_features}")
        req = Request(source, masks, reduce)
        self.pending.append(req)
        return req

    def logits(self, keep, base: Optional[torch.Tensor] = None, source: Optional[Source] = None) -> torch.Tensor:
        """(K, classes) logits of the masks ``keep`` (K, F) of ``source`` (default: the single input); ``base``
        optionally one baseline per row (then evaluated without the cache)."""
        src = source or self.default
        if base is not None:
            keep = torch.as_tensor(keep).bool()
            keep = keep[None] if keep.dim() == 1 else keep
            out = [self.adapter.predict(compose(src.x, base[i:i + self.batch_size].to(self.device), src.features,
                                                keep[i:i + self.batch_size]), batch_size=self.batch_size)
                   for i in range(0, keep.shape[0], self.batch_size)]
            return torch.cat(out, 0)
        req = self.add(src, keep)
        self.run()
        return req.values

    # ------------------------------------------------------------------ evaluating
    def capacity(self, source: Source) -> int:
        """Inputs per model batch: ``batch_size``, fewer when the buffer would not fit in memory."""
        row = source.x.numel() * source.x.element_size()
        fit = int(INPUT_SHARE * available_memory(self.device)) // max(1, row)
        return max(1, min(self.batch_size, fit))

    def run(self) -> None:
        """Evaluate every pending request (module docstring); each request's ``values`` is filled."""
        reqs, self.pending = self.pending, []
        if not reqs:
            return
        total = sum(len(r) for r in reqs)
        state = _Run(self, reqs, total)
        for req in reqs:
            K = len(req)
            req.values = None
            step = max(1, min(K, 4096))
            for lo in range(0, K, step):
                state.queue(req, lo, req.masks.rows(lo, min(K, lo + step)))
        state.flush()
        for req in reqs:
            if req.values is None:  # an empty request
                n = self.adapter.num_classes
                req.values = torch.empty((0,) if req.reduce else (0, n), device=self.device)


class _Run:
    """One :meth:`Perturber.run`: the batch being filled, the rows waiting for it, the stores."""

    def __init__(self, p: Perturber, reqs, total):
        self.p, self.total, self.done = p, total, 0
        self.cap = p.capacity(max((r.source for r in reqs), key=lambda s: s.x.numel()))
        self.buf: Optional[torch.Tensor] = None
        self.batch: list = []       # (source, key, keep row) of the rows of the next model batch
        self.slot: dict = {}        # store key -> index in self.batch
        self.waiting: list = []     # (request, request row, batch index)
        self.store = p.cache.store if p.cache is not None else None
        held = len(self.store) if self.store is not None else 0
        self.max_rows = cache_rows(getattr(p.adapter, "num_classes", 1000), p.device, held)
        self.n_local = 0            # rows kept by this run's private sources (counted against max_rows)

    def _lookup(self, source: Source, key):
        if source.cacheable and self.store is not None:
            return self.store.get(key)
        return source.local.get(key)

    def _put(self, source: Source, key, value):
        if source.cacheable and self.store is not None:
            if len(self.store) + self.n_local < self.max_rows:
                self.store[key] = value
        elif len(self.store or ()) + self.n_local < self.max_rows:
            source.local[key] = value
            self.n_local += 1

    def queue(self, req: Request, lo: int, keep: torch.Tensor):
        src = req.source
        packed = np.packbits(keep.numpy(), axis=1)
        hit_rows, hit_vals = [], []
        for j in range(packed.shape[0]):
            key = (src.key, hashlib.blake2b(packed[j].tobytes(), digest_size=16).digest())
            v = self._lookup(src, key)
            if v is not None:
                hit_rows.append(lo + j)
                hit_vals.append(v)
                continue
            b = self.slot.get(key)
            if b is None:
                b = self.slot[key] = len(self.batch)
                self.batch.append((src, key, keep[j]))
            elif src.cacheable and self.p.cache is not None:
                self.p.cache.hits += 1  # a duplicate of a queued row: one pass saved
            self.waiting.append((req, lo + j, b))
            if len(self.batch) >= self.cap:
                self.flush()
        if hit_rows:
            self._deliver(req, hit_rows, torch.stack(hit_vals))
            cache = self.p.cache
            if cache is not None and src.cacheable:
                cache.hits += len(hit_rows)
            self.done += len(hit_rows)

    def _deliver(self, req: Request, rows, logits: torch.Tensor):
        vals = req.reduce(logits) if req.reduce is not None else logits
        if req.values is None:
            req.values = torch.empty((len(req), *vals.shape[1:]), dtype=vals.dtype, device=vals.device)
        req.values[torch.as_tensor(rows, device=vals.device)] = vals

    def flush(self):
        if not self.batch:
            return
        p, n = self.p, len(self.batch)
        x0 = self.batch[0][0].x
        if self.buf is None:
            self.buf = torch.empty((self.cap, *x0.shape), dtype=torch.float32, device=p.device)
        buf = self.buf[:n]
        i = 0
        while i < n:  # consecutive rows of one source are composed together
            src = self.batch[i][0]
            j = i
            while j < n and self.batch[j][0] is src:
                j += 1
            keep = torch.stack([r[2] for r in self.batch[i:j]])
            compose(src.x, src.base, src.features, keep, out=buf[i:j])
            i = j
        logits = p.adapter.predict(buf, batch_size=n)
        for b, (src, key, _) in enumerate(self.batch):
            self._put(src, key, logits[b])
        if p.cache is not None:
            p.cache.misses += sum(1 for s, _, _ in self.batch if s.cacheable)
        # deliver to the waiting request rows, one reduce per request
        by_req: dict = {}
        for req, row, b in self.waiting:
            by_req.setdefault(id(req), (req, [], []))
            by_req[id(req)][1].append(row)
            by_req[id(req)][2].append(b)
        for req, rows, bs in by_req.values():
            self._deliver(req, rows, logits[torch.as_tensor(bs, device=logits.device)])
        self.done += len(self.waiting)
        self.batch, self.slot, self.waiting = [], {}, []
        if p.progress is not None:
            p.progress(self.done, self.total)


# ---------------------------------------------------------------------------------------------- ranking and ties
class Ranking:
    """Features ordered by decreasing ``scores`` (ties by index), with their tie groups and tie orders.

    ``order[q]`` is the feature at position q; the tie groups are the runs of equal scores, positions
    ``[bounds[g], bounds[g+1])``.  A *cut* at k (the top k positions) falls on a group boundary or inside a
    group; only the latter depends on the order of the tied features.  The tie orders (docs/ties.md) are
    seeded by ``seed`` (the run seed and the sample) and the scores, so every metric and method that ranks
    the same scores on the same sample draws the same orders, and shares their model outputs.  Draws come in
    antithetic pairs: draw ``2p`` orders a group by a random permutation, draw ``2p + 1`` by its reverse.
    """

    def __init__(self, scores, seed: Sequence[int] = (0,)):
        s = torch.as_tensor(scores).detach().double().cpu().numpy()
        self.F = s.shape[0]
        self.order = np.argsort(-s, kind="stable")
        srt = s[self.order]
        self.bounds = np.concatenate([[0], np.flatnonzero(srt[1:] != srt[:-1]) + 1, [self.F]]).astype(np.int64)
        self.is_bound = np.zeros(self.F + 1, dtype=bool)
        self.is_bound[self.bounds] = True
        digest = hashlib.blake2b(np.ascontiguousarray(s).tobytes(), digest_size=8).digest()
        self.key = int.from_bytes(digest, "little")
        self.seed = tuple(int(v) & 0xFFFFFFFFFFFFFFFF for v in seed)
        self._pos: "OrderedDict" = OrderedDict()

    @property
    def n_groups(self) -> int:
        return len(self.bounds) - 1

    @property
    def untied(self) -> bool:
        return self.n_groups == self.F

    def group_at(self, k: int) -> Optional[Tuple[int, int]]:
        """The group (a, b) a cut at ``k`` falls inside (a < k < b), or None on a boundary."""
        k = int(k)
        if self.is_bound[k]:
            return None
        g = int(np.searchsorted(self.bounds, k, side="right")) - 1
        return int(self.bounds[g]), int(self.bounds[g + 1])

    def perm(self, a: int, b: int, draw) -> np.ndarray:
        """The order of the positions [a, b) of group (a, b) in tie draw ``draw`` (an int), or -- for a tuple
        of group offsets -- those offsets first, then the rest in index order (an enumerated subset)."""
        g = b - a
        if isinstance(draw, tuple):
            first = np.asarray(draw, dtype=np.int64)
            rest = np.setdiff1d(np.arange(g), first, assume_unique=True)
            return np.concatenate([first, rest])
        rng = np.random.default_rng([*self.seed, self.key, a, b, int(draw) // 2])
        p = rng.permutation(g)
        return p[::-1].copy() if int(draw) % 2 else p

    def positions(self, variant: Tuple = ()) -> np.ndarray:
        """``pos[f]``: the position of feature f in the order where each (a, b, draw) of ``variant`` reorders
        group (a, b) (:meth:`perm`); ``()`` is the order by index."""
        pos = self._pos.get(variant)
        if pos is None:
            order = self.order.copy()
            for a, b, draw in variant:
                order[a:b] = self.order[a:b][self.perm(a, b, draw)]
            pos = np.empty(self.F, dtype=np.int64)
            pos[order] = np.arange(self.F)
            self._pos[variant] = pos
            while len(self._pos) > max(4, (64 << 20) // max(1, 8 * self.F)):
                self._pos.popitem(last=False)
        else:
            self._pos.move_to_end(variant)
        return pos


class CutMasks(Masks):
    """Keep-masks of a :class:`Ranking`: row ``r`` keeps the features whose position, in the order
    ``variants[r]`` (:meth:`Ranking.positions`), lies in ``[lo[r], hi[r])`` -- or outside it when ``invert``."""

    def __init__(self, ranking: Ranking):
        self.ranking, self.n_features = ranking, ranking.F
        self.specs: List[Tuple[Tuple, int, int, bool]] = []

    def add(self, variant: Tuple, lo: int, hi: int, invert: bool = False) -> int:
        self.specs.append((variant, int(lo), int(hi), bool(invert)))
        return len(self.specs) - 1

    def __len__(self):
        return len(self.specs)

    def rows(self, lo, hi):
        out = torch.empty((hi - lo, self.n_features), dtype=torch.bool)
        r = lo
        while r < hi:
            v = self.specs[r][0]
            s = r
            while r < hi and self.specs[r][0] == v:
                r += 1
            pos = torch.from_numpy(self.ranking.positions(v))
            los = torch.tensor([sp[1] for sp in self.specs[s:r]])[:, None]
            his = torch.tensor([sp[2] for sp in self.specs[s:r]])[:, None]
            inv = torch.tensor([sp[3] for sp in self.specs[s:r]])[:, None]
            out[s - lo:r - lo] = ((pos[None] >= los) & (pos[None] < his)) ^ inv
        return out


def descending(scores: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(order, group) for ``scores`` (F,): feature indices by decreasing score (ties by index), and for each
    position of ``order`` the index of its tie group (0 for the highest score; equal scores share a group)."""
    s = scores.detach().double().cpu()
    order = torch.argsort(-s, stable=True)
    srt = s[order]
    new = torch.ones_like(srt, dtype=torch.long)
    new[1:] = (srt[1:] != srt[:-1]).long()
    return order, torch.cumsum(new, 0) - 1


def tie_fraction(scores: torch.Tensor) -> float:
    """Share of features whose score equals another feature's score."""
    _, group = descending(scores)
    sizes = torch.bincount(group)
    return float(sizes[sizes > 1].sum()) / float(group.numel())


def n_subsets(g: int, n: int, limit: int) -> int:
    """``C(g, n)``, or ``limit + 1`` when it exceeds ``limit`` (computed without big numbers)."""
    n = min(n, g - n)
    c = 1
    for i in range(n):
        c = c * (g - i) // (i + 1)
        if c > limit:
            return limit + 1
    return c


def _digest(x: torch.Tensor) -> str:
    return hashlib.blake2b(x.detach().cpu().contiguous().numpy().tobytes(), digest_size=8).hexdigest()


__all__ = ["FEATURES", "BASELINES", "FeatureConfig", "FeatureSpec", "Features", "grid_features", "slic_features",
           "feature_ids", "slic_ids", "n_features", "feature_totals", "feature_means", "make_baseline", "compose",
           "Masks", "TensorMasks", "CutMasks", "Source", "Request", "Perturber", "Ranking", "descending",
           "tie_fraction", "token_cell", "available_memory", "gib", "n_subsets"]
