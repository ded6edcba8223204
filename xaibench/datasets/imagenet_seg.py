"""ImageNet-segmentation (Guillaumin et al.), dataset ``imagenet_seg``.

The benchmark of Chefer et al. (CVPR 2021) and of the std-normalised
attribution paper: 4,276 ImageNet validation-style images with a foreground
mask, distributed as one MATLAB v7.3 file ``gtsegs_ijcv.mat`` (HDF5 with a
512-byte MATLAB userblock), read lazily with h5py (the file is opened once per
process and one record is read per item).

File layout (docs/protocols.md "ImageNet-segmentation"; MATLAB stores arrays column-major):

* ``/value/img``  (N, 1) object references; image i = ``f[f['/value/img'][i, 0]]``
  of shape (3, W, H), transposed (2, 1, 0) -> (H, W, 3) uint8;
* ``/value/gt``   (N, 1) references to 1x1 cells whose [0, 0] references the mask:
  ``f[f[f['/value/gt'][i, 0]][0, 0]]`` of shape (W, H), transposed -> (H, W) 0/1;
* ``/value/id``   (N, 1) references to UTF-16 char arrays (the image id; its
  ``nXXXXXXXX`` prefix is the WordNet synset).

Each item: ``x`` (1, 3, size, size) pixels in [0, 1] (bilinear, antialiased
resize of the whole image, no crop, as in Chefer et al.'s evaluation);
``mask`` (1, size, size) bool (nearest-neighbour resize of ``mask > 0``);
``label``: the model's class index of the synset when the model has ImageNet
labels (1000 classes, either named like the ImageNet class descriptions /
synsets or unnamed in the canonical order), else ``None``; ``meta`` has
``synset`` and ``image_id``.

A truncated or corrupt file gives a :class:`~xaibench.errors.UserError` when the
dataset is created; a record that cannot be read later is skipped with
:class:`~xaibench.datasets.base.SkipSample`.
"""

from __future__ import annotations

import os
import re
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from ..errors import UserError, check_range
from .base import Dataset, Sample
from .realdata import env_path, model_preprocess, norm_label, resize_square, select_subset, skip, unnamed

PATH_ENV = "XAIBENCH_IMAGENET_SEG"
PATH_HELP = ("gtsegs_ijcv.mat is linked from Chefer et al.'s Transformer-Explainability README "
             "(http://calvin-vision.net/bigstuff/proj-imagenet/data/gtsegs_ijcv.mat); download it on a machine "
             "with internet, copy it here and set dataset.path or XAIBENCH_IMAGENET_SEG, see docs/real_data.md.")
_SYNSET = re.compile(r"n\d{8}")


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


