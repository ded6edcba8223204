"""Explanations kept for the report: the first N samples of every benchmark.

The runner asks :meth:`Gallery.want` for each sample and :meth:`Gallery.add`s
every method's explanation of the wanted ones; :func:`read_gallery` reads them
back for :mod:`xaibench.analysis.report`.  One HDF5 file (``gallery.h5``)::

    /<dataset>/<model>/<sample>/        attrs: dataset, model, sample_id, label
        x        (T, C, H, W) float16   pixels in [0, 1]
        mask     (T, H, W) bool         ground truth, if any
        frames   (T,) bool              ground-truth evidence frames, if any
        methods/<method>/               attrs: label, scale
            volume        (T, H, W) float16   attribution / scale
            frame_scores  (T,) float32

Group names come from data (sample ids, labels), so they are made file-name
safe (``xaibench.io.safe_name`` when that module exists, else the small
sanitiser below); the original names are kept as attributes, and a name whose
safe form is taken by another name gets a CRC-32 suffix.  Volumes are stored
as float16 divided by their largest finite magnitude (``scale``), so that
neither large nor tiny attributions over- or underflow (relative error at most
2**-11 of that magnitude); the reader multiplies back.
Adding an entry that exists (a resumed run) overwrites it.

:func:`export_strips` writes the paper figures of the stored samples: per sample the input strip and one
strip per method (frames side by side, the attribution over them, a colour bar;
:func:`xaibench.analysis.figures.strip_figure`) as PNG / PDF / SVG files.
"""

from __future__ import annotations

import re
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

try:  # the project's shared sanitiser, when present
    from ..io import safe_name as _safe_name
except ImportError:  # pragma: no cover - depends on the tree's state
    _safe_name = None


def _sanitise(name: str) -> str:
    """Letters, digits, ``.``, ``_`` and ``-`` only, no leading dot, at most 80 characters; a name that had to
    change gets the CRC-32 of the original appended, so different names stay different."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).lstrip(".")[:80]
    return s if s == str(name) and s else f"{s}-{zlib.crc32(str(name).encode()):08x}"


def safe_key(name: str) -> str:
    """A file- and HDF5-safe group name for ``name`` (no ``/``, no leading ``.``, never empty)."""
    s = _safe_name(str(name)) if _safe_name is not None else _sanitise(name)
    return _sanitise(s) if (not s or "/" in s or s.startswith(".")) else s


def _np(t) -> Optional[np.ndarray]:
    if t is None:
        return None
    if hasattr(t, "detach"):
        t = t.detach().cpu().numpy()
    return np.asarray(t)


class Gallery:
    """Writer of ``gallery.h5`` (see the module docstring); ``n_samples = 0`` writes nothing.

    The file is opened for each :meth:`add` and closed after it, so that between two adds it is complete on
    disk: a killed run leaves a readable gallery, and a report can read it while the run goes on.
    """

    def __init__(self, path, n_samples: int):
        self.path = Path(path)
        self.n_samples = int(n_samples)

    def want(self, dataset: str, model: str, index: int) -> bool:
        """Keep the sample at dataset position ``index``? (the first ``n_samples`` of every benchmark)"""
        return 0 <= int(index) < self.n_samples

    def _open(self):
        import h5py

        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return h5py.File(self.path, "a", track_order=True)
        except OSError as e:  # e.g. a file cut by a kill during a write: keep it aside, start a new one
            if not self.path.exists():
                raise
            bad = self.path.with_suffix(".h5.unreadable")
            self.path.replace(bad)
            warnings.warn(f"{self.path} could not be opened ({e}); moved it to {bad} and started a new gallery")
            return h5py.File(self.path, "a", track_order=True)

    @staticmethod
    def _child(group, name: str):
        """The subgroup for ``name``: its safe key, or key + CRC-32 when the key belongs to another name."""
        key = safe_key(name)
        if key in group and group[key].attrs.get("name") != str(name):
            key = f"{key}-{zlib.crc32(str(name).encode()):08x}"
        g = group[key] if key in group else group.create_group(key, track_order=True)
        g.attrs["name"] = str(name)
        return g

    def add(self, dataset: str, model: str, sample, method_label: str, explanation) -> None:
        """Store ``sample`` (``sample_id, x, mask, frames, label``; written once per sample) and
        ``explanation`` (``volume`` (T, H, W), ``frame_scores`` (T,)) under ``method_label``, replacing an
        existing entry of that label."""
        with self._open() as f:
            g = self._child(self._child(self._child(f, str(dataset)), str(model)), str(sample.sample_id))
            if "x" not in g:
                g.attrs.update(dataset=str(dataset), model=str(model), sample_id=str(sample.sample_id),
                               label=-1 if sample.label is None else int(sample.label))
                for k, v in (("x", _np(sample.x).astype(np.float16)), ("mask", _np(sample.mask)),
                             ("frames", _np(sample.frames))):
                    if v is not None:
                        v = v if k == "x" else v.astype(bool)
                        g.create_dataset(k, data=v, compression="gzip" if v.size > 64 else None)
            methods = g["methods"] if "methods" in g else g.create_group("methods", track_order=True)
            m = self._child(methods, str(method_label))
            vol = _np(explanation.volume).astype(np.float64)
            finite = np.abs(vol[np.isfinite(vol)])
            scale = float(finite.max()) if finite.size else 0.0
            for k in ("volume", "frame_scores"):
                if k in m:
                    del m[k]
            m.create_dataset("volume", data=(vol / scale if scale > 0 else vol).astype(np.float16),
                             compression="gzip")
            m.create_dataset("frame_scores", data=_np(explanation.frame_scores).astype(np.float32))
            m.attrs.update(label=str(method_label), scale=scale)

    def close(self) -> None:
        """Nothing to release (the file is closed after every add); kept so that callers may close a writer."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@dataclass
