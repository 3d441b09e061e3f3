"""The attack pipeline: data -> frames -> clean model -> poisoned training -> backdoored model -> metrics."""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

import snnsec.attacks  # noqa: F401  (registers triggers)
import snnsec.datasets  # noqa: F401  (registers datasets)
import snnsec.zoo  # noqa: F401  (registers models)
from snnsec import integrity
from snnsec.api import save_poisoned_indices
from snnsec.artifacts import MODEL_FORMAT, load_cached_model, remove_training_state, save_model
from snnsec.attacks import TRIGGERS, PoisonConfig, Trigger, create_trigger
from snnsec.attacks.event_injection import (
    EVENT_TRIGGERS,
    EventInjector,
    create_injector,
    frame_pair,
    event_poison_training_set,
    event_triggered_test_set,
)
from snnsec.attacks.poisoning import FrameDataset, poison_training_set, triggered_test_set
from snnsec.checks import check_seed, check_types
from snnsec.classifier import Classifier
from snnsec.datasets import DATASETS
from snnsec.energy import DEFAULT_CONVENTION, EnergyConvention, EnergyReport, measure_energy
from snnsec.energy import energy_convention as energy_convention_of
from snnsec.errors import ConfigError
from snnsec.framing import FramingConfig, encode, frame_dataset
from snnsec.progress import log
from snnsec.records import Column, RunRecord, append_record, config_hash, load_records, write_tables
from snnsec.stealth import TriggerPairs, measure_stealth
from snnsec.training import TrainConfig, accuracy, seed_everything, train
from snnsec.zoo import MODELS, InputSpec
from snnsec.zoo.base import input_spec_of


@dataclass(frozen=True)
class AttackConfig:
    """Everything that determines an attack run's numbers (its hash is the run id)."""

    dataset: str = "digits-dvs"
    model: str = "spiking-cnn"
    model_config: str | None = None  # a named config of the model; None: the model's default for the data
    trigger: str = "static"
    trigger_size: float = 0.1
    position: str = "bottom-right"
    polarity: int = 1
    trigger_value: float | None = None  # None: 1 on binary frames, a high event count on count frames
    trigger_options: tuple[tuple[str, Any], ...] = ()  # trigger-specific options, e.g. (("speed", 2.0),)
    injection: str = "frame"  # "frame": trigger painted on frames; "event": synthetic events added before framing
    poison_rate: float = 0.1
    target: int = 0
    mode: str = "all-to-one"
    frames: int | None = None  # T; None: the dataset's default
    slicing: str = "time"
    size: int | None = None  # resize frames to size x size; None: sensor size
    encoding: str = "binary"
    epochs: int = 8
    batch_size: int = 32
    lr: float | None = None  # None: the model config's recipe (zoo), else DEFAULT_LR
    optimizer: str = "adamw"
    seed: int = 0


@dataclass(frozen=True)
class Workspace:
    """Where things are read and written; not part of a run's identity."""

    data_dir: Path | None = None
    cache_dir: Path = field(default_factory=lambda: default_cache_dir())  # SNNSEC_CACHE_DIR, else ~/.cache/snnsec
    out_dir: Path = Path("reports")
    device: str = "auto"

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device {self.device!r} requested but CUDA is not available; use --device cpu")
        try:
            return torch.device(self.device)
        except RuntimeError:
            raise ConfigError(f"unknown device {self.device!r}; use auto, cpu, cuda or cuda:N") from None


def default_cache_dir() -> Path:
    """The frame and model cache: ``SNNSEC_CACHE_DIR`` when set (as the CLI reads it), else ``~/.cache/snnsec``."""
    return Path(os.environ.get("SNNSEC_CACHE_DIR") or Path.home() / ".cache" / "snnsec")


INJECTIONS = ("frame", "event")
DEFAULT_LR = 2e-3

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
    Column("E. conv.", "metrics.energy_convention"),  # the energy convention (snnsec.energy.CONVENTIONS)
    Column("Fire rate", "metrics.firing_rate"),
    Column("Run", "run_id"),
]


