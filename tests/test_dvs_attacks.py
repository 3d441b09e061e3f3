"""The DVS-Attacks event attacks (frame, corner, dash, mf-dash): valid streams within the event budget, the
reference's search order and coordinates, honest query counts, the mask-filter awareness of mf-dash, and a dash
that breaks a trained tiny model on digits-dvs-third."""
from __future__ import annotations


import numpy as np
import pytest
import torch
from torch import nn

import snnsec.model_cache as model_cache
from snnsec.attack_config import AttackConfig, Workspace
from snnsec.attack_setup import prepare_attack
from snnsec.attacks.evasion import Budget, Goal, Victim, create_evasion
from snnsec.attacks.evasion.domains import check_event_stream
from snnsec.attacks.evasion.dvs_attacks import search_order, time_steps
from snnsec.attacks.evasion.event_base import EventView
from snnsec.classifier import Classifier
from snnsec.datasets import DATASETS
from snnsec.datasets.base import EVENT_DTYPE
from snnsec.defenses.event_filters import MaskFilter
from snnsec.errors import ConfigError
from snnsec.framing import FramingConfig
from snnsec.zoo import InputSpec, create_model

try:
    from digits_third import THIRD, registered
except ImportError:  # run from the repository root
    from tests.digits_third import THIRD, registered

SENSOR = (34, 34, 2)
VIEW = EventView(SENSOR, FramingConfig(frames=4))


def outside(events: np.ndarray, low: int = 8, high: int = 26) -> np.ndarray:
    """Events outside the square ``[low, high)^2`` (where the clean streams of these tests never fire)."""
    return events[(events["x"] < low) | (events["x"] >= high) | (events["y"] < low) | (events["y"] >= high)]


def random_stream(rng: np.random.Generator, low: int = 0, high: int = 34) -> np.ndarray:
    """digits-dvs-like: a few thousand events over ~300 ms, pixels in ``[low, high)``."""
    n = int(rng.integers(1500, 4000))
    out = np.zeros(n, dtype=EVENT_DTYPE)
    out["x"], out["y"] = rng.integers(low, high, n), rng.integers(low, high, n)
    out["t"] = np.sort(rng.integers(int(rng.integers(0, 5000)), int(rng.integers(250_000, 310_000)), n))
    out["p"] = rng.integers(0, 2, n)
    return out


