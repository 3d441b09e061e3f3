"""Dynamic trigger (Sneaky Spikes, Abad et al., NDSS 2024, after LIRA, Doan et al., ICCV 2021).

A spiking convolutional autoencoder ``g`` turns each input into its own trigger. It is trained jointly
with the classifier: in stage 1, every batch first updates ``g`` so that the current classifier sends
triggered inputs to the attacker's label, then updates the classifier on clean and triggered inputs; in
stage 2 the generator is frozen and the classifier is fine-tuned on exactly the trigger tested later.

**Validity rule.** ``g`` emits spikes ``s`` in {0, 1}, shape ``[T, P, H, W]``. The trigger mask ``m`` keeps
the ``k = max(1, floor(alpha * T*P*H*W))`` spiking positions of largest drive (the input current of the
output neurons), only on the channels ``polarity`` selects (1: ON, 2: OFF, 3: both; one-channel sensors: the
channel). The triggered frame is

    x' = x + (value - x)^+ * m        (polarities 1-3: "x OR m" on binary frames, max(x, value) under m)
    x' = x * (1 - m)                  (polarity 0: the masked events are erased)

so ``x'`` is non-negative, binary when ``x`` is binary and ``value == 1``, integer counts when ``x`` and
``value`` are, and differs from ``x`` in at most ``k`` elements: ``alpha`` is an L0 budget in events, a
fraction of the frame. In training, gradients reach ``g`` through a straight-through estimator: the
forward pass uses the hard mask, the backward pass the surrogate gradient of every output spike.

Differences from the reference code (GorkaAbad/Sneaky-Spikes ``dynamic.py``), all deliberate:
- the reference added ``beta * tanh(spikes)``, fractional values no event camera produces; here the
  perturbation is a set of events under an L0 budget (``alpha``);
- naming: ``alpha`` is the perturbation budget (the role of the reference's ``--beta``) and
  ``gamma`` the weight of the triggered-sample loss, ``(1 - gamma) * CE(clean) + gamma * CE(triggered)``
  (the reference's ``--alpha`` is ``1 - gamma``); cross-entropy on logits instead of MSE on firing rates;
- LIRA's look-ahead (a virtual classifier update the generator is differentiated through) is replaced by
  the current classifier, in eval mode (the test-time model; the classifier is left untouched by it): a
  first-order alternation with one model-call site;
- the generator uses GroupNorm, not BatchNorm, so a sample's trigger never depends on its batch and the
  train- and eval-mode generators are the same function;
- the triggered samples the classifier learns from follow ``PoisonConfig`` (rate, mode, seeded indices);
- the test set is triggered with the trained generator (no retraining from scratch, no best epoch
  picked on the test set).
"""
from __future__ import annotations

import copy
import hashlib
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional, layer
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from snnsec.artifacts import load_model, read_card, save_model
from snnsec.attacks.base import POLARITIES, TRIGGERS, Trigger
from snnsec.attacks.poisoning import FrameDataset, PoisonConfig, choose_poison_indices
from snnsec.classifier import Classifier
from snnsec.errors import ConfigError
from snnsec.progress import progress_bar
from snnsec.training import TrainConfig, recalibrate_batchnorm, seed_everything
from snnsec.zoo.neurons import lif

MAX_DEPTH = 6


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

    alpha: float = 0.005  # L0 budget: at most floor(alpha * T*P*H*W) changed frame elements per sample
    gamma: float = 0.5  # weight of the triggered-sample loss: (1 - gamma) * clean + gamma * triggered
    generator_width: int = 32  # channels of the generator's first layer (doubling per level)
    generator_depth: int = 2  # down/up-sampling levels of the generator
    generator_lr: float = 1e-3  # Adam learning rate of the generator
    joint_fraction: float = 0.5  # share of the training epochs in stage 1 (joint); the rest fine-tunes the classifier

    name: ClassVar[str] = "dynamic"

    def __post_init__(self) -> None:
        super().__post_init__()
        # The weights are state, not an option: kept off the dataclass fields (params, eq, hash, CLI options).
        object.__setattr__(self, "_generator", None)
        _check_real("alpha", self.alpha, 0.0, 1.0)
        _check_real("gamma", self.gamma, 0.0, 1.0, high_open=True)
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
        return max(1, int(self.alpha * math.prod(frame_shape[-4:])))

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
        num_classes: int, label: str = "training dynamic backdoor",
    ) -> BackdoorTraining:
        """Train ``classifier`` (in place) and this trigger's generator together; see :func:`train_dynamic_backdoor`."""
        return train_dynamic_backdoor(classifier, self, train, poison, training, num_classes, label)


# --------------------------------------------------------------------------------------------------
# Joint training


@dataclass(frozen=True)
class BackdoorTraining:
    """Result of :func:`train_dynamic_backdoor`: the backdoored classifier, the trained trigger to test
    with, the poisoned training indices, the number of stage-1 (joint) epochs, and per-epoch means:
    ``history["loss"]`` (classifier, every epoch), ``history["generator_loss"]`` (stage-1 epochs only)."""

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


