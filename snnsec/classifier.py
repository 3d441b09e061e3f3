"""The single place where zoo models are called.

Frames arrive as ``[B, T, C, H, W]`` (the dataset layout); models see ``[T, B, C, H, W]``.
Spiking state is reset before every call, so no membrane potential leaks between batches. Input is checked
against the model's :class:`~snnsec.zoo.base.InputSpec` (T, polarities, size, float dtype) in the caller's
batch-first layout, in one line. :meth:`Classifier.as_module` gives an ``nn.Module`` view for ART and
torchattacks (:class:`snnsec.api.TorchView`), which calls models through this class too.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from spikingjelly.activation_based import functional
from torch import Tensor, nn

from snnsec.zoo.base import input_spec_of

if TYPE_CHECKING:
    from snnsec.api import TorchView


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

    def logits_and_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """One forward pass, with gradients and in the current mode: time-averaged logits ``[B, K]`` and the
        output of ``feature_layer`` averaged over time and flattened, ``[B, D]``."""
        if self.feature_layer is None:
            raise ValueError("this classifier was built without a feature layer")
        module = dict(self.net.named_modules())[self.feature_layer]
        captured: list[Tensor] = []
        handle = module.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            logits = self.logits(x)
        finally:
            handle.remove()
        feats = captured[-1]
        if feats.dim() >= 3 and feats.shape[1] == x.shape[0]:  # time-major [T, B, ...]
            feats = feats.mean(0)
        return logits, feats.flatten(1)

    def as_module(self) -> TorchView:
        """An ``nn.Module`` view of this classifier for ART and torchattacks (:class:`snnsec.api.TorchView`)."""
        from snnsec.api import TorchView

        return TorchView(self)

    def _forward(self, x: Tensor) -> Tensor:
        """The one model call: fresh state, time-major input, state cleared again afterwards."""
        spec = input_spec_of(self.net)
        if spec is not None:
            spec.check(x, time_major=False, who="classifier")
        elif x.dim() != 5:
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
        with self.evaluating(), torch.no_grad():
            return self.logits_and_features(x)[1]

    @contextmanager
    def evaluating(self) -> Iterator[None]:
        """Temporarily switch to eval mode, restoring the previous mode afterwards."""
        was_training = self.net.training
        self.net.eval()
        try:
            yield
        finally:
            self.net.train(was_training)
