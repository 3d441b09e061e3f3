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

import numpy as np
from typing import ClassVar

import torch
from torch import Tensor

from snnsec.attacks.evasion.base import EVASIONS, EvasionAttack, Goal, Victim
from snnsec.attacks.evasion.domains import Budget, Domain
from snnsec.attacks.evasion.event_base import EventAttack, EventView, merged, synthetic_events


@EVASIONS.register("random")
@dataclass(frozen=True)
class RandomNoise(EvasionAttack):
    name: ClassVar[str] = "random"
    summary: ClassVar[str] = "random flips / noise of the same budget (the obfuscation baseline; no model access)"
    gradient_free: ClassVar[bool] = True

    def perturb(self, victim: Victim, x: Tensor, goal: Goal, budget: Budget, domain: Domain,
                generator: torch.Generator) -> Tensor:
        uniform = torch.rand(x.shape, generator=generator).to(x.device)
        if budget.norm == "area":  # a random binary patch of the same area at a random place
            from snnsec.attacks.evasion.domains import patch_side
            from snnsec.attacks.evasion.patch import paste, place

            side = patch_side(budget.value if budget.bounded else 1.0, x.shape[-2], x.shape[-1])
            rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
            patch = (torch.rand((*x.shape[1:3], side, side), generator=generator) < 0.5).to(x)
            return paste(x, patch, place(x.shape, side, "random", rng, len(x)))
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


@EVASIONS.register("random-events")
@dataclass(frozen=True)
class RandomEvents(EventAttack):
    """B events inserted at uniformly random pixels, polarities and times inside the sample's span (the
    baseline of the raw-event attacks' obfuscation check)."""

    name: ClassVar[str] = "random-events"
    summary: ClassVar[str] = "random events inserted with the same budget (the raw-event obfuscation baseline)"
    gradient_free: ClassVar[bool] = True

    def perturb_events(self, victim: Victim, streams: list[np.ndarray], goal: Goal, budget: Budget, view: EventView,
                       generator: torch.Generator) -> list[np.ndarray]:
        width, height, polarities = view.sensor_size
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        out = []
        for events in streams:
            if len(events) < 2:
                out.append(events.copy())
                continue
            k = int(budget.value) if budget.bounded else len(events)
            t0, t1 = int(events["t"].min()), int(events["t"].max())
            added = synthetic_events(events.dtype, rng.integers(0, width, k), rng.integers(0, height, k),
                                     rng.integers(t0, t1 + 1, k), rng.integers(0, max(2, polarities), k))
            out.append(merged(events, added))
        return out
