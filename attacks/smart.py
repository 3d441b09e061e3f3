"""Smart trigger (Sneaky Spikes): a patch placed by the training data's activity, fitted once, then fixed."""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from snnsec.attacks.base import TRIGGERS, Trigger
from snnsec.attacks.patch import fold, paint_per_bin, patch_side
from snnsec.errors import ConfigError

CHOICES = ("least", "most")
STATISTICS = ("reference", "share")
PLACEMENTS = ("centre", "reference")
REFERENCE_WALK = 2  # px per bin of the reference's walk (``r = 2`` in create_smart_trigger)
_CHUNK = 255  # leading (sample x time) slices counted at a time by fit: bounds memory, and a uint8 count
_NUMPY_DTYPES = frozenset({torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
                           torch.float16, torch.float32, torch.float64})


@TRIGGERS.register("smart")
@dataclass(frozen=True)
class SmartTrigger(Trigger):
    """A ``size`` patch in every time bin, whose location and polarity ``fit`` derives from training data.

    ``fit(train_frames [N, T, P, H, W])`` splits the frame into a grid of cells, scores each cell's
    activity and polarity codes, picks the ``region="most"|"least"`` active cell (ties: first in
    row-major order) and there the ``polarity_choice="least"|"most"`` used code (ties: lowest code)
    as ``polarity``. Two statistics:

    * ``statistic="reference"`` (default) is Sneaky Spikes' ``create_smart_trigger`` exactly: the
      ``grid x grid`` cells of ``get_masks`` (``grid = n_masks + 1``; edges ``int(k * L / grid)``
      accumulated in floating point, so 128 px splits 42/43/43), and per cell over all samples and bins
      the counts p0 = elements (channel values) equal to 0, p1 = pixels with OFF == 0 and ON == 1,
      p2 = OFF == 1 and ON == 0, p3 = elements equal to 1 ("either channel", so an ON-only pixel adds
      to p1 and p3); only values exactly 0 or 1 count (on count frames a pixel with 2 events is
      neither). Activity is the raw sum p1 + p2 + p3 (larger cells weigh more).
    * ``statistic="share"``: cells ``floor(i * L / g)`` with ``g = min(grid, L // side)`` per axis (so
      any patch fits its cell), per-pixel codes 0 silent / 1 ON only / 2 OFF only / 3 both (a
      channel is active if > 0, so count frames are read as events), activity = share of non-silent
      pixel-bins (uneven cells compare fairly).

    ``placement`` puts the patch in the chosen cell. ``"centre"`` (default): centred in the cell (a
    patch larger than its cell is centred on it and shifted into the frame); with ``walk > 0`` it
    random-walks ``walk`` px per bin inside the cell, reflected at its edges. ``"reference"``: the
    reference's walk: a start drawn from ``seed`` with rows (and columns) in ``[lo + side, hi - side)``
    of the cell ``[lo, hi)``, then before each bin (bin 0 included) a move of ``walk`` px (default 2)
    left or right and up or down, each direction drawn with probability 1/2, staying put when the move
    would leave ``[lo + side, hi - side]``: the outcome distribution of the reference's redraw loop,
    without its unbounded loop. A cell narrower than ``2 * side + 1`` px is an error (the reference's
    ``randint`` raised there).

    ``fit`` returns a new trigger with ``origin`` (the start), ``cell`` (top, left, bottom, right; ends
    exclusive), ``polarity`` and ``frame_shape`` resolved; ``apply`` uses exactly these, and a seeded
    walk, for training and test frames alike (an unfitted trigger without ``origin`` refuses to apply).

    Deliberate differences from the reference (README, "Triggers"): the location is fitted once on
    training data and reused for the test set (the reference re-drew the cell statistics, start and
    walk for every dataset it built, so test triggers were not the trained ones); the walk is seeded;
    fit reads a seeded class-stratified sample of the training set (the reference read the whole set);
    the default placement is a fixed, centred patch (any size fits; the walk needs cells of
    ``2 * side + 1`` px); axes are the frame's true rows and columns (the reference swapped H and W, the same on its
    square frames). ``position`` is not used: the data decide where the patch goes.
    """

    region: str = "most"
    polarity_choice: str = "least"
    grid: int = 3  # cells per axis; the reference's ``--n_masks n`` is grid = n + 1
    statistic: str = "reference"
    placement: str = "centre"
    walk: int | None = None  # px per bin of the random walk; None: 2 for placement "reference", else 0
    origin: tuple[int, int] | None = None  # resolved by fit: top-left (row, col) of the patch
    cell: tuple[int, int, int, int] | None = None  # resolved by fit: (top, left, bottom, right), ends exclusive
    frame_shape: tuple[int, int] | None = None  # resolved by fit: (H, W) the location refers to

    name: ClassVar[str] = "smart"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.region not in CHOICES:
            raise ConfigError(f"smart trigger region must be 'least' or 'most' (active region), got {self.region!r}")
        if self.polarity_choice not in CHOICES:
            raise ConfigError(
                f"smart trigger polarity_choice must be 'least' or 'most' (used polarity), got {self.polarity_choice!r}"
            )
        if self.statistic not in STATISTICS:
            raise ConfigError(f"smart trigger statistic must be one of {', '.join(STATISTICS)}; got {self.statistic!r}")
        if self.placement not in PLACEMENTS:
            raise ConfigError(f"smart trigger placement must be one of {', '.join(PLACEMENTS)}; got {self.placement!r}")
        for field, x, low in (("grid", self.grid, 1), ("walk", self.walk, 0)):
            if field == "walk" and x is None:
                continue
            if isinstance(x, bool) or not isinstance(x, int) or x < low:
                raise ConfigError(f"smart trigger {field} must be an int >= {low}, got {x!r}")
        for field, n in (("origin", 2), ("cell", 4), ("frame_shape", 2)):
            x = getattr(self, field)
            if x is None:
                continue
            x = tuple(x)  # JSON round trips give lists
            if len(x) != n or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in x):
                raise ConfigError(f"smart trigger {field} must be {n} ints >= 0 or unset, got {getattr(self, field)!r}")
            object.__setattr__(self, field, x)
        if self.cell is not None and not (self.cell[0] < self.cell[2] and self.cell[1] < self.cell[3]):
            raise ConfigError(
                f"smart trigger cell (top, left, bottom, right) needs top < bottom and left < right, got {self.cell}"
            )

    @property
    def step(self) -> int:
        """Pixels per bin of the walk (``walk``, or its default for the placement)."""
        if self.walk is not None:
            return self.walk
        return REFERENCE_WALK if self.placement == "reference" else 0

    def fit(self, train_frames: Tensor) -> SmartTrigger:
        if train_frames.dim() < 4:
            raise ConfigError(f"smart trigger fit needs frames [N, T, P, H, W], got shape {tuple(train_frames.shape)}")
        height, width = train_frames.shape[-2:]
        side = patch_side(self.size, height, width)
        if self.statistic == "reference":
            rows, cols = reference_edges(height, self.grid), reference_edges(width, self.grid)
            per_cell = _cell_sums(_reference_code_counts(train_frames), rows, cols)  # [4, g, g]
            activity = per_cell[1:].sum(0).astype(np.float64)
        else:
            rows = _edges(height, min(self.grid, height // side))
            cols = _edges(width, min(self.grid, width // side))
            per_cell = _cell_sums(_code_counts(train_frames), rows, cols)
            activity = per_cell[1:].sum(0) / np.outer(np.diff(rows), np.diff(cols))
        pick = np.argmin if self.region == "least" else np.argmax
        i, j = np.unravel_index(int(pick(activity.ravel())), activity.shape)
        polarity = int((np.argmin if self.polarity_choice == "least" else np.argmax)(per_cell[:, i, j]))
        top, bottom = _hold(int(rows[i]), int(rows[i + 1]), side, height)
        left, right = _hold(int(cols[j]), int(cols[j + 1]), side, width)
        if self.placement == "reference":
            r_lo, r_hi = self._walk_span(top, bottom, side)
            c_lo, c_hi = self._walk_span(left, right, side)
            rng = np.random.default_rng([self.seed, 0x5A1])
            origin = (int(rng.integers(r_lo, r_hi)), int(rng.integers(c_lo, c_hi)))
        else:
            origin = (top + (bottom - top - side) // 2, left + (right - left - side) // 2)
        return replace(
            self, polarity=polarity, origin=origin, cell=(top, left, bottom, right), frame_shape=(height, width)
        )

    def _walk_span(self, lo: int, hi: int, side: int) -> tuple[int, int]:
        """The reference's safe range ``[lo + side, hi - side]`` (its start is drawn below ``hi - side``)."""
        a, b = lo + side, hi - side
        if b <= a:  # where the reference's np.random.randint(a, b) raised
            raise ConfigError(
                f"smart trigger placement 'reference' needs cells of at least {2 * side + 1} px for a {side}px "
                f"patch, got a {hi - lo} px cell; use a smaller size, a smaller grid, or placement=centre"
            )
        return a, b

    def origins(self, steps: int, height: int, width: int) -> list[tuple[int, int]]:
        """Top-left corner (row, col) of the patch in each of ``steps`` time bins."""
        if self.origin is None:
            raise ConfigError("the smart trigger is not fitted: call fit(train_frames) first or give origin=(row, col)")
        if self.frame_shape is not None and self.frame_shape != (height, width):
            fit_h, fit_w = self.frame_shape
            raise ConfigError(f"the smart trigger was fitted on {fit_h}x{fit_w} frames, got {height}x{width}")
        side = patch_side(self.size, height, width)
        top, left, bottom, right = self.cell if self.cell is not None else (0, 0, height, width)
        row, col = self.origin
        if not (top <= row <= bottom - side and left <= col <= right - side) or bottom > height or right > width:
            raise ConfigError(
                f"smart trigger origin {self.origin} with a {side}px patch does not fit in cell "
                f"{(top, left, bottom, right)} of {height}x{width} frames"
            )
        if self.step == 0:
            return [(row, col)] * steps
        if self.placement == "reference":
            return _reference_walk(row, col, (top + side, bottom - side), (left + side, right - side), self.step,
                                   steps, self.seed)
        steps_rc = np.random.default_rng(self.seed).choice([-self.step, self.step], size=(steps, 2))
        steps_rc[0] = 0  # the first bin sits at origin
        offsets = steps_rc.cumsum(0)
        span_r, span_c = bottom - side - top, right - side - left
        return [
            (top + fold(row - top + int(dr), span_r, "bounce"), left + fold(col - left + int(dc), span_c, "bounce"))
            for dr, dc in offsets
        ]

    def apply(self, frames: Tensor) -> Tensor:
        steps, height, width = frames.shape[-4], frames.shape[-2], frames.shape[-1]
        side = patch_side(self.size, height, width)
        return paint_per_bin(frames, self.origins(steps, height, width), side, self.polarity, self.value)


def reference_edges(length: int, grid: int) -> np.ndarray:
    """Cell edges of Sneaky Spikes' ``get_masks`` along one axis: ``int(y)`` where ``y`` accumulates
    ``length / grid`` in floating point (the last edge is the frame edge where rounding falls short)."""
    step, y, edges = length / grid, 0.0, [0]
    for _ in range(grid):
        y += step
        edges.append(int(y))
    edges[-1] = length
    return np.array(edges, dtype=np.int64)


def _reference_walk(row: int, col: int, rows: tuple[int, int], cols: tuple[int, int], step: int, steps: int,
                    seed: int) -> list[tuple[int, int]]:
    """Per bin: move ``step`` px (column, then row) in a seeded random direction, before painting; a move
    leaving the inclusive range stays put (the reference redrew until back in range: the same outcomes)."""
    signs = np.random.default_rng([seed, 0x5A2]).integers(0, 2, size=(steps, 2)) * 2 - 1
    out = []
    for s_col, s_row in signs:
        c, r = col + int(s_col) * step, row + int(s_row) * step
        col = c if cols[0] <= c <= cols[1] else col
        row = r if rows[0] <= r <= rows[1] else row
        out.append((row, col))
    return out


def _hold(lo: int, hi: int, side: int, length: int) -> tuple[int, int]:
    """A span containing ``[lo, hi)`` widened to ``side`` px when smaller, centred on it, inside ``[0, length)``."""
    if hi - lo >= side:
        return lo, hi
    start = min(max(0, lo - (side - (hi - lo)) // 2), length - side)
    return start, start + side


def _cell_sums(per_pixel: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Sums of ``per_pixel [K, H, W]`` over the cells between ``rows`` x ``cols`` edges: ``[K, g_r, g_c]``."""
    k, height, width = per_pixel.shape
    integral = np.zeros((k, height + 1, width + 1), dtype=np.int64)
    integral[:, 1:, 1:] = per_pixel.cumsum(1).cumsum(2)
    r0, r1 = rows[:-1, None], rows[1:, None]
    c0, c1 = cols[None, :-1], cols[None, 1:]
    return integral[:, r1, c1] - integral[:, r0, c1] - integral[:, r1, c0] + integral[:, r0, c0]


def _slice_chunks(frames: Tensor) -> Iterator[Tensor]:
    """The ``[..., P, H, W]`` frames as ``[m, P, H, W]`` chunks of at most ``_CHUNK`` slices, in order; a
    non-contiguous input is reshaped a chunk at a time, so no full copy of it is made."""
    if frames.dim() == 4:
        yield from frames.split(_CHUNK)
        return
    per = math.prod(frames.shape[1:-3])
    if per == 0:
        return
    if per > _CHUNK:
        for sample in frames:
            yield from _slice_chunks(sample)
        return
    for part in frames.split(max(1, _CHUNK // per)):
        yield part.reshape(-1, *frames.shape[-3:])


def _flags(chunk: Tensor, value: float | None) -> np.ndarray:
    """``chunk == value`` (``chunk > 0`` for ``None``) as a uint8 array of 0/1, compared by numpy where it
    can read the chunk in place (CPU, a numpy dtype), else by torch and the bools moved to the CPU."""
    if chunk.device.type == "cpu" and chunk.dtype in _NUMPY_DTYPES:
        data = chunk.detach().numpy()
        flags = np.greater(data, 0) if value is None else np.equal(data, value)
    else:
        flags = ((chunk > 0) if value is None else (chunk == value)).cpu().numpy()
    return flags.view(np.uint8)


def _count(flags: np.ndarray) -> np.ndarray:
    """``flags [m <= 255, ...]`` (0/1 uint8) summed over the first axis, exactly, as int64."""
    return np.add.reduce(flags, axis=0, dtype=np.uint8).astype(np.int64)


def _reference_code_counts(frames: Tensor) -> np.ndarray:
    """Per pixel, summed over the ``[..., P, H, W]`` slices, the reference's p0..p3 (see SmartTrigger)."""
    channels, height, width = frames.shape[-3:]
    totals = np.zeros((4, height, width), dtype=np.int64)
    for chunk in _slice_chunks(frames):
        zero, one = _flags(chunk, 0), _flags(chunk, 1)
        totals[0] += _count(zero).sum(0)
        totals[3] += _count(one).sum(0)
        if channels > 1:
            totals[1] += _count(zero[:, 0] & one[:, 1])
            totals[2] += _count(one[:, 0] & zero[:, 1])
    return totals


def _edges(length: int, parts: int) -> np.ndarray:
    """``parts + 1`` region boundaries over ``length`` pixels: ``floor(i * length / parts)``."""
    parts = max(1, parts)
    return np.array([i * length // parts for i in range(parts + 1)], dtype=np.int64)


def _code_counts(frames: Tensor) -> np.ndarray:
    """Per pixel, how many of the ``[..., P, H, W]`` slices have polarity code 0, 1, 2, 3: ``[4, H, W]`` int64."""
    channels, height, width = frames.shape[-3:]
    on = np.zeros((height, width), dtype=np.int64)
    off = np.zeros_like(on)
    both = np.zeros_like(on)
    total = 0
    for chunk in _slice_chunks(frames):
        active = _flags(chunk, None)
        on_c = active[:, 1] if channels > 1 else active[:, 0]
        off_c = active[:, 0]
        on += _count(on_c)
        off += _count(off_c)
        both += _count(on_c & off_c)
        total += chunk.shape[0]
    return np.stack([total - on - off + both, on - both, off - both, both])
