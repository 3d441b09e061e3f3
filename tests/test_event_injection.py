from functools import partial

import numpy as np
import pytest
import torch

from snnsec.attacks.event_injection import (
    EVENT_TRIGGERS,
    EventPoisonedFrames,
    FlashyInjector,
    MovingInjector,
    StaticInjector,
    create_injector,
    event_poison_training_set,
    event_triggered_test_set,
    frame_pair,
)
from snnsec.attacks.patch import patch_origin, patch_side
from snnsec.attacks.poisoning import FrameDataset, PoisonConfig, choose_poison_indices
from snnsec.attacks.flashy import FlashyTrigger
from snnsec.attacks.moving import MovingTrigger
from snnsec.attacks.static import StaticTrigger
from snnsec.datasets.base import EVENT_DTYPE, DatasetInfo
from snnsec.errors import ConfigError, UnknownNameError
from snnsec.framing import FramingConfig, encode, events_to_frames

W, H = 20, 20
SENSOR = (W, H, 2)
T = 8
T_MIN, T_MAX = 1_000, 100_999
ANCHOR = (10, 0)  # (x, y) of the first and last events: outside every patch used below


def scene(n=400, seed=0, dtype=EVENT_DTYPE):
    """Random events on the 20x20 sensor, t in [T_MIN, T_MAX], both ends at ANCHOR."""
    rng = np.random.default_rng(seed)
    ev = np.zeros(n, dtype=dtype)
    ev["x"], ev["y"] = rng.integers(0, W, n), rng.integers(0, H, n)
    ev["t"] = np.sort(rng.integers(T_MIN, T_MAX + 1, n))
    ev["p"] = rng.integers(0, 2, n)
    ev["t"][0], ev["t"][-1] = T_MIN, T_MAX
    for i in (0, -1):
        ev["x"][i], ev["y"][i] = ANCHOR
    return ev


def anchors_only():
    """Just the two anchor events: everything else in an injected stream is synthetic."""
    ev = np.zeros(2, dtype=EVENT_DTYPE)
    ev["x"], ev["y"], ev["t"], ev["p"] = ANCHOR[0], ANCHOR[1], (T_MIN, T_MAX), 1
    return ev


def frames(ev, sensor=SENSOR, t=T):
    return events_to_frames(ev, sensor, t).astype(np.int64)


def as_set(ev):
    return {tuple(int(v) for v in e) for e in ev}


# -- geometry ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("position", ["top-left", "top-right", "bottom-left", "bottom-right", "middle", "random"])
def test_static_patch_in_every_time_bin(position):
    ev = scene()
    inj = StaticInjector(size=0.2, position=position, polarity=1, bins=T, events_per_pixel_per_bin=2, seed=3)
    added = frames(inj.inject(ev, SENSOR)) - frames(ev)
    row, col = patch_origin(position, 4, H, W, 3)
    expected = np.zeros_like(added)
    expected[:, 1, row:row + 4, col:col + 4] = 2  # ON channel, exactly the rate, every bin
    np.testing.assert_array_equal(added, expected)


@pytest.mark.parametrize("polarity", [0, 1, 2, 3])
@pytest.mark.parametrize("position", ["top-left", "middle", "random"])
def test_static_replace_matches_frame_level_trigger(polarity, position):
    ev = scene(800)
    inj = StaticInjector(size=0.2, position=position, polarity=polarity, bins=T, replace=True, seed=5)
    framed = torch.from_numpy(encode(events_to_frames(inj.inject(ev, SENSOR), SENSOR, T), "binary"))
    clean = torch.from_numpy(encode(events_to_frames(ev, SENSOR, T), "binary"))
    painted = StaticTrigger(size=0.2, position=position, polarity=polarity, seed=5).apply(clean)
    assert torch.equal(framed, painted)


