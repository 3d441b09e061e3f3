"""Dynamic trigger (Sneaky Spikes / LIRA): valid event frames, determinism, generator learning, joint training."""
import copy
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from snnsec.attacks import PoisonConfig, create_trigger
from snnsec.attacks.base import TRIGGERS
from snnsec.attacks.dynamic import (
    DynamicTrigger,
    JointTrainingStep,
    SpikingAutoencoder,
    generator_step,
    train_dynamic_backdoor,
)
from snnsec.attacks.poisoning import FrameDataset, choose_poison_indices, triggered_test_set
from snnsec.classifier import Classifier
from snnsec.errors import ConfigError
from snnsec.framing import encode
from snnsec.training import TrainConfig, accuracy, seed_everything
from snnsec.training import train as train_classifier
from snnsec.zoo import InputSpec, create_model

T, P, H, W, K = 4, 2, 16, 16, 3


pytestmark = pytest.mark.usefixtures("one_thread")


def toy(n: int, seed: int) -> FrameDataset:
    """K classes: a vertical ON bar at a class-specific column, over 3% random events."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % K
    counts = (rng.random((n, T, P, H, W)) < 0.03).astype(np.int16)
    for i, c in enumerate(labels):
        counts[i, :, 1, 2:14, 2 + 5 * c: 4 + 5 * c] = 1
    return FrameDataset(counts, labels, lambda c: encode(c, "binary"))


def tiny_classifier(seed: int = 0) -> Classifier:
    seed_everything(seed)
    return Classifier(create_model("spiking-cnn", InputSpec(T, P, H, W, K), config="tiny"))


def binary(shape, density=0.1, seed=0):
    return (torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < density).float()


SMALL = dict(generator_width=8)


# ---- validity --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape", [(T, P, 8, 8), (3, T, P, 16, 16), (2, 2, T, P, 9, 13), (1, 2, P, 34, 34), (1, 1, P, 128, 128)]
)
def test_shape_binary_in_binary_out_and_budget(shape):
    x = binary(shape)
    trigger = DynamicTrigger(gamma=0.03, polarity=3, **SMALL).fit(x.reshape(-1, *shape[-4:]))
    out = trigger.apply(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    assert torch.all(out >= x)  # events are only added
    changed = (out != x).reshape(-1, int(np.prod(shape[-4:]))).sum(1)
    assert changed.max() <= trigger.budget(shape) and changed.sum() > 0


def test_polarity_selects_channels_and_zero_erases():
    x = binary((4, T, P, H, W), density=0.3)
    on = DynamicTrigger(gamma=0.05, polarity=1, **SMALL).fit(x).apply(x)
    assert torch.equal(on[:, :, 0], x[:, :, 0]) and not torch.equal(on[:, :, 1], x[:, :, 1])
    off = DynamicTrigger(gamma=0.05, polarity=2, **SMALL).fit(x).apply(x)
    assert torch.equal(off[:, :, 1], x[:, :, 1]) and not torch.equal(off[:, :, 0], x[:, :, 0])
    erased = DynamicTrigger(gamma=0.05, polarity=0, **SMALL).fit(x).apply(x)
    assert torch.all(erased <= x) and erased.sum() < x.sum() and set(erased.unique().tolist()) <= {0.0, 1.0}


def test_count_frames_stay_counts():
    x = torch.from_numpy(np.random.default_rng(0).poisson(0.3, size=(4, T, P, H, W)).astype(np.float32))
    out = DynamicTrigger(gamma=0.05, value=6.0, polarity=3, **SMALL).fit(x).apply(x)
    changed = out != x
    assert changed.any() and torch.all(out[changed] == 6.0)  # max(x, value) where the mask is on
    assert torch.all(out >= 0) and torch.equal(out, out.round())


def test_apply_is_pure_deterministic_and_batch_independent():
    x = binary((6, T, P, H, W))
    before = x.clone()
    trigger = DynamicTrigger(**SMALL).fit(x)
    a, b = trigger.apply(x), trigger.apply(x)
    assert torch.equal(x, before) and torch.equal(a, b)
    assert torch.equal(a, torch.stack([trigger.apply(xi) for xi in x]))  # a sample's trigger ignores its batch


def test_same_seed_same_generator_and_global_rng_untouched():
    x = binary((2, T, P, H, W))
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a, b = DynamicTrigger(seed=1, **SMALL).fit(x), DynamicTrigger(seed=1, **SMALL).fit(x)
    c = DynamicTrigger(seed=2, **SMALL).fit(x)
    assert torch.equal(torch.get_rng_state(), state)
    assert a.generator_digest() == b.generator_digest() != c.generator_digest()
    assert torch.equal(a.apply(x), b.apply(x))


def test_generator_any_size_output_shape():
    net = SpikingAutoencoder(2, width=4, depth=3)
    spikes, drive = net(binary((T, 2, 2, 11, 7)))
    assert spikes.shape == drive.shape == (T, 2, 2, 11, 7)
    assert set(spikes.unique().tolist()) <= {0.0, 1.0}


# ---- options ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [{"gamma": 0}, {"gamma": 1.5}, {"gamma": "big"}, {"alpha": 0}, {"alpha": 1}, {"poisoning": "add"},
     {"generator_width": 0},
     {"generator_width": 2.5}, {"generator_depth": 0}, {"generator_depth": 7}, {"generator_lr": 0},
     {"joint_fraction": 0}, {"joint_fraction": 1.2}, {"gamma": True}, {"polarity": 5}],
)
def test_bad_parameters(kwargs):
    with pytest.raises(ConfigError):
        DynamicTrigger(**kwargs)


def test_registry_params_and_unknown_option():
    assert TRIGGERS.get("dynamic") is DynamicTrigger
    trigger = create_trigger("dynamic", gamma=0.05, alpha=0.3, generator_width=8).fit(binary((1, T, P, 8, 8)))
    params = trigger.params()
    assert json.loads(json.dumps(params)) == params
    assert params["trigger"] == "dynamic" and params["gamma"] == 0.05 and params["alpha"] == 0.3
    assert params["poisoning"] == "replace"
    assert not any("generator" == k or "weight" in k for k in params)
    with pytest.raises(ConfigError, match="gamma"):
        create_trigger("dynamic", gama=0.1)


def test_apply_before_fit_says_what_to_do():
    with pytest.raises(ConfigError, match="fit"):
        DynamicTrigger().apply(binary((T, P, 8, 8)))


# ---- learning --------------------------------------------------------------------------------------


def test_generator_step_lowers_its_loss_and_leaves_classifier_alone():
    train = toy(96, 0)
    classifier = tiny_classifier()
    train_classifier(classifier, train, TrainConfig(epochs=5, batch_size=8, lr=5e-3))
    classifier.net.zero_grad(set_to_none=True)
    frozen = copy.deepcopy(classifier.net.state_dict())
    x = torch.stack([train[i][0] for i in range(16)])
    trigger = DynamicTrigger(gamma=0.05, **SMALL).fit(x)
    net = copy.deepcopy(trigger.generator).requires_grad_(True)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-2)
    targets = torch.zeros(16, dtype=torch.long)
    losses = [generator_step(classifier, trigger, net, optimizer, x, targets) for _ in range(12)]
    assert np.mean(losses[-3:]) < losses[0] - 0.2, losses
    assert all(torch.equal(v, frozen[k]) for k, v in classifier.net.state_dict().items())
    assert all(p.grad is None for p in classifier.net.parameters())


@pytest.fixture(scope="module")
def joint():
    torch.set_num_threads(1)
    train, test = toy(96, 0), toy(48, 1)
    untrained = DynamicTrigger(gamma=0.05, generator_lr=1e-2, **SMALL).fit(torch.stack([train[0][0]]))
    poison = PoisonConfig(rate=0.25, target=0, seed=0)
    result = train_dynamic_backdoor(tiny_classifier(), untrained, train, poison,
                                    TrainConfig(epochs=6, batch_size=8, lr=5e-3, seed=0), K)  # ASR 1.0 for seeds 0-5
    return result, untrained, test, poison


def test_joint_training_implants_a_backdoor_a_random_generator_does_not(joint):
    result, untrained, test, poison = joint
    assert accuracy(result.classifier, test) >= 0.9
    asr = accuracy(result.classifier, triggered_test_set(test, result.trigger, poison, K))
    asr_random = accuracy(result.classifier, triggered_test_set(test, untrained, poison, K))
    assert asr >= 0.8 and asr > asr_random + 0.5, (asr, asr_random)
    assert result.joint_epochs == 3 and len(result.history["loss"]) == 6 and len(result.history["generator_loss"]) == 3
    assert untrained.generator_digest() != result.trigger.generator_digest()  # the input trigger is not mutated


def test_trained_trigger_is_a_fixed_function(joint):
    result, _, test, _ = joint
    x = torch.stack([test[i][0] for i in range(8)])
    trigger = result.trigger
    assert not trigger.generator.training and not any(p.requires_grad for p in trigger.generator.parameters())
    out = trigger.apply(x)
    assert torch.equal(out, trigger.apply(x)) and set(out.unique().tolist()) <= {0.0, 1.0}
    assert ((out != x).flatten(1).sum(1) <= trigger.budget(x.shape)).all()


def test_save_load_round_trip(joint, tmp_path):
    trigger = joint[0].trigger
    path = tmp_path / "gen.safetensors"
    trigger.save_generator(path)
    loaded = DynamicTrigger(gamma=0.05, generator_lr=1e-2, **SMALL).load_generator(path)
    x = binary((3, T, P, H, W))
    assert loaded.generator_digest() == trigger.generator_digest()
    assert torch.equal(loaded.apply(x), trigger.apply(x))
    with pytest.raises(ConfigError, match="gamma"):
        DynamicTrigger(gamma=0.1, generator_lr=1e-2, **SMALL).load_generator(path)


@pytest.mark.parametrize("mode", ["all-to-all", "clean-label"])
def test_joint_training_is_deterministic_and_follows_the_poison_config(mode):
    train = toy(24, 0)
    poison = PoisonConfig(rate=0.25, target=1, mode=mode, seed=3)
    trigger = DynamicTrigger(gamma=0.05, generator_lr=1e-2, joint_fraction=1.0, **SMALL)
    config = TrainConfig(epochs=1, batch_size=8, lr=5e-3, seed=0)
    a = train_dynamic_backdoor(tiny_classifier(), trigger, train, poison, config, K)
    b = train_dynamic_backdoor(tiny_classifier(), trigger, train, poison, config, K)
    assert a.trigger.generator_digest() == b.trigger.generator_digest()
    assert all(torch.equal(v, b.classifier.net.state_dict()[k]) for k, v in a.classifier.net.state_dict().items())
    assert a.history == b.history
    assert np.array_equal(a.poisoned_indices, choose_poison_indices(train.labels, poison))


# ---- poisoning rate and the shared trainer -----------------------------------------------------------


def _training_inputs(monkeypatch) -> list[torch.Tensor]:
    """Records every input the classifier is trained on (train mode, gradients on)."""
    seen: list[torch.Tensor] = []
    original = Classifier.logits

    def spy(self, x):
        if torch.is_grad_enabled() and self.net.training:
            seen.append(x.detach().clone())
        return original(self, x)

    monkeypatch.setattr(Classifier, "logits", spy)
    return seen


@pytest.mark.parametrize("poisoning", ["replace", "alpha-mix"])
@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_rate_is_the_share_of_triggered_training_samples(rate, poisoning, monkeypatch):
    """At rate r, round(r*N) training samples are triggered; "replace" swaps them for their clean copies (N
    inputs per epoch, as static poisoning), "alpha-mix" adds them beside the clean batch (N + round(r*N))."""
    n = 30
    train = toy(n, 0)
    poison = PoisonConfig(rate=rate, target=0, seed=1)
    expected = round(rate * n)
    poisoned = set(choose_poison_indices(train.labels, poison).tolist())
    assert len(poisoned) == expected
    seen = _training_inputs(monkeypatch)
    trigger = DynamicTrigger(gamma=0.05, polarity=1, poisoning=poisoning, joint_fraction=0.5, **SMALL)
    result = train_dynamic_backdoor(tiny_classifier(), trigger, train, poison,
                                    TrainConfig(epochs=2, batch_size=8, lr=5e-3, seed=0), K)
    per_epoch = n if poisoning == "replace" else n + expected
    assert result.history["triggered"] == [expected, expected]
    assert result.history["samples"] == [per_epoch, per_epoch]
    # Stage 2 (epoch 2): the generator is frozen, so its inputs are exactly clean rows and trained-trigger rows.
    last = torch.cat(seen)[-per_epoch:]
    assert len(torch.cat(seen)) == 2 * per_epoch
    clean = torch.stack([train[i][0] for i in range(n)])
    off = clean[:, :, 0].flatten(1)  # polarity 1 writes ON events only: the OFF channel identifies a sample
    rows = [int(torch.nonzero((off == x[:, 0].flatten()).all(1)).squeeze()) for x in last]
    triggered = result.trigger.apply(clean)
    n_triggered = 0
    for x, row in zip(last, rows):
        if torch.equal(x, clean[row]):
            continue
        assert row in poisoned and torch.equal(x, triggered[row])
        n_triggered += 1
    changed = sum(not torch.equal(triggered[i], clean[i]) for i in poisoned)
    assert n_triggered == changed  # every poisoned row the trigger changes was seen triggered, once
    if poisoning == "replace":
        assert sorted(rows) == list(range(n))  # each sample once: the triggered ones replace their clean copy
    else:
        assert sorted(rows) == sorted(list(range(n)) + list(poisoned))


class Interrupt(Exception):
    pass


def test_joint_training_resumes_after_a_kill_with_the_numbers_of_an_unbroken_run(tmp_path, monkeypatch):
    train = toy(24, 0)
    poison = PoisonConfig(rate=0.25, target=1, seed=3)
    trigger = DynamicTrigger(gamma=0.05, generator_lr=1e-2, joint_fraction=0.67, **SMALL)
    config = TrainConfig(epochs=3, batch_size=8, lr=5e-3, seed=0)
    unbroken = train_dynamic_backdoor(tiny_classifier(), trigger, train, poison, config, K)

    checkpoint = tmp_path / "joint.partial.pt"
    original, calls = JointTrainingStep.loss, {"n": 0}

    def loss_then_die(self, *args, **kwargs):  # killed in the middle of the second (still joint) epoch
        calls["n"] += 1
        if calls["n"] == 5:
            raise Interrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(JointTrainingStep, "loss", loss_then_die)
    with pytest.raises(Interrupt):
        train_dynamic_backdoor(tiny_classifier(), trigger, train, poison, config, K, checkpoint=checkpoint)
    monkeypatch.setattr(JointTrainingStep, "loss", original)
    assert checkpoint.exists()
    resumed = train_dynamic_backdoor(tiny_classifier(), trigger, train, poison, config, K, checkpoint=checkpoint)
    assert resumed.joint_epochs == 2 and resumed.history == unbroken.history
    assert resumed.trigger.generator_digest() == unbroken.trigger.generator_digest()
    state = unbroken.classifier.net.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in resumed.classifier.net.state_dict().items())
    assert not checkpoint.exists()


def test_joint_training_applies_the_models_recipe():
    """BN re-estimation (a recipe option the old joint loop dropped) runs after training: same weights,
    other running statistics."""
    train = toy(24, 0)
    poison = PoisonConfig(rate=0.25, target=1, seed=3)
    trigger = DynamicTrigger(gamma=0.05, joint_fraction=1.0, **SMALL)
    plain = TrainConfig(epochs=1, batch_size=8, lr=5e-3, seed=0, warmup_steps=2)
    a = train_dynamic_backdoor(tiny_classifier(), trigger, train, poison, plain, K).classifier.net.state_dict()
    recal = replace(plain, bn_recalibration_batches=2)
    b = train_dynamic_backdoor(tiny_classifier(), trigger, train, poison, recal, K).classifier.net.state_dict()
    stats = [k for k in a if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(a[k], b[k]) for k in a if k not in stats and not k.endswith("num_batches_tracked"))
    assert any(not torch.equal(a[k], b[k]) for k in stats)
