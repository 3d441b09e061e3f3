"""``spoken-digits``: the English digits "zero".."nine", formant-synthesised and heard by an emulated cochlea.

The toolkit's spiking-audio counterpart of ``digits-dvs``: embedded, offline, deterministic, built in
seconds on one core, with events shaped like the Spiking Heidelberg Digits (SHD; Cramer et al., "The
Heidelberg spiking data sets", IEEE TNNLS 2020), which were made by playing recorded digits through a
model of the inner ear (a hydrodynamic basilar-membrane model, hair cells and bushy cells) onto 700
channels. Here every stage is a simple, documented stand-in:

Speech (a source-filter formant synthesiser, Klatt-style, evaluated in the frequency domain)
    Each digit is a fixed phone sequence (ARPAbet: Z IH R OW, W AH N, T UW, TH R IY, F AO R, F AY V,
    S IH K S, S EH V AH N, EY T, N AY N). A phone is one or two segments with a duration, target
    formants F1-F3 (Peterson & Barney's adult male averages for vowels; diphthongs glide between two
    targets), a voicing amplitude and a frication-noise amplitude with a noise band (fricatives,
    stop bursts, aspiration). Formants move linearly between segment centres (coarticulation);
    amplitudes ramp over 8 ms at segment edges. The voiced source is a harmonic series at ``f0`` with
    a -6 dB/octave spectrum (glottal -12, lip radiation +6); the vocal tract is a cascade of five
    two-pole resonators (F1-F3 from the phones, F4 = 3.3 kHz and F5 = 4.2 kHz scaled with the speaker)
    whose power response is evaluated at every channel's centre frequency.

Speakers
    Twelve synthetic speakers (fixed table :data:`SPEAKERS`): pitch ``f0`` 95-260 Hz, formant scale
    0.96-1.25 (vocal-tract length: men, women, a child) and speaking rate 0.85-1.2. Each utterance
    adds seeded jitter: f0 (10%), a falling pitch contour with a random slope and a slow wobble,
    every formant target (8%), every segment duration (20%; the word at most 0.7 s), loudness (0 to
    -6 dB), the onset time (30-200 ms) and pink background noise 12-30 dB below the utterance's peak
    while it sounds.
    Speakers 9 and 10 are the test split (as SHD's test set holds out speakers); every speaker says
    every digit 15 times: 1,500 training and 300 test samples, balanced over the ten digits.

Cochlea (an analytic filterbank, no waveform is rendered)
    700 channels with centre frequencies equally spaced on the ERB-rate scale (Glasberg & Moore 1990)
    from 50 Hz (channel 0) to 8 kHz (channel 699). Rather than filtering a waveform (an STFT or 700
    band-pass filters cost minutes on one core), the filterbank's output power is computed directly
    every ``step_us`` (5 ms): the source-filter power at the channel's centre frequency, times a
    harmonic-resolvability factor ``1 + m cos(2 pi f / f0)`` with ``m = exp(-2 (ERB(f) / f0)^2)`` (the
    first Fourier term of a harmonic comb seen through a filter one ERB wide: low channels resolve
    single harmonics, high ones do not), plus frication noise (power in a log-Gaussian band with
    gamma-distributed fluctuations per step and channel). Power becomes a level in dB relative to
    the utterance's peak.

Hair cells and spikes
    Each channel's firing rate is ``rate_max * clip((L + dynamic_range_db) / dynamic_range_db, 0, 1)^1.5``
    (a compressive, saturating rate-level function) plus an onset response (the part of the rate above
    its 40 ms running average: adaptation, which makes onsets salient as in SHD). An integrate-and-fire
    neuron per channel (random initial phase) integrates the rate, linearly interpolated within each
    step, and emits a spike at every integer crossing (microsecond timestamps); spontaneous activity is
    a Poisson process of ``spontaneous_hz`` per channel.

Output
    Events use :data:`~snnsec.datasets.base.EVENT_DTYPE` on the sensor (700, 1, 1): ``x`` = channel,
    ``y = 0``, ``p = 1`` (SHD has one polarity; tonic gives it p = 1), ``t`` in microseconds in
    ``[0, 1 s)``, sorted by time. All samples of one configuration are generated at once (a few
    seconds), kept in-process (``functools.lru_cache`` keyed by the frozen configuration) and served
    as copies; the same configuration gives bit-identical events. Each utterance is a pure function
    of (configuration, digit, speaker, repetition), computed only over the steps where it sounds:
    about 20 s of CPU for all 1,800 on one core; about 3,300 events per sample on average.

Difficulty
    A logistic regression on 10 x 28 pooled time x channel counts scores about 85% on the held-out
    speakers (channel histograms alone: about 80%); the delay SNN reaches 93% after 6 epochs.
"""
from __future__ import annotations