class PixelProbe(nn.Module):
    """Class 1 when any of ``pixels`` ((row, column) of the frames) holds an event, else class 0."""

    def __init__(self, pixels: list[tuple[int, int]]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.pixels = pixels

    def forward(self, x):  # [T, B, P, H, W] -> [T, B, 2]
        hit = torch.stack([x[..., r, c].sum((0, 2)) for r, c in self.pixels]).sum(0) > 0
        logits = torch.stack([(~hit).float(), hit.float()], 1)
        return logits.expand(x.shape[0], *logits.shape) + self.weight


def probe_victim(pixels):
    return Victim(Classifier(PixelProbe(pixels)))


def test_search_order_is_the_references():
    order = search_order(34, 34)
    assert order[:8] == [(0, 2, True), (33, 2, True), (0, 2, False), (33, 2, False), (0, 3, True), (33, 3, True),
                         (0, 3, False), (33, 3, False)]
    # round 1 starts on the previous row (the reference never resets x): (0, 2, left) is a repeat, dropped
    assert order[64:67] == [(32, 2, True), (1, 2, False), (32, 2, False)]
    assert len(order) == len(set(order)) == 319 and (4, 2, True) not in order and (1, 2, True) in order
    assert {x for x, _, _ in order} == {0, 1, 2, 3, 4, 29, 30, 31, 32, 33}
    assert {y for _, y, _ in order} == set(range(2, 18))
    assert len(search_order(128, 128)) == 16 * 63 * 4 - 1


def test_options_are_checked_in_one_line():
    for name, options in (("dash", {"polarity": "up"}), ("mf-dash", {"th0": 0}), ("corner", {"max_queries": 0}),
                          ("frame", {"step_us": 0}), ("frame", {"inset": -1})):
        with pytest.raises(ConfigError):
            create_evasion(name, **options)
    assert all(create_evasion(n).gradient_free for n in ("frame", "corner", "dash", "mf-dash"))


def test_every_stream_is_valid_and_within_its_budget():
    """Property test: random streams and budgets, a tiny untrained spiking CNN, labels half the model's own
    prediction (hard) and half random (broken at the first affordable candidate)."""
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    victim = Victim(Classifier(create_model("spiking-cnn", InputSpec(4, 2, 34, 34, 10), "tiny").eval()))
    attacks = [create_evasion("frame"), create_evasion("frame", polarity="on", inset=2),
               create_evasion("corner", max_queries=25), create_evasion("dash", max_queries=25, step_us=1500),
               create_evasion("mf-dash", max_queries=25, th0=int(rng.integers(3, 60)))]
    broken = 0
    for trial in range(3):
        streams = [random_stream(rng) for _ in range(5)] + [random_stream(rng)[:1]]
        own = victim.classifier.predict(VIEW.batch(streams))
        labels = torch.where(torch.arange(len(streams)) % 2 == 0, own, torch.randint(0, 10, (len(streams),)))
        for attack in attacks:
            budget = Budget("events", int(rng.choice([1, 300, 600, 1200, 5000, 90_000])))
            before = victim.queries
            out = attack.perturb_events(victim, streams, Goal(labels), budget, VIEW, torch.Generator())
            assert len(out) == len(streams) and victim.queries - before <= len(streams) * 25
            for clean, adv, label in zip(streams, out, labels):
                counts = check_event_stream(adv, SENSOR, clean, {"total": int(budget.value)})
                assert counts["deleted"] == counts["flipped"] == 0
                assert adv["t"].min() == clean["t"].min() and adv["t"].max() == clean["t"].max()
                if counts["inserted"]:  # only a successful candidate is returned
                    broken += 1
                    assert int(victim.classifier.predict(VIEW.batch([adv]))) != int(label)
    assert broken > 5


def test_coordinates_timing_and_query_counts_on_a_pixel_probe():
    """A dash breaks a probe of sensor pixel (x=5, y=33) at the first position covering it: row x_ref = 33,
    columns (y_ref-1, y_ref) = (4, 5) at the 14th try; every try is one query."""
    rng = np.random.default_rng(1)
    streams = [random_stream(rng, 8, 26) for _ in range(3)]
    victim = probe_victim([(33, 5)])
    out = create_evasion("dash").perturb_events(victim, streams, Goal(torch.zeros(3, dtype=torch.long)),
                                                Budget("events", 10_000), VIEW, torch.Generator())
    assert victim.queries == 3 * 14
    for clean, adv in zip(streams, out):
        added = outside(adv)
        assert len(added) == len(adv) - len(clean)
        steps = time_steps(clean, 1000)
        assert len(added) == 2 * 2 * len(steps) and set(added["y"].tolist()) == {33}
        assert set(added["x"].tolist()) == {4, 5} and set(added["p"].tolist()) == {0, 1}
        assert np.array_equal(np.unique(added["t"]), steps) and (steps % 1000 == 0).all()
    # a probe no dash or corner reaches (column 33): the whole search, every position once, then the clean stream
    victim = probe_victim([(0, 33)])
    out = create_evasion("dash").perturb_events(victim, streams[:2], Goal(torch.zeros(2, dtype=torch.long)),
                                                Budget("events", 10_000), VIEW, torch.Generator())
    assert victim.queries == 2 * 319 and all(np.array_equal(a, c) for a, c in zip(out, streams[:2]))
    victim = probe_victim([(0, 33)])
    create_evasion("corner", max_queries=7).perturb_events(victim, streams, Goal(torch.zeros(3, dtype=torch.long)),
                                                           Budget("events", 10_000), VIEW, torch.Generator())
    assert victim.queries == 3 * 7
    # unaffordable candidates cost no query: a dash adds ~1,200 events, a corner 1,200 to 10,000
    victim = probe_victim([(33, 5)])
    out = create_evasion("dash").perturb_events(victim, streams, Goal(torch.zeros(3, dtype=torch.long)),
                                                Budget("events", 1000), VIEW, torch.Generator())
    assert victim.queries == 0 and all(np.array_equal(a, c) for a, c in zip(out, streams))
    victim = probe_victim([(0, 12)])
    out = create_evasion("frame").perturb_events(victim, streams, Goal(torch.zeros(3, dtype=torch.long)),
                                                 Budget("events", 10**6), VIEW, torch.Generator())
    assert victim.queries == 3
    for clean, adv in zip(streams, out):
        assert len(adv) - len(clean) == 132 * 2 * len(time_steps(clean, 1000))


@pytest.mark.parametrize("th0,step_us", [(50, 1000), (20, 1000), (5, 1000), (10, 400)])
def test_mf_dash_stays_at_or_below_the_mask_filter_threshold(th0, step_us):
    rng = np.random.default_rng(th0)
    streams = [random_stream(rng, 8, 26) for _ in range(4)]
    border = [(r, c) for r in (0, 1, 2, 3, 4, 29, 30, 31, 32, 33) for c in range(34)]
    victim = probe_victim(border)  # broken by the first candidate: every sample gets a dash
    attack = create_evasion("mf-dash", th0=th0, step_us=step_us)
    out = attack.perturb_events(victim, streams, Goal(torch.zeros(4, dtype=torch.long)), Budget("events", 10**5),
                                VIEW, torch.Generator())
    mask = MaskFilter(threshold=th0)
    for clean, adv in zip(streams, out):
        check_event_stream(adv, SENSOR, clean, {"total": 10**5})
        added = outside(adv)
        assert len(added) == len(adv) - len(clean) > 0
        assert set(added["p"].tolist()) == {1} and set(added["y"].tolist()) == {0}  # left: ON, row 0
        activity = mask.activity(added, SENSOR)
        assert activity.max() <= th0
        assert len(outside(mask(adv, SENSOR))) == len(added)  # the filter keeps every added event
    if step_us == 1000:
        assert activity.max() == th0  # the dash dwells exactly th0 steps at each position


def test_a_dash_breaks_a_trained_tiny_model(tmp_path_factory):
    """The tiny spiking CNN trained on digits-dvs-third (16x16, T=4): a dash with a large budget misclassifies
    some of 20 correctly classified test samples, and what it returns is misclassified when framed."""
    root = tmp_path_factory.mktemp("dvs-attacks")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with registered():
            workspace = Workspace(cache_dir=root / "cache", out_dir=root / "out", device="cpu")
            config = AttackConfig(dataset=THIRD, model_config="tiny", frames=4, size=16, epochs=8, batch_size=8,
                                  lr=1e-2)
            setup = prepare_attack(config, workspace)
            model = model_cache.clean_model(setup, workspace)
            assert DATASETS.get(THIRD).info.sensor_size == SENSOR and setup.framing.size == (16, 16)
            view = EventView(SENSOR, setup.framing)
            streams, labels = [], []
            for i in range(60):
                events, label = setup.raw_test[i]
                if int(model.predict(view.batch([events]))) == int(label):
                    streams.append(events)
                    labels.append(int(label))
                if len(streams) == 20:
                    break
            labels = torch.tensor(labels)
            victim = Victim(model)
            out = create_evasion("dash").perturb_events(victim, streams, Goal(labels), Budget("events", 10**5), view,
                                                        torch.Generator())
            changed = [i for i, (a, c) in enumerate(zip(out, streams)) if len(a) != len(c)]
            assert changed, "the dash broke none of 20 samples"
            predicted = model.predict(view.batch([out[i] for i in changed]))
            assert (predicted != labels[changed]).all()
            assert victim.queries <= 20 * 319
    finally:
        torch.set_num_threads(threads)
