"""digits-dvs: the embedded event-camera emulation of scikit-learn's digits."""
from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_digits

import snnsec.datasets.digits_dvs as dd
from snnsec.datasets.base import DATASETS, EVENT_DTYPE
from snnsec.errors import ConfigError

SENSOR = 34
#: A few digits of every class, recorded on their own: cheap enough to emulate many times.
FEW = np.concatenate([np.flatnonzero(load_digits().target == c)[:3] for c in range(10)])


@pytest.fixture(scope="module")
def train() -> dd.DigitsDvs:
    return dd.load("train", None)


@pytest.fixture(scope="module")
def test() -> dd.DigitsDvs:
    return dd.load("test", None)


@pytest.fixture(scope="module")
def all_events() -> tuple[np.ndarray, np.ndarray]:
    return dd.generate(dd.DvsEmulatorConfig())


def few_images() -> np.ndarray:
    return load_digits().images[FEW]


def samples(events: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [events[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


# --- determinism -------------------------------------------------------------------------------


def test_same_config_gives_bit_identical_events() -> None:
    config = dd.DvsEmulatorConfig(seed=3, noise_rate_hz=5.0)
    ev1, off1 = dd.emulate(few_images(), config)
    ev2, off2 = dd.emulate(few_images(), dataclasses.replace(config))
    assert np.array_equal(off1, off2)
    assert ev1.tobytes() == ev2.tobytes()


def test_different_seed_gives_different_events() -> None:
    ev1, off1 = dd.emulate(few_images(), dd.DvsEmulatorConfig(seed=0))
    ev2, off2 = dd.emulate(few_images(), dd.DvsEmulatorConfig(seed=1))
    assert ev1.tobytes() != ev2.tobytes()
    # ... but the same digits: total activity is close.
    assert abs(len(ev1) - len(ev2)) < 0.1 * len(ev1)


def test_block_size_does_not_change_events(monkeypatch: pytest.MonkeyPatch) -> None:
    config = dd.DvsEmulatorConfig(noise_rate_hz=5.0)
    ev1, off1 = dd.emulate(few_images(), config)
    monkeypatch.setattr(dd, "_BLOCK", 7)
    ev2, off2 = dd.emulate(few_images(), config)
    assert np.array_equal(off1, off2) and ev1.tobytes() == ev2.tobytes()


def test_generate_is_cached_and_read_only(all_events: tuple[np.ndarray, np.ndarray]) -> None:
    events, offsets = all_events
    assert dd.generate(dd.DvsEmulatorConfig()) is all_events
    assert not events.flags.writeable and not offsets.flags.writeable
    assert len(offsets) == 1797 + 1 and offsets[-1] == len(events)


# --- validity ----------------------------------------------------------------------------------


def test_events_are_valid(all_events: tuple[np.ndarray, np.ndarray]) -> None:
    events, offsets = all_events
    assert events.dtype == EVENT_DTYPE
    assert events["x"].min() >= 0 and events["x"].max() < SENSOR
    assert events["y"].min() >= 0 and events["y"].max() < SENSOR
    assert set(np.unique(events["p"]).tolist()) == {0, 1}
    assert events["t"].min() > 0 and events["t"].max() <= 300_000
    counts = np.diff(offsets)
    assert 500 <= counts.min() and counts.max() <= 10_000
    # Non-decreasing time within every sample (decreases only at sample boundaries).
    drops = np.flatnonzero(np.diff(events["t"]) < 0) + 1
    assert set(drops.tolist()) <= set(offsets[1:-1].tolist())
    # Both polarities in every sample.
    on = np.add.reduceat(events["p"].astype(np.int64), offsets[:-1])
    assert (on > 0).all() and (on < counts).all()


def test_small_noiseless_batches_are_time_sorted() -> None:
    events, offsets = dd.emulate(few_images()[:2], dd.DvsEmulatorConfig(noise_rate_hz=0.0))
    assert all((np.diff(s["t"]) >= 0).all() for s in samples(events, offsets))


def test_items_have_event_dtype_and_are_copies(train: dd.DigitsDvs) -> None:
    events, label = train[0]
    assert events.dtype == EVENT_DTYPE and isinstance(label, int)
    events["x"][:] = 0
    assert train[0][0]["x"].max() > 0  # the cache is untouched
    assert np.array_equal(train[-1][0], train[len(train) - 1][0])
    with pytest.raises(IndexError):
        train[len(train)]


def test_refractory_period_is_respected() -> None:
    for config in (dd.DvsEmulatorConfig(), dd.DvsEmulatorConfig(refractory_us=3000, noise_rate_hz=50.0)):
        events, offsets = dd.emulate(few_images(), config)
        sample = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
        pixel = (sample * SENSOR + events["y"]) * SENSOR + events["x"]
        order = np.lexsort((events["t"], pixel))
        same = pixel[order][1:] == pixel[order][:-1]
        gaps = np.diff(events["t"][order])[same]
        assert gaps.min() >= config.refractory_us


def test_events_occur_during_each_saccade(all_events: tuple[np.ndarray, np.ndarray]) -> None:
    events, offsets = all_events
    saccade = (events["t"] - 1) // 100_000  # t in (0, 300 ms]
    sample = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    per_saccade = np.zeros((len(offsets) - 1, 3), dtype=np.int64)
    np.add.at(per_saccade, (sample, saccade), 1)
    assert per_saccade.min() > 100
    # The camera pauses at the triangle's corners: activity peaks mid-saccade.
    hist = np.bincount(events["t"] // 10_000, minlength=31)[:30].reshape(3, 10)
    assert (hist[:, 4:6].min(axis=1) > 3 * hist[:, 0]).all()


def test_static_blank_scene_gives_only_noise() -> None:
    blank = np.zeros((4, 8, 8))
    events, _ = dd.emulate(blank, dd.DvsEmulatorConfig(noise_rate_hz=0.0))
    assert len(events) == 0
    events, offsets = dd.emulate(blank, dd.DvsEmulatorConfig(noise_rate_hz=20.0, refractory_us=0))
    expected = 20.0 * SENSOR * SENSOR * 0.3  # per sample
    assert np.allclose(np.diff(offsets), expected, rtol=0.1)
    assert 0.4 < events["p"].mean() < 0.6


def test_noise_and_threshold_change_density() -> None:
    base = len(dd.emulate(few_images(), dd.DvsEmulatorConfig())[0])
    assert len(dd.emulate(few_images(), dd.DvsEmulatorConfig(noise_rate_hz=10.0))[0]) > base
    assert len(dd.emulate(few_images(), dd.DvsEmulatorConfig(contrast_threshold=0.7))[0]) < 0.7 * base


def test_saccade_path_is_a_closed_triangle() -> None:
    config = dd.DvsEmulatorConfig()
    path = dd.saccade_path(config)
    assert path.shape == (301, 2)
    assert np.allclose(path[0], path[-1])
    corners = path[[0, 100, 200]]
    sides = np.linalg.norm(corners - np.roll(corners, 1, axis=0), axis=1)
    assert np.allclose(sides, config.saccade_amplitude_px)


# --- splits and labels -------------------------------------------------------------------------


def test_split_sizes_disjoint_and_stratified(train: dd.DigitsDvs, test: dd.DigitsDvs) -> None:
    assert len(train) + len(test) == 1797
    assert 350 <= len(test) <= 370
    assert not set(train.indices.tolist()) & set(test.indices.tolist())
    for split in (train, test):
        assert np.bincount(split.labels, minlength=10).min() > 0
    fraction = np.bincount(test.labels, minlength=10) / np.bincount(load_digits().target, minlength=10)
    assert np.allclose(fraction, 0.2, atol=0.01)


def test_labels_match_sklearn(train: dd.DigitsDvs, test: dd.DigitsDvs) -> None:
    target = load_digits().target
    for split in (train, test):
        assert np.array_equal(split.labels, target[split.indices])
        assert [split[i][1] for i in (0, 7, len(split) - 1)] == [int(target[split.indices[i]]) for i in (0, 7, -1)]


def test_split_does_not_depend_on_seed() -> None:
    a, b = dd.load("test", None), dd.load("test", None, config=dd.DvsEmulatorConfig(seed=9))
    assert np.array_equal(a.indices, b.indices)
    assert a.cache_key != b.cache_key


def test_data_is_learnable(train: dd.DigitsDvs, test: dd.DigitsDvs) -> None:
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    def count_images(split: dd.DigitsDvs) -> np.ndarray:
        rows = []
        for i in range(len(split)):
            ev = split[i][0]
            rows.append(np.bincount((ev["p"] * SENSOR + ev["y"]) * SENSOR + ev["x"], minlength=2 * SENSOR * SENSOR))
        return np.log1p(np.stack(rows)) / 4.0

    x_train, x_test = count_images(train), count_images(test)
    with warnings.catch_warnings(), threadpool_limits(1):  # 2 busy cores: threaded BLAS only spins
        warnings.simplefilter("ignore")  # lbfgs may stop before full convergence
        clf = LogisticRegression(max_iter=100).fit(x_train, train.labels)
    assert clf.score(x_test, test.labels) > 0.8


# --- registration, cache keys and validation -----------------------------------------------------


def test_registered_spec() -> None:
    spec = DATASETS.get("digits-dvs")
    assert spec.info.sensor_size == (34, 34, 2)
    assert spec.info.classes == tuple("0123456789")
    assert spec.needs_data_dir is False and spec.default_frames == 10
    ds = spec.load("test", None)
    assert len(ds) == len(dd.split_indices()["test"]) and ds.info is spec.info


def test_cache_key(monkeypatch: pytest.MonkeyPatch) -> None:
    key = dd.load("train", None).cache_key
    assert key == dd.load("train", None, config=dd.DvsEmulatorConfig()).cache_key
    same = dd.DvsEmulatorConfig(contrast_threshold=0.35, seed=np.int64(0), refractory_us=np.int32(500))
    assert key == dd.load("train", None, config=same).cache_key
    assert key != dd.load("test", None).cache_key
    assert key != dd.load("train", None, config=dd.DvsEmulatorConfig(refractory_us=501)).cache_key
    monkeypatch.setattr(dd, "EMULATOR_VERSION", "next")
    assert key != dd.load("train", None).cache_key


def test_bad_split_names_the_allowed_ones() -> None:
    with pytest.raises(ConfigError, match="train, test"):
        dd.load("validation", None)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("contrast_threshold", 0.0),
        ("contrast_threshold", float("nan")),
        ("threshold_mismatch", -0.1),
        ("refractory_us", -1),
        ("refractory_us", 1.5),
        ("noise_rate_hz", -1.0),
        ("step_us", 0),
        ("saccade_us", 100_500),
        ("saccade_amplitude_px", 0.0),
        ("saccade_amplitude_px", 20.0),
        ("log_eps", 0.0),
        ("seed", -1),
        ("seed", True),
    ],
)
def test_config_validation(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        dd.DvsEmulatorConfig(**{field: value})


def test_bad_inputs() -> None:
    with pytest.raises(ConfigError, match="DvsEmulatorConfig"):
        dd.load("train", None, config={"seed": 1})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"\[N, 8, 8\]"):
        dd.emulate(np.zeros((2, 28, 28)))
    with pytest.raises(ConfigError, match="0, 16"):
        dd.emulate(np.full((1, 8, 8), 17.0))
