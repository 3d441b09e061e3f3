"""Moving trigger (Sneaky Spikes): a square patch whose position changes from one time bin to the next."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from torch import Tensor

from snnsec.attacks.base import TRIGGERS, Trigger
from snnsec.attacks.patch import paint_per_bin, patch_origin, patch_side
from snnsec.errors import ConfigError

#: ``reference``: Sneaky Spikes' code; ``paper``: its paper's 2 px per bin; then free linear paths.
PATHS = ("reference", "paper", "horizontal", "vertical", "diagonal")
BOUNDARIES = ("bounce", "wrap")
PAPER_SPEED = 2  # px per time bin, as the Sneaky Spikes paper describes the moving trigger
DEFAULT_SPEED = 1  # px per time bin of the free linear paths when ``speed`` is not given


@TRIGGERS.register("moving")
@dataclass(frozen=True)
class MovingTrigger(Trigger):
    """A ``size`` patch of polarity ``polarity`` painted in EVERY time bin, at a position that moves.

    ``path="reference"`` (default) is Sneaky Spikes' ``create_moving_trigger``: the patch hops between
    three positions on one row, cycling with the bin (bin ``t`` at position ``t mod 3``). From a left
    corner the columns are ``x0, x0 + (s + 2), x0 + (2s + 2)`` (``s`` the patch side), from a right
    corner they are mirrored (``x0, x0 - (s + 2), x0 - (2s + 2)``); the row stays put. ``x0``/``y0`` is
    the corner (``W - s`` and ``H - s`` for right/bottom ones); "middle" starts at
    ``(H // 2 - 2, W // 2 - 2)`` and moves right; "random" draws ``(y0, x0)`` from ``seed`` such that
    all three positions fit (the reference's draw could push the third patch out of the frame).
    ``speed`` and ``boundary`` do not apply to it. A geometry whose three positions leave the frame is
    an error (the reference clipped or wrapped the patch silently).

    ``path="paper"`` is the paper's description: a horizontal shift of 2 px per bin
    (``horizontal`` at ``speed=2``). The free paths ``horizontal``, ``vertical`` (rows) and
    ``diagonal`` (both) put the top-left corner at ``start + direction * speed * t`` (``speed``
    default 1), folded back into the frame so the whole patch stays inside it: ``boundary="bounce"``
    reflects off the edges, ``"wrap"`` re-enters at the opposite edge (``offset mod (last + 1)``).
    ``start`` is ``position``'s corner; the direction points into the frame (leftwards from a right
    corner, upwards from a bottom corner along the vertical, else right/down).

    Fixed from the reference: its loop ran to ``T - 1`` and left the last time bin clean; here every
    bin, the last included, carries the patch (bin ``T - 1`` at position ``(T - 1) mod 3``).
    """

    path: str = "reference"
    speed: int | None = None  # px per bin along each moving axis; None: 2 for "paper", 1 for the free paths
    boundary: str = "bounce"

    name: ClassVar[str] = "moving"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.path not in PATHS:
            raise ConfigError(f"moving trigger path must be one of {', '.join(PATHS)}; got {self.path!r}")
        if self.speed is not None and (isinstance(self.speed, bool) or not isinstance(self.speed, int)
                                       or self.speed < 1):
            raise ConfigError(f"moving trigger speed is an int >= 1 (pixels per time bin), got {self.speed!r}")
        if self.boundary not in BOUNDARIES:
            raise ConfigError(f"moving trigger boundary must be one of {', '.join(BOUNDARIES)}; got {self.boundary!r}")
        check_path_options(self.path, self.speed)

    def origins(self, steps: int, height: int, width: int) -> list[tuple[int, int]]:
        """Top-left corner (row, col) of the patch in each of ``steps`` time bins."""
        side = patch_side(self.size, height, width)
        rows, cols = path_origins(self.path, self.speed, self.boundary, self.position, self.seed, side, height,
                                  width, np.arange(steps))
        return list(zip(rows.tolist(), cols.tolist()))

    def apply(self, frames: Tensor) -> Tensor:
        steps, height, width = frames.shape[-4], frames.shape[-2], frames.shape[-1]
        side = patch_side(self.size, height, width)
        return paint_per_bin(frames, self.origins(steps, height, width), side, self.polarity, self.value)


def check_path_options(path: str, speed: int | None) -> None:
    """One line when ``speed`` is given to a path that fixes its own motion."""
    if path == "reference" and speed is not None:
        raise ConfigError("moving trigger path 'reference' hops between three fixed positions; speed does not apply")
    if path == "paper" and speed not in (None, PAPER_SPEED):
        raise ConfigError(f"moving trigger path 'paper' moves {PAPER_SPEED} px per bin; use path=horizontal "
                          f"for speed={speed}")


def resolved_speed(path: str, speed: int | None) -> int:
    """Pixels per bin of a linear path."""
    return PAPER_SPEED if path == "paper" else (DEFAULT_SPEED if speed is None else speed)


def path_origins(path: str, speed: int | None, boundary: str, position: str, seed: int, side: int, height: int,
                 width: int, bins: np.ndarray, offsets: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corners (rows, cols) of the patch in time bins ``bins`` (int array), for frame- and
    event-level moving triggers alike. ``offsets`` (px moved along a linear path, same shape as ``bins``)
    overrides ``speed * bins`` for gliding event triggers; the reference path only hops per bin."""
    bins = np.asarray(bins, dtype=np.int64)
    if path == "reference":
        row0, cols = reference_positions(position, seed, side, height, width)
        return np.full(bins.shape, row0, dtype=np.int64), np.asarray(cols, dtype=np.int64)[bins % 3]
    row0, col0 = patch_origin(position, side, height, width, seed)
    step = resolved_speed(path, speed) * bins if offsets is None else np.asarray(offsets, dtype=np.int64)
    rows, cols = np.full(bins.shape, row0, dtype=np.int64), np.full(bins.shape, col0, dtype=np.int64)
    if path in ("vertical", "diagonal"):
        d_row = -1 if position.startswith("bottom") else 1
        rows = fold_offsets(row0 + d_row * step, height - side, boundary)
    if path in ("horizontal", "diagonal", "paper"):
        d_col = -1 if position.endswith("right") else 1
        cols = fold_offsets(col0 + d_col * step, width - side, boundary)
    return rows, cols


def reference_positions(position: str, seed: int, side: int, height: int, width: int) -> tuple[int, list[int]]:
    """Row and the three columns of Sneaky Spikes' moving trigger (``create_moving_trigger``)."""
    offsets = (0, side + 2, 2 * side + 2)  # the reference's spacing (the gaps are 2 px, then 0 px)
    leftward = position.endswith("right")
    if position == "middle":
        row0, col0 = height // 2 - 2, width // 2 - 2
    elif position == "random":  # all three patches inside the frame
        if width - offsets[2] - side < 0 or height - side < 0:
            raise ConfigError(_no_fit(side, height, width))
        rng = np.random.default_rng(seed)
        row0, col0 = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - offsets[2] - side + 1))
    else:
        row0 = height - side if position.startswith("bottom") else 0
        col0 = width - side if leftward else 0
    cols = [col0 - k for k in offsets] if leftward else [col0 + k for k in offsets]
    if row0 < 0 or row0 + side > height or min(cols) < 0 or max(cols) + side > width:
        raise ConfigError(_no_fit(side, height, width))
    return row0, cols


def _no_fit(side: int, height: int, width: int) -> str:
    return (f"moving trigger path 'reference' needs {side}px patches at offsets 0, {side + 2} and {2 * side + 2} px "
            f"inside {height}x{width} frames; use a smaller size, another position, or path=paper")


def fold_offsets(offset: np.ndarray, span: int, boundary: str) -> np.ndarray:
    """Offsets into ``[0, span]``: "bounce" reflects at both ends (period ``2 * span``), "wrap" re-enters at 0."""
    offset = np.asarray(offset, dtype=np.int64)
    if span == 0:
        return np.zeros_like(offset)
    if boundary == "wrap":
        return np.mod(offset, span + 1)
    m = np.mod(offset, 2 * span)
    return np.where(m <= span, m, 2 * span - m)
