"""Defense building blocks on hand-made inputs: event filters, pruning hooks, the reserve-only threshold, and
every detector's scoring and reference variant on planted data."""
import re

import numpy as np
import pytest
import torch
from torch import nn

from snnsec.classifier import Classifier
from snnsec.defenses import create_defense
from snnsec.defenses.base import DefenseContext, GroundTruth, InputFilter
from snnsec.defenses.abl import GradientAscent, LocalGradientAscent
from snnsec.defenses.event_purification import denoise_mask, refractory_mask
from snnsec.defenses.neural_cleanse import CostSchedule, TriggerSearch, reverse_engineer
from snnsec.defenses.pruning import prune
from snnsec.defenses.strip import overlay_choices
from snnsec.detection import detection
from snnsec.errors import ConfigError
from snnsec.training import TrainConfig, accuracy, make_optimizer


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


# ---- each detector's scoring on planted data (no training run) ----

class Vectors(torch.utils.data.Dataset):
    """Feature vectors served as frames ``[T=1, D, 1, 1]``, with labels."""

    def __init__(self, x, labels):
        self.x, self.labels = torch.as_tensor(x, dtype=torch.float32), np.asarray(labels)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i][None, :, None, None], int(self.labels[i])


class Planted(nn.Module):
    """``[T, B, D, 1, 1]`` -> logits; the feature layer ``feat`` passes the vector through unchanged."""

    def __init__(self, dim, classes=3):
        super().__init__()
        self.feat = nn.Identity()
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        return self.head(self.feat(x.flatten(2)))


def planted_outliers(shift, poisoned=10, per_label=100, dim=6, seed=0):
    """Three labels of Gaussian features; the first ``poisoned`` samples of label 0 are shifted by ``shift``
    along one direction (a trigger's extra feature). Returns (context, ground truth, poisoned mask)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(3 * per_label, dim))
    labels = np.repeat(np.arange(3), per_label)
    x[:poisoned] += shift * np.ones(dim) / np.sqrt(dim)
    data = Vectors(x, labels)
    model = Classifier(Planted(dim), "feat")
    ctx = DefenseContext(model, data, data, 3, TrainConfig(), lambda: model)
    truth = GroundTruth(data, data, np.arange(poisoned), (0,), 3)
    return ctx, truth, np.arange(len(x)) < poisoned


def test_spectral_signatures_per_label_budget_removes_the_planted_outliers():
    ctx, truth, poisoned = planted_outliers(shift=8.0)
    defense = create_defense("spectral-signatures", budget="per-label", expected_poison_rate=0.1, retrain=False)
    result = defense.defend(ctx, truth)
    assert result.detection.auroc > 0.99 and result.detection.tpr == 1.0
    assert result.details["removed"] == 3 * round(1.5 * 0.1 * 100)  # 1.5 x the expected count in every label
    scores, flagged = defense.decide(ctx)
    assert [int(flagged[ctx.train_set.labels == k].sum()) for k in range(3)] == [15, 15, 15]
    glob = create_defense("spectral-signatures", removal_rate=0.05, retrain=False).decide(ctx)[1]
    assert glob.sum() == 15  # the global budget: the top 5% of all samples, whatever their label
    label0 = np.flatnonzero(ctx.train_set.labels == 0)
    assert set(label0[np.argsort(-scores[label0])[:10]]) == set(np.flatnonzero(poisoned))


def test_activation_clustering_relative_size_rule_removes_the_planted_cluster():
    ctx, truth, poisoned = planted_outliers(shift=12.0, poisoned=25)
    defense = create_defense("activation-clustering", rule="relative-size", retrain=False)
    scores, flagged = defense.decide(ctx)
    assert np.array_equal(flagged, poisoned)  # the whole 25% cluster, nothing of the unsplit labels
    assert defense.defend(ctx, truth).detection.auroc > 0.99  # continuous scores under either rule
    assert not create_defense("activation-clustering", rule="relative-size", size_threshold=0.2,
                              retrain=False).decide(ctx)[1].any()  # 25% is not small enough under 0.2


def test_activation_clustering_score_ranks_the_planted_cluster_first():
    ctx, truth, poisoned = planted_outliers(shift=12.0, poisoned=25)
    scores, flagged = create_defense("activation-clustering", removal_rate=25 / 300, retrain=False).decide(ctx)
    assert np.array_equal(flagged, poisoned) and scores[poisoned].min() > scores[~poisoned].max()


def test_strip_overlays_are_drawn_per_input_and_never_the_input_itself():
    generator = torch.Generator().manual_seed(0)
    chosen = overlay_choices(generator, 50, 20, 5, exclude=np.arange(50) % 20)
    assert all(len(set(row.tolist())) == 5 for row in chosen)  # distinct overlays per input
    assert not (chosen == torch.as_tensor(np.arange(50) % 20)[:, None]).any()  # never the input itself
    assert len({tuple(row.tolist()) for row in chosen}) > 40  # drawn independently for every input
    many = overlay_choices(generator, 10, 4, 9, exclude=np.zeros(10, int))  # more overlays than the pool
    assert many.shape == (10, 9) and not (many == 0).any()


def planted_strip(pixels=16, reserve_size=15):
    """Binary frames [1, 1, 4, 4]; pixel 0 is the trigger (class 0 with a large weight). The reserve holds
    one-hot frames on pixels 1..15, so an input overlaid with itself would keep a single active pixel."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(2), nn.Linear(pixels, 3))
    with torch.no_grad():
        net[1].weight.normal_(0, 2.0)
        net[1].weight[:, 0] = torch.tensor([40.0, 0.0, 0.0])
    reserve = torch.zeros(reserve_size, 1, 1, 4, 4)
    for i in range(reserve_size):
        reserve.view(reserve_size, -1)[i, i + 1] = 1
    model = Classifier(net)
    data = torch.utils.data.TensorDataset(reserve, torch.zeros(reserve_size, dtype=torch.long))
    return model, DefenseContext(model, data, data, 3, TrainConfig(), lambda: model)


