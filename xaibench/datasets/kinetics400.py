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
* ``flat``: every video in one folder (``video_dir``) and a list file
  (``list_file``) of ``<file name> <label index>`` lines (``<youtube_id>.mp4 12``);
  label indices refer to ``classes_file`` (default: the canonical alphabetical
  400-class list shipped in ``xaibench/datasets/data/kinetics400_classes.txt``).
  ``root`` is not needed: relative ``list_file`` / ``video_dir`` are read from
  ``root`` when it is set (config or ``$XAIBENCH_KINETICS_ROOT``), else from the
  current folder; ``video_dir`` defaults to ``root``, else the list file's folder;
* ``auto``: ``flat`` when ``list_file`` is given, else ``tree``.

Settings that belong to the other layout (``list_file`` / ``video_dir`` with
``layout: tree``, ``annotations`` / ``split_dir`` with the flat layout) are
refused when the config is checked, before anything is read.

Names from data files never become paths outside the data folder: a CSV
``youtube_id`` must be a YouTube id (letters, digits, ``-``, ``_``), a label
one folder name (no ``/``, ``\\``, ``.`` or ``..``), and a list-file entry a
relative path without ``..``; anything else is a :class:`~xaibench.errors.UserError`
naming the file and the line.

Clip sampling (``sampling``)
----------------------------
With N decoded frames and T frames wanted:

