"""Model checkpoints: safetensors weights plus a JSON card. Nothing is pickled, so loading runs no code.

Every file written here carries a SHA-256 digest (``<name>.sha256``, :mod:`snnsec.integrity`) verified before
it is read: a damaged cache entry is reported, moved aside and rebuilt, never reused.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from snnsec import integrity
from snnsec.integrity import DamagedFileError

# Version of the saved model format and of the code that trains what is saved: part of every model's cache
# identity (and card), so a model saved by older code is never reused. Bump it when either changes.
MODEL_FORMAT = "2"


def save_model(path: Path, net: nn.Module, card: dict[str, Any]) -> None:
    """Write ``path`` (.safetensors, with its digest) and ``path.with_suffix('.json')`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    card = {**card, "model_format": MODEL_FORMAT}
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    text = json.dumps(card, sort_keys=True, default=str)
    tmp = integrity.temp_path(path)
    try:
        save_file(state, str(tmp), metadata={"card": text})
        integrity.atomic_write_text(path.with_suffix(".json"), json.dumps(card, indent=1, sort_keys=True, default=str))
        integrity.commit(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _load_weights(path: Path, net: nn.Module) -> nn.Module:
    device = next(net.parameters()).device
    net.load_state_dict(load_file(str(path), device=str(device)), strict=True)
    return net


def load_model(path: Path, net: nn.Module) -> nn.Module:
    """Load weights saved by :func:`save_model` into ``net`` (strict key matching); a missing, damaged or
    unfitting file raises :class:`~snnsec.integrity.DamagedFileError` (one line)."""
    path = Path(path)
    integrity.require(path, "model file")
    try:
        return _load_weights(path, net)
    except Exception as err:  # noqa: BLE001 - a safetensors or key-matching error, as one line
        raise DamagedFileError(f"model file {path} cannot be loaded ({integrity.describe(err)})") from None


def load_cached_model(path: Path, net: nn.Module, what: str = "cached model") -> bool:
    """Load a cache entry saved by :func:`save_model` into ``net``: True when done; False when absent or
    damaged (then reported in one line and moved aside, with its card, for the caller to rebuild)."""
    return integrity.load_or_quarantine(path, lambda p: _load_weights(p, net), what, path.with_suffix(".json")) is not None


def read_card(path: Path) -> dict[str, Any]:
    """The card saved with ``path``, read from the digest-checked safetensors header (the ``.json`` beside it
    is a readable copy); raises :class:`~snnsec.integrity.DamagedFileError` when it cannot be trusted."""
    path = Path(path)
    integrity.require(path, "model file")
    try:
        with safe_open(str(path), framework="pt") as f:
            return json.loads((f.metadata() or {})["card"])
    except Exception as err:  # noqa: BLE001
        raise DamagedFileError(f"model file {path} has no readable card ({integrity.describe(err)})") from None


def save_training_state(path: Path, state: dict[str, Any]) -> None:
    """Write a resumable training state (tensors, numbers, lists and dicts only) atomically, with its digest."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = integrity.temp_path(path)
    try:
        torch.save(state, tmp)
        integrity.commit(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_training_state(path: Path) -> dict[str, Any] | None:
    """The state saved by :func:`save_training_state`, loaded with ``weights_only=True``; None if absent, or
    if damaged (then reported in one line and moved aside: training restarts from scratch)."""
    return integrity.load_or_quarantine(
        Path(path), lambda p: torch.load(p, map_location="cpu", weights_only=True), "resume checkpoint")


def remove_training_state(path: Path) -> None:
    """Delete a training state and its digest (training finished)."""
    integrity.remove(Path(path))
