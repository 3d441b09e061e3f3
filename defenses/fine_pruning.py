"""Fine-pruning (Liu et al., RAID 2018): prune dormant channels of the last convolutional spiking layer until the clean reserve's
accuracy drops by ``max_accuracy_drop`` (or ``max_rate`` is reached), then fine-tune on the reserve."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from snnsec.classifier import Classifier
from snnsec.defenses.base import DEFENSES, DefenseContext, ModelRepair, fine_tune, require, require_fraction
from snnsec.defenses.pruning import dormant_order, prune
from snnsec.training import accuracy


@DEFENSES.register("fine-pruning")
@dataclass(frozen=True)
class FinePruning(ModelRepair):
    layer: str = "auto"  # "auto" (last convolutional spiking layer), "feature", or a module name
    max_accuracy_drop: float = 0.05  # stop pruning once reserve accuracy fell this much
    max_rate: float = 0.9
    step: float = 0.05  # share of channels pruned per step
    epochs: int = 10
    lr: float = 1e-3

    name: ClassVar[str] = "fine-pruning"
    summary: ClassVar[str] = "prune dormant channels while clean reserve accuracy holds, then fine-tune"

    def __post_init__(self) -> None:
        require_fraction("max_accuracy_drop", self.max_accuracy_drop)
        require_fraction("max_rate", self.max_rate)
        require_fraction("step", self.step)
        require(self.epochs >= 0, f"epochs must be >= 0, got {self.epochs}")
        require(self.lr > 0, f"lr must be > 0, got {self.lr}")

    def repair(self, ctx: DefenseContext) -> tuple[Classifier, dict[str, Any]]:
        model = ctx.model
        layer, order = dormant_order(model, ctx, self.layer)
        baseline = accuracy(model, ctx.clean_reserve)
        count, step = 0, max(1, round(self.step * len(order)))
        while count + step <= round(self.max_rate * len(order)):
            prune(model, layer, order[: count + step])
            if accuracy(model, ctx.clean_reserve) < baseline - self.max_accuracy_drop:
                break
            count += step
        prune(model, layer, order[:count])
        if self.epochs:
            fine_tune(model, ctx.clean_reserve, ctx, self.epochs, self.lr, "fine-pruning: fine-tuning")
        return model, {"layer": layer, "pruned_channels": count, "channels": len(order), "reserve_accuracy_before": baseline}
