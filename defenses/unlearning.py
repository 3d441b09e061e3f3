"""Unlearning with the reverse-engineered trigger (Neural Cleanse's mitigation): fine-tune on the clean
reserve where a share of the samples carries the suspected target's reversed trigger under its true
label. Nothing is changed when Neural Cleanse flags no class."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from torch import Tensor
from torch.utils.data import Dataset

from snnsec.classifier import Classifier
from snnsec.defenses.base import DEFENSES, DefenseContext, ModelRepair, fine_tune, require, require_fraction
from snnsec.defenses.neural_cleanse import ReversedTrigger, TriggerSearch, cleanse, cleanse_details
from snnsec.detection import mad_anomaly_index


class StampedDataset(Dataset):
    """``base`` with ``trigger`` applied to the samples at ``indices``; labels are kept."""

    def __init__(self, base: Dataset, trigger: ReversedTrigger, indices: np.ndarray) -> None:
        self.base, self.trigger, self.indices = base, trigger, set(np.asarray(indices).tolist())

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        frames, label = self.base[index]
        return (self.trigger.apply(frames) if index in self.indices else frames), label


@DEFENSES.register("nc-unlearning")
@dataclass(frozen=True)
class TriggerUnlearning(ModelRepair):
    stamp_share: float = 0.2  # share of reserve samples stamped with the reversed trigger
    epochs: int = 10
    lr: float = 1e-3
    anomaly_threshold: float = 2.0
    steps: int = 150  # most Neural Cleanse optimisation steps per class
    schedule: str = "reference"  # Neural Cleanse's cost schedule: "reference" (early stop) or "fixed"
    mini_batches: int = 0  # reference schedule: batches per step (0: one pass over the reserve)

    name: ClassVar[str] = "nc-unlearning"
    summary: ClassVar[str] = "fine-tune with Neural Cleanse's reversed trigger under true labels"

    def __post_init__(self) -> None:
        require_fraction("stamp_share", self.stamp_share)
        require(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        require(self.lr > 0, f"lr must be > 0, got {self.lr}")
        require(self.anomaly_threshold > 0, f"anomaly_threshold must be > 0, got {self.anomaly_threshold}")
        self.search()  # validates

    def search(self) -> TriggerSearch:
        return TriggerSearch(steps=self.steps, schedule=self.schedule, mini_batches=self.mini_batches)

    def repair(self, ctx: DefenseContext) -> tuple[Classifier, dict[str, Any]]:
        triggers = cleanse(ctx, self.search())
        anomaly = mad_anomaly_index(np.array([t.norm for t in triggers]), low_is_anomalous=True)
        suspected = int(np.argmax(anomaly))
        details = {**cleanse_details(triggers), "anomaly_index": [round(float(a), 4) for a in anomaly],
                   "suspected_target": suspected, "unlearned": bool(anomaly[suspected] > self.anomaly_threshold)}
        if not details["unlearned"]:
            return ctx.model, details
        rng = np.random.default_rng(ctx.seed)
        stamped = rng.choice(len(ctx.clean_reserve), round(self.stamp_share * len(ctx.clean_reserve)), replace=False)
        data = StampedDataset(ctx.clean_reserve, triggers[suspected], stamped)
        fine_tune(ctx.model, data, ctx, self.epochs, self.lr, "nc-unlearning: fine-tuning")
        return ctx.model, details
