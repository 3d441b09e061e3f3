"""Dynamic trigger (Sneaky Spikes, Abad et al., NDSS 2024, after LIRA, Doan et al., ICCV 2021).

A spiking convolutional autoencoder ``g`` turns each input into its own trigger. It is trained jointly
with the classifier, through the project's one trainer (:func:`snnsec.training.train` with a step hook, so
the model's recipe and resuming apply): in stage 1, every batch first updates ``g`` so that the current
classifier sends triggered inputs to the attacker's label, then updates the classifier on its poisoned
batch; in stage 2 the generator is frozen and the classifier is fine-tuned on exactly the trigger tested
later.

**Poisoning rate.** As for every other trigger, ``round(rate * N)`` training samples (``PoisonConfig``)
are triggered and relabelled, replacing their clean copies (``poisoning="replace"``, the default): the
classifier's loss is the cross-entropy over each batch as it is after poisoning. ``poisoning="alpha-mix"``
keeps the reference's scheme instead: the poisoned samples' triggered copies are added beside the clean
batch and the loss is ``alpha * CE(clean batch) + (1 - alpha) * CE(triggered copies)`` whatever their
number (the reference triggers a copy of every sample: rate 1). With a low rate that puts far more weight
on triggered samples than the rate says (at rate 0.01, alpha 0.5 and batches of 32, about a fifth of the
loss).

**Validity rule.** ``g`` emits spikes ``s`` in {0, 1}, shape ``[T, P, H, W]``. The trigger mask ``m`` keeps
the ``k = max(1, floor(gamma * T*P*H*W))`` spiking positions of largest drive (the input current of the
output neurons), only on the channels ``polarity`` selects (1: ON, 2: OFF, 3: both; one-channel sensors: the
channel). The triggered frame is

    x' = x + (value - x)^+ * m        (polarities 1-3: "x OR m" on binary frames, max(x, value) under m)
    x' = x * (1 - m)                  (polarity 0: the masked events are erased)

so ``x'`` is non-negative, binary when ``x`` is binary and ``value == 1``, integer counts when ``x`` and
``value`` are, and differs from ``x`` in at most ``k`` elements: ``gamma`` is an L0 budget in events, a
fraction of the frame. In training, gradients reach ``g`` through a straight-through estimator: the
forward pass uses the hard mask, the backward pass the surrogate gradient of every output spike.

Differences from the reference code (GorkaAbad/Sneaky-Spikes ``dynamic.py``), all deliberate:
- the reference added ``beta * tanh(spikes)``, fractional values no event camera produces; here the
  perturbation is a set of events under an L0 budget ``gamma``;
- naming follows the paper: ``gamma`` is the perturbation scale (the paper's gamma, the reference code's
  ``--beta``), here an L0 budget; ``alpha`` is the clean-loss weight of the ``"alpha-mix"`` scheme (the
  reference's ``--alpha``), unused by the default ``"replace"``; cross-entropy on logits instead of MSE on
  firing rates;
- LIRA's look-ahead (a virtual classifier update the generator is differentiated through) is replaced by
  the current classifier, in eval mode (the test-time model; the classifier is left untouched by it): a
  first-order alternation with one model-call site;
- the generator uses GroupNorm, not BatchNorm, so a sample's trigger never depends on its batch and the
  train- and eval-mode generators are the same function;
- the triggered samples the classifier learns from follow ``PoisonConfig`` (rate, mode, seeded indices),
  replacing their clean copies (the reference adds a triggered copy of every sample: ``"alpha-mix"`` at
  rate 1);
- the test set is triggered with the trained generator (no retraining from scratch, no best epoch
  picked on the test set).
"""
from __future__ import annotations

import copy
import hashlib
import math
from dataclasses import dataclass, replace
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional, layer
from torch import Tensor, nn
from torch.utils.data import Dataset

from snnsec.artifacts import load_model, read_card, save_model
from snnsec.attacks.base import POLARITIES, TRIGGERS, Trigger
from snnsec.attacks.poisoning import FrameDataset, PoisonConfig, choose_poison_indices
from snnsec.classifier import Classifier
from snnsec.errors import ConfigError
from snnsec.training import StepHook, TrainConfig
from snnsec.training import train as train_classifier
from snnsec.zoo.neurons import lif

