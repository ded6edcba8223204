"""What every dataset yields."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import torch


@dataclass
class Sample:
    """One clip or image.

    * ``x``: (T, C, H, W) float pixels in [0, 1] (T = 1 for images);
    * ``label``: class index in the dataset's label space (``None`` if unknown);
    * ``mask``: (T, H, W) bool spatial(-temporal) ground truth, if any;
    * ``frames``: (T,) bool ground-truth evidence frames, if any.
    """

    sample_id: str
    x: torch.Tensor
    label: Optional[int] = None
    mask: Optional[torch.Tensor] = None
    frames: Optional[torch.Tensor] = None
    meta: dict = field(default_factory=dict)


class Dataset:
    """Indexable, sized collection of :class:`Sample`; ``labels`` names the classes."""

    name: str = ""
    labels: List[str] = []
    #: which ground truth the samples carry (controls and localisation metrics need it)
    has_mask: bool = False
    has_frames: bool = False
    #: samples the loader could not produce: list of (sample_id, reason)
    skipped: List[tuple]

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, i: int) -> Sample:
        raise NotImplementedError

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def describe(self) -> dict:
        return {"name": self.name, "n": len(self)}

    def sample_id(self, i: int) -> str:
        """The id of sample ``i`` without loading it (finished work is keyed by it, never by the index).
        Datasets override this when reading a sample is expensive."""
        return self[i].sample_id

    def fingerprint(self) -> dict:
        """What identifies the data a run used, for resume / merge / gate checks: at least the sample ids in
        order; real-data loaders add what can change a sample's pixels (root, file sizes)."""
        import hashlib

        ids = [self.sample_id(i) for i in range(len(self))]
        return {"name": self.name, "n": len(ids), "sample_ids_sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest()}


class SkipSample(Exception):
    """Raised by a dataset's ``__getitem__`` when one sample cannot be produced
    (missing, unreadable or too short video ...).  The message is the reason; the
    harness records it in the results and provenance and goes on."""
