"""SEW-ResNet for event cameras (Fang et al., "Deep Residual Learning in Spiking Neural Networks", NeurIPS 2021).

Reference: fangwei123456/Spike-Element-Wise-ResNet ``dvsgesture/smodels.py`` and ``cifar10dvs/smodels.py``
(``SEWResNet(connect_f)`` built by ``ResNetN``). Each stage is [1x1 "up" conv-BN-PLIF where the channel count
changes] -> SEW block(s) -> 2x2 max-pool; then flatten and one Linear. A SEW block is two conv3x3-BN-PLIF
layers whose spikes ``S`` are joined with the block input ``A`` element-wise: ADD ``S + A``, AND ``S * A``,
IAND ``A * (1 - S)``.

Faithful to the reference: module names and registration order (so its ``state_dict`` keys are ours;
:func:`convert_reference_state_dict` fixes the one shape difference), PLIF with ``init_tau=2``,
``detach_reset=True``, hard reset to 0, threshold 1, and the ATan(alpha=2) surrogate that the reference's
CUDA neuron (``spikingjelly.cext``) uses by default (the surrogate shapes gradients only). Checked against the
golden reference (``tests/test_sew_resnet.py``): every layer's spike count per step is identical, and the
logits agree to 5e-7 (bit-for-bit when the features are averaged before the Linear, as the reference does).

Changes, all shape-level: the Linear's input size follows the ``InputSpec`` (the reference runs its pools
on a fixed 128x128 dummy); the Linear is applied per time step and the Classifier averages the logits, where
the reference averages the features first (equal up to float rounding, since the Linear is affine).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from spikingjelly.activation_based import layer, neuron
from torch import Tensor, nn

from snnsec.errors import ConfigError
from snnsec.zoo.base import CIFAR10DVS_INPUT, DVS128_INPUT, MODELS, InputSpec, ModelEntry
from snnsec.zoo.neurons import make_surrogate

#: Element-wise connect functions of a SEW block: ``g(S, A)`` for block spikes ``S`` and block input ``A``.
CONNECT_FUNCTIONS = {
    "ADD": lambda s, a: s + a,
    "AND": lambda s, a: s * a,
    "IAND": lambda s, a: a * (1.0 - s),
}


@dataclass(frozen=True)
class SEWResNetConfig:
    """One SEW stage per entry of ``stage_channels``; each stage halves the height and width."""

    stage_channels: tuple[int, ...] = (32,) * 7
    blocks_per_stage: int = 1
    connect: str = "ADD"  # "ADD", "AND" or "IAND"
    up_kernel_size: int = 1  # kernel of the conv inserted where the channel count changes (1 or 3)
    init_tau: float = 2.0
    detach_reset: bool = True
    surrogate: str = "atan"  # gradient only: "atan" (the reference's cext default) or "sigmoid"
    surrogate_alpha: float = 2.0

    def __post_init__(self) -> None:
        if self.connect not in CONNECT_FUNCTIONS:
            raise ConfigError(f"sew-resnet connect must be one of {sorted(CONNECT_FUNCTIONS)}, got {self.connect!r}")
        if not self.stage_channels or any(int(c) < 1 for c in self.stage_channels):
            raise ConfigError(f"sew-resnet stage_channels must be positive integers, got {self.stage_channels!r}")
        if self.blocks_per_stage < 1:
            raise ConfigError(f"sew-resnet blocks_per_stage must be >= 1, got {self.blocks_per_stage}")
        if self.up_kernel_size not in (1, 3):
            raise ConfigError(f"sew-resnet up_kernel_size must be 1 or 3, got {self.up_kernel_size}")
        if not self.init_tau > 1.0:
            raise ConfigError(f"sew-resnet init_tau must be > 1, got {self.init_tau}")
        if self.surrogate not in ("atan", "sigmoid"):
            raise ConfigError(f"sew-resnet surrogate must be 'atan' or 'sigmoid', got {self.surrogate!r}")


CONFIGS = {
    # dvsgesture/smodels.py SEWResNet('ADD'): 7 x (SEW block, 32 channels, max-pool 2), Linear(32, 11); 130,426 params.
    "gesture": SEWResNetConfig(stage_channels=(32,) * 7),
    # cifar10dvs/smodels.py SEWResNet('ADD'): 64 channels for 4 stages, then 128 for 3 (1x1 up conv between).
    "cifar10dvs": SEWResNetConfig(stage_channels=(64,) * 4 + (128,) * 3),
    # For CPUs and unit tests: 3 narrow stages, 34x34 -> 4x4, trains in seconds (13,298 params at 10 classes).
    "tiny": SEWResNetConfig(stage_channels=(8, 16, 16)),
}


def _plif(config: SEWResNetConfig) -> nn.Module:
    """Multi-step PLIF: v += (x - v) * sigmoid(w), spike = (v >= 1), hard reset to 0 (spikingjelly torch path)."""
    return neuron.ParametricLIFNode(
        init_tau=float(config.init_tau),
        decay_input=True,
        v_threshold=1.0,
        v_reset=0.0,
        surrogate_function=make_surrogate(config.surrogate, config.surrogate_alpha),
        detach_reset=config.detach_reset,
        step_mode="m",
    )


def _conv_bn_plif(in_channels: int, out_channels: int, kernel_size: int, config: SEWResNetConfig) -> nn.Sequential:
    """The reference's ``conv3x3``/``conv1x1``: Sequential(SeqToANNContainer(conv, BN), PLIF)."""
    return nn.Sequential(
        layer.SeqToANNContainer(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels),
        ),
        _plif(config),
    )


