"""Surrogate-gradient BPTT training of a Classifier: AdamW/Adam/SGD, cosine or constant lr, seeded, with progress.

One loop trains every model: clean and poisoned training use it as it is; training that computes a batch's
loss differently (a dynamic trigger's joint training, adversarial training, unlearning) passes a
:class:`StepHook`, which turns a batch into a loss and may own extra parameters and optimizers (saved in the
resume checkpoint with the classifier's). The recipe (warm-up, BN re-estimation) and resuming work the same
for all of them.

Two options, off by default, serve models whose registry entry declares a training recipe
(:class:`snnsec.zoo.base.TrainRecipe`, applied with :meth:`TrainConfig.with_recipe`):

- ``warmup_steps``: the learning rate rises linearly over the first steps, then follows the cosine decay over
  the remaining ones;
- ``bn_recalibration_batches``: after the last step, the BatchNorm running statistics are re-estimated with the
  final weights, as a plain average over that many training batches ("precise BN", Wu & Johnson, "Rethinking
  'Batch' in BatchNorm", 2021). The exponential running average lags when a short run starts far from the
  running statistics' initial values (mean 0, variance 1): the Spike-driven Transformer's N(0, 0.02) conv init
  gives pre-BN variances near 2e-3, after 52 steps at momentum 0.1 the running variance is still 3.4x too
  large (0.9^52 = 4e-3 of the initial 1 remains), and in eval mode the neurons behind it go nearly silent.

A model may also define the optional methods of :class:`snnsec.zoo.base.TrainingHooks`: its own optimizer
groups (one optimizer and schedule each, e.g. delay positions at 100x the weights' lr), a call after every
optimizer step and one after every epoch. Models that define none of them train exactly as before.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from math import cos, pi
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from snnsec import distributed
from snnsec.artifacts import load_training_state, save_training_state
from snnsec.classifier import Classifier
from snnsec.errors import ConfigError
from snnsec.progress import progress_bar

if TYPE_CHECKING:
    from snnsec.zoo.base import OptimizerGroup, TrainRecipe

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("cosine", "constant")

#: Fields added after model identities were first hashed, with their defaults: :meth:`TrainConfig.identity`
#: leaves a field out while it holds its default, so that configs that don't use it keep their identity.
LATER_FIELDS = {"momentum": 0.0, "nesterov": False, "schedule": "cosine"}


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 8
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-2
    optimizer: str = "adamw"
    seed: int = 0
    warmup_steps: int = 0  # linear warm-up from lr / (warmup_steps + 1); 0: cosine decay from the first step
    bn_recalibration_batches: int = 0  # re-estimate BN statistics over this many batches after training; 0: off
    momentum: float = 0.0  # SGD's momentum (optimizer "sgd" only)
    nesterov: bool = False  # Nesterov momentum (optimizer "sgd" with momentum > 0 only)
    schedule: str = "cosine"  # "cosine": decay to 0 over the run (after any warm-up); "constant": lr throughout

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ConfigError(f"learning rate must be > 0, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.warmup_steps < 0:
            raise ConfigError(f"warm-up steps must be >= 0, got {self.warmup_steps}")
        if self.bn_recalibration_batches < 0:
            raise ConfigError(f"BN recalibration batches must be >= 0, got {self.bn_recalibration_batches}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.momentum and self.optimizer != "sgd":
            raise ConfigError(f"momentum is an option of the sgd optimizer, not of {self.optimizer!r}")
        if self.nesterov and not (self.optimizer == "sgd" and self.momentum > 0):
            raise ConfigError("nesterov needs the sgd optimizer with momentum > 0")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")

    def identity(self) -> dict[str, Any]:
        """The fields that identify this recipe (for cache identities and run ids): all of them, except the
        :data:`LATER_FIELDS` that hold their defaults, so that a config not using them hashes as before."""
        fields = asdict(self)
        return {k: v for k, v in fields.items() if k not in LATER_FIELDS or v != LATER_FIELDS[k]}

    def with_recipe(self, recipe: TrainRecipe | None) -> TrainConfig:
        """This config with a model's recipe (lr, weight decay, warm-up, BN recalibration) in place of those
        fields; the budget (epochs, batch size), optimizer and seed stay. ``None``: unchanged."""
        return self if recipe is None else replace(self, **asdict(recipe))


def seed_everything(seed: int) -> None:
    """Same seed, same numbers: python-level RNGs used by torch and numpy."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