def resolve(config: AttackConfig) -> AttackConfig:
    """Fill dataset-dependent defaults and validate names, so the record holds the full config."""
    # Validate everything before any data is read: bad input fails in milliseconds, not after framing.
    check_types(config, "attack config")
    check_seed(config.seed)
    spec = DATASETS.get(config.dataset)
    entry = MODELS.get(config.model)
    TRIGGERS.get(config.trigger)
    frames = config.frames if config.frames is not None else spec.default_frames
    width, height, polarities = spec.info.sensor_size
    if config.size is not None and not MIN_FRAME_SIZE <= config.size <= max(width, height):
        raise ConfigError(f"--size must be in [{MIN_FRAME_SIZE}, {max(width, height)}] pixels for {config.dataset} "
                          f"({width}x{height} sensor; SSIM's 7x7 window needs 7), got {config.size}")
    FramingConfig(frames=frames, slicing=config.slicing, encoding=config.encoding)
    side = (height, width) if config.size is None else (config.size, config.size)
    entry.resolve_config(config.model_config, InputSpec(frames, polarities, *side, spec.info.num_classes))
    PoisonConfig(rate=config.poison_rate, target=config.target, mode=config.mode).check_classes(spec.info.num_classes)
    if config.injection not in INJECTIONS:
        raise ConfigError(f"injection must be one of {', '.join(INJECTIONS)}; got {config.injection!r}")
    _check_trigger_options(config)
    if config.injection == "event":
        _make_injector(replace(config, trigger_value=config.trigger_value or 1.0), frames)
    else:
        _make_trigger(replace(config, trigger_value=config.trigger_value or 1.0))
    TrainConfig(epochs=config.epochs, batch_size=config.batch_size, lr=config.lr or DEFAULT_LR,
                optimizer=config.optimizer)
    value = config.trigger_value
    if value is None and config.encoding == "binary":
        value = 1.0
    return replace(config, frames=frames, trigger_value=value)


#: Smallest framed side: SSIM's 7x7 window (Wang et al. 2004; scikit-image's default) needs
#: frames of at least 7x7 (at 4 or 6 pixels the stealth metric fails after both models were trained).
MIN_FRAME_SIZE = 7

#: Trigger parameters set by top-level attack options, never through ``--trigger-opt``.
TOP_LEVEL_TRIGGER_OPTIONS = {"size": "--trigger-size", "position": "--position", "polarity": "--polarity",
                             "value": "--trigger-value", "seed": "--seed", "bins": "--frames",
                             "events_per_pixel_per_bin": "--trigger-value"}


def _check_trigger_options(config: AttackConfig) -> None:
    """Trigger options are (name, value) pairs naming options of the trigger itself; one that a top-level
    option sets points at that option, an unknown one lists the trigger's own options."""
    triggers = EVENT_TRIGGERS if config.injection == "event" else TRIGGERS
    own = sorted({f.name for f in fields(triggers.get(config.trigger))} - set(TOP_LEVEL_TRIGGER_OPTIONS))
    for key, _ in config.trigger_options:
        if key in TOP_LEVEL_TRIGGER_OPTIONS:
            flag = TOP_LEVEL_TRIGGER_OPTIONS[key]
            raise ConfigError(f"trigger option {key!r} is set by the attack option {flag} (sweep field "
                              f"{flag[2:].replace('-', '_')}), not by --trigger-opt")
        if key not in own:
            raise ConfigError(f"trigger {config.trigger!r} has no option {key!r}; its --trigger-opt options: "
                              f"{', '.join(own) or '(none)'}")


