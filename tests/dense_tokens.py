"""Dense token-geometry references for the tests (the package never forms these matrices: its methods
propagate row vectors block by block, xaibench/methods/_relevance.py).

* :func:`window_to_global` scatters Swin window attention (computed on the
  cyclically shifted map) into one global token-to-token matrix in the original
  (unshifted) row-major token order, zero outside each window.
* :func:`merge_rows` maps a relevance matrix between two Swin stages: the rows
  (and columns) of the 2x2 patches that patch merging joins are averaged.
"""

from __future__ import annotations

import torch


def window_to_global(win: torch.Tensor, grid, window: int, shift: int) -> torch.Tensor:
    """(B, nW, ..., ws*ws, ws*ws) window attention -> (B, ..., N, N), N = h*w.

    Window ``k`` of the shifted map covers shifted positions
    ``(wy*ws + dy, wx*ws + dx)``; shifted position ``(y, x)`` holds original token
    ``((y + shift) % h, (x + shift) % w)`` (the forward pass rolled by ``-shift``).
    """
    h, w = grid
    ws = window
    if h % ws or w % ws:
        raise ValueError(f"token grid {grid} is not divisible by window {ws}")
    B, nW = win.shape[:2]
    mid = win.shape[2:-2]
    n = h * w
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    # original token index at each shifted position
    orig = (((ys + shift) % h) * w + (xs + shift) % w)
    # windows in row-major window order, tokens row-major inside each window
    idx = orig.view(h // ws, ws, w // ws, ws).permute(0, 2, 1, 3).reshape(nW, ws * ws).to(win.device)
    out = win.new_zeros(B, *mid, n, n)
    flat = out.view(B, -1, n * n) if mid else out.view(B, 1, n * n)
    lin = (idx[:, :, None] * n + idx[:, None, :]).reshape(-1)  # (nW*ws*ws*ws*ws,)
    src = win.movedim(1, -3) if mid else win  # (B, *mid, nW, q, k)
    src = src.reshape(B, -1, lin.numel())
    flat.scatter_(2, lin.expand(B, src.shape[1], -1), src)
    return out


def merge_matrix(grid, device=None, dtype=torch.float32) -> torch.Tensor:
    """(N/4, N) averaging matrix of Swin patch merging: row j averages the 2x2 block of merged token j."""
    h, w = grid
    hh, ww = (h + 1) // 2, (w + 1) // 2
    M = torch.zeros(hh * ww, h * w, device=device, dtype=dtype)
    for y in range(h):
        for x in range(w):
            M[(y // 2) * ww + x // 2, y * w + x] = 1.0
    return M / M.sum(1, keepdim=True)
