"""Spectral signatures (Tran et al., NeurIPS 2018) on the feature layer's time-averaged spikes.

Per label, the centred feature vectors are projected on their top singular vector; poisoned samples,
whose features carry the trigger's extra direction, project far from the centre (score: the squared
projection, as in the paper and ART's ``spectral_signature_scores``).

Removal budget (``budget``):
- ``"per-label"`` (the paper's Algorithm 1, ART's ``SpectralSignatureDefense``): in every label, the top
  ``eps_multiplier * expected_poison_rate`` share of its samples (1.5 x the expected poison count) is removed.
  ``expected_poison_rate`` is the defender's assumed upper bound on the poisoned share (the paper's epsilon;
  ART's ``expected_pp_poison`` defaults to 0.33).
- ``"global"`` (default, this project's): scores are divided by their mean within the label, so that labels
  compare on one scale, and the top ``removal_rate`` of the whole set is removed (continuous scores for AUROC
  either way). A backdoor concentrates its samples in one (target) label, which a per-label budget treats
  like every other label.

Differences from the reference: features are the explicit feature layer's firing rates averaged over time
(ART reads the last top-level layer); the model is the suspect model itself, not one retrained per round.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from snnsec.defenses.base import DEFENSES, DefenseContext, TrainingDataFilter, features, require, require_fraction

BUDGETS = ("global", "per-label")


def spectral_scores(feats: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Squared projection of each sample's centred features on its label's top singular vector, divided by the
    label's mean (0 for labels with fewer than 2 samples or constant features)."""
    scores = np.zeros(len(labels))
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        centred = feats[rows] - feats[rows].mean(0)
        if len(rows) < 2 or not centred.any():
            continue
        top = np.linalg.svd(centred, full_matrices=False)[2][0]
        projection = (centred @ top) ** 2
        scores[rows] = projection / max(projection.mean(), 1e-12)
    return scores


def per_label_flags(scores: np.ndarray, labels: np.ndarray, share: float) -> np.ndarray:
    """Flags on the top ``round(share * n_label)`` scores within each label (ties broken by position)."""
    flagged = np.zeros(len(scores), bool)
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        flagged[rows[np.argsort(-scores[rows], kind="stable")[: round(share * len(rows))]]] = True
    return flagged


@DEFENSES.register("spectral-signatures")
@dataclass(frozen=True)
class SpectralSignatures(TrainingDataFilter):
    budget: str = "global"  # "global": top removal_rate overall; "per-label": the paper's 1.5 x epsilon per label
    #                          (removal_rate is then unused)
    expected_poison_rate: float = 0.1  # per-label budget only: the assumed poisoned share (the paper's epsilon)
    eps_multiplier: float = 1.5  # per-label budget only: the paper's and ART's 1.5

    name: ClassVar[str] = "spectral-signatures"
    summary: ClassVar[str] = "outliers along each label's top singular direction of feature-layer firing rates"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.budget in BUDGETS, f"budget must be one of {', '.join(BUDGETS)}; got {self.budget!r}")
        require_fraction("expected_poison_rate", self.expected_poison_rate)
        require(self.eps_multiplier > 0, f"eps_multiplier must be > 0, got {self.eps_multiplier}")

    def score_samples(self, ctx: DefenseContext) -> np.ndarray:
        return spectral_scores(*features(ctx.model, ctx.train_set))

    def flag(self, scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
        if self.budget == "per-label":
            return per_label_flags(scores, labels, min(1.0, self.eps_multiplier * self.expected_poison_rate))
        return super().flag(scores, labels)
