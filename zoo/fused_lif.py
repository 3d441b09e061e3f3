"""A faster multi-step LIF neuron, bit-identical in its forward pass to spikingjelly's ``LIFNode``.

spikingjelly's CPU path (``functional.lif_multi_step`` -> the ``sj_lif`` op -> its Torch reference) runs
about eleven element-wise kernels per time step and lets autograd record all of them; in our small
spiking CNN those kernels were ~60% of a training step. :class:`FusedLIFNode` keeps the exact arithmetic
but runs it as one :class:`torch.autograd.Function` whose forward writes into preallocated buffers with
as few kernels as possible and saves only the charged membrane ``h[t]``, and whose backward is a
hand-written reverse loop over T (BPTT through the hard reset).

Arithmetic (spikingjelly's Torch reference, hard reset to ``v_reset = 0``)::

    h[t] = v[t-1] + (x[t] - v[t-1]) / tau          (decay_input=True; a division, not * (1/tau))
    h[t] = v[t-1] - v[t-1] / tau + x[t]            (decay_input=False)
    s[t] = (h[t] - v_th >= 0)                      (== (h[t] >= v_th) for every float)
    v[t] = s[t] * 0 + (1 - s[t]) * h[t]            (computed here as h[t] * (h[t] < v_th))

``v[t]`` agrees bit for bit (also NaN/inf: ``inf * 0`` is NaN in both) except the sign of a zero when
``v_th <= 0`` (spikingjelly adds ``+0.0``; no zoo model uses such a threshold).

Backward (``sg`` = surrogate derivative at ``h - v_th``, ``gS`` = grad of the spikes, ``gV`` = grad
flowing into ``v[t]``, from step t+1 or from the final state)::

    gs[t] = gS[t] - gV * h[t]     if not detach_reset   (d v[t] / d s[t] = -h[t])
    gh[t] = gs[t] * sg[t] + gV * (1 - s[t])
    gx[t] = gh[t] / tau           (decay_input=True; gh[t] otherwise)
    gV    = gh[t] - gh[t] / tau   (grad into v[t-1])

The operations are the ones autograd runs on the reference graph, in an order that gives the same
rounding, so gradients agree with spikingjelly's to float rounding (the tests check 1e-6 relative; in
practice they are identical).

Backends (:func:`set_backend`, or the environment variable ``SNNSEC_FUSED_LIF_BACKEND``):

* ``"eager"`` (default): plain Torch kernels writing into preallocated buffers; always available, no
  start-up cost.
* ``"compile"``: the same loops given to ``torch.compile`` (inductor's C++ backend; needs a C++ compiler),
  which fuses all T steps into one pass over memory. Each kernel configuration (T, tau, threshold, flags,
  with/without saved h) is compiled on first use (5-20 s each on the 2-core dev machine; inductor caches on
  disk) with the feature size dynamic, and its first result is checked against the eager kernel (forward
  bit for bit, backward to 1e-6); any failure disables compilation for the process with a warning and
  falls back to eager.
* ``"auto"``: eager until a kernel configuration has run ``AUTO_COMPILE_AFTER`` (1000) times, then compile.

Why eager is the default: per call the compiled kernels are faster (train step of the small spiking CNN
~1.4x spikingjelly's vs ~1.2x for eager; see ``reports/benchmarks/models.md``), but the compile time only
pays off after several hundred steps, and a unit test that trains 50 steps went from 4 s (eager) to 26 s
when compilation kicked in. Use ``SNNSEC_FUSED_LIF_BACKEND=compile`` (or ``auto``) for long training runs.

Anything the fused path does not cover (soft reset or ``v_reset != 0``, ``store_v_seq``, surrogates
other than Sigmoid/ATan, non-float32 tensors, spikingjelly's low-precision modes, single-step mode)
goes to spikingjelly's own implementation, so :class:`FusedLIFNode` is a drop-in ``LIFNode``.
"""
from __future__ import annotations

import math
import os
import types
import warnings
from collections.abc import Callable
from typing import Any, Optional

import torch
from spikingjelly.activation_based import neuron, surrogate
from torch import Tensor

