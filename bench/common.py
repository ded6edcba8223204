"""What the speed benchmarks share: device and precision options, timing, the model sizes, tables and CSVs.

The scripts of ``bench/`` run as ``python bench/NAME.py``; Python puts ``bench/``
on the import path, so they ``import common``.  Timings on a GPU synchronise the
device before the clock is read (``torch.cuda.synchronize``): CUDA kernels run
asynchronously, so without it a timing measures only the kernel launches.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from xaibench.errors import UserError  # noqa: E402

PRECISIONS = ("fp32", "bf16", "fp16")

#: random-init base-size models with the Hugging Face configurations of the paper models
#: (TimeSformer-base K400: 8 x 224 x 224, patch 16, 400 classes; ViT-B/16 and Swin-T: 224 px, 1000 classes)
BIG = {
    "timesformer_base": ("hf_timesformer", dict(num_labels=400, image_size=224, patch_size=16, num_frames=8,
                                                hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                                intermediate_size=3072)),
    "vit_b16": ("hf_vit", dict(num_labels=1000, image_size=224, patch_size=16, hidden_size=768,
                               num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)),
    "swin_t": ("hf_swin", dict(num_labels=1000, image_size=224, patch_size=4, embed_dim=96, depths=(2, 2, 6, 2),
                               num_heads=(3, 6, 12, 24), window_size=7)),
}
#: the small random-init architectures the tests use (64 px; builder defaults: 4 layers, hidden 96;
#: Swin patch 4, window 4, depths (2, 2))
SMALL = {"hf_timesformer": ("hf_timesformer", {}), "hf_vit": ("hf_vit", {}), "hf_swin": ("hf_swin", {}),
         "timm_vit": ("timm_vit", {}), "timm_swin": ("timm_swin", {})}


def add_device_options(p: argparse.ArgumentParser, threads: int):
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--precision", default="fp32", help="fp32 (default), bf16 or fp16: autocast for the model's "
                                                       "forward passes (adapter.to(device, precision))")
    p.add_argument("--threads", type=int, default=threads,
                   help=f"torch CPU threads (default {threads}; on a shared, oversubscribed CPU more threads make "
                        f"every pass slower and the timings erratic)")


def resolve_device(name: str) -> torch.device:
    """The torch device for ``--device``; a CUDA device on a machine without one is a :class:`UserError`."""
    name = str(name)
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: no CUDA GPU is available here (torch {torch.__version__}); "
                            f"use --device cpu")
        idx = int(name[5:]) if ":" in name else 0
        if idx >= torch.cuda.device_count():
            raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s)")
        return torch.device(name)
    raise UserError(f"--device {name!r}; valid: cpu, cuda, cuda:N")


def check_precision(name: str) -> str:
    if name not in PRECISIONS:
        raise UserError(f"--precision {name!r}; valid: {', '.join(PRECISIONS)}")
    return name


def run_main(main, argv=None):
    """Run ``main(argv)``; a :class:`UserError` prints its message and exits 2 (no traceback)."""
    try:
        return main(argv)
    except UserError as e:
        print(f"{Path(sys.argv[0]).name}: error: {e}", file=sys.stderr)
        sys.exit(2)


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device="cpu"):
    """(seconds, result) of one call of ``fn``, the device synchronised before and after."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def build(label: str, spec, device, precision: str):
    """A random-init adapter from a (builder, config) spec, on ``device`` at ``precision``, cache off.

    The in-run output cache (``adapter.cache``) is switched off: a benchmark calls the same method on the
    same input several times, and cached outputs would time a dictionary lookup instead of the model.
    """
    from xaibench.models import build as build_adapter

    builder, kw = spec
    adapter = build_adapter(builder, name=label, **kw)
    adapter.to(device, precision)
    adapter.cache = None
    return adapter


def layout_text(adapter) -> str:
    """The adapter's declared token layout in a few words (for the CSVs; no architecture names)."""
    L = adapter.layout
    stages = " ".join(f"{h}x{w}" for h, w in L.stages)
    return f"frames={L.frames} tubelet={L.tubelet} stages={stages} prefix={L.prefix} readout={L.readout}"


def fmt(v, width: int = 48) -> str:
    """A cell of a printed table: floats to 4 significant digits, long text cut to ``width`` characters."""
    if isinstance(v, float):
        return f"{v:.4g}"
    s = "" if v is None else str(v)
    return s if len(s) <= width else s[:width - 3] + "..."


def print_table(rows: Sequence[dict], cols: Sequence[str]) -> None:
    """``rows`` as an aligned text table of ``cols``."""
    cells = [[fmt(r.get(c)) for c in cols] for r in rows]
    width = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    print("  ".join(c.rjust(w) for c, w in zip(cols, width)))
    for row in cells:
        print("  ".join(v.rjust(w) for v, w in zip(row, width)))


def write_csv(rows: Iterable[dict], path, cols: Optional[List[str]] = None) -> Path:
    """Rows as CSV (floats with 6 significant digits); the columns are ``cols`` or every key, in order."""
    rows = list(rows)
    if cols is None:
        cols = list(dict.fromkeys(k for r in rows for k in r))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({c: (f"{r[c]:.6g}" if isinstance(r.get(c), float) else r.get(c, "")) for c in cols})
    return path
