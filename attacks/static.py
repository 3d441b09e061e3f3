"""Static trigger (Sneaky Spikes): a square patch at a fixed position in every time bin."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from snnsec.attacks.base import TRIGGERS, Trigger
from snnsec.attacks.patch import paint, patch_origin, patch_side


@TRIGGERS.register("static")
@dataclass(frozen=True)
class StaticTrigger(Trigger):
    """Sneaky Spikes' ``create_static_trigger``: side ``int(size * W)`` (at least 1 px), corners and
    "middle" (``int((W - s) / 2)``) as in the reference. Difference: "random" is drawn once from ``seed``
    in ``[0, W - s]`` and is the same for training and test frames (the reference drew from the global
    NumPy stream in ``[0, W - s)`` for every dataset it built, so its test trigger sat elsewhere)."""

    name: ClassVar[str] = "static"

    def apply(self, frames: Tensor) -> Tensor:
        height, width = frames.shape[-2:]
        side = patch_side(self.size, height, width)
        row, col = patch_origin(self.position, side, height, width, self.seed)
        out = frames.clone()
        paint(out, row, col, side, self.polarity, self.value)
        return out
