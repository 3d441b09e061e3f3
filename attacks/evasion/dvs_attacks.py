"""The DVS-Attacks event attacks (Marchisio et al., "DVS-Attacks: Adversarial Attacks on Dynamic Vision
Sensors for Spiking Neural Networks", IJCNN 2021; albertomarchisio/DVS-Attacks, ``NMNIST/NMNISTAttacks.ipynb``),
written from the reference notebook.

Every attack *adds* events on top of the sample (a light source in front of the sensor, not an edit of what
it saw): at every time step ``step_us`` (the reference's 1 ms spike-tensor step, default 1000 us) the chosen
pixels fire. Time steps are the grid ``k * step_us`` that lies inside the sample's span ``[t_min, t_max]``, so
the first and last events stay the first and last (time slicing is unchanged) and, with ``step_us`` = the mask
filter's ``bin_us``, each added event falls in its own 1 ms bin, as in the reference.

Coordinates. The reference builds a spike tensor ``[p, i, j, t]`` with slayer's ``readNpSpikes(...)
.toSpikeTensor``, which writes event ``(x, y)`` to ``[p, y, x, t]``: ``i`` is the sensor *row* (y) and ``j``
the *column* (x). The reference's position ``(x_ref, y_ref)`` (its ``x`` indexes ``i``) is therefore sensor
row ``y = x_ref``, columns from ``y_ref``. With ``W x H`` the sensor (the reference's square ``N``):

- ``frame``: every pixel of rows ``inset`` and ``H-1-inset`` and columns ``inset`` and ``W-1-inset``, full
  length (the sensor's border for ``inset = 0``; the reference's first ``cornerGen(x=0, y=0)``), ``polarity``
  both by default, every step. One candidate, one query per sample. On 34x34: 132 pixels x 2 polarities per step
  (78,144 events on a 296-step, ~300 ms sample).
- ``corner`` (the reference's second ``cornerGen(x, y)``: ``i == x and j < y``): row ``x_ref``, columns
  ``0 .. y_ref-1``, every step: a line from the left edge along the top or bottom rows; ``y_ref`` pixels x 2
  polarities per step (2 * 2 * 296 = 1,184 to 17 * 2 * 296 = 10,064 events on 34x34).
- ``dash`` (``dashGen``): two pixels in row ``x_ref``: columns ``(y_ref-1, y_ref)`` on the left, or
  ``(W-y_ref-1, W-y_ref)`` on the right; ``polarity`` both by default, every step (2 * 2 * 296 = 1,184).
- ``mf-dash`` (``MFAwareDashGen``): the dash of ``dash`` but active only ``th0`` consecutive steps at a
  position, then moved 2 columns (``y_ref += 2``: rightwards on the left side, leftwards on the right side),
  so no pixel fires in more than ``th0`` steps and a mask filter with threshold ``>= th0`` keeps it (where
  the sample itself is quiet). One polarity: ON (p=1) on the left, OFF (p=0) on the right. 2 events per
  step (592 on 296 steps).

Search (``corner``, ``dash``, ``mf-dash``): the reference's query loop. Positions in its order: start
``min_x = 0, x = 0, y = 2, left = 1, flag = 0``; after each try: if ``flag``: ``x = min_x``, flip ``flag``
and ``left``, and ``y += 1`` when ``left``; else ``x = H-1-min_x``, flip ``flag``; if ``y > W/2``: ``y = 2,
min_x += 1, flag = 0, left = 1``; stop when ``min_x >= H/8``. On 34x34: rows 0, 33, 1, 32, ..., 4, 29,
``y`` 2..17, left and right: 320 tries. Position by position (as the reference), every sample not yet
broken is tried (batched, ``batch_size`` streams a forward pass; ``victim.queries`` counts each sample sent);
a sample keeps its first misclassifying (``goal.success``) candidate; one that is never broken comes back
unchanged, as do samples with fewer than two events.

Differences from the reference, each deliberate:

- Events are added only inside the sample's span (the reference fills all 350 steps of its tensor, also
  before the first and after the last event); a sample already holding an event at an added
  (x, y, t, p) gets a second one (the reference's tensor sums to 2 there).
- The budget: a candidate adding more than ``budget.value`` events is skipped without a query (the
  reference has no budget). ``max_queries`` caps the queries per sample (None: the whole search, as in the
  reference). ``frame`` is queried once so that it, too, returns the clean stream when it fails.
- Positions already tried are not tried again. The reference's loop does not reset ``x`` when ``min_x``
  grows, so each round after the first starts on row ``min_x - 1``: round 1 repeats ``(0, 2, left)``,
  later rounds try ``(min_x - 1, 2, left)`` a round late, and ``(last min_x, 2, left)`` is never tried; its
  second ``cornerGen`` ignores ``left`` (both branches are ``j < y``), so left and right corners coincide.
  The order here is the reference's, repeats dropped (a deterministic model cannot be broken by a repeat):
  on 34x34, ``dash`` and ``mf-dash`` try 319 distinct positions (the reference 320 tries), ``corner`` 160.
- ``mf-dash`` keeps each position exactly ``th0`` steps. The reference moves the dash when ``t == th``
  after testing ``t < th``, which leaves step ``th`` empty: ``th0`` steps at the first position, ``th0 - 1``
  at the next ones.
- Sensor bounds: positions scale with the sensor (rows with ``H``, columns with ``W``; the reference's
  ``N`` on a square sensor). A dash of ``mf-dash`` that walks off the sensor (small ``th0``, long samples)
  loses the pixels outside it, as the reference's tensor does; clipping them to the edge would pile more
  than ``th0`` steps on the edge pixels and defeat the mask-filter awareness.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from abc import abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from snnsec.attacks.evasion.base import EVASIONS, Goal, Victim, require
from snnsec.attacks.evasion.domains import Budget
from snnsec.attacks.evasion.event_base import EventAttack, EventView, merged, synthetic_events

POLARITIES = {"both": (0, 1), "on": (1,), "off": (0,)}

Position = tuple[int, int, bool]  # (row x_ref, column offset y_ref, left)


def time_steps(events: np.ndarray, step_us: int) -> np.ndarray:
    """The grid ``k * step_us`` inside ``[t_min, t_max]`` of ``events`` (empty for fewer than two events)."""
    if len(events) < 2:
        return np.zeros(0, dtype=np.int64)
    t0, t1 = int(events["t"].min()), int(events["t"].max())
    first, last = -(-t0 // step_us), t1 // step_us
    return np.arange(first, last + 1, dtype=np.int64) * step_us


def search_order(width: int, height: int) -> list[Position]:
    """The reference's positions ``(x_ref, y_ref, left)`` in its order, each once (see module doc)."""
    order, seen = [], set()
    min_x, x, y, left, flag = 0, 0, 2, True, False
    while min_x < height / 8:
        if (x, y, left) not in seen:
            seen.add((x, y, left))
            order.append((x, y, left))
        if flag:
            x, flag, left = min_x, False, not left
            if left:
                y += 1
        else:
            x, flag = height - 1 - min_x, True
        if y > width / 2:
            y, min_x, flag, left = 2, min_x + 1, False, True
    return order


