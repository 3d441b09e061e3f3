"""Small pieces shared by the zoo's spiking transformers (Spikformer, Spikingformer, Spike-driven Transformer).

The three reference repositories write every layer out by hand (``q_conv``, ``q_bn``, ``q_lif``, ...); the
model files here keep those attribute names so that the references' ``state_dict`` keys are ours. What they
share is only shape bookkeeping: applying a per-frame layer to a time-major tensor, splitting and merging
attention heads, the pooling schedule of the convolutional tokenizer, and :class:`ActivationProduct`, the hook
point through which the energy estimate sees the attention's products of activations.

Tiny configs (34x34 frames, for CPUs and tests; trained in ``tests/test_zoo_learns.py`` for 52 AdamW steps). The
paper nets turn 128x128 into 8x8 (Spikformer, Spikingformer) or 16x16 (SDT) tokens of width 256, head width 16
or 32. At width 32 (a 4-channel first tokenizer stage) and 9x9 tokens the three reached 8-14% test accuracy in
that budget (chance 10%; 36-40% for Spikingformer and SDT with BN statistics re-estimated); at width 64, 35-74%.
Spikformer and SDT now use the golden "small" widths (dim 64, 4 heads) with SDT's Gesture pooling "0111" (5x5
tokens). Spikingformer keeps 9x9 tokens ("0110"; dim 56 for the time budget) because its attention has no
softmax: (Q K^T) V grows with the number of tokens, and with 25 its threshold-0.5 LIF fired at a rate of 3e-4 at
initialisation (1.2e-2 with 81 tokens, near the reference's 64). Spikformer's attention is as quiet at 25 tokens
but learns to fire (5% after training), while 81 tokens cost it accuracy (38-41% on two seeds against 53-67% on
three), likely because its head reads spike counts, which the last max-pool makes denser. The registry entries
carry the learning rates and BatchNorm handling these configs need (``TrainRecipe``).
"""
from __future__ import annotations

from torch import Tensor, nn

from snnsec.errors import ConfigError
from snnsec.zoo.base import InputSpec
from snnsec.zoo.neurons import lif

#: Every tokenizer has four conv stages; ``pooling[i] == "1"`` halves the map in stage ``i`` (MaxPool 3, 2, 1).
TOKENIZER_STAGES = 4


def check_transformer_config(
    model: str, embed_dim: int, depth: int, heads: int, mlp_ratio: float, tau: float, pooling: str
) -> None:
    """Range and consistency checks common to the three transformer configs."""
    if embed_dim < 8 or embed_dim % 8:
        raise ConfigError(
            f"{model} embed_dim must be a positive multiple of 8 (tokenizer widths dim/8 .. dim), got {embed_dim}"
        )
    if depth < 1:
        raise ConfigError(f"{model} depth must be >= 1, got {depth}")
    if heads < 1 or embed_dim % heads:
        raise ConfigError(f"{model} embed_dim {embed_dim} must be divisible by heads {heads}")
    if int(embed_dim * mlp_ratio) < 1:
        raise ConfigError(f"{model} mlp_ratio must give a hidden width >= 1, got {mlp_ratio}")
    if not tau > 1.0:
        raise ConfigError(f"{model} tau must be > 1, got {tau}")
    if len(pooling) != TOKENIZER_STAGES or set(pooling) - {"0", "1"}:
        raise ConfigError(
            f"{model} pooling must be {TOKENIZER_STAGES} characters of '0'/'1' (e.g. '1111'), got {pooling!r}"
        )


def max_pool() -> nn.MaxPool2d:
    """The tokenizers' down-sampling: 3x3 max-pool, stride 2, padding 1 (n -> ceil(n / 2))."""
    return nn.MaxPool2d(kernel_size=3, stride=2, padding=1)


def token_grid(height: int, width: int, pooling: str) -> tuple[int, int]:
    """Height and width of the token map after the tokenizer's pools (any input size, no 128x128 assumption)."""
    for flag in pooling:
        if flag == "1":
            height, width = (height - 1) // 2 + 1, (width - 1) // 2 + 1
    return height, width