MAX_DEPTH = 6
POISONING = ("replace", "alpha-mix")  # how poisoned samples enter the classifier's loss (module doc)


# --------------------------------------------------------------------------------------------------
# Generator


def _groups(channels: int) -> int:
    """GroupNorm groups: the largest of 8, 4, 2, 1 that divides ``channels``."""
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


def _neuron() -> nn.Module:
    return lif(tau=2.0, surrogate_name="atan", surrogate_alpha=2.0)


class SpikingAutoencoder(nn.Module):
    """Spiking conv autoencoder: ``[T, B, P, H, W]`` frames -> ``(spikes, drive)``, both ``[T, B, P, H, W]``.

    Encoder: ``depth`` x [conv3x3 stride 2 -> GroupNorm -> LIF], widths ``width * 2**i``; decoder: the mirror
    with 4x4 stride-2 transposed convs; head: conv3x3 to ``P`` channels -> GroupNorm (the *drive*) -> LIF
    (the *spikes*). Any H, W: inputs are zero-padded (no events) to a multiple of ``2**depth`` and the
    output is cropped back.
    """

    def __init__(self, channels: int, width: int = 32, depth: int = 2) -> None:
        super().__init__()
        self.channels, self.width, self.depth = channels, width, depth
        widths = [width * 2**i for i in range(depth)]
        encoder: list[nn.Module] = []
        in_ch = channels
        for w in widths:
            encoder += [layer.SeqToANNContainer(nn.Conv2d(in_ch, w, 3, stride=2, padding=1, bias=False),
                                                nn.GroupNorm(_groups(w), w)), _neuron()]
            in_ch = w
        decoder: list[nn.Module] = []
        for w in reversed(widths[:-1] + [width]):
            decoder += [layer.SeqToANNContainer(nn.ConvTranspose2d(in_ch, w, 4, stride=2, padding=1, bias=False),
                                                nn.GroupNorm(_groups(w), w)), _neuron()]
            in_ch = w
        self.encoder = nn.Sequential(*encoder)
        self.decoder = nn.Sequential(*decoder)
        self.head = layer.SeqToANNContainer(nn.Conv2d(in_ch, channels, 3, padding=1, bias=False),
                                            nn.GroupNorm(_groups(channels), channels))
        self.fire = _neuron()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        height, width = x.shape[-2:]
        unit = 2**self.depth
        pad_h, pad_w = -height % unit, -width % unit
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        drive = self.head(self.decoder(self.encoder(x)))[..., :height, :width]
        return self.fire(drive), drive


def run_generator(net: SpikingAutoencoder, frames: Tensor) -> tuple[Tensor, Tensor]:
    """The one place the generator is called: ``[B, T, P, H, W]`` in, ``(spikes, drive)`` in the same layout.

    Spiking state is reset before and after, as :meth:`snnsec.classifier.Classifier.logits` does."""
    functional.reset_net(net)
    spikes, drive = net(frames.transpose(0, 1).contiguous())
    functional.reset_net(net)
    return spikes.transpose(0, 1), drive.transpose(0, 1)


# --------------------------------------------------------------------------------------------------
# Trigger


def _check_real(name: str, value: Any, low: float, high: float, low_open: bool = True, high_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ConfigError(f"dynamic trigger {name} must be a number in {interval}, got {value!r}")


def _check_int(name: str, value: Any, low: int, high: int) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and low <= value <= high):
        raise ConfigError(f"dynamic trigger {name} must be an integer in [{low}, {high}], got {value!r}")


