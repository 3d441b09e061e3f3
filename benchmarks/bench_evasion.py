"""Evasion cost: snnsec's native PGD vs torchattacks' PGD on the same trained model (not a test).

Run on demand:  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_evasion.py [--samples 32] [--repeats 3]

Models: the spiking CNN ("small") and Spikingformer ("tiny") on the embedded digits-dvs frames (T=10, 2
polarities, 34x34, 10 classes, binary encoding), trained clean with snnsec's recipe and cached in
``~/.cache/snnsec`` (``snnsec.model_cache.clean_model``; the first run trains what is not cached yet).
Inputs: ``--samples`` test samples drawn with ``np.random.default_rng(0)`` (the test set is sorted by
class), attacked as one batch.

(1) Continuous inputs, L-inf, eps 0.1, step eps/4, 10 steps, random start: torchattacks' ``PGD`` on
    ``Classifier.as_module()`` (final iterate) against snnsec's ``PGD(...).perturb`` in the ``continuous``
    domain (the same ascent; it keeps each sample's first successful iterate, so a later step cannot undo a
    success, but it still runs every step on the whole batch). The inputs are the binary frames themselves,
    seen as points of the relaxed [0, 1] box.
(2) Binary inputs (the same frames, values {0, 1}): snnsec's binary PGD (gradient-ranked flips, L0 budget
    200, 10 rounds, a sample stops once misclassified) against what a generic attack gives there: (1)'s
    torchattacks output on the same inputs, its share of elements strictly between 0 and 1 (not event
    data), and the robust accuracy after rounding it back to {0, 1}.

Each attack gets ``--warmup`` untimed calls, then ``--repeats`` timed calls (``time.perf_counter``),
interleaved between the attacks; the median is reported per sample. Both sides are seeded per call
(torchattacks draws its random start from torch's global generator: ``torch.manual_seed(0)`` before each
call), so every repeat returns the same inputs. Robust accuracy = share of the samples whose prediction on
the returned input equals the label. Results: ``reports/benchmarks/evasion.md``. The CPU is shared with
other work: compare the ratios of one run, not absolute times across runs.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "reports" / "benchmarks"
#: model -> (zoo config, default training epochs). Spikingformer's default is short: on the 2-core dev machine
#: at one thread 2 epochs took 155 s, so the default 8 would take ~10 min; the report says which was used.
MODELS: dict[str, tuple[str, int]] = {"spiking-cnn": ("small", 8), "spikingformer": ("tiny", 2)}
FULL_EPOCHS = 8  # AttackConfig's default


# ------------------------------------------------------------------------------------------- helpers


def _timed(attacks: dict[str, Callable[[], torch.Tensor]], warmup: int, repeats: int
           ) -> tuple[dict[str, float], dict[str, list[float]], dict[str, torch.Tensor]]:
    """Warm up every attack, then time ``repeats`` calls of each, interleaved; medians, all times, outputs."""
    outputs: dict[str, torch.Tensor] = {}
    for name, fn in attacks.items():
        for _ in range(warmup):
            outputs[name] = fn()
    times: dict[str, list[float]] = {name: [] for name in attacks}
    for _ in range(repeats):
        for name, fn in attacks.items():
            t0 = time.perf_counter()
            outputs[name] = fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}, times, outputs


def _accuracy(clf: Any, x: torch.Tensor, y: torch.Tensor, batch: int = 64) -> float:
    predicted = torch.cat([clf.predict(x[i:i + batch]) for i in range(0, len(x), batch)])
    return float((predicted == y).float().mean())


def _test_accuracy(clf: Any, dataset: Any, batch: int = 64) -> float:
    correct = 0
    for start in range(0, len(dataset), batch):
        items = [dataset[i] for i in range(start, min(start + batch, len(dataset)))]
        x = torch.stack([torch.as_tensor(item[0]) for item in items]).float()
        y = torch.as_tensor([int(item[1]) for item in items])
        correct += int((clf.predict(x) == y).sum())
    return correct / len(dataset)


def _samples(dataset: Any, n: int, seed: int = 0) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    rows = np.sort(np.random.default_rng(seed).choice(len(dataset), size=min(n, len(dataset)), replace=False))
    x = torch.stack([torch.as_tensor(dataset[int(i)][0]) for i in rows]).float()
    y = torch.as_tensor([int(dataset[int(i)][1]) for i in rows])
    return rows, x, y


# ------------------------------------------------------------------------------------------- one model


def bench_model(model: str, config: str, epochs: int, args: argparse.Namespace) -> dict[str, Any]:
    import torchattacks  # a test extra: imported only here

    from snnsec.attack_config import AttackConfig, Workspace
    from snnsec.attack_setup import prepare_attack
    from snnsec.attacks.evasion import Budget, Goal, Victim, domain_of
    from snnsec.attacks.evasion.domains import distances
    from snnsec.attacks.evasion.pgd import PGD
    from snnsec.model_cache import clean_model, model_path

    workspace = Workspace()
    setup = prepare_attack(AttackConfig(model=model, model_config=config, epochs=epochs), workspace)
    cached = model_path(workspace, setup.clean_identity).exists()
    t0 = time.perf_counter()
    clf = clean_model(setup, workspace)
    model_s = time.perf_counter() - t0
    clf.net.eval()
    test_acc = _test_accuracy(clf, setup.test_set)
    rows, x, y = _samples(setup.test_set, args.samples)
    if not bool(((x == 0) | (x == 1)).all()):
        raise SystemExit(f"{model}: expected binary frames (encoding 'binary'), got other values")
    clean_acc = _accuracy(clf, x, y)

    eps, alpha, steps = args.eps, args.eps / 4, args.steps
    linf, l0 = Budget("linf", eps), Budget("l0", args.l0)
    continuous, binary = domain_of("continuous"), domain_of("binary")
    ta_pgd = torchattacks.PGD(clf.as_module(), eps=eps, alpha=alpha, steps=steps, random_start=True)
    queries: dict[str, int] = {}

    def torchattacks_linf() -> torch.Tensor:
        torch.manual_seed(0)  # torchattacks' random start draws from the global generator
        return ta_pgd(x, y)

    class ClockedVictim(Victim):
        """A Victim that adds up the wall time of its model calls (forward + backward, predictions)."""

        model_s = 0.0

        def gradient(self, *a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return super().gradient(*a, **k)
            finally:
                self.model_s += time.perf_counter() - t0

        def predict_logits(self, *a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return super().predict_logits(*a, **k)
            finally:
                self.model_s += time.perf_counter() - t0

    outside: dict[str, float] = {}  # share of a native call spent outside the model, from its first (warm-up) call

    def native(name: str, attack: PGD, budget: Budget, domain: Any) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            clocked = name not in outside
            victim = ClockedVictim(clf) if clocked else Victim(clf)
            t0 = time.perf_counter()
            adv = attack.perturb(victim, x, Goal(y), budget, domain, torch.Generator().manual_seed(0))
            if clocked:
                total = time.perf_counter() - t0
                outside[name] = (total - victim.model_s) / total
            queries[name] = victim.queries
            return adv
        return run

    attacks = {
        "torchattacks-linf": torchattacks_linf,
        "native-linf": native("native-linf", PGD(steps=steps, step_size=alpha, random_start=True), linf, continuous),
        "native-binary": native("native-binary", PGD(steps=steps), l0, binary),
    }
    median_s, times_s, out = _timed(attacks, args.warmup, args.repeats)

    ta, nat, nat_bin = out["torchattacks-linf"], out["native-linf"], out["native-binary"]
    # Continuous.check compares float32 changes with eps exactly (no slack for L-inf), so a full-budget step
    # (e.g. 0 -> 0.1f = 0.10000000149) fails it: check the box and the ball with float32 rounding slack here.
    for name, adv in (("native", nat), ("torchattacks", out["torchattacks-linf"])):
        if not (continuous.valid(adv).all() and float(distances(x, adv)["linf"].max()) <= eps + 1e-6):
            raise SystemExit(f"{model}: {name} pgd left the [0, 1] box or the L-inf ball of {eps:g}")
    binary.check(x, nat_bin, l0, who="native binary pgd")  # raises on a bug
    rounded = (ta >= 0.5).float()
    n = len(x)
    return {
        "model": model,
        "config": setup.config.model_config,
        "epochs": epochs,
        "model_cached": cached,
        "model_load_or_train_s": model_s,
        "test_accuracy": test_acc,
        "test_size": len(setup.test_set),
        "rows": rows.tolist(),
        "samples": n,
        "clean_accuracy": clean_acc,
        "median_s": median_s,
        "times_s": times_s,
        "per_sample_s": {name: s / n for name, s in median_s.items()},
        "ratio_native_over_torchattacks": median_s["native-linf"] / median_s["torchattacks-linf"],
        "ratio_native_over_torchattacks_best": min(times_s["native-linf"]) / min(times_s["torchattacks-linf"]),
        "native_outside_model_share": outside,
        "robust": {
            "torchattacks-linf": _accuracy(clf, ta, y),
            "native-linf": _accuracy(clf, nat, y),
            "native-binary": _accuracy(clf, nat_bin, y),
            "torchattacks-rounded": _accuracy(clf, rounded, y),
        },
        "torchattacks_linf_max": float(distances(x, ta)["linf"].max()),
        "torchattacks_in_box": bool(continuous.valid(ta).all()),
        "torchattacks_fraction_fractional": float(((ta > 0) & (ta < 1)).float().mean()),
        "torchattacks_rounded_equals_clean": bool(torch.equal(rounded, x)),
        "native_binary_flips_mean": float(distances(x, nat_bin)["l0"].float().mean()),
        "native_binary_flips_max": int(distances(x, nat_bin)["l0"].max()),
        "queries_per_sample": {name: q / n for name, q in queries.items()},
    }


# ------------------------------------------------------------------------------------------- report


def machine_info(threads: int) -> dict[str, Any]:
    """bench_models' machine record (CPU, threads, versions, commit, date) plus what this benchmark adds."""
    from bench_models import machine_info as base_info

    return {**base_info(threads), "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "(unset)"),
            "torchattacks": importlib.metadata.version("torchattacks")}


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def render_markdown(result: dict[str, Any]) -> str:
    m, s = result["machine"], result["settings"]
    cases = result["cases"]
    lines = [
        "# Evasion benchmark: native PGD vs torchattacks PGD",
        "",
        f"Generated by `benchmarks/bench_evasion.py {' '.join(result['argv'])}` on {m['date']} "
        f"(commit {m['git_commit'] or '?'}).",
        "",
        f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, torch {m['torch']} with **{m['torch_threads']} "
        f"thread(s)** (OMP_NUM_THREADS={m['omp_num_threads']}), torchattacks {m['torchattacks']}, spikingjelly "
        f"{m['spikingjelly']}, Python {m['python']}. Load average (1/5/15 min) before: {result['load_before']}, "
        f"after: {result['load_after']}. The CPUs are shared with other jobs: the times and **ratios are from this "
        "one run** (attacks interleaved within it); compare ratios, not absolute times across runs.",
        "",
        "What was measured: attack time per sample (wall time of one `perturb` / torchattacks call on a batch of "
        f"all {s['samples']} samples, divided by {s['samples']}; median of {s['repeats']} timed calls after "
        f"{s['warmup']} untimed warm-up call(s), `time.perf_counter`) on clean models trained on the embedded "
        "digits-dvs frames (T=10, 2 polarities, 34×34, 10 classes, binary encoding) and cached by "
        "`snnsec.model_cache.clean_model`. The samples are drawn from the test set with "
        "`np.random.default_rng(0)` (the same rows for both models). Robust accuracy = share of those samples "
        "whose prediction on the returned input is still the label (lower = stronger attack); clean = on the "
        "unattacked samples.",
        "",
        f"## 1. Continuous inputs: L-inf, eps {s['eps']:g}, step {s['eps'] / 4:g}, {s['steps']} steps, random start",
        "",
        "`torchattacks.PGD(classifier.as_module(), eps, alpha, steps, random_start=True)` against snnsec's "
        "`PGD(steps, step_size, random_start=True).perturb(Victim(classifier), x, Goal(y), Budget('linf', eps), "
        "domain_of('continuous'), generator)` on the same inputs (the binary frames, as points of the [0, 1] "
        "box). Both take the same steps (sign of the cross-entropy gradient through the model's own surrogate, "
        "projection onto the ball and the box; random starts drawn from different generators). torchattacks "
        "returns the final iterate; the native attack keeps, per sample, the first iterate that is "
        "misclassified (early stopping of the *result*: the whole batch still runs every step, so its cost is "
        "the same), and scores only the returned valid input.",
        "",
        "Ratio = native time ÷ torchattacks time, from the medians and (in brackets) from the fastest call of "
        "each, which other jobs on the machine disturb least. *Native outside model*: the share of a native "
        "call (its first, warm-up call, with the model calls clocked) spent outside the model's forward and "
        "backward passes (random start, projection, bookkeeping).",
        "",
        "| model | config | epochs | test acc | clean acc | torchattacks s/sample | native s/sample "
        "| native ÷ torchattacks (best) | native outside model | robust acc torchattacks | robust acc native |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in cases:
        ps, r = c["per_sample_s"], c["robust"]
        lines.append(
            f"| {c['model']} | {c['config']} | {c['epochs']} | {_pct(c['test_accuracy'])} | {_pct(c['clean_accuracy'])} "
            f"| {ps['torchattacks-linf']:.3f} | {ps['native-linf']:.3f} | {c['ratio_native_over_torchattacks']:.2f}× "
            f"({c['ratio_native_over_torchattacks_best']:.2f}×) | {_pct(c['native_outside_model_share']['native-linf'])} "
            f"| {_pct(r['torchattacks-linf'])} | {_pct(r['native-linf'])} |")
    lines += [
        "",
        f"## 2. Binary inputs (event frames, values {{0, 1}}): L0 budget {s['l0']}, {s['steps']} rounds",
        "",
        f"Native binary PGD: `PGD(steps={s['steps']}).perturb(..., Budget('l0', {s['l0']}), domain_of('binary'), ...)` "
        f"— gradient-ranked flips, ceil({s['l0']}/{s['steps']}) per round, a sample leaves the batch once it is "
        "misclassified (so here early stopping does save work). A generic attack has no such mode: the "
        "torchattacks columns are section 1's torchattacks output on these same binary inputs "
        f"(L-inf eps {s['eps']:g}): the share of its output elements strictly between 0 and 1 (not event data), its "
        "robust accuracy as returned (on invalid inputs), and after rounding back to {0, 1} (`(adv >= 0.5)`).",
        "",
        "| model | native s/sample | native robust acc | native flips (mean / max) | model queries per sample "
        "(native binary / linf) | torchattacks elements in (0, 1) | torchattacks robust acc (as returned) "
        "| torchattacks robust acc (rounded) | rounded == clean |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for c in cases:
        r, q = c["robust"], c["queries_per_sample"]
        lines.append(
            f"| {c['model']} | {c['per_sample_s']['native-binary']:.3f} | {_pct(r['native-binary'])} "
            f"| {c['native_binary_flips_mean']:.1f} / {c['native_binary_flips_max']} "
            f"| {q['native-binary']:.1f} / {q['native-linf']:.1f} | {_pct(c['torchattacks_fraction_fractional'])} "
            f"| {_pct(r['torchattacks-linf'])} | {_pct(r['torchattacks-rounded'])} "
            f"| {'yes' if c['torchattacks_rounded_equals_clean'] else 'no'} |")
    lines += ["", "Notes:", ""]
    for c in cases:
        how = (f"loaded from the cache in {c['model_load_or_train_s']:.1f} s" if c["model_cached"]
               else f"trained in this run in {c['model_load_or_train_s']:.0f} s")
        short = (f" — fewer than the default {FULL_EPOCHS}, to keep training short (Spikingformer tiny: ~75 s an "
                 f"epoch at one thread on the 2-core dev machine, ~10 min for {FULL_EPOCHS})"
                 if c["epochs"] < FULL_EPOCHS else "")
        lines.append(f"- {c['model']} ({c['config']}): clean model, {c['epochs']} epochs{short}; {how}; test accuracy "
                     f"{_pct(c['test_accuracy'])} on all {c['test_size']} test samples. torchattacks' output: max "
                     f"L-inf change {c['torchattacks_linf_max']:.4f}, inside [0, 1]: "
                     f"{'yes' if c['torchattacks_in_box'] else 'no'}. Native time outside model calls: linf "
                     f"{_pct(c['native_outside_model_share']['native-linf'])}, binary "
                     f"{_pct(c['native_outside_model_share']['native-binary'])}. Timed calls (s, per batch): "
                     + ", ".join(f"{k} {', '.join(f'{t:.2f}' for t in v)}" for k, v in c["times_s"].items()) + ".")
    lines.append(f"- Sample rows (test set): {cases[0]['rows'] if cases else []}.")
    lines.append("")
    lines.append(f"Total wall time: {result['wall_s']:.0f} s.")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--samples", type=int, default=32, help="test samples attacked, one batch (default 32)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per attack (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls per attack first (default 1)")
    parser.add_argument("--epochs", type=int,
                        help="training epochs of every model (default: spiking-cnn 8, spikingformer 2; a model not "
                             "cached with these epochs is trained first)")
    parser.add_argument("--eps", type=float, default=0.1, help="L-inf budget of section 1 (step eps/4)")
    parser.add_argument("--steps", type=int, default=10, help="PGD steps / binary flip rounds")
    parser.add_argument("--l0", type=int, default=200, help="L0 budget of the native binary PGD (flips)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1; part of the cached model's identity)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ns = parser.parse_args(argv)
    if ns.samples < 1 or ns.repeats < 1 or ns.warmup < 0:
        parser.error("--samples and --repeats must be >= 1, --warmup >= 0")

    torch.set_num_threads(ns.threads)  # before any model is prepared: the thread count is in its cache identity
    started = time.perf_counter()
    load_before = [round(v, 2) for v in os.getloadavg()]
    cases = []
    for model in ns.models:
        config, default_epochs = MODELS[model]
        epochs = ns.epochs or default_epochs
        print(f"[bench] {model} {config} ({epochs} epochs), {ns.samples} samples ...", flush=True)
        case = bench_model(model, config, epochs, ns)
        cases.append(case)
        ps, r = case["per_sample_s"], case["robust"]
        print(f"  clean {_pct(case['clean_accuracy'])}; linf: torchattacks {ps['torchattacks-linf']:.3f} s/sample "
              f"(robust {_pct(r['torchattacks-linf'])}), native {ps['native-linf']:.3f} s/sample (robust "
              f"{_pct(r['native-linf'])}), native/torchattacks {case['ratio_native_over_torchattacks']:.2f}x; "
              f"binary: native {ps['native-binary']:.3f} s/sample (robust {_pct(r['native-binary'])}), torchattacks "
              f"{_pct(case['torchattacks_fraction_fractional'])} fractional, rounded robust "
              f"{_pct(r['torchattacks-rounded'])}", flush=True)

    result = {
        "argv": sys.argv[1:] if argv is None else list(argv),
        "machine": machine_info(ns.threads),
        "load_before": load_before,
        "load_after": [round(v, 2) for v in os.getloadavg()],
        "settings": {"samples": ns.samples, "repeats": ns.repeats, "warmup": ns.warmup, "eps": ns.eps,
                     "steps": ns.steps, "l0": ns.l0},
        "cases": cases,
        "wall_s": time.perf_counter() - started,
    }
    ns.out.mkdir(parents=True, exist_ok=True)
    text = render_markdown(result)
    (ns.out / "evasion.md").write_text(text)
    print(text)
    print(f"[bench] wrote {ns.out / 'evasion.md'} ({result['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
