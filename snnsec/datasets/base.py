"""What every event dataset provides: tonic-style structured events, labels and a cache identity."""
from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from snnsec.errors import DataError, SnnsecError
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
    """A registry entry: the dataset's facts and how to load a split.

    The ``default_*`` fields are what the command line fills in for options left out; they are never part
    of a run's identity (the filled-in config is).

    ``load`` is wrapped on construction so that every split it returns is a :class:`CheckedDataset`:
    each sample a loader yields (embedded, tonic-backed or a plugin's) is validated in that one place.
    The loader as given stays reachable as ``load.__wrapped__``.
    """

    info: DatasetInfo
    load: DatasetLoader
    needs_data_dir: bool  # False for data embedded in the toolkit
    default_frames: int = 16  # default number of time bins T
    default_size: int | None = None  # default framed height/width after resizing (1-D sensors: channels), None = sensor
    default_model: str = "spiking-cnn"  # the zoo model the CLI picks when --model is omitted
    default_slicing: str = "time"  # the framing the CLI picks when --slicing is omitted
    default_encoding: str = "binary"  # the encoding the CLI picks when --encoding is omitted
    default_trigger: str = "static"  # the trigger the CLI picks when --trigger is omitted

    def __post_init__(self) -> None:
        if getattr(self.load, "_snnsec_checked", False):
            return  # already wrapped (dataclasses.replace of a spec)
        loader = self.load

        def load(split: str, data_dir: Path | None = None, **kwargs: Any) -> CheckedDataset:
            return CheckedDataset(loader(split, data_dir, **kwargs))

        # The loader may be a class (a dataset type): copy its names only, not its attributes.
        functools.update_wrapper(load, loader, assigned=("__module__", "__name__", "__qualname__", "__doc__"),
                                 updated=())
        load._snnsec_checked = True  # type: ignore[attr-defined]
        object.__setattr__(self, "load", load)


#: Allowed polarity values (tonic's convention: 0 = OFF, 1 = ON; booleans are read as 0/1).
POLARITY_VALUES = (0, 1)


class CheckedDataset:
    """A split whose samples are validated as they are read (the one place every loaded sample passes).

    Reading a sample that raises (a 0-byte, truncated or malformed file) becomes a :class:`DataError`
    naming the file and the reader's complaint; a sample whose events lie outside the sensor
    (``x >= width``, ``y >= height``, negative coordinates), have a polarity other than 0/1, non-finite
    timestamps, or whose label is not a class index is rejected the same way, never wrapped into other
    pixels or classes. Everything else (``info``, ``cache_key``, ``files``, ``labels``, ...) is the
    wrapped dataset's.
    """

    def __init__(self, dataset: EventDataset) -> None:
        self.dataset = dataset

    def __getattr__(self, name: str) -> Any:
        inner = self.__dict__.get("dataset")  # absent while unpickling: no recursion
        if inner is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(inner, name)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        index = operator.index(index)
        n = len(self.dataset)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a split of {n} samples")
        index %= n
        files = getattr(self.dataset, "files", None)
        try:
            if files is not None and 0 <= index < len(files) and Path(files[index]).stat().st_size == 0:
                raise DataError(f"{self.where(index)} is empty (0 bytes); replace the file or remove it from the "
                                "data directory")
            events, label = self.dataset[index]
        except SnnsecError:
            raise
        except Exception as exc:  # any reader failure on one file: say which file, in one line
            reason = " ".join(str(exc).split()) or "no details"
            raise DataError(f"{self.where(index)} cannot be read ({type(exc).__name__}: {reason}); "
                            "replace the file or remove it from the data directory") from exc
        check_events(events, self.dataset.info.sensor_size, self.where(index))
        if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)) or not (
            0 <= label < self.dataset.info.num_classes
        ):
            raise DataError(f"{self.where(index)} has label {label!r}; labels are class indices in "
                            f"[0, {self.dataset.info.num_classes - 1}]")
        return events, int(label)

    def where(self, index: int) -> str:
        """The sample's file where the dataset lists them (``files``), else its dataset, split and index."""
        files = getattr(self.dataset, "files", None)
        if files is not None and 0 <= index < len(files):
            return f"{self.dataset.info.name} file {files[index]}"
        split = getattr(self.dataset, "split", "")
        return f"{self.dataset.info.name} {split} sample {index}".replace("  ", " ")

    def __repr__(self) -> str:
        return f"CheckedDataset({self.dataset!r})"


def check_events(events: Any, sensor_size: tuple[int, int, int], where: str) -> None:
    """Raise a one-line :class:`DataError` unless ``events`` are structured events (fields x, y, t, p)
    inside a ``(width, height, polarities)`` sensor with polarities 0/1 and finite timestamps."""
    names = getattr(getattr(events, "dtype", None), "names", None) or ()
    missing = [f for f in ("x", "y", "t", "p") if f not in names]
    if not isinstance(events, np.ndarray) or events.ndim != 1 or missing:
        got = f"fields {list(names)}" if names else f"{type(events).__name__} {getattr(events, 'shape', '')}"
        raise DataError(f"{where}: expected a 1-D structured event array with fields x, y, t, p, got {got}")
    if len(events) == 0:
        return
    width, height, _ = sensor_size
    for field, size in (("x", width), ("y", height)):
        values = events[field]
        if not (np.issubdtype(values.dtype, np.integer) or values.dtype == np.bool_):
            raise DataError(f"{where}: event field {field} must hold integers, got dtype {values.dtype}")
        low, high = values.min(), values.max()
        if low < 0 or high >= size:
            bad = int(np.count_nonzero((values < 0) | (values >= size)))
            raise DataError(f"{where}: {bad} event(s) with {field} outside the sensor ({field} in [{low}, {high}]; "
                            f"the {width}x{height} sensor allows 0 <= {field} <= {size - 1})")
    p = events["p"]
    if p.dtype != np.bool_:
        bad_p = ~np.isin(p, POLARITY_VALUES)
        if bad_p.any():
            raise DataError(f"{where}: {int(np.count_nonzero(bad_p))} event(s) with polarity "
                            f"{sorted({v.item() for v in np.unique(p[bad_p])[:5]})} (allowed: 0 = OFF, 1 = ON)")
    t = events["t"]
    if not np.issubdtype(t.dtype, np.integer) and not np.isfinite(t).all():
        raise DataError(f"{where}: event timestamps t must be finite")


DATASETS: Registry[DatasetSpec] = Registry("dataset", "snnsec.datasets")
