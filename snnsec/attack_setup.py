"""An attack prepared to train: frames loaded (cached), trigger fitted, poisoned views built (lazily), the
model recipe and cache identity fixed; and :func:`trigger_example`, one sample under that trigger."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import Any

import numpy as np
import torch

from snnsec.artifacts import MODEL_FORMAT
from snnsec.attack_config import AttackConfig, ResolvedAttack, Workspace, make_trigger, resolve_attack
from snnsec.attacks import PoisonConfig
from snnsec.attacks.event_injection import event_poison_training_set, event_triggered_test_set, frame_pair
from snnsec.attacks.poisoning import FrameDataset, poison_training_set, triggered_test_set
from snnsec.classifier import Classifier
from snnsec.datasets import DATASETS
from snnsec.errors import ConfigError
from snnsec.framing import FramingConfig, encode, frame_dataset
from snnsec.stealth import TriggerPairs
from snnsec.training import TrainConfig, seed_everything
from snnsec.zoo import MODELS, InputSpec


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


@dataclass(frozen=True)
class AttackData:
    """An attack's frames and its fitted trigger, before any sample is poisoned: what
    :func:`prepare_attack` and :func:`trigger_example` share."""

    resolved: ResolvedAttack  # its config with the trigger value read from the data when it was None
    train_set: FrameDataset
    test_set: FrameDataset
    raw_train: Any  # the raw event datasets the frames were made from
    raw_test: Any
    data_key: dict[str, Any]
    trigger: Any  # Trigger (fitted on the training frames) or EventInjector


def load_attack_data(resolved: ResolvedAttack, workspace: Workspace) -> AttackData:
    """Load the (cached) frames of a resolved attack (:func:`~snnsec.attack_config.resolve_attack`) and fit
    the trigger it built on a class-stratified sample of the training frames."""
    config = resolved.config
    (train_set, raw_train), (test_set, raw_test), data_key = _load_frames(config, resolved.framing, workspace)
    if config.trigger_value is None:  # count frames: the value is read from the data, the trigger built with it
        config = replace(config, trigger_value=_high_count(train_set, seed=config.seed))
        resolved = replace(resolved, config=config, trigger=make_trigger(config))
    trigger = resolved.trigger
    if config.injection != "event":
        trigger = trigger.fit(_sample_frames(train_set, seed=config.seed))
    return AttackData(resolved, train_set, test_set, raw_train, raw_test, data_key, trigger)


def prepare_attack(config: AttackConfig, workspace: Workspace | None = None) -> AttackSetup:
    """Resolve ``config``, load (cached) frames, fit the trigger and build the poisoned views (lazy: no
    sample is triggered or framed until it is read). ``workspace`` defaults to ``Workspace()``, read at call
    time (``SNNSEC_CACHE_DIR``)."""
    workspace = workspace or Workspace()
    resolved = resolve_attack(config)  # bad input fails in milliseconds, a bad device before any data is read
    device = workspace.torch_device()
    data = load_attack_data(resolved, workspace)
    resolved, trigger, train_set, test_set = data.resolved, data.trigger, data.train_set, data.test_set
    config, framing, poison = resolved.config, resolved.framing, resolved.poison
    num_classes = DATASETS.get(config.dataset).info.num_classes
    if config.injection == "event":
        poisoned_train = event_poison_training_set(train_set, data.raw_train, trigger, framing, poison, num_classes)
        triggered_test = event_triggered_test_set(test_set, data.raw_test, trigger, framing, poison, num_classes)
    else:
        poisoned_train = poison_training_set(train_set, trigger, poison, num_classes)
        triggered_test = triggered_test_set(test_set, trigger, poison, num_classes)
    resolved = resolved.for_frames(InputSpec(*train_set[0][0].shape, num_classes))  # [T, P, H, W]
    entry = MODELS.get(config.model)
    config = replace(config, model_config=config.model_config or entry.default_config(resolved.input_spec),
                     lr=resolved.training.lr)
    model_identity = {"data": data.data_key, "model": config.model, "model_config": asdict(resolved.model_config),
                      "training": asdict(resolved.training), "runtime": runtime_identity(device)}
    return AttackSetup(config, framing, train_set, test_set, data.data_key, poison, trigger, poisoned_train,
                       triggered_test, resolved.input_spec, resolved.model_config, resolved.training, model_identity,
                       device, data.raw_train, data.raw_test)


def runtime_identity(device: torch.device) -> dict[str, Any]:
    """What, besides the config, changes a trained model's numbers: the device (and GPU model), the CPU
    thread count on the CPU (float summation order; unused by GPU kernels), and the version of the model
    format and training code (:data:`snnsec.artifacts.MODEL_FORMAT`). Part of every model's cache identity
    and of the run id: a 1-thread and a 2-thread CPU run are different runs."""
    cuda = device.type == "cuda"
    return {"device": device.type, "device_name": torch.cuda.get_device_name(device) if cuda else None,
            "threads": None if cuda else torch.get_num_threads(), "model_format": MODEL_FORMAT}


def trigger_example(config: AttackConfig, workspace: Workspace, split: str = "test", index: int = 0):
    """``(clean, triggered, label)`` frames ``[T, P, H, W]`` of one sample under the attack's trigger,
    built exactly as :func:`prepare_attack` builds it (:func:`load_attack_data`: fitted on the training
    frames, event or frame level); nothing is poisoned, so any poison rate shows."""
    data = load_attack_data(resolve_attack(config), workspace)
    frames_set, raw = (data.train_set, data.raw_train) if split == "train" else (data.test_set, data.raw_test)
    if not 0 <= index < len(frames_set):
        raise ConfigError(f"--index must be in [0, {len(frames_set) - 1}] for the {split} split, got {index}")
    clean, label = frames_set[index]
    if data.resolved.config.injection == "event":
        events, _ = raw[int(frames_set.rows[index])]
        _, triggered = frame_pair(events, raw.info.sensor_size, data.trigger, data.resolved.framing)
    else:
        triggered = data.trigger.apply(clean)
    return clean, triggered, label


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
    return sets[0], sets[1], {"dataset": config.dataset, "events": keys, "framing": framing.identity()}


def _high_count(train_set: FrameDataset, samples: int = 256, seed: int = 0) -> float:
    """Trigger value on count frames: the 99th percentile of non-zero pixel counts (at least 1), so a
    trigger pixel is as bright as the data's active pixels (a value of 1 drowns where events are dense).
    Read on a seeded class-stratified sample (:func:`_sample_rows`), not the first rows: tonic's sets
    are sorted by class."""
    counts = np.asarray(train_set.counts[train_set.rows[_sample_rows(train_set.labels, samples, seed)]])
    nonzero = counts[counts > 0]
    return float(max(1.0, np.ceil(np.percentile(nonzero, 99)))) if nonzero.size else 1.0


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