__all__ = [
    "FusedLIFNode",
    "fused_lif_multi_step",
    "get_backend",
    "set_backend",
    "swap_lif_nodes",
    "surrogate_spec",
]

SIGMOID, ATAN = 0, 1
_BACKENDS = ("eager", "compile", "auto")
_backend = os.environ.get("SNNSEC_FUSED_LIF_BACKEND", "eager").strip().lower() or "eager"
#: With backend "auto", a kernel configuration (T, tau, threshold, flags) is compiled on its next call after
#: this many eager calls. Environment: SNNSEC_FUSED_LIF_AUTO_AFTER.
AUTO_COMPILE_AFTER = int(os.environ.get("SNNSEC_FUSED_LIF_AUTO_AFTER", "1000"))
if _backend not in _BACKENDS:
    raise ValueError(f"SNNSEC_FUSED_LIF_BACKEND must be one of {_BACKENDS}, got {_backend!r}")


def set_backend(name: str) -> None:
    """``"eager"`` (the default: never compile), ``"compile"`` (torch.compile / inductor on first call, eager
    fallback if it fails) or ``"auto"`` (eager until a kernel configuration is hot, then compile)."""
    global _backend
    name = name.strip().lower()
    if name not in _BACKENDS:
        raise ValueError(f"fused LIF backend must be one of {_BACKENDS}, got {name!r}")
    _backend = name


def get_backend() -> str:
    return _backend


def surrogate_spec(function: Any) -> Optional[tuple[int, float]]:
    """``(SIGMOID|ATAN, alpha)`` for spikingjelly's Sigmoid/ATan in spiking mode, else ``None``."""
    if type(function) is surrogate.Sigmoid:
        surrogate_id = SIGMOID
    elif type(function) is surrogate.ATan:
        surrogate_id = ATAN
    else:
        return None
    alpha = getattr(function, "alpha", None)
    if not getattr(function, "spiking", True) or isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        return None
    return surrogate_id, float(alpha)


# --------------------------------------------------------------------------------------------------
# Eager kernels: preallocated buffers, float-only kernels (bool-producing comparisons are ~5x slower).
# --------------------------------------------------------------------------------------------------


def _forward_eager(x: Tensor, v: Tensor, tau: float, v_threshold: float, decay_input: bool,
                   keep_h: bool) -> tuple[Tensor, Tensor, Optional[Tensor]]:
    """``x [T, N]``, ``v [N]`` -> spikes ``[T, N]``, final ``v [N]``, charged ``h [T, N]`` (if kept).

    Five kernels of size N per step, all writing into preallocated buffers; every kernel produces
    float32 (comparisons written to a float ``out=`` run ~5x faster than ones producing bool)."""
    steps = x.shape[0]
    spikes = torch.empty_like(x)
    h_seq = torch.empty_like(x) if keep_h else None
    h_buf = None if keep_h else torch.empty_like(v)
    d = torch.empty_like(v)
    below = torch.empty_like(v)  # 1 - s[t] = (h < v_th) as 0./1.
    v_out = torch.empty_like(v)
    v_cur = v
    for t in range(steps):
        h = h_seq[t] if h_seq is not None else h_buf
        if decay_input:
            torch.sub(x[t], v_cur, out=d)
            d.div_(tau)
            torch.add(v_cur, d, out=h)
        else:
            torch.div(v_cur, tau, out=d)
            torch.sub(v_cur, d, out=d)
            torch.add(d, x[t], out=h)
        torch.ge(h, v_threshold, out=spikes[t])
        torch.lt(h, v_threshold, out=below)
        torch.mul(h, below, out=v_out)
        v_cur = v_out
    if steps == 0:
        v_out.copy_(v)
    return spikes, v_out, h_seq


def _surrogate_grad(z: Tensor, surrogate_id: int, alpha: float) -> Tensor:
    """spikingjelly's ``_surrogate_gradient`` (same kernels, same order) at ``z = h - v_th``."""
    if surrogate_id == SIGMOID:
        s = torch.sigmoid(alpha * z)
        return (1 - s) * s * alpha
    z = z * (math.pi / 2 * alpha)
    return (alpha / 2) / (1 + z * z)


