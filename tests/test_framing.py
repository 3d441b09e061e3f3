import numpy as np
import pytest
import tonic.transforms

from snnsec.datasets.base import EVENT_DTYPE, DatasetInfo
from snnsec.errors import ConfigError
from snnsec.framing import FramingConfig, encode, events_to_frames, frame_dataset


def make_events(rows):
    return np.array(rows, dtype=EVENT_DTYPE)


def test_time_slicing_counts_every_event_in_its_window():
    ev = make_events([(0, 0, 0, 1), (1, 0, 10, 0), (1, 0, 10, 0), (2, 3, 99, 1)])
    frames = events_to_frames(ev, (4, 4, 2), frames=2, slicing="time")
    assert frames.shape == (2, 2, 4, 4) and frames.dtype == np.int16
    assert frames[0, 1, 0, 0] == 1 and frames[0, 0, 0, 1] == 2  # t=0 and t=10 fall in the first half
    assert frames[1, 1, 3, 2] == 1  # the last event is kept (tonic drops edge events)
    assert frames.sum() == len(ev)


def test_count_slicing_puts_equal_event_counts_per_bin():
    ev = make_events([(i % 4, 0, t, 1) for i, t in enumerate([0, 1, 2, 3, 500, 900])])
    frames = events_to_frames(ev, (4, 1, 2), frames=3, slicing="count")
    assert frames.reshape(3, -1).sum(1).tolist() == [2, 2, 2]


def test_resize_sums_events_into_coarser_pixels():
    ev = make_events([(0, 0, 0, 1), (1, 1, 0, 1), (3, 3, 0, 0)])
    frames = events_to_frames(ev, (4, 4, 2), frames=1, size=(2, 2))
    assert frames[0, 1, 0, 0] == 2 and frames[0, 0, 1, 1] == 1


def test_matches_tonic_toframe_on_random_events():
    rng = np.random.default_rng(0)
    n = 5000
    ev = np.zeros(n, dtype=EVENT_DTYPE)
    ev["x"], ev["y"], ev["p"] = rng.integers(0, 34, n), rng.integers(0, 34, n), rng.integers(0, 2, n)
    ev["t"] = np.sort(rng.integers(0, 100_000, n))
    ours = events_to_frames(ev, (34, 34, 2), frames=10, slicing="count")
    theirs = tonic.transforms.ToFrame(sensor_size=(34, 34, 2), n_event_bins=10)(ev)
    assert np.array_equal(ours, theirs)


def test_empty_sample_gives_zero_frames():
    assert events_to_frames(make_events([]), (8, 8, 2), frames=3).sum() == 0


def test_encodings():
    counts = np.array([0, 1, 5], dtype=np.int16)
    assert encode(counts, "binary").tolist() == [0, 1, 1]
    assert encode(counts, "counts").tolist() == [0, 1, 5]


@pytest.mark.parametrize("kwargs", [{"frames": 0}, {"frames": 4, "slicing": "x"}, {"frames": 4, "encoding": "x"}])
def test_bad_framing_config(kwargs):
    with pytest.raises(ConfigError):
        FramingConfig(**kwargs)


class CountingDataset:
    info = DatasetInfo("toy", (8, 8, 2), ("a", "b"))
    cache_key = "toy-v1"

    def __init__(self):
        self.reads = 0

    def __len__(self):
        return 3

    def __getitem__(self, i):
        self.reads += 1
        return make_events([(i, i, 0, 1), (i, 0, 5, 0)]), i % 2


def test_cache_is_reused_and_keyed_by_framing(tmp_path):
    ds = CountingDataset()
    first = frame_dataset(ds, "train", FramingConfig(frames=2), tmp_path)
    assert ds.reads == 3
    again = frame_dataset(ds, "train", FramingConfig(frames=2, encoding="counts"), tmp_path)  # encoding not cached
    assert ds.reads == 3 and np.array_equal(first.counts, again.counts)
    assert again.labels.tolist() == [0, 1, 0]
    frame_dataset(ds, "train", FramingConfig(frames=4), tmp_path)
    assert ds.reads == 6
    assert not list(tmp_path.rglob("*.tmp*"))