@pytest.mark.parametrize("path", ["horizontal", "vertical", "diagonal"])
@pytest.mark.parametrize("boundary", ["bounce", "wrap"])
@pytest.mark.parametrize("position", ["top-left", "bottom-right", "middle"])
@pytest.mark.parametrize("polarity", [1, 3])
def test_moving_replace_matches_frame_level_trigger(path, boundary, position, polarity):
    ev = scene(800)
    kwargs = dict(size=0.2, position=position, polarity=polarity, path=path, speed=3, boundary=boundary)
    inj = MovingInjector(bins=T, replace=True, **kwargs)
    framed = torch.from_numpy(encode(events_to_frames(inj.inject(ev, SENSOR), SENSOR, T), "binary"))
    clean = torch.from_numpy(encode(events_to_frames(ev, SENSOR, T), "binary"))
    assert torch.equal(framed, MovingTrigger(**kwargs).apply(clean))


@pytest.mark.parametrize("start, length", [(0, 1), (2, 3), (0.5, 0.25), (0.9, 0.1)])
@pytest.mark.parametrize("polarity", [0, 1, 2, 3])
def test_flashy_replace_matches_frame_level_trigger(start, length, polarity):
    ev = scene(800)
    inj = FlashyInjector(bins=T, replace=True, start=start, length=length, polarity=polarity)
    framed = torch.from_numpy(encode(events_to_frames(inj.inject(ev, SENSOR), SENSOR, T), "binary"))
    clean = torch.from_numpy(encode(events_to_frames(ev, SENSOR, T), "binary"))
    painted = FlashyTrigger(start=start, length=length, polarity=polarity).apply(clean)
    # The end events that fix the time windows are never removed: skip their pixel in the end bins.
    for k in (0, T - 1):
        framed[k, :, ANCHOR[1], ANCHOR[0]] = painted[k, :, ANCHOR[1], ANCHOR[0]]
    assert torch.equal(framed, painted)


def test_moving_patch_is_one_solid_square_per_bin_following_time():
    inj = MovingInjector(path="horizontal", size=0.2, position="bottom-right", bins=T, speed=2)  # 2 px left per bin
    added = frames(inj.inject(anchors_only(), SENSOR))[:, 1]
    added[0, ANCHOR[1], ANCHOR[0]] -= 1
    added[-1, ANCHOR[1], ANCHOR[0]] -= 1
    for k in range(T):
        rows, cols = np.nonzero(added[k])
        assert len(rows) == 16 and np.all(added[k][rows, cols] == 1)
        assert (rows.min(), cols.min()) == (16, 16 - 2 * k)


def test_continuous_motion_follows_each_events_time():
    inj = MovingInjector(path="horizontal", size=0.15, position="top-left", bins=T, speed=2, continuous=True,
                         sync=False)
    out = inj.inject(anchors_only(), SENSOR)
    synthetic = out[~((out["x"] == ANCHOR[0]) & (out["y"] == ANCHOR[1]) & np.isin(out["t"], (T_MIN, T_MAX)))]
    rows, cols = inj.origins(synthetic["t"], T_MIN, T_MAX, H, W)
    side = patch_side(0.15, H, W)
    assert np.all((synthetic["x"] - cols >= 0) & (synthetic["x"] - cols < side))
    assert np.all((synthetic["y"] - rows >= 0) & (synthetic["y"] - rows < side))
    assert np.all(rows == 0)
    expected = np.rint(2 * (synthetic["t"] - T_MIN) * T / (T_MAX - T_MIN + 1))  # gliding, not hopping
    np.testing.assert_array_equal(cols, expected)
    assert len(np.unique(cols)) > T  # positions between the per-bin ones
    smeared = frames(out)[1:-1, 1]
    assert any(np.ptp(np.nonzero(bin_)[1]) > side - 1 for bin_ in smeared)  # a trail within a bin


def test_moving_bounces_off_the_edge():
    inj = MovingInjector(path="horizontal", size=0.1, position="top-left", bins=32, speed=3)
    t = T_MIN + (np.arange(32) * (T_MAX - T_MIN + 1)) // 32 + 1  # one timestamp per bin
    _, cols = inj.origins(t, T_MIN, T_MAX, H, W)
    assert cols.min() == 0 and cols.max() == W - 2
    assert np.all(np.abs(np.diff(cols)) <= 3) and np.any(np.diff(cols) < 0)


