"""``digits-dvs``: scikit-learn's bundled digits, recorded by an emulated event camera.

The toolkit needs a neuromorphic dataset that works offline, installs with nothing but
scikit-learn and builds in seconds on a laptop CPU. This module makes one by re-enacting how
N-MNIST was recorded (Orchard et al., "Converting static image datasets to spiking neuromorphic
datasets using saccades", Frontiers in Neuroscience 2015): each digit was shown, static, on a
monitor while an ATIS sensor on a pan-tilt unit made three saccades along a triangle, ~100 ms each.
Every sensor pixel fired an ON/OFF event whenever its log intensity moved one contrast threshold
away from the level at its previous event. The emulation, step by step:

Stimulus
    ``sklearn.datasets.load_digits()`` gives 1797 8x8 images with values 0..16. Each is upsampled
    by 3.5 with a cubic spline (``scipy.ndimage.zoom``, grid mode so pixel *areas* line up) to 28x28,
    MNIST's digit size, clipped to [0, 16] and scaled to an intensity in [0, 1] (bright digit on a
    dark screen, as on the N-MNIST monitor). It is centred on a 34x34 sensor, N-MNIST's size, which
    leaves a 3-pixel margin for the motion.

Motion
    The camera follows one fixed closed triangle, the same for every sample as in the real recording:
    down-right, left, then up-right back to the start, each leg lasting ``saccade_us`` with a
    raised-cosine speed profile (the camera starts and stops smoothly at the corners). The triangle
    has side ``saccade_amplitude_px`` and is centred on the sensor. A shift by a fraction of a pixel
    is rendered by bilinear interpolation of the image, which is what a pixel integrating light over
    its area would see.

Pixels
    Time advances in ``step_us`` steps. Each pixel converts the light it sees to
    ``L = log(I + log_eps)``: ``log_eps`` stands for the screen's black level and the photoreceptor's
    dark current and keeps the dark background from sitting at minus infinity. A pixel keeps a
    reference level (the log intensity at its last event, advanced by whole thresholds as in v2e);
    when ``L - ref`` reaches its ON threshold or ``ref - L`` its OFF threshold it emits as many events
    as thresholds were crossed, each timestamped where linear interpolation of ``L`` within the step
    crosses that level, and the reference moves by the thresholds it emitted. The thresholds are the
    nominal ``contrast_threshold`` times ``1 + threshold_mismatch * N(0, 1)`` per pixel and polarity
    (transistor mismatch), fixed for the sensor, i.e. shared by every sample. The reference levels
    start at the first frame's ``L`` plus a random offset of less than half a threshold, since the
    pixel's last reset happened at some unknown time before the recording starts.

Refractory period and noise
    After an event a pixel is blind for ``refractory_us``; a crossing in that window is delayed to
    its end (the change is not lost, the reference simply has not moved yet), and if that falls after
    the current step it waits for the next one. Background activity (leak and shot noise) is a
    Poisson process of ``noise_rate_hz`` per pixel with random polarity; a noise event also starts a
    refractory period but leaves the reference untouched. Noise events that land inside a refractory
    period are dropped.

Output
    Events use :data:`~snnsec.datasets.base.EVENT_DTYPE` with timestamps in microseconds in
    ``(0, 3 * saccade_us]``, sorted per sample. All samples of one configuration are generated at
    once (they share the motion, so every step is one array operation over a block of samples),
    kept in-process (``functools.lru_cache`` keyed by the frozen configuration) as one concatenated
    array plus offsets, and split by a fixed stratified 80/20 split that does not depend on the
    emulator seed. The same configuration gives bit-identical events on the same machine; another
    ``seed`` gives another threshold mismatch, other reset offsets and other noise.

Speed
    Per step only cheap dense work is done over all pixels: on each straight leg the bilinear image
    is a quadratic polynomial in the leg's progress (two to four array operations per step), and it
    is compared, in the linear domain, with ``exp(ref ± threshold)``; logarithms, crossing times and
    refractory checks are computed only for the few pixels that fire. All 1797 digits take a few
    seconds on one core.
"""
from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from snnsec.datasets.base import DATASETS, EVENT_DTYPE, SPLITS, DatasetInfo, DatasetSpec
from snnsec.errors import ConfigError

#: Bump whenever the events produced for a given configuration change; part of every cache key.
EMULATOR_VERSION = "digits-dvs-1"

