"""Evasion attack contract: the victim (the one place attacks call the model), the attacker's goal, and the
registry.

An attack is a frozen dataclass of validated parameters with one verb, :meth:`EvasionAttack.perturb`: given
the victim, clean inputs, the goal and a :class:`~snnsec.attacks.evasion.domains.Budget`, it returns hard,
valid inputs of the domain (the protocol checks them, see :mod:`snnsec.evading`). Minimal-perturbation
attacks (``minimal = True``: SDA, SparseFool) search for the smallest change and take the budget as a cap; one
run serves every budget (an example counts as a success at budget B when it succeeds with L0 <= B).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from snnsec.attacks.base import check_options
from snnsec.attacks.evasion.domains import Budget, Domain
from snnsec.attacks.evasion.surrogates import Surrogate, attack_surrogate
from snnsec.classifier import Classifier
from snnsec.errors import ConfigError
from snnsec.registry import Registry


@dataclass(frozen=True)
class Goal:
    """What the attacker wants: any wrong class (``targets`` None) or, per sample, a target class."""

    labels: Tensor
    targets: Tensor | None = None

    def subset(self, rows: Tensor) -> Goal:
        return Goal(self.labels[rows], None if self.targets is None else self.targets[rows])

    def success(self, predicted: Tensor) -> Tensor:
        return predicted != self.labels if self.targets is None else predicted == self.targets

    def objective(self, logits: Tensor) -> Tensor:
        """Per-sample loss the attacker ascends: cross-entropy of the true class, or minus that of the target."""
        if self.targets is None:
            return F.cross_entropy(logits, self.labels, reduction="none")
        return -F.cross_entropy(logits, self.targets, reduction="none")

    def margin(self, logits: Tensor) -> Tensor:
        """Per-sample C&W margin the attacker drives below 0: (true - best other) logit, untargeted; (best
        other - target) logit, targeted. Success iff margin < 0 (ties count as failures)."""
        keep = self.labels if self.targets is None else self.targets
        own = logits.gather(1, keep[:, None])[:, 0]
        other = logits.scatter(1, keep[:, None], float("-inf")).amax(1)
        return own - other if self.targets is None else other - own


class Victim:
    """The model under attack, seen through an attack surrogate: the one place evasion attacks call it.

    Gradients flow through ``surrogate`` (forward values are the model's own: :class:`AttackNeuron` runs the
    same dynamics), predictions use the model's own neurons; both in eval mode. ``queries`` counts the samples
    sent through the model (forward passes x batch size)."""

    def __init__(self, classifier: Classifier, surrogate: Surrogate | None = None) -> None:
        self.classifier = classifier
        self.surrogate = surrogate or Surrogate("model")
        self.queries = 0

    @property
    def device(self) -> torch.device:
        return self.classifier.device

    def logits(self, x: Tensor) -> Tensor:
        """Logits with a graph through the attack surrogate."""
        self.queries += len(x)
        with self.classifier.evaluating(), attack_surrogate(self.classifier.net, self.surrogate):
            return self.classifier.logits(x)

    def gradient(self, x: Tensor, loss, inputs=None) -> tuple[Tensor, Tensor]:
        """``(d sum(loss(logits)) / dx, logits)`` at ``x``; ``loss`` maps logits to per-sample losses.
        ``inputs`` (optional) maps ``x`` to the model's input (e.g. a patch pasted on frames)."""
        x = x.detach().requires_grad_(True)
        logits = self.logits(x if inputs is None else inputs(x))
        (grad,) = torch.autograd.grad(loss(logits).sum(), x)
        return grad.detach(), logits.detach()

    def predict_logits(self, x: Tensor, batch: int = 256) -> Tensor:
        """The model's own logits, no gradients."""
        self.queries += len(x)
        with self.classifier.evaluating(), torch.no_grad():
            return torch.cat([self.classifier.logits(x[i:i + batch]) for i in range(0, len(x), batch)])

    def predict(self, x: Tensor) -> Tensor:
        return self.predict_logits(x).argmax(1)