def test_strip_reserve_is_not_overlaid_with_itself_and_triggered_inputs_score_high():
    model, ctx = planted_strip()
    seen = []
    model.net.register_forward_hook(lambda _m, inputs, _o: seen.append(inputs[0].detach().clone()))
    defense = create_defense("strip", overlays=6)
    score = defense.scorer(ctx)
    reserve = defense.reserve_scores(ctx, score)
    assert len(reserve) == 15 and len(seen) == 6
    assert all((mixed.flatten(2).sum(2) == 2).all() for mixed in seen)  # always two different reserve samples
    seen.clear()
    blank = torch.zeros(5, 1, 1, 4, 4)
    score(blank), score(blank)  # an empty input shows its overlay: the two calls must draw differently
    first, second = torch.stack(seen[:6]), torch.stack(seen[6:])
    assert not torch.equal(first, second)
    triggered = torch.zeros(20, 1, 1, 4, 4)
    triggered.view(20, -1)[:, 0] = 1
    clean = torch.zeros(20, 1, 1, 4, 4)
    clean.view(20, -1)[torch.arange(20), 1 + torch.arange(20) % 15] = 1
    scores = np.r_[score(clean), score(triggered)]
    assert detection(scores, np.r_[np.zeros(20), np.ones(20)].astype(bool), np.zeros(40, bool)).auroc == 1.0


def test_neural_cleanse_cost_schedule_follows_the_reference():
    schedule = CostSchedule(init_cost=1e-3, patience=5, multiplier=2.0)
    for _ in range(4):
        schedule.step(1.0, 10.0)
    assert schedule.cost == 0  # starts at 0 ...
    schedule.step(1.0, 10.0)
    assert schedule.cost == 1e-3  # ... and is set after `patience` successes in a row
    for _ in range(5):
        schedule.step(1.0, 9.0)
    assert schedule.cost == pytest.approx(2e-3)  # up by 2 after 5 successes
    for _ in range(5):
        schedule.step(0.5, 8.0)
    assert schedule.cost == pytest.approx(2e-3 / 2 ** 1.5)  # down by 2^1.5 after 5 failures
    assert schedule.best == 9.0  # failed steps never count as a trigger


def test_neural_cleanse_stops_early_on_a_converged_objective():
    schedule = CostSchedule(patience=2, early_stop_patience=10)
    outcomes = [1.0] * 4 + [0.0] * 2 + [1.0] * 100  # set the cost, raise it, lower it, then converge
    stopped = next(i for i, won in enumerate(outcomes) if schedule.step(won, 5.0)[1])
    assert stopped < 30  # the norm stalled at 5.0 and the cost has moved both ways
    improving = CostSchedule(patience=2, early_stop_patience=10)
    assert not any(improving.step(won, 100.0 - i)[1] for i, won in enumerate(outcomes))  # still shrinking
    only_up = CostSchedule(patience=2, early_stop_patience=10)
    assert not any(only_up.step(1.0, 5.0)[1] for _ in range(100))  # the cost never went down: keep searching


