"""Defense plugins (training-data filtering, input filtering, model inspection, model repair)."""
from snnsec.registry import Registry

DEFENSES: Registry[type] = Registry("defense", "snnsec.defenses")

__all__ = ["DEFENSES"]
