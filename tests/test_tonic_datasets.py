"""The tonic-backed dataset loaders, on tiny files written in each dataset's on-disk format."""
from __future__ import annotations

import pickle
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

try:
    import event_fixtures as fx
except ImportError:  # tests/ imported as a package
    from tests import event_fixtures as fx
from snnsec.datasets import tonic_sets as ts
from snnsec.datasets.base import DATASETS
from snnsec.errors import ConfigError, DataNotFoundError, SnnsecError

tonic = pytest.importorskip("tonic")

NAMES = ("dvs128", "cifar10-dvs", "nmnist", "ncaltech101")
WRITERS = {
    "dvs128": fx.write_dvsgesture_npy,
    "cifar10-dvs": fx.write_aedat4,
    "nmnist": fx.write_mnist_bin,
    "ncaltech101": fx.write_mnist_bin,
}
MAKERS = {
    "dvs128": fx.make_dvsgesture,
    "cifar10-dvs": fx.make_cifar10dvs,
    "nmnist": fx.make_nmnist,
    "ncaltech101": fx.make_ncaltech101,
}


def _needs_reader(name: str) -> None:
    if name == "cifar10-dvs":
        pytest.importorskip("aedat", reason="tonic reads .aedat4 with the 'aedat' package")


@pytest.fixture(autouse=True)
def _no_env_data_dir(monkeypatch):
    monkeypatch.delenv(ts.DATA_DIR_ENV, raising=False)


@pytest.fixture(autouse=True)
def network_calls(monkeypatch):
    """Every way tonic could reach the network fails loudly and is recorded."""
    import tonic.dataset
    import tonic.download_utils

    calls: list[str] = []

    def refuse(what):
        def call(*args, **kwargs):
            calls.append(what)
            raise AssertionError(f"network access attempted: {what}")

        return call

    for name in ("download_url", "download_and_extract_archive", "_urlretrieve", "_get_redirect_url"):
        monkeypatch.setattr(tonic.download_utils, name, refuse(f"tonic.download_utils.{name}"))
    monkeypatch.setattr(tonic.dataset, "download_and_extract_archive", refuse("tonic.dataset.download"))
    monkeypatch.setattr(urllib.request, "urlopen", refuse("urllib.request.urlopen"))
    monkeypatch.setattr(socket, "create_connection", refuse("socket.create_connection"))
    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    yield calls
    assert calls == [], f"network access attempted: {calls}"


def assert_events_equal(got: np.ndarray, expected: np.ndarray) -> None:
    assert {"x", "y", "t", "p"} <= set(got.dtype.names)
    assert len(got) == len(expected)
    for f in ("x", "y", "t", "p"):
        np.testing.assert_array_equal(got[f].astype(np.int64), expected[f], err_msg=f"field {f}")


def check_split(ds, samples, split_of) -> None:
    """``ds`` holds exactly the samples whose split is ``ds.split``, in relative-path order, unchanged."""
    by_path = {s.path: s for s in samples}
    wanted = [s.path for s in samples if split_of(s) == ds.split]
    wanted.sort(key=lambda p: p.relative_to(ds.root).as_posix())
    assert list(ds.files) == wanted
    assert len(ds) == len(wanted)
    for i, path in enumerate(ds.files):
        events, label = ds[i]
        assert type(label) is int and label == by_path[path].label
        assert ds.labels[i] == label
        assert_events_equal(events, by_path[path].events)


# --------------------------------------------------------------------------------------------------
# registry


@pytest.mark.parametrize(
    ("name", "sensor", "n_classes", "frames", "loader"),
    [
        ("dvs128", (128, 128, 2), 11, 16, ts.load_dvs128),
        ("cifar10-dvs", (128, 128, 2), 10, 16, ts.load_cifar10_dvs),
        ("nmnist", (34, 34, 2), 10, 10, ts.load_nmnist),
        ("ncaltech101", (240, 180, 2), 101, 10, ts.load_ncaltech101),
    ],
)
def test_registered(name, sensor, n_classes, frames, loader):
    spec = DATASETS.get(name)
    assert spec.needs_data_dir
    assert spec.info.name == name
    assert spec.info.sensor_size == sensor
    assert spec.info.num_classes == n_classes
    assert spec.default_frames == frames
    assert spec.load.__wrapped__ is loader  # wrapped: every sample is validated (CheckedDataset)