def every_step(dtype: np.dtype, xs: np.ndarray, ys: np.ndarray, polarities: tuple[int, ...],
               times: np.ndarray) -> np.ndarray:
    """Events at every pixel ``(xs[k], ys[k])``, every polarity, every time of ``times`` (sorted by time)."""
    t, pixel, p = np.meshgrid(times, np.arange(len(xs)), np.asarray(polarities, dtype=np.int64), indexing="ij")
    t, pixel, p = t.ravel(), pixel.ravel(), p.ravel()
    return synthetic_events(dtype, np.asarray(xs)[pixel], np.asarray(ys)[pixel], t, p)


@dataclass(frozen=True)
class AddedEvents(EventAttack):
    """Base of the DVS-Attacks: candidates of added events, the first that succeeds per sample wins."""

    step_us: int = 1000  # one added event per pixel and polarity every step (the reference's 1 ms)
    batch_size: int = 64  # streams per forward pass

    gradient_free: ClassVar[bool] = True

    def __post_init__(self) -> None:
        require(self.step_us >= 1, f"{self.name} step_us must be >= 1, got {self.step_us}")
        require(self.batch_size >= 1, f"{self.name} batch_size must be >= 1, got {self.batch_size}")
        polarity = getattr(self, "polarity", "both")
        require(polarity in POLARITIES, f"{self.name} polarity must be one of {', '.join(POLARITIES)}, got "
                                        f"{polarity!r}")

    @abstractmethod
    def candidates(self, sensor_size: tuple[int, int, int]) -> Iterator[object]:
        """The positions tried, in order (each one query per sample still unbroken)."""

    @abstractmethod
    def added(self, position: object, times: np.ndarray, dtype: np.dtype,
              sensor_size: tuple[int, int, int]) -> np.ndarray:
        """The events ``position`` adds at ``times`` (sorted by time, inside the sensor)."""

    def max_tries(self) -> int | None:
        return None

    def perturb_events(self, victim: Victim, streams: list[np.ndarray], goal: Goal, budget: Budget, view: EventView,
                       generator: torch.Generator) -> list[np.ndarray]:
        out = [events.copy() for events in streams]
        cap = budget.value if budget.bounded else math.inf
        steps = [time_steps(events, self.step_us) for events in streams]
        tries = np.zeros(len(streams), dtype=np.int64)
        limit = self.max_tries()
        pending = [i for i in range(len(streams)) if len(steps[i])]
        for position in self.candidates(view.sensor_size):
            if not pending:
                break
            trials = []
            for i in pending:
                added = self.added(position, steps[i], streams[i].dtype, view.sensor_size)
                if 0 < len(added) <= cap:
                    trials.append((i, merged(streams[i], added)))
            broken = set()
            for start in range(0, len(trials), self.batch_size):
                chunk = trials[start:start + self.batch_size]
                rows = [i for i, _ in chunk]
                predicted = victim.predict(view.batch([s for _, s in chunk], victim.device))
                hits = goal.subset(torch.tensor(rows, device=goal.labels.device)).success(predicted)
                tries[rows] += 1
                for (i, stream), hit in zip(chunk, hits.tolist()):
                    if hit:
                        out[i] = stream
                        broken.add(i)
            pending = [i for i in pending if i not in broken and (limit is None or tries[i] < limit)]
        return out


