"""The evasion protocol: a trained zoo model, seeded correctly classified test samples, one evasion attack over
budgets and surrogates, robust accuracy and perturbation sizes, gradient-obfuscation checks; records and tables.

Protocol (as the papers: PDSG-SDA, SpikeFool): ``samples`` (default 100) test samples drawn in a seeded random
order among those the model classifies correctly (targeted: also not of the target class) are attacked.
Every output is checked against its domain and budget (:meth:`Domain.check`) and scored by the model's own
neurons on the hard input; robust accuracy and success rate are over these samples; L0 and events changed are
over successful examples. Minimal-perturbation attacks run once: an example counts at budget B when it
succeeds with L0 <= B. "best" rows: a sample counts as broken when any surrogate broke it.

Obfuscation checks (Carlini et al., 2019; Athalye et al., 2018), in every report and flagged in the tables:
robust accuracy must not rise with the budget; the unbounded attack must bring it to about 0 (<= 5%); a random
perturbation of the same budget must not beat the white-box attack.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from snnsec.attack_config import AttackConfig, Workspace
from snnsec.attack_setup import AttackSetup, prepare_attack
from snnsec.attacks.evasion import (Budget, Goal, Surrogate, Victim, create_evasion, domain_of, parse_surrogates)
from snnsec.attacks.evasion.base import EvasionAttack
from snnsec.attacks.evasion.domains import Domain, distances
from snnsec.classifier import Classifier
from snnsec.errors import ConfigError
from snnsec.experiment import attack_record_config
from snnsec.model_cache import adversarially_trained_model, clean_model, model_path
from snnsec.progress import log, progress_bar
from snnsec.records import Column, RunRecord, append_record, config_hash, load_records, write_tables
from snnsec.training import accuracy

UNBOUNDED_MAX_ROBUST = 0.05  # "about 0%": the unbounded attack must leave at most this share robust
SPARSE_THRESHOLDS = (200, 800)  # success at L0 < 200 and < 800 (PDSG-SDA's table)
DEFAULT_BUDGETS = {"binary": (10, 50, 200, 800), "counts": (1, 2, 4), "continuous": (0.05, 0.1, 0.2)}
DEFENSES = ("adversarial-training",)


@dataclass(frozen=True)
class EvasionConfig:
    """One evasion run, besides the model it attacks (an :class:`AttackConfig` names dataset, model, recipe)."""

    attack: str = "pgd"
    options: tuple[tuple[str, Any], ...] = ()  # attack parameters, e.g. (("steps", 20),)
    budgets: tuple[float, ...] = ()  # default: DEFAULT_BUDGETS of the domain
    norm: str | None = None  # default: the domain's (binary: l0, counts: linf)
    surrogates: tuple[str, ...] = ("model",)  # "sweep" expands to surrogates.SWEEP
    samples: int = 100
    target: int | str | None = None  # None: untargeted; a class; "random": a seeded other class per sample
    batch_size: int = 32
    seed: int = 0
    defense: str | None = None  # "adversarial-training": attack the adversarially trained model instead
    defense_options: tuple[tuple[str, Any], ...] = ()
    checks: bool = True  # run the random baseline and the unbounded attack (obfuscation checks)

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ConfigError(f"--samples must be >= 1, got {self.samples}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.defense is not None and self.defense not in DEFENSES:
            raise ConfigError(f"evade --defense must be one of: {', '.join(DEFENSES)}; got {self.defense!r}")
        if isinstance(self.target, str) and self.target != "random":
            raise ConfigError(f"--target must be a class number or 'random', got {self.target!r}")
        if isinstance(self.target, int) and self.target < 0:
            raise ConfigError(f"--target must be a class number >= 0, got {self.target}")


@dataclass
class Plan:
    """A validated evasion run: attack, domain, budgets and surrogates, built before any work."""

    attack: EvasionAttack
    domain: Domain
    budgets: tuple[Budget, ...]
    surrogates: tuple[Surrogate, ...]
    adversary: Any = None  # AdversarialTrainingConfig when the model is adversarially trained


def plan(config: EvasionConfig, encoding: str) -> Plan:
    """Check everything about ``config`` that can be checked without data (one-line errors, no work done)."""
    attack = create_evasion(config.attack, **dict(config.options))
    domain = domain_of(encoding)
    norm = config.norm or domain.default_norm
    values = config.budgets or DEFAULT_BUDGETS[domain.name]
    budgets = tuple(sorted({Budget(norm, float(v)) for v in values}, key=lambda b: b.value))
    for budget in budgets:
        attack.check(domain, budget)
    if attack.gradient_free and config.surrogates not in ((), ("model",)):
        raise ConfigError(f"evasion attack {attack.name!r} uses no gradients: --surrogate does not apply")
    adversary = None
    if config.defense == "adversarial-training":
        from snnsec.defenses.adversarial_training import AdversarialTrainingConfig

        try:
            adversary = AdversarialTrainingConfig(**dict(config.defense_options))
        except TypeError as err:
            raise ConfigError(f"--defense-opt: {err}; options: budget, steps, ratio, surrogate") from None
        adversary.budget_for(encoding)
    elif config.defense_options:
        raise ConfigError("--defense-opt needs --defense")
    return Plan(attack, domain, budgets, parse_surrogates(config.surrogates), adversary)


def run_evasion(config: EvasionConfig, model: AttackConfig, workspace: Workspace | None = None) -> RunRecord:
    """Attack ``model``'s trained (cached) classifier with ``config`` and append the record; returns it."""
    workspace = workspace or Workspace()
    started, clock = datetime.now(timezone.utc), time.perf_counter()
    the_plan = plan(config, model.encoding)  # bad options fail here, before data or training
    setup = prepare_attack(model, workspace)
    if isinstance(config.target, int) and config.target >= setup.num_classes:
        raise ConfigError(f"--target {config.target} is not a class of {model.dataset} (0..{setup.num_classes - 1})")
    classifier = (adversarially_trained_model(setup, workspace, the_plan.adversary) if the_plan.adversary
                  else clean_model(setup, workspace))
    log("clean accuracy on the test set")
    clean_accuracy = accuracy(classifier, setup.test_set)
    x, goal, rows = attacked_samples(classifier, setup, config)
    log(f"attacking {len(x)} correctly classified test samples ({the_plan.attack.name}, {the_plan.domain.name} "
        f"frames, {the_plan.budgets[0].norm} budgets {', '.join(b.label for b in the_plan.budgets)})")
    results = evaluate(classifier, the_plan, x, goal, config)
    checks = obfuscation_checks(results, the_plan)
    spec = setup.input_spec
    denominator = spec.frames * spec.channels * spec.height * spec.width
    metrics = {"clean_accuracy": clean_accuracy, "attacked_samples": len(x), "sample_rows": rows,
               "domain": the_plan.domain.name, "norm": the_plan.budgets[0].norm, "denominator": denominator,
               "rows": [r.summary(denominator) for r in results], "checks": checks,
               "flags": [c["flag"] for c in checks if c["flag"]]}
    identity = (setup.clean_identity if the_plan.adversary is None else
                {**setup.clean_identity, "adversarial_training": the_plan.adversary.identity(model.encoding)})
    full_config = {"evasion": {**asdict(config), "budgets": [b.value for b in the_plan.budgets],
                               "norm": the_plan.budgets[0].norm,
                               "surrogates": [s.label for s in the_plan.surrogates]},
                   "attack_params": the_plan.attack.params(),
                   "adversarial_training": None if the_plan.adversary is None else identity["adversarial_training"],
                   "model": _model_config(setup), "request_id": config_hash({"evasion": asdict(config),
                                                                             "model": asdict(model)})}
    record = RunRecord(kind="evasion", run_id=config_hash(full_config), config=full_config, metrics=metrics,
                       started=started.isoformat(timespec="seconds"),
                       finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                       duration_s=round(time.perf_counter() - clock, 2),
                       artifacts={"model": str(model_path(workspace, identity))})
    append_record(workspace.out_dir / "records.jsonl", record)
    write_evasion_tables(workspace.out_dir)
    return record


