"""Kinetics-400 clips decoded with PyAV (dataset ``kinetics400``).

Annotations
-----------
The official annotation CSV (one per split) has the header
``label,youtube_id,time_start,time_end,split`` (some releases add ``is_cc``);
``split`` is ``train``, ``val``/``validate`` or ``test``.

On-disk layouts (``layout``)
----------------------------
* ``tree``: ``<root>/<split>/<label>/<youtube_id>_<start:06d>_<end:06d>.mp4``
  (folder names may use ``_`` for spaces; the mapping is case- and
  underscore-insensitive), read with the CSV;
* ``flat``: every video in one folder (``video_dir``, default ``root``) and a
  list file of ``<file name> <label index>`` lines (``<youtube_id>.mp4 12``);
  label indices refer to ``classes_file`` (default: the canonical alphabetical
  400-class list shipped in ``xaibench/datasets/data/kinetics400_classes.txt``);
* ``auto``: ``flat`` when ``list_file`` is given, else ``tree``.

Clip sampling (``sampling``)
----------------------------
With N decoded frames and T frames wanted:

* ``first``: frames 0 .. T-1 (the STAA authors' evaluation: "first 8 decoded
  frames", docs/protocols.md "STAA");
* ``uniform``: frame ``floor((k + 0.5) N / T)`` for k = 0 .. T-1, i.e. the
  centre of each of T equal segments of the clip (TSN-style test sampling).

A clip with N < T is *too short* and skipped.  Each frame is scaled so that its
short side is ``resize`` (``interpolation``: bilinear or bicubic, antialiased), centre-cropped to ``size`` x
``size`` and returned as pixels in [0, 1], shape (T, 3, size, size); the model
adapter applies its own mean / std.

Labels
------
``label`` of a sample is an index into the *model's* label list ``labels``
(its ``id2label``; given by the caller, or set by :meth:`Kinetics400.bind`).
Names are matched after :func:`~xaibench.datasets.realdata.norm_label`.
A model without named labels (``LABEL_0`` ...) uses the canonical class list
(only when it has 400 outputs).  Class names that cannot be mapped raise a
:class:`~xaibench.errors.UserError` listing them.  ``label_mode: none`` gives
``label = None`` (explain the predicted class instead).

Skipped samples
---------------
A missing, unreadable or too-short video never stops a run: ``__getitem__``
records ``(sample_id, reason)`` in ``dataset.skipped`` and raises
:class:`~xaibench.datasets.base.SkipSample` (see there for the contract).
"""

from __future__ import annotations

import csv
import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from ..errors import UserError, check_range
from .base import Dataset, Sample, SkipSample
from .realdata import (env_path, model_preprocess, norm_label, read_class_list, resize_short_crop, select_subset,
                       skip, unnamed)

REQUIRED_COLUMNS = ("label", "youtube_id", "time_start", "time_end", "split")
OPTIONAL_COLUMNS = ("is_cc",)
SPLIT_ALIASES = {"train": ("train", "training"), "val": ("val", "validate", "validation", "valid"),
                 "test": ("test", "testing")}
VIDEO_EXTS = (".mp4", ".mkv", ".webm", ".avi")
ROOT_ENV = "XAIBENCH_KINETICS_ROOT"
ROOT_HELP = ("Point it at the Kinetics-400 folder (e.g. the output of the CVDF kinetics-dataset download scripts: "
             "<root>/<split>/<label>/<youtube_id>_<start>_<end>.mp4 with <root>/annotations/<split>.csv), "
             "see docs/real_data.md.")


def canonical_split(split: str) -> str:
    s = str(split).strip().lower()
    for k, names in SPLIT_ALIASES.items():
        if s in names:
            return k
    raise UserError(f"unknown Kinetics split {split!r}; valid: train, val (or validate), test")


@dataclass
class Entry:
    sample_id: str
    class_name: str
    path: Optional[Path]  # None when no candidate file exists
    tried: tuple = ()