def _surrogate_grad_into(h: Tensor, v_threshold: float, surrogate_id: int, alpha: float, out: Tensor,
                         tmp: Tensor) -> Tensor:
    """:func:`_surrogate_grad` at ``h - v_th`` written into ``out`` (same kernels and rounding, in place)."""
    torch.sub(h, v_threshold, out=out)
    if surrogate_id == SIGMOID:
        out.mul_(alpha).sigmoid_()  # s = sigmoid(alpha * z)
        torch.neg(out, out=tmp).add_(1)  # 1 - s (== -s + 1 exactly)
        return out.mul_(tmp).mul_(alpha)  # (1 - s) * s * alpha
    out.mul_(math.pi / 2 * alpha)  # z
    torch.mul(out, out, out=out)
    out.add_(1)
    return out.reciprocal_().mul_(alpha / 2)  # float / tensor is reciprocal(tensor) * float in torch


def _backward_eager(g_spikes: Optional[Tensor], g_v: Optional[Tensor], h_seq: Tensor, tau: float,
                    v_threshold: float, decay_input: bool, detach_reset: bool, surrogate_id: int,
                    alpha: float) -> tuple[Tensor, Tensor]:
    """Reverse loop over T; per-step buffers of size N stay in cache (whole-[T, N] temporaries do not)."""
    steps = h_seq.shape[0]
    gx = torch.empty_like(h_seq)
    sg = torch.empty_like(h_seq[0])
    tmp = torch.empty_like(h_seq[0])
    below = torch.empty_like(h_seq[0])
    gh = torch.empty_like(h_seq[0])
    carry_buf = torch.empty_like(h_seq[0])
    carry = g_v  # grad into v[t]; None means zero
    for t in range(steps - 1, -1, -1):
        h = h_seq[t]
        if g_spikes is not None or (carry is not None and not detach_reset):
            _surrogate_grad_into(h, v_threshold, surrogate_id, alpha, sg, tmp)
        if not detach_reset and carry is not None:  # gs = gS - gV * h
            torch.mul(carry, h, out=tmp)
            if g_spikes is not None:
                torch.sub(g_spikes[t], tmp, out=tmp)
            else:
                tmp.neg_()
            torch.mul(tmp, sg, out=gh)
        elif g_spikes is not None:
            torch.mul(g_spikes[t], sg, out=gh)
        else:
            gh.zero_()
        if carry is not None:  # + gV * (1 - s)
            torch.lt(h, v_threshold, out=below)
            torch.mul(carry, below, out=tmp)
            gh.add_(tmp)
        if decay_input:
            torch.div(gh, tau, out=gx[t])
            torch.sub(gh, gx[t], out=carry_buf)
        else:
            gx[t].copy_(gh)
            torch.div(gh, tau, out=tmp)
            torch.sub(gh, tmp, out=carry_buf)
        carry = carry_buf
    if carry is None:
        carry = torch.zeros_like(h_seq[0])
    elif carry is g_v:
        carry = carry.clone()
    return gx, carry


# --------------------------------------------------------------------------------------------------
# torch.compile kernels: the reference formulas unrolled over T; inductor fuses them into one loop.
# --------------------------------------------------------------------------------------------------


def _forward_math(x: Tensor, v: Tensor, tau: float, v_threshold: float, decay_input: bool,
                  keep_h: bool) -> tuple[Tensor, Tensor, Optional[Tensor]]:
    spikes, charged = [], []
    for t in range(x.shape[0]):
        h = v + (x[t] - v) / tau if decay_input else v - v / tau + x[t]
        below = (h < v_threshold).to(h.dtype)
        spikes.append((h >= v_threshold).to(h.dtype))
        v = h * below
        charged.append(h)
    return torch.stack(spikes), v, (torch.stack(charged) if keep_h else None)