def _model_config(setup: AttackSetup) -> dict[str, Any]:
    """The attacked model's part of the record: data, model, recipe and runtime (no trigger: a clean model)."""
    full = attack_record_config(setup, "")
    keep = ("dataset", "model", "model_config", "frames", "slicing", "size", "encoding", "epochs", "batch_size",
            "lr", "optimizer", "seed", "model_params", "data_version", "runtime")
    return {k: full[k] for k in keep if k in full}


def attacked_samples(classifier: Classifier, setup: AttackSetup,
                     config: EvasionConfig) -> tuple[torch.Tensor, Goal, list[int]]:
    """``config.samples`` test samples in a seeded random order that the model classifies correctly (targeted:
    not of the target class), their goal, and their rows in the test set."""
    test = setup.test_set
    order = np.random.default_rng(config.seed).permutation(len(test))
    chosen: list[int] = []
    for start in range(0, len(order), 128):
        rows = order[start:start + 128]
        frames = torch.stack([torch.as_tensor(np.asarray(test[int(i)][0]), dtype=torch.float32) for i in rows])
        labels = np.asarray([int(test[int(i)][1]) for i in rows])
        predicted = classifier.predict(frames.to(classifier.device)).cpu().numpy()
        ok = predicted == labels
        if isinstance(config.target, int):
            ok &= labels != config.target
        chosen.extend(int(i) for i in rows[ok])
        if len(chosen) >= config.samples:
            break
    chosen = chosen[:config.samples]
    if not chosen:
        raise ConfigError("no test sample is classified correctly (and outside the target class): nothing to attack")
    x = torch.stack([torch.as_tensor(np.asarray(test[i][0]), dtype=torch.float32) for i in chosen]).to(classifier.device)
    labels = torch.as_tensor([int(test[i][1]) for i in chosen], device=classifier.device)
    targets = None
    if isinstance(config.target, int):
        targets = torch.full_like(labels, config.target)
    elif config.target == "random":
        shift = np.random.default_rng(config.seed + 1).integers(1, setup.num_classes, len(chosen))
        targets = (labels + torch.as_tensor(shift, device=labels.device)) % setup.num_classes
    return x, Goal(labels, targets), chosen