@dataclass
class AttackSetup:
    """An attack's data, trigger and model recipe, resolved and loaded, before any model is trained."""

    config: AttackConfig  # fully resolved (frames, trigger value, model config)
    framing: FramingConfig
    train_set: FrameDataset
    test_set: FrameDataset
    data_key: dict[str, Any]
    poison: PoisonConfig
    trigger: Any  # Trigger or EventInjector
    poisoned_train: Any  # a view over train_set with ``indices`` (the poisoned rows) triggered and relabelled
    triggered_test: Any  # non-target test samples, triggered, labelled with the attacker's goal
    input_spec: InputSpec
    model_config: Any
    training: TrainConfig
    model_identity: dict[str, Any]
    device: torch.device
    raw_train: Any = None  # the raw event datasets the frames were made from
    raw_test: Any = None

    @property
    def num_classes(self) -> int:
        return self.input_spec.num_classes

    @property
    def attack_identity(self) -> dict[str, Any]:
        return {**self.model_identity, "poison": asdict(self.poison), "trigger": self.trigger.params()}

    @property
    def clean_identity(self) -> dict[str, Any]:
        return {**self.model_identity, "poison": None}

    def build(self) -> Classifier:
        """A fresh, seeded, untrained model of this attack's architecture."""
        entry = MODELS.get(self.config.model)
        seed_everything(self.config.seed)
        return Classifier(entry.build(self.model_config, self.input_spec).to(self.device), entry.feature_layer)

    def stealth_pairs(self):
        if self.config.injection == "event":
            return self.triggered_test.pairs()
        return TriggerPairs(self.triggered_test.base, self.trigger)


def prepare_attack(config: AttackConfig, workspace: Workspace = Workspace()) -> AttackSetup:
    """Resolve ``config``, load (cached) frames, fit the trigger and build the poisoned views."""
    config = resolve(config)
    device = workspace.torch_device()
    framing = _framing(config)
    (train_set, raw_train), (test_set, raw_test), data_key = _load_frames(config, framing, workspace)
    if config.trigger_value is None:
        config = replace(config, trigger_value=_high_count(train_set, seed=config.seed))
    poison = PoisonConfig(rate=config.poison_rate, target=config.target, mode=config.mode, seed=config.seed)
    num_classes = DATASETS.get(config.dataset).info.num_classes
    if config.injection == "event":
        trigger = _make_injector(config, framing.frames)
        poisoned_train = event_poison_training_set(train_set, raw_train, trigger, framing, poison, num_classes)
        triggered_test = event_triggered_test_set(test_set, raw_test, trigger, framing, poison, num_classes)
    else:
        trigger = _make_trigger(config).fit(_sample_frames(train_set, seed=config.seed))
        poisoned_train = poison_training_set(train_set, trigger, poison, num_classes)
        triggered_test = triggered_test_set(test_set, trigger, poison, num_classes)
    frames_shape = train_set[0][0].shape  # [T, P, H, W]
    input_spec = InputSpec(frames_shape[0], frames_shape[1], frames_shape[2], frames_shape[3], num_classes)
    entry = MODELS.get(config.model)
    model_config = entry.resolve_config(config.model_config, input_spec)
    config = replace(config, model_config=config.model_config or entry.default_config(input_spec))
    training = _training(config, entry.recipe_for(config.model_config))
    config = replace(config, lr=training.lr)
    model_identity = {"data": data_key, "model": config.model, "model_config": asdict(model_config),
                      "training": asdict(training), "runtime": runtime_identity(device)}
    return AttackSetup(config, framing, train_set, test_set, data_key, poison, trigger, poisoned_train,
                       triggered_test, input_spec, model_config, training, model_identity, device, raw_train, raw_test)


def runtime_identity(device: torch.device) -> dict[str, Any]:
    """What, besides the config, changes a trained model's numbers: the device (and GPU model), the CPU
    thread count on the CPU (float summation order; unused by GPU kernels), and the version of the model
    format and training code (:data:`snnsec.artifacts.MODEL_FORMAT`). Part of every model's cache identity
    and of the run id: a 1-thread and a 2-thread CPU run are different runs."""
    cuda = device.type == "cuda"
    return {"device": device.type, "device_name": torch.cuda.get_device_name(device) if cuda else None,
            "threads": None if cuda else torch.get_num_threads(), "model_format": MODEL_FORMAT}


def _training(config: AttackConfig, recipe) -> TrainConfig:
    """The attack's training budget with the model config's recipe (lr, warm-up, BN re-estimation);
    an explicit ``lr`` wins over the recipe's."""
    training = TrainConfig(epochs=config.epochs, batch_size=config.batch_size, lr=DEFAULT_LR,
                           optimizer=config.optimizer, seed=config.seed).with_recipe(recipe)
    return training if config.lr is None else replace(training, lr=config.lr)