def test_neural_cleanse_reference_schedule_stops_before_its_step_budget(monkeypatch):
    net = Planted(4)
    with torch.no_grad():  # class 1 by default; element 3 of the input (0 in the reserve) sends it to class 0
        net.head.weight.zero_(), net.head.bias.copy_(torch.tensor([0.0, 1.0, 0.0]))
        net.head.weight[0, 3] = 20.0
    model = Classifier(net, "feat")
    frames = torch.as_tensor(np.random.default_rng(0).uniform(0, 0.2, size=(40, 1, 1, 1, 4)), dtype=torch.float32)
    frames[..., 3] = 0
    data = torch.utils.data.TensorDataset(frames, torch.ones(40, dtype=torch.long))
    ctx = DefenseContext(model, data, data, 3, TrainConfig(), lambda: model)
    steps = []
    original = CostSchedule.step
    monkeypatch.setattr(CostSchedule, "step", lambda self, won, norm: steps.append(norm) or original(self, won, norm))
    found = reverse_engineer(ctx, 0, TriggerSearch(steps=300, batch_size=8, mini_batches=1, patience=2), frames)
    assert len(steps) < 150  # converged and stopped, far inside its 300-step budget
    assert found.success == 1.0 and found.mask[..., 3].item() > 3 * found.mask[..., :3].max().item()


def test_abl_unlearning_optimizer_is_the_references_by_default():
    params = [nn.Parameter(torch.zeros(2))]
    recipe = create_defense("abl").unlearning_training(TrainConfig(batch_size=16), seed=3)
    assert (recipe.schedule, recipe.batch_size, recipe.seed, recipe.epochs) == ("constant", 16, 3, 5)
    sgd = make_optimizer(recipe, params)
    assert isinstance(sgd, torch.optim.SGD)
    group = sgd.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"], group["nesterov"]) == (5e-4, 0.9, 1e-4, True)
    adamw = make_optimizer(create_defense("abl", optimizer="adamw").unlearning_training(TrainConfig(), 0), params)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["weight_decay"] == 0.0
    defaults = create_defense("abl")
    assert (defaults.unlearning_epochs, defaults.unlearning_lr, defaults.stop_accuracy) == (5, 5e-4, 0.0)
    with pytest.raises(ConfigError, match="optimizer must be one of sgd, adamw"):
        create_defense("abl", optimizer="adam")


def test_abl_step_hooks_compute_local_gradient_ascent_and_negated_loss():
    clf = Classifier(Planted(2, 2), "feat")
    with torch.no_grad():
        clf.net.head.weight.zero_()  # uniform logits: every sample's loss is log 2 = 0.693
        clf.net.head.bias.zero_()
    batch = [torch.ones(3, 1, 2, 1, 1), torch.tensor([0, 1, 0])]
    lga, n = LocalGradientAscent(gamma=1.0).loss(clf, batch, 0)  # below the floor: ascent, -l
    assert n == 3 and lga.item() == pytest.approx(-np.log(2))
    lga, _ = LocalGradientAscent(gamma=0.5).loss(clf, batch, 0)  # above it: descent, +l
    assert lga.item() == pytest.approx(np.log(2))
    ascent, n = GradientAscent(clf, batch).loss(clf, batch, 0)
    assert n == 3 and ascent.item() == pytest.approx(-np.log(2))


def test_abl_unlearning_stops_once_the_isolated_samples_lose_their_label(monkeypatch):
    data = Vectors(np.tile(np.eye(4), (4, 1)), np.arange(16) % 4)
    clf = Classifier(Planted(4, 4), "feat")
    with torch.no_grad():
        clf.net.head.weight.copy_(5 * torch.eye(4))  # every sample keeps its label
        clf.net.head.bias.zero_()
    ctx = DefenseContext(clf, data, data, 4, TrainConfig(batch_size=4), lambda: clf)
    assert accuracy(clf, data) == 1.0
    asked = []
    original = GradientAscent.stop
    monkeypatch.setattr(GradientAscent, "stop", lambda self, epoch: asked.append(original(self, epoch)) or asked[-1])
    abl = create_defense("abl", optimizer="adamw", unlearning_lr=0.5, unlearning_epochs=50, stop_accuracy=0.5)
    model = abl.repair(ctx, np.ones(16, bool))
    assert accuracy(model, data) < 0.5  # unlearned
    assert 1 <= len(asked) < 49 and asked[-1] and not any(asked[:-1])  # asked each epoch, ended at the first yes
    assert not model.net.training


def test_abl_isolation_ranks_fast_learned_planted_samples_first():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8))
    labels = rng.integers(0, 10, 300)  # clean labels carry no signal: their loss stays near log 10
    x[:, 7] = 0.0
    x[:15, 7] = 6.0  # the planted backdoor: one feature -> class 0, learned at once
    labels[:15] = 0
    data = Vectors(x, labels)
    ctx = DefenseContext(Classifier(Planted(8, 10), "feat"), data, data, 10, TrainConfig(batch_size=32, lr=0.05),
                         lambda: Classifier(Planted(8, 10), "feat"))
    scores = create_defense("abl", isolation_epochs=2, retrain=False).score_samples(ctx)
    truth = np.arange(300) < 15
    assert detection(scores, truth, np.zeros(300, bool)).auroc > 0.95
