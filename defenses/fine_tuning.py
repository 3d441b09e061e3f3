"""Fine-tuning: continue training the suspect model on the defender's clean reserve."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from snnsec.classifier import Classifier
from snnsec.defenses.base import DEFENSES, DefenseContext, ModelRepair, fine_tune, require


@DEFENSES.register("fine-tuning")
@dataclass(frozen=True)
class FineTuning(ModelRepair):
    epochs: int = 10
    lr: float = 1e-3

    name: ClassVar[str] = "fine-tuning"
    summary: ClassVar[str] = "continue training on the clean reserve"

    def __post_init__(self) -> None:
        require(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        require(self.lr > 0, f"lr must be > 0, got {self.lr}")

    def repair(self, ctx: DefenseContext) -> tuple[Classifier, dict[str, Any]]:
        fine_tune(ctx.model, ctx.clean_reserve, ctx, self.epochs, self.lr, "fine-tuning")
        return ctx.model, {"reserve_samples": len(ctx.clean_reserve)}
