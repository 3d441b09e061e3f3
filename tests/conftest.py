"""Shared fixtures: the embedded dataset framed once per test session."""
from functools import partial

import pytest
import torch

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


@pytest.fixture
def one_thread():
    """One intra-op thread: many small ops run faster so, and a shared CPU does not stall OpenMP barriers."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
