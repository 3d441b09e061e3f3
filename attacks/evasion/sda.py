"""SDA, the sparse attack on binary frames of PDSG-SDA (Lun et al., CVPR 2025; ryime/PDSG-SDA, ``utils/attack.py``),
written from the reference's algorithm.

Per sample, on the C&W margin loss (``max(margin, 0)``, :meth:`Goal.margin`):

1. *Generation*, iteration n = 1, 2, ...: take the loss gradient at the current adversarial input; keep the
   elements whose flip the gradient says lowers the loss (``0 <= x - sign(g) <= 1``), give zero gradients a
   random magnitude below the smallest non-zero one, exclude elements already selected; take the
   ``k = n * k_init`` largest; flip each alone on top of the current input and measure its finite difference
   ``FD = loss(flipped) - loss(current)`` (batched, ``batch_limit`` at a time); select those with ``FD <= 0``
   (an element with ``FD > 0`` is deselected); the new input is the clean one with every selected element
   flipped. Stop when it is misclassified, or after ``max_iterations``.
2. *Reduction*: sort the selected elements by ``|FD|`` (smallest first) and binary-search the longest prefix
   that can be flipped back with the input still adversarial.

Differences from the reference, each deliberate: the attack is skipped (sample returned unchanged) when more
than ``max_flips`` elements are selected before success (the reference has no cap; default: no cap either),
and ``k`` is capped at the number of elements. The reference's iteration limit N=500 and k_init=10 are the
defaults. A failed sample is returned unchanged, as in the reference.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from snnsec.attacks.evasion.base import EVASIONS, EvasionAttack, Goal, Victim, one_by_one, require
from snnsec.attacks.evasion.domains import Budget, Domain


@EVASIONS.register("sda")
@dataclass(frozen=True)
class SDA(EvasionAttack):
    k_init: int = 10
    max_iterations: int = 500
    batch_limit: int = 64
    max_flips: int | None = None  # give up once more are selected (None: never; the budget caps success anyway)

    name: ClassVar[str] = "sda"
    summary: ClassVar[str] = "PDSG-SDA's sparse attack: greedy gradient-guided flips, then a reduction step"
    domains: ClassVar[tuple[str, ...]] = ("binary",)
    minimal: ClassVar[bool] = True

    def __post_init__(self) -> None:
        require(self.k_init >= 1, f"sda k_init must be >= 1, got {self.k_init}")
        require(self.max_iterations >= 1, f"sda max_iterations must be >= 1, got {self.max_iterations}")
        require(self.batch_limit >= 1, f"sda batch_limit must be >= 1, got {self.batch_limit}")
        require(self.max_flips is None or self.max_flips >= 1, f"sda max_flips must be >= 1, got {self.max_flips}")

    def perturb(self, victim: Victim, x: Tensor, goal: Goal, budget: Budget, domain: Domain,
                generator: torch.Generator) -> Tensor:
        cap = self.max_flips if self.max_flips is not None else math.inf  # the protocol applies the budget
        return one_by_one(x, goal, lambda sample, part: self._one(victim, sample, part, cap, generator))

    def _loss(self, victim: Victim, goal: Goal, x: Tensor) -> Tensor:
        losses = []
        for start in range(0, len(x), self.batch_limit):
            batch = x[start:start + self.batch_limit]
            labels = Goal(goal.labels.expand(len(batch)), None if goal.targets is None else goal.targets.expand(len(batch)))
            losses.append(labels.margin(victim.predict_logits(batch)).clamp_min(0))
        return torch.cat(losses)

    def _one(self, victim: Victim, x: Tensor, goal: Goal, cap: float, generator: torch.Generator) -> Tensor:
        numel = x.numel()
        selected = torch.zeros(numel, dtype=torch.bool, device=x.device)
        fds = torch.full((numel,), math.inf, device=x.device)
        flat_x = x.flatten()
        adv = x.clone()
        success = False
        for n in range(self.max_iterations):
            grad, logits = victim.gradient(adv, lambda out: goal.margin(out).clamp_min(0))
            loss = goal.margin(logits).clamp_min(0)
            g = grad.flatten().clone()
            a = adv.flatten()
            step = a - g.sign()
            g = g * ((step >= 0) & (step <= 1))
            nonzero = g != 0
            scale = g[nonzero].abs().min() if nonzero.any() else torch.tensor(1.0, device=g.device)
            noise = torch.rand(numel, generator=generator).to(g.device) * scale
            g = torch.where(nonzero, g, noise)
            g = g * ~selected
            k = min((n + 1) * self.k_init, numel)
            candidates = g.abs().topk(k).indices
            trials = a.repeat(k, 1)
            rows = torch.arange(k, device=a.device)
            trials[rows, candidates] = 1 - trials[rows, candidates]
            fd = self._loss(victim, goal, trials.view(k, *x.shape[1:])) - loss
            fds[candidates] = fd
            selected[candidates] = True
            worse = fds > 0
            selected &= ~worse
            fds[worse] = math.inf
            adv = torch.where(selected, 1 - flat_x, flat_x).view_as(x)
            if goal.success(victim.predict(adv)).all():
                success = True
                break
            if int(selected.sum()) > cap:
                break
        if not success:
            return x
        return self._reduce(victim, x, adv, goal, selected, fds)

    def _reduce(self, victim: Victim, x: Tensor, adv: Tensor, goal: Goal, selected: Tensor, fds: Tensor) -> Tensor:
        count = int(selected.sum())
        order = torch.where(selected, fds.abs(), torch.full_like(fds, math.inf)).topk(count, largest=False).indices
        best, left, right = adv, 0, count - 1
        flat_adv = adv.flatten()
        while left <= right:
            middle = (left + right) // 2
            trial = flat_adv.clone()
            back = order[:middle + 1]
            trial[back] = 1 - flat_adv[back]
            trial = trial.view_as(x)
            if goal.success(victim.predict(trial)).all():
                left, best = middle + 1, trial
            else:
                right = middle - 1
        return best
