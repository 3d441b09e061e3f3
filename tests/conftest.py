"""Shared fixtures: the embedded dataset framed once per test session."""
from functools import partial

import pytest

from snnsec.attacks.poisoning import FrameDataset
from snnsec.datasets import DATASETS
from snnsec.framing import FramingConfig, encode, frame_dataset


@pytest.fixture(scope="session")
def digits_frames(tmp_path_factory):
    """``(train, test)`` FrameDatasets of digits-dvs at T=5 (short, for fast training tests), binary encoding."""
    cache = tmp_path_factory.mktemp("frame-cache")
    spec = DATASETS.get("digits-dvs")
    framing = FramingConfig(frames=5)
    sets = []
    for split in ("train", "test"):
        arrays = frame_dataset(spec.load(split, None), split, framing, cache)
        sets.append(FrameDataset(arrays.counts, arrays.labels, partial(encode, encoding="binary")))
    return tuple(sets)
