"""The one trainer's options on a tiny planted problem: SGD (momentum, Nesterov), the constant schedule, a
hook's early stop, and recipes' identities unchanged by fields added later."""
from dataclasses import asdict

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from snnsec.classifier import Classifier
from snnsec.errors import ConfigError
from snnsec.training import StepHook, TrainConfig, _schedule, accuracy, make_optimizer, train

#: ``asdict(TrainConfig())`` before momentum, nesterov and schedule were added: every cached model's and run's
#: identity hashes this dict, so a default recipe's identity must stay exactly this.
DEFAULT_IDENTITY = {"epochs": 8, "batch_size": 32, "lr": 2e-3, "weight_decay": 1e-2, "optimizer": "adamw", "seed": 0,
                    "warmup_steps": 0, "bn_recalibration_batches": 0}


class Linear(nn.Module):
    """``[T, B, D, 1, 1]`` frames -> logits, one linear layer."""

    def __init__(self, dim: int = 4, classes: int = 2) -> None:
        super().__init__()
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        return self.head(x.flatten(2))


def planted(n: int = 64, dim: int = 4) -> TensorDataset:
    """Label = sign of the first feature: linearly separable with a wide margin."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, dim, 1, 1, generator=g)
    labels = (x[:, 0, 0, 0, 0] > 0).long()
    x[:, 0, 0] += torch.where(labels.bool(), 1.0, -1.0)[:, None, None]
    return TensorDataset(x, labels)


def classifier() -> Classifier:
    torch.manual_seed(0)
    return Classifier(Linear())


def test_default_recipe_identity_is_unchanged_by_later_fields():
    assert TrainConfig().identity() == DEFAULT_IDENTITY
    recipe = TrainConfig(lr=1e-3, warmup_steps=5)
    assert recipe.identity() == {**DEFAULT_IDENTITY, "lr": 1e-3, "warmup_steps": 5}
    assert set(asdict(TrainConfig())) - set(DEFAULT_IDENTITY) == {"momentum", "nesterov", "schedule"}
    sgd = TrainConfig(optimizer="sgd", momentum=0.9, nesterov=True, schedule="constant")
    assert sgd.identity() == {**DEFAULT_IDENTITY, "optimizer": "sgd", "momentum": 0.9, "nesterov": True,
                              "schedule": "constant"}


def test_sgd_config_trains_with_its_momentum_and_a_constant_lr():
    config = TrainConfig(epochs=4, batch_size=16, lr=0.1, weight_decay=1e-4, optimizer="sgd", momentum=0.9,
                         nesterov=True, schedule="constant")
    optimizer = make_optimizer(config, [nn.Parameter(torch.zeros(2))])
    group = optimizer.param_groups[0]
    assert isinstance(optimizer, torch.optim.SGD)
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == (0.1, 0.9, True, 1e-4)
    scheduler = _schedule(optimizer, 10, 0, "constant")
    for _ in range(10):
        optimizer.step()
        scheduler.step()
    assert group["lr"] == 0.1  # constant; the cosine default would have reached 0
    data, clf = planted(), classifier()
    history = train(clf, data, config)
    assert len(history) == 4 and history[-1] < 0.5 * history[0]
    assert accuracy(clf, data) > 0.9


def test_warmup_then_constant():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = _schedule(optimizer, 10, 3, "constant")
    lrs = []
    for _ in range(6):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])


class StopAfter(StepHook):
    def __init__(self, last: int) -> None:
        self.last, self.asked = last, []

    def stop(self, epoch: int) -> bool:
        self.asked.append(epoch)
        return epoch == self.last


def test_a_hook_stops_training_early_and_its_checkpoint_is_removed(tmp_path):
    hook, checkpoint = StopAfter(1), tmp_path / "run.partial.pt"
    history = train(classifier(), planted(), TrainConfig(epochs=5, batch_size=16), checkpoint=checkpoint, step=hook)
    assert len(history) == 2 and hook.asked == [0, 1]
    assert not checkpoint.exists()
    never = StopAfter(-1)
    assert len(train(classifier(), planted(), TrainConfig(epochs=3, batch_size=16), step=never)) == 3
    assert never.asked == [0, 1]  # not asked after the last epoch


@pytest.mark.parametrize("fields,message", [
    ({"optimizer": "sgd", "momentum": 1.0}, "momentum must be in"),
    ({"momentum": 0.9}, "momentum is an option of the sgd optimizer"),
    ({"optimizer": "sgd", "nesterov": True}, "nesterov needs the sgd optimizer with momentum > 0"),
    ({"schedule": "step"}, "schedule must be one of"),
    ({"optimizer": "rmsprop"}, "optimizer must be one of"),
    ({"weight_decay": -1.0}, "weight decay must be >= 0"),
])
def test_bad_recipes_are_one_line_errors(fields, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**fields)


def test_an_empty_training_set_is_an_error():
    empty = TensorDataset(torch.zeros(0, 1, 4, 1, 1), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ConfigError, match="training set is empty"):
        train(classifier(), empty, TrainConfig(epochs=1))
