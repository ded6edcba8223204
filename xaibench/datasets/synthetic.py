"""Synthetic spatio-temporal benchmarks with known ground truth.

Each clip (T frames of S x S RGB pixels; images are the T = 1 case) shows

* a noisy grey background;
* 1 to ``max_distractors`` *distractor* squares in every frame, each with a
  random colour and one of three class-free patterns (solid, hollow frame,
  centre dot), drifting by at most one grid cell per frame;
* one *evidence* square of ``evidence_size`` pixels at a random grid-aligned
  position, visible only in a contiguous run of frames (length drawn from
  ``evidence_frames``, start drawn uniformly).  Its pattern is the class:
  0 horizontal stripes, 1 vertical stripes, 2 checkerboard, 3 diagonal stripes,
  4 plus sign, 5 concentric square; its colour is random and class-free.

Ground truth: ``mask`` (T, H, W) is the evidence square in the evidence frames;
``frames`` (T,) marks the evidence frames.

Why no model can beat chance without looking at the evidence
-------------------------------------------------------------
The scene (background, distractors, evidence position, timing and colour) is
drawn from a random stream that never sees the label; the label only chooses
which pattern is painted *inside* the evidence square, whose shape and size are
the same for every class.  Hence, for a fixed scene, clips of different classes
are identical outside ``mask`` (``tests/test_synthetic.py`` checks this
pixel-exactly), so the pixels outside the mask are statistically independent of
the label and any classifier that does not read pixels inside the mask has
exactly chance accuracy.  The test suite also checks it empirically: a
classifier on blanked clips stays at chance, the same classifier on the
evidence alone does not.

Determinism: sample ``i`` of split ``s`` is generated from
``numpy.random.default_rng([seed, split_id(s), i])``; the splits use disjoint
streams and nothing is stored on disk.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ..errors import UserError, check_range
from .base import Dataset, Sample

SPLITS = {"train": 0, "val": 1, "test": 2}
DEFAULT_SIZES = {"train": 20000, "val": 256, "test": 256}
CLASS_NAMES = ["horizontal", "vertical", "checker", "diagonal", "plus", "ring"]
PALETTE = np.array(
    [[0.9, 0.2, 0.2], [0.2, 0.8, 0.3], [0.25, 0.45, 0.95], [0.95, 0.85, 0.2], [0.85, 0.3, 0.85], [0.2, 0.85, 0.9]],
    dtype=np.float32,
)
DARK = 0.05


def class_pattern(label: int, s: int) -> np.ndarray:
    """(s, s) binary pattern of class ``label`` (period 4 px)."""
    y, x = np.mgrid[0:s, 0:s]
    if label == 0:
        p = (y // 2) % 2 == 0
    elif label == 1:
        p = (x // 2) % 2 == 0
    elif label == 2:
        p = ((y // 4) + (x // 4)) % 2 == 0
    elif label == 3:
        p = ((x + y) // 2) % 2 == 0
    elif label == 4:
        c = s // 2
        p = (np.abs(y - c + 0.5) < s / 6) | (np.abs(x - c + 0.5) < s / 6)
    elif label == 5:
        d = np.maximum(np.abs(y - (s - 1) / 2), np.abs(x - (s - 1) / 2))
        p = (np.floor(d) % 4) < 2
    else:
        raise ValueError(label)
    return p.astype(np.float32)


def distractor_pattern(kind: int, s: int) -> np.ndarray:
    y, x = np.mgrid[0:s, 0:s]
    if kind == 0:  # solid
        p = np.ones((s, s), bool)
    elif kind == 1:  # hollow frame
        p = (y < 2) | (x < 2) | (y >= s - 2) | (x >= s - 2)
    else:  # centre dot
        c0, c1 = s // 4, s - s // 4
        p = (y >= c0) & (y < c1) & (x >= c0) & (x < c1)
    return p.astype(np.float32)


class SyntheticClips(Dataset):
    """Synthetic video (``frames`` > 1) or image (``frames`` = 1) benchmark."""

    has_mask = True
    has_frames = True

    def __init__(
        self,
        split: str = "test",
        n_samples: Optional[int] = None,
        frames: int = 8,
        size: int = 64,
        num_classes: int = 4,
        seed: int = 0,
        evidence_size: int = 16,
        grid: int = 8,
        evidence_frames=(2, 4),
        max_distractors: int = 3,
        noise: float = 0.03,
        name: str = "synthetic_video",
    ):
        if split not in SPLITS:
            raise UserError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
        self.frames = check_range("dataset.frames", frames, 1, 32, integer=True)
        if name.endswith("video") and self.frames < 4:
            raise UserError(f"dataset.frames={frames} is out of range for video: allowed range is [4, 32]")
        self.size = check_range("dataset.size", size, 32, 256, integer=True)
        self.num_classes = check_range("dataset.num_classes", num_classes, 2, len(CLASS_NAMES), integer=True)
        self.evidence_size = check_range("dataset.evidence_size", evidence_size, 8, self.size // 2, integer=True)
        self.grid = check_range("dataset.grid", grid, 1, self.evidence_size, integer=True)
        if self.size % self.grid:
            raise UserError(f"dataset.size={size} must be a multiple of dataset.grid={grid}")
        lo, hi = (int(evidence_frames[0]), int(evidence_frames[1]))
        if self.frames == 1:
            lo = hi = 1
        if not (1 <= lo <= hi <= self.frames):
            raise UserError(
                f"dataset.evidence_frames={list(evidence_frames)} must satisfy 1 <= min <= max <= frames={self.frames}"
            )
        self.evidence_frames = (lo, hi)
        self.max_distractors = check_range("dataset.max_distractors", max_distractors, 0, 6, integer=True)
        self.noise = check_range("dataset.noise", noise, 0.0, 0.2)
        self.seed = int(seed)
        self.split = split
        total = DEFAULT_SIZES[split]
        if n_samples is not None:
            n_samples = check_range("dataset.n_samples", n_samples, 1, 10**7, integer=True)
        self.n = total if n_samples is None else int(n_samples)
        self.name = name
        self.labels = CLASS_NAMES[: self.num_classes]
        self.skipped = []

    def __len__(self):
        return self.n

    def describe(self):
        return {
            "name": self.name, "split": self.split, "n": self.n, "frames": self.frames, "size": self.size,
            "num_classes": self.num_classes, "seed": self.seed,
        }

    # ----------------------------------------------------------------------
    def __getitem__(self, i: int) -> Sample:
        if not 0 <= i < self.n:
            raise IndexError(i)
        label = i % self.num_classes  # balanced classes
        x, mask, frames = self.render(i, label)
        return Sample(
            sample_id=f"{self.split}-{i:05d}",
            x=torch.from_numpy(x),
            label=label,
            mask=torch.from_numpy(mask),
            frames=torch.from_numpy(frames),
        )

    def scene_rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, SPLITS[self.split], i])

    def render(self, i: int, label: int, blank_evidence: bool = False):
        """Render sample ``i`` with the given label; the scene never depends on ``label``.

        ``blank_evidence`` paints background instead of the evidence pattern
        (used to show that the rest of the clip carries no label information).
        Returns x (T, 3, S, S) float32, mask (T, S, S) bool, frames (T,) bool.
        """
        rng = self.scene_rng(i)
        T, S, s, g = self.frames, self.size, self.evidence_size, self.grid
        cells = (S - s) // g + 1  # admissible top-left positions per axis
        bg = rng.uniform(0.15, 0.35)
        video = bg + self.noise * rng.standard_normal((T, S, S, 3)).astype(np.float32)

        # evidence placement and timing (label-free)
        ey, ex = (rng.integers(0, cells, size=2) * g).tolist()
        length = int(rng.integers(self.evidence_frames[0], self.evidence_frames[1] + 1))
        t0 = int(rng.integers(0, T - length + 1))
        ecol = PALETTE[rng.integers(0, len(PALETTE))]

        # distractors: start away from the evidence square, drift <= 1 cell per frame
        nd = int(rng.integers(1, self.max_distractors + 1)) if self.max_distractors else 0
        for _ in range(nd):
            kind = int(rng.integers(0, 3))
            col = PALETTE[rng.integers(0, len(PALETTE))]
            for _try in range(50):
                dy, dx = rng.integers(0, cells, size=2) * g
                if abs(dy - ey) >= s or abs(dx - ex) >= s:
                    break
            pat = distractor_pattern(kind, s)[..., None]
            steps = rng.integers(-1, 2, size=(T, 2)) * g
            for t in range(T):
                if t > 0:
                    dy = int(np.clip(dy + steps[t, 0], 0, S - s))
                    dx = int(np.clip(dx + steps[t, 1], 0, S - s))
                patch = pat * col + (1 - pat) * DARK
                video[t, dy : dy + s, dx : dx + s] = patch

        mask = np.zeros((T, S, S), bool)
        frames = np.zeros(T, bool)
        frames[t0 : t0 + length] = True
        mask[t0 : t0 + length, ey : ey + s, ex : ex + s] = True
        # the evidence is painted last (on top of any drifting distractor)
        if blank_evidence:
            fill = bg + self.noise * rng.standard_normal((length, s, s, 3)).astype(np.float32)
        else:
            pat = class_pattern(label, s)[..., None]
            fill = np.broadcast_to(pat * ecol + (1 - pat) * DARK, (length, s, s, 3))
        video[t0 : t0 + length, ey : ey + s, ex : ex + s] = fill
        x = np.clip(video, 0.0, 1.0).transpose(0, 3, 1, 2).astype(np.float32)
        return np.ascontiguousarray(x), mask, frames


def synthetic_video(**kw) -> SyntheticClips:
    kw.setdefault("frames", 8)
    return SyntheticClips(name="synthetic_video", **kw)


def synthetic_image(**kw) -> SyntheticClips:
    kw["frames"] = 1
    kw.pop("evidence_frames", None)
    return SyntheticClips(name="synthetic_image", evidence_frames=(1, 1), **kw)
