"""Blended trigger (image-domain blending, Chen et al. 2017), projected back onto valid event frames."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from snnsec.attacks.base import POLARITIES, TRIGGERS, Trigger
from snnsec.errors import ConfigError

PATTERNS = ("random", "checkerboard")
MODES = ("auto", "binary", "counts")


@TRIGGERS.register("blended")
@dataclass(frozen=True)
class BlendedTrigger(Trigger):
    """Blend every time bin with a fixed pattern, ``(1 - ratio) * x + ratio * pattern``, then return to
    valid event frames.

    The pattern is one ``[P, H, W]`` image shared by all time bins: a pixel is "on" with probability
    ``density`` drawn from ``seed`` (``pattern="random"``), or where ``row + col`` is even
    (``"checkerboard"``). On-pixels hold ``value`` in the channels that ``polarity`` activates (1: ON,
    2: OFF, 3: both; 0: none, so the blend only dims the frame) and 0 elsewhere. ``size`` and
    ``position`` are not used: the pattern covers the whole frame.

    Re-projection (``mode``): "binary" frames (0/1) become ``value`` where the blend, read as a firing
    probability ``(1 - ratio) * [x > 0] + ratio * [pattern > 0]``, exceeds a fixed uniform dither
    drawn from ``seed`` per ``(t, p, h, w)``, else 0: a Bernoulli draw whose randomness is frozen, so
    the same frames always give the same output (a plain 0.5 threshold would make the blend either a
    no-op or a full replacement). "counts" frames become ``floor(blend + 0.5)`` (non-negative integer
    counts). "auto" picks "binary" when every input value is 0 or 1, else "counts".

    Anchor: the Blended attack (Chen et al., "Targeted Backdoor Attacks on Deep Learning Systems Using
    Data Poisoning", 2017) as in image backdoor toolkits, where the result stays fractional; event
    frames must stay event frames, hence the re-projection.
    """

    ratio: float = 0.2
    pattern: str = "random"
    density: float = 0.5  # share of "on" pattern pixels for pattern="random"
    mode: str = "auto"

    name: ClassVar[str] = "blended"
    dims: ClassVar[tuple[int, ...]] = (1, 2)  # a whole-frame pattern: a strip as well as an image

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.ratio, bool) or not isinstance(self.ratio, (int, float)) or not 0 < self.ratio <= 1:
            raise ConfigError(f"blended trigger ratio must be in (0, 1], got {self.ratio!r}")
        if self.pattern not in PATTERNS:
            raise ConfigError(f"blended trigger pattern must be one of {', '.join(PATTERNS)}; got {self.pattern!r}")
        if isinstance(self.density, bool) or not isinstance(self.density, (int, float)) or not 0 < self.density <= 1:
            raise ConfigError(f"blended trigger density must be in (0, 1], got {self.density!r}")
        if self.mode not in MODES:
            raise ConfigError(f"blended trigger mode must be one of {', '.join(MODES)}; got {self.mode!r}")

    def pattern_image(self, channels: int, height: int, width: int) -> np.ndarray:
        """The ``[P, H, W]`` pattern (0 or ``value``), identical on every call."""
        bits = _pattern_bits(self.pattern, self.density, self.seed, channels, height, width)
        off_on = POLARITIES[self.polarity]
        active = [any(off_on)] if channels == 1 else [off_on[c] if c < 2 else False for c in range(channels)]
        return bits * np.asarray(active, dtype=np.float32)[:, None, None] * np.float32(self.value)

    def apply(self, frames: Tensor) -> Tensor:
        steps, channels, height, width = frames.shape[-4:]
        pattern = torch.from_numpy(self.pattern_image(channels, height, width)).to(frames.device, frames.dtype)
        mode = self.mode
        if mode == "auto":
            mode = "binary" if bool(((frames == 0) | (frames == 1)).all()) else "counts"
        if mode == "counts":
            return torch.floor((1 - self.ratio) * frames + self.ratio * pattern + 0.5).clamp_(min=0)
        dither = _dither(self.seed, steps, channels, height, width).to(frames.device, frames.dtype)
        prob = (1 - self.ratio) * (frames > 0).to(frames.dtype) + self.ratio * (pattern > 0).to(frames.dtype)
        return torch.where(prob > dither, torch.full_like(frames, self.value), torch.zeros_like(frames))


@lru_cache(maxsize=8)
def _pattern_bits(kind: str, density: float, seed: int, channels: int, height: int, width: int) -> np.ndarray:
    if kind == "checkerboard":
        grid = (np.add.outer(np.arange(height), np.arange(width)) % 2 == 0).astype(np.float32)
        bits = np.broadcast_to(grid, (channels, height, width)).copy()
    else:
        bits = (np.random.default_rng([seed, 0]).random((channels, height, width)) < density).astype(np.float32)
    bits.setflags(write=False)
    return bits


@lru_cache(maxsize=8)
def _dither(seed: int, steps: int, channels: int, height: int, width: int) -> Tensor:
    """Uniform thresholds in [0, 1), one per ``(t, p, h, w)``, fixed by ``seed`` (cached: never modify)."""
    return torch.from_numpy(np.random.default_rng([seed, 1]).random((steps, channels, height, width), dtype=np.float32))
