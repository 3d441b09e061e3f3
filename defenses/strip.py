"""STRIP (Gao et al., ACSAC 2019) for event frames: superimpose, then measure prediction entropy.

Each input is overlaid, frame by frame, with ``overlays`` clean reserve samples: on binary frames the
union of both event sets (``max``), on count frames the sum of counts. A backdoored model keeps
predicting the target on triggered inputs whatever is overlaid (low entropy); clean inputs become
ambiguous (high entropy). Entropy is taken from softmax probabilities (never logits, which give NaN);
the score is the negated mean entropy, so higher = more suspicious.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from snnsec.defenses.base import DEFENSES, DefenseContext, InputFilter, require


@DEFENSES.register("strip")
@dataclass(frozen=True)
class Strip(InputFilter):
    overlays: int = 8  # clean samples superimposed on each input

    name: ClassVar[str] = "strip"
    summary: ClassVar[str] = "low prediction entropy under frame-wise superimposition of clean samples"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.overlays >= 1, f"overlays must be >= 1, got {self.overlays}")

    def scorer(self, ctx: DefenseContext) -> Callable[[Tensor], np.ndarray]:
        pool = torch.stack([ctx.clean_reserve[i][0] for i in range(len(ctx.clean_reserve))])
        binary = bool(((pool == 0) | (pool == 1)).all())

        def score(frames: Tensor) -> np.ndarray:
            generator = torch.Generator().manual_seed(ctx.seed)
            entropy = torch.zeros(len(frames), dtype=torch.float64)
            for _ in range(self.overlays):
                overlay = pool[torch.randint(len(pool), (len(frames),), generator=generator)]
                mixed = torch.maximum(frames, overlay) if binary else frames + overlay
                p = ctx.model.probabilities(mixed.to(ctx.model.device)).cpu().double()
                entropy -= (p * torch.log(p.clamp_min(1e-12))).sum(1)
            return -(entropy / self.overlays).numpy()

        return score
