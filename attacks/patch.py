"""Geometry shared by patch triggers: where a square patch sits and how its polarity is painted."""
from __future__ import annotations

import numpy as np
from torch import Tensor

from snnsec.attacks.base import POLARITIES
from snnsec.errors import ConfigError


def patch_side(size: float, height: int, width: int) -> int:
    """Patch side in pixels: ``round(size * width)``, at least 1, never larger than the frame."""
    side = max(1, round(size * width))
    if side > min(height, width):
        raise ConfigError(f"trigger of {side}px does not fit in {height}x{width} frames; use a smaller size")
    return side


def patch_origin(position: str, side: int, height: int, width: int, seed: int) -> tuple[int, int]:
    """Top-left corner (row, col) of a ``side``-pixel patch; "random" is a pure function of ``seed``."""
    last_row, last_col = height - side, width - side
    corners = {
        "top-left": (0, 0),
        "top-right": (0, last_col),
        "bottom-left": (last_row, 0),
        "bottom-right": (last_row, last_col),
        "middle": (last_row // 2, last_col // 2),
    }
    if position in corners:
        return corners[position]
    rng = np.random.default_rng(seed)
    return int(rng.integers(0, last_row + 1)), int(rng.integers(0, last_col + 1))


def paint(frames: Tensor, row: int, col: int, side: int, polarity: int, value: float, time_index=slice(None)) -> None:
    """In place: set the patch in frames ``[..., T, P, H, W]`` at times ``time_index`` to the polarity's pattern."""
    off_on = POLARITIES[polarity]
    channels = frames.shape[-3]
    patch = frames[..., time_index, :, row : row + side, col : col + side]
    if channels == 1:  # single-channel sensors: any active polarity writes the value
        patch.fill_(value if any(off_on) else 0.0)
        return
    for channel, active in enumerate(off_on):
        patch[..., channel, :, :] = value if active else 0.0
