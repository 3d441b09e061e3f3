"""Neural Cleanse (Wang et al., S&P 2019; bolunwang/backdoor) in PyTorch for event frames ``[T, P, H, W]``.

For every class, the smallest trigger that sends clean reserve samples to that class is reverse-engineered:
``x' = (1 - m) * x + m * p`` with a spatio-temporal mask ``m [T, 1, H, W]`` (one per time bin, so moving
triggers are representable) and a pattern ``p [T, P, H, W]``, both in [0, 1] (sigmoid parametrised).
The loss is cross-entropy to the class plus ``cost * |m|_1 / T``. The cost follows the reference's
patience-based schedule and the search stops early once the best mask norm stalls (:class:`CostSchedule`);
``schedule="fixed"`` keeps this project's earlier fixed-length search. A backdoor target needs an
abnormally small mask: the anomaly index is the MAD distance of each class's mask norm below the median.

Differences from the reference: the mask has one plane per time bin (the reference's is one image plane)
and its norm is taken per time bin; mask and pattern are sigmoid-parametrised, starting from a 0.5 mask and a
near-0.5 pattern (the reference: tanh, from uniform random values); batches are drawn with replacement from
the clean reserve (the reference shuffles 1000 test images); Adam and its betas (0.5, 0.9), lr 0.1, init
cost 1e-3, success 0.99, batch 32, patience 5, multiplier 2 and early-stop patience 25 are the reference's
GTSRB settings.
"""
from __future__ import annotations

from dataclasses import dataclass, field
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
    steps: int = 0  # optimisation steps taken (fewer than the budget when the search stopped early)

    def apply(self, frames: Tensor) -> Tensor:
        mask, pattern = self.mask.to(frames.device), self.pattern.to(frames.device)
        return (1 - mask) * frames + mask * pattern


SCHEDULES = ("reference", "fixed")


@dataclass
class CostSchedule:
    """The reference's control of the mask-norm cost and its early stop (bolunwang/backdoor, ``visualizer.py``),
    fed once per step with that step's mean attack success and mean mask norm.

    The cost starts at 0 and is set to ``init_cost`` after ``patience`` successful steps in a row; then it is
    multiplied by ``multiplier`` after ``patience`` successful steps in a row and divided by ``multiplier ** 1.5``
    after ``patience`` failed ones. Once a successful trigger exists, the search stops when the best norm has
    not dropped below ``early_stop_threshold`` x its previous best for ``early_stop_patience`` steps, provided the
    cost has gone both up and down at least once.
    """

    init_cost: float = 1e-3
    patience: int = 5
    multiplier: float = 2.0
    success: float = 0.99
    early_stop_patience: int = 25
    early_stop_threshold: float = 1.0
    cost: float = 0.0
    best: float = float("inf")
    _stop_best: float = float("inf")
    _set: int = 0
    _up: int = 0
    _down: int = 0
    _stall: int = 0
    _went_up: bool = False
    _went_down: bool = False

    def step(self, success: float, norm: float) -> tuple[bool, bool]:
        """Record one step; ``(new best trigger, stop now)``. ``self.cost`` is then the next step's cost."""
        won = success >= self.success
        improved = won and norm < self.best
        if improved:
            self.best = norm
        if self.best < float("inf"):
            self._stall = self._stall + 1 if self.best >= self.early_stop_threshold * self._stop_best else 0
        self._stop_best = min(self.best, self._stop_best)
        if self._went_up and self._went_down and self._stall >= self.early_stop_patience:
            return improved, True
        if self.cost == 0 and won:
            self._set += 1
            if self._set >= self.patience:
                self.cost, self._up, self._down, self._went_up, self._went_down = self.init_cost, 0, 0, False, False
        else:
            self._set = 0
        self._up, self._down = (self._up + 1, 0) if won else (0, self._down + 1)
        if self._up >= self.patience:
            self._up, self.cost, self._went_up = 0, self.cost * self.multiplier, True
        elif self._down >= self.patience:
            self._down, self.cost, self._went_down = 0, self.cost / self.multiplier ** 1.5, True
        return improved, False


