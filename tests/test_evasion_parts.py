"""Evasion building blocks on a small spiking net: domains and budgets (property tests over random inputs and
budgets), attack surrogates (same forward, the model's own gradient reproduced), library agreement."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from spikingjelly.activation_based import layer
from torch import nn

from snnsec.attacks.evasion import (Budget, DomainViolation, Goal, Surrogate, Victim, attack_surrogate,
                                    create_evasion, domain_of, parse_surrogates)
from snnsec.attacks.evasion.domains import check_event_stream, check_patch, distances
from snnsec.attacks.evasion.surrogates import SWEEP, _pdsg_derivative, _pdsg_sigma
from snnsec.classifier import Classifier
from snnsec.errors import ConfigError, SnnsecError
from snnsec.zoo import MODELS, InputSpec
from snnsec.zoo.neurons import lif

SHAPE = (4, 2, 8, 8)  # T, P, H, W


class SmallSNN(nn.Module):
    """[T, B, 2, 8, 8] -> per-step logits [T, B, 4]; weights scaled so that the hidden LIF layer fires."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.fc1 = layer.SeqToANNContainer(nn.Flatten(), nn.Linear(128, 48))
        self.lif = lif(tau=2.0, surrogate_name="atan", surrogate_alpha=2.0)
        self.fc2 = layer.SeqToANNContainer(nn.Linear(48, 4))
        with torch.no_grad():
            self.fc1[1].weight.mul_(4)

    def forward(self, x):
        return self.fc2(self.lif(self.fc1(x)))


@pytest.fixture(scope="module")
def victim():
    return Victim(Classifier(SmallSNN().eval()))


def binary_batch(rng: np.random.Generator, n: int = 6) -> torch.Tensor:
    density = rng.uniform(0.05, 0.5)
    return torch.as_tensor(rng.random((n, *SHAPE)) < density, dtype=torch.float32)


def count_batch(rng: np.random.Generator, n: int = 6) -> torch.Tensor:
    return torch.as_tensor(rng.integers(0, 4, (n, *SHAPE)) * (rng.random((n, *SHAPE)) < 0.3), dtype=torch.float32)


# ---- domains and budgets ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["fgsm", "pgd", "random"])
def test_budgeted_attacks_flip_binary_frames_within_their_l0_budget(victim, name):
    rng = np.random.default_rng(1)
    attack, domain = create_evasion(name), domain_of("binary")
    for case in range(8):
        x = binary_batch(rng)
        budget = Budget("l0", int(rng.integers(1, 300)))
        goal = Goal(victim.predict(x))
        adv = attack.perturb(victim, x, goal, budget, domain, torch.Generator().manual_seed(case))
        assert set(adv.unique().tolist()) <= {0.0, 1.0}, (name, case)
        assert int((adv != x).flatten(1).sum(1).max()) <= budget.value, (name, case, budget)
        domain.check(x, adv, budget)


@pytest.mark.parametrize("name,options", [("sda", {"max_iterations": 6, "k_init": 4}),
                                          ("sparsefool", {"max_iterations": 8, "max_flips": 150})])
def test_minimal_attacks_return_binary_frames_and_keep_their_caps(victim, name, options):
    rng = np.random.default_rng(2)
    attack, domain = create_evasion(name, **options), domain_of("binary")
    assert attack.minimal
    for case in range(4):
        x = binary_batch(rng, 3)
        goal = Goal(victim.predict(x))
        adv = attack.perturb(victim, x, goal, Budget("l0", math.inf), domain, torch.Generator().manual_seed(case))
        assert set(adv.unique().tolist()) <= {0.0, 1.0}
        moved = (adv != x).flatten(1).any(1)
        # a moved sample is a success (a failure comes back unchanged)
        assert bool(goal.success(victim.predict(adv))[moved].all())
        if "max_flips" in options:
            assert int((adv != x).flatten(1).sum(1).max()) <= options["max_flips"]


