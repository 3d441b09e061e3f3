"""Event-level triggers: synthetic events added to one sample's raw event stream, before framing.

A physical attacker cannot write frame pixels; they can only put something in front of the camera (a
blinking LED, a moving light, a flash, a piece of black tape) that makes the sensor emit events, or stop
it from emitting them. These injectors model that: ``injector.inject(events, sensor_size)`` returns a
new structured array (same dtype, sorted by ``t``) holding the sample's events plus the trigger's.

Rules shared by every injector (all pure functions of the parameters and the input):

* **Geometry** mirrors the frame-level triggers: a square patch of side ``int(size * width)`` px (at
  least 1; Sneaky Spikes' sizing) at
  ``position`` (:func:`~snnsec.attacks.patch.patch_side`, :func:`~snnsec.attacks.patch.patch_origin`;
  ``"random"`` is fixed by ``seed`` and is the same spot the frame-level trigger with that seed uses).
  Coordinates are sensor pixels (``x`` = column, ``y`` = row); injected events always lie on the sensor.
* **Timing** never leaves the sample's ``[t_min, t_max]``, so time slicing cuts the same windows with or
  without the trigger (the clean events land in the same bins). The duration is cut into
  ``bins * events_per_pixel_per_bin`` equal strata, with the same integer boundaries
  :func:`~snnsec.framing.events_to_frames` uses for ``bins`` windows; every trigger pixel gets one
  event per polarity in every active stratum, at a seeded uniformly random microsecond inside it:
  the same instant for all its pixels and both polarities with ``sync=True`` (the default: an LED
  panel or a flash changes all at once, and a moving patch shows as one solid square per stratum, as
  the frame-level trigger paints it), or one instant per pixel and polarity with ``sync=False`` (a
  moving patch then smears along its path within each bin).
  Framed with ``frames == bins`` and time slicing, each active time bin therefore holds exactly
  ``events_per_pixel_per_bin`` events per trigger pixel and polarity (the event-level counterpart of
  the frame triggers' ``value``). Framed with another T, or with count slicing (where the added
  events move the count-based bin edges), the trigger is still spread evenly in time.
* **Polarity codes** as in Sneaky Spikes: 1 adds ON events (p=1), 2 OFF events (p=0), 3 both (one ON
  and one OFF event per pixel and stratum). On a single-polarity sensor any of
  them adds one p=1 event per pixel and stratum. Code 0 ("both off") adds nothing and **removes** the
  original events inside the trigger region while it is active (an occluder over the lens). With
  ``replace=True`` every code also removes the original events inside the region, so binary frames
  show exactly what the frame-level trigger paints; by default (``replace=False``) codes 1-3 keep all
  original events, as light added by an attacker cannot cancel the scene's own events. Removal never
  takes the sample's first or last event (one event at ``t_min`` and one at ``t_max`` are kept even
  inside the region), since they define the time windows.
* An empty sample has no duration to spread a trigger over; it is returned unchanged (a copy).

Triggers (registered in :data:`EVENT_TRIGGERS` under the frame-level triggers' names, with their
parameters): ``static`` (a fixed patch, the whole duration), ``moving`` (``path``: the reference's
three-position hop by default, or the paper's 2 px per bin, or a free linear path with ``speed`` in
pixels per bin and ``boundary``; optionally ``continuous``) and ``flashy`` (``start``/``length`` in bins or
fractions of T, the whole sensor or, with ``area="patch"``, the patch). With ``replace=True``,
``sync=True`` and ``frames == bins`` (time slicing, binary encoding), the framed injected sample equals
the frame-level trigger applied to the clean frames, pixel for pixel (tested; removal's kept end
events aside).

The band triggers for 1-D spike streams (``band``, ``moving-band``: a band of audio channels, bins that
follow the ``window`` slicing) are registered here too, from :mod:`snnsec.attacks.band`.

The dataset wrappers at the end frame injected samples on the fly and read every other sample from
the clean frame cache, so poisoning stays a lazy view like :mod:`snnsec.attacks.poisoning`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from snnsec.attacks.base import POLARITIES, POSITIONS, check_options
from snnsec.attacks.moving import BOUNDARIES, PATHS, check_path_options, path_origins, resolved_speed
from snnsec.attacks.patch import check_time_window, patch_origin, patch_side, time_window
from snnsec.attacks.poisoning import FrameDataset, PoisonConfig, choose_poison_indices
from snnsec.datasets.base import EventDataset
from snnsec.errors import ConfigError
from snnsec.framing import FramingConfig, encode, events_to_frames
from snnsec.registry import Registry

REQUIRED_FIELDS = ("x", "y", "t", "p")
AREAS = ("sensor", "patch")


@dataclass(frozen=True)
class Window:
    """When a trigger acts on one sample (integer microseconds) and how large its region is."""

    t_start: int  # first microsecond of the active strata
    t_stop: int  # one past the last
    height: int  # region size in pixels
    width: int


@dataclass(frozen=True)
class EventInjector(ABC):
    """Base of all event-level triggers: validated parameters and the injection engine.

    Subclasses say which time bins are active (:meth:`active_bins`), how large the region is
    (:meth:`region_size`) and where its top-left corner is at each timestamp (:meth:`origins`).
    """

    size: float = 0.1  # patch side as a fraction of the sensor width
    position: str = "bottom-right"
    polarity: int = 1
    seed: int = 0  # fixes "random" positions and the events' jitter
    bins: int = 16  # the number of time bins (T) the rate refers to; use the framing's T
    events_per_pixel_per_bin: int = 1  # events per trigger pixel, polarity and time bin
    replace: bool = False  # also remove original events inside the region while it is active
    sync: bool = True  # all trigger pixels fire at the same instant per stratum (an LED blinking)

    name: ClassVar[str] = "event-trigger"
    #: Frame layouts the injector works on (see :attr:`snnsec.attacks.base.Trigger.dims`).
    dims: ClassVar[tuple[int, ...]] = (2,)

    def __post_init__(self) -> None:
        if not 0 < self.size <= 1:
            raise ConfigError(f"trigger size is a fraction of the sensor width in (0, 1], got {self.size}")
        if self.position not in POSITIONS:
            raise ConfigError(f"trigger position must be one of {', '.join(POSITIONS)}; got {self.position!r}")
        if self.polarity not in POLARITIES:
            raise ConfigError(
                f"trigger polarity must be 0 (both off), 1 (ON), 2 (OFF) or 3 (both); got {self.polarity!r}"
            )
        if not _is_int(self.bins) or not 1 <= self.bins <= 1024:
            raise ConfigError(f"bins (the framing's T) must be an integer in [1, 1024], got {self.bins!r}")
        if not _is_int(self.events_per_pixel_per_bin) or not 1 <= self.events_per_pixel_per_bin <= 1000:
            raise ConfigError(
                f"events_per_pixel_per_bin must be an integer in [1, 1000], got {self.events_per_pixel_per_bin!r}"
            )
        if not _is_int(self.seed):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")

    # -- what subclasses define --------------------------------------------------------------------

    def active_bins(self) -> tuple[int, int]:
        """Time bins ``[first, end)`` (of ``bins``) in which the trigger acts."""
        return 0, self.bins

    def region_size(self, height: int, width: int) -> tuple[int, int]:
        """(rows, cols) of the region the trigger covers."""
        side = patch_side(self.size, height, width)
        return side, side

    @abstractmethod
    def origins(self, t: np.ndarray, t_min: int, t_max: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-left corner (rows, cols) of the region at timestamps ``t`` of a sample spanning
        ``[t_min, t_max]`` (int arrays shaped like ``t``)."""

    # -- engine --------------------------------------------------------------------------------------

    def params(self) -> dict[str, Any]:
        return {"trigger": self.name, "injection": "event", **asdict(self)}

    def strata(self) -> int:
        return self.bins * self.events_per_pixel_per_bin

    def window(self, t_min: int, t_max: int, height: int, width: int) -> Window:
        """The trigger's time range on a sample spanning ``[t_min, t_max]`` and its region size."""
        n, span = self.strata(), int(t_max) - int(t_min) + 1
        first, end = self.active_bins()
        j0, j1 = first * self.events_per_pixel_per_bin, end * self.events_per_pixel_per_bin
        rows, cols = self.region_size(height, width)
        return Window(int(t_min) + _ceil_div(j0 * span, n), int(t_min) + _ceil_div(j1 * span, n), rows, cols)

    def inject(self, events: np.ndarray, sensor_size: tuple[int, int, int]) -> np.ndarray:
        """``events`` (structured, fields x, y, t, p) plus the trigger's events, sorted by ``t``."""
        _check_events(events)
        width, height, polarities = (int(v) for v in sensor_size)
        if len(events) == 0:
            return events.copy()
        t = events["t"].astype(np.int64)
        t_min, t_max = int(t.min()), int(t.max())
        window = self.window(t_min, t_max, height, width)
        keep = np.ones(len(events), dtype=bool)
        if self.polarity == 0 or self.replace:
            keep = ~self.covers(events, t_min, t_max, height, width)
            # The first and last events fix the sample's time windows: never remove both ends.
            for edge in (t_min, t_max):
                at_edge = t == edge
                if not keep[at_edge].any():
                    keep[np.flatnonzero(at_edge)[0]] = True
        added = self._synthetic(events.dtype, t_min, t_max, window, height, width, polarities)
        out = np.concatenate([events[keep], added])
        return out[np.argsort(out["t"], kind="stable")]

    def covers(self, events: np.ndarray, t_min: int, t_max: int, height: int, width: int) -> np.ndarray:
        """Boolean mask: which events lie inside the trigger region while it is active."""
        window = self.window(t_min, t_max, height, width)
        t = events["t"].astype(np.int64)
        active = (t >= window.t_start) & (t < window.t_stop)
        rows, cols = self.origins(t, t_min, t_max, height, width)
        x, y = events["x"].astype(np.int64), events["y"].astype(np.int64)
        inside = (y >= rows) & (y < rows + window.height) & (x >= cols) & (x < cols + window.width)
        return active & inside

    def _synthetic(self, dtype: np.dtype, t_min: int, t_max: int, window: Window, height: int, width: int,
                   polarities: int) -> np.ndarray:
        off_on = POLARITIES[self.polarity]
        if not any(off_on):
            return np.zeros(0, dtype=dtype)
        # p values to emit: one stream per active polarity; a single-polarity sensor gets one stream.
        streams = [1] if polarities == 1 else [p for p, active in ((0, off_on[0]), (1, off_on[1])) if active]
        n, span = self.strata(), t_max - t_min + 1
        j = np.arange(n, dtype=np.int64)
        starts = t_min + _ceil_div(j * span, n)
        stops = t_min + _ceil_div((j + 1) * span, n)
        chosen = (starts >= window.t_start) & (stops <= window.t_stop) & (stops > starts)
        starts, lengths = starts[chosen], (stops - starts)[chosen]
        dy, dx = np.divmod(np.arange(window.height * window.width, dtype=np.int64), window.width)
        rng = np.random.default_rng([self.seed, 0x5E17])
        shared = rng.random((len(starts), 1))  # sync: one instant per stratum, for every pixel and polarity
        parts = []
        for p in streams:
            draws = shared if self.sync else rng.random((len(starts), len(dx)))
            jitter = np.broadcast_to(np.floor(draws * lengths[:, None]).astype(np.int64), (len(starts), len(dx)))
            times = (starts[:, None] + jitter).ravel()
            rows, cols = self.origins(times, t_min, t_max, height, width)
            part = np.zeros(len(times), dtype=dtype)
            part["x"] = cols + np.tile(dx, len(starts))
            part["y"] = rows + np.tile(dy, len(starts))
            part["t"] = times
            part["p"] = p
            parts.append(part)
        return np.concatenate(parts)


