"""Attack plugins. Importing this package registers every trigger."""
from snnsec.attacks.base import POLARITIES, POSITIONS, TRIGGERS, Trigger, create_trigger
from snnsec.attacks.poisoning import MODES, PoisonConfig

# One line per trigger file: importing it registers the trigger.
from snnsec.attacks import band, blended, dynamic, flashy, framed, moving, smart, static, strobing  # noqa: E402,F401

__all__ = ["MODES", "POLARITIES", "POSITIONS", "TRIGGERS", "PoisonConfig", "Trigger", "create_trigger"]
