"""Anti-Backdoor Learning (Li et al., NeurIPS 2021; bboylyg/ABL): isolate, then unlearn.

Isolation: a fresh model trains on the received data with local gradient ascent (LGA), loss
``sign(l - gamma) * l``, which keeps clean losses near ``gamma`` while backdoor samples, learned much
faster, fall below it. A sample's score is its negated loss under that model; the ``removal_rate`` lowest-loss
samples are isolated. Unlearning: the suspect model ascends the loss of the isolated samples (their received
labels), as the reference's ``quick_unlearning_demo.py`` does on the backdoored model.

Unlearning as published (``optimizer="sgd"``, the default): SGD with Nesterov momentum 0.9, weight decay
1e-4, constant lr 5e-4 for 5 epochs, no early stop (``stop_accuracy=0``). ``optimizer="adamw"`` is this
project's earlier variant (AdamW, no weight decay; with ``unlearning_epochs=20, stop_accuracy=0.2`` it is the
exact earlier default): on the committed spiking-CNN configuration it removed the backdoor (ASR 100 -> 0%) at
a cost of 35 points of CA, where the reference's SGD left both unchanged (CA 96.9%, ASR 100%; issue 11).

Differences from the reference:
- LGA's sign is taken per sample, then averaged; the reference takes it on the batch-mean loss.
- Isolation trains with the attack's own recipe (AdamW at its lr, its batch size) for ``isolation_epochs``
  (3); the reference uses SGD lr 0.1, momentum 0.9 (Nesterov), weight decay 1e-4 for 10 epochs, a recipe
  made for WideResNets on CIFAR-10, not for surrogate-gradient SNNs.
- Isolation keeps the *lowest*-loss samples (the paper's rule); the reference's ``backdoor_isolation.py``
  sorts losses in descending order before taking the first ``isolation_ratio``.
- Unlearning batches use the attack's batch size (reference: 64); the optional fine-tuning of the isolation
  model on the other 99% (``backdoor_unlearning.py``) is not done: the suspect model itself is unlearned.
- ``stop_accuracy > 0`` (not in the reference) stops unlearning before an epoch once fewer than that share of
  the isolated samples keep their received label.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Subset

from snnsec.classifier import Classifier
from snnsec.defenses.base import DEFENSES, DefenseContext, TrainingDataFilter, batches, require
from snnsec.progress import progress_bar
from snnsec.training import accuracy, seed_everything


OPTIMIZERS = ("sgd", "adamw")


def unlearning_optimizer(name: str, params: Iterable[Tensor], lr: float) -> torch.optim.Optimizer:
    """``sgd``: the reference's (Nesterov momentum 0.9, weight decay 1e-4); ``adamw``: AdamW, no weight decay."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4, nesterov=True)
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.0)


@DEFENSES.register("abl")
@dataclass(frozen=True)
class AntiBackdoorLearning(TrainingDataFilter):
    removal_rate: float = 0.01  # isolation rate (the paper's 1%)
    isolation_epochs: int = 3
    gamma: float = 0.5  # LGA loss floor
    unlearning_epochs: int = 5  # the reference's 5
    unlearning_lr: float = 5e-4  # the reference's constant 5e-4
    optimizer: str = "sgd"  # unlearning optimizer: "sgd" (the reference's) or "adamw" (this project's earlier one)
    stop_accuracy: float = 0.0  # stop once fewer isolated samples keep their label; 0 never stops (reference)

    name: ClassVar[str] = "abl"
    summary: ClassVar[str] = "isolate fast-learned samples with local gradient ascent, then unlearn them"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.isolation_epochs >= 1, f"isolation_epochs must be >= 1, got {self.isolation_epochs}")
        require(self.gamma > 0, f"gamma must be > 0, got {self.gamma}")
        require(self.unlearning_epochs >= 1, f"unlearning_epochs must be >= 1, got {self.unlearning_epochs}")
        require(self.unlearning_lr > 0, f"unlearning_lr must be > 0, got {self.unlearning_lr}")
        require(0 <= self.stop_accuracy < 1, f"stop_accuracy must be in [0, 1), got {self.stop_accuracy}")
        require(self.optimizer in OPTIMIZERS,
                f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {self.optimizer!r}")

    def score_samples(self, ctx: DefenseContext) -> np.ndarray:
        model = ctx.build()
        self._isolation_training(model, ctx)
        losses = []
        with model.evaluating(), torch.no_grad():
            for frames, labels in batches(ctx.train_set):
                logits = model.logits(frames.to(model.device))
                losses.append(F.cross_entropy(logits, labels.to(model.device), reduction="none").cpu().numpy())
        return -np.concatenate(losses)

    def _isolation_training(self, model: Classifier, ctx: DefenseContext) -> None:
        seed_everything(ctx.seed)
        loader = DataLoader(ctx.train_set, batch_size=ctx.training.batch_size, shuffle=True,
                            generator=torch.Generator().manual_seed(ctx.seed))
        optimizer = torch.optim.AdamW(model.net.parameters(), lr=ctx.training.lr)
        model.net.train()
        with progress_bar("abl: isolation (LGA)", total=self.isolation_epochs * len(loader)) as advance:
            for epoch in range(self.isolation_epochs):
                for frames, labels in loader:
                    loss = F.cross_entropy(model.logits(frames.to(model.device)), labels.to(model.device),
                                           reduction="none")
                    lga = (torch.sign(loss - self.gamma) * loss).mean()
                    optimizer.zero_grad(set_to_none=True)
                    lga.backward()
                    optimizer.step()
                    advance(epoch=epoch + 1, loss=float(loss.detach().mean()))
        model.net.eval()

    def repair(self, ctx: DefenseContext, flagged: np.ndarray) -> Classifier:
        """Gradient ascent on the isolated samples, applied to the suspect model."""
        model = ctx.model
        isolated = Subset(ctx.train_set, np.flatnonzero(flagged).tolist())
        loader = DataLoader(isolated, batch_size=ctx.training.batch_size, shuffle=True,
                            generator=torch.Generator().manual_seed(ctx.seed))
        optimizer = unlearning_optimizer(self.optimizer, model.net.parameters(), self.unlearning_lr)
        model.net.train()
        with progress_bar("abl: unlearning", total=self.unlearning_epochs * len(loader)) as advance:
            for epoch in range(self.unlearning_epochs):
                if self.stop_accuracy > 0 and accuracy(model, isolated) < self.stop_accuracy:  # unlearned
                    break
                model.net.train()
                for frames, labels in loader:
                    loss = F.cross_entropy(model.logits(frames.to(model.device)), labels.to(model.device))
                    optimizer.zero_grad(set_to_none=True)
                    (-loss).backward()
                    optimizer.step()
                    advance(epoch=epoch + 1, loss=float(loss.detach()))
        model.net.eval()
        return model
