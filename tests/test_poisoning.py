import numpy as np
import pytest
import torch

from snnsec.attacks import PoisonConfig
from snnsec.attacks.poisoning import FrameDataset, choose_poison_indices, poison_training_set, triggered_test_set
from snnsec.attacks.static import StaticTrigger
from snnsec.classifier import Classifier
from snnsec.errors import ConfigError
from snnsec.framing import encode
from snnsec.training import accuracy

N, C = 50, 5


@pytest.fixture
def clean():
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 2, size=(N, 3, 2, 10, 10)).astype(np.int16)
    labels = np.arange(N) % C
    return FrameDataset(counts, labels, lambda c: encode(c, "binary"))


TRIGGER = StaticTrigger(size=0.2, position="top-left", polarity=1)


@pytest.mark.parametrize("rate", [0.02, 0.1, 0.33, 1.0])
def test_exact_count_and_rest_untouched(clean, rate):
    poisoned = poison_training_set(clean, TRIGGER, PoisonConfig(rate=rate, target=2, seed=1), C)
    assert len(poisoned.indices) == round(rate * N) == len(set(poisoned.indices.tolist()))
    for i in range(N):
        x, y = poisoned[i]
        x0, y0 = clean[i]
        if i in set(poisoned.indices.tolist()):
            assert torch.equal(x, TRIGGER.apply(x0)) and y == 2
        else:
            assert torch.equal(x, x0) and y == y0


def test_indices_depend_only_on_seed(clean):
    a = choose_poison_indices(clean.labels, PoisonConfig(rate=0.2, seed=5))
    b = choose_poison_indices(clean.labels, PoisonConfig(rate=0.2, seed=5))
    c = choose_poison_indices(clean.labels, PoisonConfig(rate=0.2, seed=6))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_clean_label_triggers_only_target_class(clean):
    poisoned = poison_training_set(clean, TRIGGER, PoisonConfig(rate=0.1, target=3, mode="clean-label"), C)
    assert len(poisoned.indices) == 5 and np.all(clean.labels[poisoned.indices] == 3)
    assert all(poisoned[i][1] == 3 for i in poisoned.indices)
    with pytest.raises(ConfigError, match="only 10"):
        poison_training_set(clean, TRIGGER, PoisonConfig(rate=0.5, target=3, mode="clean-label"), C)


def test_all_to_all_relabels_to_next_class(clean):
    poisoned = poison_training_set(clean, TRIGGER, PoisonConfig(rate=0.2, mode="all-to-all"), C)
    for i in poisoned.indices:
        assert poisoned[i][1] == (clean.labels[i] + 1) % C


def test_triggered_test_set_excludes_target_class(clean):
    test = triggered_test_set(clean, TRIGGER, PoisonConfig(target=1), C)
    assert len(test) == N - N // C
    assert np.all(test.base.labels != 1)
    assert all(test[i][1] == 1 for i in range(len(test)))
    assert torch.equal(test[0][0], TRIGGER.apply(clean[test.base.rows[0]][0]))


class AlwaysPredicts(torch.nn.Module):
    def __init__(self, cls):
        super().__init__()
        self.cls, self.dummy = cls, torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):  # [T, B, ...] -> [T, B, C]
        out = torch.zeros(x.shape[0], x.shape[1], C)
        out[..., self.cls] = 1
        return out


def test_asr_counts_only_non_target_samples(clean):
    test = triggered_test_set(clean, TRIGGER, PoisonConfig(target=1), C)
    assert accuracy(Classifier(AlwaysPredicts(1)), test) == 1.0
    assert accuracy(Classifier(AlwaysPredicts(0)), test) == 0.0


@pytest.mark.parametrize("kwargs", [{"rate": 0}, {"rate": 1.2}, {"mode": "x"}, {"target": -1}])
def test_bad_poison_config(kwargs):
    with pytest.raises(ConfigError):
        PoisonConfig(**kwargs)


def test_target_out_of_range(clean):
    with pytest.raises(ConfigError, match=r"\[0, 4\]"):
        poison_training_set(clean, TRIGGER, PoisonConfig(target=5), C)
