"""Spiking CNN of the Sneaky Spikes paper (Abad et al., NDSS 2024): [conv3x3-BN-LIF-maxpool] x N, FC, readout.

Reference: GorkaAbad/Sneaky-Spikes ``models.py`` (after the PLIF paper's DVS nets). One deliberate change:
the reference ends in a spiking 10x-population layer with a VotingLayer trained by MSE on firing
rates; here the readout is a non-spiking Linear whose per-step logits the Classifier averages, so that
every zoo model shares one cross-entropy loss and attacks/defenses see real logits.
"""
from __future__ import annotations

from dataclasses import dataclass

from spikingjelly.activation_based import layer
from torch import Tensor, nn

from snnsec.errors import ConfigError
from snnsec.zoo.base import DVS128_INPUT, MODELS, InputSpec, ModelEntry
from snnsec.zoo.neurons import integrate_and_fire, lif


@dataclass(frozen=True)
class SpikingCNNConfig:
    channels: int = 128
    blocks: int = 2  # conv-BN-neuron-maxpool blocks
    hidden: int = 2048  # spiking fully connected layer width
    neuron: str = "lif"  # "lif" or "if"
    tau: float = 2.0
    dropout: float = 0.5


CONFIGS = {
    # The reference nets (Sneaky Spikes models.py): N-MNIST (IF), DVS128 Gesture and CIFAR10-DVS (LIF).
    "nmnist": SpikingCNNConfig(channels=128, blocks=2, hidden=2048, neuron="if"),
    "gesture": SpikingCNNConfig(channels=128, blocks=5, hidden=512, neuron="lif"),
    "cifar10dvs": SpikingCNNConfig(channels=128, blocks=4, hidden=512, neuron="lif"),
    # Narrow versions for CPUs: the embedded digits-dvs default and unit tests.
    "small": SpikingCNNConfig(channels=16, blocks=2, hidden=128, neuron="lif", dropout=0.2),
    "tiny": SpikingCNNConfig(channels=8, blocks=2, hidden=32, neuron="lif", dropout=0.0),
}


class SpikingCNN(nn.Module):
    """Input ``[T, B, C, H, W]`` frames, output per-step logits ``[T, B, K]``."""

    def __init__(self, config: SpikingCNNConfig, spec: InputSpec) -> None:
        super().__init__()
        if config.neuron not in ("lif", "if"):
            raise ConfigError(f"spiking-cnn neuron must be 'lif' or 'if', got {config.neuron!r}")
        height, width = spec.height, spec.width
        if min(height, width) >> config.blocks == 0:
            raise ConfigError(
                f"spiking-cnn with {config.blocks} pooling blocks needs inputs of at least "
                f"{2 ** config.blocks}x{2 ** config.blocks}, got {height}x{width}"
            )
        convs: list[nn.Module] = []
        in_channels = spec.channels
        for _ in range(config.blocks):
            convs += conv_block(in_channels, config.channels, self._neuron(config))
            in_channels = config.channels
            height, width = height // 2, width // 2
        self.features = nn.Sequential(*convs)
        self.fc = spiking_fc(config.channels * height * width, config.hidden, config.dropout, self._neuron(config))
        self.head = readout(config.hidden, spec.num_classes, config.dropout)

    @staticmethod
    def _neuron(config: SpikingCNNConfig) -> nn.Module:
        return lif(tau=config.tau, surrogate_name="atan", surrogate_alpha=2.0) if config.neuron == "lif" else integrate_and_fire()

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.fc(self.features(x)))


def conv_block(in_channels: int, channels: int, neuron: nn.Module) -> list[nn.Module]:
    """One conv3x3-BN-neuron-maxpool block (multi-step), as a list of its layers."""
    return [
        layer.Conv2d(in_channels, channels, kernel_size=3, padding=1, bias=False, step_mode="m"),
        layer.BatchNorm2d(channels, step_mode="m"),
        neuron,
        layer.MaxPool2d(2, 2, step_mode="m"),
    ]


def spiking_fc(features: int, hidden: int, dropout: float, neuron: nn.Module) -> nn.Sequential:
    """Flatten, dropout, the spiking fully connected layer (the feature layer)."""
    return nn.Sequential(
        layer.Flatten(step_mode="m"),
        layer.Dropout(dropout, step_mode="m"),
        layer.Linear(features, hidden, step_mode="m"),
        neuron,
    )


def readout(hidden: int, classes: int, dropout: float) -> nn.Sequential:
    """Dropout and the non-spiking linear readout (per-step logits)."""
    return nn.Sequential(layer.Dropout(dropout, step_mode="m"), layer.Linear(hidden, classes, step_mode="m"))


def _default_config(spec: InputSpec) -> str:
    return "small" if max(spec.height, spec.width) <= 64 else "gesture"


MODELS.add(
    "spiking-cnn",
    ModelEntry(
        name="spiking-cnn",
        build=SpikingCNN,
        configs=CONFIGS,
        default_config=_default_config,
        spiking=True,
        feature_layer="fc",
        description="Sneaky Spikes spiking CNN: conv-BN-LIF-pool blocks, spiking FC, linear readout",
        reference="Abad et al., Sneaky Spikes, NDSS 2024 (GorkaAbad/Sneaky-Spikes models.py)",
        config_inputs={"gesture": DVS128_INPUT, "cifar10dvs": InputSpec(16, 2, 128, 128, 10)},
    ),
)
