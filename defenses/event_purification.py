"""Event-domain purification at inference: denoising and refractory filtering of the binned event stream.

Both filters act on which (time bin, polarity, pixel) cells hold events, as the event-camera filters of
tonic (``Denoise``, ``RefractoryPeriod``) act on single events, at the time resolution of the frames:
- ``denoise``: a cell is kept when some event (either polarity) lies in its 3x3 pixel neighbourhood within
  ``window`` bins, other than the cell itself; isolated events are dropped.
- ``refractory``: a pixel that fired (either polarity) in the previous ``window`` bins stays silent; a
  patch painted into every bin fires only every ``window + 1`` bins.
The model sees the purified frames (nothing is rejected); the suspicion score is the fraction of an
input's active cells that the filter removed.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from snnsec.defenses.base import DEFENSES, DefenseContext, InputFilter, require

METHODS = ("denoise", "refractory", "both")


def denoise_mask(active: Tensor, window: int) -> Tensor:
    """Cells of ``active [B, T, P, H, W]`` (bool) with a neighbouring event within ``window`` bins."""
    union = active.any(2, keepdim=True).float().transpose(1, 2)  # [B, 1, T, H, W]
    kernel = torch.ones(1, 1, 2 * window + 1, 3, 3, dtype=union.dtype, device=union.device)
    neighbours = F.conv3d(union, kernel, padding=(window, 1, 1)).transpose(1, 2)  # [B, T, 1, H, W]
    return active & (neighbours - active.float() > 0)


def refractory_mask(active: Tensor, window: int) -> Tensor:
    """Cells of ``active [B, T, P, H, W]`` kept by a per-pixel refractory period of ``window`` bins."""
    kept = torch.zeros_like(active)
    fired: list[Tensor] = []  # per kept bin: which pixels fired [B, H, W]
    for t in range(active.shape[1]):
        blocked = torch.stack(fired[-window:]).any(0) if fired else torch.zeros_like(active[:, 0, 0])
        kept[:, t] = active[:, t] & ~blocked.unsqueeze(1)
        fired.append(kept[:, t].any(1))
    return kept


@DEFENSES.register("event-purification")
@dataclass(frozen=True)
class EventPurification(InputFilter):
    method: str = "both"  # denoise, refractory or both
    window: int = 1  # time bins of the denoising support / the refractory period

    name: ClassVar[str] = "event-purification"
    summary: ClassVar[str] = "denoising and refractory filtering of the binned event stream before the model"
    rejects: ClassVar[bool] = False

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.method in METHODS, f"method must be one of {', '.join(METHODS)}; got {self.method!r}")
        require(self.window >= 1, f"window must be >= 1 time bin, got {self.window}")

    def keep(self, frames: Tensor) -> Tensor:
        active = frames != 0
        if self.method in ("denoise", "both"):
            active = denoise_mask(active, self.window)
        if self.method in ("refractory", "both"):
            active = refractory_mask(active, self.window)
        return active

    def purify(self, frames: Tensor) -> Tensor:
        return frames * self.keep(frames)

    def scorer(self, ctx: DefenseContext) -> Callable[[Tensor], np.ndarray]:
        def removed_fraction(frames: Tensor) -> np.ndarray:
            active = (frames != 0).flatten(1).sum(1).clamp_min(1)
            return (1.0 - self.keep(frames).flatten(1).sum(1) / active).numpy()

        return removed_fraction