class StepHook:
    """How :func:`train` turns one batch into the loss the classifier's optimizer minimises.

    The base class is plain supervised training: cross-entropy of the classifier's logits on the batch's
    frames and labels. A subclass overrides :meth:`loss` (and :meth:`inputs`, the frames BN re-estimation
    sees) and may own more state (a trigger generator and its optimizer, an adversary's settings): it
    returns that state from :meth:`state_dict` (tensors, numbers, lists and dicts) so that a resumed run
    restores it, and reports per-epoch numbers of its own from :meth:`end_epoch`.
    A batch is whatever the dataset's loader yields (``(frames, labels)``, or more fields for a hook that
    needs them, e.g. sample indices), moved to the classifier's device.
    """

    #: Whether :func:`train` may split each batch over several processes (torchrun, :mod:`snnsec.distributed`)
    #: with this hook: its loss is a mean over the batch's samples, drawn without randomness, and it trains no
    #: state of its own (a generator trained on one process's share would drift from the others'). The base
    #: hook may; a subclass says so itself, else it trains in one process only.
    data_parallel: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.data_parallel = cls.__dict__.get("data_parallel", False)

    def loss(self, classifier: Classifier, batch: Sequence[Tensor], epoch: int) -> tuple[Tensor, int]:
        """``(loss, samples)``: the batch's loss for the classifier (with its graph), and how many samples
        it averages over (the epoch's reported loss is the sample-weighted mean). ``epoch`` counts from 0."""
        frames, labels = batch[0], batch[1]
        return F.cross_entropy(classifier.logits(frames), labels), len(labels)

    def inputs(self, batch: Sequence[Tensor]) -> Tensor:
        """The frames the classifier trains on for this batch (BN re-estimation runs them)."""
        return batch[0]

    def end_epoch(self, epoch: int) -> dict[str, float]:
        """Called after each epoch; extra numbers to show beside the loss (default: none)."""
        return {}

    def stop(self, epoch: int) -> bool:
        """Asked after each epoch but the last (after :meth:`end_epoch`): ``True`` ends training there, an
        early stop (default: never). A resumed run asks again after the epoch it redoes."""
        return False

    def state_dict(self) -> dict[str, Any]:
        """The hook's own resumable state (default: none)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


def train(classifier: Classifier, dataset: Dataset, config: TrainConfig, label: str = "train",
          checkpoint: Path | None = None, step: StepHook | None = None) -> list[float]:
    """Train in place; returns the mean training loss of each epoch.

    ``step`` computes each batch's loss (default: :class:`StepHook`, cross-entropy on the dataset's labels).
    With ``checkpoint``, the full training state (weights, optimizer, schedule, RNG states, the hook's
    state) is saved there after every epoch and a run that finds one resumes after its last epoch, with the
    same numbers an uninterrupted run gives; the file is removed when training ends. A hook's
    :meth:`StepHook.stop` may end training before ``config.epochs``.

    Launched by torchrun over several processes (:mod:`snnsec.distributed`), ``config.batch_size`` is the
    global batch: every process draws the same global batches as one process would and trains on its share,
    BatchNorm uses the global batch's statistics, gradients are summed and the losses are the global
    batch's; the weights follow one process's up to the order of float sums (dropout masks aside: each process
    draws its own). Only the main process writes the checkpoint; every process reads it.
    """
    step = StepHook() if step is None else step
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise ConfigError(f"{label}: the training set is empty")
    world = distributed.world()
    if world > 1:
        _check_data_parallel(config, step, label, world)
        distributed.setup()
        distributed.check_device(classifier.device)
    seed_everything(config.seed)
    device = classifier.device
    shuffle = torch.Generator().manual_seed(config.seed)
    if world == 1:
        loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=True, drop_last=False, generator=shuffle)
    else:  # the same global batches as above (same sampler, same generator), this process's share of each
        shares = distributed.ShareLoader(dataset, config.batch_size, shuffle)
        loader = shares  # type: ignore[assignment]
    optimization = Optimization(classifier.net, config, len(loader))
    params = [p for p in classifier.net.parameters() if p.requires_grad]
    history: list[float] = []
    distributed.broadcast_state(classifier.net)
    saved = None
    if checkpoint is not None:
        with distributed.main_first():  # a damaged checkpoint is moved aside once, before the others look
            saved = load_training_state(checkpoint)
    if saved is not None:
        classifier.net.load_state_dict(saved["model"])
        optimization.load_state_dict(saved)
        shuffle.set_state(saved["shuffle_rng"])
        torch.set_rng_state(saved["torch_rng"])
        history = list(saved["history"])
        step.load_state_dict(saved.get("step", {}))
    classifier.net.train()
    with progress_bar(label, total=config.epochs * len(loader)) as advance, \
            distributed.global_batchnorm(classifier.net):
        if history:
            advance(len(history) * len(loader), epoch=len(history), loss=history[-1])
        for epoch in range(len(history), config.epochs):
            if world > 1:  # dropout: each process its own masks, the same on a resumed run
                torch.manual_seed(int(np.random.SeedSequence([config.seed, epoch, distributed.rank()])
                                      .generate_state(1)[0]))
            total, count = 0.0, 0
            for index, batch in enumerate(loader):
                batch = [part.to(device, non_blocking=True) for part in batch]
                loss, samples = step.loss(classifier, batch, epoch)
                optimization.zero_grad()
                if world == 1:
                    loss.backward()
                    total += loss.item() * samples
                    count += samples
                else:  # this process's share of the global batch's mean loss; the shares' gradients summed
                    (loss * (len(batch[0]) / shares.sizes[index])).backward()
                    distributed.sum_gradients(params)
                    tally = distributed.sum_numbers([loss.item() * samples if samples else 0.0, samples])
                    total += tally[0]
                    count += int(tally[1])
                optimization.step()
                advance(epoch=epoch + 1, loss=total / count)
            history.append(total / count)
            optimization.end_epoch(epoch)
            extra = step.end_epoch(epoch)
            if extra:
                advance(0, epoch=epoch + 1, loss=total / count, **extra)
            if epoch + 1 < config.epochs and step.stop(epoch):
                break  # before saving: a run killed here redoes this epoch and stops again
            if checkpoint is not None and epoch + 1 < config.epochs and distributed.is_main():
                save_training_state(checkpoint, {
                    "model": classifier.net.state_dict(), **optimization.state_dict(),
                    "shuffle_rng": shuffle.get_state(), "torch_rng": torch.get_rng_state(), "history": history,
                    "step": step.state_dict()})
        if config.bn_recalibration_batches:  # over processes: with the global batches' statistics
            recalibrate_batchnorm(classifier, loader, config.bn_recalibration_batches, step.inputs)
    classifier.net.eval()
    if checkpoint is not None and distributed.is_main():
        checkpoint.unlink(missing_ok=True)
    return history


def _check_data_parallel(config: TrainConfig, step: StepHook, label: str, world: int) -> None:
    """One line, before any training, when a run cannot be split over ``world`` processes."""
    if config.batch_size % world:
        raise ConfigError(f"{label}: batch size {config.batch_size} must be a multiple of the {world} processes "
                          f"(it is the global batch, split evenly)")
    if not step.data_parallel:
        raise ConfigError(f"{label}: training with {type(step).__name__} cannot be split over processes "
                          f"(it trains state of its own or its loss is not a per-sample mean); run it in one process")


class Optimization:
    """The optimizers and lr schedules of one run, and the model's training hooks.

    By default: the config's one optimizer over all trainable parameters and its schedule, stepped per batch
    (checkpoint keys ``optimizer`` and ``scheduler``, as ever). A model defining ``optimizer_groups``
    (:class:`snnsec.zoo.base.TrainingHooks`) gets one optimizer and schedule per group instead (keys
    ``optimizers`` and ``schedulers``, by group name). ``after_step`` / ``end_epoch`` of the model are called
    where it defines them.
    """

    def __init__(self, net: nn.Module, config: TrainConfig, steps_per_epoch: int) -> None:
        params = [p for p in net.parameters() if p.requires_grad]
        groups_of = getattr(net, "optimizer_groups", None)
        self._after_step = getattr(net, "after_step", None)
        self._end_epoch = getattr(net, "end_epoch", None)
        self.epochs = config.epochs
        self.grouped = groups_of is not None
        self.per_epoch: set[str] = set()
        if not self.grouped:
            optimizer = make_optimizer(config, params)
            self.optimizers = {"": optimizer}
            self.schedulers = {"": _schedule(optimizer, config.epochs * steps_per_epoch, config.warmup_steps,
                                             config.schedule)}
            return
        groups: list[OptimizerGroup] = list(groups_of(config))
        _check_groups(groups, params)
        self.optimizers, self.schedulers = {}, {}
        for group in groups:
            optimizer = make_optimizer(
                replace(config, optimizer=group.optimizer, lr=group.lr, weight_decay=group.weight_decay),
                list(group.params))
            steps = config.epochs if group.per_epoch else config.epochs * steps_per_epoch
            if group.schedule == "one-cycle":
                scheduler: torch.optim.lr_scheduler.LRScheduler = torch.optim.lr_scheduler.OneCycleLR(
                    optimizer, max_lr=group.max_lr, total_steps=steps)
            else:
                scheduler = _schedule(optimizer, steps, 0, group.schedule)
            self.optimizers[group.name], self.schedulers[group.name] = optimizer, scheduler
            if group.per_epoch:
                self.per_epoch.add(group.name)

    def zero_grad(self) -> None:
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        """Every optimizer steps, then the per-batch schedules, then the model's ``after_step``."""
        for optimizer in self.optimizers.values():
            optimizer.step()
        for name, scheduler in self.schedulers.items():
            if name not in self.per_epoch:
                scheduler.step()
        if self._after_step is not None:
            self._after_step()

    def end_epoch(self, epoch: int) -> None:
        """The per-epoch schedules step, then the model's ``end_epoch(epoch, epochs)``."""
        for name in self.per_epoch:
            self.schedulers[name].step()
        if self._end_epoch is not None:
            self._end_epoch(epoch, self.epochs)

    def state_dict(self) -> dict[str, Any]:
        if not self.grouped:
            return {"optimizer": self.optimizers[""].state_dict(), "scheduler": self.schedulers[""].state_dict()}
        return {"optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()}}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Restore from a checkpoint holding :meth:`state_dict`'s keys."""
        if not self.grouped:
            self.optimizers[""].load_state_dict(saved["optimizer"])
            self.schedulers[""].load_state_dict(saved["scheduler"])
            return
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(saved["optimizers"][name])
            self.schedulers[name].load_state_dict(saved["schedulers"][name])


def _check_groups(groups: Sequence[OptimizerGroup], params: Sequence[Tensor]) -> None:
    """Each trainable parameter in exactly one group, group names unique: else one-line ConfigError."""
    names = [g.name for g in groups]
    if len(set(names)) != len(names) or "" in names:
        raise ConfigError(f"optimizer group names must be unique and non-empty, got {names}")
    seen = [id(p) for g in groups for p in g.params]
    if len(seen) != len(set(seen)) or set(seen) != {id(p) for p in params}:
        raise ConfigError(f"optimizer groups {names} must hold every trainable parameter exactly once "
                          f"({len(seen)} listed, {len(set(seen))} distinct, {len(params)} trainable)")


def make_optimizer(config: TrainConfig, params: Sequence[Tensor]) -> torch.optim.Optimizer:
    """The optimizer ``config`` names, at its lr and weight decay (SGD with its momentum and Nesterov flag)."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                               nesterov=config.nesterov)
    optim_cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return optim_cls(params, lr=config.lr, weight_decay=config.weight_decay)


def _schedule(optimizer: torch.optim.Optimizer, steps: int, warmup: int,
              schedule: str = "cosine") -> torch.optim.lr_scheduler.LRScheduler:
    """Cosine decay to 0 over ``steps`` (``schedule="constant"``: the lr throughout); with ``warmup``, a
    linear rise first and the decay (or constant lr) over the rest."""
    if not warmup and schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    decay = max(1, steps - warmup)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if schedule == "constant":
            return 1.0
        return 0.5 * (1 + cos(pi * min(step - warmup, decay) / decay))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def recalibrate_batchnorm(classifier: Classifier, loader: Iterable[Sequence[Tensor]], batches: int,
                          inputs: Callable[[Sequence[Tensor]], Tensor] | None = None) -> None:
    """Replace every BatchNorm's running mean and variance by their average over ``batches`` batches of
    ``loader`` (or all of it), computed with the current weights and no gradients ("precise BN").
    ``inputs`` picks a batch's frames (default: its first field)."""
    norms = [m for m in classifier.net.modules()
             if isinstance(m, (*BATCH_NORMS, distributed.GlobalBatchNorm)) and m.track_running_stats]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches seen since the reset
    classifier.net.train()
    try:
        with torch.no_grad():
            for index, batch in enumerate(loader):
                if index == batches:
                    break
                batch = [part.to(classifier.device, non_blocking=True) for part in batch]
                classifier.logits(batch[0] if inputs is None else inputs(batch))
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum


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
