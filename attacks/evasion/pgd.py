"""PGD (Madry et al., 2018) through a surrogate gradient; every iterate is projected to a hard, valid input and
only that is scored.

- continuous / count frames, L-inf or L2: torchattacks' PGD (random start uniform in the ball, ``steps`` ascent
  steps of ``step_size``, projection onto the ball and the value range; count frames: range [0, inf)) on the
  relaxed values; after each step the relaxed iterate is projected (counts: whole events, clamped at 0, fitted
  to the budget) and a sample keeps its first hard iterate that succeeds.
- count frames, L0: the same ascent, projected onto the L0 ball (the ``B`` largest changes kept).
- binary frames, L0: gradient-ranked flips in ``steps`` rounds of ``ceil(B / steps)`` flips (the ones of largest
  positive first-order gain among elements not flipped yet), re-ranked after each round; a sample stops once
  it is misclassified. ``random_start`` does not apply (a random flip would spend budget).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from snnsec.attacks.evasion.base import EVASIONS, EvasionAttack, Goal, Victim, flip_gain, flip_top, require
from snnsec.attacks.evasion.domains import Budget, Domain
from snnsec.attacks.evasion.fgsm import step


@EVASIONS.register("pgd")
@dataclass(frozen=True)
class PGD(EvasionAttack):
    steps: int = 10
    step_size: float | None = None  # default: eps / 4 (PDSG-SDA's PGD), at least one event on count frames
    random_start: bool = True

    name: ClassVar[str] = "pgd"
    summary: ClassVar[str] = "projected gradient ascent (binary: iterative gradient-ranked flips under L0)"

    def __post_init__(self) -> None:
        require(self.steps >= 1, f"pgd steps must be >= 1, got {self.steps}")
        require(self.step_size is None or self.step_size > 0, f"pgd step_size must be > 0, got {self.step_size}")

    def step_for(self, budget: Budget, domain: Domain) -> float:
        if self.step_size is not None:
            return float(self.step_size)
        size = budget.value / 4 if budget.bounded else 1.0
        return max(1.0, size) if domain.name == "counts" else size

    def perturb(self, victim: Victim, x: Tensor, goal: Goal, budget: Budget, domain: Domain,
                generator: torch.Generator) -> Tensor:
        if domain.name == "binary":
            return self._flips(victim, x, goal, budget)
        return self._ascent(victim, x, goal, budget, domain, generator)

    def _flips(self, victim: Victim, x: Tensor, goal: Goal, budget: Budget) -> Tensor:
        total = x[0].numel() if not budget.bounded else int(budget.value)
        per_round = math.ceil(total / self.steps)
        adv, active = x.clone(), torch.ones(len(x), dtype=torch.bool, device=x.device)
        for _ in range(self.steps):
            rows = active.nonzero().flatten()
            if not len(rows):
                break
            grad, logits = victim.gradient(adv[rows], goal.subset(rows).objective)
            done = goal.subset(rows).success(logits.argmax(1))
            used = (adv[rows] != x[rows]).flatten(1).sum(1)
            k = torch.clamp(total - used, max=per_round) * ~done
            flipped = flip_top(adv[rows], flip_gain(adv[rows], grad), k, allowed=adv[rows] == x[rows])
            adv[rows] = flipped
            active[rows] = ~done & (k > 0)
        return adv

    def _ascent(self, victim: Victim, x: Tensor, goal: Goal, budget: Budget, domain: Domain,
                generator: torch.Generator) -> Tensor:
        size, eps = self.step_for(budget, domain), budget.value
        high = 1.0 if domain.name == "continuous" else math.inf
        relaxed = x.clone()
        if self.random_start and budget.bounded and budget.norm in ("linf", "l2"):
            noise = torch.rand(x.shape, generator=generator, device="cpu").to(x.device) * 2 - 1
            if budget.norm == "l2":
                noise = noise / noise.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
            relaxed = (x + eps * noise).clamp(0, high)
        best = domain.project(x, relaxed, budget)
        found = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        hard_needed = domain.name != "continuous"
        for _ in range(self.steps):
            grad, logits = victim.gradient(relaxed, goal.objective)
            if not hard_needed:  # the iterate is its own hard input: its logits came with the gradient
                newly = goal.success(logits.argmax(1)) & ~found
                best[newly], found = relaxed[newly], found | newly
            relaxed = relaxed + step(grad, budget, size)
            relaxed = self._ball(x, relaxed, budget).clamp(0, high)
            hard = domain.project(x, relaxed, budget)
            if hard_needed:
                newly = goal.success(victim.predict(hard)) & ~found
                best[newly], found = hard[newly], found | newly
            best[~found] = hard[~found]
        return best

    @staticmethod
    def _ball(x: Tensor, relaxed: Tensor, budget: Budget) -> Tensor:
        if not budget.bounded:
            return relaxed
        delta = relaxed - x
        if budget.norm == "linf":
            delta = delta.clamp(-budget.value, budget.value)
        elif budget.norm == "l2":
            norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
            delta = delta * (budget.value / norms).clamp(max=1.0).view(-1, *[1] * (x.dim() - 1))
        else:  # l0: keep the largest changes
            k = int(budget.value)
            flat = delta.flatten(1)
            if k < flat.shape[1]:
                keep = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, flat.abs().topk(k, dim=1).indices, True)
                delta = torch.where(keep, flat, torch.zeros_like(flat)).view_as(delta)
        return x + delta
