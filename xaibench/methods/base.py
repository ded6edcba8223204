"""The explanation type every method returns, and the tiny method base class.

A method is a callable object: ``method(adapter, x, target) -> Explanation``.
``x`` is one sample of pixels in [0, 1] with shape (T, C, H, W) (T = 1 for
images); ``target`` the class index explained.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional

import torch
import torch.nn.functional as F

from ..errors import NotApplicable


@dataclass
class Explanation:
    """One attribution.

    * ``volume``: (T, H, W) attribution at input resolution (T = 1 for images);
    * ``frame_scores``: (T,) per-frame (temporal) importance;
    * ``token_map``: (T, h, w) attribution at token resolution;
    * ``n_forward`` / ``n_backward``: model passes the method used (a batched
      call of k samples counts k forward passes).
    """

    volume: torch.Tensor
    frame_scores: torch.Tensor
    token_map: torch.Tensor
    n_forward: int = 1
    n_backward: int = 0
    extras: Dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self):
        T = self.volume.shape[0]
        if self.volume.dim() != 3 or self.frame_scores.shape != (T,) or self.token_map.dim() != 3:
            raise ValueError(
                f"bad explanation shapes: volume {tuple(self.volume.shape)}, frame_scores "
                f"{tuple(self.frame_scores.shape)}, token_map {tuple(self.token_map.shape)}"
            )


def upsample(token_map: torch.Tensor, size, mode: str = "bilinear") -> torch.Tensor:
    """(T, h, w) -> (T, H, W) by ``mode`` interpolation (bilinear as in Chefer et al.)."""
    t = token_map[:, None].float()
    if mode == "nearest":
        out = F.interpolate(t, size=size, mode="nearest")
    else:
        out = F.interpolate(t, size=size, mode=mode, align_corners=False)
    return out[:, 0]


def from_token_map(token_map: torch.Tensor, image_size: int, frame_scores: Optional[torch.Tensor] = None,
                   mode: str = "bilinear", **kw) -> Explanation:
    """Build an :class:`Explanation` from a (T, h, w) token map.

    Frame scores default to the per-frame sum of the token map.
    """
    token_map = token_map.detach().float()
    if frame_scores is None:
        frame_scores = token_map.flatten(1).sum(1)
    return Explanation(volume=upsample(token_map, (image_size, image_size), mode), frame_scores=frame_scores.float(),
                       token_map=token_map, **kw)


class Method:
    """Base class. Subclasses set ``name`` and ``archs`` and implement :meth:`explain`."""

    name: str = ""
    archs = ("timesformer", "vit", "swin")  # architectures the method applies to

    def params(self) -> dict:
        """The method's parameters, as recorded in the results' ``params`` column."""
        return {}

    def check(self, adapter) -> None:
        """Raise :class:`NotApplicable` (with the reason) if the method cannot run on ``adapter``."""
        if adapter.arch not in self.archs:
            raise NotApplicable(f"{self.name} does not apply to {adapter.arch} (supports: {', '.join(self.archs)})")

    def explain(self, adapter, x: torch.Tensor, target: int) -> Explanation:
        raise NotImplementedError

    def __call__(self, adapter, x: torch.Tensor, target: int) -> Explanation:
        self.check(adapter)
        return self.explain(adapter, x, target)
