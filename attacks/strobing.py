"""Strobing trigger (Flashy Backdoor): a static patch that blinks, on for ``on`` bins in every ``period``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from snnsec.attacks.base import TRIGGERS, Trigger
from snnsec.attacks.patch import check_time_window, paint, patch_origin, patch_side, time_window
from snnsec.errors import ConfigError


@TRIGGERS.register("strobing")
@dataclass(frozen=True)
class StrobingTrigger(Trigger):
    """The static patch (``size``, ``position``, ``polarity``, ``value``) painted in exactly the bins ``t``
    of the window ``[first, end)`` with ``(t - first) % period < on``: ``on`` bins with the patch, then
    ``period - on`` clean bins, repeated; bins outside the window are untouched.

    The window is ``start``/``length`` in bins (int) or fractions of T (float), as in ``framed``
    (``first = floor(start * T)``, ``count = max(1, floor(length * T + 0.5))``); the default is all of T.
    Example: T=8, period=3, on=1 gives bins 0, 3, 6.

    Anchor: Flashy Backdoor's "Strobing Backdoor" (``--strobe_on_duration`` = ``on``, ``--strobe_gap`` =
    ``period - on``, ``--start``/``--trigger_length`` = the window). Its ``get_attack_frames`` could put
    on-bins past the requested trigger length; here every on-bin lies inside the window.
    """

    start: int | float = 0
    length: int | float = 1.0
    period: int = 2
    on: int = 1

    name: ClassVar[str] = "strobing"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_time_window(self.start, self.length)
        for field, x in (("period", self.period), ("on", self.on)):
            if isinstance(x, bool) or not isinstance(x, int):
                raise ConfigError(f"strobing trigger {field} is a number of time bins (int), got {x!r}")
        if self.period < 2:
            raise ConfigError(f"strobing trigger period must be >= 2 bins (1 would never blink), got {self.period}")
        if not 1 <= self.on < self.period:
            raise ConfigError(f"strobing trigger on must be 1 to period - 1 = {self.period - 1} bins, got {self.on}")

    def bins(self, steps: int) -> list[int]:
        """The time bins that carry the patch, for sequences of ``steps`` bins."""
        first, end = time_window(self.start, self.length, steps)
        return [t for t in range(first, end) if (t - first) % self.period < self.on]

    def apply(self, frames: Tensor) -> Tensor:
        height, width = frames.shape[-2:]
        side = patch_side(self.size, height, width)
        row, col = patch_origin(self.position, side, height, width, self.seed)
        out = frames.clone()
        for t in self.bins(frames.shape[-4]):
            paint(out, row, col, side, self.polarity, self.value, time_index=t)
        return out
