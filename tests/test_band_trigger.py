"""Band triggers on 1-D spike streams: frame level, event level, their agreement, and the checks around them."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from snnsec.attack_config import AttackConfig, make_trigger, resolve_attack
from snnsec.attacks import TRIGGERS, create_trigger
from snnsec.attacks.band import band_first_channel
from snnsec.attacks.event_injection import EVENT_TRIGGERS, create_injector
from snnsec.datasets.base import EVENT_DTYPE, check_events
from snnsec.errors import ConfigError
from snnsec.framing import encode, events_to_frames
from snnsec.stealth import frame_ssim

T, W, SENSOR = 100, 140, (700, 1, 1)


def _band(name="band", **over):
    params = {"size": 0.1, "position": "middle", "polarity": 1, "value": 1.0, "seed": 0, **over}
    return create_trigger(name, **params)


def _stream(n=4000, t_max=1_200_000, seed=0):
    rng = np.random.default_rng(seed)
    ev = np.zeros(n, dtype=EVENT_DTYPE)
    ev["x"], ev["t"], ev["p"] = rng.integers(0, 700, n), np.sort(rng.integers(0, t_max, n)), 1
    return ev


def _active(frames: torch.Tensor) -> list[list[int]]:
    """Per time bin, the channels a trigger wrote on zero frames [T, 1, 1, W]."""
    return [torch.nonzero(frames[t, 0, 0]).flatten().tolist() for t in range(frames.shape[0])]


# ---------------------------------------------------------------------------------------------- frame level


@pytest.mark.parametrize("position, first", [("low", 0), ("bottom-left", 0), ("middle", 63), ("high", 126),
                                             ("bottom-right", 126)])
def test_static_band_is_confined_to_its_channels_and_window(position, first):
    out = _band(position=position, start=0.2, length=0.3).apply(torch.zeros(3, T, 1, 1, W))
    for sample in out:
        rows = _active(sample)
        assert all(r == [] for r in rows[:20] + rows[50:])
        assert all(r == list(range(first, first + 14)) for r in rows[20:50])


def test_channel_overrides_position_and_polarity_zero_silences():
    assert _active(_band(channel=7, size=0.05).apply(torch.zeros(T, 1, 1, W)))[0] == list(range(7, 14))
    full = torch.ones(T, 1, 1, W)
    silenced = _band(polarity=0, position="low", start=10, length=5).apply(full)
    assert silenced[10:15, 0, 0, :14].sum() == 0 and silenced.sum() == full.sum() - 5 * 14
    with pytest.raises(ConfigError, match="channel must be in"):
        band_first_channel("low", 130, 14, 140, 0)


def test_moving_band_moves_one_channel_per_bin_and_bounces():
    rows = _active(_band("moving-band", position="low", size=0.05).apply(torch.zeros(T, 1, 1, W)))
    starts = [r[0] for r in rows]
    assert starts[:4] == [0, 1, 2, 3] and starts[-1] == 99 and all(len(r) == 7 for r in rows)
    zeros = torch.zeros(T, 1, 1, W)
    fast = [r[0] for r in _active(_band("moving-band", position="low", size=0.05, speed=2).apply(zeros))]
    top = fast.index(max(fast))
    assert max(fast) >= W - 8 and fast[top + 2] < max(fast) and fast[-1] < max(fast)  # bounced at the top
    down = [r[0] for r in _active(_band("moving-band", position="high", size=0.05, speed=3).apply(zeros))]
    assert down[:3] == [133, 130, 127]
    wrap = [r[0] for r in _active(_band("band", channel=130, size=0.05, speed=2, boundary="wrap", direction="up")
                                  .apply(torch.zeros(8, 1, 1, W)))]
    assert wrap[:4] == [130, 132, 0, 2]


def test_band_validation_and_2d_frames_refuse_in_one_line():
    for bad in ({"size": 0}, {"position": "left"}, {"speed": -1}, {"direction": "sideways"}, {"start": 1.5},
                {"boundary": "x"}, {"channel": -2}):
        with pytest.raises(ConfigError):
            _band(**bad)
    with pytest.raises(ConfigError, match="moving-band speed"):
        _band("moving-band", speed=0)
    with pytest.raises(ConfigError, match="1-D"):
        _band().apply(torch.zeros(4, 2, 8, 8))
    with pytest.raises(ConfigError, match="band, moving-band"):  # a 2-D patch trigger on a strip names the 1-D ones
        create_trigger("static", size=0.1, position="bottom-right", polarity=1, value=1.0, seed=0).apply(
            torch.zeros(T, 1, 1, W))


def test_whole_frame_triggers_work_on_strips():
    for name in ("flashy", "blended"):
        assert 1 in TRIGGERS.get(name).dims
        out = create_trigger(name, size=0.1, position="bottom-right", polarity=1, value=1.0, seed=0).apply(
            torch.zeros(T, 1, 1, W))
        assert out.shape == (T, 1, 1, W) and out.sum() > 0


# ---------------------------------------------------------------------------------------------- event level


@pytest.mark.parametrize("slicing, bin_us", [("window", 10_000), ("time", None)])
@pytest.mark.parametrize("name", ["band", "moving-band"])
def test_event_band_frames_equal_the_frame_trigger(name, slicing, bin_us):
    ev = _stream()
    options = {"size": 0.1, "position": "middle", "polarity": 1, "seed": 0, "start": 0.1, "length": 0.5}
    injector = create_injector(name, bins=T, events_per_pixel_per_bin=2, replace=True, bin_us=bin_us,
                               resolution=W, **options)
    out = injector.inject(ev, SENSOR)
    check_events(out, SENSOR, "injected")
    assert out.dtype == ev.dtype and (np.diff(out["t"]) >= 0).all()
    if bin_us is None:  # within the sample's span: time slicing cuts the same windows
        assert out["t"].min() == ev["t"].min() and out["t"].max() == ev["t"].max()
    else:  # within the framed T bins of 10 ms
        assert injector.inject(ev[:0], SENSOR)["t"].max() < T * bin_us
    frames = lambda e: torch.from_numpy(encode(events_to_frames(e, SENSOR, T, slicing, (1, W)), "binary"))  # noqa: E731
    frame_trigger = create_trigger(name, value=1.0, **options)
    assert torch.equal(frames(out), frame_trigger.apply(frames(ev)))
    # Five sensor channels per framed channel, two events each per active bin.
    added = len(out) - int((~injector.covers(ev, int(ev["t"].min()), int(ev["t"].max()), 1, 700)).sum())
    assert added == 50 * 14 * 5 * 2


def test_event_band_adds_only_inside_its_channels_and_window():
    ev = _stream(seed=1)
    injector = create_injector("band", size=0.1, position="low", polarity=1, seed=0, bins=T, bin_us=10_000,
                               resolution=W, start=30, length=10)
    out = injector.inject(ev, SENSOR)
    counts = events_to_frames(out, SENSOR, T, "window", (1, W)) - events_to_frames(ev, SENSOR, T, "window", (1, W))
    assert counts.min() == 0 and counts.sum() == 10 * 14 * 5
    assert counts[30:40, 0, 0, :14].min() == 5 and counts[:, 0, 0, 14:].sum() == 0
    assert counts[:30].sum() == counts[40:].sum() == 0
    silence = create_injector("band", size=0.1, position="low", polarity=0, seed=0, bins=T, bin_us=10_000,
                              resolution=W, start=30, length=10).inject(ev, SENSOR)
    kept = events_to_frames(silence, SENSOR, T, "window", (1, W))
    assert kept[30:40, 0, 0, :14].sum() == 0 and len(silence) < len(ev)


def test_event_band_on_an_empty_sample_and_a_deterministic_jitter():
    empty = np.zeros(0, dtype=EVENT_DTYPE)
    windowed = create_injector("band", bins=T, bin_us=10_000, resolution=W)
    assert len(windowed.inject(empty, SENSOR)) == 14 * 5 * T  # fixed bins need no sample duration
    assert len(create_injector("band", bins=T).inject(empty, SENSOR)) == 0
    ev = _stream(seed=2)
    assert np.array_equal(windowed.inject(ev, SENSOR), windowed.inject(ev, SENSOR))


# ---------------------------------------------------------------------------------------------- wiring


def test_attack_config_builds_band_triggers_for_the_framing():
    base = {"dataset": "spoken-digits", "model": "spiking-cnn", "slicing": "window", "encoding": "binary"}
    resolved = resolve_attack(AttackConfig(**base, trigger="moving-band", injection="event", size=70,
                                           trigger_options=(("start", 0.5),)))  # to the last bin
    injector = resolved.trigger
    assert (injector.bin_us, injector.resolution, injector.bins, injector.start) == (10_000, 70, 100, 0.5)
    assert make_trigger(resolved.config) == injector
    for bad, match in [({"trigger": "static"}, "band, blended, flashy, moving-band"),
                       ({"trigger": "flashy", "injection": "event"}, "window slicing"),
                       ({"trigger": "band", "trigger_options": (("bin_us", 5),)}, "--slicing"),
                       ({"trigger": "band", "frames": 4}, "time x channel")]:
        with pytest.raises(ConfigError, match=match):
            resolve_attack(AttackConfig(**{**base, **bad}))
    assert EVENT_TRIGGERS.get("band").dims == (1,)


def test_stealth_ssim_runs_over_the_time_by_channel_image():
    clean = torch.zeros(T, 1, 1, W)
    clean[::3, 0, 0, ::4] = 1
    assert frame_ssim(clean.numpy(), clean.numpy()) == pytest.approx(1.0)
    small = frame_ssim(clean.numpy(), _band(size=0.02, start=0, length=5).apply(clean).numpy())
    large = frame_ssim(clean.numpy(), _band(size=0.3).apply(clean).numpy())
    assert 0 < large < small < 1
