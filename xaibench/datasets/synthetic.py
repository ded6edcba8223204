"""Synthetic spatio-temporal benchmarks with known ground truth, at several difficulty levels.

Each clip (T frames of S x S RGB pixels; images are the T = 1 case) shows

* a noisy grey background, at the harder levels overlaid with a static
  *texture* of random oriented gratings (stripes that are not evidence);
* up to ``max_distractors`` *distractor* squares in every frame, each with a
  random colour and one of three class-free patterns (solid, hollow frame,
  centre dot), drifting by at most one grid cell per frame;
* at the harder levels, ``decoys``: squares that look like evidence -- a class
  pattern, drawn at random and independently of the label, in the evidence's
  size, contrast and style -- present in every frame and drifting like the
  distractors; the evidence square alone carries a one-pixel bright outline,
  which is how a model tells it from the decoys;
* one *evidence* square of ``evidence_size`` pixels at a random position on a
  ``grid``-pixel lattice, visible only in a contiguous run of frames (length
  drawn from ``evidence_frames``, start drawn uniformly), moving by ``motion``
  grid cells per frame (bouncing off the borders) at the harder video levels.
  Its pattern is the class: 0 horizontal stripes, 1 vertical stripes, 2
  checkerboard, 3 diagonal stripes, 4 plus sign, 5 concentric square; its
  colour is random and class-free.  ``contrast`` < 1 blends it with what lies
  under it (fainter evidence); ``evidence_noise`` adds fresh noise to it in
  every frame, so that one frame may not decide the class and several must be
  combined.

``difficulty`` picks a preset of these knobs (:data:`LEVELS`, documented in
``docs/benchmarks.md``); any knob set explicitly overrides the preset.  Level
``easy`` renders exactly what the shipped models were trained on (pixel for
pixel, tested); ``segmentation`` puts the evidence in every frame over about half
of each frame, where pixel accuracy and mIoU are meaningful.

Ground truth: ``mask`` (T, H, W) is the evidence square (outline included) in
the evidence frames, at its position in each frame; ``frames`` (T,) marks the
evidence frames.

Why no model can beat chance without looking at the evidence
-------------------------------------------------------------
The scene (background, texture, distractors, decoys and their patterns,
evidence position, motion, timing, colour and noise) is drawn from random
streams that never see the label; the label only chooses which pattern is
painted *inside* the evidence square, whose shape, size and outline are the same
for every class.  Hence, for a fixed scene, clips of different classes are
identical outside ``mask`` (``tests/test_synthetic.py`` checks this
pixel-exactly at every level), so the pixels outside the mask are statistically
independent of the label and any classifier that does not read pixels inside
the mask has exactly chance accuracy.  The test suite also checks it
empirically: a classifier on blanked clips stays at chance, the same classifier
on the evidence alone does not.

Determinism: sample ``i`` of split ``s`` is generated from
``numpy.random.default_rng([seed, split_id(s), i])`` (the elements of the
``easy`` level, in the order the shipped models' data was drawn) and
``numpy.random.default_rng([seed, split_id(s), i, 1])`` (texture, decoys,
motion, evidence noise: never drawn at the ``easy`` level); the splits use
disjoint streams and nothing is stored on disk.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import List, Optional

import numpy as np
import torch

from ..config import ComponentConfig, param
from ..errors import UserError
from .base import Dataset, Sample

SPLITS = {"train": 0, "val": 1, "test": 2}
DEFAULT_SIZES = {"train": 20000, "val": 256, "test": 256}
CLASS_NAMES = ["horizontal", "vertical", "checker", "diagonal", "plus", "ring"]
PALETTE = np.array(
    [[0.9, 0.2, 0.2], [0.2, 0.8, 0.3], [0.25, 0.45, 0.95], [0.95, 0.85, 0.2], [0.85, 0.3, 0.85], [0.2, 0.85, 0.9]],
    dtype=np.float32,
)
DARK = 0.05
OUTLINE = 0.95  # the evidence's outline where decoys are present (grey, every class alike)

#: the difficulty presets; ``evidence_size`` / ``evidence_frames`` may depend on the frame size and count
LEVELS = {
    # what the shipped models were trained on: a 16 px square on the 8 px lattice, 2-4 of 8 frames
    "easy": dict(evidence_size=16, grid=8, contrast=1.0, max_distractors=3, decoys=0, texture=0.0, motion=0,
                 evidence_noise=0.0, evidence_frames=(2, 4)),
    # smaller (12 px, off the patch lattice), fainter evidence among two look-alike decoys on faint stripes;
    # it moves one 4 px cell per frame in video
    "medium": dict(evidence_size=12, grid=4, contrast=0.6, max_distractors=3, decoys=2, texture=0.06, motion=1,
                   evidence_noise=0.0, evidence_frames=(2, 4)),
    # 10 px, faint and noisy in each frame (several frames needed), three decoys, stronger texture
    "hard": dict(evidence_size=10, grid=4, contrast=0.45, max_distractors=4, decoys=3, texture=0.1, motion=1,
                 evidence_noise=0.06, evidence_frames=(3, 5)),
    # about half of every frame is evidence: pixel accuracy and mIoU are not won by an empty map
    "segmentation": dict(evidence_size=lambda size: max(4, (size * 11 // 16) // 4 * 4), grid=4, contrast=1.0,
                         max_distractors=0, decoys=0, texture=0.06, motion=0, evidence_noise=0.0,
                         evidence_frames=lambda frames: (frames, frames)),
}
KNOBS = ("evidence_size", "grid", "contrast", "max_distractors", "decoys", "texture", "motion", "evidence_noise",
         "evidence_frames")


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


def texture(rng: np.random.Generator, size: int, amplitude: float) -> np.ndarray:
    """(size, size) static texture: the mean of three random oriented gratings (period 4-16 px), times
    ``amplitude`` -- stripes like the class patterns', everywhere, so that stripes alone do not tell the class."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    out = np.zeros((size, size), np.float32)
    for _ in range(3):
        theta, period, phase = rng.uniform(0, np.pi), rng.uniform(4, 16), rng.uniform(0, 2 * np.pi)
        out += np.cos(2 * np.pi * (x * np.cos(theta) + y * np.sin(theta)) / period + phase).astype(np.float32)
    return (amplitude / 3.0 * out).astype(np.float32)


