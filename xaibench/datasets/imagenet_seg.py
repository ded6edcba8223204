"""ImageNet-segmentation (Guillaumin et al.), dataset ``imagenet_seg``.

The benchmark of Chefer et al. (CVPR 2021) and of the std-normalised
attribution paper: 4,276 ImageNet validation-style images with a foreground
mask, distributed as one MATLAB v7.3 file ``gtsegs_ijcv.mat`` (HDF5 with a
512-byte MATLAB userblock), read lazily with h5py (the file is opened once per
process and one record is read per item).

File layout (docs/protocols.md "ImageNet-segmentation"; MATLAB stores arrays column-major):

* ``/value/img``  (N, 1) object references; image i = ``f[f['/value/img'][i, 0]]``
  of shape (3, W, H), transposed (2, 1, 0) -> (H, W, 3); a grey (W, H) image is
  repeated to 3 channels;
* ``/value/gt``   (N, 1) references to 1x1 cells whose [0, 0] references the mask:
  ``f[f[f['/value/gt'][i, 0]][0, 0]]`` of shape (W, H), transposed -> (H, W);
* ``/value/id``   (N, 1) references to UTF-16 char arrays (the image id; its
  ``nXXXXXXXX`` prefix is the WordNet synset).

Each item: ``x`` (1, 3, size, size) pixels in [0, 1] (bilinear, antialiased
resize of the whole image, no crop, as in Chefer et al.'s evaluation);
``mask`` (1, size, size) bool (nearest-neighbour resize of ``mask > 0``);
``label``: the model's class index of the synset when the model has ImageNet
labels (1000 classes, either named like the ImageNet class descriptions /
synsets or unnamed in the canonical order), else ``None``; ``meta`` has
``synset`` and ``image_id``.

Reading a file that may be damaged or crafted (:class:`GtsegsFile`)
-----------------------------------------------------------------
Nothing is allocated from a size a file declares before that size is checked:

* the record count N must be at most :data:`MAX_RECORDS` and fit the file: every record needs an image and a
  mask object, so N <= file size / :data:`MIN_RECORD_BYTES`;
* every image and mask: a 2-D (W, H) or 3-D (3, W, H) array, each side at most :data:`MAX_SIDE` pixels, at most
  :data:`MAX_PIXELS` pixels and :data:`MAX_RECORD_BYTES` bytes in all, whose stored bytes exist in the file
  (no size declared over data that was never written) and can decompress to the declared size (deflate
  expands at most :data:`MAX_EXPANSION` times);
* the mask has the image's height and width; an id is a char array of at most :data:`MAX_ID_CHARS` characters.

Pixel values (the rule, also in docs/real_data.md): an image is either **integer** with every value in
0..255 (``uint8`` as MATLAB writes them; other integer types holding 8-bit levels are read the same way),
divided by 255, or **floating point** with every value in [0, 1], used as it is (never divided by 255 again).
Anything else -- a float image outside [0, 1] or with NaN / inf, a negative or > 255 integer, a complex,
boolean, string or compound array -- is a :class:`~xaibench.errors.UserError` naming the file and the record.
A mask is any real numeric array without NaN and negative values; its foreground is ``mask > 0``.

The structure of the selected records (shapes, types, stored sizes) is checked when the dataset is created,
before any work; pixel values when a record is read.  A record whose stored bytes cannot be read back (a
damaged compressed chunk) is skipped with :class:`~xaibench.datasets.base.SkipSample`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from ..config import param
from ..errors import UserError
from .base import Dataset, Sample
from .realdata import (SubsetConfig, digest, env_path, file_stat, model_preprocess, norm_label, resize_square,
                       select_subset, skip, unnamed)

PATH_ENV = "XAIBENCH_IMAGENET_SEG"
PATH_HELP = ("gtsegs_ijcv.mat is linked from Chefer et al.'s Transformer-Explainability README "
             "(http://calvin-vision.net/bigstuff/proj-imagenet/data/gtsegs_ijcv.mat); download it on a machine "
             "with internet, copy it here and set dataset.path or XAIBENCH_IMAGENET_SEG, see docs/real_data.md.")
_SYNSET = re.compile(r"n\d{8}")

#: bounds of what a gtsegs_ijcv.mat file may declare (the published file: 4,276 records of about 500 x 375 px)
MAX_RECORDS = 1_000_000
MIN_RECORD_BYTES = 64          # an image and a mask object at least (HDF5 object headers alone are larger)
MAX_SIDE = 20_000
MAX_PIXELS = 25_000_000        # per image or mask (H x W), e.g. 5000 x 5000
MAX_RECORD_BYTES = 256 << 20   # bytes of one image (or mask) as declared
MAX_EXPANSION = 1100           # deflate expands at most ~1032 times (zlib); any stored array within this ratio
MAX_ID_CHARS = 1024


@dataclass
class ImageNetSegConfig(SubsetConfig):
    path: Optional[str] = param(None, help="gtsegs_ijcv.mat or its folder (null: $XAIBENCH_IMAGENET_SEG, else "
                                           "the copy xaibench-fetch put in the data folder)")
    size: Optional[int] = param(None, range=(8, 1024),
                                help="image side after the resize (no crop); null: the model's input size")


def _imagenet_info():
    from timm.data import ImageNetInfo

    return ImageNetInfo()


def imagenet_label_index(labels: Optional[Sequence[str]], num_classes: Optional[int]) -> Optional[Dict[str, int]]:
    """synset -> the model's class index, or ``None`` when the model has no ImageNet labels.

    A model has ImageNet labels when it has 1000 outputs and its label names are
    unnamed (canonical order) or match the ImageNet-1k synsets or class
    descriptions (``"tench, Tinca tinca"``) for at least 95 % of the classes.
    """
    info = _imagenet_info()
    synsets = info.label_names()
    n = num_classes if num_classes is not None else (len(labels) if labels else None)
    if n != len(synsets):
        return None
    if unnamed(labels):
        return {s: i for i, s in enumerate(synsets)}
    index = {}
    for i, lab in enumerate(labels):
        index.setdefault(norm_label(lab), i)
    out = {}
    for s in synsets:
        for key in (s, info.label_name_to_description(s)):
            j = index.get(norm_label(key))
            if j is not None:
                out[s] = j
                break
    return out if len(out) >= 0.95 * len(synsets) else None


# ------------------------------------------------------------------------------ checked file access
class GtsegsFile:
    """Checked access to the records of an open ``gtsegs_ijcv.mat`` (module docstring: the bounds and the
    pixel rule).  Every method raises :class:`UserError` naming the file and the record for a declaration it
    refuses; h5py's own read errors (damaged bytes) pass through as ``OSError``."""

    def __init__(self, f, path: Path, help: str = PATH_HELP):
        import h5py

        self.f, self.path, self._h5py, self.help = f, Path(path), h5py, help
        value = f.get("/value")
        if not isinstance(value, h5py.Group) or "img" not in value or "gt" not in value:
            raise self.error("does not have the gtsegs_ijcv.mat layout (/value/img, /value/gt, /value/id)")
        img, gt = value["img"], value["gt"]
        for name, d in (("img", img), ("gt", gt)):
            if not isinstance(d, h5py.Dataset) or h5py.check_ref_dtype(d.dtype) is None or d.ndim != 2 \
                    or d.shape[1] != 1:
                raise self.error(f"/value/{name} is not an (N, 1) array of object references; the file does not "
                                 f"have the gtsegs_ijcv.mat layout")
        n = int(img.shape[0])
        size = os.path.getsize(self.path)
        if n > MAX_RECORDS or n * MIN_RECORD_BYTES > size:
            raise self.error(f"/value/img declares {n:,} records, which a file of {size:,} bytes cannot hold "
                             f"(each record needs an image and a mask; at most {MAX_RECORDS:,} records are read): "
                             f"the file is corrupt or not a gtsegs_ijcv.mat")
        if n == 0:
            raise self.error("/value/img holds no records")
        if int(gt.shape[0]) != n:
            raise self.error(f"/value/img has {n} records but /value/gt has {gt.shape[0]}; the file is corrupt")
        ids = value.get("id")
        if ids is not None and (not isinstance(ids, h5py.Dataset) or h5py.check_ref_dtype(ids.dtype) is None
                                or ids.shape != (n, 1)):
            raise self.error(f"/value/id is not an ({n}, 1) array of object references like /value/img")
        self.n, self.img, self.gt, self.ids, self.file_size = n, img, gt, ids, size
        # the (N, 1) reference arrays, read once (8 bytes a record; N is bounded above)
        self._refs = {"img": img[:, 0], "gt": gt[:, 0], "id": ids[:, 0] if ids is not None else None}

    # ------------------------------------------------------------------ messages
    def error(self, msg: str, i: Optional[int] = None) -> UserError:
        """The error for the file (``i`` None: with where to get a good copy) or for its record ``i``."""
        if i is None:
            return UserError(f"ImageNet-segmentation file {self.path}: {msg}." + (f" {self.help}" if self.help else ""))
        return UserError(f"ImageNet-segmentation file {self.path}, record {i} (sample gtsegs-{i:05d}): {msg}")

    # ------------------------------------------------------------------ structure
    def _deref(self, ref, i: int, what: str):
        try:
            if not ref:
                raise ValueError("null reference")
            obj = self.f[ref]
        except (ValueError, KeyError, TypeError) as e:
            raise self.error(f"its {what} reference points at nothing ({e})", i) from None
        return obj

    def _array(self, ref, i: int, what: str):
        obj = self._deref(ref, i, what)
        if not isinstance(obj, self._h5py.Dataset):
            raise self.error(f"its {what} reference points at a {type(obj).__name__}, not an array", i)
        return obj

    def _check_stored(self, d, i: int, what: str) -> None:
        """Declared shape within the bounds, and bytes stored in the file that can hold it."""
        shape = tuple(int(s) for s in d.shape)
        raw = int(np.prod(shape, dtype=np.float64)) * int(d.dtype.itemsize) if shape else 0
        if any(s > MAX_SIDE for s in shape) or (len(shape) >= 2 and shape[-1] * shape[-2] > MAX_PIXELS) \
                or raw > MAX_RECORD_BYTES:
            raise self.error(f"its {what} declares shape {'x'.join(map(str, shape))} of {d.dtype} ({raw:,} bytes), "
                             f"beyond the bounds of this reader ({MAX_SIDE} px per side, {MAX_PIXELS:,} pixels, "
                             f"{MAX_RECORD_BYTES >> 20} MiB)", i)
        if raw == 0:
            raise self.error(f"its {what} is empty (shape {shape})", i)
        stored = int(d.id.get_storage_size())
        filters = d.id.get_create_plist().get_nfilters()
        if stored == 0 or stored > self.file_size or (not filters and stored < raw) \
                or raw > MAX_EXPANSION * stored + 4096:
            raise self.error(f"its {what} declares {raw:,} bytes ({'x'.join(map(str, shape))} {d.dtype}) but "
                             f"{stored:,} bytes are stored{' compressed' if filters else ''}: the data was never "
                             f"written or the declaration is forged", i)

    def image(self, i: int):
        """The checked (not yet read) image array of record ``i``."""
        d = self._array(self._refs["img"][i], i, "image")
        kind = d.dtype.kind
        if kind not in "uif" or d.dtype.fields is not None or d.dtype.subdtype is not None:
            raise self.error(f"its image has type {d.dtype} ({_kind_name(d.dtype)}); images must be 8-bit integer "
                             f"levels (uint8) or floats in [0, 1]", i)
        if not (d.ndim == 2 or (d.ndim == 3 and d.shape[0] == 3)):
            raise self.error(f"its image has shape {d.shape}; expected (3, W, H) (MATLAB's H x W x 3, stored "
                             f"column-major) or (W, H) for a grey image", i)
        self._check_stored(d, i, "image")
        return d

    def mask(self, i: int, image_shape=None):
        """The checked (not yet read) mask array of record ``i`` (``image_shape``: its image's (W, H))."""
        cell = self._array(self._refs["gt"][i], i, "mask cell")
        if self._h5py.check_ref_dtype(cell.dtype) is None or cell.ndim != 2 or cell.shape[0] < 1 \
                or cell.shape[1] < 1:
            raise self.error(f"/value/gt[{i}] should reference a 1x1 cell holding a reference to the mask; it "
                             f"references a {cell.dtype} array of shape {cell.shape}", i)
        d = self._array(cell[0, 0], i, "mask")
        if d.dtype.kind not in "buif" or d.dtype.fields is not None or d.dtype.subdtype is not None:
            raise self.error(f"its mask has type {d.dtype} ({_kind_name(d.dtype)}); masks must be numeric", i)
        if d.ndim != 2:
            raise self.error(f"its mask has shape {d.shape}; expected (W, H)", i)
        if image_shape is not None and tuple(d.shape) != tuple(image_shape):
            raise self.error(f"its mask ({d.shape[1]} x {d.shape[0]}) and image ({image_shape[1]} x "
                             f"{image_shape[0]}) differ in size", i)
        self._check_stored(d, i, "mask")
        return d

    def check(self, i: int) -> None:
        """Check the declarations of record ``i``'s image and mask without reading pixels (its id is checked
        when it is read)."""
        img = self.image(i)
        self.mask(i, img.shape[-2:])

    def _id_array(self, i: int):
        d = self._array(self._refs["id"][i], i, "id")
        if d.dtype.kind not in "ui" or d.size > MAX_ID_CHARS:
            raise self.error(f"its id is a {d.dtype} array of {d.size} elements, not a MATLAB char array of at most "
                             f"{MAX_ID_CHARS} characters", i)
        return d

    # ------------------------------------------------------------------ values
    def read_id(self, i: int) -> str:
        if self.ids is None:
            return ""
        arr = np.asarray(self._id_array(i)[()]).reshape(-1)
        try:
            return arr.astype(np.uint16).tobytes().decode("utf-16-le").rstrip("\x00")
        except UnicodeDecodeError:
            raise self.error("its id is not valid UTF-16 text", i) from None

    def read(self, i: int):
        """Record ``i``: image (H, W, 3) in the file's dtype (values checked), mask (H, W), image id."""
        d = self.image(i)
        md = self.mask(i, d.shape[-2:])
        img = np.asarray(d[()])
        img = img.T if img.ndim == 2 else img.transpose(2, 1, 0)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        check_pixels(img, lambda m: self.error(m, i))
        mask = np.asarray(md[()]).T
        if mask.dtype.kind == "f" and not np.isfinite(mask).all():
            raise self.error("its mask holds NaN or infinite values", i)
        if mask.dtype.kind in "if" and mask.size and mask.min() < 0:
            raise self.error(f"its mask holds negative values (min {mask.min()}); masks are 0 (background) and "
                             f"positive (foreground)", i)
        return img, mask, self.read_id(i)