@EVASIONS.register("frame")
@dataclass(frozen=True)
class FrameAttack(AddedEvents):
    polarity: str = "both"  # both, on (p=1) or off (p=0)
    inset: int = 0  # the ring's distance from the border (the reference's x = y = 0)

    name: ClassVar[str] = "frame"
    summary: ClassVar[str] = "DVS-Attacks frame: the sensor's border fires every 1 ms (one shot)"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.inset >= 0, f"frame inset must be >= 0, got {self.inset}")

    def candidates(self, sensor_size):
        yield self.inset

    def added(self, position, times, dtype, sensor_size):
        width, height = sensor_size[0], sensor_size[1]
        inset = int(position)
        cols, rows = np.meshgrid(np.arange(width), np.arange(height), indexing="ij")
        ring = (cols == inset) | (cols == width - 1 - inset) | (rows == inset) | (rows == height - 1 - inset)
        return every_step(dtype, cols[ring], rows[ring], POLARITIES[self.polarity], times)


@dataclass(frozen=True)
class SearchedAttack(AddedEvents):
    """An attack that runs the reference's position search (module doc)."""

    max_queries: int | None = None  # per sample (None: the whole search, as the reference)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.max_queries is None or self.max_queries >= 1,
                f"{self.name} max_queries must be >= 1, got {self.max_queries}")

    def max_tries(self) -> int | None:
        return self.max_queries

    def candidates(self, sensor_size):
        seen = set()
        for position in search_order(sensor_size[0], sensor_size[1]):
            key = self.key(position)
            if key not in seen:
                seen.add(key)
                yield position

    def key(self, position: Position) -> object:
        return position


@EVASIONS.register("corner")
@dataclass(frozen=True)
class CornerAttack(SearchedAttack):
    polarity: str = "both"

    name: ClassVar[str] = "corner"
    summary: ClassVar[str] = "DVS-Attacks corner: a line from the left edge along a top/bottom row, searched"

    def key(self, position: Position) -> object:
        return position[:2]  # the reference's cornerGen ignores left

    def added(self, position, times, dtype, sensor_size):
        width, height = sensor_size[0], sensor_size[1]
        row, length, _ = position
        cols = np.arange(min(length, width))
        rows = np.full(len(cols), on_sensor_row(row, height))
        return every_step(dtype, cols, rows, POLARITIES[self.polarity], times)


def dash_columns(offset: int | np.ndarray, left: bool, width: int) -> np.ndarray:
    """The dash's two columns ``[..., 2]`` at each offset: ``(offset-1, offset)`` on the left,
    ``(W-offset-1, W-offset)`` on the right."""
    offset = np.asarray(offset)
    return np.stack([offset - 1, offset] if left else [width - offset - 1, width - offset], axis=-1)


def on_sensor_row(row: int, height: int) -> int:
    """A searched row clipped to the sensor."""
    return min(max(row, 0), height - 1)


@EVASIONS.register("dash")
@dataclass(frozen=True)
class DashAttack(SearchedAttack):
    polarity: str = "both"

    name: ClassVar[str] = "dash"
    summary: ClassVar[str] = "DVS-Attacks dash: two pixels near a corner fire every 1 ms, position searched"

    def added(self, position, times, dtype, sensor_size):
        width, height = sensor_size[0], sensor_size[1]
        row, offset, left = position
        cols = np.clip(dash_columns(offset, left, width), 0, width - 1)
        rows = np.full(2, on_sensor_row(row, height))
        return every_step(dtype, cols, rows, POLARITIES[self.polarity], times)


@EVASIONS.register("mf-dash")
@dataclass(frozen=True)
class MaskFilterAwareDash(SearchedAttack):
    th0: int = 50  # time steps at each position: no pixel fires in more (the mask filter's threshold)

    name: ClassVar[str] = "mf-dash"
    summary: ClassVar[str] = "DVS-Attacks mask-filter-aware dash: a dash moving 2 px every th0 steps, searched"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.th0 >= 1, f"mf-dash th0 must be >= 1, got {self.th0}")

    def added(self, position, times, dtype, sensor_size):
        width, height = sensor_size[0], sensor_size[1]
        row, offset, left = position
        moved = offset + 2 * (np.arange(len(times)) // self.th0)  # y_ref at each step
        cols = dash_columns(moved, left, width).ravel()
        ts = np.repeat(times, 2)
        inside = (cols >= 0) & (cols < width)
        cols, ts = cols[inside], ts[inside]
        rows = np.full(len(cols), on_sensor_row(row, height))
        return synthetic_events(dtype, cols, rows, ts, np.full(len(cols), 1 if left else 0))