SENSOR_SIZE = 34  # N-MNIST's sensor width and height
DIGIT_SIZE = 28  # MNIST's digit size; the 8x8 sklearn digits are upsampled to this
SOURCE_SIZE = 8
NUM_SACCADES = 3
TEST_FRACTION = 0.2
SPLIT_SEED = 20150707  # fixed: the split never depends on the emulator seed
_BLOCK = 256  # samples emulated together; only affects speed, never the events

INFO = DatasetInfo(
    name="digits-dvs",
    sensor_size=(SENSOR_SIZE, SENSOR_SIZE, 2),
    classes=tuple("0123456789"),
    description=(
        "scikit-learn's 1797 8x8 digits upsampled to 28x28 and recorded by an emulated 34x34 DVS "
        "making three N-MNIST-style saccades (~300 ms); embedded, generated in seconds"
    ),
)


@dataclass(frozen=True)
class DvsEmulatorConfig:
    """Every parameter of the emulated recording; hashable, so it keys the in-process cache."""

    contrast_threshold: float = 0.35  # nominal log-intensity change per event
    threshold_mismatch: float = 0.03  # per-pixel threshold std, as a fraction of the nominal one
    refractory_us: int = 500  # a pixel emits no event this soon after its previous one
    noise_rate_hz: float = 0.2  # background events per pixel per second (both polarities)
    step_us: int = 1000  # emulation time step
    saccade_us: int = 100_000  # duration of each of the three saccades
    saccade_amplitude_px: float = 3.0  # side of the triangular camera path, in pixels
    log_eps: float = 0.05  # dark level added before the log, relative to full brightness 1
    seed: int = 0  # threshold mismatch, reset offsets and noise

    def __post_init__(self) -> None:
        _require("contrast_threshold", self.contrast_threshold, 0.01, 2.0, "log-intensity units")
        _require("threshold_mismatch", self.threshold_mismatch, 0.0, 0.5, "fraction of the threshold")
        _require("refractory_us", self.refractory_us, 0, None, "microseconds", integer=True)
        _require("noise_rate_hz", self.noise_rate_hz, 0.0, 1000.0, "events per pixel per second")
        _require("step_us", self.step_us, 1, 10_000, "microseconds", integer=True)
        _require("saccade_us", self.saccade_us, self.step_us, 100_000 * self.step_us, "microseconds", integer=True)
        if self.saccade_us % self.step_us:
            raise ConfigError(f"saccade_us must be a multiple of step_us={self.step_us}, got {self.saccade_us}")
        _require("saccade_amplitude_px", self.saccade_amplitude_px, 0.0, 8.0, "pixels", open_low=True)
        _require("log_eps", self.log_eps, 1e-4, 10.0, "fraction of full brightness")
        _require("seed", self.seed, 0, None, "seeds threshold mismatch, reset offsets and noise", integer=True)

    @property
    def duration_us(self) -> int:
        """Length of one recording: three saccades."""
        return NUM_SACCADES * self.saccade_us

    def key(self) -> str:
        """Stable hex digest of the parameters and the emulator version."""
        # Normalised so that equal configurations (1 == 1.0, numpy scalars) get equal keys.
        values = {k: float(v) if k in _FLOAT_FIELDS else int(v) for k, v in asdict(self).items()}
        text = repr(sorted(values.items())) + EMULATOR_VERSION
        return hashlib.sha256(text.encode()).hexdigest()[:16]


_FLOAT_FIELDS = frozenset(
    {"contrast_threshold", "threshold_mismatch", "noise_rate_hz", "saccade_amplitude_px", "log_eps"}
)


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    """A real, finite number (booleans are not)."""
    if not (_is_int(value) or isinstance(value, (float, np.floating))):
        return False
    return math.isfinite(value)  # type: ignore[arg-type]


def _require(
    name: str,
    value: object,
    low: float,
    high: float | None,
    unit: str,
    *,
    integer: bool = False,
    open_low: bool = False,
) -> None:
    """Raise a ConfigError stating the allowed range unless ``low <= value <= high`` (``<`` if ``open_low``)."""
    ok = _is_int(value) if integer else _is_number(value)
    if ok:
        above = low < value if open_low else low <= value  # type: ignore[operator]
        ok = above and (high is None or value <= high)  # type: ignore[operator]
    if not ok:
        kind = "an integer" if integer else "a number"
        if high is None:
            allowed = f"{'>' if open_low else '>='} {low}"
        else:
            allowed = f"in {'(' if open_low else '['}{low}, {high}]"
        raise ConfigError(f"{name} must be {kind} {allowed} ({unit}), got {value!r}")


