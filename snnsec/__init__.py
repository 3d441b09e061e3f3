"""snnsec: backdoor and adversarial security benchmarks for spiking neural networks on event data.

The Python API (:mod:`snnsec.api`): ``load_run``, ``LoadedRun``, ``TorchView`` and ``art_classifier`` are
importable from here; they load on first use, so ``import snnsec.errors`` (the CLI) stays light.
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = ("LoadedRun", "TorchView", "art_classifier", "load_run")
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        from snnsec import api

        return getattr(api, name)
    raise AttributeError(f"module 'snnsec' has no attribute {name!r}")