def per_frame(x: Tensor, *layers: nn.Module) -> Tensor:
    """Apply frame-wise layers in turn to time-major ``x`` ``[T, B, ...]``: fold T into the batch, unfold after."""
    time, batch = x.shape[:2]
    y = x.flatten(0, 1)
    for layer in layers:
        y = layer(y)
    return y.reshape(time, batch, *y.shape[1:])


def split_heads(tokens: Tensor, heads: int) -> Tensor:
    """``[T, B, C, N]`` channel-major tokens -> ``[T, B, heads, N, C // heads]``."""
    time, batch, channels, n = tokens.shape
    return tokens.transpose(-1, -2).reshape(time, batch, n, heads, channels // heads).permute(0, 1, 3, 2, 4)


def merge_heads(x: Tensor) -> Tensor:
    """Inverse of :func:`split_heads`: ``[T, B, heads, N, d]`` -> ``[T, B, heads * d, N]``."""
    time, batch, heads, n, d = x.shape
    return x.transpose(3, 4).reshape(time, batch, heads * d, n)


class ActivationProduct(nn.Module):
    """A product of two activation tensors inside an attention, with no weights: ``a @ b`` (``op="matmul"``, e.g.
    Q K^T) or the element-wise ``a * b`` (``op="mul"``, broadcasting, e.g. SDSA's K * V and Q * KV).

    It computes exactly the bare operator and holds no tensors (state dicts and outputs are unchanged); it is a
    module so that forward hooks see both operands: :mod:`snnsec.energy` prices it like a synaptic layer whose
    input is ``a`` (or ``b`` where only ``b`` is spikes), with :meth:`macs` dense multiply-accumulates.
    """

    OPS = ("matmul", "mul")

    def __init__(self, op: str) -> None:
        super().__init__()
        if op not in self.OPS:
            raise ValueError(f"op must be one of {self.OPS}, got {op!r}")
        self.op = op

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return a @ b if self.op == "matmul" else a * b

    def macs(self, a: Tensor, b: Tensor, out: Tensor) -> int:
        """Scalar multiplications of one call (each with its accumulation): ``out.numel() x`` the contracted
        length for ``matmul``, ``out.numel()`` for ``mul`` (whose products are summed or masked afterwards)."""
        return out.numel() * (a.shape[-1] if self.op == "matmul" else 1)

    def extra_repr(self) -> str:
        return self.op


class TokenMean(nn.Module):
    """``[T, B, C, h, w]`` or ``[T, B, C, N]`` -> ``[T, B, C]``: the per-step mean over tokens the head reads."""

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(3).mean(3)


def init_trunc_normal_linear(module: nn.Module) -> None:
    """timm-style init of Spikformer / Spikingformer: Linear ~ N(0, 0.02) truncated to [-2, 2], zero bias;
    LayerNorm weight 1, bias 0 (use with ``model.apply``)."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def default_transformer_config(spec: InputSpec) -> str:
    """The config a spiking transformer uses when none is named: ``tiny`` up to 64x64 inputs, else the paper's."""
    return "tiny" if max(spec.height, spec.width) <= 64 else "dvs-2-256"


def add_sps_stages(module: nn.Module, embed_dim: int, tau: float, in_channels: int) -> None:
    """Register the SPS tokenizer's four conv3x3-BN-LIF-maxpool stages (widths dim/8, /4, /2, dim) on
    ``module`` under the references' names (proj_conv, proj_conv1, ...), in their registration order, so
    that Spikformer's and the Spike-driven Transformer's state dicts keep the references' keys."""
    widths = [in_channels, embed_dim // 8, embed_dim // 4, embed_dim // 2, embed_dim]
    for stage in range(4):
        suffix = str(stage) if stage else ""
        conv = nn.Conv2d(widths[stage], widths[stage + 1], kernel_size=3, stride=1, padding=1, bias=False)
        setattr(module, f"proj_conv{suffix}", conv)
        setattr(module, f"proj_bn{suffix}", nn.BatchNorm2d(widths[stage + 1]))
        setattr(module, f"proj_lif{suffix}", lif(tau=tau))
        setattr(module, f"maxpool{suffix}", max_pool())
