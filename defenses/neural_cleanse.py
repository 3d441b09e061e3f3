"""Neural Cleanse (Wang et al., S&P 2019) in PyTorch for event frames ``[T, P, H, W]``.

For every class, the smallest trigger that sends clean reserve samples to that class is reverse-engineered:
``x' = (1 - m) * x + m * p`` with a spatio-temporal mask ``m [T, 1, H, W]`` (one per time bin, so moving
triggers are representable) and a pattern ``p [T, P, H, W]``, both in [0, 1] (sigmoid parametrised).
The loss is cross-entropy to the class plus ``cost * |m|_1 / T``; the cost rises while the trigger
succeeds on at least ``success`` of a batch and falls otherwise. A backdoor target needs an abnormally
small mask: the anomaly index is the MAD distance of each class's mask norm below the median.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from snnsec.defenses.base import DEFENSES, DefenseContext, ModelInspector, frozen, require, require_fraction
from snnsec.detection import mad_anomaly_index
from snnsec.progress import progress_bar


@dataclass(frozen=True)
class ReversedTrigger:
    target: int
    mask: Tensor  # [T, 1, H, W] in [0, 1]
    pattern: Tensor  # [T, P, H, W] in [0, 1]
    norm: float  # mask L1 norm per time bin (pixels)
    success: float  # share of reserve samples it sends to ``target``

    def apply(self, frames: Tensor) -> Tensor:
        mask, pattern = self.mask.to(frames.device), self.pattern.to(frames.device)
        return (1 - mask) * frames + mask * pattern


@dataclass(frozen=True)
class TriggerSearch:
    """Reverse-engineering settings shared by Neural Cleanse and the unlearning repair."""

    steps: int = 150
    lr: float = 0.1
    init_cost: float = 1e-3
    cost_multiplier: float = 1.5
    success: float = 0.99  # attack success a candidate trigger must reach
    batch_size: int = 32

    def __post_init__(self) -> None:
        require(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        require(self.lr > 0, f"lr must be > 0, got {self.lr}")
        require(self.init_cost > 0, f"init_cost must be > 0, got {self.init_cost}")
        require(self.cost_multiplier > 1, f"cost_multiplier must be > 1, got {self.cost_multiplier}")
        require_fraction("success", self.success)
        require(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")


def reverse_engineer(ctx: DefenseContext, target: int, search: TriggerSearch, reserve: Tensor) -> ReversedTrigger:
    """The smallest mask-and-pattern trigger found that sends ``reserve`` frames ``[N, T, P, H, W]`` to ``target``."""
    model, device = ctx.model, ctx.model.device
    steps, channels = reserve.shape[1], reserve.shape[2]
    generator = torch.Generator().manual_seed(ctx.seed * 1000 + target)
    mask_param = torch.zeros(steps, 1, *reserve.shape[3:], device=device, requires_grad=True)
    pattern_param = (0.1 * torch.randn(steps, channels, *reserve.shape[3:], generator=generator)).to(device).requires_grad_()
    optimizer = torch.optim.Adam([mask_param, pattern_param], lr=search.lr, betas=(0.5, 0.9))
    cost, best, wins = search.init_cost, None, []
    labels = torch.full((search.batch_size,), target, device=device)
    with frozen(model), progress_bar(f"neural cleanse: class {target}", total=search.steps) as advance:
        for step in range(search.steps):
            rows = torch.randint(len(reserve), (search.batch_size,), generator=generator)
            mask, pattern = torch.sigmoid(mask_param), torch.sigmoid(pattern_param)
            logits = model.logits((1 - mask) * reserve[rows].to(device) + mask * pattern)
            norm = mask.sum() / steps
            loss = F.cross_entropy(logits, labels) + cost * norm
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            won, size = float((logits.argmax(1) == labels).float().mean()), float(norm.detach())
            if won >= search.success and (best is None or size < best[0]):
                best = (size, mask.detach().clone(), pattern.detach().clone())
            wins.append(won >= search.success)
            if len(wins) % 10 == 0:  # adapt the cost every 10 steps
                cost = cost * search.cost_multiplier if all(wins[-10:]) else cost / search.cost_multiplier ** 1.5
            advance(norm=size)
    if best is None:  # never reached the success rate: keep the final trigger, marked by its success
        mask = torch.sigmoid(mask_param).detach()
        best = (float(mask.sum() / steps), mask, torch.sigmoid(pattern_param).detach())
    found = ReversedTrigger(target, best[1].cpu(), best[2].cpu(), best[0], 0.0)
    with torch.no_grad():
        predicted = model.predict(found.apply(reserve).to(device))
    return ReversedTrigger(target, found.mask, found.pattern, found.norm, float((predicted == target).float().mean()))


def reserve_frames(ctx: DefenseContext) -> Tensor:
    return torch.stack([ctx.clean_reserve[i][0] for i in range(len(ctx.clean_reserve))])


def cleanse(ctx: DefenseContext, search: TriggerSearch) -> list[ReversedTrigger]:
    """One reversed trigger per class."""
    reserve = reserve_frames(ctx)
    return [reverse_engineer(ctx, k, search, reserve) for k in range(ctx.num_classes)]


def cleanse_details(triggers: list[ReversedTrigger]) -> dict[str, Any]:
    return {"mask_norm": [round(t.norm, 3) for t in triggers],
            "reversed_success": [round(t.success, 3) for t in triggers]}


@DEFENSES.register("neural-cleanse")
@dataclass(frozen=True)
class NeuralCleanse(ModelInspector):
    steps: int = 150
    lr: float = 0.1
    init_cost: float = 1e-3
    batch_size: int = 32

    name: ClassVar[str] = "neural-cleanse"
    summary: ClassVar[str] = "reverse-engineer a minimal spatio-temporal trigger per class; MAD outlier = target"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.search()  # validates

    def search(self) -> TriggerSearch:
        return TriggerSearch(steps=self.steps, lr=self.lr, init_cost=self.init_cost, batch_size=self.batch_size)

    def class_scores(self, ctx: DefenseContext) -> tuple[np.ndarray, dict[str, Any]]:
        triggers = cleanse(ctx, self.search())
        return mad_anomaly_index(np.array([t.norm for t in triggers]), low_is_anomalous=True), cleanse_details(triggers)