import functools
import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from snnsec.datasets.base import DATASETS, EVENT_DTYPE, SPLITS, DatasetInfo, DatasetSpec
from snnsec.errors import ConfigError

#: Bump whenever the events produced for a given configuration change; part of every cache key.
SYNTH_VERSION = "spoken-digits-1"

CHANNELS = 700
DURATION_US = 1_000_000
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
REPETITIONS = 15  # utterances per speaker and digit
TEST_SPEAKERS = (9, 10)

#: (f0 Hz, formant scale, speaking rate) of the twelve synthetic speakers.
SPEAKERS = (
    (95, 0.96, 1.00), (110, 1.00, 0.90), (125, 1.04, 1.10), (140, 0.98, 1.20), (180, 1.10, 0.95),
    (200, 1.14, 1.05), (215, 1.18, 0.85), (235, 1.12, 1.15), (260, 1.25, 1.00), (120, 1.02, 1.00),
    (205, 1.15, 1.00), (150, 1.06, 0.92),
)

INFO = DatasetInfo(
    name="spoken-digits",
    sensor_size=(CHANNELS, 1, 1),
    classes=DIGITS,
    description=(
        "English digits zero..nine formant-synthesised for 12 synthetic speakers and turned into spikes by an "
        "emulated 700-channel cochlea (SHD-like, ~1 s); embedded, generated in seconds"
    ),
)

# A segment: (duration ms, (F1, F2, F3) Hz, voicing amplitude, noise amplitude, noise centre Hz, noise width
# in octaves). Formants of unvoiced segments only steer the transitions.
_V = 1.0
PHONES: dict[str, tuple[tuple[float, tuple[float, float, float], float, float, float, float], ...]] = {
    "IY": ((140, (270, 2290, 3010), _V, 0, 0, 1),),
    "IH": ((110, (390, 1990, 2550), _V, 0, 0, 1),),
    "EH": ((120, (530, 1840, 2480), _V, 0, 0, 1),),
    "AH": ((110, (640, 1190, 2390), _V, 0, 0, 1),),
    "AO": ((150, (570, 840, 2410), _V, 0, 0, 1),),
    "UW": ((160, (300, 870, 2240), _V, 0, 0, 1),),
    "OW": ((110, (540, 960, 2400), _V, 0, 0, 1), (110, (360, 780, 2300), _V, 0, 0, 1)),
    "AY": ((120, (730, 1090, 2440), _V, 0, 0, 1), (110, (330, 2100, 2800), _V, 0, 0, 1)),
    "EY": ((110, (480, 1900, 2500), _V, 0, 0, 1), (90, (320, 2250, 2900), _V, 0, 0, 1)),
    "R": ((70, (420, 1150, 1600), 0.8, 0, 0, 1),),
    "W": ((60, (300, 650, 2200), 0.7, 0, 0, 1),),
    "N": ((70, (260, 1700, 2600), 0.35, 0, 0, 1),),
    "V": ((70, (300, 1400, 2400), 0.3, 0.25, 4000, 0.9),),
    "Z": ((90, (300, 1700, 2600), 0.3, 0.5, 5500, 0.6),),
    "S": ((110, (400, 1700, 2600), 0, 0.8, 5800, 0.5),),
    "F": ((100, (400, 1300, 2400), 0, 0.35, 4000, 1.2),),
    "TH": ((90, (400, 1500, 2500), 0, 0.3, 4500, 1.3),),
    "T": ((45, (400, 1700, 2600), 0, 0, 0, 1), (15, (400, 1700, 2600), 0, 0.7, 4500, 0.6),
          (30, (400, 1700, 2600), 0, 0.3, 2500, 1.2)),
    "K": ((45, (400, 1700, 2600), 0, 0, 0, 1), (15, (400, 1700, 2600), 0, 0.7, 2200, 0.5),
          (35, (400, 1700, 2600), 0, 0.3, 2000, 1.0)),
}
WORDS = {
    "zero": ("Z", "IH", "R", "OW"), "one": ("W", "AH", "N"), "two": ("T", "UW"), "three": ("TH", "R", "IY"),
    "four": ("F", "AO", "R"), "five": ("F", "AY", "V"), "six": ("S", "IH", "K", "S"),
    "seven": ("S", "EH", "V", "AH", "N"), "eight": ("EY", "T"), "nine": ("N", "AY", "N"),
}
_BANDWIDTHS = np.array([60.0, 90.0, 120.0, 150.0, 200.0])  # F1..F5 resonator bandwidths (Hz)


