"""Surrogate-gradient BPTT training of a Classifier: AdamW/Adam, cosine schedule, seeded, with progress."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from snnsec.classifier import Classifier
from snnsec.errors import ConfigError
from snnsec.progress import progress_bar

OPTIMIZERS = ("adamw", "adam")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 8
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-2
    optimizer: str = "adamw"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ConfigError(f"learning rate must be > 0, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")


def seed_everything(seed: int) -> None:
    """Same seed, same numbers: python-level RNGs used by torch and numpy."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def train(classifier: Classifier, dataset: Dataset, config: TrainConfig, label: str = "train") -> list[float]:
    """Train in place; returns the mean training loss of each epoch."""
    seed_everything(config.seed)
    device = classifier.device
    loader = DataLoader(
        dataset, batch_size=config.batch_size, shuffle=True, drop_last=False,
        generator=torch.Generator().manual_seed(config.seed),
    )
    params = [p for p in classifier.net.parameters() if p.requires_grad]
    optim_cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    optimizer = optim_cls(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * len(loader))
    loss_fn = nn.CrossEntropyLoss()
    history: list[float] = []
    classifier.net.train()
    with progress_bar(label, total=config.epochs * len(loader)) as advance:
        for epoch in range(config.epochs):
            total, count = 0.0, 0
            for frames, labels in loader:
                frames, labels = frames.to(device, non_blocking=True), labels.to(device, non_blocking=True)
                loss = loss_fn(classifier.logits(frames), labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                total += loss.item() * len(labels)
                count += len(labels)
                advance(epoch=epoch + 1, loss=total / count)
            history.append(total / count)
    classifier.net.eval()
    return history


def predict(classifier: Classifier, dataset: Dataset, batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Predicted and dataset labels for every sample, in order."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    predicted, truth = [], []
    for frames, labels in loader:
        predicted.append(classifier.predict(frames.to(classifier.device)).cpu().numpy())
        truth.append(np.asarray(labels))
    return np.concatenate(predicted), np.concatenate(truth)


def accuracy(classifier: Classifier, dataset: Dataset, batch_size: int = 128) -> float:
    """Fraction of samples whose predicted class equals the dataset's label (ASR on a triggered set)."""
    predicted, truth = predict(classifier, dataset, batch_size)
    return float((predicted == truth).mean())