class ImageNetSeg(Dataset):
    """ImageNet-segmentation images with foreground masks (see the module docstring)."""

    has_mask = True
    frames = 1

    def __init__(
        self,
        path: Optional[str] = None,
        size: Optional[int] = None,
        n_samples: Optional[int] = None,
        n_per_class: Optional[int] = None,
        seed: int = 0,
        labels: Optional[Sequence[str]] = None,
        num_classes: Optional[int] = None,
        label_mode: str = "map",
        name: str = "imagenet_seg",
    ):
        self.name = name
        self.path = env_path(path, PATH_ENV, "ImageNet-segmentation file (gtsegs_ijcv.mat)", PATH_HELP)
        if self.path.is_dir():
            if not (self.path / "gtsegs_ijcv.mat").is_file():
                raise UserError(f"ImageNet-segmentation path {self.path} is a folder without gtsegs_ijcv.mat in it; "
                                f"give the file itself (dataset.path=.../gtsegs_ijcv.mat). {PATH_HELP}")
            self.path = self.path / "gtsegs_ijcv.mat"
        if not self.path.is_file():
            raise UserError(f"ImageNet-segmentation file {self.path} does not exist. {PATH_HELP}")
        # size: null = the model's input size (set by bind); an explicit value must match the model
        self.size_set = size is not None
        self.size = check_range("dataset.size", size if size is not None else 224, 8, 1024, integer=True)
        if label_mode not in ("map", "none"):
            raise UserError(f"dataset.label_mode={label_mode!r} is not valid; use 'map' or 'none'")
        self.label_mode = label_mode
        self.seed = int(seed)
        self._h5 = None
        self._pid = None
        f = self._file()
        try:
            self.total = int(f["/value/img"].shape[0])
            if f["/value/gt"].shape[0] != self.total:
                raise UserError(f"{self.path}: /value/img has {self.total} entries but /value/gt has "
                                f"{f['/value/gt'].shape[0]}; the file is corrupt. {PATH_HELP}")
            has_ids = "id" in f["/value"]
            keys = [f"{i:05d}" for i in range(self.total)]
            classes = [""] * self.total
            if n_per_class is not None:
                if not has_ids:
                    raise UserError(f"{self.path} has no /value/id, so n_per_class cannot group by synset; "
                                    f"use n_samples")
                classes = [self._synset(self._read_id(i)) or "" for i in range(self.total)]
        except KeyError as e:
            raise UserError(f"{self.path} does not have the gtsegs_ijcv.mat layout (/value/img, /value/gt, "
                            f"/value/id): {e}. {PATH_HELP}") from None
        self.indices: List[int] = select_subset(keys, classes, n_per_class=n_per_class, n_samples=n_samples,
                                                seed=self.seed)
        self.has_ids = has_ids
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
        return self._h5

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_h5"] = None
        state["_pid"] = None
        return state

    def close(self):
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None

    def _read_id(self, i: int) -> str:
        f = self._file()
        arr = np.asarray(f[f["/value/id"][i, 0]]).reshape(-1)
        if arr.dtype.kind in "ui":
            return arr.astype(np.uint16).tobytes().decode("utf-16-le").rstrip("\x00")
        return "".join(chr(int(c)) for c in arr)

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

    def describe(self) -> dict:
        return {"name": self.name, "n": len(self), "total": self.total, "size": self.size, "seed": self.seed,
                "path": str(self.path), "labels": "imagenet" if self._synset_index else "none"}

    def read_raw(self, i: int):
        """Record ``i`` of the file: image (H, W, 3) uint8, mask (H, W) uint8, image id."""
        f = self._file()
        img = np.asarray(f[f["/value/img"][i, 0]])
        img = img.T if img.ndim == 2 else img.transpose(2, 1, 0)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        cell = f[f["/value/gt"][i, 0]]
        mask = np.asarray(f[cell[0, 0]]).T
        image_id = self._read_id(i) if self.has_ids else ""
        return img, mask, image_id

    def __getitem__(self, k: int) -> Sample:
        if not 0 <= k < len(self.indices):
            raise IndexError(k)
        i = self.indices[k]
        sid = f"gtsegs-{i:05d}"
        try:
            img, mask, image_id = self.read_raw(i)
        except UserError:
            raise
        except (OSError, KeyError, ValueError, TypeError, UnicodeDecodeError) as e:
            raise skip(self, sid, f"unreadable record {i}: {type(e).__name__}: {e}") from None
        if img.shape[:2] != mask.shape or img.shape[2] != 3:
            raise skip(self, sid, f"image {img.shape} and mask {mask.shape} of record {i} do not match")
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float().div_(255.0)
        x = resize_square(x, self.size)
        m = torch.from_numpy(np.ascontiguousarray(mask > 0)).float()[None, None]
        m = resize_square(m, self.size, mode="nearest")[0] > 0.5  # (1, S, S)
        synset = self._synset(image_id)
        label = self._synset_index.get(synset) if (self._synset_index and synset) else None
        return Sample(sample_id=sid, x=x.contiguous(), label=label, mask=m,
                      meta={"synset": synset, "image_id": image_id, "index": i})


def imagenet_seg(**kw) -> ImageNetSeg:
    return ImageNetSeg(**kw)
