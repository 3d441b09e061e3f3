"""Anti-Backdoor Learning (Li et al., NeurIPS 2021): isolate, then unlearn.

Isolation: a fresh model trains on the received data with local gradient ascent (LGA), loss
``sign(l - gamma) * l`` per sample, which keeps clean losses near ``gamma`` while backdoor samples,
learned much faster, fall below it. A sample's score is its negated loss under that model. Unlearning:
the suspect model ascends the loss of the ``removal_rate`` lowest-loss samples (their received labels),
as ABL's last stage does, instead of retraining from scratch, until at most ``stop_accuracy`` of them
keep their received label (a stopping rule that needs nothing but the isolated samples).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from snnsec.classifier import Classifier
from snnsec.defenses.base import DEFENSES, DefenseContext, TrainingDataFilter, batches, require
from snnsec.progress import progress_bar
from snnsec.training import accuracy, seed_everything


@DEFENSES.register("abl")
@dataclass(frozen=True)
class AntiBackdoorLearning(TrainingDataFilter):
    removal_rate: float = 0.01  # isolation rate (the paper's 1%)
    isolation_epochs: int = 3
    gamma: float = 0.5  # LGA loss floor
    unlearning_epochs: int = 20
    unlearning_lr: float = 5e-4
    stop_accuracy: float = 0.2  # unlearning stops once the isolated samples' received labels are this rare

    name: ClassVar[str] = "abl"
    summary: ClassVar[str] = "isolate fast-learned samples with local gradient ascent, then unlearn them"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.isolation_epochs >= 1, f"isolation_epochs must be >= 1, got {self.isolation_epochs}")
        require(self.gamma > 0, f"gamma must be > 0, got {self.gamma}")
        require(self.unlearning_epochs >= 1, f"unlearning_epochs must be >= 1, got {self.unlearning_epochs}")
        require(self.unlearning_lr > 0, f"unlearning_lr must be > 0, got {self.unlearning_lr}")
        require(0 <= self.stop_accuracy < 1, f"stop_accuracy must be in [0, 1), got {self.stop_accuracy}")

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
        optimizer = torch.optim.AdamW(model.net.parameters(), lr=self.unlearning_lr, weight_decay=0.0)
        model.net.train()
        with progress_bar("abl: unlearning", total=self.unlearning_epochs * len(loader)) as advance:
            for epoch in range(self.unlearning_epochs):
                if accuracy(model, isolated) <= self.stop_accuracy:  # the isolated samples are unlearned
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