def read_annotations(path: Path) -> List[dict]:
    """Rows of an official Kinetics annotation CSV, with a clear error for a wrong header."""
    if not path.exists():
        raise UserError(f"Kinetics annotation file {path} does not exist")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise UserError(
                f"{path} is not a Kinetics annotation CSV: its header is {','.join(header) or '(empty)'} but the "
                f"columns {', '.join(missing)} are missing; expected {','.join(REQUIRED_COLUMNS)} "
                f"(optionally {','.join(OPTIONAL_COLUMNS)}), as in the official kinetics400 train/validate/test CSVs"
            )
        rows = []
        for lineno, row in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
            try:
                row["time_start"] = int(float(row["time_start"]))
                row["time_end"] = int(float(row["time_end"]))
            except ValueError:
                raise UserError(f"{path}:{lineno}: time_start/time_end must be numbers, got "
                                f"{row['time_start']!r}, {row['time_end']!r}") from None
            rows.append(row)
    return rows


def read_list_file(path: Path, class_names: Sequence[str]) -> List[tuple]:
    """``(relative file, class name)`` from ``<file> <label index>`` lines."""
    if not path.exists():
        raise UserError(f"Kinetics list file {path} does not exist")
    out = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(None, 1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise UserError(f"{path}:{lineno}: expected '<video file> <label index>', got {line!r}")
        idx = int(parts[1])
        if not 0 <= idx < len(class_names):
            raise UserError(f"{path}:{lineno}: label index {idx} is outside the class list "
                            f"(0..{len(class_names) - 1})")
        out.append((parts[0], class_names[idx]))
    return out


class Kinetics400(Dataset):
    """Kinetics-400 clips; see the module docstring for layouts, sampling and labels."""

    def __init__(
        self,
        root: Optional[str] = None,
        split: str = "test",
        annotations: Optional[str] = None,
        layout: str = "auto",
        list_file: Optional[str] = None,
        video_dir: Optional[str] = None,
        split_dir: Optional[str] = None,
        classes_file: Optional[str] = None,
        sampling: str = "first",
        frames: Optional[int] = None,
        size: Optional[int] = None,
        resize: Optional[int] = None,
        interpolation: str = "bilinear",
        n_per_class: Optional[int] = None,
        n_samples: Optional[int] = None,
        classes: Optional[Sequence[str]] = None,
        only_present: bool = False,
        seed: int = 0,
        labels: Optional[Sequence[str]] = None,
        label_mode: str = "map",
        name: str = "kinetics400",
    ):
        self.name = name
        self.root = env_path(root, ROOT_ENV, "Kinetics-400 root folder", ROOT_HELP)
        if not self.root.is_dir():
            raise UserError(f"Kinetics-400 root {self.root} is not a folder. {ROOT_HELP}")
        self.split = canonical_split(split)
        if sampling not in ("first", "uniform"):
            raise UserError(f"dataset.sampling={sampling!r} is not valid; use 'first' or 'uniform'")
        self.sampling = sampling
        if label_mode not in ("map", "none"):
            raise UserError(f"dataset.label_mode={label_mode!r} is not valid; use 'map' or 'none'")
        self.label_mode = label_mode
        # frames / size: null = the model's (set by bind); an explicit value must match the model
        self.frames_set = frames is not None
        self.size_set = size is not None
        self.frames = check_range("dataset.frames", frames if frames is not None else 8, 1, 256, integer=True)
        self.size = check_range("dataset.size", size if size is not None else 224, 8, 1024, integer=True)
        self.resize = check_range("dataset.resize", resize if resize is not None else self.size, self.size, 4096,
                                  integer=True)
        if interpolation not in ("bilinear", "bicubic"):
            raise UserError(f"dataset.interpolation={interpolation!r} is not valid; use 'bilinear' or 'bicubic'")
        self.interpolation = interpolation
        self.seed = int(seed)
        self.class_names = read_class_list(classes_file)
        if layout == "auto":
            layout = "flat" if list_file else "tree"
        if layout not in ("tree", "flat"):
            raise UserError(f"dataset.layout={layout!r} is not valid; use 'tree', 'flat' or 'auto'")
        self.layout = layout
        entries = self._flat_entries(list_file, video_dir) if layout == "flat" else \
            self._tree_entries(annotations, split_dir)
        if classes:
            wanted = {norm_label(c) for c in classes}
            known = {norm_label(e.class_name) for e in entries}
            unknown = [c for c in classes if norm_label(c) not in known]
            if unknown:
                raise UserError(f"dataset.classes has names absent from the {self.split} annotations: {unknown}")
            entries = [e for e in entries if norm_label(e.class_name) in wanted]
        self.n_absent_total = sum(e.path is None for e in entries)
        if only_present:
            entries = [e for e in entries if e.path is not None]
        if not entries:
            raise UserError(f"no Kinetics-400 {self.split} videos found under {self.root} ({layout} layout)"
                            + (" that exist on disk" if only_present else ""))
        idx = select_subset([e.sample_id for e in entries], [norm_label(e.class_name) for e in entries],
                            n_per_class=n_per_class, n_samples=n_samples, seed=self.seed)
        self.entries: List[Entry] = [entries[i] for i in idx]
        self.skipped = []
        self.labels = list(labels) if labels else list(self.class_names)
        self._label_index: Dict[str, int] = {}
        self._map_labels(self.labels, num_classes=len(self.labels) if labels else 400)

    # ------------------------------------------------------------ file lookup
    def _split_folder(self, split_dir) -> Path:
        if split_dir:
            p = Path(split_dir)
            return p if p.is_absolute() else self.root / p
        for cand in SPLIT_ALIASES[self.split]:
            if (self.root / cand).is_dir():
                return self.root / cand
        return self.root / self.split

    def _find_annotations(self, annotations) -> Path:
        if annotations:
            p = Path(os.path.expanduser(str(annotations)))
            return p if p.is_absolute() or p.exists() else self.root / p
        tried = []
        for folder in (self.root / "annotations", self.root, self.root / "kinetics400"):
            for s in SPLIT_ALIASES[self.split]:
                for stem in (s, f"kinetics400_{s}", f"kinetics_400_{s}"):
                    p = folder / f"{stem}.csv"
                    tried.append(str(p))
                    if p.exists():
                        return p
        raise UserError(f"no Kinetics-400 annotation CSV for split {self.split!r}: looked for {', '.join(tried[:6])}"
                        f" ...; give dataset.annotations=<path to {self.split}.csv>")

    def _tree_entries(self, annotations, split_dir) -> List[Entry]:
        ann = self._find_annotations(annotations)
        rows = read_annotations(ann)
        rows = [r for r in rows if not r["split"] or canonical_split(r["split"]) == self.split]
        if not rows:
            raise UserError(f"{ann} has no rows of split {self.split!r}")
        folder = self._split_folder(split_dir)
        class_dirs: Dict[str, Path] = {}
        if folder.is_dir():
            for d in folder.iterdir():
                if d.is_dir():
                    class_dirs.setdefault(norm_label(d.name), d)
        entries = []
        for r in rows:
            stem = f"{r['youtube_id']}_{r['time_start']:06d}_{r['time_end']:06d}"
            cdir = class_dirs.get(norm_label(r["label"]), folder / r["label"])
            cands = [cdir / f"{stem}{ext}" for ext in VIDEO_EXTS] + [cdir / f"{r['youtube_id']}.mp4"]
            path = next((c for c in cands if c.exists()), None)
            entries.append(Entry(sample_id=stem, class_name=r["label"], path=path, tried=(str(cands[0]),)))
        return entries

    def _flat_entries(self, list_file, video_dir) -> List[Entry]:
        lf = Path(os.path.expanduser(str(list_file)))
        lf = lf if lf.is_absolute() or lf.exists() else self.root / lf
        vdir = Path(video_dir) if video_dir else self.root
        vdir = vdir if vdir.is_absolute() else self.root / vdir
        entries = []
        for rel, cname in read_list_file(lf, self.class_names):
            p = vdir / rel
            entries.append(Entry(sample_id=Path(rel).stem, class_name=cname, path=p if p.exists() else None,
                                 tried=(str(p),)))
        return entries

    # ----------------------------------------------------------------- labels
    def _map_labels(self, labels: Sequence[str], num_classes: Optional[int]) -> None:
        if self.label_mode == "none":
            self._label_index = {}
            return
        if unnamed(labels):
            if num_classes not in (None, len(self.class_names)):
                raise UserError(
                    f"the model has {num_classes} unnamed classes, so Kinetics-400 labels cannot be mapped to them "
                    f"(unnamed labels are read as the {len(self.class_names)} canonical classes). Use a model with "
                    f"{len(self.class_names)} outputs or named labels, or set dataset.label_mode=none to explain "
                    f"the predicted class"
                )
            labels = self.class_names
        index = {}
        for i, lab in enumerate(labels):
            index.setdefault(norm_label(lab), i)
        needed = sorted({e.class_name for e in self.entries})
        bad = [c for c in needed if norm_label(c) not in index]
        if bad:
            hints = []
            for c in bad[:10]:
                close = difflib.get_close_matches(norm_label(c), list(index), n=1, cutoff=0.75)
                if close:
                    hints.append(f"{c!r} ~ {close[0]!r}")
            raise UserError(
                f"{len(bad)} Kinetics class name(s) do not map to the model's labels: {bad}"
                + (f" (close model labels: {'; '.join(hints)})" if hints else "")
                + ". Check that the model was trained on Kinetics-400, pass the model's label names, "
                  "or set dataset.label_mode=none to explain the predicted class"
            )
        self._label_index = {norm_label(c): index[norm_label(c)] for c in needed}
        self.labels = list(labels)

    def bind(self, adapter) -> "Kinetics400":
        """Adopt the model's frame count, crop / resize sizes and label names (the
        runner calls this once per (model, dataset) benchmark)."""
        pre = model_preprocess(adapter)
        for key, mine, set_ in (("frames", self.frames, self.frames_set), ("size", self.size, self.size_set)):
            if set_ and mine != pre[key]:
                raise UserError(f"dataset.{key}={mine} but model {adapter.name!r} takes {pre[key]}; remove "
                                f"dataset.{key} (null: the model's value) or choose a model that takes {mine}")
        self.frames, self.size = pre["frames"], pre["size"]
        self.resize = max(pre["resize"], self.size)
        if pre["interpolation"] in ("bilinear", "bicubic"):
            self.interpolation = pre["interpolation"]
        self._map_labels(pre["labels"] or [], pre["num_classes"])
        return self

    # ---------------------------------------------------------------- samples
    def __len__(self) -> int:
        return len(self.entries)

    def describe(self) -> dict:
        return {"name": self.name, "n": len(self), "split": self.split, "layout": self.layout,
                "sampling": self.sampling, "frames": self.frames, "size": self.size, "resize": self.resize,
                "interpolation": self.interpolation,
                "seed": self.seed, "absent_in_annotations": self.n_absent_total, "root": str(self.root)}

    def _skip(self, sample_id: str, reason: str) -> SkipSample:
        return skip(self, sample_id, reason)

    def frame_indices(self, n: int) -> np.ndarray:
        T = self.frames
        if self.sampling == "first":
            return np.arange(T)
        return np.floor((np.arange(T) + 0.5) * n / T).astype(int)

    def decode(self, path: Path, sample_id: str) -> torch.Tensor:
        """(T, 3, size, size) pixels of one clip, or :class:`SkipSample`."""
        import av

        T = self.frames
        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise self._skip(sample_id, f"unreadable: no video stream in {path.name}")
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                kept = []
                for frame in container.decode(stream):
                    kept.append(frame)
                    if self.sampling == "first" and len(kept) == T:
                        break
        except SkipSample:
            raise
        except (av.FFmpegError, OSError, ValueError, EOFError) as e:
            raise self._skip(sample_id, f"unreadable: {type(e).__name__}: {e}") from None
        n = len(kept)
        if n < T:
            raise self._skip(sample_id, f"too short: {n} decodable frame(s), {T} needed")
        idx = self.frame_indices(n)
        arr = np.stack([kept[i].to_ndarray(format="rgb24") for i in idx])  # (T, H, W, 3) uint8
        x = torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255.0)
        return resize_short_crop(x, self.resize, self.size, self.interpolation).contiguous()

    def __getitem__(self, i: int) -> Sample:
        if not 0 <= i < len(self.entries):
            raise IndexError(i)
        e = self.entries[i]
        if e.path is None or not e.path.exists():
            raise self._skip(e.sample_id, f"missing: no video file (looked for {e.tried[0]})")
        x = self.decode(e.path, e.sample_id)
        label = None if self.label_mode == "none" else self._label_index[norm_label(e.class_name)]
        return Sample(sample_id=e.sample_id, x=x, label=label,
                      meta={"class_name": e.class_name, "path": str(e.path)})


def kinetics400(**kw) -> Kinetics400:
    return Kinetics400(**kw)
