"""Defense building blocks on hand-made inputs: event filters, pruning hooks, the reserve-only threshold."""
import re

import numpy as np
import pytest
import torch
from torch import nn

from snnsec.classifier import Classifier
from snnsec.defenses import create_defense
from snnsec.defenses.base import DefenseContext, GroundTruth, InputFilter
from snnsec.defenses.event_purification import denoise_mask, refractory_mask
from snnsec.defenses.pruning import prune
from snnsec.errors import ConfigError
from snnsec.training import TrainConfig


def frames(T=4, P=2, H=8, W=8):
    return torch.zeros(1, T, P, H, W, dtype=torch.bool)


def test_denoise_drops_isolated_events_and_keeps_supported_ones():
    x = frames()
    x[0, 1, 1, 2, 2] = True  # isolated
    x[0, 2, 0, 5, 5] = True  # supported by a neighbour one bin later, other polarity
    x[0, 3, 1, 5, 6] = True
    kept = denoise_mask(x, window=1)
    assert not kept[0, 1, 1, 2, 2]
    assert kept[0, 2, 0, 5, 5] and kept[0, 3, 1, 5, 6]


def test_refractory_silences_a_pixel_after_it_fires():
    x = frames(T=6)
    x[0, :, 1, 3, 3] = True  # a trigger pixel in every bin
    kept = refractory_mask(x, window=1)
    assert kept[0, :, 1, 3, 3].tolist() == [True, False, True, False, True, False]
    assert refractory_mask(x, window=2)[0, :, 1, 3, 3].tolist() == [True, False, False, True, False, False]


class Stack(nn.Module):
    def __init__(self):
        super().__init__()
        self.feat = nn.Identity()
        self.head = nn.Linear(3, 2)

    def forward(self, x):  # [T, B, 3, 1, 1] -> [T, B, 2]
        return self.head(self.feat(x).flatten(2))


def test_pruning_hook_zeroes_channels_and_can_be_replaced():
    model = Classifier(Stack(), "feat")
    captured = []
    model.net.head.register_forward_hook(lambda _m, inputs, _o: captured.append(inputs[0]))
    x = torch.ones(2, 4, 3, 1, 1)
    prune(model, "feat", np.array([0, 2]))
    model.predict(x)
    assert captured[-1][..., 0].abs().sum() == 0 and captured[-1][..., 2].abs().sum() == 0
    assert (captured[-1][..., 1] == 1).all()
    prune(model, "feat", np.array([1]))  # replaces, does not stack
    model.predict(x)
    assert (captured[-1][..., 0] == 1).all() and captured[-1][..., 1].abs().sum() == 0


class Brightness(InputFilter):
    """Scores an input by its mean value: enough to check where the threshold comes from."""

    name = "brightness"

    def scorer(self, ctx):
        return lambda x: x.flatten(1).mean(1).numpy()


class Frames(torch.utils.data.Dataset):
    def __init__(self, values, labels):
        self.values, self.labels = values, labels

    def __len__(self):
        return len(self.values)

    def __getitem__(self, i):
        return torch.full((2, 1, 1, 1), float(self.values[i])), int(self.labels[i])


def test_input_filter_threshold_comes_from_the_reserve_only():
    net = nn.Sequential(nn.Flatten(2), nn.Linear(1, 2))  # [T, B, 1, 1, 1] -> [T, B, 2]
    model = Classifier(net)
    reserve = Frames(np.linspace(0, 1, 101), np.zeros(101))
    ctx = DefenseContext(model, reserve, reserve, 2, TrainConfig(), lambda: model)
    results = []
    for triggered_values in ([2.0] * 5, [0.2] * 5):  # two very different triggered test sets
        truth = GroundTruth(Frames([0.5] * 4, [0] * 4), Frames(triggered_values, [1] * 5), np.array([0]), (1,), 2)
        results.append(Brightness(false_rejection=0.1).defend(ctx, truth))
    assert results[0].details["threshold"] == results[1].details["threshold"] == pytest.approx(0.9)
    assert results[0].detection.tpr == 1.0 and results[1].detection.tpr == 0.0


@pytest.mark.parametrize("name,params,message", [
    ("strip", {"false_rejection": 1.0}, "false_rejection must be in [0, 1)"),
    ("event-purification", {"method": "median"}, "method must be one of denoise, refractory, both"),
    ("pruning", {"rate": "half"}, "rate must be a number"),
    ("neural-cleanse", {"steps": 0}, "steps must be >= 1"),
    ("abl", {"gamma": -1}, "gamma must be > 0"),
])
def test_defense_parameters_are_validated(name, params, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        create_defense(name, **params)
