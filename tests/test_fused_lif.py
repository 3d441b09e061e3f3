"""zoo.fused_lif.FusedLIFNode against spikingjelly's LIFNode: bit-identical forward, equal gradients."""
from __future__ import annotations

import copy
from dataclasses import replace
import itertools
import shutil
import warnings
import zlib

import pytest
import torch
from spikingjelly.activation_based import functional, neuron, surrogate

from snnsec.classifier import Classifier
from snnsec.zoo import create_model
from snnsec.zoo import fused_lif
from snnsec.zoo.base import EMBEDDED_INPUT
from snnsec.zoo.fused_lif import FusedLIFNode, swap_lif_nodes


@pytest.fixture(autouse=True)
def eager_backend():
    """Every test runs on the eager kernels unless it says otherwise; global backend state is restored."""
    saved = (fused_lif.get_backend(), dict(fused_lif._compile_state), torch.get_num_threads())
    fused_lif.set_backend("eager")
    torch.set_num_threads(1)  # these tensors are small: one thread is faster, and steady on a shared CPU
    yield
    torch.set_num_threads(saved[2])
    fused_lif.set_backend(saved[0])
    fused_lif._compile_state.clear()
    fused_lif._compile_state.update(saved[1])


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)


def _pair(**kwargs):
    kwargs.setdefault("step_mode", "m")
    return neuron.LIFNode(**kwargs), FusedLIFNode(**kwargs)


def _run_both(ref, fused, x, extra_steps=True, seed=0):
    """Two consecutive calls (state carried over), loss on spikes of both and on the final v."""
    gen = torch.Generator().manual_seed(seed)
    g1 = torch.randn(x.shape, generator=gen)
    g2 = torch.randn(x.shape, generator=gen)
    gv = torch.randn(x.shape[1:], generator=gen)
    results = []
    for node in (ref, fused):
        functional.reset_net(node)
        xr = x.clone().requires_grad_(True)
        s1 = node(xr)
        s2 = node(xr * 0.75) if extra_steps else s1
        loss = (s1 * g1).sum() + (s2 * g2).sum() + (node.v * gv).sum()
        loss.backward()
        results.append((s1.detach(), s2.detach(), node.v.detach().clone(), xr.grad.detach().clone()))
    return results


SURROGATES = {"sigmoid4": lambda: surrogate.Sigmoid(alpha=4.0), "atan2": lambda: surrogate.ATan(alpha=2.0)}


@pytest.mark.parametrize(
    "tau,v_threshold,decay_input,detach_reset,surrogate_name",
    list(itertools.product((1.5, 2.0), (1.0, 0.5), (True, False), (True, False), sorted(SURROGATES))),
)
def test_matches_spikingjelly(tau, v_threshold, decay_input, detach_reset, surrogate_name):
    torch.manual_seed(zlib.crc32(repr((tau, v_threshold, decay_input, detach_reset, surrogate_name)).encode()))
    ref, fused = _pair(tau=tau, v_threshold=v_threshold, decay_input=decay_input, detach_reset=detach_reset,
                       surrogate_function=SURROGATES[surrogate_name]())
    x = torch.randn(8, 4, 3, 5, 5) * 1.5 + 0.4
    (s1, s2, v, gx), (f1, f2, fv, fgx) = _run_both(ref, fused, x)
    assert 0.05 < s1.mean() < 0.95  # the neurons do spike and do not always spike
    assert torch.equal(_bits(s1), _bits(f1)) and torch.equal(_bits(s2), _bits(f2))
    assert torch.equal(_bits(v), _bits(fv))
    assert gx.abs().max() > 0
    torch.testing.assert_close(fgx, gx, rtol=1e-6, atol=1e-6 * float(gx.abs().max()))
    assert torch.equal(fgx, gx)  # the backward runs the same kernels in the same order: identical in practice


def test_no_grad_and_inference_mode_match():
    ref, fused = _pair(tau=1.5, detach_reset=True, surrogate_function=surrogate.Sigmoid(4.0))
    x = torch.randn(6, 2, 33) * 2
    for ctx in (torch.no_grad, torch.inference_mode):
        with ctx():
            functional.reset_net(ref)
            functional.reset_net(fused)
            assert torch.equal(ref(x), fused(x))
            assert torch.equal(ref.v, fused.v)


