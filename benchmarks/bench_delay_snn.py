"""On-demand benchmark of delay-snn against the SNN-delays layer stack (not a test).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_delay_snn.py                # SHD config, batch 256
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_delay_snn.py --batch 32 --repeats 2   # a few minutes

Both sides run the paper's SHD network (2 x 256 hidden, max_delay 25, 140 inputs, 20 classes, T = 100 steps)
with the same weights, on random Bernoulli frames (``--density``):

* ``snnsec``: ``create_model("delay-snn", SHD_INPUT, "shd")`` called through ``Classifier.logits``; a training
  step is cross-entropy + backward + the model's three Adam optimizers (``snnsec.training.Optimization``,
  with its ``after_step`` clamp);
* ``reference``: the SNN-delays stack rebuilt step for step as ``SnnDelays.forward`` runs it (``snn_delays.py``):
  permute, pad, ``Dcls1d``, permute, ``BatchNorm1d`` via ``unsqueeze(3)`` / ``squeeze()``, ``LIFNode`` with
  ``store_v_seq=True`` in every layer, ``Dropout``; readout ``v_seq``; loss and optimizers as ``model.py``
  (cross-entropy of ``sum_t softmax(v_t)`` against one-hot labels, Adam on weights + BN param groups, Adam on
  positions, then ``reset_net`` and ``clamp_parameters``). Its inference is the state ``eval_model`` sets up
  (``SIG`` 0, DCLS 'max', positions rounded in place), prepared once before timing, as ``eval_model`` does once
  per pass over a dataset.

Each side runs in its own fresh subprocess (peak RSS is per process): inference first (median of ``--repeats``
calls after ``--warmup``), then training steps; peak memory = peak RSS minus the RSS before the model was built.
A check worker verifies on a small batch that both sides give the same eval outputs and the same training
loss (same seed, so the same dropout masks). Results: ``reports/benchmarks/delay_snn.md``; ratios are
snnsec / reference (speed: > 1 is faster; memory: < 1 is smaller).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_models' helpers, beside this file

from bench_models import _peak_rss_mib, _rss_mib, machine_info  # noqa: E402

DEFAULT_OUT = ROOT / "reports" / "benchmarks" / "delay_snn.md"


def _run_worker(kind: str, args: dict[str, Any], timeout: float) -> dict[str, Any]:
    """``worker_<kind>(args)`` in a fresh process of this script: its JSON result, or ``{"error": ...}``."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, json.dumps(args)]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(args["threads"]))}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"error": " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def reference_stack(config: Any, spec: Any) -> Any:
    """The SNN-delays network of ``snn_delays.py`` (LIF, batchnorm, no bias, gauss DCLS), its forward verbatim."""
    import torch
    import torch.nn.functional as F
    from DCLS.construct.modules import Dcls1d
    from spikingjelly.activation_based import layer, neuron, surrogate
    from torch import nn

    md, tau = config.max_delay, (config.tau_ms + 1e-9) / config.time_step_ms
    left, right = md - 1, (md - 1) // 2
    atan = surrogate.ATan(alpha=5.0)

    class Reference(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers: list[nn.Module] = []
            for i in range(config.layers):
                layers += [Dcls1d(spec.width if i == 0 else config.hidden, config.hidden, kernel_count=1, groups=1,
                                  dilated_kernel_size=md, bias=False, version="gauss"),
                           layer.BatchNorm1d(config.hidden, step_mode="m"),
                           neuron.LIFNode(tau=tau, v_threshold=1.0, surrogate_function=atan, detach_reset=True,
                                          step_mode="m", decay_input=False, store_v_seq=True),
                           layer.Dropout(config.dropout, step_mode="m")]
            layers += [Dcls1d(config.hidden, spec.num_classes, kernel_count=1, groups=1, dilated_kernel_size=md,
                              bias=False, version="gauss"),
                       neuron.LIFNode(tau=tau, v_threshold=1e9, surrogate_function=atan, detach_reset=True,
                                      step_mode="m", decay_input=False, store_v_seq=True)]
            self.model = nn.Sequential(*layers)
            self.blocks = [list(self.model[4 * i: 4 * i + 4]) for i in range(config.layers)]
            self.final = list(self.model[-2:])

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (time, batch, neurons)
            for dcls, bn, lif, dropout in self.blocks:
                x = x.permute(1, 2, 0)
                x = F.pad(x, (left, right), "constant", 0)
                x = dcls(x)
                x = x.permute(2, 0, 1)
                x = bn(x.unsqueeze(3)).squeeze()
                spikes = lif(x)
                x = dropout(spikes)
            x = x.permute(1, 2, 0)
            x = F.pad(x, (left, right), "constant", 0)
            out = self.final[0](x)
            out = out.permute(2, 0, 1)
            out = self.final[1](out)
            return self.final[1].v_seq

        def dcls(self) -> list[Any]:
            return [m for m in self.model if isinstance(m, Dcls1d)]

    return Reference()


def _setup(args: dict[str, Any]) -> dict[str, Any]:
    """Both networks with the snnsec model's initial weights, frames ``[B, T, 1, 1, 140]`` and labels."""
    import torch

    torch.set_num_threads(args["threads"])
    from snnsec.zoo import create_model
    from snnsec.zoo.delay_snn import CONFIGS, SHD_INPUT

    gen = torch.Generator().manual_seed(0)
    spec = SHD_INPUT
    x = (torch.rand(args["batch"], spec.frames, 1, 1, spec.width, generator=gen) < args["density"]).float()
    y = torch.randint(0, spec.num_classes, (args["batch"],), generator=gen)
    rss = _rss_mib()
    torch.manual_seed(0)
    net = create_model("delay-snn", spec, "shd")
    if args.get("side", "snnsec") == "reference" or args.get("both"):
        ref = reference_stack(CONFIGS["shd"], spec)
        ref.load_state_dict(net.state_dict())  # same keys: the reference's nn.Sequential layout
        for dcls in ref.dcls():
            dcls.SIG.requires_grad = False
    else:
        ref = None
    return {"net": net, "ref": ref, "x": x, "y": y, "rss": rss, "spec": spec}


def _reference_loss(ref: Any, x: Any, y: Any) -> Any:
    import torch.nn.functional as F
    from torch import nn

    out = ref(x.flatten(2).transpose(0, 1).contiguous())
    m = nn.Softmax(dim=2)(out).sum(0)
    return nn.CrossEntropyLoss()(m, F.one_hot(y, out.shape[-1]).float()), m


def _reference_eval_state(ref: Any) -> None:
    """What ``eval_model`` does before its loop: SIG *= 0, version 'max', ``round_pos`` (in place)."""
    import torch

    with torch.no_grad():
        for dcls in ref.dcls():
            dcls.SIG *= 0
            dcls.version = dcls.DCK.version = "max"
            dcls.P.round_()
            dcls.clamp_parameters()


def _reference_optimizers(ref: Any) -> list[Any]:
    """``Model.optimizers``: Adam over weights (weight decay 1e-5), PLIF (none here) and BN (no decay); Adam on P."""
    import torch

    weights = [d.weight for d in ref.dcls()]
    bn = [p for m in ref.model if type(m).__name__ == "BatchNorm1d" for p in m.parameters()]
    return [torch.optim.Adam([{"params": weights, "lr": 1e-3, "weight_decay": 1e-5},
                              {"params": [], "lr": 1e-3, "weight_decay": 1e-5},
                              {"params": bn, "lr": 1e-3, "weight_decay": 0}]),
            torch.optim.Adam([d.P for d in ref.dcls()], lr=0.1, weight_decay=0)]


def _side(name: str, s: dict[str, Any]) -> tuple[Any, Any, Any]:
    """``(infer, train_step, to_train)`` closures of one side: ``infer`` runs in eval mode (for the reference: the
    state ``eval_model`` prepares), ``to_train()`` switches to training (the reference: its checkpoint reloaded)."""
    import torch
    import torch.nn.functional as F
    from spikingjelly.activation_based import functional

    from snnsec.classifier import Classifier
    from snnsec.training import Optimization, TrainConfig

    x, y = s["x"], s["y"]
    if name == "snnsec":
        net = s["net"]
        clf = Classifier(net)
        net.eval()
        optimization = Optimization(net, TrainConfig(lr=1e-3, weight_decay=1e-5, epochs=1), 1)

        def infer() -> None:
            with torch.no_grad():
                clf.logits(x)

        def train_step() -> None:
            optimization.zero_grad()
            F.cross_entropy(clf.logits(x), y).backward()
            optimization.step()

        return infer, train_step, net.train
    ref = s["ref"]
    saved = {k: v.clone() for k, v in ref.state_dict().items()}
    ref.eval()
    _reference_eval_state(ref)
    optimizers = _reference_optimizers(ref)

    def infer() -> None:
        with torch.no_grad():
            _reference_loss(ref, x, y)
            functional.reset_net(ref)

    def train_step() -> None:
        for opt in optimizers:
            opt.zero_grad()
        loss, _ = _reference_loss(ref, x, y)
        loss.backward()
        for opt in optimizers:
            opt.step()
        functional.reset_net(ref)  # reset_model(train=True)
        for dcls in ref.dcls():
            dcls.clamp_parameters()

    def to_train() -> None:
        ref.load_state_dict(saved)  # eval_model reloads its temporary checkpoint
        for dcls in ref.dcls():
            dcls.version = dcls.DCK.version = "gauss"
        ref.train()

    return infer, train_step, to_train


def worker_memory(args: dict[str, Any]) -> dict[str, Any]:
    """Peak RSS of one side (``args["side"]``) alone in this fresh process: inference, then one training step."""
    s = _setup(args)
    if args["side"] == "reference":
        del s["net"]
    infer, train_step, to_train = _side(args["side"], s)
    infer()
    peak_infer = _peak_rss_mib() - s["rss"]
    to_train()
    train_step()
    return {**args, "peak_infer_mib": peak_infer, "peak_train_mib": _peak_rss_mib() - s["rss"]}


def worker_timing(args: dict[str, Any]) -> dict[str, Any]:
    """Both sides in one process, same weights, calls interleaved (a shared CPU's load hits both alike):
    per side and mode, the median and the fastest of ``repeats`` timed calls after ``warmup`` untimed ones."""
    import copy

    s = _setup({**args, "both": True})
    sides = {"snnsec": _side("snnsec", s), "reference": _side("reference", {**s, "ref": copy.deepcopy(s["ref"])})}
    times: dict[str, list[float]] = {f"{n}_{m}": [] for n in sides for m in ("infer", "train")}
    for mode in ("infer", "train"):
        if mode == "train":
            for _, _, to_train in sides.values():
                to_train()
        for rep in range(args["warmup"] + args["repeats"]):
            for name, (infer, train_step, _) in sides.items():
                start = time.perf_counter()
                (infer if mode == "infer" else train_step)()
                if rep >= args["warmup"]:
                    times[f"{name}_{mode}"].append(time.perf_counter() - start)
    return {**args, "times": times, **{f"{k}_s": statistics.median(v) for k, v in times.items()},
            **{f"{k}_best_s": min(v) for k, v in times.items()}}


def worker_check(args: dict[str, Any]) -> dict[str, Any]:
    """Same eval outputs and same training loss (same seed: same dropout masks) on a small batch."""
    import torch
    import torch.nn.functional as F
    from spikingjelly.activation_based import functional

    from snnsec.classifier import Classifier

    s = _setup({**args, "both": True})
    net, ref, x, y = s["net"], s["ref"], s["x"], s["y"]
    with torch.no_grad():  # at the default init almost nothing fires: BN gains that make every layer spike
        gen = torch.Generator().manual_seed(2)
        for bn in (net.model[1], net.model[5]):
            bn.weight.copy_(torch.rand(bn.weight.shape, generator=gen) * 2 + 1)
            bn.running_var.fill_(0.05)
    ref.load_state_dict(net.state_dict())
    rates: list[float] = []
    net.model[2].register_forward_hook(lambda _m, _i, out: rates.append(float(out.detach().mean())))
    clf = Classifier(net)
    net.train(), ref.train()
    torch.manual_seed(1)
    ours = F.cross_entropy(clf.logits(x), y)
    torch.manual_seed(1)
    theirs, _ = _reference_loss(ref, x, y)
    ours.backward()
    theirs.backward()
    functional.reset_net(ref)
    grads = dict(net.named_parameters())
    grad_diff = max(float((p.grad - grads[k].grad).abs().max() / p.grad.abs().max().clamp_min(1e-30))
                    for k, p in ref.named_parameters() if p.requires_grad)
    net.eval(), ref.eval()
    _reference_eval_state(ref)
    with torch.no_grad():
        m_ours = clf.logits(x)
        _, m_theirs = _reference_loss(ref, x, y)
    return {"hidden_rate_train": rates[0], "hidden_rate_eval": rates[-1],
            "train_loss_snnsec": float(ours.detach()), "train_loss_reference": float(theirs.detach()),
            "grad_max_rel_diff": grad_diff,
            "eval_max_abs_diff": float((m_ours - m_theirs).abs().max()), "eval_scale": float(m_theirs.abs().max()),
            "eval_argmax_equal": bool(torch.equal(m_ours.argmax(1), m_theirs.argmax(1)))}


def render(result: dict[str, Any]) -> str:
    info, timing, memory, check = result["machine"], result["timing"], result["memory"], result["check"]
    b = result["batch"]

    def cell(side: str, key: str) -> str:
        if "error" in timing:
            return "-"
        return f"{b / timing[f'{side}_{key}_s']:.1f} ({b / timing[f'{side}_{key}_best_s']:.1f})"

    def mem(side: str, key: str) -> str:
        return "-" if "error" in memory[side] else f"{memory[side][key]:.0f}"

    def ratio(key: str) -> str:
        if "error" in timing:
            return "-"
        return (f"{timing[f'reference_{key}_s'] / timing[f'snnsec_{key}_s']:.2f}x "
                f"({timing[f'reference_{key}_best_s'] / timing[f'snnsec_{key}_best_s']:.2f}x)")

    def mem_ratio(key: str) -> str:
        if any("error" in m for m in memory.values()):
            return "-"
        return f"{memory['snnsec'][key] / memory['reference'][key]:.2f}x"

    lines = [
        "# delay-snn vs the SNN-delays layer stack",
        "",
        f"Generated by `benchmarks/bench_delay_snn.py {' '.join(result['argv'])}` on {info['date']} "
        f"in {result['seconds']:.0f} s (commit {info['git_commit']} plus the uncommitted delay-snn files).",
        "",
        f"Machine: {info['cpu']}, {info['logical_cpus']} logical CPUs ({info['cpu_capability']}), torch "
        f"{info['torch']} with **{info['torch_threads']} thread(s)**, spikingjelly {info['spikingjelly']}. Load "
        f"average before: {result['load_before']}, after: {result['load_after']} (the CPUs are shared with other "
        "jobs: absolute numbers are noisy).",
        "",
        f"SHD config (2 x 256, max_delay 25, 214,016 parameters), input T={result['frames']} x 140, batch {b}, "
        f"{result['density']:.0%} dense random frames, same weights on both sides. Training = forward + loss + "
        "backward + optimizer steps (+ clamp); inference = eval-mode forward (integer delays) under `no_grad`. "
        f"Speed: both sides in one process, calls interleaved, median (fastest) of {result['repeats']} timed calls "
        f"after {result['warmup']} warm-up. Peak memory: each side alone in a fresh process, peak RSS minus the RSS "
        "before building the model, after one inference call and (train) one training step.",
        "",
        "| side | train samples/s | infer samples/s | peak mem infer (MiB) | peak mem train (MiB) |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| snnsec delay-snn | {cell('snnsec', 'train')} | {cell('snnsec', 'infer')} | "
        f"{mem('snnsec', 'peak_infer_mib')} | {mem('snnsec', 'peak_train_mib')} |",
        f"| SNN-delays stack | {cell('reference', 'train')} | {cell('reference', 'infer')} | "
        f"{mem('reference', 'peak_infer_mib')} | {mem('reference', 'peak_train_mib')} |",
        f"| **snnsec / reference** | {ratio('train')} | {ratio('infer')} | {mem_ratio('peak_infer_mib')} | "
        f"{mem_ratio('peak_train_mib')} |",
        "",
        "Speed ratios > 1: snnsec is faster; memory ratios < 1: snnsec uses less.",
        "",
    ]
    for name, part in (("timing", timing), *((f"memory {k}", v) for k, v in memory.items())):
        if "error" in part:
            lines.append(f"Error in {name}: {part['error']}")
    if "error" in check:
        lines.append(f"Check: error: {check['error']}")
    else:
        lines.append(
            f"Check (batch {result['check_batch']}, same weights, BN gains raised so that the first hidden layer "
            f"fires at {check['hidden_rate_train']:.1%} (train) / {check['hidden_rate_eval']:.1%} (eval) of "
            f"neuron-steps): training loss snnsec {check['train_loss_snnsec']:.6f} vs reference "
            f"{check['train_loss_reference']:.6f} (same seed, same dropout masks), parameter gradients max relative "
            f"diff {check['grad_max_rel_diff']:.1e}; eval outputs m max abs diff {check['eval_max_abs_diff']:.2e} "
            f"(max |m| {check['eval_scale']:.1f}), argmax equal: {check['eval_argmax_equal']}.")
    lines += ["", "Both sides run the same delay convolutions (DCLS kernel construction + conv1d: about 80% of a "
              "training step in a CPU profile). The rest differs: snnsec's hidden LIFs are the fused LIF (one "
              "autograd node over T, no stored membrane sequence; the reference keeps `v_seq` in every LIF), BN "
              "and dropout are the same modules."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=256, help="batch size (the paper's SHD batch: 256)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--density", type=float, default=0.05, help="fraction of 1s in the random frames")
    parser.add_argument("--check-batch", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per worker process")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "JSON"), help=argparse.SUPPRESS)
    ns = parser.parse_args(argv)
    if ns.worker:
        kind, payload = ns.worker
        workers = {"timing": worker_timing, "memory": worker_memory, "check": worker_check}
        print(json.dumps(workers[kind](json.loads(payload))))
        return 0

    base = {"batch": ns.batch, "repeats": ns.repeats, "warmup": ns.warmup, "threads": ns.threads,
            "density": ns.density}
    load_before = [round(v, 2) for v in os.getloadavg()]
    started = time.perf_counter()
    check = _run_worker("check", {**base, "batch": ns.check_batch}, ns.timeout)
    print(f"[bench] check: {check}", flush=True)
    memory = {side: _run_worker("memory", {**base, "side": side}, ns.timeout) for side in ("snnsec", "reference")}
    print(f"[bench] memory: {memory}", flush=True)
    timing = _run_worker("timing", base, ns.timeout)
    print(f"[bench] timing: {timing}", flush=True)
    from snnsec.zoo.delay_snn import SHD_INPUT

    result = {"machine": machine_info(ns.threads), "timing": timing, "memory": memory, "check": check,
              "batch": ns.batch, "check_batch": ns.check_batch, "repeats": ns.repeats, "warmup": ns.warmup,
              "density": ns.density, "frames": SHD_INPUT.frames, "load_before": load_before,
              "load_after": [round(v, 2) for v in os.getloadavg()], "argv": sys.argv[1:] if argv is None else argv,
              "seconds": time.perf_counter() - started}
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(render(result))
    print(f"[bench] wrote {ns.out} in {result['seconds']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
