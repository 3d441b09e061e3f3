"""Defense plugins. Importing this package registers every defense (one file each)."""
from snnsec.defenses.base import DEFENSES, FAMILIES, Defense, DefenseContext, GroundTruth, create_defense

from snnsec.defenses import (  # noqa: E402,F401
    abl,
    adversarial_training,
    activation_clustering,
    event_purification,
    fine_pruning,
    fine_tuning,
    neural_cleanse,
    pruning,
    spectral_signatures,
    stream_purification,
    strip,
    tmpbd,
    unlearning,
)

__all__ = ["DEFENSES", "FAMILIES", "Defense", "DefenseContext", "GroundTruth", "create_defense"]