def test_inf_nan_and_signed_zero_inputs_bit_identical():
    x = torch.randn(5, 8)
    x[1, 0], x[2, 1], x[0, 2], x[3, 3] = float("inf"), float("-inf"), float("nan"), -0.0
    x[:, 4] = -0.0
    ref, fused = _pair(tau=1.5)
    assert torch.equal(_bits(ref(x)), _bits(fused(x)))
    assert torch.equal(_bits(ref.v), _bits(fused.v))


def test_no_grad_with_input_requiring_grad_saves_nothing():
    ref, fused = _pair(tau=2.0)
    x = torch.randn(4, 3, 5, requires_grad=True)
    with torch.no_grad():
        out = fused(x)
    assert out.grad_fn is None and not out.requires_grad
    assert torch.equal(out, ref(x).detach())


def test_grad_through_spikes_only_and_through_v_only():
    ref, fused = _pair(tau=2.0, detach_reset=False, surrogate_function=surrogate.ATan(2.0))
    x = torch.randn(5, 3, 7) * 1.5 + 0.5
    for use_spikes in (True, False):
        grads = []
        for node in (ref, fused):
            functional.reset_net(node)
            xr = x.clone().requires_grad_(True)
            s = node(xr)
            (s.sum() if use_spikes else node.v.sum()).backward()
            grads.append(xr.grad)
        torch.testing.assert_close(grads[1], grads[0], rtol=1e-6, atol=1e-7)


def test_reset_net_restores_initial_state():
    _, fused = _pair(tau=2.0, surrogate_function=surrogate.Sigmoid(4.0))
    x = torch.randn(4, 2, 9) + 1.0
    first = fused(x)
    assert isinstance(fused.v, torch.Tensor) and fused.v.shape == (2, 9)
    second = fused(x)  # state carried over: different spikes
    assert not torch.equal(first, second)
    functional.reset_net(fused)
    assert fused.v == 0.0 and not isinstance(fused.v, torch.Tensor)
    assert torch.equal(fused(x), first)
    net = torch.nn.Sequential(torch.nn.Identity(), fused)
    functional.reset_net(net)
    assert fused.v == 0.0


def test_unsupported_settings_fall_back_to_spikingjelly():
    x = torch.randn(5, 2, 6) * 2
    cases = [
        dict(v_reset=None),  # soft reset
        dict(store_v_seq=True),
        dict(surrogate_function=surrogate.PiecewiseQuadratic()),
        dict(v_reset=0.5),
    ]
    for kwargs in cases:
        ref, fused = _pair(tau=2.0, **kwargs)
        assert not fused.fusable(x)
        assert torch.equal(ref(x), fused(x)) and torch.equal(ref.v, fused.v)
    ref, fused = _pair(tau=2.0)
    x64 = x.double()
    assert not fused.fusable(x64)
    assert torch.equal(ref(x64), fused(x64))
    ref, fused = neuron.LIFNode(tau=2.0, step_mode="s"), FusedLIFNode(tau=2.0, step_mode="s")
    for t in range(x.shape[0]):
        assert torch.equal(ref(x[t]), fused(x[t]))


def test_functional_entry_point_matches_lif_multi_step():
    x = torch.randn(7, 3, 4) * 1.5
    v0 = torch.rand(3, 4) * 0.5
    spikes, v, _ = functional.lif_multi_step(x, v0, 1.5, True, 1.0, 0.0, surrogate.Sigmoid(4.0), True)
    fs, fv = fused_lif.fused_lif_multi_step(x, v0, 1.5, True, 1.0, surrogate.Sigmoid(4.0), True)
    assert torch.equal(spikes, fs) and torch.equal(_bits(v), _bits(fv))
    with pytest.raises(TypeError):
        fused_lif.fused_lif_multi_step(x, v0, surrogate_function=surrogate.PiecewiseQuadratic())