* ``first``: frames 0 .. T-1 (the STAA authors' evaluation: "first 8 decoded
  frames", docs/protocols.md "STAA");
* ``uniform``: frame ``floor((k + 0.5) N / T)`` for k = 0 .. T-1, i.e. the
  centre of each of T equal segments of the clip (TSN-style test sampling).

A clip with N < T is *too short* and skipped.  Memory is bounded by T frames,
never by the clip's length: ``uniform`` takes N from the container's declared
frame count, keeps only the T frames it needs while decoding, and decodes a
second time (again keeping T frames) when the count it decoded differs from the
declaration (or none was declared).  A stream that declares frames larger than
:data:`MAX_FRAME_PIXELS` is skipped before any frame is decoded.  Each frame is scaled so that its
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
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from ..config import param
from ..errors import UserError
from .base import Dataset, Sample, SkipSample
from .realdata import (SubsetConfig, digest, env_path, file_stat, model_preprocess, norm_label,
                       path_component_problem, read_class_list, relative_path_problem, resize_short_crop,
                       select_subset, skip, unnamed)

REQUIRED_COLUMNS = ("label", "youtube_id", "time_start", "time_end", "split")
OPTIONAL_COLUMNS = ("is_cc",)
SPLIT_ALIASES = {"train": ("train", "training"), "val": ("val", "validate", "validation", "valid"),
                 "test": ("test", "testing")}
VIDEO_EXTS = (".mp4", ".mkv", ".webm", ".avi")
ROOT_ENV = "XAIBENCH_KINETICS_ROOT"
ROOT_HELP = ("Point it at the Kinetics-400 folder (e.g. the output of the CVDF kinetics-dataset download scripts: "
             "<root>/<split>/<label>/<youtube_id>_<start>_<end>.mp4 with <root>/annotations/<split>.csv), "
             "or use the flat layout (dataset.list_file=... dataset.video_dir=...), see docs/real_data.md.")
#: a YouTube id as the official CSVs hold them (11 characters of [A-Za-z0-9_-]; any length accepted)
YOUTUBE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: the largest decoded frame (width x height) a clip may declare: 4096 x 4096
MAX_FRAME_PIXELS = 4096 * 4096


def canonical_split(split: str) -> str:
    s = str(split).strip().lower()
    for k, names in SPLIT_ALIASES.items():
        if s in names:
            return k
    raise UserError(f"unknown Kinetics split {split!r}; valid: train, val (or validate), test")


def _split_problem(value) -> Optional[str]:
    s = str(value).strip().lower()
    if any(s in names for names in SPLIT_ALIASES.values()):
        return None
    return "valid splits are train, val (or validate, validation), test"


@dataclass
class Kinetics400Config(SubsetConfig):
    root: Optional[str] = param(None, help="the Kinetics-400 folder (null: $XAIBENCH_KINETICS_ROOT, else the copy "
                                           "xaibench-fetch put in the data folder); optional for the flat layout")
    split: str = param("val", check=_split_problem, help="train | val | test: the CSV rows and split folder read")
    annotations: Optional[str] = param(None, help="tree layout: the annotation CSV (null: "
                                                  "<root>/annotations/<split>.csv or <root>/<split>.csv)")
    layout: str = param("auto", choices=("auto", "tree", "flat"),
                        help="tree: <split>/<label>/<id>_<start>_<end>.mp4 + CSV; flat: list_file; auto: flat "
                             "when list_file is set")
    list_file: Optional[str] = param(None, help="flat layout: '<video file> <label index>' lines (relative: "
                                                "to root when set, else the current folder)")
    video_dir: Optional[str] = param(None, help="flat layout: the folder of the videos (null: root, else the "
                                                "list file's folder)")
    split_dir: Optional[str] = param(None, help="tree layout: the split's folder (null: <root>/<split>)")
    classes_file: Optional[str] = param(None, help="the class names, one a line (null: the canonical 400 "
                                                   "Kinetics classes); flat label indices refer to it")
    sampling: str = param("uniform", choices=("uniform", "first"),
                          help="uniform: the centres of T equal segments; first: frames 0..T-1")
    frames: Optional[int] = param(None, range=(1, 256), help="frames per clip; null: the model's (an explicit "
                                                             "value must match the model)")
    size: Optional[int] = param(None, range=(8, 1024), help="centre-crop side; null: the model's input size")
    resize: Optional[int] = param(None, range=(8, 4096), help="short side before the centre crop; null: the "
                                                              "model's preprocessing (at least size)")
    interpolation: Optional[str] = param(None, choices=("bilinear", "bicubic"),
                                         help="resize filter; null: the model's preprocessing (bilinear)")
    classes: Optional[List[str]] = param(None, help="only these class names")
    only_present: bool = param(False, help="choose the subset among the clips that exist on disk")

    def effective_layout(self) -> str:
        return self.layout if self.layout != "auto" else ("flat" if self.list_file else "tree")

    def validate(self) -> None:
        layout = self.effective_layout()
        if layout == "flat" and not self.list_file:
            raise UserError("dataset.layout=flat needs dataset.list_file (the '<video file> <label index>' list); "
                            "or use layout=tree with the annotation CSV")
        if layout == "tree":
            given = [k for k in ("list_file", "video_dir") if getattr(self, k)]
            if given:
                raise UserError(f"dataset.{given[0]} belongs to the flat layout but dataset.layout=tree: remove "
                                f"dataset.{given[0]}, or set layout=flat (or auto) together with list_file")
        else:
            given = [k for k in ("annotations", "split_dir") if getattr(self, k)]
            if given:
                raise UserError(f"dataset.{given[0]} belongs to the tree layout but the flat layout is used "
                                f"(list_file={self.list_file}): remove dataset.{given[0]} or dataset.list_file")
        if self.size is not None and self.resize is not None and self.resize < self.size:
            raise UserError(f"dataset.resize={self.resize} is smaller than dataset.size={self.size}: the centre crop "
                            f"would not fit; use resize >= size (or null)")


@dataclass
class Entry:
    sample_id: str
    class_name: str
    path: Optional[Path]  # None when no candidate file exists
    tried: tuple = ()


def read_annotations(path: Path) -> List[dict]:
    """Rows of an official Kinetics annotation CSV, with a clear error for a wrong header, a cut or malformed
    row, and for a ``youtube_id`` or ``label`` that cannot be a file or folder name."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"Kinetics annotation file {path} does not exist")
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise UserError(
                f"{path} is not a Kinetics annotation CSV: its header is {','.join(header) or '(empty)'} but the "
                f"columns {', '.join(missing)} are missing; expected {','.join(REQUIRED_COLUMNS)} "
                f"(optionally {','.join(OPTIONAL_COLUMNS)}), as in the official kinetics400 train/validate/test CSVs"
            )
        rows = []
        for fields in reader:
            lineno = reader.line_num
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue
            if len(fields) != len(header):
                raise UserError(f"{path}:{lineno}: {len(fields)} fields where the header has {len(header)}; the file "
                                f"is cut or malformed (download it again)")
            row = {k: v.strip() for k, v in zip(header, fields)}
            try:
                row["time_start"] = int(float(row["time_start"]))
                row["time_end"] = int(float(row["time_end"]))
            except (ValueError, OverflowError):
                raise UserError(f"{path}:{lineno}: time_start/time_end must be numbers, got "
                                f"{row['time_start']!r}, {row['time_end']!r}") from None
            if not YOUTUBE_ID.fullmatch(row["youtube_id"]):
                raise UserError(f"{path}:{lineno}: youtube_id {row['youtube_id'][:80]!r} is not a YouTube id "
                                f"(letters, digits, '-' and '_'); it would not name a file inside the data folder")
            problem = path_component_problem(row["label"])
            if problem:
                raise UserError(f"{path}:{lineno}: label {problem}; a Kinetics label must be usable as one folder "
                                f"name")
            rows.append(row)
    return rows


def read_list_file(path: Path, class_names: Sequence[str]) -> List[tuple]:
    """``(relative file, class name)`` from ``<file> <label index>`` lines; a file that would lead out of
    the video folder (absolute, ``..``) is refused."""
    if not path.exists():
        raise UserError(f"Kinetics list file {path} does not exist")
    out = []
    for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(None, 1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise UserError(f"{path}:{lineno}: expected '<video file> <label index>', got {line!r}")
        problem = relative_path_problem(parts[0])
        if problem:
            raise UserError(f"{path}:{lineno}: {problem}; list files name videos inside dataset.video_dir")
        idx = int(parts[1])
        if not 0 <= idx < len(class_names):
            raise UserError(f"{path}:{lineno}: label index {idx} is outside the class list "
                            f"(0..{len(class_names) - 1})")
        out.append((parts[0], class_names[idx]))
    return out


def _user_path(value) -> Path:
    return Path(os.path.expanduser(str(value)))


class Kinetics400(Dataset):
    """Kinetics-400 clips; see the module docstring for layouts, sampling and labels.

    ``Kinetics400(cfg)`` with a :class:`Kinetics400Config`, or ``Kinetics400(root=..., frames=...)`` with its
    values (checked the same way); ``labels``: the model's label names (normally set by :meth:`bind`)."""

    Config = Kinetics400Config

    def __init__(self, cfg: Optional[Kinetics400Config] = None, *, labels: Optional[Sequence[str]] = None,
                 **values):
        if cfg is None:  # library use: keyword values (paths may be Path objects), checked like a config
            from ..config import build

            values = {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in values.items()}
            cfg = build(Kinetics400Config, values, where="dataset")
        elif values:
            raise TypeError("give a config or values, not both")
        self.cfg = cfg
        self.name = "kinetics400"
        self.layout = cfg.effective_layout()
        if self.layout == "flat":  # root only anchors relative paths
            given = cfg.root or os.environ.get(ROOT_ENV)
            self.root = _user_path(given) if given else None
        else:
            self.root = env_path(cfg.root, ROOT_ENV, "Kinetics-400 root folder", ROOT_HELP)
        if self.root is not None and not self.root.is_dir():
            raise UserError(f"Kinetics-400 root {self.root} is not a folder. {ROOT_HELP}")
        self.split = canonical_split(cfg.split)
        self.sampling = cfg.sampling
        self.label_mode = cfg.label_mode
        # frames / size / resize / interpolation: null = the model's (set by bind); explicit frames and size
        # must match the model
        self.frames_set, self.size_set = cfg.frames is not None, cfg.size is not None
        self.frames = cfg.frames if cfg.frames is not None else 8
        self.size = cfg.size if cfg.size is not None else 224
        self.resize = cfg.resize if cfg.resize is not None else self.size
        self.interpolation = cfg.interpolation or "bilinear"
        self.seed = int(cfg.seed)
        self.class_names = read_class_list(cfg.classes_file)
        self.annotations: Optional[Path] = None
        self.list_file: Optional[Path] = None
        self.video_dir: Optional[Path] = None
        entries = self._flat_entries(cfg.list_file, cfg.video_dir) if self.layout == "flat" else \
            self._tree_entries(cfg.annotations, cfg.split_dir)
        if cfg.classes:
            wanted = {norm_label(c) for c in cfg.classes}
            known = {norm_label(e.class_name) for e in entries}
            unknown = [c for c in cfg.classes if norm_label(c) not in known]
            if unknown:
                raise UserError(f"dataset.classes has names absent from the {self.split} annotations: {unknown}")
            entries = [e for e in entries if norm_label(e.class_name) in wanted]
        self.n_absent_total = sum(e.path is None for e in entries)
        if cfg.only_present:
            entries = [e for e in entries if e.path is not None]
        where = self.root if self.layout == "tree" else self.list_file
        if not entries:
            raise UserError(f"no Kinetics-400 {self.split} videos found in {where} ({self.layout} layout)"
                            + (" that exist on disk" if cfg.only_present else ""))
        idx = select_subset([e.sample_id for e in entries], [norm_label(e.class_name) for e in entries],
                            n_per_class=cfg.n_per_class, n_samples=cfg.n_samples, seed=self.seed)
        self.entries: List[Entry] = [entries[i] for i in idx]
        self.skipped = []
        self.labels = list(labels) if labels else list(self.class_names)
        self._label_index: Dict[str, int] = {}
        self._map_labels(self.labels, num_classes=len(self.labels) if labels else 400)

    # ------------------------------------------------------------ file lookup
    def _under_root(self, value) -> Path:
        """A user-given path: absolute, existing relative to the current folder, or relative to ``root``."""
        p = _user_path(value)
        if p.is_absolute() or p.exists() or self.root is None:
            return p
        return self.root / p

    def _split_folder(self, split_dir) -> Path:
        if split_dir:
            p = _user_path(split_dir)
            return p if p.is_absolute() else self.root / p
        for cand in SPLIT_ALIASES[self.split]:
            if (self.root / cand).is_dir():
                return self.root / cand
        return self.root / self.split

    def _find_annotations(self, annotations) -> Path:
        if annotations:
            return self._under_root(annotations)
        tried = []
        for folder in (self.root / "annotations", self.root, self.root / "kinetics400"):
            for s in SPLIT_ALIASES[self.split]:
                for stem in (s, f"kinetics400_{s}", f"kinetics_400_{s}"):
                    p = folder / f"{stem}.csv"
                    tried.append(str(p))
                    if p.exists():
                        return p
        raise UserError(f"no Kinetics-400 annotation CSV for split {self.split!r}: looked for {', '.join(tried[:6])}"
                        f" ...; give dataset.annotations=<path to {self.split}.csv>, or use the flat layout "
                        f"(dataset.list_file=...)")

    def _tree_entries(self, annotations, split_dir) -> List[Entry]:
        ann = self._find_annotations(annotations)
        self.annotations = ann
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
        for r in rows:  # youtube_id and label were checked by read_annotations: file and folder names
            stem = f"{r['youtube_id']}_{r['time_start']:06d}_{r['time_end']:06d}"
            cdir = class_dirs.get(norm_label(r["label"]), folder / r["label"])
            cands = [cdir / f"{stem}{ext}" for ext in VIDEO_EXTS] + [cdir / f"{r['youtube_id']}.mp4"]
            path = next((c for c in cands if c.exists()), None)
            entries.append(Entry(sample_id=stem, class_name=r["label"], path=path, tried=(str(cands[0]),)))
        return entries

    def _flat_entries(self, list_file, video_dir) -> List[Entry]:
        lf = self._under_root(list_file)
        if not lf.is_file():
            anchor = (f"relative paths are read from the current folder {Path.cwd()} or root {self.root}"
                      if self.root is not None else f"relative paths are read from the current folder {Path.cwd()}"
                      f" (no dataset.root / ${ROOT_ENV} is set)")
            raise UserError(f"Kinetics list file {lf} does not exist ({anchor}); give dataset.list_file as an "
                            f"absolute path")
        if video_dir:
            vdir = self._under_root(video_dir)
        else:
            vdir = self.root if self.root is not None else lf.parent
        if not vdir.is_dir():
            raise UserError(f"Kinetics video folder {vdir} (dataset.video_dir) is not a folder")
        self.list_file, self.video_dir = lf, vdir
        entries = []
        for rel, cname in read_list_file(lf, self.class_names):  # rel: relative, no '..' (checked)
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
        """Adopt the model's frame count, crop / resize sizes, interpolation and label names (the runner calls
        this once per (model, dataset) benchmark); explicit ``frames`` / ``size`` must match the model, an
        explicit ``resize`` / ``interpolation`` is kept."""
        pre = model_preprocess(adapter)
        for key, mine, set_ in (("frames", self.frames, self.frames_set), ("size", self.size, self.size_set)):
            if set_ and mine != pre[key]:
                raise UserError(f"dataset.{key}={mine} but model {adapter.name!r} takes {pre[key]}; remove "
                                f"dataset.{key} (null: the model's value) or choose a model that takes {mine}")
        self.frames, self.size = pre["frames"], pre["size"]
        if self.cfg.resize is not None:
            if self.cfg.resize < self.size:
                raise UserError(f"dataset.resize={self.cfg.resize} is smaller than the {self.size}-px input of model "
                                f"{adapter.name!r}: the centre crop would not fit; set dataset.resize >= {self.size} "
                                f"or null (the model's preprocessing)")
            self.resize = self.cfg.resize
        else:
            self.resize = max(pre["resize"], self.size)
        if self.cfg.interpolation is None and pre["interpolation"] in ("bilinear", "bicubic"):
            self.interpolation = pre["interpolation"]
        self._map_labels(pre["labels"] or [], pre["num_classes"])
        return self

    # ---------------------------------------------------------------- samples
    def __len__(self) -> int:
        return len(self.entries)

    def sample_id(self, i: int) -> str:
        if not 0 <= i < len(self.entries):
            raise IndexError(i)
        return self.entries[i].sample_id

    def fingerprint(self) -> dict:
        """What identifies the clips a run reads, without decoding any: the resolved root (tree) or video
        folder and list file (flat), the annotation file's size and time, the sample ids in order, and each
        selected clip's path, size (``files_sha256``) and modification time (``mtimes_sha256``).  A changed
        ``$XAIBENCH_KINETICS_ROOT``, a replaced or removed clip changes it."""
        ids = [e.sample_id for e in self.entries]
        base = self.video_dir if self.layout == "flat" else self.root
        files, mtimes, present = [], [], 0
        for e in self.entries:
            st = file_stat(e.path) if e.path is not None else None
            rel = os.path.relpath(e.path, base) if e.path is not None else "-"
            files.append(f"{e.sample_id}\t{rel}\t{st[0] if st else 'missing'}")
            mtimes.append(f"{e.sample_id}\t{st[1] if st else 'missing'}")
            present += st is not None
        fp = {"name": self.name, "n": len(ids), "sample_ids_sha256": digest(ids), "layout": self.layout,
              "split": self.split, "root": str(base.resolve()), "n_present": present,
              "files_sha256": digest(files), "mtimes_sha256": digest(mtimes)}
        listing = self.list_file if self.layout == "flat" else self.annotations
        fp["index_file"] = {"path": str(listing.resolve()), "stat": file_stat(listing)}
        return fp

    def describe(self) -> dict:
        out = {"name": self.name, "n": len(self), "split": self.split, "layout": self.layout,
               "sampling": self.sampling, "frames": self.frames, "size": self.size, "resize": self.resize,
               "interpolation": self.interpolation, "seed": self.seed,
               "absent_in_annotations": self.n_absent_total, "root": str(self.root) if self.root else None}
        if self.layout == "flat":
            out.update(list_file=str(self.list_file), video_dir=str(self.video_dir))
        return out

    def _skip(self, sample_id: str, reason: str) -> SkipSample:
        return skip(self, sample_id, reason)

    def frame_indices(self, n: int) -> np.ndarray:
        T = self.frames
        if self.sampling == "first":
            return np.arange(T)
        return np.floor((np.arange(T) + 0.5) * n / T).astype(int)

    def _scan(self, path: Path, sample_id: str, want, stop: Optional[int]):
        """Decode ``path`` once: ``(frames decoded, {index: (1, 3, size, size) frame}, declared frame count)``.

        ``want(declared)`` gives the frame indices to keep (from the stream's declared frame count, 0 when it
        declares none); each is converted and resized as soon as it is decoded, so at most that many frames
        are held, whatever the clip's length.  Decoding stops after ``stop`` frames."""
        import av

        kept: Dict[int, torch.Tensor] = {}
        n = declared = 0
        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise self._skip(sample_id, f"unreadable: no video stream in {path.name}")
                stream = container.streams.video[0]
                w, h = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
                if w * h > MAX_FRAME_PIXELS:
                    raise self._skip(sample_id, f"unreadable: {path.name} declares {w}x{h} frames, larger than the "
                                                f"{MAX_FRAME_PIXELS:,} pixels this loader decodes")
                declared = max(int(stream.frames or 0), 0)
                wanted = {int(k) for k in want(declared)}
                stream.thread_type = "AUTO"
                for frame in container.decode(stream):
                    if n in wanted:
                        if frame.width * frame.height > MAX_FRAME_PIXELS:
                            raise self._skip(sample_id, f"unreadable: frame {n} of {path.name} is {frame.width}x"
                                                        f"{frame.height}, larger than {MAX_FRAME_PIXELS:,} pixels")
                        arr = frame.to_ndarray(format="rgb24")  # (H, W, 3) uint8
                        x = torch.from_numpy(arr).permute(2, 0, 1)[None].float().div_(255.0)
                        kept[n] = resize_short_crop(x, self.resize, self.size, self.interpolation)
                    n += 1
                    if stop is not None and n >= stop:
                        break
        except SkipSample:
            raise
        except UserError as e:  # the crop does not fit this clip's frames
            raise self._skip(sample_id, f"unreadable: {e}") from None
        except (av.FFmpegError, OSError, ValueError, EOFError) as e:
            raise self._skip(sample_id, f"unreadable: {type(e).__name__}: {e}") from None
        return n, kept, declared

    def decode(self, path: Path, sample_id: str) -> torch.Tensor:
        """(T, 3, size, size) pixels of one clip, or :class:`SkipSample` (memory: T frames, module docstring)."""
        T = self.frames
        if self.sampling == "first":
            n, kept, _ = self._scan(path, sample_id, lambda declared: range(T), stop=T)
        else:
            n, kept, declared = self._scan(path, sample_id,
                                           lambda d: self.frame_indices(d) if d >= T else (), stop=None)
            if n >= T and n != declared:  # the declaration was wrong or absent: a second pass with the true N
                n2, kept, _ = self._scan(path, sample_id, lambda d: self.frame_indices(n), stop=None)
                if n2 != n:
                    raise self._skip(sample_id, f"unreadable: decodes to {n} frames, then to {n2}")
        if n < T:
            raise self._skip(sample_id, f"too short: {n} decodable frame(s), {T} needed")
        return torch.cat([kept[int(k)] for k in self.frame_indices(n)]).contiguous()

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


def kinetics400(cfg: Kinetics400Config) -> Kinetics400:
    """The registry's factory: ``DATASETS.create("kinetics400", root=..., ...)``."""
    return Kinetics400(cfg)


kinetics400.Config = Kinetics400Config
