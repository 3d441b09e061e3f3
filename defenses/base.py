"""Defense contract: four families that own their evaluation, so each defense file holds only its method.

A defense is a frozen dataclass of validated parameters. It decides from a :class:`DefenseContext` (the
suspect model, the training set as received, a small clean reserve held out of it: see
:mod:`snnsec.defenses.defender_data`) and never sees the test set, the trigger or the poisoned indices:
those live in :class:`GroundTruth`, which only the family's ``defend`` uses, after every threshold is fixed
(BackdoorBench issue 35: thresholds chosen on test ASR).

Families (after TrojanZoo's abstract defenses):
- :class:`TrainingDataFilter` scores every training sample; the top ``removal_rate`` are dropped and the
  model is retrained on the rest.
- :class:`InputFilter` scores (and may purify) inputs at inference; the threshold is the clean reserve's
  ``1 - false_rejection`` quantile; flagged inputs are rejected.
- :class:`ModelInspector` scores every class of the model (is it a backdoor target?).
- :class:`ModelRepair` returns a repaired model.

Why not ART's implementations: its ``ActivationDefence`` and ``SpectralSignatureDefense`` read the last
top-level layer only (here the feature layer is explicit: spiking firing rates), its ``NeuralCleanse`` is
Keras-only, and its STRIP blends images additively, which gives non-event frames (here overlays are event
unions). Each is short enough to write against the event domain directly.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, ClassVar

import numpy as np
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from snnsec.attacks.base import check_options
from snnsec.classifier import Classifier
from snnsec.detection import Detection, detection
from snnsec.errors import ConfigError
from snnsec.progress import log
from snnsec.registry import Registry
from snnsec.training import TrainConfig, predict, train

FAMILIES = ("training-data filter", "input filter", "model inspection", "model repair")


@dataclass
class DefenseContext:
    """What the defender holds: no test data, no trigger, no knowledge of which samples are poisoned."""

    model: Classifier  # the suspect model; repairs may change it in place
    train_set: Dataset  # the training set as received (poisoned samples triggered and relabelled), less the
    #                     reserve; ``.labels`` holds the received labels (see defender_data.split_for_defender)
    clean_reserve: Dataset  # a small clean, labelled set held out of train_set (an independent clean sample)
    num_classes: int
    training: TrainConfig  # the recipe the model was trained with, for retraining and fine-tuning
    build: Callable[[], Classifier]  # a fresh, untrained model of the same architecture
    seed: int = 0
    reserve_events: Any = None  # raw events of the reserve samples (``[i]`` -> (events, label)), when available
    framing: Any = None  # how events become frames (FramingConfig)


@dataclass
class GroundTruth:
    """What only the evaluation sees."""

    test_set: Dataset  # clean test samples
    triggered_test: Dataset  # triggered non-target test samples, labelled with the attacker's goal
    poisoned_indices: np.ndarray  # positions in the defender's training set of the samples the attacker poisoned
    target_classes: tuple[int, ...]  # the backdoor's target class(es)
    num_classes: int

    def poisoned_mask(self, n: int) -> np.ndarray:
        mask = np.zeros(n, bool)
        mask[self.poisoned_indices] = True
        return mask

    def target_mask(self) -> np.ndarray:
        return np.isin(np.arange(self.num_classes), self.target_classes)

    def evaluate(self, model: Classifier) -> tuple[float, float]:
        """``(CA, ASR)`` of ``model`` on the clean and triggered test sets."""
        predicted, truth = predict(model, self.test_set)
        triggered, goal = predict(model, self.triggered_test)
        return float((predicted == truth).mean()), float((triggered == goal).mean())


@dataclass(frozen=True)
class DefenseResult:
    """A defense's outcome. ``ca_after``/``asr_after`` None: the model was not changed."""

    ca_after: float | None
    asr_after: float | None
    detection: Detection | None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Defense(ABC):
    """Base of all defenses: a frozen set of validated parameters plus one ``defend`` verb."""

    name: ClassVar[str] = "defense"
    family: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    #: Why the defense needs a spiking model (it reads neurons, membrane potentials or firing over time);
    #: empty: it applies to ANN baselines too. See :meth:`check_model`.
    spiking_only: ClassVar[str] = ""

    def params(self) -> dict[str, Any]:
        return {"defense": self.name, **asdict(self)}

    def check_model(self, model: str, spiking: bool) -> None:
        """Refuse, in one line, a model this defense cannot apply to (an ANN, for a spiking-only defense)."""
        if self.spiking_only and not spiking:
            raise ConfigError(f"defense {self.name!r} does not apply to ANN model {model!r}: {self.spiking_only}")

    @abstractmethod
    def defend(self, ctx: DefenseContext, truth: GroundTruth) -> DefenseResult:
        """Run the defense on ``ctx``; score its decisions against ``truth`` (families implement this)."""


