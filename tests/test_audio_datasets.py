"""Spiking audio: SHD/SSC read by tonic from format-faithful HDF5 fixtures, the SNN-delays ``window`` binning,
the embedded ``spoken-digits`` set and the CLI defaults that follow the dataset."""
from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest

try:
    import event_fixtures as fx
except ImportError:  # tests/ imported as a package
    from tests import event_fixtures as fx
from snnsec.attack_config import AttackConfig, resolve_attack
from snnsec.datasets import DATASETS
from snnsec.datasets import spoken_digits as sd
from snnsec.datasets import tonic_sets as ts
from snnsec.datasets.base import check_events
from snnsec.errors import ConfigError, DataNotFoundError
from snnsec.framing import FramingConfig, events_to_frames, frame_dataset
from snnsec.records import config_hash

tonic = pytest.importorskip("tonic")
pytest.importorskip("h5py")


@pytest.fixture(autouse=True)
def _no_env_data_dir(monkeypatch):
    monkeypatch.delenv(ts.DATA_DIR_ENV, raising=False)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    import tonic.dataset

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(tonic.dataset, "download_url", refuse, raising=False)
    monkeypatch.setattr(tonic.dataset.Dataset, "download", refuse)


def _independent_frames(events: np.ndarray, steps: int = 100, bin_us: int = 10_000, group: int = 5) -> np.ndarray:
    """SNN-delays' binning written out: 10 ms steps from t = 0, channels summed in groups of 5."""
    out = np.zeros((steps, 700 // group))
    for x, t in zip(events["x"].tolist(), events["t"].tolist()):
        if 0 <= t < steps * bin_us:
            out[t // bin_us, x // group] += 1
    return out


# ---------------------------------------------------------------------------------------------- SHD / SSC


@pytest.mark.parametrize("name", ["shd", "ssc"])
def test_hsd_fixtures_round_trip_through_tonic(tmp_path, name):
    samples = fx.make_hsd(tmp_path, name, per_split={"train": 6, "test": 4})
    spec = DATASETS.get(name)
    assert spec.info.sensor_size == (700, 1, 1) and spec.info.num_classes == {"shd": 20, "ssc": 35}[name]
    for split in ("train", "test"):
        expected = [s for s in samples if s.split == split]
        ds = spec.load(split, tmp_path)
        assert len(ds) == len(expected)
        assert isinstance(ds.dataset.tonic_dataset, getattr(tonic.datasets, name.upper()))
        for i, sample in enumerate(expected):
            events, label = ds[i]  # read through tonic's reader, checked by CheckedDataset
            assert events.dtype.names == ("x", "y", "t", "p") and label == sample.label
            assert np.array_equal(events, sample.events)
            assert (events["y"] == 0).all() and (events["p"] == 1).all()
            check_events(events, spec.info.sensor_size, "sample")


def test_fixture_layout_is_what_plain_tonic_reads(tmp_path):
    """The fixture is tonic's layout, placeholder archive included: tonic's own class loads it offline."""
    samples = fx.make_hsd(tmp_path, "shd", per_split={"test": 3}, time_dtype=np.float16)
    plain = tonic.datasets.SHD(str(tmp_path), train=False)
    events, target = plain[2]
    assert np.array_equal(events["t"], samples[2].events["t"]) and np.array_equal(events["x"], samples[2].events["x"])
    assert int(target) == samples[2].label and len(plain.speaker) == 3


def test_data_dir_may_be_the_dataset_folder_and_the_cache_key_tracks_the_file(tmp_path):
    fx.make_hsd(tmp_path, "shd", per_split={"train": 3, "test": 2})
    a = DATASETS.get("shd").load("train", tmp_path / "SHD")
    assert len(a) == 3
    fx.make_hsd(tmp_path, "shd", per_split={"train": 4, "test": 2}, seed=9)
    assert DATASETS.get("shd").load("train", tmp_path).cache_key != a.cache_key


@pytest.mark.parametrize("name, missing", [("shd", "shd_train.h5"), ("ssc", "ssc_train.h5")])
def test_missing_data_names_the_files_and_where_to_put_them(tmp_path, name, missing):
    with pytest.raises(DataNotFoundError) as info:
        DATASETS.get(name).load("train", tmp_path)
    message = str(info.value)
    assert missing in message and f"{name.upper()}/" in message and "--data-dir" in message
    with pytest.raises(DataNotFoundError, match="SNNSEC_DATA_DIR"):
        DATASETS.get(name).load("train", None)


def test_a_file_that_is_not_hdf5_is_one_clear_error(tmp_path):
    (tmp_path / "SHD").mkdir()
    (tmp_path / "SHD" / "shd_train.h5").write_bytes(b"not hdf5")
    with pytest.raises(DataNotFoundError, match="not in the layout"):
        DATASETS.get("shd").load("train", tmp_path)


def test_window_framing_matches_snn_delays_binning(tmp_path):
    """[T, 1, 1, 140] frames equal an independent bin-by-5, 10 ms computation (events past 1 s truncated)."""
    samples = fx.make_hsd(tmp_path, "shd", per_split={"train": 5, "test": 1}, n_events=400, duration_s=1.3)
    ds = DATASETS.get("shd").load("train", tmp_path)
    framing = FramingConfig(frames=100, slicing="window", size=(1, 140), encoding="counts")
    arrays = frame_dataset(ds, "train", framing, tmp_path / "cache")
    assert arrays.counts.shape == (5, 100, 1, 1, 140)
    for i, sample in enumerate(s for s in samples if s.split == "train"):
        assert np.array_equal(arrays.counts[i, :, 0, 0], _independent_frames(sample.events))
        assert arrays.counts[i].sum() == (sample.events["t"] < 1_000_000).sum() < len(sample.events)
    short = events_to_frames(samples[0].events[:3], (700, 1, 1), 100, "window", (1, 140))
    assert short[50:].sum() == 0 or samples[0].events["t"][2] >= 500_000  # a short sample is padded with empty bins


def test_window_bin_width_and_identities():
    ev = np.zeros(3, dtype=fx.EVENTS)
    ev["x"], ev["t"] = [0, 5, 699], [0, 4_999, 5_000]
    frames = events_to_frames(ev, (700, 1, 1), 4, "window", (1, 140), bin_us=5_000)
    assert frames[0, 0, 0].tolist()[:2] == [1, 1] and frames[1, 0, 0, 139] == 1
    # Existing configs keep their identity (no bin_us key); a window config names bin_us only when not 10 ms.
    assert FramingConfig(frames=10).identity() == {"frames": 10, "slicing": "time", "size": None, "encoding": "binary"}
    assert "bin_us" not in FramingConfig(frames=100, slicing="window").cache_fields()
    assert FramingConfig(frames=100, slicing="window", bin_us=5_000).cache_fields()["bin_us"] == 5_000
    with pytest.raises(ConfigError, match="window"):
        FramingConfig(frames=10, bin_us=5_000)


# ---------------------------------------------------------------------------------------------- spoken-digits


def test_spoken_digits_is_deterministic_and_seeded():
    config = sd.SynthConfig()
    a, b = sd.synthesise(3, 1, 2, config), sd.synthesise(3, 1, 2, config)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, sd.synthesise(3, 1, 2, sd.SynthConfig(seed=1)))
    assert not np.array_equal(a, sd.synthesise(3, 1, 3, config))  # another repetition, other jitter
    assert sd.SynthConfig().key() == sd.SynthConfig(seed=0).key() != sd.SynthConfig(seed=1).key()


def test_spoken_digits_events_are_shd_like():
    config = sd.SynthConfig()
    for digit, speaker, rep in [(0, 0, 0), (7, 8, 14), (4, 10, 3)]:
        ev = sd.synthesise(digit, speaker, rep, config)
        check_events(ev, sd.INFO.sensor_size, "spoken-digits")
        assert ev.dtype == sd.EVENT_DTYPE and (np.diff(ev["t"]) >= 0).all()
        assert 0 <= ev["t"].min() and ev["t"].max() < 1_000_000 and (ev["p"] == 1).all() and (ev["y"] == 0).all()
        assert 500 < len(ev) < 20_000
        frames = events_to_frames(ev, (700, 1, 1), 100, "window", (1, 140))
        active = frames[:, 0, 0].sum(1)
        assert (active > 0).sum() > 20  # sound over a good part of the second, silence around it
        assert active[:3].sum() < active.max()


def test_spoken_digits_splits_are_balanced_and_speaker_disjoint():
    train, test = DATASETS.get("spoken-digits").load("train"), DATASETS.get("spoken-digits").load("test")
    assert (len(train), len(test)) == (1500, 300)
    assert np.bincount(train.labels).tolist() == [150] * 10 and np.bincount(test.labels).tolist() == [30] * 10
    assert set(train.rows[:, 1]).isdisjoint(test.rows[:, 1]) and set(test.rows[:, 1]) == set(sd.TEST_SPEAKERS)


def test_spoken_digits_items_come_from_the_cached_generation(monkeypatch):
    """Items are copies of their rows of the (per-process cached) generation, labelled with their digit."""
    row = int(sd.split_indices()["test"][0])

    def fake(config):  # generate() with only this row synthesised (the whole set takes ~30 s)
        parts = [sd.synthesise(*map(int, u), config) if i == row else np.zeros(0, sd.EVENT_DTYPE)
                 for i, u in enumerate(sd.utterances())]
        return np.concatenate(parts), np.concatenate([[0], np.cumsum([len(p) for p in parts])])

    monkeypatch.setattr(sd, "generate", fake)
    events, label = DATASETS.get("spoken-digits").load("test")[0]
    assert label == sd.utterances()[row, 0]
    assert np.array_equal(events, sd.synthesise(*map(int, sd.utterances()[row]), sd.SynthConfig()))


# ---------------------------------------------------------------------------------------------- defaults


def test_cli_defaults_follow_the_dataset_and_the_model():
    from snnsec.attack_config import fill_defaults as _fill_defaults

    neither = {"dataset": None, "model": None, "slicing": None, "encoding": None, "trigger": None}
    _fill_defaults(neither)
    assert neither == {"dataset": "digits-dvs", "model": "spiking-cnn", "slicing": "time", "encoding": "binary",
                       "trigger": "static"}
    audio = {"dataset": "shd", "model": None, "slicing": None, "encoding": "binary", "trigger": None}
    _fill_defaults(audio)
    assert audio == {"dataset": "shd", "model": "delay-snn", "slicing": "window", "encoding": "binary",
                     "trigger": "band"}
    from snnsec.zoo import MODELS

    if "delay-snn" in MODELS.names():
        by_model = {"dataset": None, "model": "delay-snn"}
        _fill_defaults(by_model)
        assert by_model["dataset"] == MODELS.get("delay-snn").default_dataset


def test_default_attack_keeps_its_run_id_and_audio_resolves_to_strips():
    # The default request's id as computed before the audio options existed (commit c842a52).
    assert config_hash(asdict(AttackConfig())) == "d1946cebcb8d"
    assert resolve_attack(AttackConfig()).framing.identity() == {"frames": 10, "slicing": "time", "size": None,
                                                                  "encoding": "binary"}
    resolved = resolve_attack(AttackConfig(dataset="shd", model="spiking-cnn", slicing="window", trigger="band"))
    assert resolved.config.size == 140 and resolved.config.frames == 100
    assert resolved.framing.size == (1, 140) and (resolved.input_spec.height, resolved.input_spec.width) == (1, 140)


def test_attack_on_shd_fixtures_end_to_end(tmp_path):
    """`snnsec attack --dataset shd` on tonic-format fixtures: the dataset's defaults (delay-snn, window
    slicing, counts, band trigger) fill the options left out; a smoke test of the whole pipeline."""
    import json

    from click.testing import CliRunner

    from snnsec.cli import cli
    from snnsec.zoo import MODELS

    if "delay-snn" not in MODELS.names() or "tiny" not in MODELS.get("delay-snn").configs:
        pytest.skip("zoo model delay-snn (tiny config) not available")
    fx.make_hsd(tmp_path / "data", "shd", per_split={"train": 20, "test": 10}, n_events=200)
    result = CliRunner().invoke(cli, [
        "attack", "--dataset", "shd", "--data-dir", str(tmp_path / "data"), "--model-config", "tiny",
        "--epochs", "1", "--frames", "12", "--size", "28", "--target", "1", "--trigger-opt", "speed=1",
        "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out"), "--device", "cpu", "--json"],
        catch_exceptions=False)
    assert result.exit_code == 0, result.output
    config = json.loads(result.stdout.strip().splitlines()[-1])["config"]
    assert (config["model"], config["slicing"], config["encoding"], config["trigger"]) == (
        "delay-snn", "window", "counts", "band")
    assert (config["frames"], config["size"], config["trigger_params"]["speed"]) == (12, 28, 1)
