"""Event-stream purification: tonic's denoising and refractory filters applied to the raw events, before
framing, as an event camera's on-chip filters would.

This acts where a physical trigger lives, so it needs an attack whose trigger is in the event stream
(``--injection event``); for triggers painted on frames, ``event-purification`` filters the binned stream.
``Denoise`` keeps an event when a neighbouring pixel fired within ``filter_time_us`` before it;
``RefractoryPeriod`` drops events closer than ``refractory_us`` to the pixel's previous event. The model sees
the re-framed purified events (nothing is rejected); the suspicion score is the fraction of an input's
events that the filters removed, and the threshold is set on the defender's clean reserve.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from tonic import transforms
from torch import Tensor
from torch.utils.data import Dataset

from snnsec.attacks.event_injection import EventInjector, EventPoisonedFrames
from snnsec.attacks.poisoning import FrameDataset
from snnsec.defenses.base import (
    DEFENSES,
    DefenseContext,
    DefenseResult,
    GroundTruth,
    InputFilter,
    batches,
    dataset_labels,
    judge_inputs,
    judged,
    require,
)
from snnsec.errors import ConfigError
from snnsec.framing import FramingConfig, encode, events_to_frames

METHODS = ("denoise", "refractory", "both")


class PurifiedEvents(Dataset):
    """``(frames, label, removed_fraction)`` of samples re-framed from their raw events, with ``injector``'s
    trigger added first (if any) and ``purify`` applied. ``events[i]`` is sample ``i``'s ``(events, label)``."""

    def __init__(self, events: Sequence[tuple[np.ndarray, int]], labels: np.ndarray, sensor_size: tuple[int, ...],
                 framing: FramingConfig, purify: Callable[[np.ndarray], np.ndarray],
                 injector: EventInjector | None = None) -> None:
        self.events, self.labels, self.sensor_size = events, np.asarray(labels), tuple(sensor_size)
        self.framing, self.purify, self.injector = framing, purify, injector

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int, float]:
        events, _ = self.events[index]
        if self.injector is not None:
            events = self.injector.inject(events, self.sensor_size)
        kept = self.purify(events)
        counts = events_to_frames(kept, self.sensor_size, self.framing.frames, self.framing.slicing, self.framing.size,
                                  self.framing.bin_us)
        removed = 1.0 - len(kept) / max(len(events), 1)
        return torch.from_numpy(encode(counts, self.framing.encoding)), int(self.labels[index]), removed


class _ByRow:
    """``raw`` events of a frame dataset's samples, by position (``base.rows`` maps them): evaluation only."""

    def __init__(self, base: FrameDataset, raw) -> None:
        self.base, self.raw = base, raw

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        return self.raw[int(self.base.rows[index])]


@DEFENSES.register("stream-purification")
@dataclass(frozen=True)
class StreamPurification(InputFilter):
    method: str = "both"  # denoise, refractory or both
    filter_time_us: float = 10_000.0  # Denoise support window
    refractory_us: float = 1_000.0  # RefractoryPeriod per pixel

    name: ClassVar[str] = "stream-purification"
    summary: ClassVar[str] = "tonic Denoise / RefractoryPeriod on the raw events (event-injected triggers)"
    rejects: ClassVar[bool] = False

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.method in METHODS, f"method must be one of {', '.join(METHODS)}; got {self.method!r}")
        require(self.filter_time_us > 0, f"filter_time_us must be > 0, got {self.filter_time_us}")
        require(self.refractory_us >= 0, f"refractory_us must be >= 0, got {self.refractory_us}")

    def filters(self) -> Callable[[np.ndarray], np.ndarray]:
        steps = []
        if self.method in ("denoise", "both"):
            steps.append(transforms.Denoise(filter_time=self.filter_time_us))
        if self.method in ("refractory", "both"):
            steps.append(transforms.RefractoryPeriod(delta=int(self.refractory_us)))
        return transforms.Compose(steps)

    def scorer(self, ctx: DefenseContext) -> Callable[[Tensor], np.ndarray]:
        raise ConfigError("stream-purification scores raw events, not frames")

    def defend(self, ctx: DefenseContext, truth: GroundTruth) -> DefenseResult:
        triggered = truth.triggered_test
        if not isinstance(triggered, EventPoisonedFrames) or ctx.reserve_events is None:
            raise ConfigError("stream-purification filters the raw event stream, so it needs an attack whose trigger "
                              "is in it (--injection event); for frame triggers use event-purification")
        purify = self.filters()
        reserve = PurifiedEvents(ctx.reserve_events, dataset_labels(ctx.clean_reserve), ctx.reserve_events.sensor_size,
                                 ctx.framing, purify)
        sensor = triggered.sensor_size
        clean = PurifiedEvents(_ByRow(truth.test_set, triggered.raw), truth.test_set.labels, sensor, ctx.framing,
                               purify)
        attacked = PurifiedEvents(_ByRow(triggered.base, triggered.raw), triggered.labels, sensor, ctx.framing, purify,
                                  triggered.injector)
        reserve_scores = np.concatenate([removed.numpy() for _, _, removed in batches(reserve)])
        return judge_inputs(reserve_scores, self._judged(ctx, clean), self._judged(ctx, attacked),
                            self.false_rejection, self.rejects)

    @staticmethod
    def _judged(ctx: DefenseContext, dataset: PurifiedEvents) -> dict[str, np.ndarray]:
        return judged(ctx, ((frames, y, removed.numpy()) for frames, y, removed in batches(dataset)))
