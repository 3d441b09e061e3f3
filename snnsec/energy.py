"""Energy of a spiking network from synaptic operations (SOPs), against an ANN of the same shape.

The estimate follows the ``E = E_MAC * FLOPs + E_AC * SOPs`` model of the Spikformer and Spike-driven
Transformer papers (45 nm figures from Horowitz, ISSCC 2014), under one of a few named conventions
(:data:`CONVENTIONS`), because the papers and their code count two things differently (see *Conventions*
below). The rule per layer: a synaptic layer whose inputs are spikes only accumulates, once per input
spike and outgoing synapse, at ``E_AC = 0.9 pJ``; a layer whose inputs are real-valued (the first conv on
event-count frames, a layer after BN or after a real-valued residual sum, SEW ADD's integer sums)
multiplies and accumulates at ``E_MAC = 4.6 pJ`` on every step. Per synaptic layer (Conv1d/2d/3d, Linear,
including spikingjelly's ``layer.*`` wrappers, which subclass them):

    MACs  = dense multiply-accumulates per sample per time step (bias additions not counted)
    rate  = fraction of non-zero input values, over all steps and samples
    SOPs  = rate x T x MACs     priced at E_AC            if every input value is 0 or 1
    SOPs  = 1 x T x MACs        priced at E_MAC (a MAC)   otherwise

Products between two activations, with no weights, count too where the model marks them with an
:class:`~snnsec.zoo.transformer_parts.ActivationProduct` (a tensor-free module, so hooks see both operands):
the spiking transformers' attention, named ``<block>.attn.qk`` (Q K^T) and ``<block>.attn.qkv`` ((Q K^T) V) in
Spikformer and Spikingformer, ``<block>.attn.kv`` (K * V, summed over tokens) and ``<block>.attn.qkv``
(Q * LIF(sum K * V)) in the Spike-driven Transformer. Such a product is priced like a synaptic layer whose
input is one operand and whose "weights" are the other:

    MACs  = scalar multiplications per sample per time step (out.numel() x contracted length for a matrix
            product; out.numel() for an element-wise product, whose terms are then summed or masked)
    rate  = fraction of non-zero values of the event operand: the left one if it is binary, else the right one
            (Q for Q K^T, V for (Q K^T) V whose left operand holds integer scores, K for K * V, Q for Q * KV)
    SOPs  = rate x T x MACs     priced at E_AC            if the event operand is binary (a spike selects, adds)
    SOPs  = 1 x T x MACs        priced at E_MAC           if neither operand is binary

The Spike-driven Transformer paper describes SDSA as masks (Hadamard products of spikes) and additions (the
column sum); both rows use the rule above: ``kv`` prices the column sum at one AC per K spike (at most the
additions of the masked sum), and ``qkv`` prices the mask Q * KV, which the paper does not count as an
addition, at one AC per Q spike and channel: upper bounds of the paper's count.

Conventions (``measure_energy(..., convention=...)``, ``--energy-convention``; every report and run record
names the one used):

- ``first_layer``: ``"by-input"`` prices the first synaptic layer by the rule above, so on binary event
  frames it accumulates (AC at the input's rate), as Spikingformer's energy script (syops-counter) does;
  ``"mac"`` prices it as MAC on every step whatever its input (``T x MACs x E_MAC``), as the Spikformer and
  Spike-driven Transformer papers write ``E_MAC * FL_conv^1`` for the encoding layer.
- ``attention`` (the Spikformer / Spikingformer pair ``<block>.attn.qk``, ``<block>.attn.qkv``):
  ``"computed"`` counts the products in the order the model computes them, ``(Q K^T) V``, each ``N^2 d``
  per head; ``"kv-first"`` counts them as Spikingformer's script does, ``Q (K^T V)``, each ``N d^2`` per head
  (``N / d`` times fewer): the ``qk`` row then holds ``K^T V``, priced at the lower of K's and V's firing
  rates, and the ``qkv`` row ``Q (K^T V)``, priced at Q's rate (Spikingformer's ``min(k, v) + q``). The
  Spike-driven Transformer's linear attention is the same in both.

Presets: ``"measured"`` (default: first layer by input, attention as computed; what the hooks see),
``"papers"`` (first layer as MAC, attention as computed), ``"spikingformer-script"`` (first layer by
input, attention ``Q (K^T V)``).

The ANN equivalent is the same network run densely once on the same input: ANN MACs = the dense MACs of one
time step, summed over layers and activation products (attention in the convention's order), priced at
E_MAC. Not counted: matrix products between activations that no ActivationProduct marks, memory
accesses, BN, pooling and neuron updates.

Why not spikingjelly 2.x's ``op_counter``: its ``SynOpCounter``/``MACCounter`` (a ``TorchDispatchMode``)
count exact, padding-aware synaptic operations per aten op, summed over the batch and nested module scopes.
That is a finer model than the ``rate x T x MACs`` convention the papers report (and ARCHITECTURE.md
prescribes), it gives no per-layer firing rates or dense MACs, and it runs an extra float64 convolution per
spiking conv. Forward hooks give the paper convention per layer at the cost of one ``count_nonzero`` per call;
the tests check that both agree exactly where padding plays no role (Linear and 1x1 convs), and within 10% on
padded 3x3 convolutions (``rate x MACs`` also counts the synapses a spike at the border would have into the
zero padding).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from math import prod
from typing import Any

import torch
from spikingjelly.activation_based.neuron import BaseNode
from torch import Tensor, nn

from snnsec.errors import ConfigError
from snnsec.zoo.delay_snn import DELAY_LAYER_TYPES
from snnsec.zoo.transformer_parts import ActivationProduct

#: 45 nm, 32-bit float (Horowitz 2014): a multiply-accumulate and an accumulate, in picojoules.
E_MAC_PJ = 4.6
E_AC_PJ = 0.9

SYNAPTIC_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
#: Learnable-delay convolutions (the ``dcls`` package's Dcls1d, used by ``delay-snn``): synaptic, priced by taps.
DELAY_TYPES: tuple[type[nn.Module], ...] = DELAY_LAYER_TYPES

FIRST_LAYER_RULES = ("by-input", "mac")
ATTENTION_ORDERS = ("computed", "kv-first")


@dataclass(frozen=True)
class EnergyConvention:
    """How two contested parts of the energy are counted (module doc, *Conventions*)."""

    name: str
    first_layer: str = "by-input"  # "by-input": AC on binary input (Spikingformer's code); "mac": always MAC
    attention: str = "computed"  # "computed": (Q K^T) V; "kv-first": Q (K^T V) (Spikingformer's script)

    def __post_init__(self) -> None:
        if self.first_layer not in FIRST_LAYER_RULES:
            raise ConfigError(f"first_layer must be one of {', '.join(FIRST_LAYER_RULES)}, got {self.first_layer!r}")
        if self.attention not in ATTENTION_ORDERS:
            raise ConfigError(f"attention must be one of {', '.join(ATTENTION_ORDERS)}, got {self.attention!r}")


#: The named conventions; ``"measured"`` is the default.
CONVENTIONS: dict[str, EnergyConvention] = {
    c.name: c for c in (
        EnergyConvention("measured", first_layer="by-input", attention="computed"),
        EnergyConvention("papers", first_layer="mac", attention="computed"),
        EnergyConvention("spikingformer-script", first_layer="by-input", attention="kv-first"),
    )
}
DEFAULT_CONVENTION = "measured"


def energy_convention(name: str | EnergyConvention) -> EnergyConvention:
    """The named convention (a convention passes through); an unknown name lists the known ones."""
    if isinstance(name, EnergyConvention):
        return name
    if name not in CONVENTIONS:
        raise ConfigError(f"unknown energy convention {name!r}; choose one of {', '.join(CONVENTIONS)}")
    return CONVENTIONS[name]


@dataclass(frozen=True)
class LayerEnergy:
    """One synaptic layer or activation product, per sample (``sops`` and ``energy_pj`` over all T steps)."""

    name: str
    kind: str  # module class, e.g. "Conv2d", "Linear"; "MatMul" or "Mul" for an activation product
    macs: int  # dense multiply-accumulates per sample per time step
    input_rate: float  # measured fraction of non-zero inputs (of the event operand, for a product)
    binary_input: bool  # every input value was 0 or 1
    priced_as: str  # "AC" (spike-driven) or "MAC" (real-valued input; rate taken as 1)
    sops: float  # rate x T x macs, with rate = 1 when priced as MAC
    energy_pj: float


@dataclass(frozen=True)
class NeuronRate:
    """One spiking-neuron layer: the fraction of its outputs that are spikes."""

    name: str
    kind: str
    neurons: int  # per sample per time step
    firing_rate: float  # spikes / (neurons x T x samples)
    spikes_per_sample: float  # over all T steps


@dataclass(frozen=True)
class EnergyReport:
    """Per-sample energy of one measured run; ``to_dict()`` is JSON-ready for run records."""

    time_steps: int  # T the network saw (1 for a network without spiking neurons)
    samples: int  # batch items measured over
    layers: tuple[LayerEnergy, ...]
    neurons: tuple[NeuronRate, ...]
    e_mac_pj: float = E_MAC_PJ
    e_ac_pj: float = E_AC_PJ
    convention: EnergyConvention = field(default_factory=lambda: CONVENTIONS[DEFAULT_CONVENTION])

    @property
    def sops(self) -> float:
        """Spike-driven accumulates per sample (layers priced as AC)."""
        return sum(row.sops for row in self.layers if row.priced_as == "AC")

    @property
    def mac_ops(self) -> float:
        """Multiply-accumulates per sample over all T steps (layers on real-valued input)."""
        return sum(row.sops for row in self.layers if row.priced_as == "MAC")

    @property
    def dense_macs(self) -> int:
        """Dense MACs of one time step, all layers: also the ANN-equivalent MAC count."""
        return sum(row.macs for row in self.layers)

    @property
    def energy_mj(self) -> float:
        return sum(row.energy_pj for row in self.layers) * 1e-9

    @property
    def ann_macs(self) -> int:
        """The same layers run once, densely, as an ANN on the same input (= dense MACs of one step)."""
        return self.dense_macs

    @property
    def ann_energy_mj(self) -> float:
        return self.ann_macs * self.e_mac_pj * 1e-9

    @property
    def mean_firing_rate(self) -> float:
        """Spikes over neuron-steps, pooled over all neuron layers (0 when there are none)."""
        total = sum(n.neurons for n in self.neurons)
        if total == 0:
            return 0.0
        return sum(n.spikes_per_sample for n in self.neurons) / (total * self.time_steps)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["layers"] = [asdict(row) for row in self.layers]
        out["neurons"] = [asdict(n) for n in self.neurons]
        out["totals"] = {
            "sops": self.sops,
            "mac_ops": self.mac_ops,
            "dense_macs": self.dense_macs,
            "energy_mj": self.energy_mj,
            "ann_macs": self.ann_macs,
            "ann_energy_mj": self.ann_energy_mj,
            "energy_ratio_ann_over_snn": (self.ann_energy_mj / self.energy_mj) if self.energy_mj else None,
            "mean_firing_rate": self.mean_firing_rate,
        }
        return out


class _Tally:
    """Running sums for one hooked module over every call in the run."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.dense_macs = 0  # over all calls: every (sample, step, output) x fan-in
        self.nonzero = 0
        self.numel = 0
        self.binary = True

    def add_input(self, x: Tensor) -> None:
        x = x.detach()
        self.nonzero += int(torch.count_nonzero(x))
        self.numel += x.numel()
        if self.binary:
            self.binary = bool(((x == 0) | (x == 1)).all())

    @property
    def rate(self) -> float:
        return self.nonzero / self.numel if self.numel else 0.0


