"""PGD adversarial training (Madry et al., 2018) on event frames, through the single trainer.

Each training batch: the first ``ratio`` of its samples are replaced by adversarial examples that PGD
(:mod:`snnsec.attacks.evasion.pgd`, in the frames' own domain: binary flips under L0, or whole-event L-inf
on count frames) computes against the model as it is at that step (in eval mode, through ``surrogate``);
the loss is cross-entropy on the mixed batch. ``ratio = 1`` is Madry's recipe; 0.5 is the common mix that
keeps clean accuracy. Used by ``snnsec evade --defense adversarial-training`` (robust accuracy of the
adversarially trained model) and registered as a model-repair defense (a fresh model adversarially trained
on the received training set: what it does to a backdoor).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from snnsec.attacks.evasion.base import Goal, Victim
from snnsec.attacks.evasion.domains import Budget, domain_of
from snnsec.attacks.evasion.pgd import PGD
from snnsec.attacks.evasion.surrogates import parse_surrogate
from snnsec.classifier import Classifier
from snnsec.defenses.base import DEFENSES, DefenseContext, ModelRepair, require
from snnsec.training import StepHook, TrainConfig, train


@dataclass(frozen=True)
class AdversarialTrainingConfig:
    """The adversary of adversarial training: PGD in the frames' domain."""

    budget: float | None = None  # default: 64 flips (binary, L0) or 1 event per element (counts, L-inf)
    steps: int = 3
    ratio: float = 0.5  # share of each batch replaced by adversarial examples
    surrogate: str = "model"

    def __post_init__(self) -> None:
        require(self.budget is None or self.budget > 0, f"adversarial training budget must be > 0, got {self.budget}")
        require(self.steps >= 1, f"adversarial training steps must be >= 1, got {self.steps}")
        require(0 < self.ratio <= 1, f"adversarial training ratio must be in (0, 1], got {self.ratio}")
        parse_surrogate(self.surrogate)

    def budget_for(self, encoding: str) -> Budget:
        domain = domain_of(encoding)
        value = self.budget if self.budget is not None else (64 if domain.name == "binary" else 1)
        return Budget(domain.default_norm, value)

    def identity(self, encoding: str) -> dict[str, Any]:
        budget = self.budget_for(encoding)
        return {"attack": "pgd", "norm": budget.norm, "budget": budget.value, "steps": self.steps,
                "ratio": self.ratio, "surrogate": parse_surrogate(self.surrogate).label}


class AdversarialStep(StepHook):
    """Cross-entropy on batches whose first ``ratio`` share is replaced by PGD examples made at this step."""

    def __init__(self, config: AdversarialTrainingConfig, encoding: str, seed: int = 0) -> None:
        self.config = config
        self.domain = domain_of(encoding)
        self.budget = config.budget_for(encoding)
        self.attack = PGD(steps=config.steps)
        self.surrogate = parse_surrogate(config.surrogate)
        self.generator = torch.Generator().manual_seed(seed)

    def adversarial(self, classifier: Classifier, frames: Tensor, labels: Tensor) -> Tensor:
        count = max(1, round(self.config.ratio * len(frames)))
        with classifier.evaluating():
            adv = self.attack.perturb(Victim(classifier, self.surrogate), frames[:count], Goal(labels[:count]),
                                      self.budget, self.domain, self.generator)
        self.domain.check(frames[:count], adv, self.budget, who="adversarial training")
        return torch.cat([adv, frames[count:]])

    def loss(self, classifier: Classifier, batch: Sequence[Tensor], epoch: int) -> tuple[Tensor, int]:
        frames, labels = batch[0], batch[1]
        mixed = self.adversarial(classifier, frames, labels)
        return F.cross_entropy(classifier.logits(mixed), labels), len(labels)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "generator" in state:
            self.generator.set_state(state["generator"])


def adversarially_train(classifier: Classifier, dataset: Dataset, training: TrainConfig, encoding: str,
                        config: AdversarialTrainingConfig, label: str = "adversarial training",
                        checkpoint: Any = None) -> list[float]:
    """Train ``classifier`` in place with PGD adversarial training (the single trainer with
    :class:`AdversarialStep`); returns the loss per epoch."""
    return train(classifier, dataset, training, label=label, checkpoint=checkpoint,
                 step=AdversarialStep(config, encoding, training.seed))


@DEFENSES.register("adversarial-training")
@dataclass(frozen=True)
class AdversarialTraining(ModelRepair):
    budget: float = 0.0  # 0: the default (64 flips on binary frames, 1 event per element on count frames)
    steps: int = 3
    ratio: float = 0.5
    surrogate: str = "model"

    name: ClassVar[str] = "adversarial-training"
    summary: ClassVar[str] = "retrain a fresh model with PGD adversarial training on the received set"

    def __post_init__(self) -> None:
        self.adversary()  # validates

    def adversary(self) -> AdversarialTrainingConfig:
        return AdversarialTrainingConfig(budget=self.budget or None, steps=self.steps, ratio=self.ratio,
                                         surrogate=self.surrogate)

    def repair(self, ctx: DefenseContext) -> tuple[Classifier, dict[str, Any]]:
        encoding = getattr(ctx.framing, "encoding", "binary")
        model = ctx.build()
        adversarially_train(model, ctx.train_set, ctx.training, encoding, self.adversary(),
                            label="adversarial-training: retraining")
        return model, {"adversary": self.adversary().identity(encoding)}