def test_class_lists_match_tonic():
    assert ts.DVS128_INFO.num_classes == len(tonic.datasets.DVSGesture.classes)
    assert ts.CIFAR10_DVS_INFO.classes == tuple(
        sorted(tonic.datasets.CIFAR10DVS.classes, key=tonic.datasets.CIFAR10DVS.classes.get)
    )
    assert ts.NMNIST_INFO.num_classes == len(tonic.datasets.NMNIST.classes)
    assert tonic.datasets.DVSGesture.sensor_size == ts.DVS128_INFO.sensor_size
    assert tonic.datasets.CIFAR10DVS.sensor_size == ts.CIFAR10_DVS_INFO.sensor_size
    assert tonic.datasets.NMNIST.sensor_size == ts.NMNIST_INFO.sensor_size
    assert len(set(ts.NCALTECH101_CLASSES)) == 101
    assert "BACKGROUND_Google" in ts.NCALTECH101_CLASSES and "Faces" not in ts.NCALTECH101_CLASSES


@pytest.mark.parametrize("name", NAMES)
def test_urls_and_class_names_match_tonic(name):
    src = ts._SOURCES[name]
    cls = ts._local_class(name)
    base = getattr(tonic.datasets, src.tonic_class)
    assert cls.__name__ == base.__name__  # tonic's folder is save_to/<class name>
    assert issubclass(cls, base)
    for attr, url in src.urls.items():
        assert getattr(base, attr) == url


def test_import_does_not_import_tonic():
    code = "import sys, snnsec.datasets.tonic_sets; assert 'tonic' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------------------------------
# formats and round trips


def test_dvs128_round_trip(tmp_path):
    samples = fx.make_dvsgesture(tmp_path)
    for split in ("train", "test"):
        ds = ts.load_dvs128(split, tmp_path)
        check_split(ds, samples, lambda s: s.split)
    events, _ = ts.load_dvs128("train", tmp_path)[0]
    assert events.dtype == tonic.datasets.DVSGesture.dtype  # x, y int16, p bool, t int64 µs
    assert np.all(events["t"] % 1000 == 0)  # stored in ms, returned in µs


def test_dvsgesture_npy_is_x_y_p_t_in_ms(tmp_path):
    ev = np.array([(3, 4, 2000, 1), (5, 6, 7000, 0)], dtype=fx.EVENTS)
    fx.write_dvsgesture_npy(tmp_path / "a.npy", ev)
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), [[3, 4, 1, 2], [5, 6, 0, 7]])


def test_mnist_bin_bit_layout():
    ev = np.array([(3, 7, 0x012345, 1), (33, 0, 0x7FFFFF, 0)], dtype=fx.EVENTS)
    assert fx.encode_mnist_bin(ev) == bytes([3, 7, 0x81, 0x23, 0x45, 33, 0, 0x7F, 0xFF, 0xFF])


def test_mnist_bin_overflow_is_inverse_of_tonic_reader(tmp_path):
    t = np.array([0, 5, 2**23 - 1, 2**23, 2**23 + 8191, 2**23 + 3 * 8192 + 7, 2**24 + 5, 2**25])
    ev = np.zeros(len(t), dtype=fx.EVENTS)
    ev["t"], ev["x"], ev["y"], ev["p"] = t, np.arange(len(t)), 33 - np.arange(len(t)), np.arange(len(t)) % 2
    raw = fx.encode_mnist_bin(ev)
    markers = [raw[i:i + 5] for i in range(0, len(raw), 5) if raw[i + 1] == 240]
    assert markers and all(m == bytes((0, 240, 0, 0, 0)) for m in markers)
    path = tmp_path / "o.bin"
    path.write_bytes(raw)
    assert_events_equal(tonic.io.read_mnist_file(str(path), dtype=tonic.datasets.NMNIST.dtype), ev)
    with pytest.raises(ValueError):
        fx.encode_mnist_bin(np.array([(0, 240, 0, 0)], dtype=fx.EVENTS))  # y == 240 is the marker


