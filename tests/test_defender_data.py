"""The defender's data carries no ground truth: the clean reserve is drawn from its own stream, only from
unpoisoned rows, and is held out of the received training set, which exposes no row identity."""
import numpy as np
import pytest
import torch

from snnsec.attacks.poisoning import FrameDataset, PoisonConfig, choose_poison_indices, poison_training_set
from snnsec.defenses.defender_data import HeldEvents, draw_reserve, split_for_defender
from snnsec.errors import ConfigError


@pytest.mark.parametrize("n", [60, 1438])
@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize("reserve_rate", [0.01, 0.05, 0.1, 0.3])
@pytest.mark.parametrize("poison_rate", [0.01, 0.05, 0.1, 0.5])
def test_no_poisoned_row_enters_the_reserve(n, seed, reserve_rate, poison_rate):
    labels = np.arange(n) % 10
    poisoned = choose_poison_indices(labels, PoisonConfig(rate=poison_rate, seed=seed))
    reserve = draw_reserve(n, poisoned, reserve_rate, seed)
    assert len(reserve) == max(1, round(reserve_rate * n)) == len(np.unique(reserve))
    assert np.all(np.diff(reserve) > 0) and 0 <= reserve.min() and reserve.max() < n
    assert not np.isin(reserve, poisoned).any()


def test_equal_counts_no_longer_make_the_reserve_the_poisoned_set():
    """Issue 11: rate 0.05 and reserve 0.05 of 1438 rows with seed 0 gave the same 72 rows to both."""
    labels = np.arange(1438) % 10
    poisoned = choose_poison_indices(labels, PoisonConfig(rate=0.05, seed=0))
    same_stream = np.sort(np.random.default_rng(0).choice(1438, 72, replace=False))
    assert np.array_equal(same_stream, poisoned)  # the old draw
    assert not np.isin(draw_reserve(1438, poisoned, 0.05, 0), poisoned).any()


def test_reserve_draw_is_seeded_and_its_own_stream():
    poisoned = np.array([3, 5, 8])
    first, again = draw_reserve(500, poisoned, 0.1, 4), draw_reserve(500, poisoned, 0.1, 4)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, draw_reserve(500, poisoned, 0.1, 5))
    plain = np.sort(np.random.default_rng(4).choice(np.setdiff1d(np.arange(500), poisoned), 50, replace=False))
    assert not np.array_equal(first, plain)  # not the seed's plain stream, which the poisoning uses


def test_a_reserve_larger_than_the_clean_rows_is_a_clear_error():
    with pytest.raises(ConfigError, match="only 10 of 100 training samples are not poisoned"):
        draw_reserve(100, np.arange(90), 0.2, 0)


class Shift:
    """A trigger that adds 1000 to every frame value: triggered samples are easy to tell apart."""

    def apply(self, frames):
        return frames + 1000


def planted(n=200, rate=0.1, seed=0):
    """A clean frame set whose row ``i`` holds the value ``i`` everywhere, and its poisoned copy."""
    counts = np.broadcast_to(np.arange(n, dtype=np.int16)[:, None, None, None, None], (n, 2, 1, 2, 2)).copy()
    clean = FrameDataset(counts, np.arange(n) % 4, lambda c: np.asarray(c, np.float32))
    received = poison_training_set(clean, Shift(), PoisonConfig(rate=rate, target=0, seed=seed), 4)
    labels = clean.labels.copy()
    labels[received.indices] = 0
    return clean, received, labels


