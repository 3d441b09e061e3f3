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
    name: ClassVar[str] = "static"

    def apply(self, frames: Tensor) -> Tensor:
        height, width = frames.shape[-2:]
        side = patch_side(self.size, height, width)
        row, col = patch_origin(self.position, side, height, width, self.seed)
        out = frames.clone()
        paint(out, row, col, side, self.polarity, self.value)
        return out