# --------------------------------------------------------------------------------------------------
# Stimulus and motion


@functools.lru_cache(maxsize=1)
def _sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 8x8 images (float, 0..16) and their targets, read-only."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float64)
    targets = digits.target.astype(np.int64)
    images.setflags(write=False)
    targets.setflags(write=False)
    return images, targets


def render_digits(images: np.ndarray) -> np.ndarray:
    """Upsample ``[N, 8, 8]`` images (0..16) to intensities in [0, 1] on the 34x34 sensor."""
    m = _upsampling_matrix()
    big = np.einsum("ik,nkl,jl->nij", m, images, m, optimize=True)  # separable: rows, then columns
    big = np.clip(big, 0.0, 16.0) / 16.0
    canvas = np.zeros((len(images), SENSOR_SIZE, SENSOR_SIZE), dtype=np.float32)
    lo = (SENSOR_SIZE - DIGIT_SIZE) // 2
    canvas[:, lo : lo + DIGIT_SIZE, lo : lo + DIGIT_SIZE] = big
    return canvas


@functools.lru_cache(maxsize=1)
def _upsampling_matrix() -> np.ndarray:
    """``[28, 8]`` matrix of 1-D cubic-spline zooming (scipy's ``zoom`` applied to unit vectors).

    Spline zooming is linear and separable, so ``M @ image @ M.T`` equals ``zoom(image, 3.5)``
    exactly, a hundred times faster than zooming a stack of images.
    """
    from scipy.ndimage import zoom

    return zoom(
        np.eye(SOURCE_SIZE), (DIGIT_SIZE / SOURCE_SIZE, 1), order=3, mode="grid-constant", cval=0.0, grid_mode=True
    )


def saccade_corners(config: DvsEmulatorConfig) -> np.ndarray:
    """The camera path's corners ``(dx, dy)`` in pixels, shape ``[4, 2]``; the last is the first.

    The triangle runs down-right, left, up-right back to the start (image y grows downwards) and is
    centred on its centroid so the digit stays centred on average.
    """
    a = float(config.saccade_amplitude_px)
    corners = np.array([[0.0, 0.0], [a / 2.0, a * math.sqrt(3.0) / 2.0], [-a / 2.0, a * math.sqrt(3.0) / 2.0]])
    corners -= corners.mean(axis=0)
    return np.concatenate([corners, corners[:1]])


def saccade_progress(config: DvsEmulatorConfig) -> np.ndarray:
    """Fraction of its leg the camera has covered at the end of each step of a saccade (raised cosine)."""
    per_leg = config.saccade_us // config.step_us
    u = np.arange(1, per_leg + 1) / per_leg
    return (1.0 - np.cos(np.pi * u)) / 2.0  # smooth starts and stops at the corners


def saccade_path(config: DvsEmulatorConfig) -> np.ndarray:
    """Camera offset ``(dx, dy)`` in pixels at time 0 and at the end of every step: ``[steps + 1, 2]``."""
    corners, ease = saccade_corners(config), saccade_progress(config)
    legs = [corners[i] + ease[:, None] * (corners[i + 1] - corners[i]) for i in range(NUM_SACCADES)]
    return np.concatenate([corners[:1], *legs])


