"""Dirty- and clean-label data poisoning, done lazily: a view over the clean set, never a copy.

Modes: ``all-to-one`` (poisoned samples relabelled to ``target``), ``all-to-all`` (y -> (y+1) mod C),
``clean-label`` (only target-class samples are triggered; labels are kept).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from snnsec.attacks.base import Trigger
from snnsec.errors import ConfigError

MODES = ("all-to-one", "all-to-all", "clean-label")


@dataclass(frozen=True)
class PoisonConfig:
    rate: float = 0.1  # fraction of the whole training set that is poisoned
    target: int = 0
    mode: str = "all-to-one"
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.rate <= 1:
            raise ConfigError(f"poison rate must be in (0, 1], got {self.rate}")
        if self.mode not in MODES:
            raise ConfigError(f"poisoning mode must be one of {', '.join(MODES)}; got {self.mode!r}")
        if self.target < 0:
            raise ConfigError(f"target class must be >= 0, got {self.target}")

    def check_classes(self, num_classes: int) -> None:
        if self.target >= num_classes:
            raise ConfigError(f"target class must be in [0, {num_classes - 1}] for this dataset, got {self.target}")

    def relabel(self, labels: np.ndarray, num_classes: int) -> np.ndarray:
        """The label a triggered sample should be given (the attacker's goal)."""
        if self.mode == "all-to-all":
            return (labels + 1) % num_classes
        return np.full_like(labels, self.target)


def choose_poison_indices(labels: np.ndarray, config: PoisonConfig) -> np.ndarray:
    """Exactly ``round(rate * N)`` distinct training indices, sorted, a pure function of the seed.

    Clean-label attacks can only use target-class samples; asking for more than exist is an error.
    """
    count = round(config.rate * len(labels))
    candidates = np.flatnonzero(labels == config.target) if config.mode == "clean-label" else np.arange(len(labels))
    if count > len(candidates):
        raise ConfigError(
            f"clean-label poisoning at rate {config.rate} needs {count} target-class samples, "
            f"but class {config.target} has only {len(candidates)}; lower --poison-rate"
        )
    if count == 0:
        raise ConfigError(f"poison rate {config.rate} selects no sample of {len(labels)}; raise --poison-rate")
    rng = np.random.default_rng(config.seed)
    return np.sort(rng.choice(candidates, size=count, replace=False))


class FrameDataset(Dataset):
    """Encoded frames ``[T, P, H, W]`` (float32) and labels, read lazily from (memory-mapped) counts.

    ``rows[i]`` is the row of ``counts`` holding sample ``i`` (a subset shares ``counts``, no copy);
    ``labels[i]`` is its label.
    """

    def __init__(
        self,
        counts: np.ndarray,
        labels: np.ndarray,
        encode: Callable[[np.ndarray], np.ndarray],
        rows: np.ndarray | None = None,
    ) -> None:
        self.counts, self.encode, self.labels = counts, encode, np.asarray(labels)
        self.rows = np.arange(len(self.labels)) if rows is None else np.asarray(rows)

    def subset(self, positions: np.ndarray) -> FrameDataset:
        """The samples at ``positions`` of this dataset, sharing the same counts array."""
        return FrameDataset(self.counts, self.labels[positions], self.encode, rows=self.rows[positions])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return torch.from_numpy(self.encode(self.counts[self.rows[index]])), int(self.labels[index])


class PoisonedDataset(Dataset):
    """``base`` with ``trigger`` applied to ``indices`` and their labels replaced by ``new_labels``."""

    def __init__(self, base: Dataset, indices: np.ndarray, trigger: Trigger, new_labels: np.ndarray) -> None:
        self.base, self.trigger = base, trigger
        self.indices = np.asarray(indices)
        self._new_label = dict(zip(self.indices.tolist(), np.asarray(new_labels).tolist()))

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        frames, label = self.base[index]
        if index in self._new_label:
            return self.trigger.apply(frames), int(self._new_label[index])
        return frames, label


def poison_training_set(base: FrameDataset, trigger: Trigger, config: PoisonConfig, num_classes: int) -> PoisonedDataset:
    """The attacker's training set: a lazy view with the chosen samples triggered and relabelled."""
    config.check_classes(num_classes)
    indices = choose_poison_indices(base.labels, config)
    new_labels = config.relabel(base.labels[indices], num_classes)
    return PoisonedDataset(base, indices, trigger, new_labels)


def triggered_test_set(base: FrameDataset, trigger: Trigger, config: PoisonConfig, num_classes: int) -> PoisonedDataset:
    """Test samples for ASR: all-to-one and clean-label exclude target-class samples (they would count
    as successes without any backdoor); labels are the attacker's intended ones."""
    config.check_classes(num_classes)
    keep = np.arange(len(base)) if config.mode == "all-to-all" else np.flatnonzero(base.labels != config.target)
    subset = base.subset(keep)
    return PoisonedDataset(subset, np.arange(len(keep)), trigger, config.relabel(subset.labels, num_classes))
