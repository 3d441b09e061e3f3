"""Delay SNN of Hammouamri et al. (ICLR 2024): synaptic delays learnt with DCLS, on spiking audio.

Reference: Thvnvtos/SNN-delays (``snn_delays.py``, ``model.py``, ``config.py``, ``best_config_SHD.py`` /
``best_config_SSC.py``). Per hidden layer: ``Dcls1d`` over time (one weight and one learnable delay per synapse,
kernel ``max_delay`` steps, Gaussian interpolation of width ``SIG``) -> BatchNorm -> LIF (``decay_input=False``,
threshold 1, ATan alpha 5, detached reset) -> Dropout (one mask for all steps); then a ``Dcls1d`` readout into
a LIF that never fires (threshold 1e9), read on its membrane potential ``v_t``. Time is padded by
``max_delay - 1`` steps on the left (causal delays ``0 .. max_delay - 1``) and ``(max_delay - 1) // 2`` on the
right, so every layer adds ``(max_delay - 1) // 2`` steps.

The reference's loss ('sum') is cross-entropy on ``m = sum_t softmax(v_t)`` and its metric is ``argmax m``.
The model returns ``m`` as one step, ``[1, B, K]``: the Classifier's mean over the first axis is ``m``, so the
trainer's cross-entropy is the reference loss and ``predict`` its metric ("logits" are ``m``, in ``[0, T']``).

Training (the :class:`snnsec.zoo.base.TrainingHooks` of this model, as the reference): weights and BN
parameters with Adam at ``lr`` (weight decay on the delay weights only, BN: none) on a one-cycle schedule
peaking at ``5 lr``; positions with their own Adam at ``100 lr``, no weight decay, cosine schedule; both
schedules step once per epoch (so, as in the reference, the last epoch's weight lr is ``5 lr / 25e4``: a
one-epoch run barely moves the weights). Positions are clamped to ``[-max_delay // 2, max_delay // 2]`` after every
step; ``SIG`` starts at ``max_delay // 2`` (not trained) and decays exponentially to 0.23 over the first
``epochs // 4`` epochs (none for runs under 4 epochs). Evaluation uses integer delays: ``SIG`` 0, the DCLS
'max' kernel and rounded positions.

Deliberate differences from the reference:

- Evaluation does not touch the weights. The reference's ``eval_model`` saves a temporary checkpoint, sets
  ``SIG`` to 0 and the DCLS version to 'max', rounds the positions in place (``round_pos``) and reloads the
  checkpoint afterwards; here eval mode builds the kernel from rounded copies of the positions (same numbers)
  and train mode uses the unrounded, trained ones.
- Fixed T: snnsec frames every sample to the same T (the ``shd``/``ssc`` inputs: 100 steps of 10 ms, 1 s);
  the reference pads each batch with zeros to its longest sample (SHD up to about 1.4 s), so its ``m`` sums
  a batch-dependent number of steps, and events after 1 s are dropped here.
- ``SIG`` is a buffer, not a frozen Parameter (same state-dict key, so reference checkpoints load by key):
  ``parameters()`` counts what trains (SHD 214,016; SSC 1,230,848).
- The reference squeezes BN's output with ``squeeze()``, which also drops a batch axis of size 1;
  here ``squeeze(3)``. Hidden LIFs are snnsec's fused LIF (bit-identical to spikingjelly's ``LIFNode``) and do
  not keep their membrane sequence (the reference stores ``v_seq`` in every layer, reading only the last).
- Initialisation draws from the global torch RNG in the reference's order but does not re-seed; the
  reference calls ``set_seed(seed)`` between building and initialising: ``torch.manual_seed(seed);
  net.reset_parameters()`` gives its initial weights.
- One Adam per group (weights, BN, positions) where the reference has one Adam with weight and BN param
  groups: Adam is per-parameter, and OneCycleLR sets each group's lr alike, so the updates are the same.
- Camera frames ``[T, B, 2, H, W]`` (not in the reference) are sum- or average-pooled by ``pool`` and
  flattened into input channels; audio frames ``[T, B, 1, 1, C]`` are read as they are.
- The reference keeps the best epoch on the validation set; snnsec trains a fixed number of epochs.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from DCLS.construct.modules import Dcls1d, _DclsNd
from spikingjelly.activation_based import layer, neuron, surrogate
from torch import Tensor, nn

from snnsec.errors import ConfigError
from snnsec.zoo.base import MODELS, InputSpec, ModelEntry, OptimizerGroup, TrainRecipe
from snnsec.zoo.neurons import lif

# DCLS's kernels are torch library ops; on their first call a CPU torch build warns twice on stderr that Triton
# is absent, which is not the user's concern: that one logger (it says nothing else) keeps to errors.
logging.getLogger("torch._library.triton").setLevel(logging.ERROR)

#: The DCLS layer classes (synaptic: priced by taps in snnsec.energy).
DELAY_LAYER_TYPES: tuple[type[nn.Module], ...] = (_DclsNd,)

if TYPE_CHECKING:
    from snnsec.training import TrainConfig

#: Width the Gaussian delay kernels anneal to (the reference: "decreasing to 0.23 instead of 0.5").
SIGMA_FINAL = 0.23
POOL_MODES = ("sum", "avg")


@dataclass(frozen=True)
class DelaySNNConfig:
    hidden: int = 256  # neurons per hidden layer
    layers: int = 2  # hidden layers
    max_delay: int = 25  # kernel length in steps (odd): delays 0 .. max_delay - 1
    tau_ms: float = 10.05  # membrane time constant; tau = (tau_ms + 1e-9) / time_step_ms steps
    time_step_ms: float = 10.0  # frame length
    dropout: float = 0.4
    pool: int = 1  # camera frames: pool H and W by this factor before flattening (audio frames: unused)
    pool_mode: str = "sum"  # "sum" or "avg"
    position_lr_scale: float = 100.0  # positions' lr / weights' lr
    peak_lr_scale: float = 5.0  # weights' one-cycle peak lr / lr

    def __post_init__(self) -> None:
        if self.hidden < 1 or self.layers < 1:
            raise ConfigError(f"delay-snn needs hidden >= 1 and layers >= 1, got {self.hidden}, {self.layers}")
        if self.max_delay < 3 or self.max_delay % 2 == 0:
            raise ConfigError(f"delay-snn max_delay must be odd and >= 3 (as the reference), got {self.max_delay}")
        if not self.tau_ms + 1e-9 >= self.time_step_ms > 0:
            raise ConfigError(f"delay-snn tau_ms must be >= time_step_ms > 0, got {self.tau_ms}, {self.time_step_ms}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"delay-snn dropout must be in [0, 1), got {self.dropout}")
        if self.pool < 1 or self.pool_mode not in POOL_MODES:
            raise ConfigError(f"delay-snn pool must be >= 1 and pool_mode one of {POOL_MODES}, got "
                              f"{self.pool}, {self.pool_mode!r}")
        if not (self.position_lr_scale > 0 and self.peak_lr_scale > 0):
            raise ConfigError("delay-snn lr scales must be > 0")


CONFIGS = {
    # best_config_SHD.py / best_config_SSC.py (140 = 700 channels binned by 5, 10 ms steps); the reference
    # trains SHD for 150 epochs at batch 256 and SSC for 60 at batch 128 (the budget stays the caller's).
    "shd": DelaySNNConfig(hidden=256, layers=2, max_delay=25, tau_ms=10.05, dropout=0.4),
    "ssc": DelaySNNConfig(hidden=512, layers=3, max_delay=31, tau_ms=15.0, dropout=0.25),
    # Narrow versions for CPUs: the embedded datasets and unit tests (camera frames pooled 4x4).
    "small": DelaySNNConfig(hidden=64, layers=2, max_delay=9, dropout=0.2, pool=4),
    "tiny": DelaySNNConfig(hidden=32, layers=1, max_delay=5, dropout=0.0, pool=4),
}
#: 100 steps of 10 ms (1 s) of 140 channels: the reference's SHD / SSC input at fixed T.
SHD_INPUT = InputSpec(frames=100, channels=1, height=1, width=140, num_classes=20)
SSC_INPUT = InputSpec(frames=100, channels=1, height=1, width=140, num_classes=35)
#: The reference's optimiser settings: lr_w 1e-3, weight decay 1e-5 (Adam, L2).
REFERENCE_RECIPE = TrainRecipe(lr=1e-3, weight_decay=1e-5)


class DelayConv(Dcls1d):
    """``Dcls1d`` over time, one weight and one delay per synapse: in train mode the reference's Gaussian
    kernel of width ``SIG``; in eval mode integer delays (positions rounded, DCLS 'max' kernel at ``SIG`` 0)
    computed from copies, so the trained positions stay as they are. Input ``[B, C_in, L]`` (padded)."""

    def __init__(self, in_channels: int, out_channels: int, max_delay: int) -> None:
        super().__init__(in_channels, out_channels, kernel_count=1, groups=1, dilated_kernel_size=max_delay,
                         bias=False, version="gauss")
        sig = self.SIG.detach().clone()
        del self.SIG
        self.register_buffer("SIG", sig)  # frozen in the reference: a buffer, under the same key

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            return super().forward(x)
        return F.conv1d(x, self.eval_kernel(), None, self.stride, self.padding, 1, self.groups)

    def eval_kernel(self) -> Tensor:
        """The kernel ``[C_out, C_in, max_delay]`` at integer delays: what the reference evaluates with."""
        lim = self.dilated_kernel_size[0] // 2
        self.DCK.__init_tmp_variables__(self.weight.device)
        return self.DCK.forward_vmax(self.weight, self.P.round().clamp(-lim, lim), torch.zeros_like(self.SIG))

    def delays(self) -> Tensor:
        """Integer delays in steps, ``[C_out, C_in]``, as evaluated (with left padding ``max_delay - 1``)."""
        lim = self.dilated_kernel_size[0] // 2
        return (lim - self.P.detach()[0, :, :, 0].round().clamp(-lim, lim)).long()

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> DelayConv:
        self.DCK.IDX = self.DCK.lim = None  # DCLS caches these on the first device it ran on
        return super()._apply(fn, *args, **kwargs)


class DelaySNN(nn.Module):
    """Input ``[T, B, P, H, W]`` frames, output ``[1, B, K]``: ``m = sum_t softmax(v_t)`` (see module doc).

    ``model`` is the reference's flat layer list ([Dcls1d, BN, LIF, Dropout] per hidden layer, then Dcls1d,
    LIF), so its state-dict keys are the reference's; ``features`` marks the last hidden layer's output.
    """

    def __init__(self, config: DelaySNNConfig, spec: InputSpec) -> None:
        super().__init__()
        self.config = config
        self.pool = config.pool if spec.height > 1 else 1
        pooled = -(-spec.height // self.pool) * -(-spec.width // self.pool)
        inputs, tau = spec.channels * pooled, (config.tau_ms + 1e-9) / config.time_step_ms
        layers: list[nn.Module] = []
        for i in range(config.layers):
            layers += [
                DelayConv(inputs if i == 0 else config.hidden, config.hidden, config.max_delay),
                layer.BatchNorm1d(config.hidden, step_mode="m"),
                lif(tau=tau, v_threshold=1.0, detach_reset=True, surrogate_alpha=5.0, surrogate_name="atan",
                    decay_input=False),
                layer.Dropout(config.dropout, step_mode="m"),
            ]
        layers += [
            DelayConv(config.hidden, spec.num_classes, config.max_delay),
            neuron.LIFNode(tau=tau, v_threshold=1e9, surrogate_function=surrogate.ATan(alpha=5.0),
                           detach_reset=True, step_mode="m", decay_input=False, store_v_seq=True),
        ]
        self.model = nn.Sequential(*layers)
        self.features = nn.Identity()
        self.convs = [m for m in self.model if isinstance(m, DelayConv)]  # plain list: no duplicate keys
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The reference's ``init_model``: Kaiming-uniform weights, then positions uniform in
        ``[-max_delay // 2, max_delay // 2]`` (Python's floor: -13 .. 12 for 25) clamped to +-(max_delay // 2),
        then ``SIG = max_delay // 2``."""
        md = self.config.max_delay
        with torch.no_grad():
            for conv in self.convs:
                nn.init.kaiming_uniform_(conv.weight, nonlinearity="relu")
            for conv in self.convs:
                nn.init.uniform_(conv.P, a=-md // 2, b=md // 2)
                conv.clamp_parameters()
            for conv in self.convs:
                conv.SIG.fill_(md // 2)

    @property
    def sigma(self) -> float:
        return float(self.convs[-1].SIG[0, 0, 0, 0])

    def forward(self, x: Tensor) -> Tensor:
        x = self._inputs(x)
        for i in range(self.config.layers):
            conv, bn, spiking, dropout = self.model[4 * i: 4 * i + 4]
            x = dropout(spiking(bn(self._delay(conv, x).unsqueeze(3)).squeeze(3)))
        x = self.features(x)
        readout = self.model[-1]
        readout(self._delay(self.model[-2], x))
        return readout.v_seq.softmax(2).sum(0, keepdim=True)

    def _inputs(self, x: Tensor) -> Tensor:
        """``[T, B, P, H, W]`` -> ``[T, B, features]``, camera frames pooled first."""
        if self.pool > 1:
            t, b = x.shape[:2]
            x = F.avg_pool2d(x.flatten(0, 1), self.pool, ceil_mode=True,
                             divisor_override=1 if self.config.pool_mode == "sum" else None).unflatten(0, (t, b))
        return x.flatten(2)

    def _delay(self, conv: DelayConv, x: Tensor) -> Tensor:
        """``[T, B, C]`` -> padded ``[B, C, T + max_delay - 1 + (max_delay - 1) // 2]`` -> conv -> ``[T', B, C']``."""
        md = self.config.max_delay
        x = F.pad(x.permute(1, 2, 0), (md - 1, (md - 1) // 2))
        return conv(x).permute(2, 0, 1)

    # ---------------------------------------------------------------- training hooks (zoo.base.TrainingHooks)

    def optimizer_groups(self, config: TrainConfig) -> list[OptimizerGroup]:
        """Adam for weights (weight decay ``config.weight_decay``) and BN (none), one-cycle to
        ``peak_lr_scale * lr``; Adam for positions at ``position_lr_scale * lr``, no decay, cosine; per epoch.

        A run that asks for something else gets it: ``schedule="constant"`` (a defense's fine-tuning or
        unlearning phase) keeps every group at its lr, and an explicit ``sgd`` or ``adam`` optimizer (with its
        momentum) replaces Adam; the default ``adamw`` means the reference's Adam."""
        if config.warmup_steps:
            raise ConfigError("delay-snn trains with the reference's schedules (one-cycle weights, cosine "
                              "positions): drop warmup_steps")
        lr, peak = config.lr, self.config.peak_lr_scale * config.lr
        optimizer = "adam" if config.optimizer == "adamw" else config.optimizer
        constant = config.schedule == "constant"
        weights = dict(schedule="constant") if constant else dict(schedule="one-cycle", max_lr=peak)
        norms = [m for m in self.model if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        return [
            OptimizerGroup("weights", tuple(c.weight for c in self.convs), lr, config.weight_decay,
                           optimizer=optimizer, per_epoch=True, **weights),
            OptimizerGroup("batchnorm", tuple(p for m in norms for p in m.parameters()), lr, 0.0,
                           optimizer=optimizer, per_epoch=True, **weights),
            OptimizerGroup("positions", tuple(c.P for c in self.convs), self.config.position_lr_scale * lr, 0.0,
                           optimizer=optimizer, schedule="constant" if constant else "cosine", per_epoch=True),
        ]

    def after_step(self) -> None:
        """The reference's ``reset_model(train=True)``: positions clamped into the kernel."""
        for conv in self.convs:
            conv.clamp_parameters()

    def end_epoch(self, epoch: int, epochs: int) -> None:
        """The reference's ``decrease_sig`` ('exp', gauss): ``SIG`` times ``(0.23 / SIG_0) ** (1 / (epochs // 4))``
        after each of the first ``epochs // 4`` epochs."""
        final = epochs // 4
        if epoch < final and self.sigma > SIGMA_FINAL:
            alpha = (SIGMA_FINAL / (self.config.max_delay // 2)) ** (1 / final)
            with torch.no_grad():
                for conv in self.convs:
                    conv.SIG *= alpha


def _default_config(spec: InputSpec) -> str:
    if (spec.channels, spec.height, spec.width) == (1, 1, 140):
        return {20: "shd", 35: "ssc"}.get(spec.num_classes, "small")
    return "small"


MODELS.add(
    "delay-snn",
    ModelEntry(
        name="delay-snn",
        build=DelaySNN,
        configs=CONFIGS,
        default_config=_default_config,
        spiking=True,
        feature_layer="features",
        description="SNN with learnable synaptic delays (DCLS): Dcls1d-BN-LIF-dropout layers, membrane readout",
        reference="Hammouamri et al., Learning Delays in SNNs using DCLS, ICLR 2024 (Thvnvtos/SNN-delays)",
        reference_accuracy={"shd": 0.9507, "ssc": 0.8069},
        config_inputs={"shd": SHD_INPUT, "ssc": SSC_INPUT},
        recipes={name: REFERENCE_RECIPE for name in CONFIGS},
        default_dataset="spoken-digits",
    ),
)