@pytest.mark.parametrize("seed", [0, 3])
def test_the_reserve_is_held_out_and_shares_no_row_with_the_received_set(seed):
    clean, received, labels = planted(seed=seed)
    held = split_for_defender(received, labels, clean, clean.labels, received.indices, 0.1, seed)
    assert len(held.train_set) + len(held.clean_reserve) == len(clean) and len(held.clean_reserve) == 20
    reserve_rows = {int(held.clean_reserve[i][0][0, 0, 0, 0]) for i in range(len(held.clean_reserve))}
    received_values = {int(held.train_set[i][0][0, 0, 0, 0]) for i in range(len(held.train_set))}
    received_rows = {v % 1000 for v in received_values}
    assert not reserve_rows & received_rows  # no sample is in both sets, not even as a triggered copy
    assert not reserve_rows & set(received.indices.tolist())  # and the reserve is clean
    for dataset in (held.train_set, held.clean_reserve):  # only samples and labels: no row identity
        assert not any(hasattr(dataset, name) for name in ("rows", "indices", "base", "counts", "raw"))
        assert [int(dataset[i][1]) for i in range(len(dataset))] == dataset.labels.tolist()


def test_poisoned_indices_cannot_be_recovered_by_comparing_the_defenders_inputs():
    """The old leak: the reserve held rows of the received set, so a row's two copies differed exactly where the
    attacker had poisoned it. Held out, no received sample has a counterpart in the reserve to compare with."""
    clean, received, labels = planted(rate=0.3)
    held = split_for_defender(received, labels, clean, clean.labels, received.indices, 0.3, 0)
    reserve = torch.stack([held.clean_reserve[i][0] for i in range(len(held.clean_reserve))])
    for i in range(len(held.train_set)):
        frames = held.train_set[i][0]
        assert not (reserve == frames).flatten(1).all(1).any()  # no identical copy ...
        assert not (reserve == frames - 1000).flatten(1).all(1).any()  # ... nor the clean copy of a triggered one


def test_ground_truth_positions_follow_the_reindexing():
    clean, received, labels = planted()
    held = split_for_defender(received, labels, clean, clean.labels, received.indices, 0.2, 1)
    triggered = np.array([float(held.train_set[i][0].max()) >= 1000 for i in range(len(held.train_set))])
    assert np.array_equal(np.flatnonzero(triggered), held.poisoned_positions)
    assert len(held.poisoned_positions) == len(received.indices)  # every poisoned sample stays in the received set


class Raw:
    class info:  # noqa: N801 - mimics an EventDataset's info
        sensor_size = (4, 4, 2)

    def __getitem__(self, index):
        return np.array([index]), index % 4


def test_raw_events_are_handed_over_for_the_reserve_only():
    clean, received, labels = planted()
    held = split_for_defender(received, labels, clean, clean.labels, received.indices, 0.05, 0, Raw())
    events = held.reserve_events
    assert isinstance(events, HeldEvents) and len(events) == len(held.clean_reserve) == 10
    assert events.sensor_size == (4, 4, 2)
    for i in range(len(events)):  # reserve sample i's own raw events, nothing else
        assert int(events[i][0][0]) == int(held.clean_reserve[i][0][0, 0, 0, 0])


def test_a_reserve_larger_than_the_clean_rows_fails_before_any_training(monkeypatch, tmp_path):
    """`snnsec defend --reserve-rate` too large for the unpoisoned rows: one line, before a model is trained."""
    from types import SimpleNamespace

    from snnsec import defending
    from snnsec.errors import ConfigError
    from snnsec.experiment import AttackConfig, Workspace

    setup = SimpleNamespace(train_set=list(range(100)), poisoned_train=SimpleNamespace(indices=np.arange(20)),
                            attack_identity={}, trigger=object())
    monkeypatch.setattr(defending, "prepare_attack", lambda attack, workspace: setup)

    def no_training(*args, **kwargs):
        raise AssertionError("a model was requested before the reserve was checked")

    monkeypatch.setattr(defending, "record_attack", no_training)
    monkeypatch.setattr(defending, "backdoored_model", no_training)
    with pytest.raises(ConfigError, match="lower --reserve-rate"):
        defending.run_defense(defending.DefenseConfig("strip", reserve_rate=0.9), AttackConfig(),
                              Workspace(out_dir=tmp_path))
