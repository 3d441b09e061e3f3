"""Vision Transformer (Dosovitskiy et al., "An Image Is Worth 16x16 Words", ICLR 2021) as an ANN baseline on event
frames: the ``T * P`` bins and polarities are folded into the input channels of a patch embedding (a conv with
kernel and stride ``patch``), a learned position embedding is added, then ``depth`` pre-norm blocks
(``x + MHSA(LN(x))``, ``x + MLP(LN(x))``, GELU MLP), a final LayerNorm, and the class token (``pool="cls"``) or
the mean over patch tokens (``pool="mean"``) goes to one Linear. One pass per sample: output ``[1, B, K]``.

Frames whose side is not a multiple of ``patch`` are zero-padded on the right and bottom (34x34 with patch 4 ->
36x36, 9x9 tokens), so no event is dropped. The softmax attention's two products of activations, Q K^T and
A V, go through :class:`~snnsec.zoo.transformer_parts.ActivationProduct` so that :mod:`snnsec.energy` counts
their MACs. ``pool`` (the feature layer) gives the pooled token ``[1, B, D]``, time-major.

Configs: "paper" is ViT-Tiny (DeiT-Ti dims: 192 wide, 12 blocks, 3 heads, MLP x4) with 16x16 patches on
128x128 frames (8x8 tokens): 6,926,603 parameters with T=16, P=2, 11 classes (its patch embedding of 32 input
channels alone holds 1,572,864 weights; DeiT-Ti on RGB has 5.7M). "small" (dim 64, depth 4, 4 heads,
patch 4, 9x9 tokens at 34x34) and "tiny" (dim 64, one block, 4 heads, patch 6: 6x6 tokens) are for CPUs; both
pool by the token mean, which learned faster than the class token from scratch on digits-dvs (52 AdamW steps at lr
3e-3, 48 wide, two blocks: 8% test accuracy with the class token on seed 0, 17-26% with the token mean on two
seeds). A ViT trained from scratch on a few hundred samples is slow to start: "tiny" carries a recipe (lr 2e-3
after 5 warm-up steps: 34-37% in those 52 steps on two seeds, 8-30% at lr 1e-2) and reaches 49-53% after 10
epochs of 300 samples (three seeds, full test set).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from snnsec.errors import ConfigError
from snnsec.zoo.base import DVS128_INPUT, MODELS, InputSpec, ModelEntry, TrainRecipe
from snnsec.zoo.resnet18 import fold_time
from snnsec.zoo.transformer_parts import ActivationProduct, init_trunc_normal_linear

POOLS = ("cls", "mean")


@dataclass(frozen=True)
class ViTConfig:
    dim: int = 192
    depth: int = 12
    heads: int = 3
    mlp_ratio: float = 4.0
    patch: int = 16
    pool: str = "cls"  # "cls": the class token; "mean": the mean of the patch tokens
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.dim < 1 or self.heads < 1 or self.dim % self.heads:
            raise ConfigError(f"vit dim {self.dim} must be a positive multiple of heads {self.heads}")
        if self.depth < 1:
            raise ConfigError(f"vit depth must be >= 1, got {self.depth}")
        if self.patch < 1:
            raise ConfigError(f"vit patch must be >= 1, got {self.patch}")
        if int(self.dim * self.mlp_ratio) < 1:
            raise ConfigError(f"vit mlp_ratio must give a hidden width >= 1, got {self.mlp_ratio}")
        if self.pool not in POOLS:
            raise ConfigError(f"vit pool must be one of {', '.join(POOLS)}, got {self.pool!r}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"vit dropout must be in [0, 1), got {self.dropout}")


CONFIGS = {
    "paper": ViTConfig(),
    "small": ViTConfig(dim=64, depth=4, heads=4, patch=4, pool="mean"),
    "tiny": ViTConfig(dim=64, depth=1, heads=4, patch=6, mlp_ratio=2.0, pool="mean"),
}


class Attention(nn.Module):
    """Multi-head softmax self-attention on ``[B, N, D]`` tokens."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.qk = ActivationProduct("matmul")
        self.av = ActivationProduct("matmul")
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        batch, n, dim = x.shape
        q, k, v = self.qkv(x).reshape(batch, n, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        attn = (self.qk(q, k.transpose(-2, -1)) * self.scale).softmax(-1)
        out = self.av(self.drop(attn), v).transpose(1, 2).reshape(batch, n, dim)
        return self.drop(self.proj(out))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(LN(x))``, then ``x + mlp(LN(x))``."""

    def __init__(self, dim: int, mlp_hidden: int, attention: nn.Module, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = attention
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_hidden, dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TokenPool(nn.Module):
    """``[B, 1 + N, D]`` (class token first) -> ``[1, B, D]``: the class token or the mean of the patch tokens."""

    def __init__(self, pool: str) -> None:
        super().__init__()
        self.pool = pool

    def forward(self, x: Tensor) -> Tensor:
        return (x[:, 0] if self.pool == "cls" else x[:, 1:].mean(1)).unsqueeze(0)

    def extra_repr(self) -> str:
        return self.pool


class ViT(nn.Module):
    """Input ``[T, B, P, H, W]`` frames, output logits ``[1, B, K]``."""

    def __init__(self, config: ViTConfig, spec: InputSpec) -> None:
        super().__init__()
        self.patch = config.patch
        grid_h, grid_w = -(-spec.height // config.patch), -(-spec.width // config.patch)
        self.patch_embed = nn.Conv2d(spec.frames * spec.channels, config.dim, config.patch, config.patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid_h * grid_w, config.dim))
        self.pos_drop = nn.Dropout(config.dropout)
        hidden = int(config.dim * config.mlp_ratio)
        self.blocks = nn.Sequential(*(Block(config.dim, hidden, Attention(config.dim, config.heads, config.dropout),
                                            config.dropout) for _ in range(config.depth)))
        self.norm = nn.LayerNorm(config.dim)
        self.pool = TokenPool(config.pool)
        self.head = nn.Linear(config.dim, spec.num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(init_trunc_normal_linear)

    def forward(self, x: Tensor) -> Tensor:
        x = fold_time(x)
        pad_h, pad_w = -x.shape[-2] % self.patch, -x.shape[-1] % self.patch
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)  # [B, N, D]
        tokens = torch.cat([self.cls_token.expand(len(tokens), -1, -1), tokens], 1)
        tokens = self.blocks(self.pos_drop(tokens + self.pos_embed))
        return self.head(self.pool(self.norm(tokens)))


def _default_config(spec: InputSpec) -> str:
    return "tiny" if max(spec.height, spec.width) <= 64 else "paper"


MODELS.add(
    "vit",
    ModelEntry(
        name="vit",
        build=ViT,
        configs=CONFIGS,
        default_config=_default_config,
        spiking=False,
        feature_layer="pool",
        description="ANN baseline: ViT (patch embedding of T*P-folded frames, pre-norm blocks, class token)",
        reference="Dosovitskiy et al., An Image Is Worth 16x16 Words, ICLR 2021 (ViT-Ti dims: Touvron et al., DeiT)",
        config_inputs={"paper": DVS128_INPUT},
        recipes={"tiny": TrainRecipe(lr=2e-3, warmup_steps=5)},
    ),
)