def test_nmnist_round_trip(tmp_path):
    samples = fx.make_nmnist(tmp_path)
    big = np.zeros(3, dtype=fx.EVENTS)  # crosses the 23-bit timestamp range: overflow markers on disk
    big["x"], big["y"], big["t"], big["p"] = (1, 2, 3), (4, 5, 6), (10, 2**23 + 100, 2**24 + 3), (1, 0, 1)
    path = tmp_path / "NMNIST" / "Test" / "4" / "09999.bin"
    fx.write_mnist_bin(path, big)
    samples.append(fx.Sample(path, big, 4, "test"))
    for split in ("train", "test"):
        check_split(ts.load_nmnist(split, tmp_path), samples, lambda s: s.split)
    assert ts.load_nmnist("train", tmp_path).labels == (0, 0, 3, 7, 9)


def test_ncaltech101_round_trip_and_split(tmp_path):
    samples = fx.make_ncaltech101(tmp_path)  # accordion 3, BACKGROUND_Google 2, Faces_easy 1, yin_yang 12
    # ceil(0.9 n) per class to train: 3/0, 2/0, 1/0, 11/1 (yin_yang's last file by name)
    test_files = {tmp_path / "NCALTECH101/Caltech101/yin_yang/image_0012.bin"}
    for split in ("train", "test"):
        ds = ts.load_ncaltech101(split, tmp_path)
        check_split(ds, samples, lambda s: "test" if s.path in test_files else "train")
        assert not any("annotation" in f.name for f in ds.files)
    train = ts.load_ncaltech101("train", tmp_path)
    classes = ("accordion", "BACKGROUND_Google", "Faces_easy", "yin_yang")
    assert set(train.labels) == {ts.NCALTECH101_CLASSES.index(c) for c in classes}
    events, _ = train[0]
    assert events["x"].min() == 0 and events["y"].min() == 0  # tonic's min-subtraction


def test_ncaltech101_drops_events_outside_sensor(tmp_path):
    ev = np.zeros(3, dtype=fx.EVENTS)
    ev["x"], ev["y"], ev["t"] = (0, 239, 250), (0, 179, 10), (1, 2, 3)
    fx.write_mnist_bin(tmp_path / "NCALTECH101/Caltech101/ant/image_0001.bin", ev)
    events, label = ts.load_ncaltech101("train", tmp_path)[0]
    assert label == ts.NCALTECH101_CLASSES.index("ant")
    assert_events_equal(events, ev[:2])


def test_cifar10_dvs_round_trip_and_split(tmp_path):
    pytest.importorskip("aedat")
    samples = fx.make_cifar10dvs(tmp_path)  # airplane 10, cat 20, truck 3 files, named ..._<i> from 0
    # per class, file names in string order, last 10 % (rounded down) to test
    test_names = {"cifar10_airplane_9.aedat4", "cifar10_cat_8.aedat4", "cifar10_cat_9.aedat4"}
    for split in ("train", "test"):
        ds = ts.load_cifar10_dvs(split, tmp_path)
        check_split(ds, samples, lambda s: "test" if s.path.name in test_names else "train")
    events, label = ts.load_cifar10_dvs("test", tmp_path)[0]
    assert events.dtype.names == ("t", "x", "y", "p")
    assert all(len(spec) == 2 for spec in events.dtype.fields.values())  # aedat's field title dropped
    assert events["t"].min() >= 1_600_000_000_000_000  # timestamps kept as recorded


def test_aedat4_writer_read_by_aedat(tmp_path):
    aedat = pytest.importorskip("aedat")
    ev = fx.random_events(np.random.default_rng(5), 11, 128, 128, 10**6)
    fx.write_aedat4(tmp_path / "a.aedat4", ev, packet_size=4)
    decoder = aedat.Decoder(str(tmp_path / "a.aedat4"))
    assert decoder.id_to_stream() == {0: {"type": "events", "width": 128, "height": 128}}
    packets = [p["events"] for p in decoder]
    assert [len(p) for p in packets] == [4, 4, 3]
    got = np.concatenate(packets)
    via_tonic = tonic.io.read_aedat4(str(tmp_path / "a.aedat4"))
    for got_events in (got, via_tonic):
        for ours, theirs in (("t", "t"), ("x", "x"), ("y", "y"), ("p", "on")):
            np.testing.assert_array_equal(got_events[theirs].astype(np.int64), ev[ours])


