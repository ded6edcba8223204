"""Static figures of explanations.

* :func:`save_figure`: one PNG per explained sample (``save_figures=N``): the frames, the attribution
  overlaid with its colour bar, the ground-truth outline, and the per-frame scores as a bar chart.
* :func:`strip_figure`: the paper figure of one method on one sample -- the frames side by side, the
  attribution over each (jet on the grey frame, one colour scale for the whole clip: its minimum to its
  maximum), the ground truth outlined in white, and a colour bar in the attribution's units.  The report
  exports one per method (``xaibench-report DIR --export png,pdf``; :func:`xaibench.analysis.gallery.export_strips`).

Both draw on :class:`matplotlib.figure.Figure` objects (no pyplot state, no display).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

ALPHA = 0.5  # opacity of the attribution over the grey frame (as the report's gallery)


def _np(t) -> Optional[np.ndarray]:
    if t is None:
        return None
    if hasattr(t, "detach"):
        t = t.detach().cpu().numpy()
    return np.asarray(t)


def _grey(x_t: np.ndarray) -> np.ndarray:
    """(C, H, W) pixels in [0, 1] -> (H, W) grey."""
    return np.clip(np.nan_to_num(x_t.astype(np.float32)), 0, 1).mean(axis=0)


def _rgb(x_t: np.ndarray) -> np.ndarray:
    x = np.clip(np.nan_to_num(x_t.astype(np.float32)), 0, 1).transpose(1, 2, 0)
    return np.repeat(x, 3, axis=2) if x.shape[2] == 1 else x[..., :3]


def clip_range(vol: np.ndarray) -> tuple:
    """The colour scale of a clip: its finite minimum and maximum (``(0, 1)`` when there is no spread)."""
    v = np.asarray(vol, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0 or v.max() <= v.min():
        lo = float(v.min()) if v.size else 0.0
        return lo, lo + 1.0
    return float(v.min()), float(v.max())


def _overlay(ax, x_t, vol_t, mask_t, vmin, vmax):
    ax.imshow(_grey(x_t), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    im = ax.imshow(np.nan_to_num(vol_t, nan=vmin), cmap="jet", alpha=ALPHA, vmin=vmin, vmax=vmax,
                   interpolation="nearest")
    _outline(ax, mask_t)
    ax.set_xticks([])
    ax.set_yticks([])
    return im


def _opaque(im):
    """The overlay's colour scale without its transparency (the colour bar shows the colour map itself)."""
    from matplotlib.cm import ScalarMappable

    return ScalarMappable(norm=im.norm, cmap=im.cmap)


def _outline(ax, mask_t):
    if mask_t is not None and bool(np.asarray(mask_t).any()):
        ax.contour(np.asarray(mask_t).astype(float), levels=[0.5], colors="white", linewidths=1.2)


def strip_figure(x, vol=None, mask=None, frames=None, title: str = "", unit: str = "attribution",
                 frame_inches: float = 1.4):
    """The frames of one sample side by side, with ``vol`` (T, H, W) over them and its colour bar.

    ``x``: (T, C, H, W) pixels in [0, 1]; ``mask``: (T, H, W) ground truth (outlined); ``frames``: (T,)
    evidence frames (their titles get a ``*``).  Without ``vol``: the input frames in colour, no colour bar.
    Returns a :class:`matplotlib.figure.Figure`; the colour bar is ``fig.axes[-1]`` when there is one.
    """
    from matplotlib.figure import Figure

    x, vol, mask, frames = _np(x), _np(vol), _np(mask), _np(frames)
    T = x.shape[0]
    width = frame_inches * T + (0.9 if vol is not None else 0.1)
    fig = Figure(figsize=(width, frame_inches + (0.45 if title else 0.25)), layout="constrained")
    axes = fig.subplots(1, T, squeeze=False)[0]
    im = None
    vmin, vmax = clip_range(vol) if vol is not None else (0.0, 1.0)
    for t, ax in enumerate(axes):
        if vol is None:
            ax.imshow(_rgb(x[t]), interpolation="nearest")
            _outline(ax, None if mask is None else mask[t])
            ax.set_xticks([])
            ax.set_yticks([])
        else:
            im = _overlay(ax, x[t], vol[t], None if mask is None else mask[t], vmin, vmax)
        if T > 1:
            ax.set_title(f"t={t}" + (" *" if frames is not None and bool(frames[t]) else ""), fontsize=7, pad=2)
    if im is not None:
        cb = fig.colorbar(_opaque(im), ax=list(axes), fraction=0.9 / max(T, 1) * 0.12, pad=0.02, aspect=12)
        cb.ax.tick_params(labelsize=6)
        cb.set_label(unit, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=8)
    return fig


def save_strip(fig, path: Path, formats: Sequence[str] = ("png",), dpi: int = 200) -> list:
    """Save ``fig`` as ``path`` with each suffix of ``formats`` (png, pdf, svg); returns the files written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for fmt in formats:
        p = path.parent / f"{path.name}.{fmt}"  # not with_suffix: a label may hold a dot (lambda=0.5)
        fig.savefig(p, format=fmt, dpi=dpi, bbox_inches="tight")
        out.append(p)
    return out


def save_figure(path: Path, sample, expl, title: str = "") -> Path:
    """One PNG: the frames, the attribution over them with its colour bar (min to max of the clip), the
    ground-truth outline, and for a video the per-frame scores (red: ground-truth evidence frames)."""
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = _np(sample.x)
    vol = _np(expl.volume)
    mask, frames = _np(sample.mask), _np(sample.frames)
    T = x.shape[0]
    vmin, vmax = clip_range(vol)
    rows = 3 if T > 1 else 2
    fig = Figure(figsize=(max(2.0 * T, 4.5) + 0.8, 2.0 * rows + 0.3), layout="constrained")
    axes = fig.subplots(rows, T, squeeze=False)
    im = None
    for t in range(T):
        axes[0, t].imshow(_rgb(x[t]))
        axes[0, t].set_title(f"t={t}" + (" *" if frames is not None and bool(frames[t]) else ""), fontsize=8)
        im = _overlay(axes[1, t], x[t], vol[t], None if mask is None else mask[t], vmin, vmax)
        for r in range(2):
            axes[r, t].axis("off")
    cb = fig.colorbar(_opaque(im), ax=list(axes[1]), fraction=0.05, pad=0.02)
    cb.ax.tick_params(labelsize=7)
    cb.set_label("attribution", fontsize=8)
    if T > 1:
        gs = axes[2, 0].get_gridspec()
        for a in axes[2]:
            a.remove()
        bar = fig.add_subplot(gs[2, :])
        scores = _np(expl.frame_scores)
        colors = ["tab:red" if frames is not None and bool(frames[t]) else "tab:blue" for t in range(T)]
        bar.bar(range(T), scores, color=colors)
        bar.set_xticks(range(T))
        bar.set_ylabel("frame score", fontsize=8)
        bar.set_title("per-frame scores (red: ground-truth evidence frames)", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=80)
    return path
