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

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from snnsec.attack_config import AttackConfig, Workspace
from snnsec.artifact_store import recorded_artifacts
from snnsec.attack_setup import AttackSetup, prepare_attack
from snnsec.attacks.evasion import (Budget, Goal, Surrogate, Victim, create_evasion, domain_of, parse_surrogates)
from snnsec.attacks.evasion.base import EvasionAttack
from snnsec.attacks.evasion.domains import Domain, DomainViolation, distances
from snnsec.classifier import Classifier
from snnsec.errors import ConfigError
from snnsec.experiment import attack_record_config
from snnsec.model_cache import adversarial_identity, adversarially_trained_model, clean_model, model_path
from snnsec.progress import log, progress_bar
from snnsec.records import Column, RunRecord, append_record, config_hash, write_tables
from snnsec.training import accuracy

UNBOUNDED_MAX_ROBUST = 0.05  # "about 0%": the unbounded attack must leave at most this share robust
SPARSE_THRESHOLDS = (200, 800)  # success at L0 < 200 and < 800 (PDSG-SDA's table)
DEFAULT_BUDGETS = {"binary": (10, 50, 200, 800), "counts": (1, 2, 4), "continuous": (0.05, 0.1, 0.2),
                   "events": (100, 400, 1600, 6400), "area": (0.01, 0.03, 0.05)}
FIT_SAMPLES = 512  # training samples a universal attack (patch) is fitted on: a seeded, class-stratified draw
BASELINES = ("random", "random-events")  # the obfuscation check's baselines
#: Seeding keys of training samples realised through a filter start here (test samples: their row).
TRAINING_KEY = 1 << 32
MODES = ("static", "adaptive")  # with an event filter: crafted without it, or through it (both scored through it)
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
    event_filter: str | None = None  # "ba", "mask" or "purify": an event filter in front of the model
    filter_options: tuple[tuple[str, Any], ...] = ()
    transfer_to: tuple[str, ...] = ()  # other zoo models ("name" or "name:config") the examples are also scored on

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
    event_filter: Any = None  # an EventFilter in front of the model

    @property
    def on_events(self) -> bool:
        return self.domain.name == "events"

    @property
    def realised(self) -> bool:
        """A frame attack in front of an event filter: its edits are realised as events (attacks.evasion.realise)."""
        return self.event_filter is not None and not self.on_events


def plan(config: EvasionConfig, encoding: str, slicing: str = "time") -> Plan:
    """Check everything about ``config`` that can be checked without data (one-line errors, no work done)."""
    from snnsec.attacks.evasion.event_base import EventAttack

    attack = create_evasion(config.attack, **dict(config.options))
    domain = domain_of("events" if isinstance(attack, EventAttack) else encoding)
    norm = config.norm or attack.default_norm or domain.default_norm
    if attack.needs_training_data and not isinstance(config.target, int):
        raise ConfigError(f"evasion attack {attack.name!r} is trained for one target class: pass --target CLASS")
    values = config.budgets or DEFAULT_BUDGETS["area" if norm == "area" else domain.name]
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
    event_filter = None
    if config.event_filter is not None:
        if domain.name != "events":
            from snnsec.attacks.evasion.realise import check_realisable

            check_realisable(slicing)  # a frame attack's edits are realised as events in front of the filter
        from snnsec.defenses.event_filters import create_event_filter

        event_filter = create_event_filter(config.event_filter, **dict(config.filter_options))
    elif config.filter_options:
        raise ConfigError("--filter-opt needs --filter")
    from snnsec.zoo import MODELS

    for spec in config.transfer_to:
        name, _, model_config = spec.partition(":")
        entry = MODELS.get(name)
        if model_config and model_config not in entry.configs:
            raise ConfigError(f"--transfer-to {spec}: {name} has no config {model_config!r}; its configs: "
                              f"{', '.join(entry.configs)}")
    return Plan(attack, domain, budgets, parse_surrogates(config.surrogates), adversary, event_filter)


