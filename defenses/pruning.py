"""Pruning (Liu et al., Fine-Pruning, RAID 2018): silence the feature layer's channels least active on
clean data, where backdoor neurons hide. A channel is the axis after (time, batch) of the feature layer's
output (conv channels, or the neurons of a spiking FC / token embedding)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from snnsec.classifier import Classifier
from snnsec.defenses.base import DEFENSES, DefenseContext, ModelRepair, batches, require_fraction
from snnsec.training import accuracy


def feature_module(model: Classifier) -> nn.Module:
    return dict(model.net.named_modules())[model.feature_layer]


def channel_activity(model: Classifier, dataset) -> np.ndarray:
    """Mean output of each feature-layer channel (firing rate for spiking layers) over ``dataset``."""
    sums: list[Tensor] = []

    def record(_module, _inputs, out: Tensor) -> None:
        if out.dim() < 3:
            raise ValueError(f"feature layer {model.feature_layer!r} output {tuple(out.shape)} has no channel axis")
        dims = [d for d in range(out.dim()) if d != 2]
        sums.append(out.detach().float().mean(dims).cpu() * out.shape[1])

    handle = feature_module(model).register_forward_hook(record)
    try:
        for frames, _ in batches(dataset):
            model.predict(frames.to(model.device))
    finally:
        handle.remove()
    return (torch.stack(sums).sum(0) / len(dataset)).numpy()


def prune(model: Classifier, channels: np.ndarray) -> None:
    """Zero the given feature-layer channels from now on (a forward hook stays on the model)."""
    module = feature_module(model)
    old = getattr(module, "_snnsec_prune_hook", None)
    if old is not None:
        old.remove()
    if len(channels) == 0:
        return

    def silence(_module, _inputs, out: Tensor) -> Tensor:
        mask = torch.ones(out.shape[2], device=out.device, dtype=out.dtype)
        mask[torch.as_tensor(channels, device=out.device)] = 0
        return out * mask.view(1, 1, -1, *([1] * (out.dim() - 3)))

    module._snnsec_prune_hook = module.register_forward_hook(silence)


def dormant_order(model: Classifier, ctx: DefenseContext) -> np.ndarray:
    """Channels from least to most active on the clean reserve."""
    return np.argsort(channel_activity(model, ctx.clean_reserve), kind="stable")


@DEFENSES.register("pruning")
@dataclass(frozen=True)
class Pruning(ModelRepair):
    rate: float = 0.5  # share of feature-layer channels silenced

    name: ClassVar[str] = "pruning"
    summary: ClassVar[str] = "silence the feature layer's least active channels on clean data"

    def __post_init__(self) -> None:
        require_fraction("rate", self.rate)

    def repair(self, ctx: DefenseContext) -> tuple[Classifier, dict[str, Any]]:
        order = dormant_order(ctx.model, ctx)
        pruned = order[: round(self.rate * len(order))]
        prune(ctx.model, pruned)
        return ctx.model, {"pruned_channels": len(pruned), "channels": len(order),
                           "reserve_accuracy": accuracy(ctx.model, ctx.clean_reserve)}