class _Renderer:
    """Renders a block of images as seen by the moving camera (bilinear sub-pixel interpolation).

    On a straight leg the offset is ``corner + e * direction``, so inside one integer pixel cell the
    bilinear image is a polynomial ``P0 + e P1 + e^2 P2`` in the leg progress ``e``. The coefficients
    are computed once per cell the path enters (a handful per leg) and each step costs two or four
    array operations instead of seven.
    """

    def __init__(self, canvas: np.ndarray, config: DvsEmulatorConfig) -> None:
        self.corners = saccade_corners(config)
        self.ease = saccade_progress(config)
        self.pad = int(math.ceil(np.abs(self.corners).max())) + 1
        # The dark level is added here once: bilinear weights sum to one, so shifting I + eps
        # gives shift(I) + eps without a per-step addition.
        dark = np.float32(config.log_eps)
        pad = ((0, 0), (self.pad, self.pad), (self.pad, self.pad))
        self.padded = np.pad(canvas + dark, pad, constant_values=dark).astype(np.float64)
        self._cell: tuple[int, int, int] | None = None
        self._coefficients: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None

    def __call__(self, step: int, out: np.ndarray) -> np.ndarray:
        """Write into ``out`` (``[B, 34, 34]``) the intensity at the end of ``step`` (0 = time 0)."""
        per_leg = len(self.ease)
        leg, e = (0, 0.0) if step == 0 else ((step - 1) // per_leg, float(self.ease[(step - 1) % per_leg]))
        start, direction = self.corners[leg], self.corners[leg + 1] - self.corners[leg]
        dx, dy = start + e * direction
        cell = (leg, math.floor(dx), math.floor(dy))
        if cell != self._cell or self._coefficients is None:
            self._cell = cell
            self._coefficients = self._polynomial(cell[1], cell[2], start, direction)
        p0, p1, p2 = self._coefficients
        e32 = np.float32(e)
        if p2 is None:
            np.multiply(p1, e32, out=out)
        else:
            np.multiply(p2, e32, out=out)
            out += p1
            out *= e32
        out += p0
        return out

    def _polynomial(
        self, x0: int, y0: int, start: np.ndarray, direction: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Coefficients of the bilinear image in cell ``(x0, y0)`` as a polynomial in ``e``."""
        # Pixel (y, x) sees image point (y + dy, x + dx): the scene moves against the camera.
        n, r, c, p = SENSOR_SIZE, self.pad + y0, self.pad + x0, self.padded
        a = p[:, r : r + n, c : c + n]
        d = p[:, r : r + n, c + 1 : c + 1 + n] - a  # x difference
        v = p[:, r + 1 : r + 1 + n, c : c + n] - a  # y difference
        w = p[:, r + 1 : r + 1 + n, c + 1 : c + 1 + n] - a - d - v  # mixed term
        ax, ay = start[0] - x0, start[1] - y0  # fractional offset at e = 0
        vx, vy = direction
        p0 = a + ax * d + ay * v + ax * ay * w
        p1 = vx * d + vy * v + (ax * vy + ay * vx) * w
        p2 = vx * vy * w if vx != 0.0 and vy != 0.0 else None
        f32 = lambda x: np.ascontiguousarray(x, dtype=np.float32)  # noqa: E731
        return f32(p0), f32(p1), None if p2 is None else f32(p2)


# --------------------------------------------------------------------------------------------------
# Pixel model


@dataclass
class _Sensor:
    """Per-pixel state for a block of samples, flattened to ``[B * 34 * 34]``.

    The per-step test runs in the linear domain against ``exp(ref ± threshold)``, kept up to date
    whenever a reference moves, so the costly logarithm is only taken for the few pixels that fire.
    """

    ref: np.ndarray  # reference log intensity (float32)
    c_on: np.ndarray  # ON threshold per flat pixel (float32)
    c_off: np.ndarray  # OFF threshold per flat pixel (float32)
    last_t: np.ndarray  # time of the last event (int64 microseconds)

    def __post_init__(self) -> None:
        self.upper = np.exp(self.ref + self.c_on)  # ON fires at or above this intensity
        self.lower = np.exp(self.ref - self.c_off)  # OFF fires at or below this
        self._above = np.empty(self.ref.shape, dtype=bool)
        self._below = np.empty(self.ref.shape, dtype=bool)

    def candidates(self, intensity: np.ndarray) -> np.ndarray:
        """Flat indices of pixels at or beyond a threshold (the dense part of each step)."""
        np.greater_equal(intensity, self.upper, out=self._above)
        np.less_equal(intensity, self.lower, out=self._below)
        np.logical_or(self._above, self._below, out=self._above)
        return np.flatnonzero(self._above)

    def move_ref(self, idx: np.ndarray, delta: np.ndarray) -> None:
        """Shift the reference of pixels ``idx`` (unique) by ``delta`` log units."""
        ref = self.ref[idx] + delta
        self.ref[idx] = ref
        self.upper[idx] = np.exp(ref + self.c_on[idx])
        self.lower[idx] = np.exp(ref - self.c_off[idx])


#: Events of one step or block before they get coordinates: flat pixel index, time, polarity.
_Chunk = tuple[np.ndarray, np.ndarray, np.ndarray]


def _noise_events(config: DvsEmulatorConfig, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Background events for all samples: structured (sample, pixel, t, p), sorted by (sample, t)."""
    pixels = SENSOR_SIZE * SENSOR_SIZE
    expected = config.noise_rate_hz * pixels * config.duration_us * 1e-6
    counts = rng.poisson(expected, size=n_samples)
    total = int(counts.sum())
    noise = np.empty(total, dtype=[("sample", "<i8"), ("pixel", "<i8"), ("t", "<i8"), ("p", "<i1")])
    noise["sample"] = np.repeat(np.arange(n_samples), counts)
    noise["pixel"] = rng.integers(0, pixels, size=total)
    noise["t"] = rng.integers(1, config.duration_us + 1, size=total)
    noise["p"] = rng.integers(0, 2, size=total)
    return noise[np.lexsort((noise["t"], noise["sample"]))]


def _apply_noise(sensor: _Sensor, flat: np.ndarray, t: np.ndarray, p: np.ndarray, refractory: int) -> _Chunk | None:
    """This step's noise events (sorted by t) that fall outside their pixel's refractory period."""
    if len(flat) == 0:
        return None
    _, first = np.unique(flat, return_index=True)  # at most one noise event per pixel and step
    keep = np.sort(first)
    flat, t, p = flat[keep], t[keep], p[keep]
    ok = t >= sensor.last_t[flat] + refractory
    flat, t, p = flat[ok], t[ok], p[ok]
    sensor.last_t[flat] = t
    return flat, t, p


def _fire(
    sensor: _Sensor, frame: np.ndarray, prev_frame: np.ndarray, t_prev: int, step: int, refractory: int
) -> list[_Chunk]:
    """Emit the threshold crossings of one step and move the references by what was emitted.

    ``frame`` and ``prev_frame`` are the flat intensities (dark level included) at the end and the
    start of the step; crossing times interpolate the log intensity linearly in between.
    """
    idx = sensor.candidates(frame)
    if len(idx) == 0:
        return []
    ref = sensor.ref[idx]
    d = np.log(frame[idx]) - ref
    d_prev = np.log(prev_frame[idx]) - ref
    on = d > 0
    sign = np.where(on, np.float32(1.0), np.float32(-1.0))
    thr = np.where(on, sensor.c_on[idx], sensor.c_off[idx])
    crossings = np.floor(sign * d / thr).astype(np.int64)
    start = sign * d_prev  # progress towards the crossings at the start of the step
    rise = sign * d - start  # ... and during it; <= 0 means the crossings were already pending
    divisor = np.where(rise > 0, rise, np.float32(np.inf))
    last = sensor.last_t[idx]
    emitted = np.zeros(len(idx), dtype=np.int64)
    sel = np.flatnonzero(crossings >= 1)  # positions into idx still emitting
    max_k = int(crossings.max(initial=0))
    if refractory > 0:
        max_k = min(max_k, step // refractory + 1)  # no more events fit into one step
    out: list[_Chunk] = []
    for k in range(1, max_k + 1):
        if k > 1:
            sel = sel[crossings[sel] >= k]
        frac = np.minimum((k * thr[sel] - start[sel]) / divisor[sel], 1.0)  # fraction of the step
        offset = np.maximum(np.ceil(frac * step).astype(np.int64), 1)  # in (t_prev, t_prev + step]
        t = np.maximum(t_prev + offset, last[sel] + refractory)
        fits = t <= t_prev + step
        sel, t = sel[fits], t[fits]
        if len(sel) == 0:
            break
        last[sel] = t
        emitted[sel] += 1
        out.append((idx[sel], t, on[sel].view(np.int8)))
    sensor.last_t[idx] = last
    moved = emitted > 0
    sensor.move_ref(idx[moved], (sign * emitted.astype(np.float32) * thr)[moved])
    return out


def _sorted_step(chunks: list[_Chunk | None]) -> _Chunk | None:
    """Merge one step's event chunks, ordered by time (steps themselves are already in order).

    All times lie in one step, at most 10 ms wide, so they fit ``int16`` after subtracting the first.
    """
    chunks = [c for c in chunks if c is not None and len(c[0])]
    if not chunks:
        return None
    flat, t, p = chunks[0] if len(chunks) == 1 else (np.concatenate(parts) for parts in zip(*chunks))
    order = np.argsort((t - t.min()).astype(np.int16), kind="stable")  # within one step: radix sort
    return flat[order], t[order], p[order]


def _emulate_block(
    canvas: np.ndarray,
    thresholds: tuple[np.ndarray, np.ndarray],
    reset_offsets: np.ndarray,
    noise: np.ndarray,
    config: DvsEmulatorConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Record a block of ``[B, 34, 34]`` intensities: events sorted by (sample, t) and per-sample counts.

    ``noise`` holds this block's background events with block-local ``sample``.
    """
    b = len(canvas)
    pixels = SENSOR_SIZE * SENSOR_SIZE
    render = _Renderer(canvas, config)
    frame = render(0, np.empty_like(canvas)).reshape(-1)
    prev_frame = np.empty_like(frame)
    c_on, c_off = np.tile(thresholds[0], b), np.tile(thresholds[1], b)
    sensor = _Sensor(
        ref=np.log(frame) + reset_offsets.reshape(-1) * np.minimum(c_on, c_off),
        c_on=c_on,
        c_off=c_off,
        last_t=np.full(b * pixels, np.iinfo(np.int64).min // 2, dtype=np.int64),
    )
    step, refractory = config.step_us, config.refractory_us
    noise = noise[np.argsort(noise["t"], kind="stable")]
    noise_flat = noise["sample"] * pixels + noise["pixel"]
    n_steps = config.duration_us // step
    bounds = np.searchsorted(noise["t"], np.arange(n_steps + 1) * step, side="right")
    steps: list[_Chunk] = []
    for s in range(1, n_steps + 1):
        lo, hi = bounds[s - 1], bounds[s]
        noisy = _apply_noise(sensor, noise_flat[lo:hi], noise["t"][lo:hi], noise["p"][lo:hi], refractory)
        frame, prev_frame = prev_frame, frame
        render(s, frame.reshape(canvas.shape))
        merged = _sorted_step([noisy, *_fire(sensor, frame, prev_frame, (s - 1) * step, step, refractory)])
        if merged is not None:
            steps.append(merged)
    return _to_events(steps, b)


def _to_events(steps: list[_Chunk], b: int) -> tuple[np.ndarray, np.ndarray]:
    """Time-ordered flat-index chunks of a block -> ``EVENT_DTYPE`` events sorted by (sample, t), counts."""
    pixels = SENSOR_SIZE * SENSOR_SIZE
    if not steps:
        return np.empty(0, dtype=EVENT_DTYPE), np.zeros(b, dtype=np.int64)
    flat, t, p = (np.concatenate(parts) for parts in zip(*steps))
    sample = (flat // pixels).astype(np.int16)
    order = np.argsort(sample, kind="stable")  # radix sort; keeps the time order within a sample
    pix = flat[order] % pixels
    events = np.empty(len(order), dtype=EVENT_DTYPE)
    events["x"] = pix % SENSOR_SIZE
    events["y"] = pix // SENSOR_SIZE
    events["t"] = t[order]
    events["p"] = p[order]
    return events, np.bincount(sample, minlength=b)


def emulate(images: np.ndarray, config: DvsEmulatorConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Record ``[N, 8, 8]`` digit images (sklearn's format, values 0..16) with the emulated camera.

    Returns one ``EVENT_DTYPE`` array and ``offsets`` of length N + 1: sample ``i`` is
    ``events[offsets[i]:offsets[i + 1]]``, sorted by time. The random draws depend on N, so a subset
    of the digits recorded on its own gets other noise than in :func:`generate`.
    """
    config = config if config is not None else DvsEmulatorConfig()
    images = _check_images(images)
    n = len(images)
    canvas = render_digits(images)
    rng = np.random.default_rng(config.seed)
    pixels = SENSOR_SIZE * SENSOR_SIZE
    thresholds = (_thresholds(config, rng, pixels), _thresholds(config, rng, pixels))
    reset_offsets = rng.random((n, pixels), dtype=np.float32) - np.float32(0.5)
    noise = _noise_events(config, n, rng)
    starts = list(range(0, n, _BLOCK))
    noise_bounds = np.searchsorted(noise["sample"], [*starts, n])
    chunks, counts = [np.empty(0, dtype=EVENT_DTYPE)], [np.zeros(0, dtype=np.int64)]
    for j, start in enumerate(starts):
        stop = min(start + _BLOCK, n)
        block_noise = noise[noise_bounds[j] : noise_bounds[j + 1]].copy()
        block_noise["sample"] -= start
        ev, cnt = _emulate_block(canvas[start:stop], thresholds, reset_offsets[start:stop], block_noise, config)
        chunks.append(ev)
        counts.append(cnt)
    offsets = np.concatenate([[0], np.cumsum(np.concatenate(counts))]).astype(np.int64)
    return np.concatenate(chunks), offsets


def _check_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images, dtype=np.float64)
    if images.ndim != 3 or images.shape[1:] != (SOURCE_SIZE, SOURCE_SIZE):
        raise ConfigError(f"images must have shape [N, 8, 8] (sklearn digits), got {list(images.shape)}")
    if not np.isfinite(images).all() or images.min(initial=0.0) < 0.0 or images.max(initial=0.0) > 16.0:
        raise ConfigError("image values must be finite and within [0, 16] (sklearn digits' range)")
    return images


@functools.lru_cache(maxsize=4)
def generate(config: DvsEmulatorConfig) -> tuple[np.ndarray, np.ndarray]:
    """:func:`emulate` of all 1797 digits, cached per configuration; both arrays are read-only."""
    events, offsets = emulate(_sklearn_digits()[0], config)
    events.setflags(write=False)
    offsets.setflags(write=False)
    return events, offsets


def _thresholds(config: DvsEmulatorConfig, rng: np.random.Generator, pixels: int) -> np.ndarray:
    """Per-pixel thresholds with Gaussian mismatch, floored at 10% of the nominal value."""
    c = config.contrast_threshold
    thr = c * (1.0 + config.threshold_mismatch * rng.standard_normal(pixels))
    return np.maximum(thr, 0.1 * c).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# Splits and the dataset


@functools.lru_cache(maxsize=1)
def split_indices() -> dict[str, np.ndarray]:
    """Fixed stratified 80/20 split of sklearn's digits: sorted indices per split, seed-independent."""
    _, targets = _sklearn_digits()
    rng = np.random.default_rng(SPLIT_SEED)
    test: list[np.ndarray] = []
    for label in range(10):
        members = np.flatnonzero(targets == label)
        test.append(rng.permutation(members)[: int(round(TEST_FRACTION * len(members)))])
    test_idx = np.sort(np.concatenate(test))
    train_idx = np.setdiff1d(np.arange(len(targets)), test_idx)
    for a in (train_idx, test_idx):
        a.setflags(write=False)
    return {"train": train_idx, "test": test_idx}


class DigitsDvs:
    """One split of ``digits-dvs``; ``dataset[i]`` is ``(events, label)`` (events are a fresh copy).

    ``indices`` are the rows of ``sklearn.datasets.load_digits()`` in this split and ``labels``
    their targets. The events of all digits are generated on first access and shared in-process by
    every split with the same configuration.
    """

    info = INFO

    def __init__(self, split: str, config: DvsEmulatorConfig | None = None) -> None:
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r} for dataset 'digits-dvs'; choose one of: {', '.join(SPLITS)}")
        if config is not None and not isinstance(config, DvsEmulatorConfig):
            raise ConfigError(f"config must be a DvsEmulatorConfig, got {type(config).__name__}")
        self.split = split
        self.config = config if config is not None else DvsEmulatorConfig()
        self.indices = split_indices()[split]
        self.labels = _sklearn_digits()[1][self.indices]
        self.cache_key = f"digits-dvs-{split}-{self.config.key()}"

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        n = len(self.indices)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for the digits-dvs {self.split} split of {n} samples")
        events, offsets = generate(self.config)
        row = int(self.indices[index])
        return events[offsets[row] : offsets[row + 1]].copy(), int(self.labels[index])

    def __repr__(self) -> str:
        return f"DigitsDvs(split={self.split!r}, samples={len(self)}, config={self.config})"


def load(split: str, data_dir: Path | None = None, *, config: DvsEmulatorConfig | None = None) -> DigitsDvs:
    """Load a split (``"train"`` or ``"test"``); ``data_dir`` is ignored, the data is embedded."""
    del data_dir
    return DigitsDvs(split, config)


SPEC = DatasetSpec(info=INFO, load=load, needs_data_dir=False, default_frames=10)
DATASETS.add("digits-dvs", SPEC)
