"""On-demand speed and memory benchmark of the zoo models (not a test).

    .venv/bin/python benchmarks/bench_models.py                       # every model, tiny + paper configs
    .venv/bin/python benchmarks/bench_models.py --quick               # fewer repeats, smaller batches
    .venv/bin/python benchmarks/bench_models.py --models spiking-cnn spikformer --no-lif-compare

For each zoo model (``snnsec.zoo.MODELS.names()``) and each of its configs "tiny" (34x34, T=10, 10 classes)
and "paper" (the config built for DVS128 Gesture: 128x128, T=16, 11 classes; delay-snn: its SHD config on
100 x 140 audio frames, 20 classes) it measures, in a fresh
subprocess per case:

* training samples/s: forward + cross-entropy + backward + Adam step through ``Classifier.logits``;
* inference samples/s: ``Classifier.logits`` in eval mode under ``torch.no_grad``;
* peak memory: the worker's peak resident set size (``getrusage(RUSAGE_SELF).ru_maxrss``) minus its RSS just
  before the model was built, i.e. parameters + optimizer state + activations/autograd buffers + whatever the
  allocator kept, for inference (measured first) and for training (the high-water mark of both).

Each timing is the median of ``--repeats`` timed calls after ``--warmup`` untimed ones. Inputs are random
Bernoulli event frames (10% density) — speed does not depend on the values, except through spike counts.

It also compares, in one process and interleaved, spikingjelly's ``LIFNode`` with ``zoo.fused_lif.FusedLIFNode``
(eager and torch.compile backends) on the spiking CNN ("small", the embedded default) and on a tiny transformer,
swapping the neuron modules of one built model, and checks that the logits are bit-identical and the
gradients equal.

Results: ``reports/benchmarks/models.md`` (tables) and ``reports/benchmarks/models.json`` (with machine info).
The CPU is shared with other work: the load average is recorded before and after; compare ratios measured in
one run rather than absolute numbers across runs.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "reports" / "benchmarks"
#: The paper-size configs, in order of preference: those built for DVS128 Gesture, the ANN baselines' "paper",
#: and delay-snn's SHD config (on its own input, 100 x 140 audio frames, 20 classes).
PAPER_CONFIGS = ("gesture", "dvs-2-256", "paper", "shd")


# ------------------------------------------------------------------------------------------- helpers


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _median_time(fn: Any, warmup: int, repeats: int) -> tuple[float, list[float]]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def _frames(batch: int, spec: Any, seed: int = 0) -> Any:
    import torch

    gen = torch.Generator().manual_seed(seed)
    shape = (batch, spec.frames, spec.channels, spec.height, spec.width)
    x = (torch.rand(shape, generator=gen) < 0.1).float()
    y = torch.randint(0, spec.num_classes, (batch,), generator=gen)
    return x, y


def _spec(model: str, which: str, config: str) -> Any:
    """The input of a case: the embedded digits-dvs for "tiny", else the one the paper config was built for."""
    from snnsec.zoo import MODELS
    from snnsec.zoo.base import DVS128_INPUT, EMBEDDED_INPUT

    if which == "tiny":
        return EMBEDDED_INPUT
    return MODELS.get(model).config_inputs.get(config, DVS128_INPUT)


def _config_name(model: str, which: str) -> str | None:
    from snnsec.zoo import MODELS

    configs = MODELS.get(model).configs
    if which == "tiny":
        return "tiny" if "tiny" in configs else None
    return next((name for name in PAPER_CONFIGS if name in configs), None)


def _train_step(clf: Any, optimizer: Any, x: Any, y: Any) -> None:
    import torch

    optimizer.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(clf.logits(x), y)
    loss.backward()
    optimizer.step()


# ------------------------------------------------------------------------------------------- workers


def worker_case(args: dict[str, Any]) -> dict[str, Any]:
    """One (model, config) case in this fresh process: inference first, then training."""
    import torch

    torch.set_num_threads(args["threads"])
    from snnsec.classifier import Classifier
    from snnsec.zoo import MODELS, create_model

    spec = _spec(args["model"], args["which"], args["config"])
    torch.manual_seed(0)
    x, y = _frames(args["batch"], spec)
    rss_before = _rss_mib()
    entry = MODELS.get(args["model"])
    net = create_model(args["model"], spec, args["config"])
    clf = Classifier(net, entry.feature_layer)
    params = sum(p.numel() for p in net.parameters())

    net.eval()
    with torch.no_grad():
        infer_s, infer_times = _median_time(lambda: clf.logits(x), args["warmup"], args["repeats"])
    peak_infer = _peak_rss_mib() - rss_before

    net.train()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    train_s, train_times = _median_time(lambda: _train_step(clf, optimizer, x, y), args["warmup"], args["repeats"])
    peak_train = _peak_rss_mib() - rss_before
    return {
        "model": args["model"],
        "which": args["which"],
        "config": args["config"],
        "input": {"T": spec.frames, "C": spec.channels, "H": spec.height, "W": spec.width,
                  "classes": spec.num_classes},
        "batch": args["batch"],
        "params": params,
        "train_step_s": train_s,
        "train_samples_per_s": args["batch"] / train_s,
        "train_times_s": train_times,
        "infer_s": infer_s,
        "infer_samples_per_s": args["batch"] / infer_s,
        "infer_times_s": infer_times,
        "peak_infer_mib": peak_infer,
        "peak_train_mib": peak_train,
        "rss_baseline_mib": rss_before,
        "repeats": args["repeats"],
        "warmup": args["warmup"],
    }


def worker_lif(args: dict[str, Any]) -> dict[str, Any]:
    """spikingjelly LIFNode vs FusedLIFNode (eager, compile) on one built model, interleaved repetitions."""
    import torch

    torch.set_num_threads(args["threads"])
    from snnsec.classifier import Classifier
    from snnsec.zoo import create_model
    from snnsec.zoo import fused_lif

    spec = _spec(args["model"], args["which"], args["config"])
    torch.manual_seed(0)
    x, y = _frames(args["batch"], spec)
    net = create_model(args["model"], spec, args["config"])
    clf = Classifier(net)
    # The same starting weights for every variant: the step changes them, so restore before each timed call.
    state0 = {k: v.clone() for k, v in net.state_dict().items()}
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3)

    variants = {"spikingjelly": ("sj", None), "fused-eager": ("fused", "eager"),
                "fused-compile": ("fused", "compile")}
    swapped = {"n": 0}

    def use(variant: str) -> None:
        kind, backend = variants[variant]
        n = fused_lif.swap_lif_nodes(net, fused=(kind == "fused"))
        swapped["n"] = max(swapped["n"], n)
        if backend:
            fused_lif.set_backend(backend)

    def train_once() -> None:
        net.load_state_dict(state0)
        _train_step(clf, optimizer, x, y)

    def infer_once() -> Any:
        with torch.no_grad():
            return clf.logits(x)

    # Exactness: same weights, same input -> logits and input gradients of every variant.
    net.train()
    outputs: dict[str, Any] = {}
    compile_warmup_s = 0.0
    for variant in variants:
        use(variant)
        net.load_state_dict(state0)
        t0 = time.perf_counter()
        torch.manual_seed(1)  # dropout masks
        xg = x.clone().requires_grad_(True)
        logits = clf.logits(xg)
        torch.nn.functional.cross_entropy(logits, y).backward()
        outputs[variant] = (logits.detach(), xg.grad.detach().clone(),
                            {n: p.grad.detach().clone() for n, p in net.named_parameters() if p.grad is not None})
        net.zero_grad(set_to_none=True)
        if variant == "fused-compile":
            for _ in range(2):  # compile the kernels (forward with/without h, backward) before timing
                train_once()
                net.eval()
                infer_once()
                net.train()
            compile_warmup_s = time.perf_counter() - t0
    ref_logits, ref_gx, ref_gp = outputs["spikingjelly"]
    exactness = {}
    for variant in ("fused-eager", "fused-compile"):
        logits, gx, gp = outputs[variant]

        def rel(a: Any, b: Any) -> float:
            scale = float(b.abs().max())
            return float((a - b).abs().max()) / scale if scale > 0 else float((a - b).abs().max())

        exactness[variant] = {
            "logits_bit_identical": bool(torch.equal(logits, ref_logits)),
            "input_grad_identical": bool(torch.equal(gx, ref_gx)),
            "input_grad_max_rel_diff": rel(gx, ref_gx),
            "param_grads_identical": all(torch.equal(gp[n], ref_gp[n]) for n in ref_gp),
            "param_grad_max_rel_diff": max(rel(gp[n], ref_gp[n]) for n in ref_gp),
        }

    timings: dict[str, dict[str, list[float]]] = {v: {"train": [], "infer": []} for v in variants}
    for variant in variants:  # warm-up
        use(variant)
        for _ in range(args["warmup"]):
            net.train()
            train_once()
            net.eval()
            infer_once()
    for _ in range(args["repeats"]):
        for variant in variants:
            use(variant)
            net.train()
            t0 = time.perf_counter()
            train_once()
            timings[variant]["train"].append(time.perf_counter() - t0)
            net.eval()
            t0 = time.perf_counter()
            infer_once()
            timings[variant]["infer"].append(time.perf_counter() - t0)
    med = {v: {k: statistics.median(ts) for k, ts in d.items()} for v, d in timings.items()}
    best = {v: {k: min(ts) for k, ts in d.items()} for v, d in timings.items()}
    base = med["spikingjelly"]
    return {
        "model": args["model"],
        "config": args["config"],
        "which": args["which"],
        "batch": args["batch"],
        "lif_modules_swapped": swapped["n"],
        "median_s": med,
        "times_s": timings,
        "speedup_train": {v: base["train"] / med[v]["train"] for v in variants},
        "speedup_infer": {v: base["infer"] / med[v]["infer"] for v in variants},
        "min_s": best,
        "speedup_train_min": {v: best["spikingjelly"]["train"] / best[v]["train"] for v in variants},
        "speedup_infer_min": {v: best["spikingjelly"]["infer"] / best[v]["infer"] for v in variants},
        "exactness": exactness,
        "compile_warmup_s": compile_warmup_s,
        "compile_status": fused_lif.compile_status(),
        "repeats": args["repeats"],
    }


def _run_worker(kind: str, args: dict[str, Any], timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, json.dumps(args)]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(args["threads"]))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s", **args}
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        return {"error": " | ".join(tail), **args}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------- report


def machine_info(threads: int) -> dict[str, Any]:
    import importlib.metadata

    import torch

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=ROOT, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "torch_threads": threads,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "spikingjelly": importlib.metadata.version("spikingjelly"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": commit,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _fmt_rate(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def render_markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        "# Zoo model benchmark",
        "",
        f"Generated by `benchmarks/bench_models.py {' '.join(result['argv'])}` on {m['date']} "
        f"(commit {m['git_commit'] or '?'}).",
        "",
        f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs ({m['cpu_capability']}), torch {m['torch']} "
        f"with **{m['torch_threads']} thread(s)**, spikingjelly {m['spikingjelly']}, Python {m['python']}. "
        f"Load average (1/5/15 min) before: {result['load_before']}, after: {result['load_after']} — the CPUs are "
        "shared with other jobs, so absolute numbers are noisy; ratios within one run are more reliable.",
        "",
        "Training = forward + cross-entropy + backward + Adam step through `Classifier.logits`; inference = "
        "`Classifier.logits` in eval mode under `no_grad`. Medians of the timed repeats after warm-up. "
        "Peak memory = peak RSS of the case's own worker process minus its RSS before the model was built "
        "(parameters, optimizer state, activations and autograd buffers, allocator caches); the train figure "
        "is the high-water mark after inference and training. Neurons: as the zoo builds them "
        "(spikingjelly `LIFNode`/`ParametricLIFNode`).",
        "",
        "| model | config | input (T×C×H×W, classes) | batch | params | train samples/s | infer samples/s "
        "| peak mem infer (MiB) | peak mem train (MiB) |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for case in result["cases"]:
        if "error" in case:
            lines.append(f"| {case['model']} | {case.get('config')} ({case['which']}) | - | {case.get('batch')} | - "
                         f"| error: {case['error'][:120]} | | | |")
            continue
        inp = case["input"]
        lines.append(
            f"| {case['model']} | {case['config']} ({case['which']}) | {inp['T']}×{inp['C']}×{inp['H']}×{inp['W']}, "
            f"{inp['classes']} | {case['batch']} | {case['params']:,} | {_fmt_rate(case['train_samples_per_s'])} "
            f"| {_fmt_rate(case['infer_samples_per_s'])} | {case['peak_infer_mib']:.0f} | {case['peak_train_mib']:.0f} |"
        )
    for case in result.get("skipped", []):
        lines.append(f"| {case['model']} | ({case['which']}) | - | - | - | skipped: {case['reason']} | | | |")
    if result.get("lif"):
        lines += [
            "",
            "## spikingjelly LIF vs fused LIF (`zoo/fused_lif.py`)",
            "",
            "One built model per row; its `LIFNode`s are swapped for `FusedLIFNode`s (same settings) between "
            "interleaved repetitions; weights are restored before each training step. Times are medians (ms per "
            "batch); speed-up = spikingjelly time / fused time, from the medians and (in brackets) from the "
            "fastest repetition of each, which is less affected by other jobs on the machine. `compile` = the "
            "torch.compile (inductor C++) kernels, compiled during warm-up (time below); `eager` = the "
            "plain-Torch fused kernels.",
            "",
            "| model | config | batch | LIFs | variant | train ms | infer ms | train speed-up (best) "
            "| infer speed-up (best) | logits bit-identical | input grad identical (max rel diff) "
            "| param grads identical (max rel diff) |",
            "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- | --- | --- |",
        ]
        for lif in result["lif"]:
            if "error" in lif:
                lines.append(f"| {lif['model']} | {lif.get('config')} | {lif.get('batch')} | - | error: "
                             f"{lif['error'][:150]} | | | | | | | |")
                continue
            for variant, med in lif["median_s"].items():
                ex = lif["exactness"].get(variant)
                exact_cols = ("(reference) | (reference) | (reference)" if ex is None else
                              f"{'yes' if ex['logits_bit_identical'] else 'NO'} | "
                              f"{'yes' if ex['input_grad_identical'] else 'no'} ({ex['input_grad_max_rel_diff']:.1e}) | "
                              f"{'yes' if ex['param_grads_identical'] else 'no'} ({ex['param_grad_max_rel_diff']:.1e})")
                lines.append(
                    f"| {lif['model']} | {lif['config']} ({lif['which']}) | {lif['batch']} | {lif['lif_modules_swapped']} "
                    f"| {variant} | {med['train'] * 1e3:.1f} | {med['infer'] * 1e3:.1f} "
                    f"| {lif['speedup_train'][variant]:.2f}× ({lif['speedup_train_min'][variant]:.2f}×) "
                    f"| {lif['speedup_infer'][variant]:.2f}× ({lif['speedup_infer_min'][variant]:.2f}×) | {exact_cols} |"
                )
        lines.append("")
        for lif in result["lif"]:
            if "error" not in lif:
                lines.append(f"- {lif['model']} {lif['config']}: torch.compile warm-up (first compile of its kernels "
                             f"in this process, incl. one train+infer pass) {lif['compile_warmup_s']:.1f} s; "
                             f"compile status {lif['compile_status']}.")
    lines.append("")
    lines.append(f"Total wall time: {result['wall_s']:.0f} s.")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", help="zoo model names (default: all)")
    parser.add_argument("--configs", nargs="+", choices=("tiny", "paper"), default=["tiny", "paper"])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and smaller batches (~5-8 min)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: reproducible on a shared machine)")
    parser.add_argument("--batch-tiny", type=int, help="batch for tiny configs (default 32, quick 16)")
    parser.add_argument("--batch-paper", type=int, help="batch for paper configs (default 4, quick 2)")
    parser.add_argument("--repeats", type=int, help="timed repeats per case (default 5, quick 3)")
    parser.add_argument("--warmup", type=int, help="untimed warm-up calls per case (default 2, quick 1)")
    parser.add_argument("--no-lif-compare", action="store_true", help="skip the LIF comparison")
    parser.add_argument("--lif-transformer", default="spike-driven-transformer",
                        help="transformer for the LIF comparison (tiny config)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per worker process")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "JSON"), help=argparse.SUPPRESS)
    ns = parser.parse_args(argv)

    if ns.worker:
        kind, payload = ns.worker
        fn = {"case": worker_case, "lif": worker_lif}[kind]
        print(json.dumps(fn(json.loads(payload))))
        return 0

    from snnsec.zoo import MODELS

    quick = ns.quick
    batch = {"tiny": ns.batch_tiny or (16 if quick else 32), "paper": ns.batch_paper or (2 if quick else 4)}
    repeats = ns.repeats or (3 if quick else 5)
    warmup = ns.warmup or (1 if quick else 2)
    models = ns.models or MODELS.names()
    unknown = [m for m in models if m not in MODELS.names()]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {MODELS.names()}")

    started = time.perf_counter()
    load_before = [round(x, 2) for x in os.getloadavg()]
    cases, skipped = [], []
    for model in models:
        for which in ns.configs:
            config = _config_name(model, which)
            if config is None:
                skipped.append({"model": model, "which": which, "reason": "no such config"})
                continue
            args = {"model": model, "which": which, "config": config, "batch": batch[which],
                    "repeats": repeats if which == "tiny" else max(2, repeats - 1),
                    "warmup": warmup if which == "paper" else max(2, warmup),
                    "threads": ns.threads}
            print(f"[bench] {model} {config} ({which}) batch {batch[which]} ...", flush=True)
            case = _run_worker("case", args, ns.timeout)
            cases.append(case)
            if "error" in case:
                print(f"  error: {case['error']}", flush=True)
            else:
                print(f"  train {case['train_samples_per_s']:.1f}/s infer {case['infer_samples_per_s']:.1f}/s "
                      f"peak {case['peak_train_mib']:.0f} MiB", flush=True)

    lif_results = []
    if not ns.no_lif_compare:
        lif_cases = [("spiking-cnn", "small", "tiny", 32)]  # the embedded default, as profiled (T=10, batch 32)
        if ns.lif_transformer:
            lif_cases.append((ns.lif_transformer, "tiny", "tiny", 16))
        for model, config, which, b in lif_cases:
            args = {"model": model, "config": config, "which": which, "batch": b,
                    "repeats": 15 if not quick else 9, "warmup": 1, "threads": ns.threads}
            print(f"[bench] LIF comparison on {model} {config} batch {b} ...", flush=True)
            lif = _run_worker("lif", args, ns.timeout)
            lif_results.append(lif)
            if "error" in lif:
                print(f"  error: {lif['error']}", flush=True)
            else:
                exact = all(e["logits_bit_identical"] for e in lif["exactness"].values())
                print("  train speed-up (median) " + ", ".join(f"{k} {v:.2f}x" for k, v in lif["speedup_train"].items())
                      + f"; logits bit-identical: {exact}", flush=True)

    result = {
        "argv": sys.argv[1:] if argv is None else list(argv),
        "machine": machine_info(ns.threads),
        "load_before": load_before,
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "settings": {"batch": batch, "repeats": repeats, "warmup": warmup, "quick": quick},
        "cases": cases,
        "skipped": skipped,
        "lif": lif_results,
        "wall_s": time.perf_counter() - started,
    }
    ns.out.mkdir(parents=True, exist_ok=True)
    (ns.out / "models.json").write_text(json.dumps(result, indent=2) + "\n")
    (ns.out / "models.md").write_text(render_markdown(result))
    print(f"[bench] wrote {ns.out / 'models.md'} and {ns.out / 'models.json'} ({result['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
