"""Spectral signatures (Tran et al., NeurIPS 2018) on the feature layer's time-averaged spikes.

Per label, the centred feature vectors are projected on their top singular vector; poisoned samples,
whose features carry the trigger's extra direction, project far from the centre. The squared projection
is divided by its mean within the label so that scores of different labels compare on one scale.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from snnsec.defenses.base import DEFENSES, DefenseContext, TrainingDataFilter, features


@DEFENSES.register("spectral-signatures")
@dataclass(frozen=True)
class SpectralSignatures(TrainingDataFilter):
    name: ClassVar[str] = "spectral-signatures"
    summary: ClassVar[str] = "outliers along each label's top singular direction of feature-layer firing rates"

    def score_samples(self, ctx: DefenseContext) -> np.ndarray:
        feats, labels = features(ctx.model, ctx.train_set)
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
