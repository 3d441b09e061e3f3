"""The single place where zoo models are called.

Frames arrive as ``[B, T, C, H, W]`` (the dataset layout); models see ``[T, B, C, H, W]``.
Spiking state is reset before every call, so no membrane potential leaks between batches.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from spikingjelly.activation_based import functional
from torch import Tensor, nn


class Classifier:
    """Wraps a zoo model: resets SNN state, transposes to time-major and averages logits over time."""

    def __init__(self, net: nn.Module, feature_layer: str | None = None) -> None:
        self.net = net
        self.feature_layer = feature_layer

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def logits(self, x: Tensor) -> Tensor:
        """``x``: ``[B, T, C, H, W]`` float frames -> ``[B, K]`` logits averaged over time."""
        out = self._forward(x)
        return out.mean(0) if out.dim() == 3 else out

    def step_logits(self, x: Tensor) -> Tensor:
        """Per-time-step readout ``[B, T, K]`` (the output layer's membrane potential at each step);
        models without a time axis give ``[B, K]``."""
        out = self._forward(x)
        return out.transpose(0, 1) if out.dim() == 3 else out

    def _forward(self, x: Tensor) -> Tensor:
        """The one model call: fresh state, time-major input, state cleared again afterwards."""
        if x.dim() != 5:
            raise ValueError(f"expected frames [B, T, C, H, W], got shape {tuple(x.shape)}")
        functional.reset_net(self.net)
        out = self.net(x.transpose(0, 1).contiguous())
        functional.reset_net(self.net)
        return out

    def predict(self, x: Tensor) -> Tensor:
        """Class indices for ``x`` in eval mode without gradients."""
        with self.evaluating(), torch.no_grad():
            return self.logits(x).argmax(1)

    def probabilities(self, x: Tensor) -> Tensor:
        with self.evaluating(), torch.no_grad():
            return self.logits(x).softmax(1)

    def features(self, x: Tensor) -> Tensor:
        """Output of ``feature_layer`` averaged over time and flattened: ``[B, D]`` (e.g. firing rates)."""
        if self.feature_layer is None:
            raise ValueError("this classifier was built without a feature layer")
        module = dict(self.net.named_modules())[self.feature_layer]
        captured: list[Tensor] = []
        handle = module.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            with self.evaluating(), torch.no_grad():
                self.logits(x)
        finally:
            handle.remove()
        feats = captured[-1]
        if feats.dim() >= 3 and feats.shape[1] == x.shape[0]:  # time-major [T, B, ...]
            feats = feats.mean(0)
        return feats.flatten(1)

    @contextmanager
    def evaluating(self) -> Iterator[None]:
        """Temporarily switch to eval mode, restoring the previous mode afterwards."""
        was_training = self.net.training
        self.net.eval()
        try:
            yield
        finally:
            self.net.train(was_training)