EVENT_TRIGGERS: Registry[type[EventInjector]] = Registry("event trigger", "snnsec.event_triggers")

COMMON_OPTIONS = ("size", "position", "polarity", "seed", "bins", "events_per_pixel_per_bin", "replace", "sync")


def create_injector(name: str, **params: Any) -> EventInjector:
    """Build event trigger ``name`` (same names as the frame triggers: static, moving, flashy)."""
    injector_cls = EVENT_TRIGGERS.get(name)
    check_options("event trigger", name, injector_cls, params, COMMON_OPTIONS)
    return injector_cls(**params)


@EVENT_TRIGGERS.register("static")
@dataclass(frozen=True)
class StaticInjector(EventInjector):
    """A patch at a fixed position emitting events throughout the sample (a blinking LED)."""

    name: ClassVar[str] = "static"

    def origins(self, t: np.ndarray, t_min: int, t_max: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        side = patch_side(self.size, height, width)
        row, col = patch_origin(self.position, side, height, width, self.seed)
        return np.full(np.shape(t), row, dtype=np.int64), np.full(np.shape(t), col, dtype=np.int64)


@EVENT_TRIGGERS.register("moving")
@dataclass(frozen=True)
class MovingInjector(EventInjector):
    """A moving patch with the frame-level moving trigger's parameters and paths.

    ``path`` ("reference": Sneaky Spikes' three-position hop, bin ``k`` at position ``k mod 3``;
    "paper": 2 px per bin horizontally; "horizontal", "vertical", "diagonal" at ``speed`` px per bin,
    default 1), ``speed`` and ``boundary`` mean exactly what they mean for
    :class:`~snnsec.attacks.moving.MovingTrigger` (one shared function,
    :func:`~snnsec.attacks.moving.path_origins`, places both). With ``continuous=False`` (default) the
    patch jumps once per time bin: events in bin ``k`` (the bin time slicing with ``bins`` windows puts
    them in) sit where the frame-level trigger paints bin ``k``, so framed with T = ``bins`` the patch is
    where the frame-level trigger paints it (a screen showing a hopping square). With
    ``continuous=True`` a linear path glides: an event at fractional bin time ``k + f`` sits at offset
    ``round(speed * (k + f))`` (a physically moving light); the hopping paths ("reference") refuse it.
    """

    path: str = "reference"
    speed: int | None = None  # px per time bin; None: 2 for "paper", 1 for the free linear paths
    boundary: str = "bounce"
    continuous: bool = False

    name: ClassVar[str] = "moving"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.path not in PATHS:
            raise ConfigError(f"moving trigger path must be one of {', '.join(PATHS)}; got {self.path!r}")
        if self.speed is not None and (not _is_int(self.speed) or self.speed < 1):
            raise ConfigError(f"moving trigger speed is an int >= 1 (pixels per time bin), got {self.speed!r}")
        if self.boundary not in BOUNDARIES:
            raise ConfigError(f"moving trigger boundary must be one of {', '.join(BOUNDARIES)}; got {self.boundary!r}")
        check_path_options(self.path, self.speed)
        if self.continuous and self.path == "reference":
            raise ConfigError("moving trigger path 'reference' hops between positions; continuous=True needs a "
                              "linear path (paper, horizontal, vertical, diagonal)")

    def origins(self, t: np.ndarray, t_min: int, t_max: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        side = patch_side(self.size, height, width)
        elapsed = np.asarray(t, dtype=np.int64) - int(t_min)
        span = int(t_max) - int(t_min) + 1
        bins = (elapsed * self.bins) // span
        offsets = None
        if self.continuous:
            offsets = np.rint(resolved_speed(self.path, self.speed) * (elapsed * self.bins) / span).astype(np.int64)
        return path_origins(self.path, self.speed, self.boundary, self.position, self.seed, side, height, width,
                            bins, offsets)


@EVENT_TRIGGERS.register("flashy")
@dataclass(frozen=True)
class FlashyInjector(EventInjector):
    """A flash: a burst of events over the whole sensor (``area="sensor"``, as the frame-level flashy
    trigger) or only the patch (``area="patch"``, using ``size`` and ``position``) during time bins
    ``[first, first + count)`` of ``bins``. ``start``/``length`` are bins (int) or fractions of T
    (float), resolved exactly as the frame-level :class:`~snnsec.attacks.flashy.FlashyTrigger` does
    (:func:`~snnsec.attacks.patch.time_window`); a window past the last bin is an error."""

    start: int | float = 0
    length: int | float = 0.125
    area: str = "sensor"

    name: ClassVar[str] = "flashy"
    dims: ClassVar[tuple[int, ...]] = (1, 2)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_time_window(self.start, self.length)
        self.active_bins()  # the window must fit in ``bins``
        if self.area not in AREAS:
            raise ConfigError(f"flash area must be one of {', '.join(AREAS)}; got {self.area!r}")

    def active_bins(self) -> tuple[int, int]:
        return time_window(self.start, self.length, self.bins)

    def region_size(self, height: int, width: int) -> tuple[int, int]:
        return (height, width) if self.area == "sensor" else super().region_size(height, width)

    def origins(self, t: np.ndarray, t_min: int, t_max: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        if self.area == "sensor":
            row = col = 0
        else:
            side = patch_side(self.size, height, width)
            row, col = patch_origin(self.position, side, height, width, self.seed)
        return np.full(np.shape(t), row, dtype=np.int64), np.full(np.shape(t), col, dtype=np.int64)


# --------------------------------------------------------------------------------------------------
# Frames from injected events, and the lazy poisoned datasets


def frame_pair(events: np.ndarray, sensor_size: tuple[int, int, int], injector: EventInjector,
               framing: FramingConfig) -> tuple[Tensor, Tensor]:
    """Encoded float frames ``[T, P, H, W]`` of one sample without and with the trigger (for plots)."""
    _check_bins(injector, framing)

    def framed(ev: np.ndarray) -> Tensor:
        counts = events_to_frames(ev, sensor_size, framing.frames, framing.slicing, framing.size, framing.bin_us)
        return torch.from_numpy(encode(counts, framing.encoding))

    return framed(events), framed(injector.inject(events, sensor_size))


class EventPoisonedFrames(Dataset):
    """``base`` with the samples at ``indices`` re-framed from their raw events plus the injected trigger.

    ``base`` is a clean :class:`~snnsec.attacks.poisoning.FrameDataset` framed from ``raw`` with
    ``framing`` (``base.rows[i]`` is sample ``i``'s index in ``raw``; subsets keep this). Position ``i``
    in ``indices`` gets ``injector.inject(raw[base.rows[i]])``, framed with
    :func:`~snnsec.framing.events_to_frames` and encoded with ``base.encode``, and label
    ``new_labels[k]``; every other sample is ``base[i]`` unchanged. Same ``.base`` and ``.indices`` as
    :class:`~snnsec.attacks.poisoning.PoisonedDataset`. ``injector.bins`` must equal ``framing.frames``.
    ``cache=True`` keeps the injected int16 counts in memory after first use
    (``len(indices) * T*P*H*W * 2`` bytes); otherwise each access re-reads and re-frames the sample.
    """

    def __init__(self, base: FrameDataset, raw: EventDataset, indices: np.ndarray, injector: EventInjector,
                 framing: FramingConfig, new_labels: np.ndarray, cache: bool = False) -> None:
        if len(raw) != len(base.counts):
            raise ConfigError(f"raw dataset has {len(raw)} samples but the frame cache {len(base.counts)}; "
                              "base must be framed from raw")
        _check_bins(injector, framing)
        self.base, self.raw, self.injector, self.framing = base, raw, injector, framing
        self.indices = np.asarray(indices, dtype=np.int64)
        self.sensor_size = tuple(raw.info.sensor_size)
        self._new_label = dict(zip(self.indices.tolist(), np.asarray(new_labels).tolist(), strict=True))
        self._cache: dict[int, np.ndarray] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.base)

    @property
    def labels(self) -> np.ndarray:
        """Every sample's label as served (the attacker's label where triggered), without reading frames."""
        return np.array([self._new_label.get(i, label) for i, label in enumerate(self.base.labels.tolist())])

    def triggered_counts(self, index: int) -> np.ndarray:
        """int16 counts ``[T, P, H, W]`` of sample ``index`` with the trigger injected."""
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        events, _ = self.raw[int(self.base.rows[index])]
        counts = events_to_frames(self.injector.inject(events, self.sensor_size), self.sensor_size,
                                  self.framing.frames, self.framing.slicing, self.framing.size, self.framing.bin_us)
        if self._cache is not None:
            self._cache[index] = counts
        return counts

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        if index in self._new_label:
            frames = torch.from_numpy(self.base.encode(self.triggered_counts(index)))
            return frames, int(self._new_label[index])
        return self.base[index]

    def pairs(self) -> EventTriggerPairs:
        """``(clean, triggered)`` frames of the injected samples, e.g. for ``measure_stealth``."""
        return EventTriggerPairs(self)


class EventTriggerPairs(Dataset):
    """``(clean_frames, triggered_frames)`` over the injected samples of an :class:`EventPoisonedFrames`."""

    def __init__(self, poisoned: EventPoisonedFrames) -> None:
        self.poisoned = poisoned

    def __len__(self) -> int:
        return len(self.poisoned.indices)

    def __getitem__(self, k: int) -> tuple[Tensor, Tensor]:
        index = int(self.poisoned.indices[k])
        return self.poisoned.base[index][0], self.poisoned[index][0]


def event_poison_training_set(base: FrameDataset, raw: EventDataset, injector: EventInjector,
                              framing: FramingConfig, config: PoisonConfig, num_classes: int,
                              cache: bool = False) -> EventPoisonedFrames:
    """Like :func:`~snnsec.attacks.poisoning.poison_training_set`, with the trigger injected as events
    (same indices and labels for the same ``config``)."""
    config.check_classes(num_classes)
    indices = choose_poison_indices(base.labels, config)
    new_labels = config.relabel(base.labels[indices], num_classes)
    return EventPoisonedFrames(base, raw, indices, injector, framing, new_labels, cache)


def event_triggered_test_set(base: FrameDataset, raw: EventDataset, injector: EventInjector,
                             framing: FramingConfig, config: PoisonConfig, num_classes: int,
                             cache: bool = False) -> EventPoisonedFrames:
    """Like :func:`~snnsec.attacks.poisoning.triggered_test_set`: every kept sample triggered (target-class
    samples excluded except for all-to-all), labelled with the attacker's intended label."""
    config.check_classes(num_classes)
    keep = np.arange(len(base)) if config.mode == "all-to-all" else np.flatnonzero(base.labels != config.target)
    subset = base.subset(keep)
    return EventPoisonedFrames(subset, raw, np.arange(len(keep)), injector, framing,
                               config.relabel(subset.labels, num_classes), cache)


# --------------------------------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _ceil_div(a, b: int):
    return -((-a) // b)


def _check_bins(injector: EventInjector, framing: FramingConfig) -> None:
    if injector.bins != framing.frames:
        raise ConfigError(f"the event trigger's rate and windows refer to bins={injector.bins} but frames have "
                          f"T={framing.frames}; build the injector with bins=framing.frames")


def _check_events(events: np.ndarray) -> None:
    names = events.dtype.names or ()
    missing = [name for name in REQUIRED_FIELDS if name not in names]
    if missing:
        raise ConfigError(f"events need the fields x, y, t, p; missing {missing} in {events.dtype}")
