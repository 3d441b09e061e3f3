"""The attack pipeline: data -> frames -> clean model -> poisoned training -> backdoored model -> metrics,
and the attack records and tables.

Each stage has its own module: :mod:`snnsec.attack_config` (config, workspace, validation),
:mod:`snnsec.attack_setup` (frames, trigger, poisoned views), :mod:`snnsec.model_cache` (the trained,
cached models), :mod:`snnsec.evaluation` (the metrics). Their names are re-exported here.
"""
from __future__ import annotations

import time
from dataclasses import asdict, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from snnsec.attack_config import (  # noqa: F401  (re-exported)
    DEFAULT_LR,
    INJECTIONS,
    MIN_FRAME_SIZE,
    TOP_LEVEL_TRIGGER_OPTIONS,
    AttackConfig,
    ResolvedAttack,
    Workspace,
    default_cache_dir,
    resolve,
    resolve_attack,
)
from snnsec.attack_setup import (  # noqa: F401  (re-exported)
    AttackData,
    AttackSetup,
    _high_count,
    _sample_frames,
    _sample_rows,
    load_attack_data,
    prepare_attack,
    runtime_identity,
    trigger_example,
)
from snnsec.artifact_store import recorded_artifacts
from snnsec.classifier import Classifier
from snnsec.energy import DEFAULT_CONVENTION
from snnsec.energy import energy_convention as energy_convention_of
from snnsec.evaluation import attack_metrics
from snnsec.model_cache import _trained, _trained_jointly, backdoored_model, clean_model, model_path  # noqa: F401
from snnsec.progress import log
from snnsec.records import Column, RunRecord, append_record, config_hash, write_tables
from snnsec.run_files import save_poisoned_indices

ATTACK_COLUMNS = [
    Column("Dataset", "config.dataset"),
    Column("Model", "config.model"),
    Column("Trigger", "config.trigger"),
    Column("Inj.", "config.injection"),
    Column("Pos.", "config.position"),
    Column("Pol.", "config.trigger_params.polarity"),  # as resolved (smart triggers pick it from the data)
    Column("Size", "config.trigger_size"),
    Column("Mode", "config.mode"),
    Column("Rate", "config.poison_rate"),
    Column("T", "config.frames"),
    Column("Seed", "config.seed"),
    Column("CA clean (%)", "metrics.ca_clean", percent=True),
    Column("CA bd (%)", "metrics.ca_backdoor", percent=True),
    Column("ASR (%)", "metrics.asr", percent=True),
    Column("SSIM", "metrics.ssim"),
    Column("Energy (uJ)", "metrics.energy_mj", scale=1000.0),
    Column("ANN (uJ)", "metrics.ann_energy_mj", scale=1000.0),
    # The energy convention (snnsec.energy.CONVENTIONS); records made before conventions were selectable were
    # counted as the default, "measured", is (the default kept their run ids).
    Column("E. conv.", "metrics.energy_convention", default=DEFAULT_CONVENTION),
    # "MAC" for an ANN baseline (every layer multiplies: no SOPs, no firing rate); SNN records made before this
    # column were priced "AC+MAC" (spike-driven layers as AC, real-valued inputs as MAC).
    Column("Priced", "metrics.energy_priced_as", default="AC+MAC"),
    Column("Fire rate", "metrics.firing_rate"),
    # Frames pruned at inference (razor-snn; its Energy is with pruning, "metrics.energy_unpruned_mj" without).
    Column("Pruned (%)", "metrics.frames_pruned", percent=True),
    Column("Run", "run_id"),
]


def run_attack(config: AttackConfig, workspace: Workspace | None = None,
               energy_convention: str = DEFAULT_CONVENTION) -> RunRecord:
    """Run (or reuse the cached parts of) one backdoor attack and append its record to the reports;
    energies are counted under ``energy_convention`` (:data:`snnsec.energy.CONVENTIONS`). ``workspace``
    defaults to ``Workspace()``, read at call time (``SNNSEC_CACHE_DIR``)."""
    workspace = workspace or Workspace()
    return record_attack(prepare_attack(config, workspace), config_hash(asdict(config)), workspace,
                         energy_convention)[0]


def record_attack(setup: AttackSetup, request_id: str, workspace: Workspace,
                  energy_convention: str = DEFAULT_CONVENTION) -> tuple[RunRecord, Classifier, AttackSetup]:
    """Train (or load) both models of a prepared attack, evaluate them and append the record; returns the
    record, the backdoored model and the setup it was evaluated with (see :func:`backdoored_model`).
    Energies are counted under ``energy_convention``, which the record names."""
    convention = energy_convention_of(energy_convention)  # an unknown name fails before any training
    started, clock = datetime.now(timezone.utc), time.perf_counter()
    clean = clean_model(setup, workspace)
    attack_identity = setup.attack_identity  # before a learned trigger is trained: the cache key
    backdoored, setup = backdoored_model(setup, workspace)

    log("evaluating")
    metrics = attack_metrics(clean, backdoored, setup, convention)
    full_config = attack_record_config(setup, request_id)
    if convention.name != DEFAULT_CONVENTION:  # other numbers, another run id (the default keeps the old ids)
        full_config["energy_convention"] = convention.name
    record = RunRecord(
        kind="attack", run_id=config_hash(full_config), config=full_config, metrics=metrics,
        started=started.isoformat(timespec="seconds"),
        finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        duration_s=round(time.perf_counter() - clock, 2),
        artifacts=recorded_artifacts(workspace.publish_to, {
            "clean_model": model_path(workspace, setup.clean_identity),
            "backdoored_model": model_path(workspace, attack_identity),
            "poisoned_indices": save_poisoned_indices(workspace.out_dir, config_hash(full_config),
                                                      setup.poisoned_train.indices)}),
    )
    append_record(workspace.out_dir / "records.jsonl", record)
    write_attack_tables(workspace.out_dir)
    return record, backdoored, setup


def attack_record_config(setup: AttackSetup, request_id: str) -> dict[str, Any]:
    """An attack record's config (its hash is the run id): the full resolved config, named choices plus
    what they resolved to, and the id of the request as given."""
    return {**asdict(setup.config), "request_id": request_id, "trigger_params": setup.trigger.params(),
            "model_params": asdict(setup.model_config), "data_version": setup.data_key["events"],
            "runtime": setup.model_identity["runtime"]}


def attack_config_of(record: dict[str, Any]) -> AttackConfig:
    """The :class:`AttackConfig` an attack record was run with (its extra resolved fields dropped)."""
    names = {f.name for f in fields(AttackConfig)}
    values = {k: v for k, v in record["config"].items() if k in names}
    values["trigger_options"] = tuple(tuple(pair) for pair in values.get("trigger_options", ()))
    return AttackConfig(**values)


def write_attack_tables(out_dir: Path) -> list[Path]:
    """Regenerate ``attack_results.{md,csv,tex}`` in ``out_dir`` from its results database
    (:func:`snnsec.results_db.load_results`)."""
    from snnsec.results_db import load_results

    return write_tables(load_results(out_dir, "attack"), ATTACK_COLUMNS, out_dir, "attack_results",
                        "Backdoor attacks: clean accuracy (CA) of the clean and backdoored models, attack success rate (ASR)")