def clean_model(setup: AttackSetup, workspace: Workspace) -> Classifier:
    """The model trained on the clean training set (cached by identity)."""
    return _trained(setup.build, setup.train_set, setup.training, setup.clean_identity, workspace, "clean model")


def backdoored_model(setup: AttackSetup, workspace: Workspace) -> tuple[Classifier, AttackSetup]:
    """The model trained on the poisoned training set (cached by identity), and the attack setup to
    evaluate it with: ``setup`` itself, or for a learned trigger (trained jointly with the model) a new
    setup holding the trained trigger and the training and test sets it triggers. ``setup`` is not changed."""
    if hasattr(setup.trigger, "train_backdoor"):
        classifier, trigger = _trained_jointly(setup.build, setup.trigger, setup.train_set, setup.poison,
                                               setup.training, setup.num_classes, setup.attack_identity, workspace)
        trained = replace(
            setup, trigger=trigger,
            poisoned_train=poison_training_set(setup.train_set, trigger, setup.poison, setup.num_classes),
            triggered_test=triggered_test_set(setup.test_set, trigger, setup.poison, setup.num_classes))
        return classifier, trained
    return _trained(setup.build, setup.poisoned_train, setup.training, setup.attack_identity, workspace,
                    "backdoored model"), setup


def run_attack(config: AttackConfig, workspace: Workspace = Workspace(),
               energy_convention: str = DEFAULT_CONVENTION) -> RunRecord:
    """Run (or reuse the cached parts of) one backdoor attack and append its record to the reports;
    energies are counted under ``energy_convention`` (:data:`snnsec.energy.CONVENTIONS`)."""
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
    test_set, triggered_test = setup.test_set, setup.triggered_test

    log("evaluating")
    ca_clean, ca_backdoor = accuracy(clean, test_set), accuracy(backdoored, test_set)
    stealth = measure_stealth(setup.stealth_pairs())
    energy = {"clean_model": _energy(clean, test_set, convention=convention),
              "backdoored_model": _energy(backdoored, test_set, convention=convention)}
    metrics: dict[str, Any] = {
        "ca_clean": ca_clean,
        "ca_backdoor": ca_backdoor,
        "ca_degradation": (ca_backdoor - ca_clean) / ca_clean if ca_clean > 0 else None,
        "asr": accuracy(backdoored, triggered_test),
        "asr_clean_model": accuracy(clean, triggered_test),
        **stealth.to_dict(),
        **_energy_totals(energy["backdoored_model"]),
        "energy_convention": convention.name,
        "energy_detail": {name: report.to_dict() for name, report in energy.items()},
        "poisoned_samples": int(len(setup.poisoned_train.indices)),
        "train_samples": len(setup.train_set),
        "test_samples": len(test_set),
        "asr_samples": len(triggered_test),
    }
    full_config = attack_record_config(setup, request_id)
    if convention.name != DEFAULT_CONVENTION:  # other numbers, another run id (the default keeps the old ids)
        full_config["energy_convention"] = convention.name
    record = RunRecord(
        kind="attack", run_id=config_hash(full_config), config=full_config, metrics=metrics,
        started=started.isoformat(timespec="seconds"),
        finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        duration_s=round(time.perf_counter() - clock, 2),
        artifacts={"clean_model": str(model_path(workspace, setup.clean_identity)),
                   "backdoored_model": str(model_path(workspace, attack_identity)),
                   "poisoned_indices": str(save_poisoned_indices(workspace.out_dir, config_hash(full_config),
                                                                 setup.poisoned_train.indices))},
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
    """Regenerate ``attack_results.{md,csv,tex}`` in ``out_dir`` from its ``records.jsonl``."""
    return write_tables(load_records(out_dir / "records.jsonl", "attack"), ATTACK_COLUMNS, out_dir, "attack_results",
                        "Backdoor attacks: clean accuracy (CA) of the clean and backdoored models, attack success rate (ASR)")


def _framing(config: AttackConfig) -> FramingConfig:
    size = None if config.size is None else (config.size, config.size)
    return FramingConfig(frames=config.frames, slicing=config.slicing, size=size, encoding=config.encoding)


def _load_frames(config: AttackConfig, framing: FramingConfig, workspace: Workspace):
    """``((train_frames, train_events), (test_frames, test_events), data identity)``."""
    spec = DATASETS.get(config.dataset)
    data_dir = workspace.data_dir if spec.needs_data_dir else None
    sets, keys = [], {}
    for split in ("train", "test"):
        events = spec.load(split, data_dir)
        arrays = frame_dataset(events, split, framing, workspace.cache_dir)
        sets.append((FrameDataset(arrays.counts, arrays.labels, partial(encode, encoding=framing.encoding)), events))
        keys[split] = events.cache_key
    return sets[0], sets[1], {"dataset": config.dataset, "events": keys, "framing": asdict(framing)}


def _high_count(train_set: FrameDataset, samples: int = 256, seed: int = 0) -> float:
    """Trigger value on count frames: the 99th percentile of non-zero pixel counts (at least 1), so a
    trigger pixel is as bright as the data's active pixels (a value of 1 drowns where events are dense).
    Read on a seeded class-stratified sample (:func:`_sample_rows`), not the first rows: tonic's sets
    are sorted by class."""
    counts = np.asarray(train_set.counts[train_set.rows[_sample_rows(train_set.labels, samples, seed)]])
    nonzero = counts[counts > 0]
    return float(max(1.0, np.ceil(np.percentile(nonzero, 99)))) if nonzero.size else 1.0


def _energy(classifier: Classifier, test_set: FrameDataset, samples: int = 64,
            convention: str | EnergyConvention = DEFAULT_CONVENTION) -> EnergyReport:
    """Synaptic operations and energy per sample, measured on a class-stratified sample of clean test samples."""
    x = _sample_frames(test_set, samples).to(classifier.device)
    return measure_energy(classifier.net, lambda: classifier.predict(x), convention=convention)


def _energy_totals(report: EnergyReport) -> dict[str, float]:
    """Per-sample totals of the backdoored model, for the tables."""
    return {"energy_mj": report.energy_mj, "sops": report.sops, "ann_macs": float(report.ann_macs),
            "ann_energy_mj": report.ann_energy_mj, "firing_rate": report.mean_firing_rate}


def _sample_rows(labels: np.ndarray, samples: int, seed: int) -> np.ndarray:
    """Up to ``samples`` row indices (ascending) drawn class by class: each class's rows in a seeded
    random order, taken round-robin over the classes (every class is represented once ``samples`` is at
    least the number of classes; the whole set when it has at most ``samples`` rows)."""
    labels = np.asarray(labels)
    if len(labels) <= samples:
        return np.arange(len(labels))
    rng = np.random.default_rng([seed, 0x57A7])
    shuffled = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    order = [rows[k] for k in range(max(len(r) for r in shuffled)) for rows in shuffled if k < len(rows)]
    return np.sort(np.asarray(order[:samples], dtype=np.int64))


def _sample_frames(dataset: FrameDataset, samples: int = 256, seed: int = 0) -> torch.Tensor:
    """Encoded frames of a seeded class-stratified sample of ``dataset`` (:func:`_sample_rows`), for
    data-fitted triggers and energy estimates; never just the first rows (tonic's sets are sorted by class)."""
    return torch.stack([dataset[int(i)][0] for i in _sample_rows(dataset.labels, samples, seed)])


def _make_trigger(config: AttackConfig) -> Trigger:
    return create_trigger(config.trigger, size=config.trigger_size, position=config.position,
                          polarity=config.polarity, value=config.trigger_value, seed=config.seed,
                          **dict(config.trigger_options))


def _make_injector(config: AttackConfig, frames: int) -> EventInjector:
    """The event-level version of ``config.trigger``: ``trigger_value`` events per pixel and time bin."""
    return create_injector(config.trigger, size=config.trigger_size, position=config.position,
                           polarity=config.polarity, seed=config.seed, bins=frames,
                           events_per_pixel_per_bin=max(1, round(config.trigger_value)),
                           **dict(config.trigger_options))


def model_path(workspace: Workspace, identity: dict) -> Path:
    return workspace.cache_dir / "models" / f"{config_hash(identity)}.safetensors"


def _trained_jointly(build, trigger, train_set: FrameDataset, poison: PoisonConfig, training: TrainConfig,
                     num_classes: int, identity: dict, workspace: Workspace):
    """Classifier and trigger generator trained together (dynamic triggers), or both from the cache."""
    path = model_path(workspace, identity)
    generator_path = path.with_name(f"{path.stem}-generator.safetensors")
    classifier = build()
    integrity.sweep_temps(path.parent)
    if path.exists() and generator_path.exists():
        if (integrity.usable(generator_path, "cached trigger generator", generator_path.with_suffix(".json"))
                and load_cached_model(path, classifier.net, "cached backdoored model")):
            log(f"backdoored model: reusing {path} and {generator_path}")
            classifier.net.eval()
            return classifier, trigger.load_generator(generator_path).to(classifier.device)
        classifier = build()  # the failed load may have filled some weights
    partial_path = path.with_name(f"{path.stem}.partial.pt")
    if partial_path.exists() and integrity.usable(partial_path, "resume checkpoint"):
        log(f"backdoored model: resuming joint training from the last finished epoch ({partial_path})")
    result = trigger.train_backdoor(classifier, train_set, poison, training, num_classes, checkpoint=partial_path)
    remove_training_state(partial_path)
    result.trigger.save_generator(generator_path)  # generator first: the classifier file marks "done"
    save_model(path, classifier.net, {**identity, "input_spec": asdict(input_spec_of(classifier.net)),
                                      "loss_per_epoch": result.history["loss"],
                                      "generator_loss_per_epoch": result.history["generator_loss"],
                                      "generator_digest": result.trigger.generator_digest()})
    return result.classifier, result.trigger.to(classifier.device)


def _trained(build, dataset, training: TrainConfig, identity: dict, workspace: Workspace, label: str) -> Classifier:
    """A model trained on ``dataset``, loaded from the cache when the same identity was trained before."""
    path = model_path(workspace, identity)
    classifier = build()
    integrity.sweep_temps(path.parent)
    if path.exists():
        if load_cached_model(path, classifier.net, f"cached {label}"):
            log(f"{label}: reusing {path}")
            classifier.net.eval()
            return classifier
        classifier = build()  # the failed load may have filled some weights
    partial = path.with_name(f"{path.stem}.partial.pt")
    if partial.exists() and integrity.usable(partial, "resume checkpoint"):
        log(f"{label}: resuming from the last finished epoch ({partial})")
    history = train(classifier, dataset, training, label=f"training {label}", checkpoint=partial)
    remove_training_state(partial)
    save_model(path, classifier.net, {**identity, "input_spec": asdict(input_spec_of(classifier.net)),
                                      "loss_per_epoch": history})
    return classifier


def trigger_example(config: AttackConfig, workspace: Workspace, split: str = "test", index: int = 0):
    """``(clean, triggered, label)`` frames ``[T, P, H, W]`` of one sample under the attack's trigger,
    built exactly as :func:`run_attack` builds it (fitted on the training frames, event or frame level)."""
    config = resolve(config)
    framing = _framing(config)
    (train_set, _), (test_set, _), _ = _load_frames(config, framing, workspace)
    frames_set = train_set if split == "train" else test_set
    if not 0 <= index < len(frames_set):
        raise ConfigError(f"--index must be in [0, {len(frames_set) - 1}] for the {split} split, got {index}")
    if config.trigger_value is None:
        config = replace(config, trigger_value=_high_count(train_set, seed=config.seed))
    clean, label = frames_set[index]
    if config.injection == "event":
        spec = DATASETS.get(config.dataset)
        raw = spec.load(split, workspace.data_dir if spec.needs_data_dir else None)
        events, _ = raw[int(frames_set.rows[index])]
        _, triggered = frame_pair(events, raw.info.sensor_size, _make_injector(config, framing.frames), framing)
    else:
        triggered = _make_trigger(config).fit(_sample_frames(train_set, seed=config.seed)).apply(clean)
    return clean, triggered, label
