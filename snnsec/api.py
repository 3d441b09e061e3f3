"""The Python API beside the CLI: load a recorded attack run, and drive its models from ART and torchattacks.

- :func:`load_run` returns an attack run's clean and backdoored models, frames, labels, poisoned indices and
  trigger, rebuilt from the caches without training anything;
- :class:`TorchView` (``classifier.as_module()``) is a ``torch.nn.Module`` view of a classifier: batch-first
  float frames ``[N, T, P, H, W]`` in, logits averaged over time out, spiking state reset on every call (it
  calls the model through :class:`~snnsec.classifier.Classifier`, the one call site); its last top-level
  child carries the feature layer's time-averaged output, which is what ART's ``ActivationDefence`` and
  ``SpectralSignatureDefense`` read (they take the last top-level layer);
- :func:`art_classifier` wraps a classifier in ART's ``PyTorchClassifier`` (ART is imported lazily).

Generic attacks return non-binary frames: on binary frames an L-inf step below 1 leaves elements in (0, 1)
that no event camera produces. Count such results as attacks on the relaxed input, not on events.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from snnsec.classifier import Classifier
from snnsec.errors import ConfigError
from snnsec.records import config_hash
from snnsec.run_files import poisoned_indices_path, read_poisoned_indices, save_poisoned_indices  # noqa: F401
from snnsec.zoo.base import InputSpec, input_spec_of

if TYPE_CHECKING:
    from art.estimators.classification import PyTorchClassifier

    from snnsec.attacks.poisoning import FrameDataset
    from snnsec.attack_config import AttackConfig
    from snnsec.attack_setup import AttackSetup

__all__ = ["LoadedRun", "TorchView", "art_classifier", "load_run", "poisoned_indices_path"]

SPLITS = ("train", "test", "poisoned-train", "triggered-test")


class FeatureOutput(nn.Identity):
    """The view's last top-level child: the feature layer's time-averaged output ``[N, D]`` passes through it,
    so forward hooks on the last layer (ART's ``get_activations``) see the features, not the logits."""


class TorchView(nn.Module):
    """A ``torch.nn.Module`` view of a :class:`Classifier` for ART, torchattacks and plain PyTorch code.

    ``forward(x)``: ``x`` batch-first float frames ``[N, T, P, H, W]`` (checked against the model's input spec
    in one line; other float dtypes are cast to the model's), returns logits ``[N, K]`` averaged over time.
    Spiking state is reset before and after every call. Children: ``net`` (the model, so ``parameters()``,
    ``to()`` and ``eval()`` reach it) and, last, ``features`` (:class:`FeatureOutput`). A classifier built
    without a feature layer passes its logits through ``features`` instead.
    """

    def __init__(self, classifier: Classifier) -> None:
        super().__init__()
        self.classifier = classifier
        self.net = classifier.net
        self.features = FeatureOutput()  # registered last: ART reads the last top-level child

    @property
    def input_spec(self) -> InputSpec | None:
        return input_spec_of(self.net)

    def forward(self, x: Tensor) -> Tensor:
        if isinstance(x, Tensor) and x.is_floating_point():
            x = x.to(next(self.net.parameters()).dtype)
        if self.classifier.feature_layer is None:
            logits = features = self.classifier.logits(x)
        else:
            logits, features = self.classifier.logits_and_features(x)
        self.features(features)
        return logits


def art_classifier(classifier: Classifier, clip_values: tuple[float, float] | None = (0.0, 1.0),
                   loss: nn.Module | None = None, optimizer: torch.optim.Optimizer | None = None) -> PyTorchClassifier:
    """ART's ``PyTorchClassifier`` over :class:`TorchView` of ``classifier``: ``input_shape`` ``(T, P, H, W)`` and
    ``nb_classes`` from the model's input spec, cross-entropy on the logits, ``clip_values`` ``(0, 1)`` for binary
    frames (pass ``None`` or the count range for count frames), on the classifier's device."""
    from art.estimators.classification import PyTorchClassifier

    spec = input_spec_of(classifier.net)
    if spec is None:
        raise ConfigError("art_classifier needs a zoo model (its input spec gives ART the input shape and classes)")
    if clip_values is not None and not clip_values[0] < clip_values[1]:
        raise ConfigError(f"clip_values must be (low, high) with low < high, got {clip_values}")
    view = TorchView(classifier)
    device_type = "gpu" if classifier.device.type == "cuda" else "cpu"
    return PyTorchClassifier(model=view, loss=loss or nn.CrossEntropyLoss(), optimizer=optimizer,
                             input_shape=(spec.frames, spec.channels, spec.height, spec.width),
                             nb_classes=spec.num_classes, clip_values=clip_values, device_type=device_type)


# ---- loading a recorded run -----------------------------------------------------------------------------

@dataclass
class LoadedRun:
    """An attack run rebuilt from its record and the caches (see :func:`load_run`)."""

    run_id: str
    record: dict[str, Any]
    config: AttackConfig  # resolved (frames, trigger value, model config filled in)
    clean: Classifier  # trained on the clean training set, in eval mode
    backdoored: Classifier  # trained on the poisoned training set, in eval mode
    train_set: FrameDataset  # clean training frames [T, P, H, W] and labels (lazy)
    test_set: FrameDataset  # clean test frames and labels
    poisoned_indices: np.ndarray  # positions in train_set that were triggered and relabelled
    trigger: Any  # the fitted (or trained) trigger: a Trigger, or an EventInjector for --injection event
    poisoned_train: Any  # the attacker's training set (train_set with poisoned_indices triggered, relabelled)
    triggered_test: Any  # non-target test samples, triggered, labelled with the attacker's goal (ASR set)
    setup: AttackSetup

    def arrays(self, split: str = "test", limit: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` of a split as numpy arrays: float32 frames ``[N, T, P, H, W]`` and int64 labels, as ART
        takes them. ``limit``: a seeded random subset of that many samples, in split order (not the first rows:
        tonic's datasets are sorted by class). Splits: train, test, poisoned-train, triggered-test."""
        datasets = {"train": self.train_set, "test": self.test_set, "poisoned-train": self.poisoned_train,
                    "triggered-test": self.triggered_test}
        if split not in datasets:
            raise ConfigError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
        data = datasets[split]
        rows = np.arange(len(data))
        if limit is not None:
            if limit < 1:
                raise ConfigError(f"limit must be >= 1, got {limit}")
            if limit < len(rows):
                rows = np.sort(np.random.default_rng(seed).choice(len(rows), limit, replace=False))
        samples = [data[int(i)] for i in rows]
        x = np.stack([np.asarray(frames, dtype=np.float32) for frames, _ in samples])
        return x, np.asarray([label for _, label in samples], dtype=np.int64)


def load_run(run_id_or_prefix: str, out_dir: Path | str = "reports", cache_dir: Path | str | None = None,
             data_dir: Path | str | None = None, device: str = "auto") -> LoadedRun:
    """The attack run recorded in ``<out_dir>/records.jsonl`` whose id starts with ``run_id_or_prefix``: its
    models loaded from ``cache_dir`` (default: ``SNNSEC_CACHE_DIR``, else ``~/.cache/snnsec``), its frames
    from the frame cache (or framed again from the events in ``data_dir``, default ``SNNSEC_DATA_DIR``), its
    trigger rebuilt (fitted, or the trained generator loaded). Nothing is trained: a missing model is an
    error, as is a run that no longer rebuilds to the recorded config (data or code changed), an unknown id
    or an ambiguous prefix."""
    # Imported when used: ``import snnsec`` and the API's light parts do not load the attack pipeline.
    from snnsec.attack_config import Workspace
    from snnsec.attack_setup import prepare_attack
    from snnsec.defending import find_attack_record
    from snnsec.experiment import attack_config_of

    out = Path(out_dir)
    record = find_attack_record(str(run_id_or_prefix), out, who="load_run")
    run_id = record["run_id"]
    data_dir = data_dir if data_dir is not None else os.environ.get("SNNSEC_DATA_DIR") or None
    workspace = Workspace(data_dir=None if data_dir is None else Path(data_dir), out_dir=out, device=device,
                          **({} if cache_dir is None else {"cache_dir": Path(cache_dir)}))
    setup = prepare_attack(attack_config_of(record), workspace)
    runtime = record["config"].get("runtime")
    if runtime is not None and "runtime" in setup.model_identity:  # the run's device and threads, not ours
        setup = replace(setup, model_identity={**setup.model_identity, "runtime": runtime})
    attack_identity = setup.attack_identity  # the backdoored model's cache key: before a learned trigger is loaded
    if hasattr(setup.trigger, "train_backdoor"):  # a learned trigger: load its trained generator
        setup = _with_trained_trigger(setup, workspace, record)
    _check_rebuilt(setup, record)
    clean = _load_classifier(setup, setup.clean_identity, "clean_model", record, workspace)
    backdoored = _load_classifier(setup, attack_identity, "backdoored_model", record, workspace)
    indices = np.asarray(setup.poisoned_train.indices, dtype=np.int64)
    saved = poisoned_indices_path(out, run_id)
    if saved.exists() and not np.array_equal(read_poisoned_indices(saved), indices):
        raise ConfigError(f"run {run_id}: the poisoned indices rebuilt now differ from those saved in {saved}")
    return LoadedRun(run_id, record, setup.config, clean, backdoored, setup.train_set, setup.test_set, indices,
                     setup.trigger, setup.poisoned_train, setup.triggered_test, setup)


def _load_classifier(setup: AttackSetup, identity: dict[str, Any], artifact: str, record: dict[str, Any],
                     workspace: Any) -> Classifier:
    """The model saved under ``identity`` in the workspace's cache, loaded into a fresh build: never trained."""
    from snnsec.artifact_store import STORE, published_file
    from snnsec.artifacts import load_model
    from snnsec.model_cache import model_path

    path = model_path(workspace, identity)
    recorded = record.get("artifacts", {}).get(artifact)
    if recorded is not None and Path(recorded).parent.name == STORE:  # published by a bench: content-addressed
        path = published_file(Path(recorded), workspace.out_dir)
    elif recorded is not None and Path(recorded).name != path.name:
        raise ConfigError(f"run {record['run_id']}: its {artifact.replace('_', ' ')} was {Path(recorded).name}, but "
                          f"the run rebuilds now as {path.name} (data, code or cache identity changed)")
    if not path.exists():
        raise ConfigError(f"run {record['run_id']}: {artifact.replace('_', ' ')} {path} is missing; pass the "
                          f"cache_dir the attack was run with, or run the attack again")
    classifier = setup.build()
    load_model(path, classifier.net)
    classifier.net.eval()
    return classifier


def _with_trained_trigger(setup: AttackSetup, workspace: Any, record: dict[str, Any]) -> AttackSetup:
    """``setup`` with its learned trigger's trained generator loaded and the poisoned views rebuilt with it."""
    from snnsec.model_cache import generator_path, model_path, with_trained_trigger

    generator_file = generator_path(model_path(workspace, setup.attack_identity))
    if not generator_file.exists():
        raise ConfigError(f"run {record['run_id']}: trained trigger generator {generator_file} is missing; pass "
                          "the cache_dir the attack was run with, or run the attack again")
    return with_trained_trigger(setup, setup.trigger.load_generator(generator_file).to(setup.device))


def _check_rebuilt(setup: AttackSetup, record: dict[str, Any]) -> None:
    """The rebuilt run must hash to the recorded run id (same resolved config, trigger, data and runtime)."""
    from snnsec.experiment import attack_record_config

    rebuilt = attack_record_config(setup, record["config"].get("request_id", ""))
    if config_hash(rebuilt) != record["run_id"]:
        recorded = record["config"]
        changed = sorted(k for k in set(rebuilt) | set(recorded)
                         if json.dumps(rebuilt.get(k), sort_keys=True, default=str)
                         != json.dumps(recorded.get(k), sort_keys=True, default=str))
        raise ConfigError(f"run {record['run_id']} no longer rebuilds as recorded (differs in: {', '.join(changed)}); "
                          "the data or the code changed since it was run: run the attack again")