class GalleryItem:
    """One stored sample and its explanations (``methods``: label -> (volume (T, H, W), frame_scores (T,)))."""

    dataset: str
    model: str
    sample_id: str
    x: np.ndarray
    label: Optional[int] = None
    mask: Optional[np.ndarray] = None
    frames: Optional[np.ndarray] = None
    methods: Dict[str, tuple] = field(default_factory=dict)


def read_gallery(path) -> List[GalleryItem]:
    """Every sample of ``gallery.h5`` in the order written (``[]`` when the file does not exist)."""
    import h5py

    path = Path(path)
    if not path.exists():
        return []
    items = []
    with h5py.File(path, "r") as f:
        for dg in f.values():
            for mg in dg.values():
                for sg in mg.values():
                    if "x" not in sg:
                        continue
                    a = sg.attrs
                    methods = {}
                    for m in sg.get("methods", {}).values():
                        vol = m["volume"][()].astype(np.float32) * (float(m.attrs.get("scale", 1.0)) or 1.0)
                        methods[str(m.attrs.get("label", m.name.rsplit("/", 1)[-1]))] = (vol, m["frame_scores"][()])
                    label = int(a.get("label", -1))
                    items.append(GalleryItem(
                        dataset=str(a.get("dataset", "")), model=str(a.get("model", "")),
                        sample_id=str(a.get("sample_id", "")), x=sg["x"][()].astype(np.float32),
                        label=None if label < 0 else label,
                        mask=sg["mask"][()] if "mask" in sg else None,
                        frames=sg["frames"][()] if "frames" in sg else None, methods=methods))
    return items


def export_strips(items: List[GalleryItem], out_dir, formats=("png",), max_per_bench: Optional[int] = None,
                  caption: str = "") -> List[Path]:
    """Per stored sample, ``<out_dir>/<dataset>__<model>/<sample>/input.<fmt>`` and one
    ``<method label>.<fmt>`` per method (file-safe names, :func:`safe_key`), each a strip of the frames with
    the attribution and its colour bar (:func:`xaibench.analysis.figures.strip_figure`).  ``max_per_bench``:
    at most that many samples per (dataset, model); ``caption``: put before each title (a sweep's run).
    Returns the files written."""
    from .figures import save_strip, strip_figure

    out_dir, written, counts = Path(out_dir), [], {}
    for item in items:
        bench = (item.dataset, item.model)
        counts[bench] = counts.get(bench, 0) + 1
        if max_per_bench is not None and counts[bench] > max_per_bench:
            continue
        folder = out_dir / safe_key(f"{item.dataset}__{item.model}") / safe_key(item.sample_id)
        if caption:
            folder = folder / safe_key(caption)
        where = f"{item.dataset} · {item.model} · {item.sample_id}" + (f" · {caption}" if caption else "")
        fig = strip_figure(item.x, None, item.mask, item.frames, title=f"input · {where}")
        written += save_strip(fig, folder / "input", formats)
        for label, (vol, _scores) in item.methods.items():
            if vol.shape != (item.x.shape[0],) + tuple(item.x.shape[2:]):
                continue
            fig = strip_figure(item.x, vol, item.mask, item.frames, title=f"{label} · {where}")
            written += save_strip(fig, folder / safe_key(label), formats)
    return written
