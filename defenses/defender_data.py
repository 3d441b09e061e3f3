"""What the defender is handed: the received training set and a clean reserve, with no trace of the ground truth.

The reserve models an independently collected clean, labelled set. It is drawn from its own random stream
(``[seed, RESERVE_STREAM]``, independent of the poisoning draw), only from rows the attacker did not
poison, and is then *held out* of the received training set: the defender gets the other rows, re-indexed
from 0, so no row number, shared sample or second copy of a row links the two sets, and comparing them
cannot reveal which rows were poisoned (issue 11: with one shared stream the reserve *was* the poisoned
set, and a row's two copies gave away the trigger). Raw events, where a defense needs them, are handed
over for the reserve's samples only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor
from torch.utils.data import Dataset

from snnsec.errors import ConfigError

RESERVE_STREAM = 0x5245_5345  # "RESE": the reserve's own stream beside the seed, never the poisoning's


def draw_reserve(n: int, poisoned: np.ndarray, rate: float, seed: int) -> np.ndarray:
    """Sorted rows of the clean reserve: ``max(1, round(rate * n))`` rows drawn without replacement from the
    rows not in ``poisoned``, by a generator seeded with ``[seed, RESERVE_STREAM]``."""
    count = max(1, round(rate * n))
    candidates = np.setdiff1d(np.arange(n), np.asarray(poisoned, dtype=np.int64))
    if count > len(candidates):
        raise ConfigError(f"--reserve-rate {rate} asks for {count} clean samples but only {len(candidates)} of "
                          f"{n} training samples are not poisoned; lower --reserve-rate")
    rng = np.random.default_rng([seed, RESERVE_STREAM])
    return np.sort(rng.choice(candidates, size=count, replace=False))


class HeldSamples(Dataset):
    """The samples at ``positions`` of a dataset, re-indexed ``0..n-1``, with their ``labels``: a view that
    exposes no row number, index set or other attribute of the dataset it reads from."""

    def __init__(self, source: Dataset, positions: np.ndarray, labels: np.ndarray) -> None:
        self._read = source.__getitem__
        self._positions = np.asarray(positions, dtype=np.int64)
        self.labels = np.asarray(labels)
        if len(self.labels) != len(self._positions):
            raise ValueError(f"{len(self._positions)} positions but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self._positions)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self._read(int(self._positions[index]))


class HeldEvents:
    """Raw events of the reserve's samples, by reserve position (``[i]`` -> ``(events, label)``); nothing of
    the other training samples."""

    def __init__(self, raw: Any, rows: np.ndarray) -> None:
        self._read, self._rows = raw.__getitem__, np.asarray(rows, dtype=np.int64)
        self.sensor_size = tuple(raw.info.sensor_size)

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        return self._read(int(self._rows[index]))


@dataclass(frozen=True)
class DefenderData:
    """The defender's two sets, and (for evaluation only) where the poisoned samples ended up."""

    train_set: HeldSamples  # the received training set minus the reserve rows, re-indexed
    clean_reserve: HeldSamples  # the clean, labelled reserve
    reserve_events: HeldEvents | None  # raw events of the reserve samples, when the data has them
    poisoned_positions: np.ndarray  # positions in ``train_set`` of the poisoned samples: ground truth only


def split_for_defender(received: Dataset, received_labels: np.ndarray, clean: Dataset, clean_labels: np.ndarray,
                       poisoned: np.ndarray, reserve_rate: float, seed: int, raw: Any = None) -> DefenderData:
    """Hold a clean reserve out of the ``received`` training set (the attacker's, ``poisoned`` rows triggered and
    relabelled); ``clean`` is the same set before poisoning (row ``i`` of both is the same sample) and ``raw``
    its raw events (indexed like ``clean``), if any."""
    n = len(received)
    if len(clean) != n or len(received_labels) != n or len(clean_labels) != n:
        raise ValueError(f"received ({n}) and clean ({len(clean)}) training sets must hold the same rows")
    reserve = draw_reserve(n, poisoned, reserve_rate, seed)
    kept = np.setdiff1d(np.arange(n), reserve)
    return DefenderData(
        train_set=HeldSamples(received, kept, np.asarray(received_labels)[kept]),
        clean_reserve=HeldSamples(clean, reserve, np.asarray(clean_labels)[reserve]),
        reserve_events=None if raw is None else HeldEvents(raw, _raw_rows(clean, reserve)),
        poisoned_positions=np.flatnonzero(np.isin(kept, poisoned)),
    )


def _raw_rows(clean: Dataset, positions: np.ndarray) -> np.ndarray:
    """Rows of the raw event dataset behind ``clean``'s samples at ``positions`` (a FrameDataset keeps them)."""
    rows = getattr(clean, "rows", None)
    return np.asarray(positions) if rows is None else np.asarray(rows)[positions]


__all__ = ["RESERVE_STREAM", "DefenderData", "HeldEvents", "HeldSamples", "draw_reserve", "split_for_defender"]
