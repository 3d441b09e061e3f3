"""What every event dataset provides: tonic-style structured events, labels and a cache identity."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from snnsec.registry import Registry

#: The event layout used for data the toolkit makes itself (tonic's field names; datasets loaded by
#: tonic keep their own integer widths, framing only reads the fields x, y, t (microseconds) and p).
EVENT_DTYPE = np.dtype([("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "<i1")])

SPLITS = ("train", "test")


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset, known without reading any file."""

    name: str
    sensor_size: tuple[int, int, int]  # (width, height, polarities), tonic's order
    classes: tuple[str, ...]
    description: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.classes)


class EventDataset(Protocol):
    """One split of an event dataset. ``dataset[i]`` is ``(events, label)``."""

    info: DatasetInfo
    #: Changes whenever the events would change (generator parameters, files on disk); keys caches.
    cache_key: str

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]: ...


#: ``loader(split, data_dir) -> EventDataset``; ``split`` is "train" or "test".
DatasetLoader = Callable[[str, "Path | None"], EventDataset]


@dataclass(frozen=True)
class DatasetSpec:
    """A registry entry: the dataset's facts and how to load a split."""

    info: DatasetInfo
    load: DatasetLoader
    needs_data_dir: bool  # False for data embedded in the toolkit
    default_frames: int = 16  # default number of time bins T
    default_size: int | None = None  # default framed height/width after resizing, None = sensor size


DATASETS: Registry[DatasetSpec] = Registry("dataset", "snnsec.datasets")