@pytest.mark.parametrize("start, length, bins", [(0, 1, (0,)), (0.5, 0.25, (4, 5)), (3, 2, (3, 4))])
def test_flash_only_in_its_window_over_the_whole_sensor(start, length, bins):
    ev = scene()
    added = frames(FlashyInjector(start=start, length=length, bins=T).inject(ev, SENSOR)) - frames(ev)
    for k in range(T):
        if k in bins:
            assert np.all(added[k, 1] == 1) and np.all(added[k, 0] == 0)
        else:
            assert not added[k].any()


def test_flash_on_a_patch():
    ev = scene()
    inj = FlashyInjector(area="patch", size=0.2, position="top-left", polarity=3, start=0.75, length=0.25, bins=T)
    added = frames(inj.inject(ev, SENSOR)) - frames(ev)
    assert np.all(added[6:, :, :4, :4] == 1)
    assert added.sum() == 2 * 2 * 16  # two bins, both polarities, 4x4 pixels


# -- polarity and preservation -----------------------------------------------------------------------


@pytest.mark.parametrize("polarity, off, on", [(1, 0, 1), (2, 1, 0), (3, 1, 1)])
def test_polarity_codes_add_the_right_events_and_keep_the_originals(polarity, off, on):
    ev = scene()
    out = StaticInjector(size=0.2, position="top-left", polarity=polarity, bins=T).inject(ev, SENSOR)
    assert as_set(ev) <= as_set(out)
    assert len(out) == len(ev) + 16 * T * (off + on)
    added = frames(out) - frames(ev)
    assert added[:, 0].sum() == 16 * T * off and added[:, 1].sum() == 16 * T * on


def test_polarity_zero_removes_events_in_the_region_only():
    ev = scene(800)
    out = StaticInjector(size=0.3, position="middle", polarity=0, bins=T).inject(ev, SENSOR)
    row, col = patch_origin("middle", 6, H, W, 0)
    inside = (ev["y"] >= row) & (ev["y"] < row + 6) & (ev["x"] >= col) & (ev["x"] < col + 6)
    assert inside.any()
    assert as_set(out) == as_set(ev[~inside]) and len(out) == (~inside).sum()


def test_removal_keeps_the_time_range():
    ev = scene()
    ev["x"][0], ev["y"][0] = 0, 0  # first event inside the top-left patch
    out = StaticInjector(size=0.2, position="top-left", polarity=0).inject(ev, SENSOR)
    assert out["t"].min() == T_MIN and out["t"].max() == T_MAX


def test_replace_removes_originals_in_the_patch():
    ev = scene(800)
    out = StaticInjector(size=0.2, position="top-left", polarity=2, replace=True, bins=T).inject(ev, SENSOR)
    patch = out[(out["x"] < 4) & (out["y"] < 4)]
    assert np.all(patch["p"] == 0) and len(patch) == 16 * T


@pytest.mark.parametrize("injector", [
    StaticInjector(polarity=3, events_per_pixel_per_bin=3),
    MovingInjector(size=0.2, position="middle", path="diagonal", speed=7, bins=5, continuous=True),
    FlashyInjector(start=0.9, length=0.1, polarity=2),
])
@pytest.mark.parametrize("dtype", [EVENT_DTYPE, np.dtype([("x", "<i8"), ("y", "<i8"), ("t", "<i8"), ("p", "<i8")])])
def test_output_sorted_in_range_on_sensor_same_dtype(injector, dtype):
    ev = scene(dtype=dtype)
    out = injector.inject(ev, SENSOR)
    assert out.dtype == dtype
    assert np.all(np.diff(out["t"]) >= 0)
    assert out["t"].min() == T_MIN and out["t"].max() == T_MAX
    assert np.all((out["x"] >= 0) & (out["x"] < W) & (out["y"] >= 0) & (out["y"] < H))
    assert set(np.unique(out["p"]).tolist()) <= {0, 1}
    assert np.array_equal(ev, scene(dtype=dtype))  # input untouched


