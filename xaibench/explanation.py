"""The explanation every method returns and every metric reads (shared by both; neither imports the other).

* ``volume``: (T, H, W) attribution at input resolution (T = 1 for images);
* ``frame_scores``: (T,) per-frame (temporal) importance;
* ``token_map``: (T', h, w) attribution at the model's token resolution
  (T' token frames; T = T' * tubelet);
* ``extras``: method-specific by-products (e.g. SHAP's expected value).

Model passes are not part of an explanation: the adapter counts them
(:attr:`xaibench.models.base.ModelAdapter.passes`) and the harness reads the
count around each method call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional

import torch
import torch.nn.functional as F


@dataclass
class Explanation:
    volume: torch.Tensor
    frame_scores: torch.Tensor
    token_map: torch.Tensor
    extras: Dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self):
        T = self.volume.shape[0]
        if self.volume.dim() != 3 or self.frame_scores.shape != (T,) or self.token_map.dim() != 3:
            raise ValueError(
                f"bad explanation shapes: volume {tuple(self.volume.shape)}, frame_scores "
                f"{tuple(self.frame_scores.shape)}, token_map {tuple(self.token_map.shape)}"
            )

    def cpu(self) -> "Explanation":
        return Explanation(self.volume.detach().cpu(), self.frame_scores.detach().cpu(),
                           self.token_map.detach().cpu(), {k: torch.as_tensor(v).cpu() for k, v in self.extras.items()})


def upsample(token_map: torch.Tensor, size, mode: str = "bilinear") -> torch.Tensor:
    """(T, h, w) -> (T, H, W) by ``mode`` interpolation (bilinear as in Chefer et al.'s code)."""
    t = token_map[:, None].float()
    if mode == "nearest":
        out = F.interpolate(t, size=size, mode="nearest")
    else:
        out = F.interpolate(t, size=size, mode=mode, align_corners=False)
    return out[:, 0]


def from_token_map(token_map: torch.Tensor, image_size: int, tubelet: int = 1,
                   frame_scores: Optional[torch.Tensor] = None, mode: str = "bilinear", **extras) -> Explanation:
    """An :class:`Explanation` from a (T', h, w) token map.

    The volume is the token map upsampled to ``image_size`` (``mode``) and
    repeated ``tubelet`` times along time (input frame t shows token frame
    ``t // tubelet``).  Frame scores default to the per-token-frame sums of the
    token map, repeated likewise; given ``frame_scores`` of length T' are repeated too.
    """
    token_map = token_map.detach().float()
    if frame_scores is None:
        frame_scores = token_map.flatten(1).sum(1)
    vol = upsample(token_map, (image_size, image_size), mode)
    if tubelet > 1:
        vol = vol.repeat_interleave(tubelet, 0)
        if frame_scores.shape[0] == token_map.shape[0]:
            frame_scores = frame_scores.repeat_interleave(tubelet, 0)
    return Explanation(volume=vol, frame_scores=frame_scores.float(), token_map=token_map, extras=extras)
