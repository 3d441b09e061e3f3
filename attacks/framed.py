"""Framed trigger (Flashy Backdoor): a static patch present only in one window of consecutive time bins."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from snnsec.attacks.base import TRIGGERS, Trigger
from snnsec.attacks.patch import check_time_window, paint, patch_origin, patch_side, time_window


@TRIGGERS.register("framed")
@dataclass(frozen=True)
class FramedTrigger(Trigger):
    """The static patch (``size``, ``position``, ``polarity``, ``value``) painted in the time bins
    ``[first, first + count)`` only; every other bin is left untouched.

    ``start``/``length`` are bins (int) or fractions of T (float): ``first = floor(start * T)``,
    ``count = max(1, floor(length * T + 0.5))``; a window reaching past the last bin is an error.

    Anchor: Flashy Backdoor's "Framed Backdoor" is its static trigger restricted to a subset of the
    frames (``--type static --start S --trigger_length L``, ``get_attack_frames``): "framed" refers to
    time frames, not to a border drawn around the image. Its ``--random`` start, re-drawn for every
    dataset build, is not reproduced: the window is fixed, identical for training and testing.
    """

    start: int | float = 0
    length: int | float = 0.25

    name: ClassVar[str] = "framed"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_time_window(self.start, self.length)

    def apply(self, frames: Tensor) -> Tensor:
        height, width = frames.shape[-2:]
        side = patch_side(self.size, height, width)
        row, col = patch_origin(self.position, side, height, width, self.seed)
        first, end = time_window(self.start, self.length, frames.shape[-4])
        out = frames.clone()
        paint(out, row, col, side, self.polarity, self.value, time_index=slice(first, end))
        return out