def _kind_name(dtype) -> str:
    return {"c": "complex", "b": "boolean", "S": "byte string", "U": "string", "O": "object / string / reference",
            "V": "compound or opaque", "M": "date", "m": "time delta"}.get(dtype.kind, dtype.kind)


def check_pixels(img: np.ndarray, error) -> None:
    """The pixel rule (module docstring): integer 0..255 or float in [0, 1]; ``error(msg)`` builds the
    exception to raise."""
    kind = img.dtype.kind
    if kind not in "uif":
        raise error(f"its image has type {img.dtype} ({_kind_name(img.dtype)}); images must be 8-bit integer "
                    f"levels (uint8) or floats in [0, 1]")
    if img.size == 0:
        raise error("its image is empty")
    if kind == "f":
        if not np.isfinite(img).all():
            raise error("its float image holds NaN or infinite values")
        lo, hi = float(img.min()), float(img.max())
        if lo < 0.0 or hi > 1.0:
            raise error(f"its float image has values in [{lo:g}, {hi:g}]; float images must be in [0, 1] (they are "
                        f"used as they are, not divided by 255): store 8-bit images as uint8")
    elif kind in "ui":
        lo, hi = int(img.min()), int(img.max())
        if lo < 0 or hi > 255:
            raise error(f"its {img.dtype} image has values in [{lo}, {hi}]; integer images must hold 8-bit levels "
                        f"0..255")


