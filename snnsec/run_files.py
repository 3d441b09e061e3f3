"""Files kept beside an attack run's record: its poisoned training indices, ``<out>/runs/<run_id>.poisoned.json``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from snnsec import integrity
from snnsec.errors import ConfigError


def poisoned_indices_path(out_dir: Path, run_id: str) -> Path:
    """Where an attack run's poisoned training indices are kept: ``<out>/runs/<run_id>.poisoned.json``."""
    return Path(out_dir) / "runs" / f"{run_id}.poisoned.json"


def save_poisoned_indices(out_dir: Path, run_id: str, indices: Any) -> Path:
    """Write the run's poisoned training indices (sorted positions in the training set) atomically."""
    path = poisoned_indices_path(out_dir, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    values = [int(i) for i in np.asarray(indices).ravel()]
    integrity.atomic_write_text(path, json.dumps({"run_id": run_id, "count": len(values), "indices": values}))
    return path


def read_poisoned_indices(path: Path) -> np.ndarray:
    """The indices :func:`save_poisoned_indices` wrote; an unreadable file is a one-line ConfigError."""
    try:
        return np.asarray(json.loads(Path(path).read_text())["indices"], dtype=np.int64)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"poisoned-indices file {path} cannot be read ({integrity.describe(err)})") from None