@dataclass(frozen=True)
class TrainingDataFilter(Defense):
    removal_rate: float = 0.15  # share of the training set removed (the top-scored samples)
    retrain: bool = True  # retrain a fresh model on the kept samples (else: report detection only)

    family: ClassVar[str] = "training-data filter"

    def __post_init__(self) -> None:
        require_fraction("removal_rate", self.removal_rate)

    @abstractmethod
    def score_samples(self, ctx: DefenseContext) -> np.ndarray:
        """One suspicion score per training sample (higher = more likely poisoned)."""

    def flag(self, scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Which samples to remove; default: the top ``removal_rate`` of all scores (one global budget)."""
        return top_share(scores, self.removal_rate)

    def repair(self, ctx: DefenseContext, flagged: np.ndarray) -> Classifier:
        """Default: a fresh model trained on the samples that were not flagged."""
        model = ctx.build()
        train(model, Subset(ctx.train_set, np.flatnonzero(~flagged).tolist()), ctx.training,
              label=f"{self.name}: retraining on {int((~flagged).sum())} kept samples")
        return model

    def decide(self, ctx: DefenseContext) -> tuple[np.ndarray, np.ndarray]:
        """Scores and removal flags of every training sample; default: ``flag(score_samples(ctx))``."""
        scores = np.asarray(self.score_samples(ctx), float)
        return scores, self.flag(scores, dataset_labels(ctx.train_set))

    def defend(self, ctx: DefenseContext, truth: GroundTruth) -> DefenseResult:
        scores, flagged = self.decide(ctx)
        if scores.shape != (len(ctx.train_set),) or flagged.shape != scores.shape:
            raise RuntimeError(f"{self.name} returned {scores.shape} scores for {len(ctx.train_set)} samples")
        found = detection(scores, truth.poisoned_mask(len(scores)), flagged)
        if not self.retrain:
            return DefenseResult(None, None, found, {"removed": int(flagged.sum())})
        ca, asr = truth.evaluate(self.repair(ctx, flagged))
        return DefenseResult(ca, asr, found, {"removed": int(flagged.sum())})


@dataclass(frozen=True)
class InputFilter(Defense):
    false_rejection: float = 0.05  # share of the defender's clean reserve allowed above the threshold

    family: ClassVar[str] = "input filter"
    rejects: ClassVar[bool] = True  # flagged inputs are refused; purifiers only transform

    def __post_init__(self) -> None:
        require_fraction("false_rejection", self.false_rejection, allow_zero=True)

    @abstractmethod
    def scorer(self, ctx: DefenseContext) -> Callable[[Tensor], np.ndarray]:
        """Prepared from the defender's data: a function giving the suspicion of each input
        ``[B, T, P, H, W]`` (higher = more likely triggered)."""

    def purify(self, frames: Tensor) -> Tensor:
        """What the model is shown instead of ``frames``; default: the input itself."""
        return frames

    def reserve_scores(self, ctx: DefenseContext, score: Callable[[Tensor], np.ndarray]) -> np.ndarray:
        """Scores of the clean reserve, which set the threshold; default: ``score`` on each reserve batch."""
        return np.concatenate([score(x) for x, _ in batches(ctx.clean_reserve)])

    def defend(self, ctx: DefenseContext, truth: GroundTruth) -> DefenseResult:
        score = self.scorer(ctx)
        reserve = self.reserve_scores(ctx, score)
        clean, triggered = self._guarded(ctx, score, truth.test_set), self._guarded(ctx, score, truth.triggered_test)
        return judge_inputs(reserve, clean, triggered, self.false_rejection, self.rejects)

    def _guarded(self, ctx: DefenseContext, score: Callable[[Tensor], np.ndarray], dataset: Dataset):
        return judged(ctx, ((self.purify(x), y, score(x)) for x, y in batches(dataset)))


def judged(ctx: DefenseContext, parts: Iterator[tuple[Tensor, Tensor, np.ndarray]]) -> dict[str, np.ndarray]:
    """``scores``, model ``predicted`` classes and ``labels`` over batches of ``(frames shown to the model,
    labels, suspicion scores)``."""
    scores, predicted, labels = [], [], []
    for frames, y, score in parts:
        scores.append(np.asarray(score))
        predicted.append(ctx.model.predict(frames.to(ctx.model.device)).cpu().numpy())
        labels.append(np.asarray(y))
    return {"scores": np.concatenate(scores), "predicted": np.concatenate(predicted),
            "labels": np.concatenate(labels)}


def judge_inputs(reserve_scores: np.ndarray, clean: dict[str, np.ndarray], triggered: dict[str, np.ndarray],
                 false_rejection: float, rejects: bool) -> DefenseResult:
    """Score an input filter: the threshold is the clean reserve's ``1 - false_rejection`` quantile; ``clean``
    and ``triggered`` hold per-input ``scores``, ``predicted`` and ``labels``. Rejected inputs count as
    neither correct nor attacked."""
    threshold = float(np.quantile(reserve_scores, 1.0 - false_rejection))
    is_triggered = np.r_[np.zeros(len(clean["scores"]), bool), np.ones(len(triggered["scores"]), bool)]
    scores = np.concatenate([clean["scores"], triggered["scores"]])
    found = detection(scores, is_triggered, scores > threshold)

    def hits(part: dict[str, np.ndarray]) -> float:
        correct = part["predicted"] == part["labels"]
        return float((correct & (part["scores"] <= threshold) if rejects else correct).mean())

    return DefenseResult(hits(clean), hits(triggered), found, {"threshold": threshold, "rejects": rejects})


@dataclass(frozen=True)
class ModelInspector(Defense):
    anomaly_threshold: float = 2.0  # a class whose anomaly index exceeds this is flagged as a target

    family: ClassVar[str] = "model inspection"

    def __post_init__(self) -> None:
        require(self.anomaly_threshold > 0, f"anomaly_threshold must be > 0, got {self.anomaly_threshold}")

    @abstractmethod
    def class_scores(self, ctx: DefenseContext) -> tuple[np.ndarray, dict[str, Any]]:
        """Anomaly index per class (higher = more likely a backdoor target) and details to record."""

    def defend(self, ctx: DefenseContext, truth: GroundTruth) -> DefenseResult:
        scores, details = self.class_scores(ctx)
        scores = np.asarray(scores, float)
        flagged = scores > self.anomaly_threshold
        details = {**details, "anomaly_index": [round(float(s), 4) for s in scores],
                   "suspected_target": int(np.argmax(scores)), "flagged_classes": np.flatnonzero(flagged).tolist(),
                   "backdoor_detected": bool(flagged.any())}
        return DefenseResult(None, None, detection(scores, truth.target_mask(), flagged), details)


@dataclass(frozen=True)
class ModelRepair(Defense):
    family: ClassVar[str] = "model repair"

    @abstractmethod
    def repair(self, ctx: DefenseContext) -> tuple[Classifier, dict[str, Any]]:
        """The repaired model (``ctx.model`` may be changed in place) and details to record."""

    def defend(self, ctx: DefenseContext, truth: GroundTruth) -> DefenseResult:
        model, details = self.repair(ctx)
        ca, asr = truth.evaluate(model)
        return DefenseResult(ca, asr, None, details)


DEFENSES: Registry[type[Defense]] = Registry("defense", "snnsec.defenses")

_TYPES: dict[str, tuple[str, tuple[type, ...]]] = {
    "float": ("a number", (int, float)), "int": ("an integer", (int,)), "bool": ("true or false", (bool,)),
    "str": ("a string", (str,)),
}


def create_defense(name: str, **params: Any) -> Defense:
    """Build defense ``name``; unknown options and wrongly typed values are errors naming what is allowed."""
    cls = DEFENSES.get(name)
    check_options("defense", name, cls, params, ())
    for f in fields(cls):
        if f.name not in params or str(f.type) not in _TYPES:
            continue
        what, allowed = _TYPES[str(f.type)]
        value = params[f.name]
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            raise ConfigError(f"defense {name!r} option {f.name} must be {what}, got {value!r}")
    return cls(**params)


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def require_fraction(name: str, value: float, allow_zero: bool = False) -> None:
    low_ok = value >= 0 if allow_zero else value > 0
    require(low_ok and value < 1, f"{name} must be in {'[0' if allow_zero else '(0'}, 1), got {value}")


def top_share(scores: np.ndarray, share: float) -> np.ndarray:
    """Flags on the ``round(share * len(scores))`` highest scores (ties broken by position)."""
    flagged = np.zeros(len(scores), bool)
    flagged[np.argsort(-np.asarray(scores), kind="stable")[: round(share * len(scores))]] = True
    return flagged


def dataset_labels(dataset: Dataset) -> np.ndarray:
    """Every sample's label: ``dataset.labels`` where it has them, else read sample by sample."""
    labels = getattr(dataset, "labels", None)
    if labels is not None and len(labels) == len(dataset):
        return np.asarray(labels)
    return np.array([int(dataset[i][1]) for i in range(len(dataset))])


def batches(dataset: Dataset, batch_size: int = 128) -> Iterator[tuple[Tensor, Tensor]]:
    """``(frames, labels)`` batches in dataset order."""
    yield from DataLoader(dataset, batch_size=batch_size, shuffle=False)


def features(model: Classifier, dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """The model's feature-layer output (time-averaged, flattened) ``[N, D]`` and the labels ``[N]`` of every
    sample, in one pass over ``dataset``."""
    feats, labels = [], []
    for x, y in batches(dataset):
        feats.append(model.features(x.to(model.device)).cpu().numpy())
        labels.append(np.asarray(y))
    return np.concatenate(feats), np.concatenate(labels)


def fine_tune(model: Classifier, dataset: Dataset, ctx: DefenseContext, epochs: int, lr: float, label: str) -> None:
    """Train ``model`` further on ``dataset`` (the defender's data) with the attack's recipe otherwise."""
    config = replace(ctx.training, epochs=epochs, lr=lr, warmup_steps=0, seed=ctx.seed)
    log(f"{label}: {epochs} epoch(s) on {len(dataset)} samples, lr {lr:g}")
    train(model, dataset, config, label=label)




@contextmanager
def frozen(model: Classifier) -> Iterator[None]:
    """Eval mode with parameters frozen, for optimising inputs against a fixed model."""
    params = [p for p in model.net.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        with model.evaluating():
            yield
    finally:
        for p in params:
            p.requires_grad_(True)


__all__ = ["DEFENSES", "FAMILIES", "Defense", "DefenseContext", "DefenseResult", "GroundTruth", "InputFilter",
           "ModelInspector", "ModelRepair", "TrainingDataFilter", "batches", "create_defense", "dataset_labels",
           "features", "fine_tune", "frozen", "judge_inputs", "judged", "require", "require_fraction", "top_share"]