def test_time_windows_do_not_shift():
    ev = scene()
    out = StaticInjector(size=0.2, position="top-left", polarity=3).inject(ev, SENSOR)
    outside = np.ones((H, W), bool)
    outside[:4, :4] = False
    for t in (4, 8, 13):  # the clean events land in the same bins, whatever T
        np.testing.assert_array_equal(frames(out, t=t)[..., outside], frames(ev, t=t)[..., outside])


def test_count_frames_hold_the_rate():
    ev = scene()
    inj = StaticInjector(size=0.1, position="bottom-right", bins=4, events_per_pixel_per_bin=5)
    added = frames(inj.inject(ev, SENSOR), t=4) - frames(ev, t=4)
    assert np.all(added[:, 1, 18:, 18:] == 5) and added.sum() == 4 * 4 * 5


def test_short_samples_and_empty_samples():
    ev = scene(10)
    ev["t"] = np.arange(10) // 3 + 7  # a 4-microsecond sample: most strata are empty
    out = StaticInjector(bins=16).inject(ev, SENSOR)
    assert out["t"].min() == 7 and out["t"].max() == 10 and len(out) > len(ev)
    empty = np.zeros(0, dtype=EVENT_DTYPE)
    assert len(StaticInjector().inject(empty, SENSOR)) == 0


def test_single_polarity_sensor():
    sensor = (W, H, 1)
    out = StaticInjector(size=0.2, position="top-left", polarity=3, bins=T).inject(anchors_only(), sensor)
    assert np.all(out["p"] == 1) and len(out) == 2 + 16 * T
    assert np.all(events_to_frames(out, sensor, T)[:, 0, :4, :4] == 1)


# -- determinism and validation ----------------------------------------------------------------------


@pytest.mark.parametrize("cls", [StaticInjector, MovingInjector, FlashyInjector])
def test_deterministic_per_seed(cls):
    ev = scene()
    a, b = cls(seed=1).inject(ev, SENSOR), cls(seed=1).inject(ev, SENSOR)
    c = cls(seed=2).inject(ev, SENSOR)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_random_position_fixed_by_seed():
    ev = anchors_only()
    a = frames(StaticInjector(position="random", seed=3).inject(ev, SENSOR)).sum(axis=(0, 1))
    b = frames(StaticInjector(position="random", seed=4).inject(ev, SENSOR)).sum(axis=(0, 1))
    assert not np.array_equal(a > 0, b > 0)


@pytest.mark.parametrize("cls, kwargs", [
    (StaticInjector, {"size": 0}), (StaticInjector, {"size": 1.5}), (StaticInjector, {"position": "left"}),
    (StaticInjector, {"polarity": 4}), (StaticInjector, {"bins": 0}), (StaticInjector, {"bins": 2.0}),
    (StaticInjector, {"events_per_pixel_per_bin": 0}), (StaticInjector, {"seed": 1.5}),
    (MovingInjector, {"path": "sideways"}), (MovingInjector, {"speed": 0}), (MovingInjector, {"speed": 1.5}),
    (MovingInjector, {"boundary": "stop"}),
    (FlashyInjector, {"start": 1.0}), (FlashyInjector, {"length": 0}), (FlashyInjector, {"start": 0.5, "length": 0.6}),
    (FlashyInjector, {"start": 15, "length": 2}), (FlashyInjector, {"area": "corner"}),
])
def test_bad_parameters(cls, kwargs):
    with pytest.raises(ConfigError):
        cls(**kwargs)


def test_patch_too_large_and_bad_events():
    with pytest.raises(ConfigError, match="does not fit"):
        StaticInjector(size=1.0).inject(scene(), (W, 10, 2))
    with pytest.raises(ConfigError, match="fields"):
        StaticInjector().inject(np.zeros(3, dtype=[("x", "<i2"), ("t", "<i8")]), SENSOR)


def test_registry_and_create_injector():
    assert EVENT_TRIGGERS.names() == ["band", "flashy", "moving", "moving-band", "static"]
    assert create_injector("moving", size=0.2, path="paper") == MovingInjector(size=0.2, path="paper")
    with pytest.raises(ConfigError, match="speed"):
        create_injector("static", speed=2)
    with pytest.raises(UnknownNameError, match="static"):
        create_injector("blinking")
    assert StaticInjector().params()["injection"] == "event"


