"""Input domains of evasion attacks, declared and enforced.

An attack's output is a valid input of its domain, within its budget, or it is a bug: :meth:`Domain.check`
raises :class:`DomainViolation` (never silently repaired). Only hard, valid inputs are scored.

- ``binary``: binary frames; an attack flips elements (0 <-> 1); budget L0 = elements flipped (events added
  or removed).
- ``counts``: event-count frames, integers >= 0; budgets L-inf (events per element), L2, or L0 (elements
  changed). "Events changed" is the L1 norm of the change.
- ``continuous``: the relaxed [0, 1] box that generic libraries attack (ART, torchattacks); not event data,
  kept only to compare with them. The CLI never scores it.

Raw event streams and patches are attacked in "Evasion II"; their checks live here so every attack is held to
one definition: :func:`check_event_stream` (inside the sensor, sorted time stamps, valid polarity, budgets in
events inserted / deleted / flipped) and :func:`check_patch` (binary, confined to its area).
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from snnsec.errors import ConfigError, SnnsecError

NORMS = ("l0", "linf", "l2", "events", "area")


class DomainViolation(SnnsecError, AssertionError):
    """An attack produced an input outside its domain or budget (a bug in the attack, never scored)."""


@dataclass(frozen=True)
class Budget:
    """How far an attack may move an input: ``norm`` (l0, linf, l2) and ``value`` (``inf``: unbounded)."""

    norm: str
    value: float

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ConfigError(f"budget norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if not (self.value > 0):
            raise ConfigError(f"a {self.norm} budget must be > 0, got {self.value}")
        if self.norm in ("l0", "events") and math.isfinite(self.value) and self.value != int(self.value):
            raise ConfigError(f"an {self.norm} budget counts {'elements' if self.norm == 'l0' else 'events'}: a whole number, got {self.value}")

    @property
    def bounded(self) -> bool:
        return math.isfinite(self.value)

    @property
    def label(self) -> str:
        return "unbounded" if not self.bounded else f"{self.value:g}"


def distances(x: Tensor, x_adv: Tensor) -> dict[str, Tensor]:
    """Per-sample ``l0`` (elements changed), ``l1`` (events changed), ``linf`` and ``l2`` of ``x_adv - x``."""
    delta = (x_adv - x).flatten(1).double()
    return {"l0": (delta != 0).sum(1), "l1": delta.abs().sum(1), "linf": delta.abs().amax(1) if delta.shape[1]
            else torch.zeros(len(delta), dtype=delta.dtype), "l2": delta.norm(dim=1)}


@dataclass(frozen=True)
class Domain(ABC):
    """Base: which values are valid, which norms an attack may be budgeted in, how to project onto them."""

    name: ClassVar[str] = ""
    norms: ClassVar[tuple[str, ...]] = ()
    default_norm: ClassVar[str] = "l0"
    event_data: ClassVar[bool] = True

    def check_budget(self, budget: Budget) -> None:
        if budget.norm not in self.norms:
            raise ConfigError(f"{self.name} inputs take {'/'.join(self.norms)} budgets, not {budget.norm}")

    @abstractmethod
    def valid(self, x: Tensor) -> Tensor:
        """Per sample: are all values valid in this domain?"""

    def check(self, x: Tensor, x_adv: Tensor, budget: Budget, who: str = "attack") -> None:
        """Raise :class:`DomainViolation` unless every ``x_adv`` is a valid input within ``budget`` of ``x``."""
        if x_adv.shape != x.shape:
            raise DomainViolation(f"{who}: output shape {tuple(x_adv.shape)} differs from the input's {tuple(x.shape)}")
        bad = (~self.valid(x_adv)).nonzero().flatten()
        if len(bad):
            raise DomainViolation(f"{who}: sample {int(bad[0])} holds values outside the {self.name} domain")
        if budget.norm == "area":
            self._check_area(x, x_adv, budget, who)
        elif budget.bounded:
            used = distances(x, x_adv)[budget.norm]
            # float rounding of real-valued changes (0 -> 0.1 is 0.10000000149 in float32); whole events are exact
            slack = 1e-6 * max(1.0, budget.value) if budget.norm == "l2" or not self.event_data else 0.0
            over = (used > budget.value + slack).nonzero().flatten()
            if len(over):
                i = int(over[0])
                raise DomainViolation(f"{who}: sample {i} moved {float(used[i]):g} in {budget.norm}, over its budget "
                                      f"{budget.value:g}")

    @staticmethod
    def _check_area(x: Tensor, x_adv: Tensor, budget: Budget, who: str) -> None:
        """A patch budget: per sample, every changed pixel lies in one square of AE-Patch's side
        ``int(sqrt(area * H * W))``."""
        side = patch_side(budget.value, x.shape[-2], x.shape[-1])
        changed = (x_adv != x).flatten(1, -3).any(1)  # [B, H, W]
        for i, pixels in enumerate(changed):
            rows, cols = pixels.any(1).nonzero().flatten(), pixels.any(0).nonzero().flatten()
            if len(rows) and (int(rows[-1] - rows[0]) >= side or int(cols[-1] - cols[0]) >= side):
                raise DomainViolation(f"{who}: sample {i} changes pixels outside one {side}x{side} patch")

    @abstractmethod
    def project(self, x: Tensor, x_relaxed: Tensor, budget: Budget) -> Tensor:
        """The hard, valid input nearest ``x_relaxed`` (in this domain's sense) within ``budget`` of ``x``."""


@dataclass(frozen=True)
class BinaryFrames(Domain):
    name: ClassVar[str] = "binary"
    norms: ClassVar[tuple[str, ...]] = ("l0", "area")  # area: a patch's share of the frame (see check)
    default_norm: ClassVar[str] = "l0"

    def valid(self, x: Tensor) -> Tensor:
        return ((x == 0) | (x == 1)).flatten(1).all(1)

    def project(self, x: Tensor, x_relaxed: Tensor, budget: Budget) -> Tensor:
        """Round to {0, 1}; beyond the L0 budget keep the flips whose relaxed value moved furthest."""
        hard = (x_relaxed >= 0.5).to(x.dtype)
        return _keep_largest(x, hard, (x_relaxed - x).abs(), budget)


@dataclass(frozen=True)
class CountFrames(Domain):
    name: ClassVar[str] = "counts"
    norms: ClassVar[tuple[str, ...]] = ("linf", "l2", "l0")
    default_norm: ClassVar[str] = "linf"

    def valid(self, x: Tensor) -> Tensor:
        return ((x >= 0) & (x == torch.round(x)) & torch.isfinite(x)).flatten(1).all(1)

    def project(self, x: Tensor, x_relaxed: Tensor, budget: Budget) -> Tensor:
        """Round the change to whole events, clamp counts at 0, then fit the budget: L-inf clips each change to
        ``floor(eps)``; L2 shrinks changes toward 0 (whole events) until the norm fits; L0 keeps the largest."""
        delta = torch.round(x_relaxed - x)
        if budget.bounded and budget.norm == "linf":
            cap = math.floor(budget.value)
            delta = delta.clamp(-cap, cap)
        adv = (x + delta).clamp_min(0)
        if budget.bounded and budget.norm == "l2":
            adv = _fit_l2(x, adv, budget.value)
        if budget.norm == "l0":
            adv = _keep_largest(x, adv, (adv - x).abs(), budget)
        return adv


@dataclass(frozen=True)
class Continuous(Domain):
    name: ClassVar[str] = "continuous"
    norms: ClassVar[tuple[str, ...]] = ("linf", "l2")
    default_norm: ClassVar[str] = "linf"
    event_data: ClassVar[bool] = False

    def valid(self, x: Tensor) -> Tensor:
        return ((x >= 0) & (x <= 1)).flatten(1).all(1)

    def project(self, x: Tensor, x_relaxed: Tensor, budget: Budget) -> Tensor:
        delta = x_relaxed - x
        if budget.bounded and budget.norm == "linf":
            delta = delta.clamp(-budget.value, budget.value)
        elif budget.bounded and budget.norm == "l2":
            norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
            delta = delta * (budget.value / norms).clamp(max=1.0).view(-1, *[1] * (x.dim() - 1))
        return (x + delta).clamp(0, 1)


DOMAINS: dict[str, Domain] = {d.name: d for d in (BinaryFrames(), CountFrames(), Continuous())}


def patch_side(area: float, height: int, width: int) -> int:
    """A square patch's side for an area share (AE-Patch's ``int(sqrt(noise_percentage * H * W))``), at least 1
    and at most the frame's smaller side."""
    return max(1, min(int(math.sqrt(area * height * width)), height, width))


def domain_of(encoding: str) -> Domain:
    """The domain of frames made with ``encoding`` (``binary`` or ``counts``), ``continuous``, or ``events``."""
    if encoding == "events":
        from snnsec.attacks.evasion.event_base import EventStreams

        return EventStreams()
    try:
        return DOMAINS[encoding]
    except KeyError:
        raise ConfigError(f"unknown input domain {encoding!r}; choose one of: {', '.join(DOMAINS)}") from None


def _keep_largest(x: Tensor, adv: Tensor, priority: Tensor, budget: Budget) -> Tensor:
    """``adv`` with, per sample, only the ``budget.value`` changed elements of highest ``priority`` kept."""
    if not budget.bounded:
        return adv
    k = int(budget.value)
    changed = (adv != x).flatten(1)
    if int(changed.sum(1).max()) <= k:
        return adv
    score = torch.where(changed, priority.flatten(1).float() + 1.0, torch.zeros_like(changed, dtype=torch.float32))
    keep = torch.zeros_like(changed)
    keep.scatter_(1, score.topk(min(k, score.shape[1]), dim=1).indices, True)
    keep &= changed
    return torch.where(keep.view_as(x), adv, x)


def _fit_l2(x: Tensor, adv: Tensor, eps: float) -> Tensor:
    """Fit whole-event changes into each sample's L2 ball of radius ``eps``: scale the change down to the
    sphere, truncate toward 0 (never longer, still whole events, counts stay >= 0), then give one more event
    back to the elements that lost the largest fraction while the norm still fits."""
    delta = (adv - x).flatten(1)
    norms = delta.norm(dim=1)
    scale = (eps / norms.clamp_min(1e-12)).clamp(max=1.0)[:, None]
    scaled = delta * scale
    base = torch.trunc(scaled)
    remainder = (scaled - base).abs()
    cost = 2 * base.abs() + 1  # (|b| + 1)^2 - |b|^2
    left = eps ** 2 - base.square().sum(1, keepdim=True)
    order = remainder.argsort(dim=1, descending=True)
    fits = (torch.cumsum(cost.gather(1, order), 1) <= left + 1e-9) & (remainder.gather(1, order) > 0)
    bump = torch.zeros_like(fits).scatter_(1, order, fits)
    fitted = base + bump * torch.sign(scaled)
    return x + torch.where(scale < 1, fitted, delta).view_as(x)


# ---- raw event streams and patches (the attacks come in "Evasion II") -----------------------------------

def check_event_stream(events: np.ndarray, sensor_size: tuple[int, int, int], clean: np.ndarray | None = None,
                       budget: dict[str, int] | None = None, who: str = "attack") -> dict[str, int]:
    """Raise :class:`DomainViolation` unless ``events`` (structured x, y, t, p) lie inside the sensor
    ``(W, H, P)``, are sorted by time with valid polarity; with ``clean``, count the events inserted, deleted
    and flipped (polarity) against it and hold them to ``budget`` (keys ``inserted``, ``deleted``, ``flipped``,
    ``total``). Returns the counts."""
    width, height, polarities = sensor_size
    for name in ("x", "y", "t", "p"):
        if events.dtype.names is None or name not in events.dtype.names:
            raise DomainViolation(f"{who}: events lack field {name!r}")
    if len(events):
        if (events["x"] < 0).any() or (events["x"] >= width).any() or (events["y"] < 0).any() \
                or (events["y"] >= height).any():
            raise DomainViolation(f"{who}: events outside the {width}x{height} sensor")
        if (np.diff(events["t"].astype(np.int64)) < 0).any():
            raise DomainViolation(f"{who}: event time stamps are not sorted")
        valid_p = (0, 1) if polarities <= 2 else tuple(range(polarities))
        if not np.isin(events["p"].astype(np.int64), valid_p).all():
            raise DomainViolation(f"{who}: polarity outside {valid_p}")
    counts = {"inserted": 0, "deleted": 0, "flipped": 0}
    if clean is not None:
        key = lambda e: (e["x"].astype(np.int64) * height + e["y"]) * (1 << 40) + e["t"].astype(np.int64)  # noqa: E731
        before, after = _multiset(key(clean), clean["p"]), _multiset(key(events), events["p"])
        for slot in set(before) | set(after):
            b, a = before.get(slot, {}), after.get(slot, {})
            same = sum(min(b.get(p, 0), a.get(p, 0)) for p in set(b) | set(a))
            removed, added = sum(b.values()) - same, sum(a.values()) - same
            flips = min(removed, added)
            counts["flipped"] += flips
            counts["deleted"] += removed - flips
            counts["inserted"] += added - flips
    counts["total"] = counts["inserted"] + counts["deleted"] + counts["flipped"]
    for name, limit in (budget or {}).items():
        if counts.get(name, 0) > limit:
            raise DomainViolation(f"{who}: {counts[name]} events {name}, over the budget {limit}")
    return counts


def _multiset(keys: np.ndarray, polarity: np.ndarray) -> dict[int, dict[int, int]]:
    out: dict[int, dict[int, int]] = {}
    for k, p in zip(keys.tolist(), polarity.astype(np.int64).tolist()):
        slot = out.setdefault(k, {})
        slot[p] = slot.get(p, 0) + 1
    return out


def check_patch(x: Tensor, x_adv: Tensor, area: Tensor, who: str = "patch") -> None:
    """Raise :class:`DomainViolation` unless ``x_adv`` is binary and differs from ``x`` only where ``area``
    (broadcastable boolean mask over ``[..., H, W]``) is set."""
    if not BinaryFrames().valid(x_adv).all():
        raise DomainViolation(f"{who}: patched frames are not binary")
    outside = (x_adv != x) & ~area.to(torch.bool)
    if outside.any():
        raise DomainViolation(f"{who}: {int(outside.sum())} changed elements lie outside the patch area")
