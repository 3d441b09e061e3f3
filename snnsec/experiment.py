"""The attack pipeline: data -> frames -> clean model -> poisoned training -> backdoored model -> metrics."""
from __future__ import annotations

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
from snnsec.artifacts import load_model, save_model
from snnsec.attacks import TRIGGERS, PoisonConfig, Trigger, create_trigger
from snnsec.attacks.event_injection import (
    EventInjector,
    create_injector,
    frame_pair,
    event_poison_training_set,
    event_triggered_test_set,
)
from snnsec.attacks.poisoning import FrameDataset, poison_training_set, triggered_test_set
from snnsec.classifier import Classifier
from snnsec.datasets import DATASETS
from snnsec.energy import EnergyReport, measure_energy
from snnsec.errors import ConfigError
from snnsec.framing import FramingConfig, encode, frame_dataset
from snnsec.progress import log
from snnsec.records import Column, RunRecord, append_record, config_hash, load_records, write_tables
from snnsec.stealth import TriggerPairs, measure_stealth
from snnsec.training import TrainConfig, accuracy, seed_everything, train
from snnsec.zoo import MODELS, InputSpec


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
    cache_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "snnsec")
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
    Column("Fire rate", "metrics.firing_rate"),
    Column("Run", "run_id"),
]


def resolve(config: AttackConfig) -> AttackConfig:
    """Fill dataset-dependent defaults and validate names, so the record holds the full config."""
    spec = DATASETS.get(config.dataset)
    MODELS.get(config.model)
    TRIGGERS.get(config.trigger)
    if config.size is not None and config.size < 4:
        raise ConfigError(f"--size must be >= 4 pixels, got {config.size}")
    frames = config.frames if config.frames is not None else spec.default_frames
    # Validate everything before any data is read: bad input fails in milliseconds, not after framing.
    FramingConfig(frames=frames, slicing=config.slicing, encoding=config.encoding)
    PoisonConfig(rate=config.poison_rate, target=config.target, mode=config.mode).check_classes(spec.info.num_classes)
    if config.injection not in INJECTIONS:
        raise ConfigError(f"injection must be one of {', '.join(INJECTIONS)}; got {config.injection!r}")
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
        config = replace(config, trigger_value=_high_count(train_set))
    poison = PoisonConfig(rate=config.poison_rate, target=config.target, mode=config.mode, seed=config.seed)
    num_classes = DATASETS.get(config.dataset).info.num_classes
    if config.injection == "event":
        trigger = _make_injector(config, framing.frames)
        poisoned_train = event_poison_training_set(train_set, raw_train, trigger, framing, poison, num_classes)
        triggered_test = event_triggered_test_set(test_set, raw_test, trigger, framing, poison, num_classes)
    else:
        trigger = _make_trigger(config).fit(_sample_frames(train_set))
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
                      "training": asdict(training)}
    return AttackSetup(config, framing, train_set, test_set, data_key, poison, trigger, poisoned_train,
                       triggered_test, input_spec, model_config, training, model_identity, device, raw_train, raw_test)


def _training(config: AttackConfig, recipe) -> TrainConfig:
    """The attack's training budget with the model config's recipe (lr, warm-up, BN re-estimation);
    an explicit ``lr`` wins over the recipe's."""
    training = TrainConfig(epochs=config.epochs, batch_size=config.batch_size, lr=DEFAULT_LR,
                           optimizer=config.optimizer, seed=config.seed).with_recipe(recipe)
    return training if config.lr is None else replace(training, lr=config.lr)


def clean_model(setup: AttackSetup, workspace: Workspace) -> Classifier:
    """The model trained on the clean training set (cached by identity)."""
    return _trained(setup.build, setup.train_set, setup.training, setup.clean_identity, workspace, "clean model")


def backdoored_model(setup: AttackSetup, workspace: Workspace) -> Classifier:
    """The model trained on the poisoned training set (cached by identity). Learned triggers are trained
    jointly with it; ``setup`` then holds the trained trigger and the test set it triggers."""
    if hasattr(setup.trigger, "train_backdoor"):
        classifier, trigger = _trained_jointly(setup.build, setup.trigger, setup.train_set, setup.poison,
                                               setup.training, setup.num_classes, setup.attack_identity, workspace)
        setup.trigger = trigger
        setup.poisoned_train = poison_training_set(setup.train_set, trigger, setup.poison, setup.num_classes)
        setup.triggered_test = triggered_test_set(setup.test_set, trigger, setup.poison, setup.num_classes)
        return classifier
    return _trained(setup.build, setup.poisoned_train, setup.training, setup.attack_identity, workspace,
                    "backdoored model")


def run_attack(config: AttackConfig, workspace: Workspace = Workspace()) -> RunRecord:
    """Run (or reuse the cached parts of) one backdoor attack and append its record to the reports."""
    return record_attack(prepare_attack(config, workspace), config_hash(asdict(config)), workspace)[0]


