"""Model checkpoints: safetensors weights plus a JSON card. Nothing is pickled, so loading runs no code."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn


def save_model(path: Path, net: nn.Module, card: dict[str, Any]) -> None:
    """Write ``path`` (.safetensors) and ``path.with_suffix('.json')`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file(state, str(tmp), metadata={"card": json.dumps(card, sort_keys=True, default=str)})
    path.with_suffix(".json").write_text(json.dumps(card, indent=1, sort_keys=True, default=str))
    os.replace(tmp, path)


def load_model(path: Path, net: nn.Module) -> nn.Module:
    """Load weights saved by :func:`save_model` into ``net`` (strict key matching)."""
    device = next(net.parameters()).device
    net.load_state_dict(load_file(str(path), device=str(device)), strict=True)
    return net


def read_card(path: Path) -> dict[str, Any]:
    return json.loads(path.with_suffix(".json").read_text())


def save_training_state(path: Path, state: dict[str, Any]) -> None:
    """Write a resumable training state (tensors, numbers, lists and dicts only) atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_training_state(path: Path) -> dict[str, Any] | None:
    """The state saved by :func:`save_training_state`, loaded with ``weights_only=True``; None if absent."""
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)