# ------------------------------------------------------------------ typed configs
def _frames_check(v) -> Optional[str]:
    if v is not None and (len(v) != 2 or v[0] > v[1]):
        return "give [min, max] with min <= max (evidence frames per clip), or null for the level's"
    return None


@dataclass
class SyntheticConfig(ComponentConfig):
    """The parameters both synthetic benchmarks share (the video adds frames, evidence frames, motion and
    evidence noise).  Knobs left null take the value of the ``difficulty`` level (:data:`LEVELS`)."""

    split: str = param("test", choices=tuple(SPLITS), help="train | val | test: disjoint random streams")
    n_samples: Optional[int] = param(None, range=(1, 10**7),
                                     help="samples in the split (null: 20000 train, 256 val and test)")
    size: int = param(64, range=(32, 256), help="frame side in pixels")
    num_classes: int = param(4, range=(2, len(CLASS_NAMES)), help="classes (evidence patterns), balanced")
    seed: int = param(0, range=(0, 2**32 - 1), help="seed of the scenes (the run's seed never changes the data)")
    difficulty: str = param("easy", choices=tuple(LEVELS),
                            help="preset of the knobs below (docs/benchmarks.md); easy: the shipped models' data")
    evidence_size: Optional[int] = param(None, range=(4, 256), help="side of the evidence square in pixels")
    grid: Optional[int] = param(None, range=(1, 64), help="evidence positions on multiples of this many pixels")
    contrast: Optional[float] = param(None, range=(0.05, 1.0),
                                      help="evidence strength: 1 paints the pattern, less blends it with the scene")
    max_distractors: Optional[int] = param(None, range=(0, 6), help="at most this many class-free distractors")
    decoys: Optional[int] = param(None, range=(0, 6),
                                  help="squares with random class patterns that do not decide the class")
    texture: Optional[float] = param(None, range=(0.0, 0.5), help="amplitude of the striped background texture")
    noise: float = param(0.03, range=(0.0, 0.2), help="SD of the background's pixel noise")

    def level(self) -> dict:
        """Every knob resolved: the explicit values, the level's for the null ones."""
        frames = getattr(self, "frames", 1)
        out = {}
        for k in KNOBS:
            v = getattr(self, k, None)
            if v is None:
                v = LEVELS[self.difficulty].get(k)
                if callable(v):
                    v = v(self.size) if k == "evidence_size" else v(frames)
                elif k == "evidence_frames":  # a preset made for 8 frames, clipped to shorter clips
                    v = (min(v[0], frames), min(v[1], frames))
            out[k] = v
        if frames == 1:  # images: the video-only knobs do not apply
            out.update(motion=0, evidence_noise=0.0, evidence_frames=(1, 1))
        out["evidence_frames"] = tuple(int(x) for x in out["evidence_frames"])
        return out

    def validate(self) -> None:
        k = self.level()
        frames = getattr(self, "frames", 1)
        if k["evidence_size"] > self.size:
            raise UserError(f"dataset.evidence_size={k['evidence_size']} is larger than dataset.size={self.size}: "
                            f"use an evidence square of at most the frame size")
        if k["grid"] > k["evidence_size"]:
            raise UserError(f"dataset.grid={k['grid']} must be at most dataset.evidence_size={k['evidence_size']}")
        if self.size % k["grid"]:
            raise UserError(f"dataset.size={self.size} must be a multiple of dataset.grid={k['grid']}")
        lo, hi = k["evidence_frames"]
        if not (1 <= lo <= hi <= frames):
            raise UserError(f"dataset.evidence_frames={[lo, hi]} must satisfy 1 <= min <= max <= frames={frames}")