@dataclass
class Outcome:
    """Per-sample results of one attack at one budget with one surrogate."""

    attack: str
    surrogate: str  # a surrogate label, "best" (over surrogates) or "-" (no gradients)
    budget: Budget
    success: np.ndarray  # bool per sample
    robust: np.ndarray  # bool per sample: still its true label
    l0: np.ndarray  # elements changed per sample
    l1: np.ndarray  # events changed per sample
    seconds: float = 0.0
    queries: int = 0
    role: str = "attack"  # "attack", "best", "random" or "unbounded"
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self, denominator: int) -> dict[str, Any]:
        n = len(self.success)
        won = self.success
        l0, l1 = self.l0[won], self.l1[won]
        row = {"role": self.role, "attack": self.attack, "surrogate": self.surrogate, "norm": self.budget.norm,
               "budget": self.budget.value if self.budget.bounded else None, "budget_label": self.budget.label,
               "robust_accuracy": float(self.robust.mean()), "success_rate": float(won.mean()),
               "l0_mean": float(l0.mean()) if len(l0) else None, "l0_median": float(np.median(l0)) if len(l0) else None,
               "events_mean": float(l1.mean()) if len(l1) else None,
               "time_per_sample_s": round(self.seconds / n, 4), "queries_per_sample": round(self.queries / n, 1),
               "samples": n, "denominator": denominator}
        for threshold in SPARSE_THRESHOLDS:
            row[f"success_l0_lt_{threshold}"] = float((won & (self.l0 < threshold)).mean())
        return row


def evaluate(classifier: Classifier, the_plan: Plan, x: torch.Tensor, goal: Goal, config: EvasionConfig) -> list[Outcome]:
    """Every (surrogate, budget) outcome, the best over surrogates, the random baseline and the unbounded runs."""
    attack, domain = the_plan.attack, the_plan.domain
    outcomes: list[Outcome] = []
    surrogates = (Surrogate("model"),) if attack.gradient_free else the_plan.surrogates
    for surrogate in surrogates:
        label = "-" if attack.gradient_free else surrogate.label
        if attack.minimal:  # one run, uncapped; each budget reads it
            run = _attack(classifier, attack, surrogate, x, goal, Budget(the_plan.budgets[0].norm, math.inf),
                          domain, config, f"{attack.name} ({label})")
            outcomes.extend(_at_budget(run, b) for b in the_plan.budgets)
            if config.checks:
                outcomes.append(replace(run, role="unbounded"))
            continue
        for budget in the_plan.budgets:
            outcomes.append(_attack(classifier, attack, surrogate, x, goal, budget, domain, config,
                                    f"{attack.name} ({label}, {budget.norm} {budget.label})"))
        if config.checks:
            unbounded = Budget(the_plan.budgets[0].norm, math.inf)
            outcomes.append(replace(_attack(classifier, attack, surrogate, x, goal, unbounded, domain, config,
                                            f"{attack.name} ({label}, unbounded)"), role="unbounded"))
    if len(surrogates) > 1:
        for budget in the_plan.budgets:
            same = [o for o in outcomes if o.role == "attack" and o.budget == budget]
            outcomes.append(_best(same, budget))
    if config.checks and attack.name != "random":
        from snnsec.attacks.evasion.random_noise import RandomNoise

        for budget in the_plan.budgets:
            outcomes.append(replace(_attack(classifier, RandomNoise(), Surrogate("model"), x, goal, budget, domain,
                                            config, f"random ({budget.norm} {budget.label})"),
                                    role="random", surrogate="-"))
    return outcomes


