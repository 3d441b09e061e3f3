"""Band triggers for 1-D spike streams (spiking audio): a band of neighbouring channels over a time window.

Audio frames are ``[T, 1, 1, W]`` (one polarity, one row, ``W`` cochlear channels). A patch there is a
*band*: ``int(size * W)`` adjacent channels (at least 1), active in the time bins of a window. In the
time x channel picture it is a rectangle (static) or a slanted stripe (moving): a tone, or a chirp
gliding across the channels, that an attacker plays into the microphone.

Parameters (frame and event level alike):

* ``size``: band width as a fraction of the channels (``--trigger-size``).
* ``position``: ``low`` (channels ``[0, w)``; channel 0 is the lowest frequency of SHD/SSC and
  ``spoken-digits``), ``middle`` (``(W - w) // 2``), ``high`` (the last ``w``), ``random`` (drawn once
  from ``seed``); the 2-D names map by their column: ``*-left`` = low, ``*-right`` = high (so the
  CLI default ``bottom-right`` is the high channels). ``channel`` (an int) sets the first channel
  directly and overrides ``position``.
* ``start`` / ``length``: the time window, bins (int) or fractions of T (float), resolved as the
  ``framed`` trigger does (:func:`~snnsec.attacks.patch.time_window`); ``length=None`` (default) runs
  from ``start`` to the last bin (default all of T).
* ``speed``: channels per time bin (``band``: 0, static; ``moving-band``: 1); ``direction`` ``up``
  (towards higher channels) or ``down`` (default: up from low and middle, down from high);
  ``boundary`` ``bounce`` or ``wrap`` at the edges (:func:`~snnsec.attacks.moving.fold_offsets`).
  Bin ``k`` of the window has the band at ``start + direction * speed * (k - first)``.
* ``polarity``: 1-3 write ``value`` (a single-polarity sensor has one channel), 0 silences the band.

Event level (:class:`BandInjector`, ``--injection event``): every sensor channel that the framing's
resize maps into the band (``floor(x * R / W_sensor)`` in the band, ``R`` = ``resolution``, the framed
width; SHD's 700 channels onto 140: five sensor channels per framed one) fires
``events_per_pixel_per_bin`` events per active bin, one per stratum (the bin cut into that many equal
parts) at a seeded instant (the same instant for all channels with ``sync=True``). Bins follow the
framing: with ``bin_us`` (the ``window`` slicing) bin ``k`` is ``[k * bin_us, (k + 1) * bin_us)`` from
t = 0; without it the sample's ``[t_min, t_max]`` is cut into ``bins`` windows as ``time`` slicing
does (and removal keeps the first and last events, which fix those windows). ``polarity=0`` or
``replace=True`` removes the original events in the band while it is active. Framed with the same
T, slicing and resize, binary frames of an injected sample with ``replace=True`` equal the
frame-level trigger applied to the clean frames (tested).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from torch import Tensor

from snnsec.attacks.base import POLARITIES, POSITIONS, TRIGGERS, Trigger
from snnsec.attacks.event_injection import EVENT_TRIGGERS, EventInjector, _check_events, _is_int
from snnsec.attacks.moving import BOUNDARIES, fold_offsets
from snnsec.attacks.patch import check_time_window, paint, time_window
from snnsec.errors import ConfigError

BAND_POSITIONS = ("low", "middle", "high", "random")
DIRECTIONS = ("up", "down")


def band_width(size: float, channels: int) -> int:
    """Band width in channels: ``int(size * channels)``, at least 1 (the patch triggers' sizing)."""
    return max(1, min(channels, int(size * channels)))


def band_first_channel(position: str, channel: int | None, width: int, channels: int, seed: int) -> int:
    """The band's first channel at the start of its window."""
    last = channels - width
    if channel is not None:
        if not 0 <= channel <= last:
            raise ConfigError(f"band trigger channel must be in [0, {last}] for a {width}-channel band on "
                              f"{channels} channels, got {channel}")
        return channel
    if position == "low" or position.endswith("left"):
        return 0
    if position == "high" or position.endswith("right"):
        return last
    if position == "middle":
        return last // 2
    return int(np.random.default_rng(seed).integers(0, last + 1))


@dataclass(frozen=True)
class _BandGeometry:
    """The band's parameters and placement, shared by the frame- and event-level triggers."""

    channel: int | None = None  # first channel (overrides position); None: from position
    start: int | float = 0  # time window: bins (int) or fraction of T (float)
    length: int | float | None = None  # None: to the last bin
    speed: int = 0  # channels per time bin; 0: static
    direction: str | None = None  # "up" (higher channels) or "down"; None: from position
    boundary: str = "bounce"

    def _check_band(self, size: float, position: str, polarity: int) -> None:
        if not 0 < size <= 1:
            raise ConfigError(f"band width (trigger size) is a fraction of the channels in (0, 1], got {size}")
        if position not in POSITIONS + BAND_POSITIONS:
            raise ConfigError(f"band trigger position must be one of {', '.join(BAND_POSITIONS)} (or a 2-D "
                              f"position, read by its column), or give channel=N; got {position!r}")
        if polarity not in POLARITIES:
            raise ConfigError(f"trigger polarity must be 0 (silence), 1, 2 or 3 (write), got {polarity!r}")
        if self.channel is not None and (not _is_int(self.channel) or self.channel < 0):
            raise ConfigError(f"band trigger channel must be an integer >= 0, got {self.channel!r}")
        check_time_window(self.start, 1 if self.length is None else self.length)
        if not _is_int(self.speed) or self.speed < 0:
            raise ConfigError(f"band trigger speed is an int >= 0 (channels per time bin), got {self.speed!r}")
        if self.direction is not None and self.direction not in DIRECTIONS:
            raise ConfigError(f"band trigger direction must be one of {', '.join(DIRECTIONS)}, got {self.direction!r}")
        if self.boundary not in BOUNDARIES:
            raise ConfigError(f"band trigger boundary must be one of {', '.join(BOUNDARIES)}; got {self.boundary!r}")

    def window(self, steps: int) -> tuple[int, int]:
        """The active bins ``[first, end)`` of ``steps`` (``length=None``: from ``start`` to the last bin)."""
        if self.length is None:
            return time_window(self.start, 1, steps)[0], steps
        return time_window(self.start, self.length, steps)

    def band_starts(self, size: float, position: str, seed: int, steps: int,
                    channels: int) -> tuple[int, int, int, np.ndarray]:
        """``(width, first_bin, end_bin, starts)``: the band width, its time window over ``steps`` bins and
        the band's first channel in each bin of the window (``starts[k - first_bin]``)."""
        width = band_width(size, channels)
        first, end = self.window(steps)
        c0 = band_first_channel(position, self.channel, width, channels, seed)
        high = position == "high" or position.endswith("right")
        down = self.direction == "down" or (self.direction is None and high)
        offsets = (-1 if down else 1) * self.speed * np.arange(end - first, dtype=np.int64)
        return width, first, end, fold_offsets(c0 + offsets, channels - width, self.boundary)


def _require_1d(height: int, name: str) -> None:
    if height != 1:
        raise ConfigError(f"trigger {name!r} paints channel bands on 1-D (audio) frames [T, 1, 1, W]; got frames "
                          f"{height} px high (use a 2-D trigger such as static or moving)")


@TRIGGERS.register("band")
@dataclass(frozen=True)
class BandTrigger(_BandGeometry, Trigger):
    """A band of ``int(size * W)`` channels holding ``value`` in the window's bins (static by default;
    ``speed`` > 0 moves it): see the module docstring for every option."""

    name: ClassVar[str] = "band"
    dims: ClassVar[tuple[int, ...]] = (1,)

    def __post_init__(self) -> None:
        self._check_band(self.size, self.position, self.polarity)
        if not self.value > 0:
            raise ConfigError(f"trigger value must be > 0, got {self.value}")

    def apply(self, frames: Tensor) -> Tensor:
        steps, height, channels = frames.shape[-4], frames.shape[-2], frames.shape[-1]
        _require_1d(height, self.name)
        width, first, _, starts = self.band_starts(self.size, self.position, self.seed, steps, channels)
        out = frames.clone()
        for k, c in enumerate(starts.tolist()):
            paint(out, 0, c, width, self.polarity, self.value, time_index=first + k)
        return out


class _Moving:
    """The moving variant of a band trigger or injector: ``speed`` must be at least 1 channel per bin."""

    speed: int

    def __post_init__(self) -> None:
        super().__post_init__()  # type: ignore[misc]
        if self.speed < 1:
            raise ConfigError(f"moving-band speed must be >= 1 channel per bin (use 'band' for a static one), "
                              f"got {self.speed}")


@TRIGGERS.register("moving-band")
@dataclass(frozen=True)
class MovingBandTrigger(_Moving, BandTrigger):
    """:class:`BandTrigger` gliding across the channels, ``speed`` channels per bin (default 1)."""

    speed: int = 1
    name: ClassVar[str] = "moving-band"


# --------------------------------------------------------------------------------------------------
# Event level


@EVENT_TRIGGERS.register("band")
@dataclass(frozen=True)
class BandInjector(_BandGeometry, EventInjector):
    """The band as events added to the raw stream (see the module docstring); ``bin_us`` and ``resolution``
    come from the framing (``--slicing window``, ``--size``)."""

    bin_us: int | None = None  # the window slicing's bin (µs); None: time slicing over the sample's span
    resolution: int | None = None  # channels of the framed width the band geometry refers to; None: sensor

    name: ClassVar[str] = "band"
    dims: ClassVar[tuple[int, ...]] = (1,)

    def __post_init__(self) -> None:
        self._check_band(self.size, self.position, self.polarity)
        if not _is_int(self.bins) or not 1 <= self.bins <= 1024:
            raise ConfigError(f"bins (the framing's T) must be an integer in [1, 1024], got {self.bins!r}")
        if not _is_int(self.events_per_pixel_per_bin) or not 1 <= self.events_per_pixel_per_bin <= 1000:
            raise ConfigError(f"events_per_pixel_per_bin must be an integer in [1, 1000], got "
                              f"{self.events_per_pixel_per_bin!r}")
        if not _is_int(self.seed):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")
        if self.bin_us is not None and (not _is_int(self.bin_us) or self.bin_us < 1):
            raise ConfigError(f"bin_us must be an integer >= 1 (microseconds), got {self.bin_us!r}")
        if self.resolution is not None and (not _is_int(self.resolution) or self.resolution < 1):
            raise ConfigError(f"resolution must be an integer >= 1 (framed channels), got {self.resolution!r}")
        self.window(self.bins)  # the window must fit in ``bins``

    def active_bins(self) -> tuple[int, int]:
        return self.window(self.bins)

    def _span(self, t_min: int, t_max: int) -> tuple[int, int]:
        """``(origin, span)`` the ``bins`` time bins cut: fixed windows from 0, or the sample's duration."""
        return (0, self.bins * self.bin_us) if self.bin_us is not None else (t_min, t_max - t_min + 1)

    def _sensor_bands(self, channels: int, sensor_width: int) -> tuple[int, np.ndarray, np.ndarray]:
        """``(first_bin, lo, hi)``: per bin of the window, the sensor channels ``[lo, hi)`` the band covers."""
        res = self.resolution or sensor_width
        if res > sensor_width:
            raise ConfigError(f"band resolution {res} exceeds the sensor's {sensor_width} channels")
        width, first, _, starts = self.band_starts(self.size, self.position, self.seed, self.bins, res)
        del channels
        lo = -((-starts * sensor_width) // res)  # ceil(c * W / R): first sensor channel mapped to c
        hi = -((-(starts + width) * sensor_width) // res)
        return first, lo, hi

    def _bin_of(self, t: np.ndarray, origin: int, span: int) -> np.ndarray:
        return ((np.asarray(t, dtype=np.int64) - origin) * self.bins) // span

    def origins(self, t: np.ndarray, t_min: int, t_max: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Row 0 and the band's first sensor channel at timestamps ``t`` (-1 outside the window)."""
        origin, span = self._span(t_min, t_max)
        first, lo, _ = self._sensor_bands(width, width)
        k = self._bin_of(t, origin, span) - first
        inside = (k >= 0) & (k < len(lo))
        return np.zeros(np.shape(t), dtype=np.int64), np.where(inside, lo[np.clip(k, 0, len(lo) - 1)], -1)

    def covers(self, events: np.ndarray, t_min: int, t_max: int, height: int, width: int) -> np.ndarray:
        origin, span = self._span(t_min, t_max)
        first, lo, hi = self._sensor_bands(width, width)
        k = self._bin_of(events["t"], origin, span) - first
        inside = (k >= 0) & (k < len(lo))
        kk = np.clip(k, 0, len(lo) - 1)
        x = events["x"].astype(np.int64)
        return inside & (x >= lo[kk]) & (x < hi[kk])

    def inject(self, events: np.ndarray, sensor_size: tuple[int, int, int]) -> np.ndarray:
        """``events`` plus the band's events (and without the silenced ones), sorted by ``t``."""
        _check_events(events)
        width, height, _ = (int(v) for v in sensor_size)
        _require_1d(height, self.name)
        if len(events) == 0 and self.bin_us is None:
            return events.copy()
        t = events["t"].astype(np.int64)
        t_min, t_max = (int(t.min()), int(t.max())) if len(t) else (0, 0)
        keep = np.ones(len(events), dtype=bool)
        if self.polarity == 0 or self.replace:
            keep = ~self.covers(events, t_min, t_max, height, width)
            if self.bin_us is None:  # the first and last events fix the time slicing's windows
                for edge in (t_min, t_max):
                    at_edge = t == edge
                    if not keep[at_edge].any():
                        keep[np.flatnonzero(at_edge)[0]] = True
        out = np.concatenate([events[keep], self._band_events(events.dtype, t_min, t_max, width)])
        return out[np.argsort(out["t"], kind="stable")]

    def _band_events(self, dtype: np.dtype, t_min: int, t_max: int, sensor_width: int) -> np.ndarray:
        if not any(POLARITIES[self.polarity]):
            return np.zeros(0, dtype=dtype)
        origin, span = self._span(t_min, t_max)
        first, lo, hi = self._sensor_bands(sensor_width, sensor_width)
        per = self.events_per_pixel_per_bin
        n = self.bins * per
        j = np.arange(first * per, (first + len(lo)) * per, dtype=np.int64)  # the window's strata
        starts = origin - ((-j * span) // n)
        stops = origin - ((-(j + 1) * span) // n)
        ok = stops > starts
        j, starts, lengths = j[ok], starts[ok], (stops - starts)[ok]
        k = j // per - first
        counts = hi[k] - lo[k]
        rng = np.random.default_rng([self.seed, 0xBA4D])
        stratum = np.repeat(np.arange(len(j)), counts)
        x = np.repeat(lo[k] - np.cumsum(counts) + counts, counts) + np.arange(int(counts.sum()))
        draws = rng.random(len(j))[stratum] if self.sync else rng.random(len(stratum))
        out = np.zeros(len(stratum), dtype=dtype)
        out["x"] = x
        out["t"] = starts[stratum] + np.floor(draws * lengths[stratum]).astype(np.int64)
        out["p"] = 1
        return out


@EVENT_TRIGGERS.register("moving-band")
@dataclass(frozen=True)
class MovingBandInjector(_Moving, BandInjector):
    """:class:`BandInjector` gliding across the channels, ``speed`` framed channels per bin (default 1)."""

    speed: int = 1
    name: ClassVar[str] = "moving-band"