@pytest.mark.parametrize("name", ["fgsm", "pgd", "random"])
@pytest.mark.parametrize("norm", ["linf", "l2", "l0"])
def test_count_frame_attacks_change_whole_events_within_budget(victim, name, norm):
    rng = np.random.default_rng(3)
    attack, domain = create_evasion(name), domain_of("counts")
    for case in range(5):
        x = count_batch(rng)
        value = {"linf": int(rng.integers(1, 4)), "l2": float(rng.uniform(0.5, 12)), "l0": int(rng.integers(1, 200))}[norm]
        budget = Budget(norm, value)
        adv = attack.perturb(victim, x, Goal(victim.predict(x)), budget, domain, torch.Generator().manual_seed(case))
        delta = (adv - x).flatten(1).double()
        assert (adv >= 0).all() and torch.equal(adv, adv.round()), (name, norm, case)
        size = {"linf": delta.abs().amax(1), "l2": delta.norm(dim=1), "l0": (delta != 0).sum(1).double()}[norm]
        assert float(size.max()) <= value + 1e-9, (name, norm, case, float(size.max()), value)


def test_domain_checks_reject_invalid_outputs_and_budgets():
    x = torch.zeros(2, *SHAPE)
    binary, counts = domain_of("binary"), domain_of("counts")
    half = x.clone()
    half[0, 0, 0, 0, 0] = 0.5
    with pytest.raises(DomainViolation, match="outside the binary domain"):
        binary.check(x, half, Budget("l0", 5))
    many = x.clone()
    many[1, 0, 0, 0, :6] = 1
    with pytest.raises(DomainViolation, match="sample 1 moved 6 in l0, over its budget 5"):
        binary.check(x, many, Budget("l0", 5))
    for bad in (-1.0, 0.5, float("nan")):
        wrong = x.clone()
        wrong[0, 0, 0, 0, 0] = bad
        with pytest.raises(DomainViolation, match="counts domain"):
            counts.check(x, wrong, Budget("linf", 2))
    with pytest.raises(ConfigError, match="whole number"):
        Budget("l0", 2.5)
    with pytest.raises(ConfigError, match="must be > 0"):
        Budget("linf", 0)
    with pytest.raises(ConfigError, match="norm must be one of"):
        Budget("l3", 1)
    with pytest.raises(ConfigError, match="binary inputs take l0/area budgets, not linf"):
        create_evasion("pgd").check(binary, Budget("linf", 1))
    with pytest.raises(ConfigError, match="works on binary inputs, not counts"):
        create_evasion("sda").check(counts, Budget("l0", 10))


def test_projections_fit_the_budget():
    x = torch.zeros(1, *SHAPE)
    relaxed = x.clone()
    relaxed.view(-1)[:10] = torch.linspace(0.55, 1.0, 10)
    hard = domain_of("binary").project(x, relaxed, Budget("l0", 3))
    assert torch.equal(hard.view(-1).nonzero().flatten(), torch.tensor([7, 8, 9]))  # the three that moved most
    counts = domain_of("counts").project(x, x + 3.4, Budget("l2", 10.0))
    assert torch.equal(counts, counts.round()) and float((counts - x).norm()) <= 10.0
    assert float(distances(x, counts)["l1"][0]) > 0