class _ProductTally:
    """Both operands of one activation product, over every call in the run."""

    def __init__(self, kind: str) -> None:
        self.left, self.right = _Tally(kind), _Tally(kind)
        self.kind = kind
        self.dense_macs = 0
        # A matrix product A B taken as the first half of attention (Q K^T): the multiplications of the
        # re-associated order, K^T V (right operand's elements x d) and Q (K^T V) (left's elements x d).
        self.kv_first_right = 0
        self.kv_first_left = 0

    def events(self) -> _Tally:
        """The operand whose non-zeros trigger the work: the left one if binary, else the right one."""
        return self.left if self.left.binary or not self.right.binary else self.right


def _fan_in(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.in_features
    if isinstance(module, DELAY_TYPES):  # one tap per kernel and synapse, whatever the dilated kernel's length
        return (module.in_channels // module.groups) * module.kernel_count
    return (module.in_channels // module.groups) * prod(module.kernel_size)  # type: ignore[union-attr]


def _is_neuron(module: nn.Module) -> bool:
    return isinstance(module, BaseNode)


def measure_energy(
    net: nn.Module,
    run: Callable[[], Any],
    *,
    e_mac_pj: float = E_MAC_PJ,
    e_ac_pj: float = E_AC_PJ,
    convention: str | EnergyConvention = DEFAULT_CONVENTION,
) -> EnergyReport:
    """Hook ``net``'s synaptic and neuron layers, call ``run()`` once (under ``no_grad``), and price what it
    did under ``convention`` (a name of :data:`CONVENTIONS` or an :class:`EnergyConvention`).

    ``run`` performs the forward pass(es) through the only model-call site, e.g.
    ``lambda: classifier.predict(x)`` (eval mode, no gradients). ``net`` must receive time-major input
    ``[T, B, ...]``, as every zoo model does; T and B are read from that input. Several calls (batches)
    are pooled; they must share T. Results are per sample.
    """
    convention = energy_convention(convention)
    tallies: dict[str, _Tally | _ProductTally] = {}
    spikes: dict[str, _Tally] = {}
    shapes: list[tuple[int, int]] = []  # (T, B) of each top-level call
    handles = []

    def on_net_input(_module: nn.Module, args: tuple[Any, ...]) -> None:
        x = args[0] if args else None
        if not isinstance(x, Tensor) or x.dim() < 2:
            raise ValueError("measure_energy needs the network called with a time-major tensor [T, B, ...]")
        shapes.append((x.shape[0], x.shape[1]))

    def on_synapse(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Tensor) -> None:
            tally = tallies.setdefault(name, _Tally(type(module).__name__))
            tally.add_input(args[0])
            tally.dense_macs += output.numel() * _fan_in(module)

        return hook

    def on_delays(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], _output: Tensor) -> None:
            # A learnable-delay layer (DCLS) on time-padded input [B, C_in, L]: each synapse holds kernel_count
            # delayed taps, so a sample's step costs C_out x C_in x kernel_count; the rate is over the T real steps.
            x, steps = args[0], shapes[-1][0]
            tally = tallies.setdefault(name, _Tally(type(module).__name__))
            tally.add_input(x)
            tally.numel -= x.numel() // x.shape[-1] * (x.shape[-1] - steps)
            tally.dense_macs += x.shape[0] * steps * module.out_channels * _fan_in(module)

        return hook

    def on_product(name: str) -> Callable[..., None]:
        def hook(module: ActivationProduct, args: tuple[Any, ...], output: Tensor) -> None:
            tally = tallies.setdefault(name, _ProductTally("MatMul" if module.op == "matmul" else "Mul"))
            assert isinstance(tally, _ProductTally)
            tally.left.add_input(args[0])
            tally.right.add_input(args[1])
            tally.dense_macs += module.macs(args[0], args[1], output)
            if module.op == "matmul":
                tally.kv_first_right += args[1].numel() * args[1].shape[-2]
                tally.kv_first_left += args[0].numel() * args[0].shape[-1]

        return hook

    def on_neuron(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, _args: tuple[Any, ...], output: Tensor) -> None:
            tally = spikes.setdefault(name, _Tally(type(module).__name__))
            out = output.detach()
            tally.nonzero += int(torch.count_nonzero(out))
            tally.numel += out.numel()

        return hook

    handles.append(net.register_forward_pre_hook(on_net_input))
    spiking = False
    for name, module in net.named_modules():
        if isinstance(module, DELAY_TYPES):
            handles.append(module.register_forward_hook(on_delays(name)))
        elif isinstance(module, SYNAPTIC_TYPES):
            handles.append(module.register_forward_hook(on_synapse(name)))
        elif isinstance(module, ActivationProduct):
            handles.append(module.register_forward_hook(on_product(name)))
        elif _is_neuron(module):
            spiking = True
            handles.append(module.register_forward_hook(on_neuron(name)))
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()

    if not shapes:
        raise ValueError("run() never called the network passed to measure_energy")
    steps = {t for t, _ in shapes}
    if len(steps) > 1:
        raise ValueError(f"measure_energy pools calls with one T; run() used T = {sorted(steps)}")
    # A network without spiking neurons is an ANN that reads all T bins at once: one dense "step".
    time_steps = steps.pop() if spiking else 1
    samples = sum(b for _, b in shapes)

    per_step = samples * time_steps
    kv_first = _kv_first_rows(tallies, per_step) if convention.attention == "kv-first" else {}
    layers = []
    for index, (name, tally) in enumerate(tallies.items()):
        macs = round(tally.dense_macs / per_step)
        inputs = tally.events() if isinstance(tally, _ProductTally) else tally
        rate, binary = inputs.rate, inputs.binary
        if name in kv_first:
            macs, rate, binary = kv_first[name]
        spike_driven = spiking and binary
        if index == 0 and convention.first_layer == "mac":
            spike_driven = False
        effective_rate = rate if spike_driven else 1.0
        sops = effective_rate * time_steps * macs
        layers.append(
            LayerEnergy(
                name=name,
                kind=tally.kind,
                macs=macs,
                input_rate=rate,
                binary_input=binary,
                priced_as="AC" if spike_driven else "MAC",
                sops=sops,
                energy_pj=sops * (e_ac_pj if spike_driven else e_mac_pj),
            )
        )
    neurons = [
        NeuronRate(
            name=name,
            kind=tally.kind,
            neurons=tally.numel // (samples * time_steps),
            firing_rate=tally.rate,
            spikes_per_sample=tally.nonzero / samples,
        )
        for name, tally in spikes.items()
    ]
    return EnergyReport(
        time_steps=time_steps,
        samples=samples,
        layers=tuple(layers),
        neurons=tuple(neurons),
        e_mac_pj=e_mac_pj,
        e_ac_pj=e_ac_pj,
        convention=convention,
    )


def _kv_first_rows(tallies: dict[str, _Tally | _ProductTally], per_step: int) -> dict[str, tuple[int, float, bool]]:
    """``{name: (macs, rate, binary)}`` of attention products counted as ``Q (K^T V)``: for each pair of matrix
    products ``<attn>.qk`` (Q K^T) and ``<attn>.qkv`` ((Q K^T) V), the ``qk`` row becomes K^T V (priced at the
    lower of K's and V's rates, as Spikingformer's script) and the ``qkv`` row Q (K^T V) (priced at Q's)."""
    rows: dict[str, tuple[int, float, bool]] = {}
    for name, scores in tallies.items():
        values = tallies.get(f"{name}v")
        if not (name.endswith(".qk") and isinstance(scores, _ProductTally) and isinstance(values, _ProductTally)
                and scores.kind == values.kind == "MatMul"):
            continue
        q, k, v = scores.left, scores.right, values.right
        low = min((k, v), key=lambda t: t.rate)
        rows[name] = (round(scores.kv_first_right / per_step), low.rate, k.binary and v.binary)
        rows[f"{name}v"] = (round(scores.kv_first_left / per_step), q.rate, q.binary)
    return rows


__all__ = ["CONVENTIONS", "DEFAULT_CONVENTION", "E_AC_PJ", "E_MAC_PJ", "EnergyConvention", "EnergyReport",
           "LayerEnergy", "NeuronRate", "energy_convention", "measure_energy"]
