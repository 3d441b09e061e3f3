"""Razor SNN (Zhang et al., "Razor SNN: Efficient Spiking Neural Network with Temporal Embeddings", ICANN 2023,
arXiv 2306.17597): a spiking CNN that scores its time bins (frames) with global temporal embeddings, re-weights
them softly in training and prunes the low-scoring ones at inference, layer by layer ("a razor before each block").

There is no public code, and of the paper only the abstract and the start of the introduction could be read
(the method section could not be found). What the abstract fixes: global temporal embeddings extend a dynamic
(attention) mechanism, reconstruct the features and emphasise frames adaptively in training; at inference a
binary mask generated from the trained embeddings removes fruitless frames hierarchically, progressively.
Everything else below is our choice:

- Backbone: the Sneaky Spikes spiking CNN (``zoo/spiking_cnn.py``): [conv3x3-BN-LIF-maxpool] x N, a spiking FC
  layer (the feature layer ``fc``), a linear readout; LIF tau 2, ATan(2) surrogate, hard reset.
- Which layers: one razor (:class:`Razor`) before every conv block and one before the FC block (``razors.i``,
  ``blocks + 1`` in all); the readout's input carries the last razor's mask (no new decision).
- The embedding of one razor, from its input ``X [T, B, C, H, W]``: a per-frame descriptor (spatial mean per
  channel, projected on learned channel weights to one number per frame), standardised over time per sample,
  plus a learned temporal embedding ``e [T]`` (one value per time bin, zero at start), then a two-layer MLP over
  the whole time axis (``T -> max(2, T // 2) -> T``, ReLU): every frame's score sees every frame ("global").
  The scores ``z [T, B]`` depend on the sample, as TA-SNN's (Yao et al., ICCV 2021), the mechanism the paper
  extends. This scoring runs as plain tensor ops, outside the energy hooks; :meth:`RazorSNN.scoring_macs`
  gives its cost and :func:`energy_saving` adds it, as MACs, to the pruned network's energy.
- Training (``net.train()``): soft re-weighting, a relaxation of the inference mask (:func:`soft_top_k`): each
  razor ranks the frames still alive as inference does, gives its top k weight 1 and the others
  ``2 sigmoid(20 (z - theta) / s)`` (``theta`` midway between the k-th and (k+1)-th score, ``s`` their spread),
  and a frame's weight is the product of its weights at every razor so far; the readout's input carries the
  last product. Differentiable in the scores, so gradients reach the embeddings and MLP; the scoring reads
  its input detached, so the backbone learns from the task loss only. Plain cross-entropy, no sparsity loss
  (the paper's loss is unknown). Why not ``sigmoid(z)`` alone: we tried ``X_t * 2 sigmoid(z_t)`` (weights
  near 1, nothing pushes them towards 0 or 1) and the network, never trained without the frames inference
  removes, lost most of its accuracy when they were pruned (digits-dvs T=5, tiny: 0.19-0.53 pruned vs
  0.61-0.71 unpruned over 3 seeds); with this relaxation it reaches 0.61-0.72 pruned (400 stratified
  samples, 4 epochs, seeds 0-2), above its own unpruned accuracy (0.40-0.58): it is trained for the mask.
- Inference (``net.eval()``): a binary mask, top-k per sample of the frames still alive: razor ``l`` keeps
  ``k_l = max(1, floor(keep_ratio * k_{l-1} + 0.5))`` of the ``k_{l-1}`` frames the previous razor kept
  (``k_0 = T``), so pruning is hierarchical and a frame pruned once stays pruned. A keep ratio rather than a
  score threshold: the pruned share, and so the saving, is fixed by the config whatever the score scale of a
  trained net. ``keep_ratio = 1`` (or :func:`pruning` ``False``) turns pruning off.
- A pruned frame's input to the block is zero (the step is not skipped): the synaptic layer then receives no
  events at that step, which is what the energy counter and event-driven hardware see, while the batch stays
  one fixed-shape tensor (per-sample ragged time would need a loop over samples). The block's neurons still
  run that step: their membrane leaks and integrates the BN offset of a zero input (the FC layer's bias), and
  may fire; those spikes are discarded, because the frame stays pruned at every later razor and at the readout.
  The readout's output at a pruned step is its bias; the Classifier averages all T steps.

:func:`RazorSNN.pruning_report` gives, after an eval forward pass, the share of frames pruned per razor and
overall (the mean over razors); :func:`energy_saving` measures SOP energy with pruning on and off.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from math import floor

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from snnsec.errors import ConfigError
from snnsec.zoo.base import DVS128_INPUT, MODELS, InputSpec, ModelEntry
from snnsec.zoo.neurons import lif
from snnsec.zoo.spiking_cnn import conv_block, readout, spiking_fc


@dataclass(frozen=True)
class RazorSNNConfig:
    channels: int = 128
    blocks: int = 2  # conv-BN-LIF-maxpool blocks, each behind a razor
    hidden: int = 2048  # spiking FC width (the feature layer)
    tau: float = 2.0
    dropout: float = 0.5
    keep_ratio: float = 0.75  # share of the still-alive frames each razor keeps at inference; 1: no pruning

    def __post_init__(self) -> None:
        if not 0 < self.keep_ratio <= 1:
            raise ConfigError(f"razor-snn keep_ratio must be in (0, 1], got {self.keep_ratio}")
        if self.channels < 1 or self.blocks < 1 or self.hidden < 1:
            raise ConfigError(f"razor-snn channels, blocks and hidden must be >= 1, got {self}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"razor-snn dropout must be in [0, 1), got {self.dropout}")


CONFIGS = {
    # DVS128 Gesture (T=16, 128x128): the Sneaky Spikes Gesture net with 6 razors (16 -> 14 -> 12 -> 10 -> 9 -> 8 -> 7).
    "gesture": RazorSNNConfig(channels=128, blocks=5, hidden=512, keep_ratio=0.85),
    # CPU versions for the embedded digits-dvs (T=10: 10 -> 8 -> 6 -> 5 frames) and unit tests.
    "small": RazorSNNConfig(channels=16, blocks=2, hidden=128, dropout=0.2),
    "tiny": RazorSNNConfig(channels=8, blocks=2, hidden=32, dropout=0.0),
}


def kept_counts(frames: int, razors: int, keep_ratio: float) -> list[int]:
    """Frames alive after each razor at inference: ``k_l = max(1, floor(keep_ratio * k_{l-1} + 0.5))``."""
    counts, alive = [], frames
    for _ in range(razors):
        alive = max(1, floor(keep_ratio * alive + 0.5))
        counts.append(alive)
    return counts


class Razor(nn.Module):
    """Scores the T frames entering one block; re-weights them softly (training) or keeps the top k (eval)."""

    def __init__(self, channels: int, frames: int) -> None:
        super().__init__()
        hidden = max(2, frames // 2)
        self.channel_weights = nn.Parameter(torch.full((channels,), 1.0 / channels))
        self.embedding = nn.Parameter(torch.zeros(frames))  # the learned global temporal embedding
        self.w1 = nn.Parameter(torch.randn(hidden, frames) / frames ** 0.5)
        self.b1 = nn.Parameter(torch.zeros(hidden))
        self.w2 = nn.Parameter(torch.randn(frames, hidden) * 0.1 / hidden ** 0.5)
        self.b2 = nn.Parameter(torch.zeros(frames))
        self.keep: int | None = None  # frames this razor keeps (set by RazorSNN); None: it keeps all
        self.prune = True  # eval mode: apply the binary mask (False: every frame passes, as keep = None)
        self.last_mask: Tensor | None = None  # [T, B] bool of the last pruned (eval) forward pass

    def scores(self, x: Tensor) -> Tensor:
        """Frame scores ``z [T, B]`` of input ``x [T, B, C, ...]`` (higher = more important)."""
        per_frame = x.flatten(3).mean(3) @ self.channel_weights if x.dim() > 3 else x @ self.channel_weights
        mean, var = per_frame.mean(0), per_frame.var(0, unbiased=False)
        standard = (per_frame - mean) / (var + 1e-4).sqrt()
        embedded = standard.t() + self.embedding  # [B, T]
        return F.linear(F.relu(F.linear(embedded, self.w1, self.b1)), self.w2, self.b2).t()

    def forward(self, x: Tensor, alive: Tensor | None, weight: Tensor | None
                ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """``(x * weight', alive', weight')``: ``alive`` the frames kept so far ([T, B] bool, ``None``: all),
        ``weight`` what multiplies them ([T, B]: the soft weights in training, the mask in eval)."""
        self.last_mask = None
        if not (self.training or self.prune):
            return x, alive, weight
        shape = (*x.shape[:2], *([1] * (x.dim() - 2)))
        if weight is not None:  # frames pruned (or damped) upstream stay so: their activity is removed first
            x = x * weight.view(shape)
        if self.keep is None:  # this razor keeps every frame still alive
            self.last_mask = None if self.training else alive
            return x, alive, weight
        z = self.scores(x.detach())
        candidates = torch.ones_like(z, dtype=torch.bool) if alive is None else alive
        ranked = z.detach().masked_fill(~candidates, float("-inf"))
        mask = torch.zeros_like(candidates).scatter_(0, ranked.topk(self.keep, dim=0).indices, True)
        if not self.training:
            self.last_mask = mask
            return x * mask.to(x.dtype).view(shape), mask, mask.to(x.dtype)
        soft = soft_top_k(z, ranked, self.keep)
        weight = soft if weight is None else weight * soft
        return x * soft.view(shape), mask, weight


#: Slope of the training weights in units of the score spread (see :func:`soft_top_k`).
SHARPNESS = 20.0


def soft_top_k(z: Tensor, ranked: Tensor, keep: int) -> Tensor:
    """Training weights ``min(1, 2 sigmoid(SHARPNESS (z - theta) / s))`` of scores ``z [T, B]``: 1 for the
    ``keep`` frames ranked highest among the candidates (``ranked``: detached scores, -inf off the candidates),
    falling smoothly below; ``theta`` is midway between the k-th and (k+1)-th candidate score, ``s`` the
    candidates' score spread, at least 1e-3 (both detached, per sample). As SHARPNESS grows it tends to the
    binary top-k mask of inference; scale-free in ``z``."""
    if z.shape[1] == 0:  # an empty batch (a process's empty share of a last batch under torchrun)
        return torch.ones_like(z)
    top = ranked.sort(0, descending=True).values
    candidates = torch.isfinite(ranked)
    if keep >= int(candidates[:, 0].sum()):
        return torch.ones_like(z)
    theta = (top[keep - 1] + top[keep]) / 2
    finite = torch.where(candidates, ranked, torch.zeros_like(ranked))
    count = candidates.sum(0)
    mean = finite.sum(0) / count
    spread = (((finite - mean) ** 2) * candidates).sum(0).div(count).sqrt().clamp(min=1e-3)
    return torch.clamp(2 * torch.sigmoid(SHARPNESS * (z - theta) / spread), max=1.0)


class RazorSNN(nn.Module):
    """Input ``[T, B, C, H, W]`` frames, output per-step logits ``[T, B, K]``; frames pruned at inference."""

    def __init__(self, config: RazorSNNConfig, spec: InputSpec) -> None:
        super().__init__()
        height, width = spec.height, spec.width
        if min(height, width) >> config.blocks == 0:
            raise ConfigError(
                f"razor-snn with {config.blocks} pooling blocks needs inputs of at least "
                f"{2 ** config.blocks}x{2 ** config.blocks}, got {height}x{width}"
            )
        self.config, self.frames = config, spec.frames
        blocks, razors, in_channels = [], [], spec.channels
        for _ in range(config.blocks):
            razors.append(Razor(in_channels, spec.frames))
            blocks.append(nn.Sequential(*conv_block(in_channels, config.channels, self._neuron(config))))
            in_channels, height, width = config.channels, height // 2, width // 2
        razors.append(Razor(config.channels, spec.frames))
        self.razors = nn.ModuleList(razors)
        self.blocks = nn.ModuleList(blocks)
        self.fc = spiking_fc(config.channels * height * width, config.hidden, config.dropout, self._neuron(config))
        self.head = readout(config.hidden, spec.num_classes, config.dropout)
        alive = spec.frames
        for razor, keep in zip(self.razors, kept_counts(spec.frames, len(razors), config.keep_ratio)):
            razor.keep, alive = (keep if keep < alive else None), keep

    @staticmethod
    def _neuron(config: RazorSNNConfig) -> nn.Module:
        return lif(tau=config.tau, surrogate_name="atan", surrogate_alpha=2.0)

    @property
    def pruning_enabled(self) -> bool:
        return self.razors[0].prune

    def set_pruning(self, enabled: bool) -> None:
        """Prune at inference (the config's keep ratio) or keep every frame; training is not affected."""
        for razor in self.razors:
            razor.prune = bool(enabled)

    def forward(self, x: Tensor) -> Tensor:
        alive: Tensor | None = None
        weight: Tensor | None = None
        for razor, block in zip(self.razors, self.blocks):
            x, alive, weight = razor(x, alive, weight)
            x = block(x)
        x, alive, weight = self.razors[-1](x, alive, weight)
        x = self.fc(x)
        if weight is not None:
            x = x * weight.unsqueeze(-1)
        return self.head(x)

    def pruning_report(self) -> dict[str, float]:
        """Share of frames pruned by each razor (``razors.i``) in the last forward pass, and ``overall`` (their
        mean); all 0 after a training-mode pass or with pruning off."""
        shares = {f"razors.{i}": 0.0 if r.last_mask is None else 1.0 - int(r.last_mask.sum()) / r.last_mask.numel()
                  for i, r in enumerate(self.razors)}
        shares["overall"] = sum(shares.values()) / len(self.razors)
        return shares

    def scoring_macs(self) -> int:
        """Multiply-accumulates per sample of all razors' scoring (outside the energy hooks)."""
        return sum(r.channel_weights.numel() * self.frames + 2 * r.w1.numel() for r in self.razors)


@contextmanager
def pruning(net: nn.Module, enabled: bool) -> Iterator[None]:
    """Within the block, ``net`` (a :class:`RazorSNN`) prunes at inference or not; the setting is restored."""
    if not isinstance(net, RazorSNN):
        raise ConfigError(f"pruning is a razor-snn setting; got a {type(net).__name__}")
    before = net.pruning_enabled
    net.set_pruning(enabled)
    try:
        yield
    finally:
        net.set_pruning(before)


@dataclass(frozen=True)
class PruningSaving:
    """Per-sample energy of one batch with pruning on and off (:func:`energy_saving`)."""

    pruned_share: dict[str, float]  # pruning_report() of the pruned pass
    energy_pruned_mj: float  # SOP energy of the pruned network plus the razors' scoring as MACs
    energy_full_mj: float  # SOP energy with every frame kept (scoring not run)
    convention: str

    @property
    def ratio(self) -> float:
        """Pruned over full energy (< 1: pruning saves)."""
        return self.energy_pruned_mj / self.energy_full_mj if self.energy_full_mj else float("nan")


def energy_saving(classifier, x: Tensor, convention: str = "measured") -> PruningSaving:
    """Energy of ``classifier`` (a razor-snn :class:`~snnsec.classifier.Classifier`) on frames ``x``
    ``[B, T, P, H, W]`` in eval mode, with pruning on and off, by :func:`snnsec.energy.measure_energy`."""
    from snnsec.energy import E_MAC_PJ, measure_energy

    net = classifier.net
    if not isinstance(net, RazorSNN):
        raise ConfigError(f"energy_saving measures a razor-snn model; got a {type(net).__name__}")
    with pruning(net, True):
        pruned = measure_energy(net, lambda: classifier.predict(x), convention=convention)
        share = net.pruning_report()
    with pruning(net, False):
        full = measure_energy(net, lambda: classifier.predict(x), convention=convention)
    scoring_mj = net.scoring_macs() * E_MAC_PJ * 1e-9 if net.config.keep_ratio < 1 else 0.0
    return PruningSaving(share, pruned.energy_mj + scoring_mj, full.energy_mj, pruned.convention.name)


def _default_config(spec: InputSpec) -> str:
    return "small" if max(spec.height, spec.width) <= 64 else "gesture"


MODELS.add(
    "razor-snn",
    ModelEntry(
        name="razor-snn",
        build=RazorSNN,
        configs=CONFIGS,
        default_config=_default_config,
        spiking=True,
        feature_layer="fc",
        description="Razor SNN: spiking CNN whose frames are re-weighted by temporal embeddings, pruned at inference",
        reference="Zhang et al., Razor SNN, ICANN 2023 (arXiv 2306.17597); no public code, choices in zoo/razor_snn.py",
        config_inputs={"gesture": DVS128_INPUT},
    ),
)