def run_evasion(config: EvasionConfig, model: AttackConfig, workspace: Workspace | None = None) -> RunRecord:
    """Attack ``model``'s trained (cached) classifier with ``config`` and append the record; returns it."""
    workspace = workspace or Workspace()
    started, clock = datetime.now(timezone.utc), time.perf_counter()
    the_plan = plan(config, model.encoding, model.slicing)  # bad options fail here, before data or training
    setup = prepare_attack(model, workspace)
    if isinstance(config.target, int) and config.target >= setup.num_classes:
        raise ConfigError(f"--target {config.target} is not a class of {model.dataset} (0..{setup.num_classes - 1})")
    classifier = (adversarially_trained_model(setup, workspace, the_plan.adversary) if the_plan.adversary
                  else clean_model(setup, workspace))
    inputs = Inputs.of(setup, model, the_plan)
    log("clean accuracy on the test set" + (" (through the event filter)" if the_plan.event_filter else ""))
    clean_accuracy = inputs.clean_accuracy(classifier)
    x, goal, rows = attacked_samples(classifier, setup, config, inputs)
    what = "raw events" if the_plan.on_events else f"{the_plan.domain.name} frames"
    log(f"attacking {len(x)} correctly classified test samples ({the_plan.attack.name}, {what}, "
        f"{the_plan.budgets[0].norm} budgets {', '.join(b.label for b in the_plan.budgets)})")
    results = evaluate(classifier, the_plan, inputs.subset(rows, x), goal, config)
    checks = obfuscation_checks(results, the_plan)
    for name, other in transfer_models(config, model, workspace):
        results.extend(transferred(results, other, name, goal))
    spec = setup.input_spec
    denominator = spec.frames * spec.channels * spec.height * spec.width
    metrics = {"clean_accuracy": clean_accuracy, "attacked_samples": len(x), "sample_rows": rows,
               "domain": the_plan.domain.name, "norm": the_plan.budgets[0].norm, "denominator": denominator,
               "rows": [r.summary(denominator) for r in results], "checks": checks,
               "flags": [c["flag"] for c in checks if c["flag"]]}
    identity = (setup.clean_identity if the_plan.adversary is None else
                adversarial_identity(setup, the_plan.adversary))
    full_config = {"evasion": {**asdict(config), "budgets": [b.value for b in the_plan.budgets],
                               "event_filter": None if the_plan.event_filter is None else the_plan.event_filter.params(),
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
                       artifacts=recorded_artifacts(workspace.publish_to, {"model": model_path(workspace, identity)}))
    append_record(workspace.out_dir / "records.jsonl", record)
    write_evasion_tables(workspace.out_dir)
    return record


def _model_config(setup: AttackSetup) -> dict[str, Any]:
    """The attacked model's part of the record: data, model, recipe and runtime (no trigger: a clean model)."""
    full = attack_record_config(setup, "")
    keep = ("dataset", "model", "model_config", "frames", "slicing", "size", "encoding", "epochs", "batch_size",
            "lr", "optimizer", "seed", "model_params", "data_version", "runtime")
    return {k: full[k] for k in keep if k in full}


@dataclass
class Inputs:
    """The test inputs as the (defended) model sees them: frames, and for event attacks the raw streams and
    the views that frame them (``view``: through the event filter, if any)."""

    test_set: Any
    train_set: Any = None  # for attacks fitted on training data (universal patches)
    raw: Any = None  # the raw test streams ((events, label) per row), for event attacks and filters
    view: Any = None  # EventView through the filter: what is scored
    rows: list[int] | None = None  # the attacked rows (after subset)
    frames: torch.Tensor | None = None  # clean frames of the attacked rows, as scored
    raw_train: Any = None  # the raw training streams (a frame attack fitted through a filter)

    @staticmethod
    def of(setup: AttackSetup, model: AttackConfig, the_plan: Plan) -> Inputs:
        if not the_plan.on_events and the_plan.event_filter is None:
            return Inputs(setup.test_set, setup.train_set)
        from snnsec.attacks.evasion.event_base import EventView
        from snnsec.datasets import DATASETS

        sensor = tuple(DATASETS.get(model.dataset).info.sensor_size)
        return Inputs(setup.test_set, setup.train_set, setup.raw_test,
                      EventView(sensor, setup.framing, the_plan.event_filter), raw_train=setup.raw_train)

    def training_rows(self, seed: int) -> np.ndarray:
        """Up to :data:`FIT_SAMPLES` training rows, a seeded class-stratified draw."""
        from snnsec.attack_setup import _sample_rows

        labels = np.asarray(self.train_set.labels)
        return _sample_rows(labels, FIT_SAMPLES, seed) if len(labels) > FIT_SAMPLES else np.arange(len(labels))

    def training_sample(self, seed: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The frames and labels of :meth:`training_rows`."""
        rows = self.training_rows(seed)
        x = torch.stack([torch.as_tensor(np.asarray(self.train_set[int(i)][0]), dtype=torch.float32) for i in rows])
        return x.to(device), torch.as_tensor(np.asarray(self.train_set.labels)[rows], device=device)

    def frames_of(self, rows: Any) -> torch.Tensor:
        if self.view is not None:
            return self.view.batch([self.raw[int(i)][0] for i in rows])
        return torch.stack([torch.as_tensor(np.asarray(self.test_set[int(i)][0]), dtype=torch.float32) for i in rows])

    def clean_accuracy(self, classifier: Classifier) -> float:
        if self.view is None or self.view.event_filter is None:
            return accuracy(classifier, self.test_set)
        labels = np.asarray(self.test_set.labels)
        right = 0
        for start in range(0, len(labels), 128):
            rows = range(start, min(start + 128, len(labels)))
            right += int((classifier.predict(self.frames_of(rows).to(classifier.device)).cpu().numpy()
                          == labels[start:start + 128]).sum())
        return right / len(labels)

    def subset(self, rows: list[int], frames: torch.Tensor) -> Inputs:
        return replace(self, rows=list(rows), frames=frames)

    def streams(self, positions: Any) -> list[np.ndarray]:
        return [self.raw[self.rows[int(i)]][0] for i in positions]


def attacked_samples(classifier: Classifier, setup: AttackSetup, config: EvasionConfig,
                     inputs: Inputs | None = None) -> tuple[torch.Tensor, Goal, list[int]]:
    """``config.samples`` test samples in a seeded random order that the model classifies correctly (targeted:
    not of the target class), their goal, and their rows in the test set."""
    test = setup.test_set
    inputs = inputs or Inputs(test)
    order = np.random.default_rng(config.seed).permutation(len(test))
    chosen: list[int] = []
    for start in range(0, len(order), 128):
        rows = order[start:start + 128]
        frames = inputs.frames_of(rows)
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
    x = inputs.frames_of(chosen).to(classifier.device)
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
    extra: dict[str, Any] = field(default_factory=dict)  # event attacks: per-sample inserted/deleted/flipped/share
    mode: str = ""  # with an event filter: "static" or "adaptive"
    adversarial: Any = field(default=None, repr=False)  # the scored inputs [N, T, P, H, W] (for transfer)
    transfer_to: str = ""  # role "transfer": the model the examples were scored on

    def summary(self, denominator: int) -> dict[str, Any]:
        n = len(self.success)
        won = self.success
        l0, l1 = self.l0[won], self.l1[won]
        row = {"role": self.role, "attack": self.attack, "surrogate": self.surrogate, "norm": self.budget.norm,
               "budget": self.budget.value if self.budget.bounded else None, "budget_label": self.budget.label,
               "robust_accuracy": float(self.robust.mean()), "success_rate": float(won.mean()),
               "l0_mean": float(l0.mean()) if len(l0) else None, "l0_median": float(np.median(l0)) if len(l0) else None,
               "events_mean": float(l1.mean()) if len(l1) else None,
               "events_median": float(np.median(l1)) if len(l1) else None,
               "time_per_sample_s": round(self.seconds / n, 4), "queries_per_sample": round(self.queries / n, 1),
               "samples": n, "denominator": denominator}
        for threshold in SPARSE_THRESHOLDS:
            row[f"success_l0_lt_{threshold}"] = float((won & (self.l0 < threshold)).mean())
        if self.mode:
            row["mode"] = self.mode
        if self.transfer_to:
            row["transfer_to"] = self.transfer_to
        for key, values in self.extra.items():  # event attacks: edits of successful examples
            row[f"{key}_mean"] = float(np.asarray(values)[won].mean()) if won.any() else None
        return row


def evaluate(classifier: Classifier, the_plan: Plan, inputs: Inputs, goal: Goal,
             config: EvasionConfig) -> list[Outcome]:
    """Every (surrogate, budget) outcome, the best over surrogates, the random baseline and the unbounded runs;
    with an event filter, each crafted statically (without it) and adaptively (through it)."""
    attack = the_plan.attack
    outcomes: list[Outcome] = []
    surrogates = (Surrogate("model"),) if attack.gradient_free else the_plan.surrogates
    modes = MODES if the_plan.event_filter is not None else ("",)
    norm = the_plan.budgets[0].norm
    unbounded = Budget("area", 1.0) if norm == "area" else Budget(norm, math.inf)  # a patch: the whole frame
    checks = config.checks and attack.name not in BASELINES  # a random baseline is not checked against itself
    for mode in modes:
        for surrogate in surrogates:
            label = ("-" if attack.gradient_free else surrogate.label) + (f", {mode}" if mode else "")

            def run(budget: Budget, title: str) -> Outcome:
                return _attack(classifier, attack, surrogate, inputs, goal, budget, the_plan, config, title, mode)

            if attack.minimal:  # one run, uncapped; each budget reads it
                whole = run(unbounded, f"{attack.name} ({label})")
                outcomes.extend(_at_budget(whole, b, inputs.frames) for b in the_plan.budgets)
                if checks:
                    outcomes.append(replace(whole, role="unbounded"))
                continue
            for budget in the_plan.budgets:
                outcomes.append(run(budget, f"{attack.name} ({label}, {budget.norm} {budget.label})"))
            if checks:
                outcomes.append(replace(run(unbounded, f"{attack.name} ({label}, unbounded)"), role="unbounded"))
        if len(surrogates) > 1:
            for budget in the_plan.budgets:
                same = [o for o in outcomes if o.role == "attack" and o.budget == budget and o.mode == mode]
                outcomes.append(_best(same, budget))
    if checks:
        from snnsec.attacks.evasion.random_noise import RandomEvents, RandomNoise

        baseline = RandomEvents() if the_plan.on_events else RandomNoise()
        for budget in the_plan.budgets:
            outcomes.append(replace(_attack(classifier, baseline, Surrogate("model"), inputs, goal, budget, the_plan,
                                            config, f"random ({budget.norm} {budget.label})", modes[-1]),
                                    role="random", surrogate="-"))
    return outcomes


def _attack(classifier: Classifier, attack: EvasionAttack, surrogate: Surrogate, inputs: Inputs, goal: Goal,
            budget: Budget, the_plan: Plan, config: EvasionConfig, label: str, mode: str = "") -> Outcome:
    """Run ``attack`` over the attacked samples in batches, check every output, score the hard inputs (through
    the event filter, if any; ``mode`` "static" crafts without it, "adaptive" through it)."""
    victim = Victim(classifier, surrogate)
    generator = torch.Generator().manual_seed(config.seed)
    x = inputs.frames
    realiser = crafter = None
    if the_plan.realised:  # a frame attack in front of an event filter: crafted on unfiltered frames, realised
        from snnsec.attacks.evasion.realise import FilteredVictim, FrameRealiser

        realiser = FrameRealiser(inputs.view, config.seed)
        crafter = FilteredVictim(victim, realiser) if mode == "adaptive" else victim
        streams = inputs.streams(range(len(x)))
        unfiltered = realiser.unfiltered(streams, x.device)
        if mode == "adaptive":
            crafter.register(streams, unfiltered, inputs.rows)
    if attack.needs_training_data:
        log(f"{attack.name}: fitting on the training set for target {config.target} ({budget.norm} {budget.label})")
        train_x, train_y = inputs.training_sample(config.seed, x.device)
        if realiser is not None and mode == "adaptive":  # fitted through the filter: the training streams realised too
            train_rows = inputs.training_rows(config.seed)
            train_streams = [inputs.raw_train[int(i)][0] for i in train_rows]
            train_x = realiser.unfiltered(train_streams, x.device)
            crafter.register(train_streams, train_x, [TRAINING_KEY + int(i) for i in train_rows])
        attack = attack.fit(crafter or victim, train_x, train_y, int(config.target), budget, generator)
    batch = 1 if attack.minimal else config.batch_size
    success, robust, l0, l1, scored = [], [], [], [], []
    edits: dict[str, list[np.ndarray]] = {"inserted": [], "deleted": [], "flipped": [], "share": []}
    clock = time.perf_counter()
    with progress_bar(label, total=len(x)) as advance:
        for start in range(0, len(x), batch):
            rows = torch.arange(start, min(start + batch, len(x)), device=x.device)
            clean, part = x[rows], goal.subset(rows)
            counts = None  # events inserted/deleted/flipped per sample, where the attack's output became a stream
            if the_plan.on_events:
                adv, counts = _attack_events(attack, victim, inputs, rows, part, budget, generator, mode)
                moved = distances(clean, adv)
            elif realiser is not None:
                edited = attack.perturb(crafter, unfiltered[rows], part, budget, the_plan.domain, generator)
                the_plan.domain.check(unfiltered[rows], edited, budget, who=attack.name)
                adv, counts = _realised(realiser, inputs, rows, unfiltered[rows], edited, attack.name)
                moved = distances(unfiltered[rows], edited)
            else:
                adv = attack.perturb(victim, clean, part, budget, the_plan.domain, generator)
                the_plan.domain.check(clean, adv, budget, who=attack.name)
                moved = distances(clean, adv)
            if counts is not None:
                for key in ("inserted", "deleted", "flipped"):
                    edits[key].append(np.asarray([c[key] for c in counts]))
                edits["share"].append(np.asarray([c["total"] / max(1, c["events"]) for c in counts]))
            predicted = victim.predict(adv)
            scored.append(adv.detach())
            success.append(part.success(predicted).cpu().numpy())
            robust.append((predicted == part.labels).cpu().numpy())
            l0.append(moved["l0"].cpu().numpy())
            l1.append(moved["l1"].cpu().numpy() if counts is None else np.asarray([c["total"] for c in counts], float))
            advance(len(rows), success=float(np.concatenate(success).mean()))
    seconds = time.perf_counter() - clock
    extra = {k: np.concatenate(v) for k, v in edits.items() if v}
    queries = victim.queries + (crafter.queries if crafter is not None and crafter is not victim else 0)
    return Outcome(attack.name, "-" if attack.gradient_free else surrogate.label, budget, np.concatenate(success),
                   np.concatenate(robust), np.concatenate(l0), np.concatenate(l1), seconds, queries,
                   extra=extra, mode=mode, adversarial=torch.cat(scored))


def _attack_events(attack: Any, victim: Victim, inputs: Inputs, rows: torch.Tensor, goal: Goal, budget: Budget,
                   generator: torch.Generator, mode: str) -> tuple[torch.Tensor, list[dict[str, int]]]:
    """An event attack on the streams of ``rows``: the checked adversarial streams, framed as scored."""
    from snnsec.attacks.evasion.domains import check_event_stream

    clean_streams = inputs.streams(rows.tolist())
    view = inputs.view
    crafting_view = view.without_filter() if mode == "static" else view
    adv_streams = attack.perturb_events(victim, clean_streams, goal, budget, crafting_view, generator)
    if len(adv_streams) != len(clean_streams):
        raise DomainViolation(f"{attack.name}: returned {len(adv_streams)} streams for {len(clean_streams)} samples")
    limit = {"total": int(budget.value)} if budget.bounded else None
    counts = []
    for clean, adv in zip(clean_streams, adv_streams):
        found = check_event_stream(adv, view.sensor_size, clean, limit, who=attack.name)
        counts.append({**found, "events": len(clean)})
    return view.batch(adv_streams, victim.device), counts


def _realised(realiser: Any, inputs: Inputs, rows: torch.Tensor, clean: torch.Tensor, edited: torch.Tensor,
              who: str) -> tuple[torch.Tensor, list[dict[str, int]]]:
    """A frame attack's frames ``edited`` (of the unfiltered ``clean`` frames of ``rows``) realised as streams,
    checked, and framed through the filter as scored; the edits of each stream."""
    from snnsec.attacks.evasion.domains import check_event_stream

    frames, counts = [], []
    for i, before, after in zip(rows.tolist(), clean, edited):
        stream = inputs.streams([i])[0]
        made = realiser.stream(stream, before, after, inputs.rows[i])
        counts.append({**check_event_stream(made, inputs.view.sensor_size, stream, None, who=who),
                       "events": len(stream)})
        frames.append(inputs.view.frames(made))
    return torch.stack(frames).to(clean.device), counts


def transfer_models(config: EvasionConfig, model: AttackConfig, workspace: Workspace) -> list[tuple[str, Classifier]]:
    """The models named by ``config.transfer_to``, trained (cached) on the same data with the same recipe."""
    out = []
    for spec in config.transfer_to:
        name, _, model_config = spec.partition(":")
        other = replace(model, model=name, model_config=model_config or None)
        out.append((spec, clean_model(prepare_attack(other, workspace), workspace)))
    return out


def transferred(outcomes: list[Outcome], target: Classifier, name: str, goal: Goal) -> list[Outcome]:
    """Each attack outcome's adversarial inputs scored on ``target`` (a transfer attack, no queries to it)."""
    out = []
    for o in outcomes:
        if o.role not in ("attack", "best") or o.adversarial is None:
            continue
        predicted = target.predict(o.adversarial.to(target.device)).to(goal.labels.device)
        out.append(replace(o, role="transfer", transfer_to=name, success=goal.success(predicted).cpu().numpy(),
                           robust=(predicted == goal.labels).cpu().numpy(), adversarial=None))
    return out


def _at_budget(run: Outcome, budget: Budget, clean: torch.Tensor) -> Outcome:
    """A minimal attack's run read at ``budget``: a success counts only within it (else the clean input stands)."""
    size = {"l0": run.l0, "events": run.l1}.get(budget.norm)
    within = size <= budget.value if size is not None else np.ones_like(run.success)
    keep = torch.as_tensor(within, device=clean.device).view(-1, *[1] * (clean.dim() - 1))
    return replace(run, budget=budget, success=run.success & within, robust=run.robust | ~within,
                   l0=np.where(within, run.l0, 0), l1=np.where(within, run.l1, 0),
                   adversarial=torch.where(keep, run.adversarial, clean))


def _best(outcomes: list[Outcome], budget: Budget) -> Outcome:
    """Per sample, the strongest of several surrogates' outcomes: broken if any broke it (smallest L0 among them)."""
    success = np.any([o.success for o in outcomes], axis=0)
    robust = np.all([o.robust for o in outcomes], axis=0)
    big = np.iinfo(np.int64).max
    l0 = np.min([np.where(o.success, o.l0, big) for o in outcomes], axis=0)
    pick = np.argmin([np.where(o.success, o.l0, big) for o in outcomes], axis=0)
    l1 = np.choose(pick, [o.l1 for o in outcomes])
    stacked = torch.stack([o.adversarial for o in outcomes])
    adversarial = stacked[torch.as_tensor(pick, device=stacked.device), torch.arange(stacked.shape[1], device=stacked.device)]
    return Outcome(outcomes[0].attack, "best", budget, success, robust, np.where(success, l0, 0),
                   np.where(success, l1, 0), sum(o.seconds for o in outcomes), sum(o.queries for o in outcomes),
                   role="best", mode=outcomes[0].mode, adversarial=adversarial)


def curve_name(outcome: Outcome) -> str:
    """A robust-accuracy curve's name: the surrogate, and the mode when an event filter is in front."""
    return outcome.surrogate + (f" {outcome.mode}" if outcome.mode else "")


def obfuscation_checks(outcomes: list[Outcome], the_plan: Plan) -> list[dict[str, Any]]:
    """One entry per (check, curve): ``passed`` and a ``flag`` text (starting with the curve's name) when it
    failed. The random baseline is scored like the attack (through the filter, if any). A static curve (crafted
    without the event filter in front of the model) gets only the monotone check."""
    checks: list[dict[str, Any]] = []
    curves: dict[str, list[Outcome]] = {}
    for o in outcomes:
        if o.role in ("attack", "best"):
            curves.setdefault(curve_name(o), []).append(o)
    random = {o.budget.value: o for o in outcomes if o.role == "random"}
    unbounded = {curve_name(o): o for o in outcomes if o.role == "unbounded"}
    for name, curve in curves.items():
        curve = sorted(curve, key=lambda o: o.budget.value)
        accs = [float(o.robust.mean()) for o in curve]
        rises = [f"{a.budget.label}->{b.budget.label}" for a, b, x, y in zip(curve, curve[1:], accs, accs[1:]) if y > x]
        checks.append({"check": "monotone", "curve": name, "passed": not rises,
                       "flag": f"{name}: robust accuracy rises with the budget ({', '.join(rises)})" if rises else ""})
        if curve[0].mode == "static":
            # Crafted without the event filter and scored through it: an attack that stays weak there shows the
            # filter at work (the static/adaptive comparison reports it), not a gradient obfuscated by the model.
            continue
        for o in curve:
            baseline = random.get(o.budget.value)
            if baseline is None:
                continue
            beaten = baseline.robust.mean() < o.robust.mean()
            checks.append({"check": "random", "curve": name, "budget": o.budget.value, "passed": not beaten,
                           "flag": f"{name}: random noise beats the attack at budget {o.budget.label} "
                                   f"({100 * baseline.robust.mean():.1f}% vs {100 * o.robust.mean():.1f}%)"
                           if beaten else ""})
        if name in unbounded:
            left = float(unbounded[name].robust.mean())
            ok = left <= UNBOUNDED_MAX_ROBUST
            checks.append({"check": "unbounded", "curve": name, "robust_accuracy": left, "passed": ok,
                           "flag": "" if ok else f"{name}: the unbounded attack leaves {100 * left:.1f}% robust "
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
    Column("Filter", "filter"),
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
    Column("Share (%)", "row.share_mean", percent=True),  # event attacks: edits as a share of the sample's events
    Column("Queries", "row.queries_per_sample", decimals=0),
    Column("of T*P*H*W", "row.denominator"),
    Column("s/sample", "row.time_per_sample_s", decimals=3),
    Column("N", "row.samples"),
    Column("Checks", "checks"),
    Column("Run", "run_id"),
]


def attack_label(row: dict[str, Any]) -> str:
    """How an evasion outcome row is named in tables: its attack, marked as baseline, unbounded or transfer."""
    return {"random": f"{row['attack']} (baseline)", "unbounded": f"{row['attack']} (unbounded)",
            "transfer": f"{row['attack']} -> {row.get('transfer_to')}"}.get(row["role"], row["attack"])


def defense_label(config: dict[str, Any]) -> str:
    """An evasion record's defense as tables name it: adversarial training with its budget, or ``-``."""
    at = config.get("adversarial_training")
    return "-" if not at else f"adv. training (pgd {at['norm']} {at['budget']:g})"


def table_rows(records: list[dict[str, Any]], cross_flags: dict[tuple[str, str], str] | None = None) -> list[dict[str, Any]]:
    """One table row per (record, outcome): the record with ``row`` (the outcome), ``checks`` (the flags that
    concern that row's curve, or ok) and display fields."""
    out = []
    for record in records:
        metrics, config = record["metrics"], record["config"]
        flags = metrics.get("flags", [])
        target = config["evasion"].get("target")
        defense = defense_label(config)
        event_filter = config["evasion"].get("event_filter")
        for row in metrics["rows"]:
            name = row["surrogate"] + (f" {row['mode']}" if row.get("mode") else "")
            mine = [f for f in flags if row["role"] in ("attack", "best", "unbounded") and f.startswith(name + ":")]
            cross = (cross_flags or {}).get((record["run_id"], row["budget_label"]))
            if cross and row["role"] in ("attack", "best"):
                mine.append(f"{name}: {cross}")
            shown = {**row, "attack": attack_label(row)}
            shown_filter = "-" if not event_filter else f"{event_filter['filter']} ({row.get('mode', '')})"
            slim = {k: v for k, v in metrics.items() if k not in ("rows", "checks", "sample_rows")}  # per row: its own
            out.append({**record, "metrics": slim, "row": shown, "defense": defense,
                        "target": "-" if target is None else str(target),
                        "filter": shown_filter,
                        "checks": "-" if row["role"] in ("random", "transfer") else ("FLAG: " + "; ".join(
                            f.split(": ", 1)[1] for f in mine) if mine else "ok")})
    return out


def query_beats_white_box(records: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """Across runs: where a gradient-free (query) attack leaves fewer samples robust than every white-box
    attack at the same budget, on the same model, data, defense and filter mode: ``{(run id, budget label):
    flag}`` for the white-box rows (the obfuscation check of "Evasion II")."""
    from snnsec.attacks.evasion import EVASIONS

    groups: dict[tuple, list[tuple[str, dict[str, Any]]]] = {}
    for record in records:
        config = record["config"]
        for row in record["metrics"]["rows"]:
            if row["role"] not in ("attack", "best") or row["attack"] in BASELINES or row["attack"] not in EVASIONS:
                continue
            key = (json_key(config["model"]), json_key(config.get("adversarial_training")),
                   json_key(config["evasion"].get("event_filter")), row.get("mode", ""), row["norm"], row["budget"],
                   json_key(config["evasion"].get("target")))
            groups.setdefault(key, []).append((record["run_id"], row))
    flags: dict[tuple[str, str], str] = {}
    for rows in groups.values():
        query = [(r["robust_accuracy"], r["attack"]) for _, r in rows if EVASIONS.get(r["attack"]).gradient_free]
        white = [(run, r) for run, r in rows if not EVASIONS.get(r["attack"]).gradient_free]
        if not query or not white:
            continue
        best_query, name = min(query)
        if best_query < min(r["robust_accuracy"] for _, r in white):
            for run, r in white:
                flags[(run, r["budget_label"])] = (f"query attack {name} beats it ({100 * best_query:.1f}% vs "
                                                   f"{100 * r['robust_accuracy']:.1f}% robust)")
    return flags


def json_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def write_evasion_tables(out_dir: Path) -> list[Path]:
    """Regenerate ``evasion_results.{md,csv,tex,png}`` and ``evasion_transfer.md`` in ``out_dir`` from its
    results database (:func:`snnsec.results_db.load_results`)."""
    from snnsec.plots import plot_evasion
    from snnsec.results_db import load_results

    records = load_results(out_dir, "evasion")
    if not records:
        return []

    def rows(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = table_rows(sorted(recs, key=lambda r: r.get("finished", "")), query_beats_white_box(recs))
        for i, row in enumerate(out):  # keep the per-record order stable under the tables' sort by finish time
            row["finished"] = f"{row.get('finished', '')}#{i:06d}"
        return out

    return write_tables(records, EVASION_COLUMNS, out_dir, "evasion_results",
                        "Evasion attacks: robust accuracy over correctly classified test samples, success rate, "
                        "L0 (elements changed, of T*P*H*W) of successful examples, obfuscation checks", rows=rows,
                        also=lambda recs: [plot_evasion(list(recs), out_dir / "evasion_results.png"),
                                           *write_transfer_matrix(list(recs), out_dir)])


def write_transfer_matrix(records: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """``evasion_transfer.md``: robust accuracy (%) of each target model (columns) on adversarial inputs
    crafted against each source model (rows: source, attack, surrogate, budget); the diagonal is white-box."""
    from snnsec import integrity

    cells: dict[tuple, dict[str, float]] = {}
    targets: list[str] = []
    for record in sorted(records, key=lambda r: r.get("finished", "")):
        model = record["config"]["model"]
        source = f"{model['model']}:{model['model_config']}" if model.get("model_config") else model["model"]
        for row in record["metrics"]["rows"]:
            if row["role"] not in ("attack", "best", "transfer"):
                continue
            key = (record["config"]["model"]["dataset"], source, row["attack"], row["surrogate"], row["budget_label"])
            column = row.get("transfer_to") or source
            if row["role"] == "transfer" or any(r.get("role") == "transfer" for r in record["metrics"]["rows"]):
                cells.setdefault(key, {})[column] = 100 * row["robust_accuracy"]
                if column not in targets:
                    targets.append(column)
    if not cells:
        return []
    head = ["Dataset", "Source", "Attack", "Surrogate", "Budget", *targets]
    lines = ["# Transfer: robust accuracy (%) of each model (columns) on examples crafted against the source "
             "(the source's own column is white-box)", "", "| " + " | ".join(head) + " |",
             "|" + "|".join("---" for _ in head) + "|"]
    for key, row in cells.items():
        lines.append("| " + " | ".join([*key, *(f"{row[t]:.1f}" if t in row else "-" for t in targets)]) + " |")
    path = out_dir / "evasion_transfer.md"
    integrity.atomic_write_text(path, "\n".join(lines) + "\n")
    return [path]
