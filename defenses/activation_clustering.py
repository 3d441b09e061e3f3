"""Activation clustering (Chen et al., 2018) on the feature layer's time-averaged spikes.

Per label, the features are reduced (PCA, ``components`` dims) and split in two by k-means; a poisoned
label splits into clean and triggered samples. A sample's score is how much closer it lies to the
smaller cluster than to the larger one (in units of the label's spread), weighted by the split's
silhouette (how real the split is): high for members of a small, well-separated cluster.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score

from snnsec.defenses.base import DEFENSES, DefenseContext, TrainingDataFilter, features, require


@DEFENSES.register("activation-clustering")
@dataclass(frozen=True)
class ActivationClustering(TrainingDataFilter):
    components: int = 10  # PCA dimensions before clustering (the paper's ICA uses 10)

    name: ClassVar[str] = "activation-clustering"
    summary: ClassVar[str] = "2-means per label on PCA-reduced feature-layer firing rates; small tight clusters"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.components >= 1, f"components must be >= 1, got {self.components}")

    def score_samples(self, ctx: DefenseContext) -> np.ndarray:
        feats, labels = features(ctx.model, ctx.train_set)
        scores = np.zeros(len(labels))
        for label in np.unique(labels):
            rows = np.flatnonzero(labels == label)
            if len(rows) < 4 or np.ptp(feats[rows], axis=0).max() == 0:
                continue
            dims = min(self.components, len(rows) - 1, feats.shape[1])
            reduced = PCA(n_components=dims, random_state=ctx.seed).fit_transform(feats[rows])
            kmeans = KMeans(n_clusters=2, n_init=10, random_state=ctx.seed).fit(reduced)
            if len(np.unique(kmeans.labels_)) < 2:
                continue
            small = int(np.argmin(np.bincount(kmeans.labels_, minlength=2)))
            distance = np.linalg.norm(reduced[:, None, :] - kmeans.cluster_centers_[None], axis=2)
            spread = max(float(np.linalg.norm(reduced - reduced.mean(0), axis=1).mean()), 1e-12)
            closer_to_small = (distance[:, 1 - small] - distance[:, small]) / spread
            scores[rows] = closer_to_small * max(silhouette_score(reduced, kmeans.labels_), 0.0)
        return scores