@dataclass(frozen=True)
class SynthConfig:
    """Every parameter of the synthesis and the emulated cochlea; hashable, so it keys the in-process cache."""

    step_us: int = 5000  # time step of the filterbank power and the rate
    rate_max: float = 180.0  # saturated firing rate per channel (Hz)
    dynamic_range_db: float = 30.0  # levels this far below the utterance's peak and lower do not drive firing
    onset_gain: float = 1.0  # weight of the onset (adaptation) response
    spontaneous_hz: float = 0.3  # background firing per channel
    seed: int = 0  # per-utterance jitter, noise and spikes

    def __post_init__(self) -> None:
        checks = (("step_us", self.step_us, 500, 20_000), ("rate_max", self.rate_max, 1.0, 1000.0),
                  ("dynamic_range_db", self.dynamic_range_db, 5.0, 100.0), ("onset_gain", self.onset_gain, 0.0, 10.0),
                  ("spontaneous_hz", self.spontaneous_hz, 0.0, 100.0))
        for name, value, low, high in checks:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise ConfigError(f"spoken-digits {name} must be a number in [{low}, {high}], got {value!r}")
        if not isinstance(self.step_us, int) or DURATION_US % self.step_us:
            raise ConfigError(f"spoken-digits step_us must be an integer dividing {DURATION_US}, got {self.step_us!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"spoken-digits seed must be an integer >= 0, got {self.seed!r}")

    def key(self) -> str:
        """Stable hex digest of the parameters and the synthesiser version."""
        values = {k: (float(v) if isinstance(v, float) else int(v)) for k, v in asdict(self).items()}
        return hashlib.sha256((repr(sorted(values.items())) + SYNTH_VERSION).encode()).hexdigest()[:16]


def erb(f: np.ndarray) -> np.ndarray:
    """Equivalent rectangular bandwidth (Hz) of the auditory filter at ``f`` Hz (Glasberg & Moore 1990)."""
    return 24.7 * (4.37 * f / 1000.0 + 1.0)


@functools.lru_cache(maxsize=1)
def centre_frequencies() -> np.ndarray:
    """The 700 channels' centre frequencies (Hz), equally spaced in ERB-rate from 50 Hz to 8 kHz."""
    rate = lambda f: 21.4 * np.log10(4.37 * f / 1000.0 + 1.0)  # noqa: E731
    e = np.linspace(rate(50.0), rate(8000.0), CHANNELS)
    cf = (10 ** (e / 21.4) - 1.0) * 1000.0 / 4.37
    cf.setflags(write=False)
    return cf


# --------------------------------------------------------------------------------------------------
# One utterance's trajectories


@dataclass(frozen=True)
class _Utterance:
    formants: np.ndarray  # [steps, 5] Hz
    f0: np.ndarray  # [steps] Hz
    voice: np.ndarray  # [steps] amplitude
    noise: np.ndarray  # [steps] amplitude
    noise_centre: np.ndarray  # [steps] Hz
    noise_width: np.ndarray  # [steps] octaves
    gain_db: float
    snr_db: float  # level of the background noise below the utterance's peak


def _utterance(digit: int, speaker: int, rep: int, config: SynthConfig) -> _Utterance:
    """Seeded trajectories of one utterance on the step grid."""
    rng = np.random.default_rng([config.seed, speaker, digit, rep, 0x5D])
    f0_base, scale, rate = SPEAKERS[speaker]
    segments = [seg for phone in WORDS[DIGITS[digit]] for seg in PHONES[phone]]
    durations = np.array([s[0] for s in segments]) / rate * np.exp(rng.normal(0, 0.2, len(segments)))
    durations *= min(1.0, 700.0 / durations.sum())  # utterance at most 0.7 s
    onset = rng.uniform(30.0, 200.0)
    edges = onset + np.concatenate([[0.0], np.cumsum(durations)])  # ms
    centres = (edges[:-1] + edges[1:]) / 2
    targets = np.array([s[1] for s in segments]) * scale * np.exp(rng.normal(0, 0.08, (len(segments), 3)))
    steps = DURATION_US // config.step_us
    t = (np.arange(steps) + 0.5) * config.step_us / 1000.0  # step centres, ms
    formants = np.empty((steps, 5))
    for i in range(3):
        formants[:, i] = np.interp(t, centres, targets[:, i])
    formants[:, 1] = np.maximum(formants[:, 1], formants[:, 0] + 150)
    formants[:, 2] = np.maximum(formants[:, 2], formants[:, 1] + 250)
    formants[:, 3], formants[:, 4] = 3300.0 * scale, 4200.0 * scale
    # f0: speaker's pitch with jitter, falling over the utterance with a random slope, a slow wobble.
    progress = np.clip((t - edges[0]) / (edges[-1] - edges[0]), 0, 1)
    f0 = f0_base * np.exp(rng.normal(0, 0.1)) * (1.08 - rng.uniform(0.1, 0.25) * progress)
    f0 *= 1 + 0.02 * np.sin(2 * np.pi * (t / 1000.0) * rng.uniform(3, 6) + rng.uniform(0, 2 * np.pi))

    def stepwise(values: list[float]) -> np.ndarray:  # piecewise constant per segment, 8 ms ramps, 0 outside
        ramp = np.minimum(8.0, durations / 4)
        xs = np.concatenate([[edges[0] - 8.0], np.ravel(np.column_stack([edges[:-1] + ramp, edges[1:] - ramp])),
                             [edges[-1] + 8.0]])
        ys = np.concatenate([[0.0], np.repeat(values, 2), [0.0]])
        return np.interp(t, xs, ys, left=0.0, right=0.0)

    index = np.clip(np.searchsorted(edges, t) - 1, 0, len(segments) - 1)
    return _Utterance(
        formants=formants, f0=f0, voice=stepwise([s[2] for s in segments]),
        noise=stepwise([s[3] for s in segments]),
        noise_centre=np.array([s[4] or 1000.0 for s in segments])[index] * scale,
        noise_width=np.array([s[5] for s in segments])[index],
        gain_db=float(rng.uniform(-6.0, 0.0)),
        snr_db=float(rng.uniform(12.0, 30.0)),
    )


# --------------------------------------------------------------------------------------------------
# Cochlea and spikes, one utterance at a time over the steps where it sounds


@functools.lru_cache(maxsize=1)
def _channel_terms() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-channel constants (float32): centre frequency, its square, the source spectrum."""
    f = centre_frequencies().astype(np.float32)
    source = (1.0 / (1.0 + (f / 150.0) ** 2)).astype(np.float32)  # -6 dB/octave above 150 Hz
    return f, f * f, source


def _levels(u: _Utterance, active: slice, rng: np.random.Generator) -> np.ndarray:
    """Filterbank output levels [steps, 700] (float32, dB relative to the utterance's peak plus its gain)."""
    f, f2, source = _channel_terms()
    formants = u.formants[active].astype(np.float32)
    f0 = u.f0[active].astype(np.float32)[:, None]
    tract = np.ones((len(f0), CHANNELS), dtype=np.float32)
    for i, bw in enumerate(_BANDWIDTHS.astype(np.float32)):  # cascade of two-pole resonators (power, 1 at 0 Hz)
        fi = formants[:, i, None] ** 2
        den = (fi - f2) ** 2
        den += (bw * bw) * f2
        tract *= fi * fi / den
    ratio = (f0 / f) ** 2
    ratio *= ratio
    below = 1.0 / (1.0 + ratio * ratio)  # nothing below f0: (f0/f)^8
    resolved = np.exp(-2.0 * (erb(f) / f0) ** 2)  # harmonic resolvability of a filter one ERB wide
    voiced = tract * source * below * (1.0 + resolved * np.cos((2 * np.pi) * f / f0))
    voiced *= np.float32(1.0) * u.voice[active].astype(np.float32)[:, None] ** 2
    centre = u.noise_centre[active].astype(np.float32)[:, None]
    width = u.noise_width[active].astype(np.float32)[:, None]
    band = np.exp(-0.5 * (np.log2(f / centre) / width) ** 2)
    band *= (0.05 * u.noise[active] ** 2).astype(np.float32)[:, None]
    band *= rng.uniform(0.5, 1.5, band.shape).astype(np.float32)  # frication noise fluctuates
    power = voiced + band
    peak = float(power.max())
    # Background noise (pink, fluctuating) while the utterance sounds, snr_db below its peak.
    power += (peak * 10 ** (-u.snr_db / 10) * 150.0 / f) * rng.uniform(0.0, 2.0, power.shape).astype(np.float32)
    level = 10 * np.log10(power + np.float32(1e-30 + 1e-12 * peak))
    return level - np.float32(10 * np.log10(peak)) + np.float32(u.gain_db)


def _rates(levels: np.ndarray, config: SynthConfig) -> np.ndarray:
    """Firing rates (Hz) [steps, 700]: saturating rate-level function plus an adapting onset response."""
    from scipy.signal import lfilter

    drive = np.clip((levels + config.dynamic_range_db) / config.dynamic_range_db, 0.0, 1.0)
    rate = config.rate_max * drive * np.sqrt(drive)
    alpha = config.step_us / 40_000.0  # 40 ms running average: the adapted part of the response
    avg = lfilter([alpha], [1.0, alpha - 1.0], rate, axis=0)
    onset = np.maximum(rate - avg, 0.0)
    return 0.6 * rate + config.onset_gain * onset


def _spikes(rates: np.ndarray, first_step: int, config: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """Integrate-and-fire per channel (rate linear within a step, random initial phase) plus spontaneous
    Poisson spikes: the utterance's events, sorted by time."""
    dt = config.step_us / 1e6
    padded = np.concatenate([np.zeros((1, CHANNELS)), rates, np.zeros((1, CHANNELS))])
    increments = (padded[:-1] + padded[1:]) / 2 * dt  # trapezoid of the linearly interpolated rate
    level = rng.uniform(0, 1, CHANNELS) + np.concatenate([np.zeros((1, CHANNELS)), np.cumsum(increments, axis=0)])
    whole = np.floor(level).astype(np.int64)
    fired = whole[1:] - whole[:-1]  # spikes in each step
    si, ki = np.nonzero(fired)
    count = fired[si, ki]
    si, ki = np.repeat(si, count), np.repeat(ki, count)
    first = np.repeat(np.cumsum(count) - count, count)
    crossed = whole[si, ki] + 1 + (np.arange(len(si)) - first)  # the integer level each spike crosses
    lo, hi = level[si, ki], level[si + 1, ki]
    t = ((first_step - 1 + si + (crossed - lo) / np.maximum(hi - lo, 1e-12)) * config.step_us).astype(np.int64)
    n_spont = rng.poisson(config.spontaneous_hz * CHANNELS * DURATION_US / 1e6)
    ev = np.zeros(len(t) + n_spont, dtype=EVENT_DTYPE)
    ev["x"] = np.concatenate([ki, rng.integers(0, CHANNELS, n_spont)])
    ev["t"] = np.clip(np.concatenate([t, rng.integers(0, DURATION_US, n_spont)]), 0, DURATION_US - 1)
    ev["p"] = 1
    return ev[np.lexsort((ev["x"], ev["t"]))]


def synthesise(digit: int, speaker: int, rep: int, config: SynthConfig) -> np.ndarray:
    """One utterance's events (a pure function of its arguments)."""
    u = _utterance(digit, speaker, rep, config)
    sounding = np.flatnonzero((u.voice > 0) | (u.noise > 0))
    active = slice(int(sounding[0]), int(sounding[-1]) + 1)
    rng = np.random.default_rng([config.seed, speaker, digit, rep, 0xC0C])
    return _spikes(_rates(_levels(u, active, rng), config), active.start, config, rng)


def utterances() -> np.ndarray:
    """Every sample as a row ``(digit, speaker, repetition)``, in sample order."""
    grid = np.array([(d, s, r) for s in range(len(SPEAKERS)) for d in range(len(DIGITS)) for r in range(REPETITIONS)])
    grid.setflags(write=False)
    return grid


@functools.lru_cache(maxsize=2)
def generate(config: SynthConfig) -> tuple[np.ndarray, np.ndarray]:
    """All samples' events concatenated (read-only) and their offsets ``[N + 1]``, cached per configuration."""
    parts = [synthesise(int(d), int(s), int(r), config) for d, s, r in utterances()]
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)
    events = np.concatenate(parts)
    events.setflags(write=False)
    offsets.setflags(write=False)
    return events, offsets


def split_indices() -> dict[str, np.ndarray]:
    """Speaker-disjoint split: speakers :data:`TEST_SPEAKERS` are ``test``, the rest ``train``."""
    test = np.isin(utterances()[:, 1], TEST_SPEAKERS)
    return {"train": np.flatnonzero(~test), "test": np.flatnonzero(test)}


class SpokenDigits:
    """One split of ``spoken-digits``; ``dataset[i]`` is ``(events, label)`` (events are a fresh copy).
    ``rows`` are the samples' ``(digit, speaker, repetition)``."""

    info = INFO

    def __init__(self, split: str, config: SynthConfig | None = None) -> None:
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r} for dataset 'spoken-digits'; choose one of: "
                              f"{', '.join(SPLITS)}")
        if config is not None and not isinstance(config, SynthConfig):
            raise ConfigError(f"config must be a SynthConfig, got {type(config).__name__}")
        self.split = split
        self.config = config if config is not None else SynthConfig()
        self.indices = split_indices()[split]
        self.rows = utterances()[self.indices]
        self.labels = self.rows[:, 0].copy()
        self.cache_key = f"spoken-digits-{split}-{self.config.key()}"

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        n = len(self.indices)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for the spoken-digits {self.split} split of {n} samples")
        events, offsets = generate(self.config)
        row = int(self.indices[index])
        return events[offsets[row]:offsets[row + 1]].copy(), int(self.labels[index])

    def __repr__(self) -> str:
        return f"SpokenDigits(split={self.split!r}, samples={len(self)}, config={self.config})"


def load(split: str, data_dir: Path | None = None, *, config: SynthConfig | None = None) -> SpokenDigits:
    """Load a split (``"train"`` or ``"test"``); ``data_dir`` is ignored, the data is embedded."""
    del data_dir
    return SpokenDigits(split, config)


#: 100 bins of 10 ms over 140 channels (700 summed by 5), counts: as the SHD defaults.
SPEC = DatasetSpec(info=INFO, load=load, needs_data_dir=False, default_frames=100, default_size=140,
                   default_model="delay-snn", default_slicing="window", default_encoding="counts",
                   default_trigger="band")
DATASETS.add("spoken-digits", SPEC)