def _attack(classifier: Classifier, attack: EvasionAttack, surrogate: Surrogate, x: torch.Tensor, goal: Goal,
            budget: Budget, domain: Domain, config: EvasionConfig, label: str) -> Outcome:
    """Run ``attack`` over ``x`` in batches, check every output, score the hard inputs."""
    victim = Victim(classifier, surrogate)
    generator = torch.Generator().manual_seed(config.seed)
    batch = 1 if attack.minimal else config.batch_size
    success, robust, l0, l1 = [], [], [], []
    clock = time.perf_counter()
    with progress_bar(label, total=len(x)) as advance:
        for start in range(0, len(x), batch):
            rows = torch.arange(start, min(start + batch, len(x)), device=x.device)
            clean, part = x[rows], goal.subset(rows)
            adv = attack.perturb(victim, clean, part, budget, domain, generator)
            domain.check(clean, adv, budget, who=attack.name)
            predicted = victim.predict(adv)
            moved = distances(clean, adv)
            success.append(part.success(predicted).cpu().numpy())
            robust.append((predicted == part.labels).cpu().numpy())
            l0.append(moved["l0"].cpu().numpy())
            l1.append(moved["l1"].cpu().numpy())
            advance(len(rows), success=float(np.concatenate(success).mean()))
    seconds = time.perf_counter() - clock
    name = attack.name
    return Outcome(name, "-" if attack.gradient_free else surrogate.label, budget, np.concatenate(success),
                   np.concatenate(robust), np.concatenate(l0), np.concatenate(l1), seconds, victim.queries)


def _at_budget(run: Outcome, budget: Budget) -> Outcome:
    """A minimal attack's run read at ``budget``: a success counts only within it (else the clean input stands)."""
    within = run.l0 <= budget.value if budget.norm == "l0" else np.ones_like(run.success)
    return replace(run, budget=budget, success=run.success & within, robust=run.robust | ~within,
                   l0=np.where(within, run.l0, 0), l1=np.where(within, run.l1, 0))


def _best(outcomes: list[Outcome], budget: Budget) -> Outcome:
    """Per sample, the strongest of several surrogates' outcomes: broken if any broke it (smallest L0 among them)."""
    success = np.any([o.success for o in outcomes], axis=0)
    robust = np.all([o.robust for o in outcomes], axis=0)
    big = np.iinfo(np.int64).max
    l0 = np.min([np.where(o.success, o.l0, big) for o in outcomes], axis=0)
    pick = np.argmin([np.where(o.success, o.l0, big) for o in outcomes], axis=0)
    l1 = np.choose(pick, [o.l1 for o in outcomes])
    return Outcome(outcomes[0].attack, "best", budget, success, robust, np.where(success, l0, 0),
                   np.where(success, l1, 0), sum(o.seconds for o in outcomes), sum(o.queries for o in outcomes),
                   role="best")