def to_unit(img: np.ndarray) -> torch.Tensor:
    """(H, W, 3) checked pixels -> (1, 3, H, W) float32 in [0, 1]: integers / 255, floats as they are."""
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None]
    if img.dtype.kind in "ui":
        return x.float().div_(255.0)
    return x.float()


# ------------------------------------------------------------------------------ the dataset
class ImageNetSeg(Dataset):
    """ImageNet-segmentation images with foreground masks (see the module docstring).

    ``ImageNetSeg(cfg)`` with an :class:`ImageNetSegConfig`, or ``ImageNetSeg(path=..., size=...)`` with its
    values (checked the same way); ``labels`` / ``num_classes``: the model's label names and head size
    (normally set by :meth:`bind`)."""

    Config = ImageNetSegConfig
    has_mask = True
    frames = 1

    def __init__(self, cfg: Optional[ImageNetSegConfig] = None, *, labels: Optional[Sequence[str]] = None,
                 num_classes: Optional[int] = None, **values):
        if cfg is None:  # library use: keyword values (paths may be Path objects), checked like a config
            from ..config import build

            values = {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in values.items()}
            cfg = build(ImageNetSegConfig, values, where="dataset")
        elif values:
            raise TypeError("give a config or values, not both")
        self.cfg = cfg
        self.name = "imagenet_seg"
        self.path = env_path(cfg.path, PATH_ENV, "ImageNet-segmentation file (gtsegs_ijcv.mat)", PATH_HELP)
        if self.path.is_dir():
            if not (self.path / "gtsegs_ijcv.mat").is_file():
                raise UserError(f"ImageNet-segmentation path {self.path} is a folder without gtsegs_ijcv.mat in it; "
                                f"give the file itself (dataset.path=.../gtsegs_ijcv.mat). {PATH_HELP}")
            self.path = self.path / "gtsegs_ijcv.mat"
        if not self.path.is_file():
            raise UserError(f"ImageNet-segmentation file {self.path} does not exist. {PATH_HELP}")
        # size: null = the model's input size (set by bind); an explicit value must match the model
        self.size_set = cfg.size is not None
        self.size = cfg.size if cfg.size is not None else 224
        self.label_mode = cfg.label_mode
        self.seed = int(cfg.seed)
        self._h5 = None
        self._pid = None
        self._gf = None
        gf = self._records()
        self.total = gf.n
        self.has_ids = gf.ids is not None
        keys = [f"{i:05d}" for i in range(self.total)]
        classes = [""] * self.total
        if cfg.n_per_class is not None:
            if not self.has_ids:
                raise UserError(f"{self.path} has no /value/id, so n_per_class cannot group by synset; "
                                f"use n_samples")
            classes = [self._synset(gf.read_id(i)) or "" for i in range(self.total)]
        self.indices: List[int] = select_subset(keys, classes, n_per_class=cfg.n_per_class,
                                                n_samples=cfg.n_samples, seed=self.seed)
        for i in self.indices:  # declarations only (shapes, types, stored sizes): before any work
            gf.check(i)
        self.skipped = []
        self.labels = list(labels) if labels else None
        self._synset_index = None
        self._set_labels(labels, num_classes)

    # -------------------------------------------------------------- h5py file
    def _file(self):
        """The open h5py file (reopened after a fork, e.g. in DataLoader workers)."""
        if self._h5 is None or self._pid != os.getpid():
            import h5py

            try:
                self._h5 = h5py.File(self.path, "r")
            except OSError as e:
                msg = str(e)
                kind = ("truncated (incomplete download?)" if "truncated" in msg
                        else "not a MATLAB v7.3 / HDF5 file" if "signature" in msg else "unreadable or corrupt")
                raise UserError(f"ImageNet-segmentation file {self.path} is {kind}: h5py says {msg!r}. "
                                f"{PATH_HELP}") from None
            self._pid = os.getpid()
            self._gf = None
        return self._h5

    def _records(self) -> GtsegsFile:
        f = self._file()
        if self._gf is None:
            self._gf = GtsegsFile(f, self.path)
        return self._gf

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_h5"] = None
        state["_pid"] = None
        state["_gf"] = None
        return state

    def close(self):
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None
            self._gf = None

    def _read_id(self, i: int) -> str:
        return self._records().read_id(i)

    @staticmethod
    def _synset(image_id: str) -> Optional[str]:
        m = _SYNSET.search(image_id or "")
        return m.group(0) if m else None

    # ----------------------------------------------------------------- labels
    def _set_labels(self, labels, num_classes):
        if self.label_mode == "none":
            self._synset_index = None
            return
        self._synset_index = imagenet_label_index(labels, num_classes)

    def bind(self, adapter) -> "ImageNetSeg":
        """Adopt the model's input size and label names (called by the runner)."""
        pre = model_preprocess(adapter)
        if self.size_set and self.size != pre["size"]:
            raise UserError(f"dataset.size={self.size} but model {adapter.name!r} takes {pre['size']}-px images; "
                            f"remove dataset.size (null: the model's size)")
        self.size = pre["size"]
        self.labels = pre["labels"]
        self._set_labels(pre["labels"], pre["num_classes"])
        return self

    # ---------------------------------------------------------------- samples
    def __len__(self) -> int:
        return len(self.indices)

    def sample_id(self, k: int) -> str:
        if not 0 <= k < len(self.indices):
            raise IndexError(k)
        return f"gtsegs-{self.indices[k]:05d}"

    def fingerprint(self) -> dict:
        """The file (resolved path, size, modification time), its record count, the selected sample ids and,
        when the file has them, the image ids of the selected records (a replaced file shows here even with
        the same size)."""
        ids = [self.sample_id(k) for k in range(len(self))]
        fp = {"name": self.name, "n": len(ids), "sample_ids_sha256": digest(ids),
              "path": str(self.path.resolve()), "file": file_stat(self.path), "records": self.total}
        if self.has_ids:
            gf = self._records()
            fp["image_ids_sha256"] = digest(gf.read_id(i) for i in self.indices)
        return fp

    def describe(self) -> dict:
        return {"name": self.name, "n": len(self), "total": self.total, "size": self.size, "seed": self.seed,
                "path": str(self.path), "labels": "imagenet" if self._synset_index else "none"}

    def read_raw(self, i: int):
        """Record ``i`` of the file: image (H, W, 3) as stored (uint8, or float in [0, 1]), mask (H, W), image id
        (declarations and values checked: :class:`GtsegsFile`)."""
        return self._records().read(i)

    def __getitem__(self, k: int) -> Sample:
        if not 0 <= k < len(self.indices):
            raise IndexError(k)
        i = self.indices[k]
        sid = f"gtsegs-{i:05d}"
        try:
            img, mask, image_id = self.read_raw(i)
        except UserError:
            raise
        except (OSError, KeyError, ValueError, TypeError, RuntimeError) as e:  # damaged bytes
            raise skip(self, sid, f"unreadable record {i} of {self.path.name}: {type(e).__name__}: {e}") from None
        x = resize_square(to_unit(img), self.size)
        m = torch.from_numpy(np.ascontiguousarray(mask > 0)).float()[None, None]
        m = resize_square(m, self.size, mode="nearest")[0] > 0.5  # (1, S, S)
        synset = self._synset(image_id)
        label = self._synset_index.get(synset) if (self._synset_index and synset) else None
        return Sample(sample_id=sid, x=x.contiguous(), label=label, mask=m,
                      meta={"synset": synset, "image_id": image_id, "index": i})


def imagenet_seg(cfg: ImageNetSegConfig) -> ImageNetSeg:
    """The registry's factory: ``DATASETS.create("imagenet_seg", path=..., ...)``."""
    return ImageNetSeg(cfg)


imagenet_seg.Config = ImageNetSegConfig
