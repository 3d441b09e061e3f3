"""Pruning (Liu et al., Fine-Pruning, RAID 2018): silence the channels of one spiking layer that are
least active on clean data, where backdoor neurons hide. As in the paper, the default layer is the last
convolutional one: the last spiking layer whose output keeps spatial axes ``[T, B, C, H, W]`` (a spiking
FC layer has no dormant neurons to speak of). A channel is the axis after (time, batch). In a model without spiking
layers (the zoo's ANN baselines) "auto" falls back to the feature layer ``[T', B, C]``: for resnet18 and xformer
the pooled channels of the last conv layer (silencing one silences that conv channel, Fine-Pruning's original
target), for the ViT the pooled token's features."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from spikingjelly.activation_based.neuron import BaseNode
from torch import Tensor, nn

from snnsec.classifier import Classifier
from snnsec.defenses.base import DEFENSES, DefenseContext, ModelRepair, batches, require_fraction
from snnsec.errors import ConfigError
from snnsec.training import accuracy


def prunable_layer(model: Classifier, frames: Tensor, layer: str) -> str:
    """Resolve ``layer``: "auto" (last spiking layer with spatial output), "feature" (the model's feature
    layer) or a module name of the model."""
    modules = dict(model.net.named_modules())
    if layer == "feature":
        return model.feature_layer
    if layer != "auto":
        if layer not in modules or not layer:
            spiking = [n for n, m in modules.items() if isinstance(m, BaseNode)]
            raise ConfigError(f"no module {layer!r} in {type(model.net).__name__}; spiking layers: {', '.join(spiking)}")
        return layer
    seen: list[str] = []
    handles = [m.register_forward_hook(lambda _m, _i, out, name=n: seen.append(name) if out.dim() == 5 else None)
               for n, m in modules.items() if isinstance(m, BaseNode)]
    try:
        model.predict(frames[:1].to(model.device))
    finally:
        for handle in handles:
            handle.remove()
    return seen[-1] if seen else model.feature_layer


def channel_activity(model: Classifier, layer: str, dataset) -> np.ndarray:
    """Mean output of each channel of ``layer`` (firing rate for spiking layers) over ``dataset``."""
    sums: list[Tensor] = []

    def record(_module, _inputs, out: Tensor) -> None:
        if out.dim() < 3:
            raise ConfigError(f"layer {layer!r} output {tuple(out.shape)} has no channel axis to prune")
        dims = [d for d in range(out.dim()) if d != 2]
        sums.append(out.detach().float().mean(dims).cpu() * out.shape[1])

    handle = dict(model.net.named_modules())[layer].register_forward_hook(record)
    try:
        for frames, _ in batches(dataset):
            model.predict(frames.to(model.device))
    finally:
        handle.remove()
    return (torch.stack(sums).sum(0) / len(dataset)).numpy()


def prune(model: Classifier, layer: str, channels: np.ndarray) -> None:
    """Zero the given channels of ``layer`` from now on (a forward hook stays on the model)."""
    module: nn.Module = dict(model.net.named_modules())[layer]
    old = getattr(module, "_snnsec_prune_hook", None)
    if old is not None:
        old.remove()
        module._snnsec_prune_hook = None
    if len(channels) == 0:
        return

    def silence(_module, _inputs, out: Tensor) -> Tensor:
        mask = torch.ones(out.shape[2], device=out.device, dtype=out.dtype)
        mask[torch.as_tensor(channels, device=out.device)] = 0
        return out * mask.view(1, 1, -1, *([1] * (out.dim() - 3)))

    module._snnsec_prune_hook = module.register_forward_hook(silence)


def dormant_order(model: Classifier, ctx: DefenseContext, layer: str) -> tuple[str, np.ndarray]:
    """The resolved layer and its channels from least to most active on the clean reserve."""
    name = prunable_layer(model, ctx.clean_reserve[0][0][None], layer)
    return name, np.argsort(channel_activity(model, name, ctx.clean_reserve), kind="stable")


@DEFENSES.register("pruning")
@dataclass(frozen=True)
class Pruning(ModelRepair):
    rate: float = 0.5  # share of the layer's channels silenced
    layer: str = "auto"  # "auto" (last convolutional spiking layer), "feature", or a module name

    name: ClassVar[str] = "pruning"
    summary: ClassVar[str] = "silence the last conv spiking layer's least active channels on clean data"

    def __post_init__(self) -> None:
        require_fraction("rate", self.rate)

    def repair(self, ctx: DefenseContext) -> tuple[Classifier, dict[str, Any]]:
        layer, order = dormant_order(ctx.model, ctx, self.layer)
        pruned = order[: round(self.rate * len(order))]
        prune(ctx.model, layer, pruned)
        return ctx.model, {"layer": layer, "pruned_channels": len(pruned), "channels": len(order),
                           "reserve_accuracy": accuracy(ctx.model, ctx.clean_reserve)}