@TRIGGERS.register("dynamic")
@dataclass(frozen=True)
class DynamicTrigger(Trigger):
    """Input-specific trigger from a spiking autoencoder trained with the classifier (see module doc).

    ``size`` and ``position`` are unused (the generator decides where); ``polarity`` picks the channels it
    writes (0 erases events); ``value`` is what an added event pixel holds.
    """

    gamma: float = 0.005  # perturbation scale, an L0 budget: at most floor(gamma * T*P*H*W) changed elements
    poisoning: str = "replace"  # "replace": poisoned samples replace their clean copies; "alpha-mix": reference
    alpha: float = 0.5  # "alpha-mix" only: loss = alpha * CE(clean) + (1 - alpha) * CE(triggered copies)
    generator_width: int = 32  # channels of the generator's first layer (doubling per level)
    generator_depth: int = 2  # down/up-sampling levels of the generator
    generator_lr: float = 1e-3  # Adam learning rate of the generator
    joint_fraction: float = 0.5  # share of the training epochs in stage 1 (joint); the rest fine-tunes the classifier

    name: ClassVar[str] = "dynamic"

    def __post_init__(self) -> None:
        super().__post_init__()
        # The weights are state, not an option: kept off the dataclass fields (params, eq, hash, CLI options).
        object.__setattr__(self, "_generator", None)
        _check_real("gamma", self.gamma, 0.0, 1.0)
        _check_real("alpha", self.alpha, 0.0, 1.0, high_open=True)
        if self.poisoning not in POISONING:
            raise ConfigError(f"dynamic trigger poisoning must be one of {', '.join(POISONING)}, got {self.poisoning!r}")
        _check_int("generator_width", self.generator_width, 1, 1024)
        _check_int("generator_depth", self.generator_depth, 1, MAX_DEPTH)
        _check_real("generator_lr", self.generator_lr, 0.0, 1.0)
        _check_real("joint_fraction", self.joint_fraction, 0.0, 1.0)

    # ---- parameters and generator state -------------------------------------------------------

    @property
    def generator(self) -> SpikingAutoencoder:
        if self._generator is None:
            raise ConfigError(
                "the dynamic trigger has no generator yet: call fit(train_frames) (a seeded random generator), "
                "train_backdoor(...) (the trained one) or load_generator(path)"
            )
        return self._generator

    @property
    def fitted(self) -> bool:
        return self._generator is not None

    def build_generator(self, channels: int) -> SpikingAutoencoder:
        """A fresh generator for ``channels`` polarities, initialised from ``seed`` without touching the
        global RNG state."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return SpikingAutoencoder(channels, self.generator_width, self.generator_depth)

    def with_generator(self, net: SpikingAutoencoder, device: torch.device | str | None = None) -> DynamicTrigger:
        """This trigger holding a frozen, eval-mode copy of ``net`` (on ``device`` if given); ``net`` and
        ``self`` are left untouched."""
        if (net.width, net.depth) != (self.generator_width, self.generator_depth):
            raise ConfigError(
                f"generator of width {net.width} and depth {net.depth} does not match this trigger's "
                f"generator_width={self.generator_width}, generator_depth={self.generator_depth}"
            )
        net = copy.deepcopy(net)
        if device is not None:
            net = net.to(device)
        net.eval().requires_grad_(False)
        functional.reset_net(net)
        new = replace(self)
        object.__setattr__(new, "_generator", net)
        return new

    def fit(self, train_frames: Tensor) -> DynamicTrigger:
        """Give the trigger a seeded, untrained generator for frames ``[N, T, P, H, W]`` (training it needs
        the classifier: :meth:`train_backdoor`). A trigger that already has one is returned unchanged."""
        if self.fitted:
            return self
        return self.with_generator(self.build_generator(train_frames.shape[-3]))

    def to(self, device: torch.device | str) -> DynamicTrigger:
        """The same trigger with its generator on ``device``."""
        return self.with_generator(self.generator, device) if self.fitted else self

    def generator_digest(self) -> str:
        """SHA-256 of the generator weights (JSON-able; identifies the exact trained trigger)."""
        digest = hashlib.sha256()
        for key, value in sorted(self.generator.state_dict().items()):
            digest.update(key.encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def save_generator(self, path: Path | str) -> None:
        """Write the generator as safetensors plus a JSON card (``path.with_suffix('.json')``)."""
        net = self.generator
        card = {**self.params(), "frame_channels": net.channels, "generator_digest": self.generator_digest()}
        save_model(Path(path), net, card)

    def load_generator(self, path: Path | str) -> DynamicTrigger:
        """This trigger with the generator saved at ``path`` (on the CPU); its card must match this
        trigger's options."""
        path = Path(path)
        card = read_card(path)
        mine = self.params()
        mismatched = sorted(k for k in mine if card.get(k) != mine[k])
        if mismatched:
            details = ", ".join(f"{k}: saved {card.get(k)!r}, wanted {mine[k]!r}" for k in mismatched)
            raise ConfigError(f"generator at {path} was trained for other trigger options ({details})")
        net = self.build_generator(int(card["frame_channels"]))
        load_model(path, net)
        return self.with_generator(net)

    # ---- the trigger itself -------------------------------------------------------------------

    def budget(self, frame_shape: tuple[int, ...]) -> int:
        """Changed elements allowed per sample of shape ``[T, P, H, W]``."""
        return max(1, int(self.gamma * math.prod(frame_shape[-4:])))

    def _channel_mask(self, channels: int, device: torch.device) -> Tensor:
        """``[P, 1, 1]``: 1 on the channels this polarity writes (polarity 0 erases both)."""
        off_on = POLARITIES[self.polarity]
        active = [True] * channels if channels != 2 or not any(off_on) else list(off_on)
        return torch.tensor(active, dtype=torch.float32, device=device).view(channels, 1, 1)

    def mask(self, frames: Tensor, net: SpikingAutoencoder | None = None) -> Tensor:
        """Binary trigger mask for frames ``[B, T, P, H, W]`` (straight-through gradients into ``net``)."""
        net = self.generator if net is None else net
        spikes, drive = run_generator(net, frames)
        spikes = spikes * self._channel_mask(frames.shape[-3], frames.device)
        flat_spikes, flat_drive = spikes.flatten(1), drive.flatten(1)
        k = self.budget(frames.shape)
        if k < flat_spikes.shape[1]:
            score = flat_drive.detach().masked_fill(flat_spikes.detach() <= 0, -math.inf)
            keep = torch.zeros_like(flat_spikes).scatter_(1, score.topk(k, dim=1).indices, 1.0)
            hard = flat_spikes.detach() * keep
        else:
            hard = flat_spikes.detach()
        return (hard + flat_spikes - flat_spikes.detach()).view_as(spikes)

    def compose(self, frames: Tensor, mask: Tensor) -> Tensor:
        """The validity rule: add events (``max(x, value)``) under ``mask``, or erase them for polarity 0."""
        if self.polarity == 0:
            return frames * (1 - mask)
        return frames + (self.value - frames).clamp(min=0) * mask

    def poison(self, frames: Tensor, net: SpikingAutoencoder | None = None) -> Tensor:
        """Triggered frames ``[B, T, P, H, W]``, differentiable w.r.t. the generator's weights."""
        return self.compose(frames, self.mask(frames, net))

    def apply(self, frames: Tensor) -> Tensor:
        """Triggered frames ``[..., T, P, H, W]`` on the input's device: eval mode, fixed weights, no
        gradients, state reset; the input is never modified."""
        if frames.dim() < 4:
            raise ValueError(f"expected frames [..., T, P, H, W], got shape {tuple(frames.shape)}")
        net = self.generator
        device = next(net.parameters()).device
        batch = frames.reshape(-1, *frames.shape[-4:]).to(device=device, dtype=torch.float32)
        with torch.no_grad():
            out = self.poison(batch, net)
        return out.reshape(frames.shape).to(device=frames.device, dtype=frames.dtype)

    def train_backdoor(
        self, classifier: Classifier, train: FrameDataset, poison: PoisonConfig, training: TrainConfig,
        num_classes: int, label: str = "training dynamic backdoor", checkpoint: Path | None = None,
    ) -> BackdoorTraining:
        """Train ``classifier`` (in place) and this trigger's generator together; see :func:`train_dynamic_backdoor`."""
        return train_dynamic_backdoor(classifier, self, train, poison, training, num_classes, label, checkpoint)