class SEWBlock(nn.Module):
    """Two conv3x3-BN-PLIF layers joined to the block input by the connect function."""

    def __init__(self, channels: int, config: SEWResNetConfig) -> None:
        super().__init__()
        self.connect = config.connect
        self.conv = nn.Sequential(
            _conv_bn_plif(channels, channels, 3, config),
            _conv_bn_plif(channels, channels, 3, config),
        )

    def forward(self, x: Tensor) -> Tensor:
        return CONNECT_FUNCTIONS[self.connect](self.conv(x), x)

    def extra_repr(self) -> str:
        return f"connect={self.connect}"


class SEWResNet(nn.Module):
    """Input ``[T, B, C, H, W]`` frames, output per-step logits ``[T, B, K]``."""

    def __init__(self, config: SEWResNetConfig, spec: InputSpec) -> None:
        super().__init__()
        stages = len(config.stage_channels)
        height, width = spec.height >> stages, spec.width >> stages  # MaxPool2d(2, 2) floors each time
        if height == 0 or width == 0:
            side = 2**stages
            raise ConfigError(
                f"sew-resnet with {stages} pooling stages needs inputs of at least {side}x{side}, got "
                f"{spec.height}x{spec.width}; use a config with fewer stages (e.g. 'tiny') or set stage_channels"
            )
        conv: list[nn.Module] = []
        in_channels = spec.channels
        for channels in config.stage_channels:
            if channels != in_channels:
                conv.append(_conv_bn_plif(in_channels, channels, config.up_kernel_size, config))
                in_channels = channels
            conv += [SEWBlock(channels, config) for _ in range(config.blocks_per_stage)]
            conv.append(layer.SeqToANNContainer(nn.MaxPool2d(2, 2)))
        conv.append(nn.Flatten(2))  # [T, B, C*H*W]
        self.conv = nn.Sequential(*conv)
        self.out = nn.Linear(in_channels * height * width, spec.num_classes)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 5:
            raise ValueError(f"sew-resnet expects frames [T, B, C, H, W], got shape {tuple(x.shape)}")
        return self.out(self.conv(x))


def convert_reference_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Map an official Spike-Element-Wise-ResNet checkpoint onto :class:`SEWResNet` (keys are identical).

    The reference's CUDA PLIF (``spikingjelly.cext``) stores ``w`` with shape ``[1]``; spikingjelly 2.x
    stores a 0-d tensor. Everything else loads as is, with ``strict=True``.
    """
    return {
        key: value.reshape(()) if key.endswith(".w") and value.numel() == 1 else value
        for key, value in state.items()
    }


def _default_config(spec: InputSpec) -> str:
    if min(spec.height, spec.width) < 128:
        return "tiny"
    return "cifar10dvs" if spec.num_classes == 10 else "gesture"


MODELS.add(
    "sew-resnet",
    ModelEntry(
        name="sew-resnet",
        build=SEWResNet,
        configs=CONFIGS,
        default_config=_default_config,
        spiking=True,
        feature_layer="conv",
        description="SEW-ResNet: PLIF conv stages with spike-element-wise (ADD/AND/IAND) residual blocks, linear head",
        reference="Fang et al., NeurIPS 2021 (fangwei123456/Spike-Element-Wise-ResNet dvsgesture/smodels.py)",
        reference_accuracy={"dvs128": 0.9792, "cifar10-dvs": 0.744},
        config_inputs={"gesture": DVS128_INPUT, "cifar10dvs": CIFAR10DVS_INPUT},
    ),
)

__all__ = ["CONFIGS", "CONNECT_FUNCTIONS", "SEWBlock", "SEWResNet", "SEWResNetConfig", "convert_reference_state_dict"]