def _backward_math(g_spikes: Optional[Tensor], g_v: Optional[Tensor], h_seq: Tensor, tau: float,
                   v_threshold: float, decay_input: bool, detach_reset: bool, surrogate_id: int,
                   alpha: float) -> tuple[Tensor, Tensor]:
    """Same operations as :func:`_backward_eager` (``None`` grads are branches at trace time)."""
    grads = []
    carry = g_v
    for t in range(h_seq.shape[0] - 1, -1, -1):
        h = h_seq[t]
        sg = _surrogate_grad(h - v_threshold, surrogate_id, alpha)
        if not detach_reset and carry is not None:
            gh = (-(carry * h) if g_spikes is None else g_spikes[t] - carry * h) * sg
        elif g_spikes is not None:
            gh = g_spikes[t] * sg
        else:
            gh = torch.zeros_like(h)
        if carry is not None:
            gh = gh + carry * (h < v_threshold).to(h.dtype)
        q = gh / tau
        grads.append(q if decay_input else gh)
        carry = gh - q
    grads.reverse()
    if carry is None:
        carry = torch.zeros_like(h_seq[0])
    return torch.stack(grads), carry


_compiled: dict[tuple[Any, ...], Callable[..., Any]] = {}
_compile_state: dict[str, Any] = {"ok": None, "error": "", "kernels": 0, "bitwise_backward": None}
# ok: None = untried, True = compiled kernels in use, False = disabled (eager from then on)


def _compiled_kernel(kind: str, key: tuple[Any, ...]) -> Callable[..., Any]:
    """One ``torch.compile`` wrapper per (kind, T, scalars, flags). Each gets its own copy of the code object,
    so Dynamo's per-code-object cache and recompile limit apply per configuration, not to all LIF layers
    together; the feature size N is dynamic, so batch size and layer width do not recompile."""
    fn = _compiled.get((kind, key))
    if fn is None:
        base = _forward_math if kind == "forward" else _backward_math
        code = base.__code__.replace(co_name=f"{base.__name__}_{len(_compiled)}")
        clone = types.FunctionType(code, base.__globals__, code.co_name, base.__defaults__, base.__closure__)
        fn = torch.compile(clone, dynamic=True, fullgraph=True)
        _compiled[(kind, key)] = fn
        _compile_state["kernels"] = len(_compiled)
    return fn


def _compile_disable(error: str) -> None:
    _compile_state["ok"] = False
    _compile_state["error"] = error
    warnings.warn(f"fused LIF: torch.compile backend disabled, using eager kernels ({error})", RuntimeWarning,
                  stacklevel=3)


def compile_status() -> dict[str, Any]:
    """Whether the compile backend has been tried, works, how many kernels it built, and why not."""
    return dict(_compile_state)


_calls: dict[tuple[Any, ...], int] = {}


def _use_compile(kind: str, key: tuple[Any, ...]) -> bool:
    """``compile``: always; ``auto``: once this kernel configuration has run ``AUTO_COMPILE_AFTER`` times
    (so short runs and unit tests never wait for the compiler, and long training loops get the fast kernel)."""
    if _compile_state["ok"] is False or _backend == "eager":
        return False
    if _backend == "compile" or (kind, key) in _compiled:
        return True
    count = _calls.get((kind, key), 0) + 1
    _calls[(kind, key)] = count
    return count > AUTO_COMPILE_AFTER


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


_verified: set[tuple[Any, ...]] = set()


def _forward(x: Tensor, v: Tensor, tau: float, v_threshold: float, decay_input: bool,
             keep_h: bool) -> tuple[Tensor, Tensor, Optional[Tensor]]:
    key = (x.shape[0], tau, v_threshold, decay_input, keep_h)
    if x.shape[1] > 0 and _use_compile("forward", key):
        try:
            out = _compiled_kernel("forward", key)(x, v, tau, v_threshold, decay_input, keep_h)
        except Exception as exc:  # noqa: BLE001 - any compiler failure means: use eager
            _compile_disable(_describe(exc))
        else:
            if ("forward", key) not in _verified:  # first use of a kernel: check it against eager, bit for bit
                ref = _forward_eager(x, v, tau, v_threshold, decay_input, keep_h)
                if not all((a is None and b is None) or (a is not None and b is not None and _bitwise_equal(a, b))
                           for a, b in zip(out, ref)):
                    _compile_disable("compiled forward is not bit-identical to the eager kernel")
                    return ref
                _verified.add(("forward", key))
                _compile_state["ok"] = True
            return out
    return _forward_eager(x, v, tau, v_threshold, decay_input, keep_h)