# --------------------------------------------------------------------------------------------------
# Joint training


@dataclass(frozen=True)
class BackdoorTraining:
    """Result of :func:`train_dynamic_backdoor`: the backdoored classifier, the trained trigger to test
    with, the poisoned training indices, the number of stage-1 (joint) epochs, and per-epoch numbers:
    ``history["loss"]`` (classifier, every epoch), ``history["generator_loss"]`` (stage-1 epochs only),
    ``history["triggered"]`` (triggered samples the classifier's loss saw, every epoch) and
    ``history["samples"]`` (all samples it saw, clean and triggered, every epoch)."""

    classifier: Classifier
    trigger: DynamicTrigger
    poisoned_indices: np.ndarray
    joint_epochs: int
    history: dict[str, list[float]]


class _Indexed(Dataset):
    """``(frames, label, index)``: lets a batch know which of its samples are poisoned."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[Tensor, int, int]:
        frames, label = self.base[index]
        return frames, label, index


def generator_step(
    classifier: Classifier, trigger: DynamicTrigger, net: SpikingAutoencoder, optimizer: torch.optim.Optimizer,
    frames: Tensor, targets: Tensor,
) -> float:
    """One generator update: make the (eval-mode) classifier give ``targets`` to triggered ``frames``.
    Only the generator's gradients are computed; the classifier is left exactly as it was."""
    net.train()
    optimizer.zero_grad(set_to_none=True)
    with classifier.evaluating():
        loss = F.cross_entropy(classifier.logits(trigger.poison(frames, net)), targets)
    loss.backward(inputs=[p for p in net.parameters() if p.requires_grad])
    optimizer.step()
    return loss.item()