def test_stratified_split_rule():
    labels = [c for c in range(3) for _ in range(1000)]
    files = [f"c{c}/cifar10_{c}_{i}.aedat4" for c in range(3) for i in range(1000)]
    train = ts.stratified_split(files, labels, "train")
    test = ts.stratified_split(files, labels, "test")
    assert len(train) == 2700 and len(test) == 300
    assert sorted(train + test) == list(range(3000))
    for c in range(3):
        assert sum(labels[i] == c for i in test) == 100
    # string order of names: ..._0, _1, _10, _100, ..., _99, _990, ..., _999 -> test are the last 100
    expected = sorted(f"cifar10_0_{i}.aedat4" for i in range(1000))[900:]
    assert sorted(Path(files[i]).name for i in test if labels[i] == 0) == expected
    assert ts.stratified_split(files, labels, "test") == test  # deterministic
    with pytest.raises(ConfigError):
        ts.stratified_split(files, labels, "val")


# --------------------------------------------------------------------------------------------------
# the dataset object, cache keys


@pytest.mark.parametrize("name", NAMES)
def test_protocol_and_indexing(tmp_path, name):
    _needs_reader(name)
    MAKERS[name](tmp_path)
    ds = DATASETS.get(name).load("train", tmp_path)
    assert ds.info is DATASETS.get(name).info
    assert isinstance(ds.cache_key, str) and name in ds.cache_key
    last_events, last_label = ds[len(ds) - 1]
    neg_events, neg_label = ds[-1]
    assert neg_label == last_label
    np.testing.assert_array_equal(neg_events, last_events)
    assert ds[np.int64(0)][1] == ds[0][1]
    with pytest.raises(IndexError):
        ds[len(ds)]


@pytest.mark.parametrize("name", NAMES)
def test_pickles(tmp_path, name):
    _needs_reader(name)
    MAKERS[name](tmp_path)
    ds = DATASETS.get(name).load("train", tmp_path)
    copy = pickle.loads(pickle.dumps(ds))
    assert copy.cache_key == ds.cache_key and copy.files == ds.files
    np.testing.assert_array_equal(copy[0][0], ds[0][0])


@pytest.mark.parametrize("name", NAMES)
def test_cache_key(tmp_path, name):
    _needs_reader(name)
    samples = MAKERS[name](tmp_path)
    load = DATASETS.get(name).load
    train, test = load("train", tmp_path), load("test", tmp_path)
    assert train.cache_key != test.cache_key
    assert load("train", tmp_path).cache_key == train.cache_key  # stable
    assert load("train", str(tmp_path)).cache_key == train.cache_key
    # a new file in the train split (named to sort first in its class, so the fixed split keeps it in train)
    src = next(s for s in samples if s.path in train.files)
    if name == "dvs128":  # the file name is the label
        new = src.path.parent.with_name("user99_led") / src.path.name
        new.parent.mkdir()
    else:
        new = src.path.with_name("a_" + src.path.name)
    new.write_bytes(src.path.read_bytes())
    grown = load("train", tmp_path)
    assert len(grown) == len(train) + 1
    assert grown.cache_key != train.cache_key
    # a changed file (one more event)
    WRITERS[name](new, np.concatenate([src.events, src.events[-1:]]))
    changed = load("train", tmp_path)
    assert changed.cache_key != grown.cache_key
    assert len(changed[changed.files.index(new)][0]) == len(src.events) + 1


# --------------------------------------------------------------------------------------------------
# where the data is, and when it is not there


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("split", ["train", "test"])
def test_missing_data_message(tmp_path, name, split, network_calls):
    with pytest.raises(DataNotFoundError) as info:
        DATASETS.get(name).load(split, tmp_path)
    msg = str(info.value)
    src = ts._SOURCES[name]
    assert src.title in msg and f"'{name}'" in msg
    for line in ts.LAYOUTS[name]:
        assert line in msg
    assert f"<data-dir>/{src.tonic_class}/" in msg
    assert "--data-dir DIR" in msg and "SNNSEC_DATA_DIR" in msg
    assert "https://" in msg
    assert str(tmp_path) in msg
    assert "URLError" not in msg
    assert info.value.__cause__ is None
    assert network_calls == []