@pytest.mark.parametrize("model", ["spiking-cnn", "spike-driven-transformer"])
def test_inside_zoo_model(model):
    torch.manual_seed(0)
    spec = replace(EMBEDDED_INPUT, frames=4)
    fused_net = create_model(model, spec, "tiny")  # the zoo builds fused neurons
    net = copy.deepcopy(fused_net)
    n = swap_lif_nodes(net, fused=False)  # the spikingjelly reference
    assert n > 0 and not any(type(m) is neuron.LIFNode for m in fused_net.modules())
    assert not any(isinstance(m, FusedLIFNode) for m in net.modules())
    x = (torch.rand(3, spec.frames, 2, 34, 34) < 0.2).float() * 2
    y = torch.tensor([0, 1, 2])
    outs = []
    fired = []
    for m in fused_net.modules():
        if isinstance(m, FusedLIFNode):
            m.register_forward_hook(lambda _m, _i, out: fired.append(float(out.detach().sum())))
    for candidate in (net, fused_net):
        clf = Classifier(candidate)
        xr = x.clone().requires_grad_(True)
        logits = clf.logits(xr)
        torch.nn.functional.cross_entropy(logits, y).backward()
        outs.append((logits.detach(), xr.grad, [p.grad for p in candidate.parameters()]))
    (logits, gx, gps), (f_logits, f_gx, f_gps) = outs
    assert len(fired) == n and sum(f > 0 for f in fired) >= 2  # the fused neurons ran, and spiked
    assert torch.equal(logits, f_logits)
    torch.testing.assert_close(f_gx, gx, rtol=1e-6, atol=1e-6 * float(gx.abs().max()))
    for gp, f_gp in zip(gps, f_gps):
        if gp is not None:
            torch.testing.assert_close(f_gp, gp, rtol=1e-6, atol=1e-6 * float(gp.abs().max()) + 1e-12)
    # after the call the Classifier has reset every neuron, fused ones included
    assert all(m.v == 0.0 for m in fused_net.modules() if isinstance(m, FusedLIFNode))
    assert swap_lif_nodes(fused_net, fused=False) == n


def test_compile_failure_falls_back_to_eager(monkeypatch):
    def broken(kind, key):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(fused_lif, "_compiled_kernel", broken)
    fused_lif.set_backend("compile")
    fused_lif._compile_state.update(ok=None, error="")
    ref, fused = _pair(tau=2.0, surrogate_function=surrogate.ATan(2.0), detach_reset=True)
    x = torch.randn(4, 3, 5) * 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert torch.equal(ref(x), fused(x))
    assert fused_lif.compile_status()["ok"] is False
    assert any("torch.compile backend disabled" in str(w.message) for w in caught)


def test_auto_backend_stays_eager_for_short_runs(monkeypatch):
    calls = []
    monkeypatch.setattr(fused_lif, "_compiled_kernel", lambda kind, key: calls.append(kind))
    monkeypatch.setattr(fused_lif, "AUTO_COMPILE_AFTER", 1000)
    fused_lif.set_backend("auto")
    fused_lif._compile_state.update(ok=None, error="")
    _, fused = _pair(tau=2.0)
    for _ in range(3):
        functional.reset_net(fused)
        fused(torch.randn(3, 2, 4, requires_grad=True)).sum().backward()
    assert calls == []


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("gcc") is None, reason="no C++ compiler")
def test_compile_backend_matches_spikingjelly():
    """torch.compile (inductor C++) kernels: bit-identical forward, gradients equal (compiles 2 kernels)."""
    fused_lif.set_backend("compile")
    fused_lif._compile_state.update(ok=None, error="")
    ref, fused = _pair(tau=1.5, v_threshold=1.0, detach_reset=True, surrogate_function=surrogate.Sigmoid(4.0))
    x = torch.randn(6, 2, 3, 11) * 1.5 + 0.4
    (s1, s2, v, gx), (f1, f2, fv, fgx) = _run_both(ref, fused, x)
    status = fused_lif.compile_status()
    assert status["ok"] is True, status
    assert torch.equal(_bits(s1), _bits(f1)) and torch.equal(_bits(s2), _bits(f2))
    assert torch.equal(_bits(v), _bits(fv))
    torch.testing.assert_close(fgx, gx, rtol=1e-6, atol=1e-6 * float(gx.abs().max()))