def test_event_stream_check_counts_insertions_deletions_and_flips():
    dtype = np.dtype([("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "<i1")])
    clean = np.array([(1, 1, 10, 1), (2, 2, 20, 0), (3, 3, 30, 1)], dtype=dtype)
    adv = np.array([(1, 1, 10, 0), (3, 3, 30, 1), (4, 4, 40, 1), (5, 5, 50, 0)], dtype=dtype)
    counts = check_event_stream(adv, (8, 8, 2), clean)
    assert counts == {"inserted": 2, "deleted": 1, "flipped": 1, "total": 4}
    with pytest.raises(DomainViolation, match="events inserted, over the budget 1"):
        check_event_stream(adv, (8, 8, 2), clean, budget={"inserted": 1})
    for broken, why in [(np.array([(9, 1, 1, 1)], dtype=dtype), "outside the 8x8 sensor"),
                        (np.array([(1, 1, 5, 1), (1, 1, 4, 1)], dtype=dtype), "not sorted"),
                        (np.array([(1, 1, 5, 2)], dtype=dtype), "polarity")]:
        with pytest.raises(DomainViolation, match=why):
            check_event_stream(broken, (8, 8, 2))


def test_patch_check_confines_binary_changes_to_the_area():
    x = torch.zeros(1, *SHAPE)
    area = torch.zeros(8, 8, dtype=torch.bool)
    area[:2, :2] = True
    inside = x.clone()
    inside[..., :2, :2] = 1
    check_patch(x, inside, area)
    outside = inside.clone()
    outside[..., 5, 5] = 1
    with pytest.raises(DomainViolation, match="outside the patch area"):
        check_patch(x, outside, area)
    with pytest.raises(DomainViolation, match="not binary"):
        check_patch(x, inside * 0.5, area)


# ---- surrogates ---------------------------------------------------------------------------------------------

ZOO_CASES = [("spiking-cnn", "atan:2"), ("sew-resnet", "atan:2"), ("spikingformer", "sigmoid:4"),
             ("spike-driven-transformer", "sigmoid:4")]


@pytest.mark.parametrize("name,own", ZOO_CASES)
def test_attack_neurons_keep_the_forward_and_reproduce_the_models_own_gradient(name, own, one_thread):
    """Every surrogate leaves the logits bit-identical; the surrogate equal to the model's own (spiking CNN,
    SEW: ATan 2; transformers: Sigmoid 4) gives the gradient spikingjelly / the fused LIF give."""
    entry = MODELS.get(name)
    torch.manual_seed(0)
    net = entry.build(entry.configs["tiny"], InputSpec(10, 2, 34, 34, 10)).eval()
    classifier = Classifier(net)
    x = (torch.rand(2, 10, 2, 34, 34, generator=torch.Generator().manual_seed(1)) < 0.3).float()

    def grad_and_logits(surrogate: Surrogate):
        return Victim(classifier, surrogate).gradient(x, lambda out: out[:, 3] - out[:, 5])

    g_model, logits = grad_and_logits(Surrogate())
    for surrogate in parse_surrogates(["sweep"]):
        g, out = grad_and_logits(surrogate)
        assert torch.equal(out, logits), surrogate.label
        assert torch.isfinite(g).all(), surrogate.label
    g_own, _ = grad_and_logits(parse_surrogates([own])[0])
    assert float(g_model.abs().sum()) > 0
    torch.testing.assert_close(g_own, g_model, rtol=1e-4, atol=1e-7 * float(g_model.abs().max()))
    assert all(type(m).__name__ != "AttackNeuron" for m in net.modules())  # put back


def test_surrogate_swap_is_undone_on_error():
    net = SmallSNN()
    with pytest.raises(RuntimeError):
        with attack_surrogate(net, Surrogate("pdsg")):
            assert type(net.lif).__name__ == "AttackNeuron"
            raise RuntimeError("boom")
    assert type(net.lif).__name__ == "FusedLIFNode"


def test_pdsg_follows_the_reference_formula_per_sample_and_channel():
    torch.manual_seed(0)
    history = torch.randn(3, 2, 5, 4, 4)  # [t, B, C, H, W]
    sigma = _pdsg_sigma(history)
    assert sigma.shape == (2, 5, 1, 1)
    torch.testing.assert_close(sigma[1, 2, 0, 0], history[:, 1, 2].std())
    z = torch.tensor([-0.3, 0.0, 0.4])
    s = torch.tensor(0.7)
    expected = torch.exp(-((z - 0.35) / (math.sqrt(2) * 0.7)) ** 2) / (math.sqrt(2 * math.pi) * 0.7)
    torch.testing.assert_close(_pdsg_derivative(z, s), expected)
    assert torch.equal(_pdsg_sigma(torch.randn(1, 1, 7)[..., :1]), torch.ones(1, 1))  # one element: 1, not NaN


def test_rate_surrogate_gives_rgas_constant_slope_to_an_integrate_and_fire_neuron():
    from spikingjelly.activation_based import neuron

    net = nn.Sequential(neuron.IFNode(v_threshold=1.0, step_mode="m"))
    x = torch.full((5, 1, 3), 0.6, requires_grad=True)  # mean input 0.6: inside RGA's band [0, 2] for IF
    with attack_surrogate(net, Surrogate("rate")):
        out = net(x)
    out.sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, 0.5))  # (1 - 0.2 + 0.2 * 1) / (1 + 1)


def test_surrogate_names_are_checked_in_one_line():
    assert [s.label for s in parse_surrogates(["sweep", "model"])] == list(SWEEP)
    for bad, why in [("sigmoid", "needs a width"), ("pdsg:2", "takes no width"), ("tanh", "unknown surrogate"),
                     ("atan:x", "must be a number"), ("atan:-1", "needs a width")]:
        with pytest.raises(ConfigError, match=why):
            parse_surrogates([bad])


def test_evasion_options_are_checked():
    with pytest.raises(ConfigError, match="has no option.*its options: .*steps"):
        create_evasion("pgd", stepz=3)
    with pytest.raises(ConfigError, match="option steps must be int"):
        create_evasion("pgd", steps="many")
    with pytest.raises(ConfigError, match="steps must be >= 1"):
        create_evasion("pgd", steps=0)
    with pytest.raises(SnnsecError, match="unknown evasion attack .nope.; choose one of: corner, dash"):
        create_evasion("nope")


# ---- agreement with ART and torchattacks ---------------------------------------------------------------------

def test_native_fgsm_equals_art_and_torchattacks_on_continuous_input():
    import torchattacks
    from art.attacks.evasion import FastGradientMethod

    from snnsec.api import TorchView
    from snnsec.zoo.base import InputSpec as Spec

    net = SmallSNN(seed=3).eval()
    classifier = Classifier(net)
    x = torch.rand(8, *SHAPE, generator=torch.Generator().manual_seed(4))
    y = Victim(classifier).predict(x)
    native = create_evasion("fgsm").perturb(Victim(classifier), x, Goal(y), Budget("linf", 0.1),
                                            domain_of("continuous"), torch.Generator())
    theirs = torchattacks.FGSM(TorchView(classifier), eps=0.1)(x, y)
    torch.testing.assert_close(native, theirs, rtol=0, atol=1e-6)
    from art.estimators.classification import PyTorchClassifier

    art = PyTorchClassifier(model=TorchView(classifier), loss=nn.CrossEntropyLoss(), input_shape=SHAPE, nb_classes=4,
                            clip_values=(0.0, 1.0))
    art_adv = FastGradientMethod(art, eps=0.1, norm=np.inf).generate(x.numpy(), y=np.eye(4)[y.numpy()])
    np.testing.assert_allclose(native.numpy(), art_adv, rtol=0, atol=1e-6)
    assert float((native - x).abs().max()) > 0.09  # a real step was taken
    del Spec


def test_continuous_check_allows_float_rounding_of_a_full_step():
    x = torch.tensor([[0.0, 1.0, 0.3]]).view(1, 1, 1, 1, 3)
    adv = torch.tensor([[0.1, 0.9, 0.4]]).view(1, 1, 1, 1, 3)  # float32: 0.10000000149, 0.100000024
    domain_of("continuous").check(x, adv, Budget("linf", 0.1))
    with pytest.raises(DomainViolation):
        domain_of("continuous").check(x, adv + 0.01, Budget("linf", 0.1))


# ---- event filters ------------------------------------------------------------------------------------------

def _reference_ba_filter(events, s, time_us, width, height, reference_bounds):
    """DVS-Attacks' background-activity filter, literally (its ``update`` loop; sensor size as arguments)."""
    stamps = np.zeros((width, height))
    keep = np.zeros(len(events), dtype=bool)
    low = 0 if reference_bounds else -1
    for k in np.argsort(events["t"], kind="stable"):
        x, y, t = int(events["x"][k]), int(events["y"][k]), int(events["t"][k])
        for i in range(x - s, x + s + 1):
            for j in range(y - s, y + s + 1):
                if not (i == x and j == y) and i > low and j > low and i < width and j < height:
                    stamps[i][j] = t
        keep[k] = t - stamps[x][y] < time_us
    return keep


def test_background_activity_filter_matches_the_reference_loop():
    from snnsec.defenses.event_filters import BackgroundActivityFilter

    rng = np.random.default_rng(0)
    dtype = np.dtype([("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "i1")])
    for case in range(12):
        n = int(rng.integers(1, 300))
        events = np.zeros(n, dtype)
        events["x"], events["y"], events["p"] = rng.integers(0, 10, n), rng.integers(0, 10, n), rng.integers(0, 2, n)
        events["t"] = np.sort(rng.integers(0, 20000, n)) if case % 2 else rng.integers(0, 40, n) * 100  # ties too
        for bounds in (False, True):
            for s, time_us in ((1, 500), (2, 5000)):
                got = BackgroundActivityFilter(s=s, time_us=time_us, reference_bounds=bounds).keep(events, (10, 10, 2))
                assert (got == _reference_ba_filter(events, s, time_us, 10, 10, bounds)).all(), (case, bounds, s)


def test_mask_filter_silences_pixels_active_in_more_time_steps_than_its_threshold():
    from snnsec.defenses.event_filters import MaskFilter, create_event_filter

    dtype = np.dtype([("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "i1")])
    loud = [(1, 1, 1000 * k, k % 2) for k in range(6)]  # 6 distinct 1 ms steps
    busy_one_step = [(2, 2, 5000 + k, 1) for k in range(9)]  # 9 events in one 1 ms step: activity 1
    events = np.array(sorted(loud + busy_one_step, key=lambda e: e[2]), dtype=dtype)
    activity = MaskFilter(threshold=5).activity(events, (4, 4, 2))
    assert activity[1, 1] == 6 and activity[2, 2] == 1
    kept = MaskFilter(threshold=5)(events, (4, 4, 2))
    assert set(zip(kept["x"].tolist(), kept["y"].tolist())) == {(2, 2)}
    with pytest.raises(ConfigError, match="unknown event filter 'median'; choose one of: ba, mask"):
        create_event_filter("median")
    with pytest.raises(ConfigError, match="has no option"):
        create_event_filter("ba", radius=2)


def test_purify_filter_is_the_stream_purification_defense():
    from snnsec.defenses.event_filters import create_event_filter

    dtype = np.dtype([("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "i1")])
    events = np.array([(1, 1, 5000, 1), (1, 2, 5500, 1), (9, 9, 8000, 0), (1, 1, 20000, 1)], dtype=dtype)
    kept = create_event_filter("purify", method="denoise", filter_time_us=1000.0)(events, (10, 10, 2))
    assert (np.diff(kept["t"]) >= 0).all() and len(kept) < len(events)
    with pytest.raises(ConfigError, match="method must be one of"):
        create_event_filter("purify", method="median")


def test_adversarial_training_defense_retrains_a_fresh_model_through_the_trainer(one_thread):
    from torch.utils.data import TensorDataset

    from snnsec.defenses import DefenseContext, create_defense
    from snnsec.framing import FramingConfig
    from snnsec.training import TrainConfig

    rng = np.random.default_rng(0)
    frames = binary_batch(rng, 24)
    labels = torch.as_tensor(rng.integers(0, 4, 24))
    data = TensorDataset(frames, labels)
    data.labels = labels.numpy()
    defense = create_defense("adversarial-training", budget=8.0, steps=2, ratio=1.0)
    suspect = Classifier(SmallSNN(seed=5))
    ctx = DefenseContext(model=suspect, train_set=data, clean_reserve=data, num_classes=4,
                         training=TrainConfig(epochs=1, batch_size=8), build=lambda: Classifier(SmallSNN(seed=6)),
                         framing=FramingConfig(frames=4))
    model, details = defense.repair(ctx)
    assert model is not suspect and details["adversary"]["budget"] == 8 and details["adversary"]["norm"] == "l0"
    fresh = SmallSNN(seed=6)
    assert any(not torch.equal(a, b) for a, b in zip(model.net.parameters(), fresh.parameters()))
    with pytest.raises(ConfigError, match="ratio must be in"):
        create_defense("adversarial-training", ratio=1.5)
