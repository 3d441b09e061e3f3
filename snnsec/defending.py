"""The defense pipeline: an earlier attack's cached backdoored model and data -> one defense -> metrics."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from snnsec.attack_config import AttackConfig, Workspace
from snnsec.artifact_store import recorded_artifacts
from snnsec.attack_setup import prepare_attack
from snnsec.attacks.poisoning import PoisonConfig
from snnsec.defenses import DEFENSES, DefenseContext, GroundTruth, create_defense
from snnsec.defenses.defender_data import draw_reserve, split_for_defender
from snnsec.detection import defense_effectiveness_rate
from snnsec.errors import ConfigError
from snnsec.experiment import attack_config_of, attack_record_config, record_attack
from snnsec.model_cache import backdoored_model, model_path
from snnsec.plots import plot_defenses
from snnsec.progress import log
from snnsec.records import Column, RunRecord, append_record, config_hash, write_tables
from snnsec.results_db import DB_NAME, load_results
from snnsec.zoo import MODELS


@dataclass(frozen=True)
class DefenseConfig:
    """Everything that determines a defense run, besides the attack it defends against."""

    defense: str
    options: tuple[tuple[str, Any], ...] = ()  # defense parameters, e.g. (("removal_rate", 0.2),)
    reserve_rate: float = 0.05  # share of the training set the defender holds as clean, labelled data
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.reserve_rate < 1:
            raise ConfigError(f"--reserve-rate must be in (0, 1), got {self.reserve_rate}")


DEFENSE_COLUMNS = [
    Column("Dataset", "config.attack.dataset"),
    Column("Model", "config.attack.model"),
    Column("Trigger", "config.attack.trigger"),
    Column("Rate", "config.attack.poison_rate"),
    Column("Defense", "config.defense.defense"),
    Column("Family", "metrics.family"),
    Column("CA before (%)", "metrics.ca_before", percent=True),
    Column("ASR before (%)", "metrics.asr_before", percent=True),
    Column("CA after (%)", "metrics.ca_after", percent=True),
    Column("ASR after (%)", "metrics.asr_after", percent=True),
    Column("DER", "metrics.der", decimals=3),
    Column("AUROC", "metrics.auroc", decimals=3),
    Column("TPR", "metrics.tpr", decimals=3),
    Column("FPR", "metrics.fpr", decimals=3),
    Column("Time (s)", "metrics.defense_time_s", decimals=1),
    Column("Attack run", "config.attack_run_id"),
    Column("Run", "run_id"),
]


def find_attack(run_id: str, out_dir: Path) -> tuple[AttackConfig, str]:
    """The config and full id of the attack record in ``out_dir`` whose run id starts with ``run_id``."""
    record = find_attack_record(run_id, out_dir)
    try:
        return attack_config_of(record), record["run_id"]
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"attack run {record['run_id']} in {out_dir / 'records.jsonl'} is damaged "
                          f"({type(err).__name__}: {err}); rerun it with `snnsec attack`") from None


def find_attack_record(run_id: str, out_dir: Path, who: str = "--attack-run") -> dict[str, Any]:
    """The attack record in ``out_dir`` whose run id is ``run_id`` or starts with it (the one lookup of the
    CLI and :func:`snnsec.api.load_run`; ``who`` names where the id came from). An empty id, a missing
    records file, no match (the runs there listed) and several matches (listed) are one-line ConfigErrors."""
    run_id, path = run_id.strip(), out_dir / "records.jsonl"
    if not run_id:
        raise ConfigError(f"{who} needs a run id (or a unique prefix of one); see the Run column of "
                          f"{out_dir / 'attack_results.md'}")
    if not path.exists() and not (out_dir / DB_NAME).exists():
        raise ConfigError(f"no attack run with id {run_id!r}: no run records at {path} (nor {DB_NAME}); pass the "
                          "out dir the attack was run with (--out)")
    path = path if path.exists() else out_dir / DB_NAME
    records: dict[str, dict[str, Any]] = {}
    for record in load_results(out_dir, "attack"):  # the database, caught up with records.jsonl
        records.setdefault(record["run_id"], record)  # a run recorded twice: its first record
    matches = sorted(i for i in records if i.startswith(run_id))
    if not matches:
        raise ConfigError(f"no attack run with id {run_id!r} in {path}; attack runs there: {_listed(sorted(records))} "
                          f"(the Run column of {out_dir / 'attack_results.md'}; or pass --out)")
    if len(matches) > 1:
        described = [f"{i} ({records[i]['config'].get('dataset')}, {records[i]['config'].get('model')}, "
                     f"{records[i]['config'].get('trigger')})" for i in matches]
        raise ConfigError(f"{len(matches)} attack runs in {path} start with {run_id!r}: {_listed(described, '; ')}; "
                          "give more of the id")
    return records[matches[0]]


def _listed(items: list[str], sep: str = ", ", limit: int = 10) -> str:
    """``items`` joined, the first ``limit`` of them and how many more."""
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return sep.join(items[:limit]) + more if items else "(none)"


def run_defense(config: DefenseConfig, attack: AttackConfig, workspace: Workspace | None = None,
                attack_run_id: str | None = None) -> RunRecord:
    """Run one defense against the backdoored model of ``attack``. An attack given by its options and not
    yet recorded in the workspace is run first (as ``snnsec attack``: cached models are reused), so
    that every defense row points at an attack row. ``workspace`` defaults to ``Workspace()`` (read at call time)."""
    workspace = workspace or Workspace()
    started = datetime.now(timezone.utc)
    defense = create_defense(config.defense, **dict(config.options))  # bad parameters fail before any work
    defense.check_model(attack.model, MODELS.get(attack.model).spiking)  # e.g. TMPBD on an ANN: before any work
    request_id = config_hash(asdict(attack))
    setup = prepare_attack(attack, workspace)
    # A reserve larger than the clean rows fails here, before any model is trained.
    draw_reserve(len(setup.train_set), np.asarray(setup.poisoned_train.indices), config.reserve_rate, config.seed)
    artifact = model_path(workspace, setup.attack_identity)  # before a learned trigger is trained
    model, trained = backdoored_model(setup, workspace)  # a learned trigger's run id is known once it is trained
    if attack_run_id is None:
        attack_run_id = config_hash(attack_record_config(trained, request_id))
        if attack_run_id not in {r["run_id"] for r in load_results(workspace.out_dir, "attack")}:
            log("this attack is not recorded here yet: running it first (cached models are reused)")
            attack_record, model, trained = record_attack(setup, request_id, workspace)
            attack_run_id = attack_record.run_id
    setup = trained
    poison = setup.poison
    targets = tuple(range(setup.num_classes)) if poison.mode == "all-to-all" else (poison.target,)
    poisoned = np.asarray(setup.poisoned_train.indices)
    held = split_for_defender(setup.poisoned_train, received_labels(setup.train_set.labels, poisoned, poison,
                                                                    setup.num_classes),
                              setup.train_set, setup.train_set.labels, poisoned, config.reserve_rate, config.seed,
                              setup.raw_train)
    truth = GroundTruth(setup.test_set, setup.triggered_test, held.poisoned_positions, targets, setup.num_classes)
    ca_before, asr_before = truth.evaluate(model)
    ctx = DefenseContext(model=model, train_set=held.train_set, clean_reserve=held.clean_reserve,
                         num_classes=setup.num_classes, training=setup.training, build=setup.build, seed=config.seed,
                         reserve_events=held.reserve_events, framing=setup.framing)
    log(f"defense {defense.name} ({defense.family}) against attack run {attack_run_id}")
    clock = time.perf_counter()
    result = defense.defend(ctx, truth)
    elapsed = time.perf_counter() - clock
    ca_after = ca_before if result.ca_after is None else result.ca_after
    asr_after = asr_before if result.asr_after is None else result.asr_after
    found = result.detection.to_dict() if result.detection else {}
    metrics: dict[str, Any] = {
        "family": defense.family,
        "ca_before": ca_before, "asr_before": asr_before, "ca_after": ca_after, "asr_after": asr_after,
        "model_changed": result.ca_after is not None,
        "der": defense_effectiveness_rate(ca_before, asr_before, ca_after, asr_after),
        "auroc": found.get("auroc"), "tpr": found.get("tpr"), "fpr": found.get("fpr"),
        "detection": found or None,
        "details": result.details,
        "defense_time_s": round(elapsed, 2),
        "reserve_samples": len(held.clean_reserve), "received_samples": len(held.train_set),
    }
    full_config = {"defense": defense.params(), "reserve_rate": config.reserve_rate, "seed": config.seed,
                   "attack": attack_record_config(setup, request_id), "attack_run_id": attack_run_id,
                   "request_id": defense_request_id(config, attack)}
    record = RunRecord(
        kind="defense", run_id=config_hash(full_config), config=full_config, metrics=metrics,
        started=started.isoformat(timespec="seconds"),
        finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        duration_s=round((datetime.now(timezone.utc) - started).total_seconds(), 2),
        artifacts=recorded_artifacts(workspace.publish_to, {"backdoored_model": artifact}),
    )
    append_record(workspace.out_dir / "records.jsonl", record)
    write_defense_tables(workspace.out_dir)
    return record


def received_labels(clean_labels: np.ndarray, poisoned: np.ndarray, poison: PoisonConfig,
                    num_classes: int) -> np.ndarray:
    """Every training sample's label as the attacker hands it over (poisoned rows relabelled)."""
    labels = np.array(clean_labels, copy=True)
    labels[poisoned] = poison.relabel(labels[poisoned], num_classes)
    return labels


def defense_request_id(config: DefenseConfig, attack: AttackConfig) -> str:
    """Id of a defense request as given (unresolved): sweeps skip requests already recorded."""
    return config_hash({"defense": asdict(config), "attack": asdict(attack)})


def write_defense_tables(out_dir: Path) -> list[Path]:
    """Regenerate ``defense_results.{md,csv,tex,png}`` in ``out_dir`` from its results database
    (:func:`snnsec.results_db.load_results`; nothing when it holds no defense run)."""
    from snnsec.results_db import load_results

    records = load_results(out_dir, "defense")
    if not records:
        return []
    return write_tables(records, DEFENSE_COLUMNS, out_dir, "defense_results",
                        "Backdoor defenses: CA and ASR before and after, DER, detection AUROC/TPR/FPR "
                        "(scores: higher = more suspicious)",
                        also=lambda recs: [plot_defenses(list(recs), out_dir / "defense_results.png")])


def describe_defenses() -> list[dict[str, str]]:
    """Name, family and one-line summary of every registered defense."""
    return [{"name": n, "family": DEFENSES.get(n).family, "summary": DEFENSES.get(n).summary} for n in DEFENSES.names()]