def train_dynamic_backdoor(
    classifier: Classifier, trigger: DynamicTrigger, train: FrameDataset, poison: PoisonConfig,
    training: TrainConfig, num_classes: int, label: str = "training dynamic backdoor",
) -> BackdoorTraining:
    """LIRA-style two-stage training of ``classifier`` (in place) and ``trigger``'s generator.

    Poisoned samples are ``choose_poison_indices(train.labels, poison)`` with labels ``poison.relabel``.
    Stage 1 (``round(joint_fraction * epochs)`` epochs, at least 1), per batch: one generator step on the
    whole batch relabelled to the attacker's labels, then one classifier step on
    ``(1 - gamma) * CE(clean batch) + gamma * CE(triggered poisoned samples of the batch)``. Stage 2 (the
    remaining epochs): the generator is frozen and the classifier takes the same steps. The triggered
    samples the classifier sees are always ``trigger.apply``'s output for the generator at that moment.
    Seeded by ``training.seed`` (data order, dropout) and ``trigger.seed`` (generator initialisation).
    """
    labels = np.asarray(train.labels)
    poison.check_classes(num_classes)
    indices = choose_poison_indices(labels, poison)
    is_poisoned = torch.zeros(len(labels), dtype=torch.bool)
    is_poisoned[torch.from_numpy(indices)] = True
    attacker_labels = torch.from_numpy(poison.relabel(labels, num_classes).astype(np.int64))

    seed_everything(training.seed)
    device = classifier.device
    if not trigger.fitted:
        trigger = trigger.fit(train[0][0].unsqueeze(0))
    net = copy.deepcopy(trigger.generator).to(device).requires_grad_(True)
    loader = DataLoader(_Indexed(train), batch_size=training.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(training.seed))
    params = [p for p in classifier.net.parameters() if p.requires_grad]
    optim_cls = torch.optim.AdamW if training.optimizer == "adamw" else torch.optim.Adam
    optimizer = optim_cls(params, lr=training.lr, weight_decay=training.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=training.epochs * len(loader))
    gen_optimizer = torch.optim.Adam(net.parameters(), lr=trigger.generator_lr)
    joint_epochs = min(training.epochs, max(1, round(trigger.joint_fraction * training.epochs)))
    history: dict[str, list[float]] = {"loss": [], "generator_loss": []}

    with progress_bar(label, total=training.epochs * len(loader)) as advance:
        for epoch in range(training.epochs):
            stage = 1 if epoch < joint_epochs else 2
            totals = {"loss": 0.0, "generator_loss": 0.0}
            seen = 0
            for frames, y, index in loader:
                frames, y = frames.to(device, non_blocking=True), y.to(device, non_blocking=True)
                targets = attacker_labels[index].to(device)
                if stage == 1:
                    gen_loss = generator_step(classifier, trigger, net, gen_optimizer, frames, targets)
                    totals["generator_loss"] += gen_loss * len(y)
                loss = _classifier_step(classifier, trigger, net, optimizer, frames, y, targets,
                                        is_poisoned[index].to(device))
                scheduler.step()
                totals["loss"] += loss * len(y)
                seen += len(y)
                fields = {"stage": stage, "loss": totals["loss"] / seen}
                if stage == 1:
                    fields["gen"] = totals["generator_loss"] / seen
                advance(epoch=epoch + 1, **fields)
            history["loss"].append(totals["loss"] / seen)
            if stage == 1:
                history["generator_loss"].append(totals["generator_loss"] / seen)
    if training.bn_recalibration_batches:  # the model's recipe: BN statistics from the final weights
        clean = DataLoader(train, batch_size=training.batch_size, shuffle=True,
                           generator=torch.Generator().manual_seed(training.seed))
        recalibrate_batchnorm(classifier, clean, training.bn_recalibration_batches)
    classifier.net.eval()
    return BackdoorTraining(classifier, trigger.with_generator(net), indices, joint_epochs, history)


def _classifier_step(
    classifier: Classifier, trigger: DynamicTrigger, net: SpikingAutoencoder, optimizer: torch.optim.Optimizer,
    frames: Tensor, labels: Tensor, targets: Tensor, poisoned: Tensor,
) -> float:
    """One classifier update on the clean batch plus its poisoned samples, triggered as ``apply`` would."""
    classifier.net.train()
    n_poisoned = int(poisoned.sum())
    if n_poisoned:
        net.eval()
        with torch.no_grad():
            triggered = trigger.poison(frames[poisoned], net)
        logits = classifier.logits(torch.cat([frames, triggered]))
        loss = (1 - trigger.gamma) * F.cross_entropy(logits[: len(labels)], labels) \
            + trigger.gamma * F.cross_entropy(logits[len(labels):], targets[poisoned])
    else:
        loss = (1 - trigger.gamma) * F.cross_entropy(classifier.logits(frames), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()