@dataclass
class FixedSchedule:
    """This project's earlier schedule: the cost starts at ``init_cost`` and every 10 steps rises by
    ``multiplier`` if all 10 succeeded, else falls by ``multiplier ** 1.5``; no early stop."""

    init_cost: float = 1e-3
    multiplier: float = 1.5
    success: float = 0.99
    cost: float = 0.0
    best: float = float("inf")
    _wins: list[bool] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.cost = self.init_cost

    def step(self, success: float, norm: float) -> tuple[bool, bool]:
        won = success >= self.success
        improved = won and norm < self.best
        if improved:
            self.best = norm
        self._wins.append(won)
        if len(self._wins) % 10 == 0:
            self.cost = self.cost * self.multiplier if all(self._wins[-10:]) else self.cost / self.multiplier ** 1.5
        return improved, False


@dataclass(frozen=True)
class TriggerSearch:
    """Reverse-engineering settings shared by Neural Cleanse and the unlearning repair.

    ``schedule="reference"``: a step is ``mini_batches`` batches (0: one pass over the reserve, as the
    reference's 1000 samples / 32), the cost follows :class:`CostSchedule` (``patience`` 5, ``cost_multiplier``
    2, early stop after 5 x patience stalled steps: the reference's GTSRB settings) and ``steps`` (1000) is
    the most steps taken. ``schedule="fixed"``: this project's earlier search, ``steps`` single batches under
    :class:`FixedSchedule` (use ``steps=150, cost_multiplier=1.5`` for its exact settings).
    """

    steps: int = 1000
    lr: float = 0.1
    init_cost: float = 1e-3
    cost_multiplier: float = 2.0
    success: float = 0.99  # attack success a candidate trigger must reach
    batch_size: int = 32
    schedule: str = "reference"
    patience: int = 5
    mini_batches: int = 0  # reference schedule: batches per step (0: one pass over the reserve)

    def __post_init__(self) -> None:
        require(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        require(self.lr > 0, f"lr must be > 0, got {self.lr}")
        require(self.init_cost > 0, f"init_cost must be > 0, got {self.init_cost}")
        require(self.cost_multiplier > 1, f"cost_multiplier must be > 1, got {self.cost_multiplier}")
        require_fraction("success", self.success)
        require(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        require(self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}; got {self.schedule!r}")
        require(self.patience >= 1, f"patience must be >= 1, got {self.patience}")
        require(self.mini_batches >= 0, f"mini_batches must be >= 0, got {self.mini_batches}")

    def controller(self) -> CostSchedule | FixedSchedule:
        if self.schedule == "reference":
            return CostSchedule(self.init_cost, self.patience, self.cost_multiplier, self.success,
                                early_stop_patience=5 * self.patience)
        return FixedSchedule(self.init_cost, self.cost_multiplier, self.success)

    def batches_per_step(self, reserve_size: int) -> int:
        if self.schedule == "fixed":
            return 1
        return self.mini_batches or max(1, -(-reserve_size // self.batch_size))


def reverse_engineer(ctx: DefenseContext, target: int, search: TriggerSearch, reserve: Tensor) -> ReversedTrigger:
    """The smallest mask-and-pattern trigger found that sends ``reserve`` frames ``[N, T, P, H, W]`` to ``target``."""
    model, device = ctx.model, ctx.model.device
    steps, channels = reserve.shape[1], reserve.shape[2]
    generator = torch.Generator().manual_seed(ctx.seed * 1000 + target)
    mask_param = torch.zeros(steps, 1, *reserve.shape[3:], device=device, requires_grad=True)
    pattern_param = (0.1 * torch.randn(steps, channels, *reserve.shape[3:], generator=generator)).to(device).requires_grad_()
    optimizer = torch.optim.Adam([mask_param, pattern_param], lr=search.lr, betas=(0.5, 0.9))
    control, best, taken = search.controller(), None, 0
    per_step = search.batches_per_step(len(reserve))
    labels = torch.full((search.batch_size,), target, device=device)
    with frozen(model), progress_bar(f"neural cleanse: class {target}", total=search.steps) as advance:
        for _ in range(search.steps):
            won, sizes = [], []
            for _ in range(per_step):
                rows = torch.randint(len(reserve), (search.batch_size,), generator=generator)
                mask, pattern = torch.sigmoid(mask_param), torch.sigmoid(pattern_param)
                logits = model.logits((1 - mask) * reserve[rows].to(device) + mask * pattern)
                norm = mask.sum() / steps
                loss = F.cross_entropy(logits, labels) + control.cost * norm
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                won.append(float((logits.argmax(1) == labels).float().mean()))
                sizes.append(float(norm.detach()))
            taken += 1
            improved, stop = control.step(float(np.mean(won)), float(np.mean(sizes)))
            if improved:  # the trigger as the step's last batch saw it (it reached the success rate)
                best = (sizes[-1], mask.detach().clone(), pattern.detach().clone())
            advance(norm=sizes[-1])
            if stop:
                break
    if best is None:  # never reached the success rate: keep the final trigger, marked by its success
        mask = torch.sigmoid(mask_param).detach()
        best = (float(mask.sum() / steps), mask, torch.sigmoid(pattern_param).detach())
    found = ReversedTrigger(target, best[1].cpu(), best[2].cpu(), best[0], 0.0)
    with torch.no_grad():
        predicted = model.predict(found.apply(reserve).to(device))
    return ReversedTrigger(target, found.mask, found.pattern, found.norm, float((predicted == target).float().mean()),
                           taken)


def reserve_frames(ctx: DefenseContext) -> Tensor:
    return torch.stack([ctx.clean_reserve[i][0] for i in range(len(ctx.clean_reserve))])


def cleanse(ctx: DefenseContext, search: TriggerSearch) -> list[ReversedTrigger]:
    """One reversed trigger per class."""
    reserve = reserve_frames(ctx)
    return [reverse_engineer(ctx, k, search, reserve) for k in range(ctx.num_classes)]


def cleanse_details(triggers: list[ReversedTrigger]) -> dict[str, Any]:
    return {"mask_norm": [round(t.norm, 3) for t in triggers],
            "reversed_success": [round(t.success, 3) for t in triggers], "search_steps": [t.steps for t in triggers]}


@DEFENSES.register("neural-cleanse")
@dataclass(frozen=True)
class NeuralCleanse(ModelInspector):
    steps: int = 1000  # most optimisation steps per class (the reference's 1000)
    lr: float = 0.1
    init_cost: float = 1e-3
    batch_size: int = 32
    schedule: str = "reference"  # "reference": patience-based cost and early stop; "fixed": the earlier search
    patience: int = 5  # reference schedule: steps before the cost changes (early stop: 5 x patience)
    cost_multiplier: float = 2.0  # up by this, down by its 1.5th power (the earlier fixed schedule used 1.5)
    mini_batches: int = 0  # reference schedule: batches per step (0: one pass over the reserve)

    name: ClassVar[str] = "neural-cleanse"
    summary: ClassVar[str] = "reverse-engineer a minimal spatio-temporal trigger per class; MAD outlier = target"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.search()  # validates

    def search(self) -> TriggerSearch:
        return TriggerSearch(steps=self.steps, lr=self.lr, init_cost=self.init_cost, batch_size=self.batch_size,
                             schedule=self.schedule, patience=self.patience, cost_multiplier=self.cost_multiplier,
                             mini_batches=self.mini_batches)

    def class_scores(self, ctx: DefenseContext) -> tuple[np.ndarray, dict[str, Any]]:
        triggers = cleanse(ctx, self.search())
        return mad_anomaly_index(np.array([t.norm for t in triggers]), low_is_anomalous=True), cleanse_details(triggers)
