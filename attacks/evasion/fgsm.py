"""FGSM (Goodfellow et al., 2015) through a surrogate gradient, projected onto the event domain.

- continuous / count frames, L-inf: ``x + eps * sign(grad)`` (torchattacks' and ART's FGSM on continuous
  inputs; on counts the change is rounded to whole events and counts clamped at 0);
- count frames, L2: ``x + eps * grad / ||grad||_2``, then whole events fitted inside the ball;
- binary frames, L0: one gradient, then the ``B`` flips with the largest positive first-order gain
  ``grad * (1 - 2x)`` (events added where the gradient is positive and absent, removed where it is negative).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from snnsec.attacks.evasion.base import EVASIONS, EvasionAttack, Goal, Victim, flip_gain, flip_top
from snnsec.attacks.evasion.domains import Budget, Domain


@EVASIONS.register("fgsm")
@dataclass(frozen=True)
class FGSM(EvasionAttack):
    name: ClassVar[str] = "fgsm"
    summary: ClassVar[str] = "one gradient step (binary: the B best first-order flips)"

    def perturb(self, victim: Victim, x: Tensor, goal: Goal, budget: Budget, domain: Domain,
                generator: torch.Generator) -> Tensor:
        grad, _ = victim.gradient(x, goal.objective)
        if domain.name == "binary":
            k = x[0].numel() if not budget.bounded else int(budget.value)
            return flip_top(x, flip_gain(x, grad), k)
        return domain.project(x, x + step(grad, budget, budget.value), budget)


def step(grad: Tensor, budget: Budget, size: float) -> Tensor:
    """A step of length ``size`` along the gradient in ``budget``'s norm: ``sign(grad)`` for L-inf (and L0:
    the projection then keeps the largest), the normalised gradient for L2."""
    if budget.norm == "l2":
        norms = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (grad.dim() - 1))
        return size * grad / norms
    return size * grad.sign()
