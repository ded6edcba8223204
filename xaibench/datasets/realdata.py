"""Helpers shared by the real-data loaders (``kinetics400``, ``imagenet_seg``).

* :func:`select_subset`: seeded selection of ``n_per_class`` items per class or
  ``n_samples`` items in total;
* :func:`resize_short_crop` / :func:`resize_square`: the spatial preprocessing;
* :func:`model_preprocess`: what a model adapter expects (frames, resize, crop,
  label names), read from ``adapter.preprocess`` when the adapter was loaded by
  :mod:`xaibench.models.pretrained` and from its geometry otherwise;
* :func:`norm_label`: the label-name normalisation used for mapping class names;
* :class:`SubsetConfig`: the typed parameters both loaders share (subset, seed, label mode);
* :func:`path_component_problem` / :func:`relative_path_problem`: names read from data files (CSV labels,
  YouTube ids, list-file entries) are checked before they become paths, so no data file can make a loader or
  ``xaibench-fetch`` read or write outside its folder;
* :func:`file_stat`: size and modification time of a file, for the datasets' fingerprints.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..config import ComponentConfig, param
from ..errors import UserError

DATA_DIR = Path(__file__).parent / "data"

_UNNAMED = re.compile(r"^(label_|class_|class)\d+$")


def norm_label(name: str) -> str:
    """Case-, underscore-, quote- and spacing-insensitive form of a class name.

    ``"Passing_American_football_(in_game)"`` and ``"passing american football (in game)"``
    normalise to the same string, as do ``"massaging person's head"`` and
    ``"massaging persons head"``.
    """
    s = str(name).strip().lower().replace("_", " ")
    s = re.sub(r"[\"'`]", "", s)
    return re.sub(r"\s+", " ", s).strip()


def unnamed(labels: Optional[Sequence[str]]) -> bool:
    """True when a label list carries no class names (``LABEL_0``, ``class_3``, ... or ``None``)."""
    if not labels:
        return True
    return all(_UNNAMED.match(str(lab).strip().lower()) for lab in labels)


@dataclass
class SubsetConfig(ComponentConfig):
    """Parameters shared by the real-data loaders (``kinetics400``, ``imagenet_seg``).

    ``n_samples`` and ``n_per_class`` have no upper bound: they cap a selection among the items the data
    holds, so a huge value means "all of them" and never allocates anything by its size."""

    n_per_class: Optional[int] = param(None, range=(1, None),
                                       help="at most this many items of every class (seeded choice); null: all")
    n_samples: Optional[int] = param(None, range=(1, None),
                                     help="at most this many items in total, after n_per_class (seeded); null: all")
    seed: int = param(0, range=(0, None), help="seed of the subset choice")
    label_mode: str = param("map", choices=("map", "none"),
                            help="map: class names to the model's labels; none: label None (explain the prediction)")


def select_subset(keys: Sequence, classes: Sequence, *, n_per_class=None, n_samples=None, seed: int = 0) -> List[int]:
    """Indices of a seeded subset of items.

    ``keys`` identify the items (sorted order defines the candidate order, so
    the result does not depend on the order of the annotation file), ``classes``
    gives each item's class.  ``n_per_class``: that many items of every class
    (all of a class when it has fewer); ``n_samples``: that many items in total
    (after the per-class selection when both are set).  Selection uses
    ``numpy.random.default_rng(seed)``; the returned indices are ordered by
    (class, key).  Work and memory grow with the number of items, never with ``n_per_class`` or
    ``n_samples`` (checked positive integers, any size).
    """
    order = sorted(range(len(keys)), key=lambda i: (str(classes[i]), str(keys[i])))
    rng = np.random.default_rng(int(seed))
    if n_per_class is not None:
        by_class: Dict[str, List[int]] = defaultdict(list)
        for i in order:
            by_class[str(classes[i])].append(i)
        chosen = []
        for c in sorted(by_class):
            items = by_class[c]
            perm = rng.permutation(len(items))[:n_per_class]
            chosen += [items[j] for j in sorted(perm)]
        order = chosen
    if n_samples is not None:
        if n_samples < len(order):
            perm = np.sort(rng.permutation(len(order))[:n_samples])
            order = [order[j] for j in perm]
    return order


def resize_short_crop(x: torch.Tensor, resize: int, crop: int, mode: str = "bilinear") -> torch.Tensor:
    """(T, C, H, W) float -> short side scaled to ``resize`` (``mode`` = bilinear or
    bicubic, antialiased), then the central ``crop`` x ``crop`` window; sizes and
    offsets rounded as torchvision's ``resize`` / ``center_crop``."""
    h, w = x.shape[-2:]
    if min(h, w) != resize:
        if h <= w:  # long side truncated as torchvision / transformers do
            nh, nw = resize, int(resize * w / h)
        else:
            nh, nw = int(resize * h / w), resize
        x = F.interpolate(x, size=(nh, nw), mode=mode, antialias=True, align_corners=False)
    h, w = x.shape[-2:]
    if crop > min(h, w):
        raise UserError(f"crop size {crop} is larger than the resized frame {h}x{w}; use resize >= crop")
    top = int(round((h - crop) / 2.0))
    left = int(round((w - crop) / 2.0))
    return x[..., top : top + crop, left : left + crop].clamp(0.0, 1.0)


def resize_square(x: torch.Tensor, size: int, mode: str = "bilinear") -> torch.Tensor:
    """(N, C, H, W) -> (N, C, size, size) without keeping the aspect ratio."""
    if mode == "nearest":  # pixel-centre nearest neighbour, as PIL's Image.NEAREST
        return F.interpolate(x, size=(size, size), mode="nearest-exact")
    return F.interpolate(x, size=(size, size), mode=mode, antialias=True, align_corners=False).clamp(0.0, 1.0)