@pytest.mark.parametrize("name", NAMES)
def test_no_data_dir_given(name):
    with pytest.raises(DataNotFoundError, match=r"pass --data-dir DIR or set the SNNSEC_DATA_DIR"):
        DATASETS.get(name).load("train", None)


def test_nonexistent_data_dir(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        ts.load_nmnist("train", tmp_path / "nope")


def test_env_var_and_dataset_folder(tmp_path, monkeypatch):
    samples = fx.make_nmnist(tmp_path)
    explicit = ts.load_nmnist("test", tmp_path)
    monkeypatch.setenv(ts.DATA_DIR_ENV, str(tmp_path))
    from_env = ts.load_nmnist("test", None)
    assert from_env.files == explicit.files and from_env.cache_key == explicit.cache_key
    # the dataset's own folder is accepted too
    inner = ts.load_nmnist("test", tmp_path / "NMNIST")
    assert inner.root == tmp_path.resolve() and inner.cache_key == explicit.cache_key
    # an explicit directory wins over the environment variable
    monkeypatch.setenv(ts.DATA_DIR_ENV, str(tmp_path / "elsewhere"))
    assert ts.load_nmnist("test", tmp_path).files == explicit.files
    assert len(explicit) == sum(s.split == "test" for s in samples)


def test_hidden_files_are_not_samples(tmp_path):
    samples = fx.make_nmnist(tmp_path, per_digit={"train": (2, 5)})
    (tmp_path / "NMNIST/Train/2/._00001.bin").write_bytes(b"\0" * 7)  # macOS archive debris
    ds = ts.load_nmnist("train", tmp_path)
    assert list(ds.files) == [s.path for s in samples]


def test_only_one_split_present(tmp_path):
    fx.make_dvsgesture(tmp_path, samples=[("train", 3, "led", 2)])
    assert len(ts.load_dvs128("train", tmp_path)) == 1
    with pytest.raises(DataNotFoundError, match="ibmGestureTest"):
        ts.load_dvs128("test", tmp_path)


@pytest.mark.parametrize("name", NAMES)
def test_bad_split(tmp_path, name):
    with pytest.raises(ConfigError, match="split"):
        DATASETS.get(name).load("validation", tmp_path)


def _write_bad_layout(root: Path, case: str) -> str:
    ev = fx.random_events(np.random.default_rng(0), 3, 30, 30, t_max=10_000, t_unit=1000)
    if case == "nmnist-folder":
        fx.write_mnist_bin(root / "NMNIST/Train/digits/00001.bin", ev)
        return "nmnist"
    if case == "dvs128-label":
        fx.write_dvsgesture_npy(root / "DVSGesture/ibmGestureTrain/user01_led/11.npy", ev)
        return "dvs128"
    if case == "dvs128-name":
        fx.write_dvsgesture_npy(root / "DVSGesture/ibmGestureTrain/user01_led/clap.npy", ev)
        return "dvs128"
    if case == "cifar-class":
        fx.write_aedat4(root / "CIFAR10DVS/aeroplane/a_0.aedat4", ev)
        return "cifar10-dvs"
    if case == "ncaltech-class":
        fx.write_mnist_bin(root / "NCALTECH101/Caltech101/Faces/image_0001.bin", ev)
        return "ncaltech101"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["nmnist-folder", "dvs128-label", "dvs128-name", "cifar-class", "ncaltech-class"])
def test_unexpected_layout_is_a_clear_error(tmp_path, case):
    name = _write_bad_layout(tmp_path, case)
    with pytest.raises(DataNotFoundError) as info:
        DATASETS.get(name).load("train", tmp_path)
    assert ts.LAYOUTS[name][0] in str(info.value)


def test_missing_aedat_package(tmp_path, monkeypatch):
    fx.make_cifar10dvs(tmp_path, per_class={"dog": 2})
    monkeypatch.setitem(sys.modules, "aedat", None)
    with pytest.raises(SnnsecError, match="pip install aedat"):
        ts.load_cifar10_dvs("train", tmp_path)