# -- lazy datasets -----------------------------------------------------------------------------------


class ToyEvents:
    """A tiny in-memory EventDataset: label i % 3."""

    info = DatasetInfo("toy", SENSOR, ("a", "b", "c"))
    cache_key = "toy-1"

    def __init__(self, n=12):
        self.samples = [scene(100, seed=i) for i in range(n)]

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        return self.samples[index], index % 3


def toy_frames(raw, framing):
    counts = np.stack([events_to_frames(raw[i][0], SENSOR, framing.frames) for i in range(len(raw))])
    labels = np.array([raw[i][1] for i in range(len(raw))])
    return FrameDataset(counts, labels, partial(encode, encoding=framing.encoding))


def test_wrapper_labels_and_untouched_samples():
    raw, framing = ToyEvents(), FramingConfig(frames=T, encoding="counts")
    base = toy_frames(raw, framing)
    inj = StaticInjector(size=0.2, position="top-left", bins=T)
    data = EventPoisonedFrames(base, raw, np.array([1, 4]), inj, framing, np.array([0, 2]), cache=True)
    assert len(data) == len(raw)
    for i in range(len(raw)):
        frames_i, label = data[i]
        assert frames_i.dtype == torch.float32 and frames_i.shape == (T, 2, H, W)
        if i in (1, 4):
            assert label == {1: 0, 4: 2}[i]
            expected = events_to_frames(inj.inject(raw[i][0], SENSOR), SENSOR, T).astype(np.float32)
            assert torch.equal(frames_i, torch.from_numpy(expected))
            assert torch.equal(data[i][0], frames_i)  # cached copy is the same
        else:
            clean, clean_label = base[i]
            assert label == clean_label == i % 3 and torch.equal(frames_i, clean)
    clean, triggered = data.pairs()[1]
    assert torch.equal(clean, base[4][0]) and torch.equal(triggered, data[4][0])


def test_poison_and_test_set_builders():
    raw, framing = ToyEvents(), FramingConfig(frames=T)
    base = toy_frames(raw, framing)
    inj = FlashyInjector(bins=T)
    config = PoisonConfig(rate=0.25, target=2, seed=1)
    train = event_poison_training_set(base, raw, inj, framing, config, 3)
    np.testing.assert_array_equal(train.indices, choose_poison_indices(base.labels, config))
    assert all(train[int(i)][1] == 2 for i in train.indices)
    test = event_triggered_test_set(base, raw, inj, framing, config, 3)
    assert len(test) == 8 and len(test.pairs()) == 8  # the 4 target-class samples excluded
    for k in range(len(test)):
        frames_k, label = test[k]
        raw_index = int(test.base.rows[k])
        assert label == 2 and raw_index % 3 != 2
        assert torch.all(frames_k[0, 1] == 1)  # the ON flash fills bin 0
        assert torch.equal(frames_k[1:], base[raw_index][0][1:])  # nothing else changes
        assert torch.equal(frames_k[0, 0], base[raw_index][0][0, 0])


def test_wrapper_rejects_mismatched_raw():
    raw, framing = ToyEvents(), FramingConfig(frames=T)
    base = toy_frames(ToyEvents(5), framing)
    with pytest.raises(ConfigError, match="framed from raw"):
        EventPoisonedFrames(base, raw, np.array([0]), StaticInjector(bins=T), framing, np.array([0]))


def test_bins_must_match_the_framing():
    raw, framing = ToyEvents(), FramingConfig(frames=T)
    with pytest.raises(ConfigError, match="bins=framing.frames"):
        EventPoisonedFrames(toy_frames(raw, framing), raw, np.array([0]), StaticInjector(bins=T + 1), framing,
                            np.array([0]))


def test_frame_pair():
    ev = scene()
    clean, triggered = frame_pair(ev, SENSOR, StaticInjector(position="top-left", bins=T), FramingConfig(frames=T))
    assert clean.shape == triggered.shape == (T, 2, H, W)
    assert torch.all(triggered[:, 1, :2, :2] == 1) and torch.equal(clean[:, :, 2:], triggered[:, :, 2:])