def model_preprocess(adapter) -> dict:
    """``{'frames', 'size', 'resize', 'labels', 'num_classes'}`` the model expects.

    Pretrained adapters carry ``adapter.preprocess`` (from the checkpoint's
    image-processor / timm data config); the random-init ones only have their
    geometry, so ``resize = size`` (no border cropped).
    """
    pre = dict(getattr(adapter, "preprocess", None) or {})
    size = int(pre.get("size", adapter.image_size))
    out = {
        "frames": int(pre.get("frames", adapter.num_frames)),
        "size": size,
        "resize": int(pre.get("resize", size)),
        "interpolation": str(pre.get("interpolation", "bilinear")),
        "labels": list(adapter.labels) if getattr(adapter, "labels", None) else None,
    }
    try:
        out["num_classes"] = int(adapter.num_classes)
    except Exception:  # adapters without a known head size
        out["num_classes"] = None
    return out


def skip(dataset, sample_id: str, reason: str):
    """Record ``(sample_id, reason)`` in ``dataset.skipped`` and return the
    :class:`~xaibench.datasets.base.SkipSample` to raise (message
    ``"<sample_id>: <reason>"``, attributes ``sample_id`` and ``reason``)."""
    from .base import SkipSample

    if (sample_id, reason) not in dataset.skipped:
        dataset.skipped.append((sample_id, reason))
    exc = SkipSample(f"{sample_id}: {reason}")
    exc.sample_id, exc.reason = sample_id, reason
    return exc


DATA_ENV = "XAIBENCH_DATA"
DEFAULT_DATA_HOME = "~/.cache/xaibench/data"
# Where ``xaibench-fetch NAME`` puts each dataset under the data folder, keyed by
# the loader's environment variable: (fetch NAME, path relative to the data folder).
FETCHED = {
    "XAIBENCH_KINETICS_ROOT": ("kinetics400", "kinetics400"),
    "XAIBENCH_IMAGENET_SEG": ("imagenet_seg", "imagenet_seg/gtsegs_ijcv.mat"),
}


def data_home() -> Path:
    """The default data folder: ``$XAIBENCH_DATA``, else ``~/.cache/xaibench/data``."""
    return Path(os.path.expanduser(os.environ.get(DATA_ENV) or DEFAULT_DATA_HOME))


def env_path(value, env: str, what: str, how: str) -> Path:
    """Where a dataset is, in this order: ``value`` (the dataset config), the
    environment variable ``env``, then the place ``xaibench-fetch`` writes it to
    under :func:`data_home` (only if it exists); a clear error if none."""
    if value in (None, "", "null"):
        value = os.environ.get(env)
    if not value and env in FETCHED:
        name, rel = FETCHED[env]
        fetched = data_home() / rel
        if fetched.exists():
            return fetched
        raise UserError(f"no {what} given: set it in the dataset config or the environment variable {env}, or "
                        f"download it with `xaibench-fetch {name}` (it is then found at {fetched} with no "
                        f"configuration; the data folder is ${DATA_ENV}, default {DEFAULT_DATA_HOME}). {how}")
    if not value:
        raise UserError(f"no {what} given: set it in the dataset config or the environment variable {env}. {how}")
    return Path(os.path.expanduser(str(value)))


def read_class_list(path=None) -> List[str]:
    p = Path(path) if path else DATA_DIR / "kinetics400_classes.txt"
    if not p.exists():
        raise UserError(f"class list {p} does not exist")
    names = [line.strip() for line in p.read_text().splitlines() if line.strip()]
    return names


# --------------------------------------------------------------- paths from data files
def path_component_problem(name: str) -> Optional[str]:
    """Why ``name`` (read from a data file) cannot be one folder or file name, or ``None`` when it can.

    Refused: empty, ``.``, ``..``, anything with a path separator (``/`` or ``\\``), a NUL or another
    control character, and a name longer than 255 characters."""
    s = str(name)
    if s.strip() in ("", ".", ".."):
        return f"{s!r} is not a file or folder name"
    if "/" in s or "\\" in s:
        return f"{s!r} contains a path separator"
    if any(ord(c) < 32 for c in s):
        return f"{s!r} contains a control character"
    if len(s) > 255:
        return f"{s[:40]!r}... is longer than 255 characters"
    return None


def relative_path_problem(rel: str) -> Optional[str]:
    """Why ``rel`` (a file named in a list file) would leave its folder, or ``None`` when it stays inside:
    absolute paths, drive letters and ``..`` components are refused."""
    s = str(rel)
    if not s.strip() or any(ord(c) < 32 for c in s):
        return f"{s!r} is not a relative file path"
    for pure in (PurePosixPath(s), PureWindowsPath(s)):
        if pure.is_absolute() or pure.drive or pure.root:
            return f"{s!r} is an absolute path"
        if ".." in pure.parts:
            return f"{s!r} leads out of its folder ('..')"
    return None


def file_stat(path) -> Optional[List[int]]:
    """``[size in bytes, modification time in ns]`` of a file, or ``None`` when it does not exist."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [int(st.st_size), int(st.st_mtime_ns)]


def digest(lines) -> str:
    """SHA-256 of text lines (a compact, order-sensitive identity for fingerprints)."""
    import hashlib

    h = hashlib.sha256()
    for line in lines:
        h.update(str(line).encode("utf-8", "surrogatepass"))
        h.update(b"\n")
    return h.hexdigest()
