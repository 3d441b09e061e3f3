"""Trigger contract and registry.

A trigger is a frozen dataclass whose ``apply`` is a pure function of frames ``[..., T, P, H, W]``
(any leading batch axes, any device): same parameters, same output, so the trigger the model was
trained on is exactly the one tested. Channel 0 holds OFF events (p=0), channel 1 ON events (p=1).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from torch import Tensor

from snnsec.errors import ConfigError
from snnsec.registry import Registry

POSITIONS = ("top-left", "top-right", "bottom-left", "bottom-right", "middle", "random")

#: Sneaky Spikes' polarity ("color") codes -> value written to (OFF channel, ON channel); None keeps a channel.
POLARITIES: dict[int, tuple[bool, bool]] = {
    0: (False, False),  # both channels cleared: a "black" patch
    1: (False, True),  # ON events only
    2: (True, False),  # OFF events only
    3: (True, True),  # both polarities
}


@dataclass(frozen=True)
class Trigger(ABC):
    """Base for all triggers: validated parameters shared by patch triggers."""

    size: float = 0.1  # side as a fraction of the frame width
    position: str = "bottom-right"
    polarity: int = 1
    value: float = 1.0  # what an active trigger pixel holds (1 on binary frames; an event count on count frames)
    seed: int = 0  # fixes "random" positions; identical for the train and test sets

    name: ClassVar[str] = "trigger"
    #: Frame layouts the trigger works on: 2 = images [T, P, H, W], 1 = channel strips [T, 1, 1, W] (audio).
    dims: ClassVar[tuple[int, ...]] = (2,)

    def __post_init__(self) -> None:
        if not 0 < self.size <= 1:
            raise ConfigError(f"trigger size is a fraction of the frame width in (0, 1], got {self.size}")
        if self.position not in POSITIONS:
            raise ConfigError(f"trigger position must be one of {', '.join(POSITIONS)}; got {self.position!r}")
        if self.polarity not in POLARITIES:
            raise ConfigError(
                f"trigger polarity must be 0 (both off), 1 (ON), 2 (OFF) or 3 (both); got {self.polarity!r}"
            )
        if not self.value > 0:
            raise ConfigError(f"trigger value must be > 0, got {self.value}")

    @abstractmethod
    def apply(self, frames: Tensor) -> Tensor:
        """Return triggered frames of the same shape; never modifies ``frames`` in place."""

    def fit(self, train_frames: Tensor) -> Trigger:
        """Resolve data-dependent parameters from clean training frames ``[N, T, P, H, W]`` (a sample of
        the set); returns the trigger used for both training and testing. Plain triggers return self."""
        return self

    def params(self) -> dict[str, Any]:
        return {"trigger": self.name, **asdict(self)}


TRIGGERS: Registry[type[Trigger]] = Registry("trigger", "snnsec.triggers")

COMMON_OPTIONS = ("size", "position", "polarity", "value", "seed")


def check_options(kind: str, name: str, cls: type, params: dict[str, Any], common: tuple[str, ...]) -> None:
    """Raise a ConfigError naming the options of dataclass ``cls`` when ``params`` has one it lacks."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(params) - known)
    if unknown:
        options = [*common, *sorted(known - set(common))]
        raise ConfigError(f"{kind} {name!r} has no option(s) {unknown}; its options: {', '.join(options) or '(none)'}")


def create_trigger(name: str, **params: Any) -> Trigger:
    """Build trigger ``name``; an option it does not take is an error listing the options it does take."""
    trigger_cls = TRIGGERS.get(name)
    check_options("trigger", name, trigger_cls, params, COMMON_OPTIONS)
    return trigger_cls(**params)
