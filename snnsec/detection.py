"""Detection and repair metrics: TPR/FPR/AUROC from continuous scores, and the defense effectiveness rate.

Every score array follows one stated direction: **higher means more suspicious** (a defense whose natural
statistic runs the other way, e.g. STRIP's entropy, negates it). AUROC is computed from the scores
themselves, never from hard flags; TPR and FPR come from the defense's own flags.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

DIRECTION = "higher score = more suspicious"


@dataclass(frozen=True)
class Detection:
    """How well suspicion scores and flags separate the positives (poisoned samples, triggered inputs,
    or the backdoor's target class) from the negatives."""

    auroc: float | None  # None when only one kind of item exists (AUROC undefined)
    tpr: float | None  # flagged positives / positives
    fpr: float | None  # flagged negatives / negatives
    positives: int
    negatives: int
    flagged: int
    direction: str = DIRECTION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def detection(scores: np.ndarray, positive: np.ndarray, flagged: np.ndarray) -> Detection:
    """Score a detector: ``scores`` (higher = more suspicious), ground truth ``positive`` and the
    detector's own decisions ``flagged``, all of the same length."""
    scores, positive, flagged = np.asarray(scores, float), np.asarray(positive, bool), np.asarray(flagged, bool)
    if not scores.shape == positive.shape == flagged.shape:
        raise ValueError(f"scores {scores.shape}, truth {positive.shape} and flags {flagged.shape} differ in shape")
    if not np.isfinite(scores).all():
        raise ValueError("detection scores must be finite (got NaN or inf)")
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    auroc = float(roc_auc_score(positive, scores)) if n_pos and n_neg else None
    return Detection(
        auroc=auroc,
        tpr=float(flagged[positive].mean()) if n_pos else None,
        fpr=float(flagged[~positive].mean()) if n_neg else None,
        positives=n_pos, negatives=n_neg, flagged=int(flagged.sum()),
    )


def defense_effectiveness_rate(ca_before: float, asr_before: float, ca_after: float, asr_after: float) -> float:
    """DER (BackdoorBench): ``(max(0, ASR drop) - max(0, CA drop) + 1) / 2``, in [0, 1]; 0.5 = no effect."""
    return (max(0.0, asr_before - asr_after) - max(0.0, ca_before - ca_after) + 1.0) / 2.0


def mad_anomaly_index(values: np.ndarray, low_is_anomalous: bool) -> np.ndarray:
    """Per-item anomaly index: distance from the median in units of the consistency-scaled MAD
    (Neural Cleanse), positive on the anomalous side; ``> 2`` is the usual flag."""
    values = np.asarray(values, float)
    median = np.median(values)
    mad = 1.4826 * np.median(np.abs(values - median))
    deviation = (median - values) if low_is_anomalous else (values - median)
    return deviation / max(mad, 1e-12)
