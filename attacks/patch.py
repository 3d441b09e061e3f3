"""Geometry shared by patch triggers: where a square patch sits and how its polarity is painted."""
from __future__ import annotations

import math

import numpy as np
from torch import Tensor

from snnsec.attacks.base import POLARITIES
from snnsec.errors import ConfigError


def patch_side(size: float, height: int, width: int) -> int:
    """Patch side in pixels, as Sneaky Spikes sizes it: ``int(size * width)`` (truncated, so 0.1 of 128 px
    is 12 px), forced to 1 px when that is 0; never larger than the frame."""
    side = max(1, int(size * width))
    if side > min(height, width):
        if height == 1:
            raise ConfigError(f"a {side}px square patch does not fit in 1-D (audio) frames 1x{width}; use a band "
                              "trigger (band, moving-band), or flashy or blended")
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


# --------------------------------------------------------------------------------------------------
# Time windows and bounded motion, shared by the temporal (framed, strobing, flashy) and moving triggers.


def check_time_window(start: int | float, length: int | float) -> None:
    """Validate a time window: ``start``/``length`` are either bins (int) or fractions of T (float).

    An int ``start`` is a bin index >= 0 and an int ``length`` a number of bins >= 1; a float ``start``
    is a fraction of T in [0, 1) and a float ``length`` a fraction of T in (0, 1]. Two fractions must
    satisfy ``start + length <= 1`` so that the window fits every T.
    """
    for name, x in (("start", start), ("length", length)):
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise ConfigError(f"trigger window {name} must be bins (int) or a fraction of T (float), got {x!r}")
    if isinstance(start, int) and start < 0:
        raise ConfigError(f"trigger window start is a bin >= 0 (int) or a fraction of T in [0, 1) (float), got {start}")
    if isinstance(start, float) and not 0 <= start < 1:
        raise ConfigError(f"trigger window start as a fraction of T must be in [0, 1), got {start}")
    if isinstance(length, int) and length < 1:
        raise ConfigError(f"trigger window length is >= 1 bin (int) or a fraction of T in (0, 1] (float), got {length}")
    if isinstance(length, float) and not 0 < length <= 1:
        raise ConfigError(f"trigger window length as a fraction of T must be in (0, 1], got {length}")
    if isinstance(start, float) and isinstance(length, float) and start + length > 1:
        raise ConfigError(f"trigger window start + length must be <= 1 as fractions of T, got {start} + {length}")


def time_window(start: int | float, length: int | float, steps: int) -> tuple[int, int]:
    """First bin and end bin (exclusive) of a window checked by :func:`check_time_window` over ``steps`` bins.

    Fractions resolve as ``first = floor(start * T)`` and ``count = max(1, floor(length * T + 0.5))``
    (nearest, halves up); a window reaching past the last bin is an error, never silently cut.
    """
    first = start if isinstance(start, int) else math.floor(start * steps)
    count = length if isinstance(length, int) else max(1, math.floor(length * steps + 0.5))
    if first + count > steps:
        raise ConfigError(
            f"trigger window of bins [{first}, {first + count}) does not fit in T={steps} time bins; "
            "use a smaller start/length or fractions of T"
        )
    return first, first + count


def fold(offset: int, span: int, boundary: str) -> int:
    """Map an unbounded offset into ``[0, span]``: ``"bounce"`` reflects at both ends (a triangle wave of
    period ``2 * span``), ``"wrap"`` re-enters at 0 after ``span`` (modulo ``span + 1``)."""
    if span == 0:
        return 0
    if boundary == "wrap":
        return offset % (span + 1)
    m = offset % (2 * span)
    return m if m <= span else 2 * span - m


def paint_per_bin(frames: Tensor, origins: list[tuple[int, int]], side: int, polarity: int, value: float) -> Tensor:
    """A copy of frames ``[..., T, P, H, W]`` with the patch at ``origins[t]`` in time bin ``t``."""
    out = frames.clone()
    for t, (row, col) in enumerate(origins):
        paint(out, row, col, side, polarity, value, time_index=t)
    return out