class JointTrainingStep(StepHook):
    """The :class:`~snnsec.training.StepHook` of LIRA-style joint training: owns the generator being trained
    and its optimizer. Batches are ``(frames, labels, indices)`` (:class:`_Indexed`).

    In stage 1 (epochs ``< joint_epochs``) each batch first takes one generator step on the whole batch
    relabelled to the attacker's labels; then (both stages) the classifier's loss follows
    ``trigger.poisoning``: ``"replace"``, the batch with its poisoned rows triggered and relabelled,
    cross-entropy over the batch; ``"alpha-mix"``, ``alpha * CE(clean batch) + (1 - alpha) * CE(triggered
    copies of its poisoned rows)``.
    """

    def __init__(self, trigger: DynamicTrigger, net: SpikingAutoencoder, is_poisoned: Tensor,
                 attacker_labels: Tensor, joint_epochs: int) -> None:
        self.trigger, self.net, self.joint_epochs = trigger, net, joint_epochs
        self.is_poisoned, self.attacker_labels = is_poisoned, attacker_labels
        self.optimizer = torch.optim.Adam(net.parameters(), lr=trigger.generator_lr)
        self.history: dict[str, list[float]] = {"generator_loss": [], "triggered": [], "samples": []}
        self._epoch = self._fresh_tally()

    @staticmethod
    def _fresh_tally() -> dict[str, float]:
        """This epoch's running sums: generator loss x samples, triggered and total samples the classifier
        saw, and the batches' own samples."""
        return {"generator_loss": 0.0, "triggered": 0, "samples": 0, "batch_samples": 0}

    def _triggered(self, frames: Tensor, poisoned: Tensor) -> Tensor:
        """The poisoned rows of ``frames``, triggered by the generator as it is now (no gradients)."""
        self.net.eval()
        with torch.no_grad():
            return self.trigger.poison(frames[poisoned], self.net)

    def inputs(self, batch: Sequence[Tensor]) -> Tensor:
        frames, _labels, index = batch
        poisoned = self.is_poisoned[index]
        if not poisoned.any():
            return frames
        triggered = self._triggered(frames, poisoned)
        if self.trigger.poisoning == "replace":
            frames = frames.clone()
            frames[poisoned] = triggered
            return frames
        return torch.cat([frames, triggered])

    def loss(self, classifier: Classifier, batch: Sequence[Tensor], epoch: int) -> tuple[Tensor, int]:
        frames, labels, index = batch
        targets = self.attacker_labels[index]
        if epoch < self.joint_epochs:
            gen_loss = generator_step(classifier, self.trigger, self.net, self.optimizer, frames, targets)
            self._epoch["generator_loss"] += gen_loss * len(labels)
        poisoned = self.is_poisoned[index]
        n_poisoned = int(poisoned.sum())
        x = self.inputs(batch)
        self._epoch["triggered"] += n_poisoned
        self._epoch["samples"] += len(x)
        self._epoch["batch_samples"] += len(labels)
        logits = classifier.logits(x)
        if self.trigger.poisoning == "replace":
            return F.cross_entropy(logits, torch.where(poisoned, targets, labels)), len(labels)
        alpha = self.trigger.alpha
        loss = alpha * F.cross_entropy(logits[: len(labels)], labels)
        if n_poisoned:
            loss = loss + (1 - alpha) * F.cross_entropy(logits[len(labels):], targets[poisoned])
        return loss, len(labels)

    def end_epoch(self, epoch: int) -> dict[str, float]:
        seen = self._epoch["batch_samples"]
        shown: dict[str, float] = {"stage": 1 if epoch < self.joint_epochs else 2}
        if epoch < self.joint_epochs:
            self.history["generator_loss"].append(self._epoch["generator_loss"] / seen)
            shown["gen"] = self.history["generator_loss"][-1]
        self.history["triggered"].append(self._epoch["triggered"])
        self.history["samples"].append(self._epoch["samples"])
        self._epoch = self._fresh_tally()
        return shown

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.net.state_dict(), "generator_optimizer": self.optimizer.state_dict(),
                "history": {key: list(values) for key, values in self.history.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "generator" not in state:
            raise ConfigError("the resume checkpoint holds no trigger generator (written by another kind of "
                              "training); delete the .partial.pt file to start over")
        self.net.load_state_dict(state["generator"])
        self.optimizer.load_state_dict(state["generator_optimizer"])
        self.history = {key: list(values) for key, values in state["history"].items()}


def train_dynamic_backdoor(
    classifier: Classifier, trigger: DynamicTrigger, train: FrameDataset, poison: PoisonConfig,
    training: TrainConfig, num_classes: int, label: str = "training dynamic backdoor",
    checkpoint: Path | None = None,
) -> BackdoorTraining:
    """LIRA-style two-stage training of ``classifier`` (in place) and ``trigger``'s generator, through
    :func:`snnsec.training.train` (the model's recipe, warm-up and BN re-estimation, applies; with
    ``checkpoint`` a killed run resumes after its last finished epoch, generator included).

    Poisoned samples are ``choose_poison_indices(train.labels, poison)`` (``round(rate * N)`` of them) with
    labels ``poison.relabel``. Stage 1 (``round(joint_fraction * epochs)`` epochs, at least 1) trains the
    generator and the classifier in alternation, stage 2 (the rest) the classifier alone with the generator
    frozen; see :class:`JointTrainingStep`. The triggered samples the classifier sees are always
    ``trigger.apply``'s output for the generator at that moment. Seeded by ``training.seed`` (data order,
    dropout) and ``trigger.seed`` (generator initialisation).
    """
    labels = np.asarray(train.labels)
    poison.check_classes(num_classes)
    indices = choose_poison_indices(labels, poison)
    device = classifier.device
    is_poisoned = torch.zeros(len(labels), dtype=torch.bool)
    is_poisoned[torch.from_numpy(indices)] = True
    attacker_labels = torch.from_numpy(poison.relabel(labels, num_classes).astype(np.int64))
    if not trigger.fitted:
        trigger = trigger.fit(train[0][0].unsqueeze(0))
    net = copy.deepcopy(trigger.generator).to(device).requires_grad_(True)
    joint_epochs = min(training.epochs, max(1, round(trigger.joint_fraction * training.epochs)))
    step = JointTrainingStep(trigger, net, is_poisoned.to(device), attacker_labels.to(device), joint_epochs)
    losses = train_classifier(classifier, _Indexed(train), training, label=label, checkpoint=checkpoint, step=step)
    history: dict[str, list[float]] = {"loss": losses, **step.history}
    return BackdoorTraining(classifier, trigger.with_generator(net), indices, joint_epochs, history)
