"""Spikformer (Zhou et al., "Spikformer: When Spiking Neural Network Meets Transformer", ICLR 2023), the DVS
variant: a spiking patch-splitting tokenizer (SPS) with a spiking relative position embedding, and blocks of
spiking self-attention (SSA, ``(Q K^T) V * 0.25`` without softmax) and a spiking MLP whose spike outputs are
added to the stream (SEW-style residual: the stream holds spike counts, not binary spikes).

Reference: ZK-Zhou/spikformer ``cifar10dvs/model.py`` (``Spikformer``, entry point ``spikformer``), commit
6212689. Faithful to it: module names and registration order (its ``state_dict`` keys are ours, including
``pos_embed`` and the LayerNorms it builds but never reads), LIF tau 2 with ``detach_reset=True``, hard reset
to 0, threshold 1 (0.5 after Q K^T V), Sigmoid(alpha 4) surrogate, and the reference's initialisation.
Verified spike-for-spike against the golden reference output (``tests/test_zoo_transformers.py``).

Changes: the token grid follows the input size (the reference hard-codes 128x128 and square inputs in its
reshapes; ``pos_embed`` has one row per token of this grid, 64 at 128x128 as in the reference); ``pooling``
says which of the four tokenizer stages max-pool (the reference pools in all four); the head is applied per
time step and the Classifier averages the logits (the reference averages features first: equal up to
rounding). Two modules the reference builds but never calls and that hold no tensors are left out: the
attention's ``res_lif`` and ``attn_drop`` (Dropout 0.2). Q K^T and (Q K^T) V go through the tensor-free
``ActivationProduct`` modules ``qk`` and ``qkv`` (the same operators) so that ``snnsec.energy`` sees them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from snnsec.zoo.base import CIFAR10DVS_INPUT, DVS128_INPUT, MODELS, InputSpec, ModelEntry, TrainRecipe
from snnsec.zoo.neurons import lif
from snnsec.zoo.transformer_parts import (
    ActivationProduct,
    add_sps_stages,
    TokenMean,
    check_transformer_config,
    init_trunc_normal_linear,
    merge_heads,
    per_frame,
    split_heads,
    token_grid,
    default_transformer_config,
)


@dataclass(frozen=True)
class SpikformerConfig:
    embed_dim: int = 256
    depth: int = 2
    heads: int = 16
    mlp_ratio: float = 4.0
    tau: float = 2.0
    attn_scale: float = 0.25  # 0.125 in the reference's CIFAR/ImageNet nets, 0.25 in its DVS net
    attn_threshold: float = 0.5
    pooling: str = "1111"  # which SPS stages max-pool by 2: "1111" turns 128x128 into 8x8 tokens
    layer_norm_eps: float = 1e-6  # of the LayerNorms the reference builds but never calls

    def __post_init__(self) -> None:
        check_transformer_config(
            "spikformer", self.embed_dim, self.depth, self.heads, self.mlp_ratio, self.tau, self.pooling
        )


CONFIGS = {
    # The paper's CIFAR10-DVS / DVS128 Gesture net (create_model('spikformer')), 128x128, T=16:
    # 2,585,610 parameters with 10 classes, 2,585,867 with 11.
    "dvs-2-256": SpikformerConfig(),
    # The golden reference's small variant: the same net at dim 64, 4 heads, depth 1.
    "small": SpikformerConfig(embed_dim=64, depth=1, heads=4),
    # For CPUs and unit tests: the small net pooling in three stages (34x34 -> 5x5 tokens); see transformer_parts.
    "tiny": SpikformerConfig(embed_dim=64, depth=1, heads=4, pooling="0111"),
}


class SPS(nn.Module):
    """Four stages of conv3x3 -> BN -> LIF -> (max-pool), widths dim/8, /4, /2, 1; then the spiking relative
    position embedding: tokens + LIF(BN(conv3x3(tokens))). Output: spike counts in {0, 1, 2}, ``[T, B, C, N]``."""

    def __init__(self, config: SpikformerConfig, in_channels: int) -> None:
        super().__init__()
        dim = config.embed_dim
        self.pooling = config.pooling
        add_sps_stages(self, dim, config.tau, in_channels)
        self.rpe_conv = nn.Conv2d(dim, dim, kernel_size=3, stride=1, padding=1, bias=False)
        self.rpe_bn = nn.BatchNorm2d(dim)
        self.rpe_lif = lif(tau=config.tau)

    def forward(self, x: Tensor) -> Tensor:
        for stage in range(4):
            suffix = str(stage) if stage else ""
            x = per_frame(x, getattr(self, f"proj_conv{suffix}"), getattr(self, f"proj_bn{suffix}"))
            x = getattr(self, f"proj_lif{suffix}")(x)
            if self.pooling[stage] == "1":
                x = per_frame(x, getattr(self, f"maxpool{suffix}"))
        x = x + self.rpe_lif(per_frame(x, self.rpe_conv, self.rpe_bn))
        return x.flatten(3)


class SSA(nn.Module):
    """Spiking Q, K, V (1x1 conv, BN, LIF) of the stream -> LIF_0.5((Q K^T) V * scale) -> 1x1 conv, BN, LIF."""

    def __init__(self, config: SpikformerConfig) -> None:
        super().__init__()
        dim = config.embed_dim
        self.heads = config.heads
        self.scale = config.attn_scale
        self.q_conv = nn.Conv1d(dim, dim, kernel_size=1, stride=1, bias=False)
        self.q_bn = nn.BatchNorm1d(dim)
        self.q_lif = lif(tau=config.tau)
        self.k_conv = nn.Conv1d(dim, dim, kernel_size=1, stride=1, bias=False)
        self.k_bn = nn.BatchNorm1d(dim)
        self.k_lif = lif(tau=config.tau)
        self.v_conv = nn.Conv1d(dim, dim, kernel_size=1, stride=1, bias=False)
        self.v_bn = nn.BatchNorm1d(dim)
        self.v_lif = lif(tau=config.tau)
        self.attn_lif = lif(tau=config.tau, v_threshold=config.attn_threshold)
        self.proj_conv = nn.Conv1d(dim, dim, kernel_size=1, stride=1)
        self.proj_bn = nn.BatchNorm1d(dim)
        self.proj_lif = lif(tau=config.tau)
        self.qk = ActivationProduct("matmul")  # Q K^T: no tensors, a hook point for the energy estimate
        self.qkv = ActivationProduct("matmul")  # (Q K^T) V

    def forward(self, x: Tensor) -> Tensor:  # [T, B, C, N]
        q = split_heads(self.q_lif(per_frame(x, self.q_conv, self.q_bn)), self.heads)
        k = split_heads(self.k_lif(per_frame(x, self.k_conv, self.k_bn)), self.heads)
        v = split_heads(self.v_lif(per_frame(x, self.v_conv, self.v_bn)), self.heads)
        attn = self.qk(q, k.transpose(-2, -1))
        y = self.attn_lif(merge_heads(self.qkv(attn, v) * self.scale))
        return self.proj_lif(per_frame(y, self.proj_conv, self.proj_bn))


class MLP(nn.Module):
    """1x1 conv -> BN -> LIF -> 1x1 conv -> BN -> LIF on ``[T, B, C, N]`` tokens."""

    def __init__(self, config: SpikformerConfig) -> None:
        super().__init__()
        dim, hidden = config.embed_dim, int(config.embed_dim * config.mlp_ratio)
        self.fc1_conv = nn.Conv1d(dim, hidden, kernel_size=1, stride=1)
        self.fc1_bn = nn.BatchNorm1d(hidden)
        self.fc1_lif = lif(tau=config.tau)
        self.fc2_conv = nn.Conv1d(hidden, dim, kernel_size=1, stride=1)
        self.fc2_bn = nn.BatchNorm1d(dim)
        self.fc2_lif = lif(tau=config.tau)

    def forward(self, x: Tensor) -> Tensor:
        x = self.fc1_lif(per_frame(x, self.fc1_conv, self.fc1_bn))
        return self.fc2_lif(per_frame(x, self.fc2_conv, self.fc2_bn))


class Block(nn.Module):
    """x + SSA(x), then x + MLP(x); ``norm1``/``norm2`` exist only so reference checkpoints load strictly."""

    def __init__(self, config: SpikformerConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(config.embed_dim, eps=config.layer_norm_eps)  # unused, as in the reference
        self.attn = SSA(config)
        self.norm2 = nn.LayerNorm(config.embed_dim, eps=config.layer_norm_eps)  # unused, as in the reference
        self.mlp = MLP(config)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)


class Spikformer(nn.Module):
    """Input ``[T, B, C, H, W]`` frames, output per-step logits ``[T, B, K]``."""

    def __init__(self, config: SpikformerConfig, spec: InputSpec) -> None:
        super().__init__()
        grid_h, grid_w = token_grid(spec.height, spec.width, config.pooling)
        self.patch_embed = SPS(config, spec.channels)
        # Built and initialised by the reference but never added to the tokens; kept for strict checkpoint keys.
        self.pos_embed = nn.Parameter(torch.zeros(1, grid_h * grid_w, config.embed_dim))
        self.block = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.embed_dim, eps=config.layer_norm_eps)  # unused, as in the reference
        self.token_mean = TokenMean()
        self.head = nn.Linear(config.embed_dim, spec.num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.apply(init_trunc_normal_linear)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x)
        for block in self.block:
            x = block(x)
        return self.head(self.token_mean(x))


MODELS.add(
    "spikformer",
    ModelEntry(
        name="spikformer",
        build=Spikformer,
        configs=CONFIGS,
        default_config=default_transformer_config,
        spiking=True,
        feature_layer="token_mean",
        description="Spikformer: spiking patch splitting, spiking self-attention without softmax, SEW residual",
        reference="Zhou et al., Spikformer, ICLR 2023 (ZK-Zhou/spikformer cifar10dvs/model.py)",
        reference_accuracy={"dvs128": 0.983, "cifar10-dvs": 0.809},
        config_inputs={"dvs-2-256": CIFAR10DVS_INPUT, "small": DVS128_INPUT},
        # Its head reads the token mean of spike counts, which at first varies little between samples (std 0.07;
        # 0.19 for Spikingformer's real-valued stream at dim 64): at lr 3e-3 the loss hardly moves in the first epoch
        # and the test budget ends at 35% accuracy; a 5x higher peak lr after 10 warm-up steps reaches 53-67% over
        # three seeds (48-65% without re-estimating BN statistics).
        recipes={"tiny": TrainRecipe(lr=1.5e-2, warmup_steps=10, bn_recalibration_batches=8)},
    ),
)