@dataclass(frozen=True)
class EvasionAttack(ABC):
    """Base of all evasion attacks (see module doc)."""

    name: ClassVar[str] = "evasion"
    summary: ClassVar[str] = ""
    domains: ClassVar[tuple[str, ...]] = ("binary", "counts", "continuous")
    minimal: ClassVar[bool] = False  # searches for the smallest change; the budget is a cap
    gradient_free: ClassVar[bool] = False
    default_norm: ClassVar[str | None] = None  # None: the domain's
    needs_training_data: ClassVar[bool] = False  # fitted on the training set first (``fit``), e.g. a universal patch

    def params(self) -> dict[str, Any]:
        return {"attack": self.name, **asdict(self)}

    def check(self, domain: Domain, budget: Budget) -> None:
        """One-line error unless this attack runs on ``domain`` with ``budget`` (before any work)."""
        if domain.name not in self.domains:
            raise ConfigError(f"evasion attack {self.name!r} works on {', '.join(self.domains)} inputs, not "
                              f"{domain.name} (see --encoding)")
        if budget.norm == "area" and self.default_norm != "area":
            raise ConfigError(f"area budgets are for patch attacks; {self.name!r} takes "
                              f"{'/'.join(n for n in domain.norms if n != 'area')}")
        domain.check_budget(budget)

    @abstractmethod
    def perturb(self, victim: Victim, x: Tensor, goal: Goal, budget: Budget, domain: Domain,
                generator: torch.Generator) -> Tensor:
        """Hard, valid adversarial inputs for ``x`` (``[B, T, P, H, W]``) within ``budget``; a sample the
        attack cannot move is returned unchanged or with its best try."""


EVASIONS: Registry[type[EvasionAttack]] = Registry("evasion attack", "snnsec.evasions")


def create_evasion(name: str, **params: Any) -> EvasionAttack:
    """Build evasion attack ``name``; an unknown option or a wrongly typed value is a one-line error."""
    cls = EVASIONS.get(name)
    check_options("evasion attack", name, cls, params, ())
    for f in fields(cls):
        if f.name in params:
            value, kind = params[f.name], str(f.type)
            ok = {"int": isinstance(value, int) and not isinstance(value, bool),
                  "float": isinstance(value, (int, float)) and not isinstance(value, bool),
                  "bool": isinstance(value, bool)}.get(kind.split(" |")[0], True)
            if not ok and not (kind.endswith("| None") and value is None):
                raise ConfigError(f"evasion attack {name!r} option {f.name} must be {kind}, got {value!r}")
    return cls(**params)


def one_by_one(x: Tensor, goal: Goal, attack_one) -> Tensor:
    """``x`` with each sample replaced by ``attack_one(x[i:i+1], goal_i)`` (attacks that work per sample)."""
    out = x.clone()
    for i in range(len(x)):
        out[i] = attack_one(x[i:i + 1], goal.subset(torch.tensor([i], device=x.device)))[0]
    return out


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def flip_gain(x: Tensor, grad: Tensor) -> Tensor:
    """First-order change of the attacker's loss when each binary element is flipped: ``grad * (1 - 2x)``."""
    return grad * (1 - 2 * x)


def flip_top(x: Tensor, gain: Tensor, k: Tensor | int, allowed: Tensor | None = None) -> Tensor:
    """Per sample, flip the ``k`` elements of highest positive ``gain`` (among ``allowed``); ``k`` per sample."""
    flat = gain.flatten(1).clone()
    flat[flat <= 0] = float("-inf")
    if allowed is not None:
        flat[~allowed.flatten(1)] = float("-inf")
    ks = torch.as_tensor(k, device=x.device).expand(len(x)) if not isinstance(k, Tensor) else k
    top = int(ks.max().clamp(max=flat.shape[1])) if len(x) else 0
    if top == 0:
        return x.clone()
    values, order = flat.topk(top, dim=1)
    take = (torch.arange(top, device=x.device)[None] < ks[:, None]) & torch.isfinite(values)
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask.scatter_(1, order, take)
    return torch.where(mask.view_as(x), 1 - x, x)
