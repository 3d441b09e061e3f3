"""Raw-event evasion attacks: the attacker edits the event stream before framing, as a physical attacker
(a light, an occluder) would, and only the hard, valid stream is scored after framing.

An :class:`EventAttack` takes each sample's structured events (fields x, y, t, p; sorted by t) and returns
new streams inside the sensor, sorted, with valid polarity, whose edits (events inserted, deleted and
polarity-flipped, counted by :func:`~snnsec.attacks.evasion.domains.check_event_stream`) fit the budget
``Budget("events", B)``: at most B edits in total. :class:`EventView` is how the victim sees a stream: an
optional event filter (a defense in front of the model), the framing and the encoding; attacks query the
model only through ``view.frames`` and the :class:`~snnsec.attacks.evasion.base.Victim`.
"""
from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from snnsec.attacks.evasion.base import EvasionAttack, Goal, Victim
from snnsec.attacks.evasion.domains import Budget, Domain
from snnsec.errors import ConfigError
from snnsec.framing import FramingConfig, encode, events_to_frames

EventFilter = Callable[[np.ndarray, tuple[int, int, int]], np.ndarray]


@dataclass(frozen=True)
class EventView:
    """How the model sees a raw stream: ``event_filter`` (None: none), then framing and encoding."""

    sensor_size: tuple[int, int, int]  # (W, H, P), tonic's order
    framing: FramingConfig
    event_filter: EventFilter | None = None

    def filtered(self, events: np.ndarray) -> np.ndarray:
        return events if self.event_filter is None else self.event_filter(events, self.sensor_size)

    def frames(self, events: np.ndarray) -> Tensor:
        """Float frames ``[T, P, H, W]`` of one stream, as the model is shown them."""
        counts = events_to_frames(self.filtered(events), self.sensor_size, self.framing.frames, self.framing.slicing,
                                  self.framing.size, self.framing.bin_us)
        return torch.from_numpy(np.asarray(encode(counts, self.framing.encoding), dtype=np.float32))

    def batch(self, streams: Sequence[np.ndarray], device: torch.device | str = "cpu") -> Tensor:
        return torch.stack([self.frames(e) for e in streams]).to(device)

    def without_filter(self) -> EventView:
        return EventView(self.sensor_size, self.framing, None)


@dataclass(frozen=True)
class EventStreams(Domain):
    """Raw event streams; budget: events inserted + deleted + flipped (``Budget("events", B)``)."""

    name: ClassVar[str] = "events"
    norms: ClassVar[tuple[str, ...]] = ("events",)
    default_norm: ClassVar[str] = "events"

    def valid(self, x: Tensor) -> Tensor:
        """Framed streams: finite event counts >= 0 (the streams themselves: ``check_event_stream``)."""
        return (torch.isfinite(x) & (x >= 0)).flatten(1).all(1)

    def project(self, x: Tensor, x_relaxed: Tensor, budget: Budget) -> Tensor:
        raise ConfigError("raw-event attacks edit streams, not frames: there are no frames to project")


class EventAttack(EvasionAttack):
    """Base of raw-event attacks (see module doc). ``perturb`` (frames) does not apply."""

    domains: ClassVar[tuple[str, ...]] = ("events",)

    def perturb(self, victim: Victim, x: Tensor, goal: Goal, budget: Budget, domain: Domain,
                generator: torch.Generator) -> Tensor:
        raise ConfigError(f"evasion attack {self.name!r} edits raw event streams, not frames")

    @abstractmethod
    def perturb_events(self, victim: Victim, streams: list[np.ndarray], goal: Goal, budget: Budget, view: EventView,
                       generator: torch.Generator) -> list[np.ndarray]:
        """Adversarial streams for ``streams`` (one per sample of ``goal``), each within ``budget`` edits of
        its clean stream; a sample the attack cannot break comes back unchanged or with its best try."""


def synthetic_events(dtype: np.dtype, xs: np.ndarray, ys: np.ndarray, ts: np.ndarray, ps: np.ndarray) -> np.ndarray:
    """Structured events of ``dtype`` from coordinate arrays."""
    out = np.zeros(len(xs), dtype=dtype)
    out["x"], out["y"], out["t"], out["p"] = xs, ys, ts, ps
    return out


def merged(events: np.ndarray, added: np.ndarray) -> np.ndarray:
    """``events`` plus ``added``, sorted by time (stable: existing events first at equal times)."""
    both = np.concatenate([events, added.astype(events.dtype)])
    return both[np.argsort(both["t"], kind="stable")]
