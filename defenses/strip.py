"""STRIP (Gao et al., ACSAC 2019) for event frames: superimpose, then measure prediction entropy.

Each input is overlaid, frame by frame, with ``overlays`` clean reserve samples: on binary frames the
union of both event sets (``max``), on count frames the sum of counts. A backdoored model keeps
predicting the target on triggered inputs whatever is overlaid (low entropy); clean inputs become
ambiguous (high entropy). Entropy is taken from softmax probabilities (never logits, which give NaN);
the score is the negated mean entropy over the overlays, so higher = more suspicious.

Overlays are drawn independently for every input (one seeded stream over all inputs, in order): distinct
reserve samples while the reserve has enough, else with replacement. When the reserve's own samples are
scored (for the threshold), a sample is never overlaid with itself.

Differences from the reference: ``overlays`` defaults to the paper's N = 100 (TrojanZoo uses 64; this
project's earlier default was 8, still the tests' setting); images are blended additively in the paper,
while event frames are superimposed as event unions or count sums (an additive blend of binary frames
is not an event frame); the threshold is the reserve's ``1 - false_rejection`` quantile (the paper fits a
normal distribution to the clean entropies and takes its FRR percentile).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from snnsec.defenses.base import DEFENSES, DefenseContext, InputFilter, batches, require


def overlay_choices(generator: torch.Generator, n_inputs: int, pool_size: int, overlays: int,
                    exclude: np.ndarray | None = None) -> Tensor:
    """``[n_inputs, overlays]`` pool indices, drawn independently per input: distinct while the pool (less
    ``exclude[i]``, the input's own pool index, if given) holds enough, else with replacement."""
    rows = []
    for i in range(n_inputs):
        allowed = torch.arange(pool_size)
        if exclude is not None and 0 <= exclude[i] < pool_size:
            allowed = allowed[allowed != int(exclude[i])]
        if len(allowed) == 0:
            raise ValueError("STRIP needs at least 2 reserve samples to overlay the reserve with others")
        if overlays <= len(allowed):
            rows.append(allowed[torch.randperm(len(allowed), generator=generator)[:overlays]])
        else:
            rows.append(allowed[torch.randint(len(allowed), (overlays,), generator=generator)])
    return torch.stack(rows)


@DEFENSES.register("strip")
@dataclass(frozen=True)
class Strip(InputFilter):
    overlays: int = 100  # clean samples superimposed on each input: the paper's N = 100 (TrojanZoo: 64)

    name: ClassVar[str] = "strip"
    summary: ClassVar[str] = "low prediction entropy under frame-wise superimposition of clean samples"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.overlays >= 1, f"overlays must be >= 1, got {self.overlays}")

    def scorer(self, ctx: DefenseContext) -> Callable[..., np.ndarray]:
        pool = torch.stack([ctx.clean_reserve[i][0] for i in range(len(ctx.clean_reserve))])
        binary = bool(((pool == 0) | (pool == 1)).all())
        generator = torch.Generator().manual_seed(ctx.seed)  # one stream: every input gets its own draws

        def score(frames: Tensor, exclude: np.ndarray | None = None) -> np.ndarray:
            """Negated mean entropy of each input; ``exclude[i]`` is input i's own reserve index (or -1)."""
            chosen = overlay_choices(generator, len(frames), len(pool), self.overlays, exclude)
            entropy = torch.zeros(len(frames), dtype=torch.float64)
            for k in range(self.overlays):
                overlay = pool[chosen[:, k]]
                mixed = torch.maximum(frames, overlay) if binary else frames + overlay
                p = ctx.model.probabilities(mixed.to(ctx.model.device)).cpu().double()
                entropy -= (p * torch.log(p.clamp_min(1e-12))).sum(1)
            return -(entropy / self.overlays).numpy()

        return score

    def reserve_scores(self, ctx: DefenseContext, score: Callable[..., np.ndarray]) -> np.ndarray:
        """The reserve's scores, each sample overlaid only with *other* reserve samples."""
        parts, start = [], 0
        for x, _ in batches(ctx.clean_reserve):
            parts.append(score(x, exclude=np.arange(start, start + len(x))))
            start += len(x)
        return np.concatenate(parts)
