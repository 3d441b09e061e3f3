"""TMPBD (Li et al., arXiv 2510.06629): data-free target detection from the temporal membrane potential.

For every class ``k``, inputs in [0, 1] are optimised from random starts (no data needed) to maximise the
margin of the output layer's membrane potential, ``u_k(t) - max_{j != k} u_j(t)``, averaged over time
steps. A backdoor target is reachable by a small trigger from anywhere, so its maximum margin is
abnormally large; the anomaly index is the MAD distance of each class's maximum margin above the
median (the paper's statistic on the last spiking layer; the decision rule here is Neural Cleanse's
MAD test, so that both inspectors share one threshold).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from snnsec.defenses.base import DEFENSES, DefenseContext, ModelInspector, frozen, require
from snnsec.detection import mad_anomaly_index
from snnsec.progress import progress_bar


def temporal_margin(step_logits: torch.Tensor, k: int) -> torch.Tensor:
    """``[B, T, K]`` membrane potentials -> ``[B]`` mean over time of ``u_k - max_{j != k} u_j``."""
    others = step_logits.clone()
    others[..., k] = float("-inf")
    margin = step_logits[..., k] - others.max(-1).values
    return margin.mean(-1) if margin.dim() == 2 else margin


@DEFENSES.register("tmpbd")
@dataclass(frozen=True)
class TemporalMembranePotential(ModelInspector):
    starts: int = 8  # random inputs optimised per class
    steps: int = 100
    lr: float = 0.1

    name: ClassVar[str] = "tmpbd"
    summary: ClassVar[str] = "data-free: per-class maximum margin of the output membrane potential over time"
    spiking_only: ClassVar[str] = ("it reads the output layer's membrane potential over time steps, and an ANN's "
                                   "logits have no time axis")

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.starts >= 1, f"starts must be >= 1, got {self.starts}")
        require(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        require(self.lr > 0, f"lr must be > 0, got {self.lr}")

    def class_scores(self, ctx: DefenseContext) -> tuple[np.ndarray, dict[str, Any]]:
        shape = ctx.clean_reserve[0][0].shape  # only the input shape is read, never the data
        margins = np.array([self._max_margin(ctx, k, shape) for k in range(ctx.num_classes)])
        return mad_anomaly_index(margins, low_is_anomalous=False), {"max_margin": [round(float(m), 4) for m in margins]}

    def _max_margin(self, ctx: DefenseContext, k: int, shape: tuple[int, ...]) -> float:
        model, device = ctx.model, ctx.model.device
        generator = torch.Generator().manual_seed(ctx.seed * 1000 + k)
        param = torch.randn(self.starts, *shape, generator=generator).to(device).requires_grad_()
        optimizer = torch.optim.Adam([param], lr=self.lr)
        with frozen(model), progress_bar(f"tmpbd: class {k}", total=self.steps) as advance:
            for _ in range(self.steps):
                margin = temporal_margin(model.step_logits(torch.sigmoid(param)), k)
                optimizer.zero_grad(set_to_none=True)
                (-margin.sum()).backward()
                optimizer.step()
                advance(margin=float(margin.detach().max()))
            with torch.no_grad():
                return float(temporal_margin(model.step_logits(torch.sigmoid(param)), k).max())