def obfuscation_checks(outcomes: list[Outcome], the_plan: Plan) -> list[dict[str, Any]]:
    """One entry per (check, surrogate curve): ``passed`` and a ``flag`` text when it failed."""
    checks: list[dict[str, Any]] = []
    curves: dict[str, list[Outcome]] = {}
    for o in outcomes:
        if o.role in ("attack", "best"):
            curves.setdefault(o.surrogate, []).append(o)
    random = {o.budget.value: o for o in outcomes if o.role == "random"}
    unbounded = {o.surrogate: o for o in outcomes if o.role == "unbounded"}
    for surrogate, curve in curves.items():
        curve = sorted(curve, key=lambda o: o.budget.value)
        accs = [float(o.robust.mean()) for o in curve]
        rises = [f"{a.budget.label}->{b.budget.label}" for a, b, x, y in zip(curve, curve[1:], accs, accs[1:]) if y > x]
        checks.append({"check": "monotone", "surrogate": surrogate, "passed": not rises,
                       "flag": f"{surrogate}: robust accuracy rises with the budget ({', '.join(rises)})" if rises else ""})
        for o in curve:
            baseline = random.get(o.budget.value)
            if baseline is not None and baseline.robust.mean() < o.robust.mean():
                checks.append({"check": "random", "surrogate": surrogate, "budget": o.budget.value, "passed": False,
                               "flag": f"{surrogate}: random noise beats the attack at budget {o.budget.label} "
                                       f"({100 * baseline.robust.mean():.1f}% vs {100 * o.robust.mean():.1f}%)"})
            elif baseline is not None:
                checks.append({"check": "random", "surrogate": surrogate, "budget": o.budget.value, "passed": True,
                               "flag": ""})
        if surrogate in unbounded:
            left = float(unbounded[surrogate].robust.mean())
            ok = left <= UNBOUNDED_MAX_ROBUST
            checks.append({"check": "unbounded", "surrogate": surrogate, "robust_accuracy": left, "passed": ok,
                           "flag": "" if ok else f"{surrogate}: the unbounded attack leaves {100 * left:.1f}% robust "
                                                 f"(expected about 0%)"})
    return checks


# ---- tables and plots -------------------------------------------------------------------------------------

EVASION_COLUMNS = [
    Column("Dataset", "config.model.dataset"),
    Column("Model", "config.model.model"),
    Column("Defense", "defense"),
    Column("Attack", "row.attack"),
    Column("Domain", "metrics.domain"),
    Column("Norm", "row.norm"),
    Column("Surrogate", "row.surrogate"),
    Column("Budget", "row.budget_label"),
    Column("Target", "target"),
    Column("CA (%)", "metrics.clean_accuracy", percent=True),
    Column("Robust (%)", "row.robust_accuracy", percent=True),
    Column("Success (%)", "row.success_rate", percent=True),
    Column("L0 mean", "row.l0_mean", decimals=1),
    Column("L0 median", "row.l0_median", decimals=1),
    Column("L0<200 (%)", "row.success_l0_lt_200", percent=True),
    Column("L0<800 (%)", "row.success_l0_lt_800", percent=True),
    Column("Events", "row.events_mean", decimals=1),
    Column("of T*P*H*W", "row.denominator"),
    Column("s/sample", "row.time_per_sample_s", decimals=3),
    Column("N", "row.samples"),
    Column("Checks", "checks"),
    Column("Run", "run_id"),
]


def table_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One table row per (record, outcome): the record with ``row`` (the outcome), ``checks`` (the flags that
    concern that row's curve, or ok) and display fields."""
    out = []
    for record in records:
        metrics, config = record["metrics"], record["config"]
        flags = metrics.get("flags", [])
        target = config["evasion"].get("target")
        at = config.get("adversarial_training")
        defense = "-" if not at else f"adv. training (pgd {at['norm']} {at['budget']:g})"
        for row in metrics["rows"]:
            mine = [f for f in flags if row["role"] in ("attack", "best", "unbounded") and f.startswith(row["surrogate"] + ":")]
            role = {"random": "random (baseline)", "unbounded": f"{row['attack']} (unbounded)"}.get(row["role"])
            shown = {**row, "attack": role or row["attack"]}
            out.append({**record, "row": shown, "defense": defense, "target": "-" if target is None else str(target),
                        "checks": "-" if row["role"] == "random" else ("FLAG: " + "; ".join(
                            f.split(": ", 1)[1] for f in mine) if mine else "ok")})
    return out


def write_evasion_tables(out_dir: Path) -> list[Path]:
    """Regenerate ``evasion_results.{md,csv,tex,png}`` in ``out_dir`` from its ``records.jsonl``."""
    from snnsec.plots import plot_evasion

    records = load_records(out_dir / "records.jsonl", "evasion")
    if not records:
        return []
    rows = table_rows(sorted(records, key=lambda r: r.get("finished", "")))
    for i, row in enumerate(rows):  # keep the per-record order stable under the tables' sort by finish time
        row["finished"] = f"{row.get('finished', '')}#{i:06d}"
    tables = write_tables(rows, EVASION_COLUMNS, out_dir, "evasion_results",
                          "Evasion attacks: robust accuracy over correctly classified test samples, success rate, "
                          "L0 (elements changed, of T*P*H*W) of successful examples, obfuscation checks")
    plot = plot_evasion(records, out_dir / "evasion_results.png")
    return [*tables, *([plot] if plot else [])]