def record_attack(setup: AttackSetup, request_id: str, workspace: Workspace) -> tuple[RunRecord, Classifier]:
    """Train (or load) both models of a prepared attack, evaluate them and append the record; returns the
    record and the backdoored model (``setup`` then holds a learned trigger in its trained state)."""
    started, clock = datetime.now(timezone.utc), time.perf_counter()
    clean = clean_model(setup, workspace)
    attack_identity = setup.attack_identity  # before a learned trigger is trained: the cache key
    backdoored = backdoored_model(setup, workspace)
    test_set, triggered_test = setup.test_set, setup.triggered_test

    log("evaluating")
    ca_clean, ca_backdoor = accuracy(clean, test_set), accuracy(backdoored, test_set)
    stealth = measure_stealth(setup.stealth_pairs())
    energy = {"clean_model": _energy(clean, test_set), "backdoored_model": _energy(backdoored, test_set)}
    metrics: dict[str, Any] = {
        "ca_clean": ca_clean,
        "ca_backdoor": ca_backdoor,
        "ca_degradation": (ca_backdoor - ca_clean) / ca_clean if ca_clean > 0 else None,
        "asr": accuracy(backdoored, triggered_test),
        "asr_clean_model": accuracy(clean, triggered_test),
        **stealth.to_dict(),
        **_energy_totals(energy["backdoored_model"]),
        "energy_detail": {name: report.to_dict() for name, report in energy.items()},
        "poisoned_samples": int(len(setup.poisoned_train.indices)),
        "train_samples": len(setup.train_set),
        "test_samples": len(test_set),
        "asr_samples": len(triggered_test),
    }
    full_config = attack_record_config(setup, request_id)
    record = RunRecord(
        kind="attack", run_id=config_hash(full_config), config=full_config, metrics=metrics,
        started=started.isoformat(timespec="seconds"),
        finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        duration_s=round(time.perf_counter() - clock, 2),
        artifacts={"clean_model": str(model_path(workspace, setup.clean_identity)),
                   "backdoored_model": str(model_path(workspace, attack_identity))},
    )
    append_record(workspace.out_dir / "records.jsonl", record)
    write_attack_tables(workspace.out_dir)
    return record, backdoored


def attack_record_config(setup: AttackSetup, request_id: str) -> dict[str, Any]:
    """An attack record's config (its hash is the run id): the full resolved config, named choices plus
    what they resolved to, and the id of the request as given."""
    return {**asdict(setup.config), "request_id": request_id, "trigger_params": setup.trigger.params(),
            "model_params": asdict(setup.model_config), "data_version": setup.data_key["events"]}


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


def _high_count(train_set: FrameDataset, samples: int = 256) -> float:
    """Trigger value on count frames: the 99th percentile of non-zero pixel counts (at least 1), so a
    trigger pixel is as bright as the data's active pixels (a value of 1 drowns where events are dense)."""
    counts = np.asarray(train_set.counts[: min(samples, len(train_set.counts))])
    nonzero = counts[counts > 0]
    return float(max(1.0, np.ceil(np.percentile(nonzero, 99)))) if nonzero.size else 1.0


def _energy(classifier: Classifier, test_set: FrameDataset, samples: int = 64) -> EnergyReport:
    """Synaptic operations and energy per sample, measured on the first clean test samples."""
    x = _sample_frames(test_set, samples).to(classifier.device)
    return measure_energy(classifier.net, lambda: classifier.predict(x))


def _energy_totals(report: EnergyReport) -> dict[str, float]:
    """Per-sample totals of the backdoored model, for the tables."""
    return {"energy_mj": report.energy_mj, "sops": report.sops, "ann_macs": float(report.ann_macs),
            "ann_energy_mj": report.ann_energy_mj, "firing_rate": report.mean_firing_rate}


def _sample_frames(dataset: FrameDataset, samples: int = 256) -> torch.Tensor:
    """The first ``samples`` training frames, encoded, for data-dependent triggers."""
    return torch.stack([dataset[i][0] for i in range(min(samples, len(dataset)))])


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
    if path.exists() and generator_path.exists():
        log(f"backdoored model: reusing {path} and {generator_path}")
        load_model(path, classifier.net)
        classifier.net.eval()
        return classifier, trigger.load_generator(generator_path).to(classifier.device)
    result = trigger.train_backdoor(classifier, train_set, poison, training, num_classes)
    result.trigger.save_generator(generator_path)  # generator first: the classifier file marks "done"
    save_model(path, classifier.net, {**identity, "loss_per_epoch": result.history["loss"],
                                      "generator_loss_per_epoch": result.history["generator_loss"],
                                      "generator_digest": result.trigger.generator_digest()})
    return result.classifier, result.trigger.to(classifier.device)


def _trained(build, dataset, training: TrainConfig, identity: dict, workspace: Workspace, label: str) -> Classifier:
    """A model trained on ``dataset``, loaded from the cache when the same identity was trained before."""
    path = model_path(workspace, identity)
    classifier = build()
    if path.exists():
        log(f"{label}: reusing {path}")
        load_model(path, classifier.net)
        classifier.net.eval()
        return classifier
    partial = path.with_name(f"{path.stem}.partial.pt")
    if partial.exists():
        log(f"{label}: resuming from the last finished epoch ({partial})")
    history = train(classifier, dataset, training, label=f"training {label}", checkpoint=partial)
    save_model(path, classifier.net, {**identity, "loss_per_epoch": history})
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
        config = replace(config, trigger_value=_high_count(train_set))
    clean, label = frames_set[index]
    if config.injection == "event":
        spec = DATASETS.get(config.dataset)
        raw = spec.load(split, workspace.data_dir if spec.needs_data_dir else None)
        events, _ = raw[int(frames_set.rows[index])]
        _, triggered = frame_pair(events, raw.info.sensor_size, _make_injector(config, framing.frames), framing)
    else:
        triggered = _make_trigger(config).fit(_sample_frames(train_set)).apply(clean)
    return clean, triggered, label