def _backward(g_spikes: Optional[Tensor], g_v: Optional[Tensor], h_seq: Tensor, tau: float, v_threshold: float,
              decay_input: bool, detach_reset: bool, surrogate_id: int, alpha: float) -> tuple[Tensor, Tensor]:
    params = (tau, v_threshold, decay_input, detach_reset, surrogate_id, alpha)
    key = (h_seq.shape[0], *params, g_spikes is None, g_v is None)
    if h_seq.shape[1] > 0 and _use_compile("backward", key):
        try:
            out = _compiled_kernel("backward", key)(g_spikes, g_v, h_seq, *params)
        except Exception as exc:  # noqa: BLE001
            _compile_disable(_describe(exc))
        else:
            if ("backward", key) not in _verified:
                ref = _backward_eager(g_spikes, g_v, h_seq, *params)
                bitwise = all(_bitwise_equal(a, b) for a, b in zip(out, ref))
                close = all(torch.allclose(a, b, rtol=1e-6, atol=1e-6 * float(b.abs().max()) if b.numel() else 0.0)
                            for a, b in zip(out, ref))
                if not close:
                    _compile_disable("compiled backward differs from the eager kernel by more than 1e-6")
                    return ref
                _compile_state["bitwise_backward"] = bitwise and _compile_state["bitwise_backward"] is not False
                _verified.add(("backward", key))
            return out
    return _backward_eager(g_spikes, g_v, h_seq, *params)


def _bitwise_equal(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a.view(torch.int32), b.view(torch.int32))


class _FusedLIF(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, v: Tensor, tau: float, v_threshold: float, decay_input: bool,
                detach_reset: bool, surrogate_id: int, alpha: float, keep_h: bool) -> tuple[Tensor, Tensor]:
        # keep_h is decided by the caller: inside forward grad mode is always off, and needs_input_grad
        # is True under no_grad for inputs that require grad.
        spikes, v_out, h_seq = _forward(x, v, tau, v_threshold, decay_input, keep_h)
        if keep_h:
            ctx.save_for_backward(h_seq)
        ctx.params = (tau, v_threshold, decay_input, detach_reset, surrogate_id, alpha)
        ctx.set_materialize_grads(False)
        return spikes, v_out

    @staticmethod
    def backward(ctx: Any, g_spikes: Optional[Tensor], g_v: Optional[Tensor]) -> tuple[Any, ...]:
        (h_seq,) = ctx.saved_tensors
        if g_spikes is None and g_v is None:
            return (None,) * 9
        if g_spikes is not None:
            g_spikes = g_spikes.contiguous()
        if g_v is not None:
            g_v = g_v.contiguous()
        gx, gv = _backward(g_spikes, g_v, h_seq, *ctx.params)
        return gx, (gv if ctx.needs_input_grad[1] else None), None, None, None, None, None, None, None


def fused_lif_multi_step(x_seq: Tensor, v: Tensor, tau: float = 2.0, decay_input: bool = True,
                         v_threshold: float = 1.0, surrogate_function: Any = None,
                         detach_reset: bool = False) -> tuple[Tensor, Tensor]:
    """Hard-reset-to-0 LIF over ``x_seq [T, ...]`` from state ``v [...]``: returns ``(spikes, v_final)``.

    Same signature order and results as ``spikingjelly.activation_based.functional.lif_multi_step`` with
    ``v_reset=0.0``; ``surrogate_function`` must be spikingjelly's Sigmoid or ATan (``None`` = Sigmoid(4)).
    """
    spec = (SIGMOID, 4.0) if surrogate_function is None else surrogate_spec(surrogate_function)
    if spec is None:
        raise TypeError("fused LIF supports spikingjelly's Sigmoid and ATan surrogates only")
    if x_seq.dtype != torch.float32 or v.dtype != torch.float32:
        raise TypeError("fused LIF runs on float32 tensors only")
    shape = x_seq.shape
    x_flat = x_seq.reshape(shape[0], -1)
    if not x_flat.is_contiguous():
        x_flat = x_flat.contiguous()
    v_flat = v.expand(shape[1:]).reshape(-1) if v.shape != shape[1:] else v.reshape(-1)
    keep_h = torch.is_grad_enabled() and (x_flat.requires_grad or v_flat.requires_grad)
    spikes, v_out = _FusedLIF.apply(x_flat, v_flat, float(tau), float(v_threshold), bool(decay_input),
                                    bool(detach_reset), spec[0], spec[1], keep_h)
    return spikes.view(shape), v_out.view(shape[1:])


