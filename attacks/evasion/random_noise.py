"""Random perturbations with an attack's budget: the baseline of the gradient-obfuscation check (a white-box
attack that a random one beats is not using its gradients).

- binary frames, L0 budget B: B distinct elements flipped, uniformly at random;
- count frames: L-inf: a uniform whole-event change in ``[-floor(eps), floor(eps)]`` per element; L2: a random
  direction scaled to ``eps``, in whole events; L0: B random elements each gain or lose one event;
- continuous: uniform in the L-inf ball, or a random direction of length ``eps`` for L2.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from snnsec.attacks.evasion.base import EVASIONS, EvasionAttack, Goal, Victim
from snnsec.attacks.evasion.domains import Budget, Domain


@EVASIONS.register("random")
@dataclass(frozen=True)
class RandomNoise(EvasionAttack):
    name: ClassVar[str] = "random"
    summary: ClassVar[str] = "random flips / noise of the same budget (the obfuscation baseline; no model access)"
    gradient_free: ClassVar[bool] = True

    def perturb(self, victim: Victim, x: Tensor, goal: Goal, budget: Budget, domain: Domain,
                generator: torch.Generator) -> Tensor:
        uniform = torch.rand(x.shape, generator=generator).to(x.device)
        if domain.name == "binary" or budget.norm == "l0":
            k = x[0].numel() if not budget.bounded else min(int(budget.value), x[0].numel())
            chosen = torch.zeros(x.flatten(1).shape, dtype=torch.bool, device=x.device)
            chosen.scatter_(1, uniform.flatten(1).topk(k, dim=1).indices, True)
            chosen = chosen.view_as(x)
            if domain.name == "binary":
                return torch.where(chosen, 1 - x, x)
            sign = torch.where(torch.rand(x.shape, generator=generator).to(x.device) < 0.5, -1.0, 1.0)
            return domain.project(x, x + chosen * sign, budget)
        eps = budget.value if budget.bounded else 1e6
        if budget.norm == "linf":
            noise = (uniform * 2 - 1) * eps
            if domain.name == "counts":
                cap = math.floor(eps)
                noise = torch.floor(uniform * (2 * cap + 1)) - cap
        else:
            direction = torch.randn(x.shape, generator=generator).to(x.device)
            noise = eps * direction / direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
        return domain.project(x, x + noise, budget)
