"""Flashy trigger (Flashy Backdoor): the whole frame flashes for a short window of time bins."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from snnsec.attacks.base import TRIGGERS, Trigger
from snnsec.attacks.patch import check_time_window, paint, time_window


@TRIGGERS.register("flashy")
@dataclass(frozen=True)
class FlashyTrigger(Trigger):
    """Every pixel of the time bins ``[first, first + count)`` is set to ``polarity``'s pattern: 1 writes
    ``value`` to the ON channel and clears OFF, 2 the reverse, 3 writes ``value`` to both, 0 clears both
    (a blackout); other bins are untouched. ``size`` and ``position`` are not used: the flash covers
    the whole frame.

    ``start``/``length`` are bins (int) or fractions of T (float): ``first = floor(start * T)``,
    ``count = max(1, floor(length * T + 0.5))``; a window reaching past the last bin is an error.

    Anchor: Flashy Backdoor's ``create_flash_trigger`` (``--type flash``), which sets the full frame to
    the polarity pattern in the frames chosen by ``--start``/``--trigger_length``, emulating a camera
    flash. Its optional strobing of the flash and its ``--random`` start are not reproduced here.
    """

    start: int | float = 0
    length: int | float = 0.125

    name: ClassVar[str] = "flashy"
    dims: ClassVar[tuple[int, ...]] = (1, 2)  # the whole frame flashes: a strip as well as an image

    def __post_init__(self) -> None:
        super().__post_init__()
        check_time_window(self.start, self.length)

    def apply(self, frames: Tensor) -> Tensor:
        height, width = frames.shape[-2:]
        first, end = time_window(self.start, self.length, frames.shape[-4])
        out = frames.clone()
        paint(out, 0, 0, max(height, width), self.polarity, self.value, time_index=slice(first, end))
        return out