@dataclass
class SyntheticImageConfig(SyntheticConfig):
    """The synthetic image benchmark's parameters (one frame)."""


@dataclass
class SyntheticVideoConfig(SyntheticConfig):
    """The synthetic video benchmark's parameters."""

    frames: int = param(8, range=(4, 32), help="frames per clip")
    evidence_frames: Optional[List[int]] = param(None, check=_frames_check,
                                                 help="[min, max] frames in which the evidence is visible")
    motion: Optional[int] = param(None, range=(0, 4), help="grid cells the evidence moves per frame")
    evidence_noise: Optional[float] = param(None, range=(0.0, 0.5),
                                            help="SD of fresh noise on the evidence in every frame")


# ------------------------------------------------------------------ the dataset
class SyntheticClips(Dataset):
    """Synthetic video (``frames`` > 1) or image (``frames`` = 1) benchmark, built from its typed config."""

    has_mask = True
    has_frames = True

    def __init__(self, cfg: SyntheticConfig, name: str = "synthetic_video"):
        self.cfg = cfg
        k = cfg.level()
        self.frames = int(getattr(cfg, "frames", 1))
        self.size, self.num_classes, self.seed, self.split = cfg.size, cfg.num_classes, int(cfg.seed), cfg.split
        self.difficulty = cfg.difficulty
        self.evidence_size, self.grid, self.contrast = int(k["evidence_size"]), int(k["grid"]), float(k["contrast"])
        self.max_distractors, self.decoys = int(k["max_distractors"]), int(k["decoys"])
        self.texture, self.motion, self.evidence_noise = float(k["texture"]), int(k["motion"]), float(
            k["evidence_noise"])
        self.evidence_frames = k["evidence_frames"]
        self.noise = float(cfg.noise)
        self.n = DEFAULT_SIZES[cfg.split] if cfg.n_samples is None else int(cfg.n_samples)
        self.name = name
        self.labels = CLASS_NAMES[: self.num_classes]
        self.skipped = []

    def __len__(self):
        return self.n

    def knobs(self) -> dict:
        """The resolved level: every knob's value in this dataset."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.cfg.level().items()}

    def describe(self):
        return {"name": self.name, "split": self.split, "n": self.n, "frames": self.frames, "size": self.size,
                "num_classes": self.num_classes, "seed": self.seed, "difficulty": self.difficulty, **self.knobs()}

    def sample_id(self, i: int) -> str:
        return f"{self.split}-{i:05d}"

    def fingerprint(self) -> dict:
        """The sample ids and everything that draws the pixels (the resolved knobs, size, seed, classes)."""
        fp = super().fingerprint()
        what = {k: v for k, v in self.describe().items() if k != "n"}
        fp["generator_sha256"] = hashlib.sha256(repr(sorted(what.items())).encode()).hexdigest()
        fp["generator"] = what
        return fp

    # ----------------------------------------------------------------------
    def __getitem__(self, i: int) -> Sample:
        if not 0 <= i < self.n:
            raise IndexError(i)
        label = i % self.num_classes  # balanced classes
        x, mask, frames = self.render(i, label)
        return Sample(
            sample_id=self.sample_id(i),
            x=torch.from_numpy(x),
            label=label,
            mask=torch.from_numpy(mask),
            frames=torch.from_numpy(frames),
        )

    def scene_rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, SPLITS[self.split], i])

    def extra_rng(self, i: int) -> np.random.Generator:
        """The stream of what the ``easy`` level does not draw (texture, decoys, motion, evidence noise)."""
        return np.random.default_rng([self.seed, SPLITS[self.split], i, 1])

    def render(self, i: int, label: int, blank_evidence: bool = False):
        """Render sample ``i`` with the given label; the scene never depends on ``label``.

        ``blank_evidence`` paints background instead of the evidence square
        (used to show that the rest of the clip carries no label information).
        Returns x (T, 3, S, S) float32, mask (T, S, S) bool, frames (T,) bool.
        """
        rng, extra = self.scene_rng(i), self.extra_rng(i)
        T, S, s, g = self.frames, self.size, self.evidence_size, self.grid
        cells = (S - s) // g + 1  # admissible top-left positions per axis
        bg = rng.uniform(0.15, 0.35)
        video = bg + self.noise * rng.standard_normal((T, S, S, 3)).astype(np.float32)
        if self.texture > 0:
            video += texture(extra, S, self.texture)[None, :, :, None]

        # evidence placement and timing (label-free)
        ey, ex = (rng.integers(0, cells, size=2) * g).tolist()
        length = int(rng.integers(self.evidence_frames[0], self.evidence_frames[1] + 1))
        t0 = int(rng.integers(0, T - length + 1))
        ecol = PALETTE[rng.integers(0, len(PALETTE))]
        track = self._track(extra, ey, ex, T)

        def away(r):  # a top-left corner whose square does not overlap the evidence's first position
            for _try in range(50):
                dy, dx = r.integers(0, cells, size=2) * g
                if abs(dy - ey) >= s or abs(dx - ex) >= s:
                    break
            return dy, dx

        # distractors: start away from the evidence square, drift <= 1 cell per frame
        nd = int(rng.integers(1, self.max_distractors + 1)) if self.max_distractors else 0
        for _ in range(nd):
            kind = int(rng.integers(0, 3))
            col = PALETTE[rng.integers(0, len(PALETTE))]
            dy, dx = away(rng)
            pat = distractor_pattern(kind, s)[..., None]
            steps = rng.integers(-1, 2, size=(T, 2)) * g
            for t in range(T):
                if t > 0:
                    dy = int(np.clip(dy + steps[t, 0], 0, S - s))
                    dx = int(np.clip(dx + steps[t, 1], 0, S - s))
                patch = pat * col + (1 - pat) * DARK
                video[t, dy : dy + s, dx : dx + s] = patch

        # decoys: evidence look-alikes with a random class pattern (never the label's choice), no outline
        for _ in range(self.decoys):
            k = int(extra.integers(0, self.num_classes))
            col = PALETTE[extra.integers(0, len(PALETTE))]
            dy, dx = away(extra)
            pat = class_pattern(k, s)[..., None]
            steps = extra.integers(-1, 2, size=(T, 2)) * g
            for t in range(T):
                if t > 0:
                    dy = int(np.clip(dy + steps[t, 0], 0, S - s))
                    dx = int(np.clip(dx + steps[t, 1], 0, S - s))
                under = video[t, dy : dy + s, dx : dx + s]
                video[t, dy : dy + s, dx : dx + s] = under + self.contrast * (pat * col + (1 - pat) * DARK - under)

        mask = np.zeros((T, S, S), bool)
        frames = np.zeros(T, bool)
        frames[t0 : t0 + length] = True
        for t in range(t0, t0 + length):
            y, x = track[t]
            mask[t, y : y + s, x : x + s] = True
        # the evidence is painted last (on top of any drifting distractor or decoy)
        if blank_evidence:
            fill = bg + self.noise * rng.standard_normal((length, s, s, 3)).astype(np.float32)
        else:
            pat = class_pattern(label, s)[..., None]
            fill = np.broadcast_to(pat * ecol + (1 - pat) * DARK, (length, s, s, 3))
        if self.evidence_noise > 0 and not blank_evidence:
            fresh = extra.standard_normal((length, s, s, 3)).astype(np.float32)
        for j, t in enumerate(range(t0, t0 + length)):
            y, x = track[t]
            patch = fill[j]
            if not blank_evidence:
                if self.contrast < 1:
                    under = video[t, y : y + s, x : x + s]
                    patch = under + self.contrast * (patch - under)
                if self.evidence_noise > 0:
                    patch = patch + self.evidence_noise * fresh[j]
                if self.decoys:
                    patch = np.array(patch, dtype=np.float32)
                    patch[[0, -1], :, :] = OUTLINE
                    patch[:, [0, -1], :] = OUTLINE
            video[t, y : y + s, x : x + s] = patch
        x = np.clip(video, 0.0, 1.0).transpose(0, 3, 1, 2).astype(np.float32)
        return np.ascontiguousarray(x), mask, frames

    def _track(self, extra: np.random.Generator, ey: int, ex: int, T: int) -> list:
        """The evidence's top-left corner in every frame: fixed, or moving ``motion`` grid cells per frame in a
        random direction and bouncing off the borders."""
        if not self.motion or T == 1:
            return [(ey, ex)] * T
        S, s, g = self.size, self.evidence_size, self.grid
        while True:
            v = extra.integers(-1, 2, size=2) * self.motion * g
            if v.any():
                break
        pos, out = np.array([ey, ex]), []
        for _ in range(T):
            out.append((int(pos[0]), int(pos[1])))
            nxt = pos + v
            for a in range(2):
                if not 0 <= nxt[a] <= S - s:
                    v[a] = -v[a]
                    nxt[a] = pos[a] + v[a]
            pos = np.clip(nxt, 0, S - s)
        return out


def synthetic_video(cfg: SyntheticVideoConfig) -> SyntheticClips:
    return SyntheticClips(cfg, name="synthetic_video")


def synthetic_image(cfg: SyntheticImageConfig) -> SyntheticClips:
    return SyntheticClips(cfg, name="synthetic_image")


synthetic_video.Config = SyntheticVideoConfig
synthetic_image.Config = SyntheticImageConfig
