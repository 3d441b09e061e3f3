"""Event filters as defenses in front of a model: the background-activity filter and the mask filter of
DVS-Attacks (Marchisio et al., IJCNN 2021; albertomarchisio/DVS-Attacks, ``NMNIST/NMNISTAttacks.ipynb``).

A filter maps one structured event stream (x, y, t, p; t in microseconds) to the events it keeps, sorted;
``create_event_filter(name, **options)`` builds one (``snnsec evade --filter NAME --filter-opt K=V``).

- ``ba`` (background activity): events are processed in time order; each event stamps its neighbours within
  ``s`` pixels (not itself) with its time; an event is kept when its own pixel's stamp is less than ``T``
  old, i.e. a neighbouring pixel fired less than ``T`` before it. Reference defaults when attacking with
  the filter on: ``s = 2``, ``T = 5`` time steps of 1 ms (``time_us = 5000``). The reference stamps only
  pixels with both coordinates >= 1 (``i > 0 and j > 0``: events in row or column 0 are kept only before
  ``T``); ``reference_bounds=True`` reproduces that, the default stamps every pixel on the sensor.
- ``mask``: a pixel whose activity over the whole sample exceeds ``threshold`` is silenced (all its events
  dropped). Activity as the reference counts it: the sum, over both polarities, of the 1 ms time steps in
  which the pixel fired (its spike tensor at ``samplingTime = 1``), i.e. distinct ``(p, t // bin_us)``
  per pixel with ``bin_us = 1000``; the reference sweeps the threshold over 5..55.
- ``purify``: the ``stream-purification`` defense's tonic Denoise / RefractoryPeriod filters.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np

from snnsec.attacks.base import check_options
from snnsec.errors import ConfigError


@dataclass(frozen=True)
class EventFilter(ABC):
    name: ClassVar[str] = "filter"

    def params(self) -> dict[str, Any]:
        return {"filter": self.name, **asdict(self)}

    @abstractmethod
    def __call__(self, events: np.ndarray, sensor_size: tuple[int, int, int]) -> np.ndarray:
        """The events this filter keeps, sorted by time."""


@dataclass(frozen=True)
class BackgroundActivityFilter(EventFilter):
    s: int = 2  # neighbourhood radius in pixels
    time_us: int = 5000  # T: a neighbour must have fired less than this long before
    reference_bounds: bool = False  # the reference's i > 0 and j > 0: row and column 0 are never stamped

    name: ClassVar[str] = "ba"

    def __post_init__(self) -> None:
        if self.s < 1:
            raise ConfigError(f"ba filter s must be >= 1, got {self.s}")
        if self.time_us <= 0:
            raise ConfigError(f"ba filter time_us must be > 0, got {self.time_us}")

    def __call__(self, events: np.ndarray, sensor_size: tuple[int, int, int]) -> np.ndarray:
        return events[self.keep(events, sensor_size)]

    def keep(self, events: np.ndarray, sensor_size: tuple[int, int, int]) -> np.ndarray:
        """Per event: kept? (vectorised: for each neighbour offset, the last earlier event at that pixel)."""
        n = len(events)
        if n == 0:
            return np.zeros(0, dtype=bool)
        width, height = sensor_size[0], sensor_size[1]
        order = np.argsort(events["t"], kind="stable")
        x = events["x"][order].astype(np.int64)
        y = events["y"][order].astype(np.int64)
        t = events["t"][order].astype(np.int64)
        pixel = x * height + y
        index = np.arange(n)
        key = pixel * n + index  # sorted by pixel, then processing order
        sort = np.argsort(key)
        keys, times = key[sort], t[sort]
        stamp = np.zeros(n, dtype=np.int64)  # the pixel's stamp when the event arrives (0 = never stamped)
        stampable = (x >= 1) & (y >= 1) if self.reference_bounds else np.ones(n, dtype=bool)
        for dx in range(-self.s, self.s + 1):
            for dy in range(-self.s, self.s + 1):
                if dx == 0 and dy == 0:
                    continue
                nx, ny = x + dx, y + dy
                valid = (nx >= 0) & (nx < width) & (ny >= 0) & (ny < height) & stampable
                target = (nx * height + ny) * n + index  # the neighbour pixel's events before this one
                where = np.searchsorted(keys, target, side="left") - 1
                found = valid & (where >= 0)
                found[found] &= keys[where[found]] // n == (nx * height + ny)[found]
                stamp = np.where(found, np.maximum(stamp, times[np.clip(where, 0, None)]), stamp)
        kept = np.empty(n, dtype=bool)
        kept[order] = t - stamp < self.time_us
        return kept


@dataclass(frozen=True)
class MaskFilter(EventFilter):
    threshold: int = 20  # a pixel active in more time steps than this (both polarities summed) is silenced
    bin_us: int = 1000  # the time step activity is counted in (the reference's 1 ms spike tensor)

    name: ClassVar[str] = "mask"

    def __post_init__(self) -> None:
        if self.threshold < 0:
            raise ConfigError(f"mask filter threshold must be >= 0, got {self.threshold}")
        if self.bin_us < 1:
            raise ConfigError(f"mask filter bin_us must be >= 1, got {self.bin_us}")

    def activity(self, events: np.ndarray, sensor_size: tuple[int, int, int]) -> np.ndarray:
        """Per pixel ``[W, H]``: time steps with an event, summed over polarities."""
        width, height = sensor_size[0], sensor_size[1]
        activity = np.zeros((width, height), dtype=np.int64)
        if len(events):
            cells = np.unique(np.stack([events["x"].astype(np.int64), events["y"].astype(np.int64),
                                        (events["p"] > 0).astype(np.int64),
                                        events["t"].astype(np.int64) // self.bin_us]), axis=1)
            np.add.at(activity, (cells[0], cells[1]), 1)
        return activity

    def __call__(self, events: np.ndarray, sensor_size: tuple[int, int, int]) -> np.ndarray:
        loud = self.activity(events, sensor_size) > self.threshold
        return events[~loud[events["x"].astype(np.int64), events["y"].astype(np.int64)]]


@dataclass(frozen=True)
class PurificationFilter(EventFilter):
    """The ``stream-purification`` defense's filters (tonic ``Denoise`` and/or ``RefractoryPeriod``) in front
    of the model: the same settings, the same code (:meth:`StreamPurification.filters`)."""

    method: str = "both"
    filter_time_us: float = 10_000.0
    refractory_us: float = 1_000.0

    name: ClassVar[str] = "purify"

    def __post_init__(self) -> None:
        self.purifier()  # validates

    def purifier(self):
        from snnsec.defenses.stream_purification import StreamPurification

        return StreamPurification(method=self.method, filter_time_us=self.filter_time_us,
                                  refractory_us=self.refractory_us).filters()

    def __call__(self, events: np.ndarray, sensor_size: tuple[int, int, int]) -> np.ndarray:
        kept = self.purifier()(events)
        return kept[np.argsort(kept["t"], kind="stable")] if len(kept) else kept


EVENT_FILTERS: dict[str, type[EventFilter]] = {"ba": BackgroundActivityFilter, "mask": MaskFilter,
                                               "purify": PurificationFilter}


def create_event_filter(name: str, **options: Any) -> EventFilter:
    """Filter ``name`` with ``options``; unknown names or options are one-line errors."""
    if name not in EVENT_FILTERS:
        raise ConfigError(f"unknown event filter {name!r}; choose one of: {', '.join(EVENT_FILTERS)}")
    cls = EVENT_FILTERS[name]
    check_options("event filter", name, cls, options, ())
    return cls(**options)
