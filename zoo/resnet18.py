"""ResNet-18 (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016) as an ANN baseline on event
frames: a conv stem, four stages of two BasicBlocks (conv3x3-BN-ReLU-conv3x3-BN plus a shortcut, then ReLU) at
widths ``width x (1, 2, 4, 8)`` (64-128-256-512 at paper size), global average pooling and one Linear.

Time is handled in one of two ways (``time``):

- ``"fold"``: the T bins and P polarities are stacked as ``T * P`` input channels and the net runs once per
  sample (the usual ANN baseline of the DVS papers); the output is ``[1, B, K]``.
- ``"average"``: the same 2-D net (``P`` input channels) runs on every time bin with shared weights; the output
  is the per-bin logits ``[T, B, K]`` and the Classifier averages them over T (the mean of per-bin logits, as an
  SNN's readout is averaged). ``Classifier.step_logits`` then gives per-bin logits.

Stems (``stem``): ``"imagenet"`` is the paper's 7x7 stride-2 conv and 3x3 stride-2 max-pool (128x128 frames ->
32x32 before the first stage); ``"cifar"`` is a 3x3 stride-1 conv without max-pool, as ResNets for 32x32
CIFAR images do, so that 34x34 frames are not reduced to 9x9 before the first block. The paper configs use
the ImageNet stem, the narrow CPU configs the CIFAR one. ``pool`` (the feature layer) returns the pooled
features time-major, ``[T', B, C]``, which is what ``Classifier.features`` and the defenses read.

Parameter counts: "paper" at 128x128 with T=16, P=2 (32 input channels) and 11 classes: 11,273,099
(torchvision's resnet18 has 11,689,512 with 3 input channels and 1000 classes); "paper-average" (2 input
channels): 11,179,019. At 34x34, T=10, 10 classes: "small" 703,914, "tiny" 177,626 (fold).
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from snnsec.errors import ConfigError
from snnsec.zoo.base import DVS128_INPUT, MODELS, InputSpec, ModelEntry

TIME_MODES = ("fold", "average")
STEMS = ("imagenet", "cifar")


@dataclass(frozen=True)
class ResNet18Config:
    width: int = 64  # channels of the first stage; stages are width x (1, 2, 4, 8)
    blocks: tuple[int, ...] = (2, 2, 2, 2)  # BasicBlocks per stage
    time: str = "fold"  # "fold": T*P input channels, one pass; "average": per-bin net, logits averaged over T
    stem: str = "imagenet"  # "imagenet": 7x7/2 conv + 3x3/2 max-pool; "cifar": 3x3/1 conv, no pool

    def __post_init__(self) -> None:
        if self.time not in TIME_MODES:
            raise ConfigError(f"resnet18 time must be one of {', '.join(TIME_MODES)}, got {self.time!r}")
        if self.stem not in STEMS:
            raise ConfigError(f"resnet18 stem must be one of {', '.join(STEMS)}, got {self.stem!r}")
        if self.width < 1:
            raise ConfigError(f"resnet18 width must be >= 1, got {self.width}")
        if not self.blocks or any(b < 1 for b in self.blocks):
            raise ConfigError(f"resnet18 blocks must be positive block counts per stage, got {self.blocks!r}")


CONFIGS = {
    "paper": ResNet18Config(),
    "paper-average": ResNet18Config(time="average"),
    # Narrow versions for CPUs (34x34 frames): CIFAR stem, widths 16-128 / 8-64.
    "small": ResNet18Config(width=16, stem="cifar"),
    "small-average": ResNet18Config(width=16, stem="cifar", time="average"),
    "tiny": ResNet18Config(width=8, stem="cifar"),
    "tiny-average": ResNet18Config(width=8, stem="cifar", time="average"),
}


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus the input (through a 1x1 conv and BN where the shape changes), ReLU."""

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride, bias=False),
                                            nn.BatchNorm2d(channels))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class TimeMajorPool(nn.Module):
    """Global average pool of ``[T' * B, C, H, W]`` maps -> time-major features ``[T', B, C]``."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.steps = steps

    def forward(self, x: Tensor) -> Tensor:
        pooled = x.mean((2, 3))
        return pooled.reshape(self.steps, -1, pooled.shape[1])


def fold_time(x: Tensor) -> Tensor:
    """``[T, B, P, H, W]`` -> ``[B, T * P, H, W]`` (bins then polarities along the channels)."""
    return x.transpose(0, 1).flatten(1, 2)


class ResNet18(nn.Module):
    """Input ``[T, B, P, H, W]`` frames, output logits ``[1, B, K]`` (fold) or per-bin ``[T, B, K]`` (average)."""

    def __init__(self, config: ResNet18Config, spec: InputSpec) -> None:
        super().__init__()
        self.time = config.time
        in_channels = spec.frames * spec.channels if config.time == "fold" else spec.channels
        width = config.width
        if config.stem == "imagenet":
            self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width),
                                      nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        else:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                                      nn.ReLU(inplace=True))
        stages, channels = [], width
        for index, count in enumerate(config.blocks):
            out = width * 2 ** index
            blocks = [BasicBlock(channels, out, 1 if index == 0 else 2)]
            blocks += [BasicBlock(out, out, 1) for _ in range(count - 1)]
            stages.append(nn.Sequential(*blocks))
            channels = out
        self.layers = nn.Sequential(*stages)
        self.pool = TimeMajorPool(1 if config.time == "fold" else spec.frames)
        self.fc = nn.Linear(channels, spec.num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = fold_time(x) if self.time == "fold" else x.flatten(0, 1)
        return self.fc(self.pool(self.layers(self.stem(x))))


def _default_config(spec: InputSpec) -> str:
    return "tiny" if max(spec.height, spec.width) <= 64 else "paper"


MODELS.add(
    "resnet18",
    ModelEntry(
        name="resnet18",
        build=ResNet18,
        configs=CONFIGS,
        default_config=_default_config,
        spiking=False,
        feature_layer="pool",
        description="ANN baseline: ResNet-18 (BasicBlock x [2,2,2,2]) on T*P-folded frames or per bin, averaged",
        reference="He et al., Deep Residual Learning for Image Recognition, CVPR 2016",
        config_inputs={"paper": DVS128_INPUT, "paper-average": DVS128_INPUT},
    ),
)