_ZEROS: dict[tuple[int, torch.device], Tensor] = {}


def _zero_state(numel: int, device: torch.device) -> Tensor:
    """A shared, never-written zero membrane of ``numel`` float32s (saves an allocation and a fill per call)."""
    key = (numel, device)
    zeros = _ZEROS.get(key)
    if zeros is None:
        if len(_ZEROS) >= 64:
            _ZEROS.clear()
        zeros = _ZEROS[key] = torch.zeros(numel, dtype=torch.float32, device=device)
    return zeros


class FusedLIFNode(neuron.LIFNode):
    """``spikingjelly.activation_based.neuron.LIFNode`` with a fused multi-step path (see module doc).

    Same constructor, state (``self.v``), ``reset()``/``functional.reset_net`` behaviour and outputs;
    it is a ``LIFNode`` (so ``isinstance(m, BaseNode)`` holds for energy/spike counting).
    """

    def fusable(self, x_seq: Tensor) -> bool:
        return (
            self.v_reset == 0.0
            and self.v_reset is not None
            and not self.store_v_seq
            and self._neuron_precision is None
            and x_seq.dtype == torch.float32
            and x_seq.dim() >= 2
            and surrogate_spec(self.surrogate_function) is not None
            and isinstance(self.tau, float)
            and isinstance(self.v_threshold, (int, float))
            and type(self).single_step_functional_forward is FusedLIFNode.single_step_functional_forward
            and type(self).multi_step_functional_forward is FusedLIFNode.multi_step_functional_forward
        )

    def multi_step_forward(self, x_seq: Tensor, *args: Tensor, **kwargs: object) -> Tensor:
        if args or kwargs or not self.fusable(x_seq):
            return super().multi_step_forward(x_seq, *args, **kwargs)
        v0 = self._memories["v"]
        if isinstance(v0, float) and v0 == 0.0:  # fresh after reset(): the state is the scalar sentinel
            v0 = _zero_state(x_seq[0].numel(), x_seq.device).view(x_seq.shape[1:])
        else:
            v0 = self.materialize_states((x_seq,), (v0,), "m")[0]
        spikes, v = fused_lif_multi_step(x_seq, v0, self.tau, self.decay_input, float(self.v_threshold),
                                         self.surrogate_function, self.detach_reset)
        self._memories["v"] = v
        self.v_seq = None
        return spikes


def _lif_settings(node: neuron.LIFNode) -> dict[str, Any]:
    return {
        "tau": node.tau,
        "decay_input": node.decay_input,
        "v_threshold": node.v_threshold,
        "v_reset": node.v_reset,
        "surrogate_function": node.surrogate_function,
        "detach_reset": node.detach_reset,
        "step_mode": node.step_mode,
        "store_v_seq": node.store_v_seq,
    }


def swap_lif_nodes(net: torch.nn.Module, fused: bool = True) -> int:
    """Replace every plain ``LIFNode`` in ``net`` by a :class:`FusedLIFNode` with the same settings
    (``fused=False``: the reverse). Returns the number of modules replaced. Their state is not carried
    over (reset the net before the next forward; ``Classifier.logits`` does), nor are hooks registered
    on them. spikingjelly's ``reset_net`` cache for ``net`` is invalidated, so it resets the new modules.
    """
    source, target = (neuron.LIFNode, FusedLIFNode) if fused else (FusedLIFNode, neuron.LIFNode)
    replaced = []
    for parent_name, parent in net.named_modules():
        for child_name, child in parent.named_children():
            if type(child) is source:
                replaced.append((parent, child_name, child))
    for parent, child_name, child in replaced:
        new = target(**_lif_settings(child))
        new._neuron_precision = child._neuron_precision
        new.train(child.training)
        setattr(parent, child_name, new)
    if replaced:
        from spikingjelly.activation_based.functional import net_config

        net_config.invalidate_reset_cache(net)
    return len(replaced)
