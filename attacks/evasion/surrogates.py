"""The surrogate gradient an evasion attack differentiates through: a setting of the attack, not of the model.

A spiking neuron's spike is a step function; gradient attacks see only the surrogate derivative the backward
pass substitutes for it, and a surrogate that is too narrow or too wide makes an attack weak (gradient
obfuscation without any defense). :func:`attack_surrogate` swaps every spiking neuron of a model, for the
duration of an attack, for an :class:`AttackNeuron` that runs the same dynamics (same spikes, same membrane,
same arithmetic as spikingjelly's torch path) with the chosen backward:

- ``model``: the model's own surrogate (nothing is swapped);
- ``sigmoid:A`` / ``atan:A``: spikingjelly's Sigmoid / ATan derivative with width parameter ``alpha = A``;
- ``pdsg``: the potential-dependent surrogate gradient of PDSG-SDA (Lun et al., CVPR 2025; ryime/PDSG-SDA,
  ``utils/attack.py``): at step t the derivative is the normal density with mean ``0.5 sigma`` and standard
  deviation ``sigma`` evaluated at ``h - v_th``, where ``sigma`` is the standard deviation of the (detached)
  charged membrane over steps 1..t, per channel. Channels as in the reference: dim 1 of a square conv map
  ``[B, C, H, W]``, dim 2 of a non-square 4-D map (its "transformer layer" rule), the last dim otherwise.
  Deliberate differences: sigma is computed per sample (the reference pools the batch as well, so its gradient
  depends on which samples share a batch; with batch size 1, as in its SDA, the two agree), and a sigma that is
  0 *or not finite* (one element: the reference gets NaN there) is replaced by 1 (the reference replaces 0);
- ``rate``: the rate gradient approximation of RGA (Bu et al., CVPR 2023; putshua/SNN_attack_RGA,
  ``models/layers.py`` ``RateBp``): no backpropagation through time; every step's input gradient is the output
  gradient times ``g(mean_t u)``, with ``u`` the input normalised to a threshold-1 neuron with leak factor
  ``lam`` (``mem = lam * mem + u``): ``g(z) = (1 - gamma + gamma lam) / (lam + 1)`` for ``1 - lam <= z <= 2``,
  ``gamma`` for ``0 <= z <= 1 - lam``, else 0, ``gamma = 0.2`` (the reference's constants).

Supported neurons: spikingjelly's ``LIFNode`` (and the zoo's ``FusedLIFNode``), ``IFNode`` and
``ParametricLIFNode`` in multi-step mode, hard or soft reset. Anything else is a one-line error naming it.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from spikingjelly.activation_based import neuron
from torch import Tensor, nn

from snnsec.errors import ConfigError

KINDS = ("model", "sigmoid", "atan", "pdsg", "rate")
#: ``--surrogate sweep``: the model's own, sigmoid and atan over a 16x range of widths, PDSG and RGA.
SWEEP = ("model", "sigmoid:1", "sigmoid:4", "sigmoid:16", "atan:0.5", "atan:2", "atan:8", "pdsg", "rate")
RATE_GAMMA = 0.2  # RGA's constants (RateBp.backward): gamma, ext = 1, des = 1


@dataclass(frozen=True)
class Surrogate:
    """An attack surrogate: ``kind`` (one of :data:`KINDS`) and, for sigmoid/atan, the width ``alpha``."""

    kind: str = "model"
    alpha: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown surrogate {self.kind!r}; choose one of: model, sigmoid:A, atan:A, pdsg, rate "
                              "(or sweep)")
        if self.kind in ("sigmoid", "atan"):
            if self.alpha is None or not (isinstance(self.alpha, (int, float)) and math.isfinite(self.alpha)
                                          and self.alpha > 0):
                raise ConfigError(f"surrogate {self.kind} needs a width alpha > 0 ({self.kind}:A), got {self.alpha!r}")
        elif self.alpha is not None:
            raise ConfigError(f"surrogate {self.kind} takes no width, got {self.kind}:{self.alpha}")

    @property
    def label(self) -> str:
        return self.kind if self.alpha is None else f"{self.kind}:{self.alpha:g}"


def parse_surrogates(texts: tuple[str, ...] | list[str]) -> tuple[Surrogate, ...]:
    """``("model", "sigmoid:4")`` -> surrogates; ``"sweep"`` expands to :data:`SWEEP`; duplicates dropped."""
    expanded = [s for text in texts for s in (SWEEP if text.strip() == "sweep" else (text,))]
    out: list[Surrogate] = []
    for text in expanded or ["model"]:
        surrogate = parse_surrogate(text)
        if surrogate not in out:
            out.append(surrogate)
    return tuple(out)


def parse_surrogate(text: str) -> Surrogate:
    kind, sep, width = str(text).strip().partition(":")
    if not sep:
        return Surrogate(kind)
    try:
        alpha = float(width)
    except ValueError:
        raise ConfigError(f"surrogate width must be a number ({kind}:A), got {text!r}") from None
    return Surrogate(kind, alpha)


# ---- the attack neuron ----------------------------------------------------------------------------------

class _Fire(torch.autograd.Function):
    """Heaviside forward; backward: the given derivative (already evaluated at ``h - v_th``)."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, derivative: Tensor) -> Tensor:
        ctx.save_for_backward(derivative)
        return (z >= 0).to(z.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (derivative,) = ctx.saved_tensors
        return grad * derivative, None


class _RateGradient(torch.autograd.Function):
    """Forward: the neuron's exact spikes (computed by the caller, passed in); backward: RGA's rate gradient."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, spikes: Tensor, slope: Tensor) -> Tensor:
        ctx.save_for_backward(slope)
        return spikes

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        (slope,) = ctx.saved_tensors
        return grad * slope, None, None


def _sigmoid_derivative(z: Tensor, alpha: float) -> Tensor:
    s = torch.sigmoid(alpha * z)
    return alpha * s * (1 - s)


def _atan_derivative(z: Tensor, alpha: float) -> Tensor:
    return alpha / 2 / (1 + (math.pi / 2 * alpha * z).square())


def _pdsg_sigma(history: Tensor) -> Tensor:
    """Per-sample, per-channel std of the charged membrane ``history [t, B, ...]`` (see the module doc)."""
    step_dims = history.dim() - 1
    if step_dims == 4:  # [B, C, H, W] conv map, or a 4-D transformer tensor (reference: keep dim 2 if H != W)
        keep = 2 if history.shape[-1] == history.shape[-2] else 3
    elif step_dims >= 5:
        keep = 2
    else:
        keep = history.dim() - 1
    dims = tuple(d for d in range(history.dim()) if d not in (1, keep))
    count = math.prod(history.shape[d] for d in dims)
    if count < 2:  # one element: no spread (the reference's std gives NaN here)
        return torch.ones_like(history.sum(dim=dims, keepdim=True).squeeze(0))
    sigma = history.std(dim=dims, keepdim=True).squeeze(0)
    return torch.where(torch.isfinite(sigma) & (sigma != 0), sigma, torch.ones_like(sigma))


def _pdsg_derivative(z: Tensor, sigma: Tensor) -> Tensor:
    return torch.exp(-((z - 0.5 * sigma) / (math.sqrt(2) * sigma)).square()) / (math.sqrt(2 * math.pi) * sigma)


class AttackNeuron(nn.Module):
    """A spiking neuron's multi-step dynamics with an attack surrogate in the backward pass (see module doc).

    Forward values equal the wrapped neuron's (spikingjelly's torch arithmetic); the wrapped neuron is kept as
    ``original`` so that :func:`attack_surrogate` can put it back. Stateless across calls (one call runs all T
    steps from a resting membrane, as the :class:`~snnsec.classifier.Classifier` resets before every call)."""

    def __init__(self, original: nn.Module, surrogate: Surrogate) -> None:
        super().__init__()
        if getattr(original, "step_mode", "m") != "m":
            raise ConfigError(f"attack surrogates need multi-step neurons; {type(original).__name__} is single-step")
        self.original = original
        self.surrogate = surrogate

    def reset(self) -> None:  # functional.reset_net calls it; there is no state to clear
        pass

    def _charge(self, x: Tensor, v: Tensor) -> Tensor:
        n = self.original
        reset = 0.0 if n.v_reset is None else n.v_reset
        if isinstance(n, neuron.ParametricLIFNode):
            q = n.w.sigmoid()
            return v + (x - (v - reset)) * q if n.decay_input else v - (v - reset) * q + x
        if isinstance(n, neuron.LIFNode):
            if n.decay_input:
                return v + (x - (v - reset)) / n.tau if reset else v + (x - v) / n.tau
            return v - (v - reset) / n.tau + x
        return v + x  # IFNode

    def _leak_and_scale(self, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
        """RGA's normalisation: leak factor ``lam`` and the input scale ``du/dx`` (divided by the threshold)."""
        n = self.original
        one = torch.ones((), dtype=dtype, device=device)
        if isinstance(n, neuron.ParametricLIFNode):
            q = n.w.detach().sigmoid().to(dtype)
            return 1 - q, (q if n.decay_input else one) / n.v_threshold
        if isinstance(n, neuron.LIFNode):
            lam = one * (1 - 1 / n.tau)
            return lam, one * ((1 / n.tau) if n.decay_input else 1.0) / n.v_threshold
        return one, one / n.v_threshold

    def _reset(self, h: Tensor, spike: Tensor) -> Tensor:
        n = self.original
        s = spike.detach() if n.detach_reset else spike
        if n.v_reset is None:
            return h - s * n.v_threshold
        if n.v_reset == 0.0:
            return h * (1 - s)
        return (1 - s) * h + s * n.v_reset

    def forward(self, x_seq: Tensor) -> Tensor:
        kind = self.surrogate.kind
        if kind == "rate":
            with torch.no_grad():
                spikes = self._run(x_seq.detach(), "exact")
            lam, scale = self._leak_and_scale(x_seq.dtype, x_seq.device)
            z = x_seq.detach().mean(0, keepdim=True) * scale
            band = (z >= 1 - lam) & (z <= 2)
            low = (z <= 1 - lam) & (z >= 0)
            slope = (band * (1 - RATE_GAMMA + RATE_GAMMA * lam) / (lam + 1) + low * RATE_GAMMA) * scale
            return _RateGradient.apply(x_seq, spikes, slope.expand_as(x_seq).to(x_seq.dtype))
        return self._run(x_seq, kind)

    def _run(self, x_seq: Tensor, kind: str) -> Tensor:
        threshold = self.original.v_threshold
        v: Tensor = torch.zeros_like(x_seq[0])
        spikes, history = [], []
        for t in range(x_seq.shape[0]):
            h = self._charge(x_seq[t], v)
            z = h - threshold
            if kind == "exact":
                spike = (z >= 0).to(z.dtype)
            else:
                with torch.no_grad():
                    if kind == "sigmoid":
                        derivative = _sigmoid_derivative(z, self.surrogate.alpha)
                    elif kind == "atan":
                        derivative = _atan_derivative(z, self.surrogate.alpha)
                    else:  # pdsg
                        history.append(h.detach())
                        derivative = _pdsg_derivative(z, _pdsg_sigma(torch.stack(history)))
                spike = _Fire.apply(z, derivative)
            v = self._reset(h, spike)
            spikes.append(spike)
        return torch.stack(spikes)


SPIKING = (neuron.LIFNode, neuron.IFNode, neuron.ParametricLIFNode)


@contextmanager
def attack_surrogate(net: nn.Module, surrogate: Surrogate) -> Iterator[nn.Module]:
    """Within the block, ``net``'s spiking neurons backpropagate through ``surrogate`` (forward unchanged);
    they are put back afterwards, also on error. ``model`` swaps nothing. Yields ``net``."""
    if surrogate.kind == "model":
        yield net
        return
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, SPIKING):
                swapped.append((parent, name, child))
            elif isinstance(child, neuron.BaseNode):
                raise ConfigError(f"surrogate {surrogate.label}: neuron type {type(child).__name__} is not supported "
                                  "(LIF, IF and PLIF are); use --surrogate model")
    from spikingjelly.activation_based.functional import net_config

    try:
        for parent, name, child in swapped:
            setattr(parent, name, AttackNeuron(child, surrogate))
        net_config.invalidate_reset_cache(net)
        yield net
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)
        net_config.invalidate_reset_cache(net)
