"""Moving trigger (Sneaky Spikes): a square patch that moves a fixed number of pixels per time bin."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from snnsec.attacks.base import TRIGGERS, Trigger
from snnsec.attacks.patch import fold, paint_per_bin, patch_origin, patch_side
from snnsec.errors import ConfigError

PATHS = ("horizontal", "vertical", "diagonal")
BOUNDARIES = ("bounce", "wrap")


@TRIGGERS.register("moving")
@dataclass(frozen=True)
class MovingTrigger(Trigger):
    """A ``size`` patch of polarity ``polarity`` painted in EVERY time bin, at a position that moves.

    In bin ``t`` the patch's top-left corner is ``start + direction * speed * t`` along the moving axes
    (``path``: "horizontal" moves the column, "vertical" the row, "diagonal" both), folded back into the
    frame so that the whole patch always stays inside it: ``boundary="bounce"`` reflects off the edges
    (a triangle wave), ``"wrap"`` re-enters at the opposite edge (``offset mod (last + 1)``). ``start``
    is ``position``'s corner ("random": drawn from ``seed``); the initial direction points into the
    frame: leftwards from a right corner, upwards from a bottom corner, else right/down.

    Anchor: Sneaky Spikes' ``create_moving_trigger`` hopped between three positions ``side + 2`` px apart
    and skipped the last time bin; here every bin, including the last, carries the patch, and the path,
    speed and boundary are explicit (``speed = side + 2`` with "horizontal" resembles the reference).
    """

    path: str = "horizontal"
    speed: int = 1  # pixels per time bin along each moving axis
    boundary: str = "bounce"

    name: ClassVar[str] = "moving"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.path not in PATHS:
            raise ConfigError(f"moving trigger path must be one of {', '.join(PATHS)}; got {self.path!r}")
        if isinstance(self.speed, bool) or not isinstance(self.speed, int) or self.speed < 1:
            raise ConfigError(f"moving trigger speed is an int >= 1 (pixels per time bin), got {self.speed!r}")
        if self.boundary not in BOUNDARIES:
            raise ConfigError(f"moving trigger boundary must be one of {', '.join(BOUNDARIES)}; got {self.boundary!r}")

    def origins(self, steps: int, height: int, width: int) -> list[tuple[int, int]]:
        """Top-left corner (row, col) of the patch in each of ``steps`` time bins."""
        side = patch_side(self.size, height, width)
        row0, col0 = patch_origin(self.position, side, height, width, self.seed)
        d_row = -1 if self.position.startswith("bottom") else 1
        d_col = -1 if self.position.endswith("right") else 1
        moves_row = self.path in ("vertical", "diagonal")
        moves_col = self.path in ("horizontal", "diagonal")
        out = []
        for t in range(steps):
            row = fold(row0 + d_row * self.speed * t, height - side, self.boundary) if moves_row else row0
            col = fold(col0 + d_col * self.speed * t, width - side, self.boundary) if moves_col else col0
            out.append((row, col))
        return out

    def apply(self, frames: Tensor) -> Tensor:
        steps, height, width = frames.shape[-4], frames.shape[-2], frames.shape[-1]
        side = patch_side(self.size, height, width)
        return paint_per_bin(frames, self.origins(steps, height, width), side, self.polarity, self.value)
