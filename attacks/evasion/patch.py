"""Universal adversarial event patch (after AE-Patch, yszbb/AE-Patch, ``attack/adversarial_patchs_targeted.py``
and ``attack/patch_utils.py``; written from the method).

One binary square patch per target class, the same for every input: side ``int(sqrt(area * H * W))`` pixels
(AE-Patch's ``noise_percentage``), over all time bins and both polarities, pasted over the frames (the patch
replaces what is under it). Training, on the training set, for ``epochs`` passes: each batch of correctly
classified samples not of the target class gets the patch at a location (uniformly random per batch, or the
fixed ``position``); up to ``max_iterations`` signed-gradient steps of size ``lr`` descend the cross-entropy
to the target (AE-Patch: ``-log_softmax[target] * 1000``, lr 1), clamping the patch to [0, 1]; after each
epoch the patch is rounded to {0, 1}. At test time the rounded (binary) patch is pasted at a seeded random
location per sample (or the fixed position); success is the targeted success rate.

Budget: ``Budget("area", a)``, the patch's share of the frame area. Differences from the reference, each
deliberate: its per-target-class "receptive field" placement windows are not used (placement is uniform or a
fixed corner, options); the best patch is chosen on a held-out part of the training set (``holdout``), never
on the test set; the patch is trained with this attack's surrogate (``--surrogate``), not a fixed one.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from snnsec.attacks.evasion.base import EVASIONS, EvasionAttack, Goal, Victim, require
from snnsec.attacks.evasion.domains import Budget, Domain, patch_side
from snnsec.errors import ConfigError

PLACEMENTS = ("random", "top-left", "top-right", "bottom-left", "bottom-right", "middle")


def place(shape: tuple[int, ...], side: int, position: str, rng: np.random.Generator, count: int) -> list[tuple[int, int]]:
    """``count`` top-left corners (row, column) of a ``side`` square in frames of ``shape`` ``[..., H, W]``."""
    height, width = shape[-2], shape[-1]
    fixed = {"top-left": (0, 0), "top-right": (0, width - side), "bottom-left": (height - side, 0),
             "bottom-right": (height - side, width - side),
             "middle": ((height - side) // 2, (width - side) // 2)}
    if position != "random":
        return [fixed[position]] * count
    return [(int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))) for _ in range(count)]


def paste(frames: Tensor, patch: Tensor, corners: list[tuple[int, int]]) -> Tensor:
    """``frames [B, T, P, H, W]`` with ``patch [T, P, s, s]`` written at each sample's corner (differentiable in
    the patch)."""
    side = patch.shape[-1]
    out = []
    for i, (row, col) in enumerate(corners):
        mask = torch.zeros(frames.shape[-2:], dtype=frames.dtype, device=frames.device)
        mask[row:row + side, col:col + side] = 1
        canvas = F.pad(patch, (col, frames.shape[-1] - col - side, row, frames.shape[-2] - row - side))
        out.append(frames[i] * (1 - mask) + canvas * mask)
    return torch.stack(out)


@EVASIONS.register("patch")
@dataclass(frozen=True)
class UniversalPatch(EvasionAttack):
    position: str = "random"  # where the patch goes: random (per batch in training, per sample in testing) or fixed
    epochs: int = 2
    max_iterations: int = 20  # signed-gradient steps per training batch (AE-Patch: up to max_iteration)
    lr: float = 1.0
    batch_size: int = 32
    holdout: float = 0.2  # share of the training samples kept aside to pick the best epoch's patch
    patch: Any = field(default=None, compare=False, repr=False)  # the trained binary patch [T, P, s, s] (fit)

    name: ClassVar[str] = "patch"
    summary: ClassVar[str] = "universal targeted event patch (AE-Patch style), trained on the training set"
    domains: ClassVar[tuple[str, ...]] = ("binary",)
    default_norm: ClassVar[str | None] = "area"
    needs_training_data: ClassVar[bool] = True

    def __post_init__(self) -> None:
        require(self.position in PLACEMENTS, f"patch position must be one of {', '.join(PLACEMENTS)}, got {self.position!r}")
        require(self.epochs >= 1, f"patch epochs must be >= 1, got {self.epochs}")
        require(self.max_iterations >= 1, f"patch max_iterations must be >= 1, got {self.max_iterations}")
        require(self.lr > 0, f"patch lr must be > 0, got {self.lr}")
        require(self.batch_size >= 1, f"patch batch_size must be >= 1, got {self.batch_size}")
        require(0 < self.holdout < 1, f"patch holdout must be in (0, 1), got {self.holdout}")

    def params(self) -> dict[str, Any]:
        return {k: v for k, v in super().params().items() if k != "patch"}

    def check(self, domain: Domain, budget: Budget) -> None:
        if domain.name not in self.domains:
            raise ConfigError(f"evasion attack 'patch' works on binary frames, not {domain.name}")
        if budget.norm != "area" or not (budget.bounded and 0 < budget.value <= 1):
            raise ConfigError(f"patch budgets are area shares in (0, 1] (--norm area), got {budget.norm} {budget.label}")

    def fit(self, victim: Victim, train_x: Tensor, train_y: Tensor, target: int, budget: Budget,
            generator: torch.Generator) -> UniversalPatch:
        """This attack with its patch trained for ``target`` on ``(train_x, train_y)`` (frames, labels)."""
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        keep = train_y != target
        x, y = train_x[keep], train_y[keep]
        order = rng.permutation(len(x))
        cut = max(1, int(round(self.holdout * len(x))))
        held, fitting = order[:cut], order[cut:]
        frames, height, width = x.shape[1], x.shape[-2], x.shape[-1]
        side = patch_side(budget.value, height, width)
        patch = torch.zeros(frames, x.shape[2], side, side, device=x.device)
        best, best_rate = patch.clone(), -1.0
        goal_of = lambda n: Goal(torch.zeros(n, dtype=torch.long, device=x.device),  # noqa: E731
                                 torch.full((n,), target, dtype=torch.long, device=x.device))
        for _ in range(self.epochs):
            for start in range(0, len(fitting), self.batch_size):
                rows = torch.as_tensor(fitting[start:start + self.batch_size], device=x.device)
                batch, labels = x[rows], y[rows]
                correct = victim.predict(batch) == labels
                if not correct.any():
                    continue
                batch = batch[correct]
                corners = place(batch.shape, side, self.position, rng, 1) * len(batch)
                goal = goal_of(len(batch))
                for _ in range(self.max_iterations):
                    grad, logits = victim.gradient(patch, lambda out: goal.objective(out),
                                                   inputs=lambda p: paste(batch, p, corners))
                    if bool(goal.success(logits.argmax(1)).all()):
                        break
                    patch = (patch + self.lr * grad.sign()).clamp(0, 1)
            patch = patch.round()
            rate = self._success(victim, x[torch.as_tensor(held, device=x.device)], patch, target, rng)
            if rate > best_rate:
                best, best_rate = patch.clone(), rate
        return replace(self, patch=best)

    def _success(self, victim: Victim, x: Tensor, patch: Tensor, target: int, rng: np.random.Generator) -> float:
        corners = place(x.shape, patch.shape[-1], self.position, rng, len(x))
        return float((victim.predict(paste(x, patch, corners)) == target).float().mean())

    def perturb(self, victim: Victim, x: Tensor, goal: Goal, budget: Budget, domain: Domain,
                generator: torch.Generator) -> Tensor:
        if self.patch is None:
            raise ConfigError("the patch attack must be fitted on the training set first (UniversalPatch.fit)")
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        corners = place(x.shape, self.patch.shape[-1], self.position, rng, len(x))
        return paste(x, self.patch.to(x.device), corners).detach()
