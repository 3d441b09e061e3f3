"""Smart trigger (Sneaky Spikes): a patch placed by the training data's activity, fitted once, then fixed."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from snnsec.attacks.base import TRIGGERS, Trigger
from snnsec.attacks.patch import fold, paint_per_bin, patch_side
from snnsec.errors import ConfigError

CHOICES = ("least", "most")
_CHUNK = 64  # leading (sample x time) slices counted at a time by fit, to bound memory


@TRIGGERS.register("smart")
@dataclass(frozen=True)
class SmartTrigger(Trigger):
    """A ``size`` patch in every time bin, whose location and polarity ``fit`` derives from training data.

    ``fit(train_frames [N, T, P, H, W])`` splits the frame into ``g_r x g_c`` regions with
    ``g = min(grid, frame_side // patch_side)`` per axis (at least 1; boundaries ``floor(i * H / g_r)``),
    so every region holds the patch for any ``size`` up to 1.0. A pixel in a time bin has polarity code
    0 (silent), 1 (ON only), 2 (OFF only) or 3 (both), where a channel is active if > 0 (single-channel
    frames: code 0 or 3). One pass over the frames counts the codes per pixel; a region's activity is
    its share of non-silent pixel-bins (codes 1-3 per pixel, so uneven regions compare fairly). The
    ``region="least"|"most"`` active region is chosen (ties: first in row-major order), then the
    ``polarity_choice="least"|"most"`` used code there (ties: lowest code) becomes ``polarity``.

    ``fit`` returns a new trigger with ``origin`` (the patch's top-left corner: centred in the region),
    ``cell`` (the region: top, left, bottom, right, exclusive ends), ``polarity`` and ``frame_shape``
    resolved; ``apply`` then uses exactly these for training and test frames alike (an unfitted trigger
    without ``origin`` refuses to apply). With ``walk > 0`` the patch does a random walk inside the
    region: each bin it moves ``walk`` px up or down and left or right, the steps drawn from ``seed``
    (the same walk on every call) and reflected at the region's edges (bounded, no retry loop).

    Anchor: Sneaky Spikes' ``create_smart_trigger`` (``--least``, ``--most_polarity``, ``--n_masks n``,
    i.e. ``grid = n + 1``). Fixed here: the reference split the frame into masks that could not hold
    large triggers (a crash, or an endless retry loop in its unseeded walk), counted regions with one
    pass per mask, and re-drew the location for the test set; the reference walk (``walk=2``) is
    optional and seeded. ``position`` is not used: the data decide where the patch goes.
    """

    region: str = "least"
    polarity_choice: str = "least"
    grid: int = 3
    walk: int = 0  # pixels per bin of the bounded random walk inside the region; 0: fixed position
    origin: tuple[int, int] | None = None  # resolved by fit: top-left (row, col) of the patch
    cell: tuple[int, int, int, int] | None = None  # resolved by fit: (top, left, bottom, right), ends exclusive
    frame_shape: tuple[int, int] | None = None  # resolved by fit: (H, W) the location refers to

    name: ClassVar[str] = "smart"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.region not in CHOICES:
            raise ConfigError(f"smart trigger region must be 'least' or 'most' (active region), got {self.region!r}")
        if self.polarity_choice not in CHOICES:
            raise ConfigError(
                f"smart trigger polarity_choice must be 'least' or 'most' (used polarity), got {self.polarity_choice!r}"
            )
        for field, x, low in (("grid", self.grid, 1), ("walk", self.walk, 0)):
            if isinstance(x, bool) or not isinstance(x, int) or x < low:
                raise ConfigError(f"smart trigger {field} must be an int >= {low}, got {x!r}")
        for field, n in (("origin", 2), ("cell", 4), ("frame_shape", 2)):
            x = getattr(self, field)
            if x is None:
                continue
            x = tuple(x)  # JSON round trips give lists
            if len(x) != n or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in x):
                raise ConfigError(f"smart trigger {field} must be {n} ints >= 0 or unset, got {getattr(self, field)!r}")
            object.__setattr__(self, field, x)
        if self.cell is not None and not (self.cell[0] < self.cell[2] and self.cell[1] < self.cell[3]):
            raise ConfigError(
                f"smart trigger cell (top, left, bottom, right) needs top < bottom and left < right, got {self.cell}"
            )

    def fit(self, train_frames: Tensor) -> SmartTrigger:
        if train_frames.dim() < 4:
            raise ConfigError(f"smart trigger fit needs frames [N, T, P, H, W], got shape {tuple(train_frames.shape)}")
        channels, height, width = train_frames.shape[-3:]
        side = patch_side(self.size, height, width)
        codes = _code_counts(train_frames.reshape(-1, channels, height, width))  # [4, H, W]
        rows = _edges(height, min(self.grid, height // side))
        cols = _edges(width, min(self.grid, width // side))
        integral = np.zeros((4, height + 1, width + 1), dtype=np.int64)
        integral[:, 1:, 1:] = codes.cumsum(1).cumsum(2)
        r0, r1 = rows[:-1, None], rows[1:, None]
        c0, c1 = cols[None, :-1], cols[None, 1:]
        # code counts per region [4, g_r, g_c], from the integral image
        per_cell = integral[:, r1, c1] - integral[:, r0, c1] - integral[:, r1, c0] + integral[:, r0, c0]
        activity = per_cell[1:].sum(0) / ((r1 - r0) * (c1 - c0))
        pick = np.argmin if self.region == "least" else np.argmax
        i, j = np.unravel_index(int(pick(activity.ravel())), activity.shape)
        polarity = int((np.argmin if self.polarity_choice == "least" else np.argmax)(per_cell[:, i, j]))
        top, bottom, left, right = int(rows[i]), int(rows[i + 1]), int(cols[j]), int(cols[j + 1])
        origin = (top + (bottom - top - side) // 2, left + (right - left - side) // 2)
        return replace(
            self, polarity=polarity, origin=origin, cell=(top, left, bottom, right), frame_shape=(height, width)
        )

    def origins(self, steps: int, height: int, width: int) -> list[tuple[int, int]]:
        """Top-left corner (row, col) of the patch in each of ``steps`` time bins."""
        if self.origin is None:
            raise ConfigError("the smart trigger is not fitted: call fit(train_frames) first or give origin=(row, col)")
        if self.frame_shape is not None and self.frame_shape != (height, width):
            fit_h, fit_w = self.frame_shape
            raise ConfigError(f"the smart trigger was fitted on {fit_h}x{fit_w} frames, got {height}x{width}")
        side = patch_side(self.size, height, width)
        top, left, bottom, right = self.cell if self.cell is not None else (0, 0, height, width)
        row, col = self.origin
        if not (top <= row <= bottom - side and left <= col <= right - side) or bottom > height or right > width:
            raise ConfigError(
                f"smart trigger origin {self.origin} with a {side}px patch does not fit in cell "
                f"{(top, left, bottom, right)} of {height}x{width} frames"
            )
        if self.walk == 0:
            return [(row, col)] * steps
        steps_rc = np.random.default_rng(self.seed).choice([-self.walk, self.walk], size=(steps, 2))
        steps_rc[0] = 0  # the first bin sits at origin
        offsets = steps_rc.cumsum(0)
        span_r, span_c = bottom - side - top, right - side - left
        return [
            (top + fold(row - top + int(dr), span_r, "bounce"), left + fold(col - left + int(dc), span_c, "bounce"))
            for dr, dc in offsets
        ]

    def apply(self, frames: Tensor) -> Tensor:
        steps, height, width = frames.shape[-4], frames.shape[-2], frames.shape[-1]
        side = patch_side(self.size, height, width)
        return paint_per_bin(frames, self.origins(steps, height, width), side, self.polarity, self.value)


def _edges(length: int, parts: int) -> np.ndarray:
    """``parts + 1`` region boundaries over ``length`` pixels: ``floor(i * length / parts)``."""
    parts = max(1, parts)
    return np.array([i * length // parts for i in range(parts + 1)], dtype=np.int64)


def _code_counts(frames: Tensor) -> np.ndarray:
    """Per pixel, how many of the ``[M, P, H, W]`` slices have polarity code 0, 1, 2, 3: ``[4, H, W]`` int64."""
    channels, height, width = frames.shape[-3:]
    on = torch.zeros(height, width, dtype=torch.int64)
    off = torch.zeros_like(on)
    both = torch.zeros_like(on)
    for chunk in frames.split(_CHUNK):
        active = chunk > 0
        on_c = active[:, 1] if channels > 1 else active[:, 0]
        off_c = active[:, 0]
        on += on_c.sum(0).cpu()
        off += off_c.sum(0).cpu()
        both += (on_c & off_c).sum(0).cpu()
    total = frames.shape[0]
    return torch.stack([total - on - off + both, on - both, off - both, both]).numpy()
