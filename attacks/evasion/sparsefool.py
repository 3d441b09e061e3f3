"""A SparseFool-style attack on binary frames (after SparseFool, Modas et al., CVPR 2019, and its binary
use in SpikeFool, Büchel et al., 2022; jubueche/SPAA). Written from the method, not a port.

Per sample, repeat until misclassified (or ``max_iterations``, or more than ``max_flips`` flips):

1. linearise the decision boundary as DeepFool does: among the ``candidates`` most likely other classes (the
   target, when targeted) pick the one with the smallest ``margin / ||grad margin||_2``, where ``margin`` is
   the logit difference to the current class; ``w = grad(margin)``;
2. solve the linear problem sparsely on the binary lattice: flip elements in order of their first-order gain
   ``w * (1 - 2x)`` (positive only, not flipped before) until the summed gain reaches ``overshoot * margin``
   (SparseFool's lambda), i.e. the fewest flips that cross the linearised boundary;
3. re-linearise at the new point.

Differences from SparseFool: its continuous line search toward a DeepFool boundary point is replaced by this
greedy flip count (on {0, 1} every move is a whole flip), and there is no box projection (flips stay binary).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from snnsec.attacks.evasion.base import EVASIONS, EvasionAttack, Goal, Victim, flip_gain, one_by_one, require
from snnsec.attacks.evasion.domains import Budget, Domain


@EVASIONS.register("sparsefool")
@dataclass(frozen=True)
class SparseFool(EvasionAttack):
    overshoot: float = 1.2  # lambda: cross the linearised boundary by this factor
    candidates: int = 4  # other classes considered per linearisation (untargeted)
    max_iterations: int = 50
    max_flips: int | None = None  # give up beyond this many flips (None: no cap)

    name: ClassVar[str] = "sparsefool"
    summary: ClassVar[str] = "SparseFool-style: linearise the boundary, cross it with the fewest flips, repeat"
    domains: ClassVar[tuple[str, ...]] = ("binary",)
    minimal: ClassVar[bool] = True

    def __post_init__(self) -> None:
        require(self.overshoot >= 1, f"sparsefool overshoot must be >= 1, got {self.overshoot}")
        require(self.candidates >= 1, f"sparsefool candidates must be >= 1, got {self.candidates}")
        require(self.max_iterations >= 1, f"sparsefool max_iterations must be >= 1, got {self.max_iterations}")
        require(self.max_flips is None or self.max_flips >= 1, f"sparsefool max_flips must be >= 1, got {self.max_flips}")

    def perturb(self, victim: Victim, x: Tensor, goal: Goal, budget: Budget, domain: Domain,
                generator: torch.Generator) -> Tensor:
        return one_by_one(x, goal, lambda sample, part: self._one(victim, sample, part))

    def _one(self, victim: Victim, x: Tensor, goal: Goal) -> Tensor:
        adv = x.clone()
        cap = self.max_flips if self.max_flips is not None else x.numel()
        for _ in range(self.max_iterations):
            logits = victim.predict_logits(adv)
            if goal.success(logits.argmax(1)).all():
                return adv
            current = int(logits.argmax(1))
            if goal.targets is not None:
                others = [int(goal.targets[0])]
            else:
                ranked = logits[0].argsort(descending=True).tolist()
                others = [c for c in ranked if c != current][: self.candidates]
            best = None
            for other in others:
                def margin(out: Tensor, other: int = other) -> Tensor:
                    return out[:, other] - out[:, current]
                grad, out = victim.gradient(adv, margin)
                gap = float(out[0, current] - out[0, other])
                distance = gap / max(float(grad.norm()), 1e-12)
                if best is None or distance < best[0]:
                    best = (distance, gap, grad)
            _, gap, grad = best
            gain = flip_gain(adv, grad).flatten()
            gain[(adv != x).flatten()] = float("-inf")
            values, order = gain.sort(descending=True)
            positive = int((values > 0).sum())
            if positive == 0:
                return x
            reach = torch.cumsum(values[:positive], 0)
            need = int((reach < self.overshoot * max(gap, 0.0)).sum()) + 1
            flips = order[: min(need, positive)]
            flat = adv.flatten().clone()
            flat[flips] = 1 - flat[flips]
            adv = flat.view_as(x)
            if int((adv != x).sum()) > cap:
                return x
        return adv if goal.success(victim.predict(adv)).all() else x
