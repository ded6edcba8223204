"""One PNG per explained sample: the frames, the attribution overlaid, the
ground-truth outline, and the per-frame scores as a bar chart."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def save_figure(path: Path, sample, expl, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = sample.x.numpy().transpose(0, 2, 3, 1)
    vol = expl.volume.detach().cpu().numpy()
    T = x.shape[0]
    lo, hi = float(vol.min()), float(vol.max())
    norm = (vol - lo) / (hi - lo) if hi > lo else np.zeros_like(vol)
    rows = 3 if T > 1 else 2
    fig, axes = plt.subplots(rows, T, figsize=(max(2.0 * T, 4.5), 2.0 * rows + 0.3), squeeze=False)
    for t in range(T):
        axes[0, t].imshow(x[t])
        axes[0, t].set_title(f"t={t}" + (" *" if sample.frames is not None and bool(sample.frames[t]) else ""),
                             fontsize=8)
        axes[1, t].imshow(x[t].mean(-1), cmap="gray")
        axes[1, t].imshow(norm[t], cmap="jet", alpha=0.5, vmin=0, vmax=1)
        if sample.mask is not None and bool(sample.mask[t].any()):
            axes[1, t].contour(sample.mask[t].numpy().astype(float), levels=[0.5], colors="lime", linewidths=1.5)
        for r in range(2):
            axes[r, t].axis("off")
    if T > 1:
        gs = axes[2, 0].get_gridspec()
        for a in axes[2]:
            a.remove()
        bar = fig.add_subplot(gs[2, :])
        scores = expl.frame_scores.detach().cpu().numpy()
        colors = ["tab:red" if sample.frames is not None and bool(sample.frames[t]) else "tab:blue" for t in range(T)]
        bar.bar(range(T), scores, color=colors)
        bar.set_xticks(range(T))
        bar.set_ylabel("frame score", fontsize=8)
        bar.set_title("per-frame scores (red: ground-truth evidence frames)", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
