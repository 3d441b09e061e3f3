"""The Gumbel-softmax raw-event attack (``gumbel``): its time bins and cells match the framing, the edits it
makes real land in their slots, every output stream is valid and within its event budget, and it breaks a
trained tiny model on digits-dvs-third."""
from __future__ import annotations


import numpy as np
import pytest
import torch
from spikingjelly.activation_based import layer
from torch import nn

from snnsec.attack_config import AttackConfig, Workspace
from snnsec.attack_setup import prepare_attack
from snnsec.attacks.evasion import Budget, Goal, Victim, create_evasion
from snnsec.attacks.evasion.domains import check_event_stream
from snnsec.attacks.evasion.event_base import EventView
from snnsec.attacks.evasion.gumbel import ADD, KEEP, REMOVE, GumbelSoftmax, bin_intervals, cell_bounds, materialise
from snnsec.classifier import Classifier
from snnsec.errors import ConfigError
from snnsec.framing import FramingConfig, events_to_frames
from snnsec.model_cache import clean_model
from snnsec.zoo.neurons import lif

try:
    from digits_third import THIRD, registered
except ImportError:  # run from the repository root
    from tests.digits_third import THIRD, registered

SENSOR = (34, 34, 2)
DTYPE = np.dtype([("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "i1")])  # digits-dvs' event layout


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_stream(rng: np.random.Generator) -> np.ndarray:
    """Random events: sometimes none or one, duplicate timestamps, spans shorter than the number of bins."""
    n = int(rng.choice([0, 1, 2, 5, *rng.integers(10, 2000, 4)]))
    span = int(rng.choice([1, 3, int(rng.integers(10, 300_000))]))
    out = np.zeros(n, dtype=DTYPE)
    out["x"], out["y"] = rng.integers(0, SENSOR[0], n), rng.integers(0, SENSOR[1], n)
    out["t"] = np.sort(rng.integers(0, span, n)) + int(rng.integers(0, 1000))
    out["p"] = rng.integers(0, 2, n)
    return out


class SmallSNN(nn.Module):
    """[T, B, 2, 16, 16] -> per-step logits [T, B, 10]; weights scaled so that the hidden LIF layer fires (an
    untrained zoo spiking-cnn "tiny" gives the same logits for every sparse stream: no spike gets through)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.fc1 = layer.SeqToANNContainer(nn.Flatten(), nn.Linear(2 * 16 * 16, 48))
        self.lif = lif(tau=2.0, surrogate_name="atan", surrogate_alpha=2.0)
        self.fc2 = layer.SeqToANNContainer(nn.Linear(48, 10))
        with torch.no_grad():
            self.fc1[1].weight.mul_(8)

    def forward(self, x):
        return self.fc2(self.lif(self.fc1(x)))


def small_victim() -> Victim:
    return Victim(Classifier(SmallSNN().eval()))


def test_bins_and_cells_are_those_events_to_frames_uses():
    rng = np.random.default_rng(0)
    for _ in range(200):
        frames = int(rng.integers(1, 9))
        t0 = int(rng.integers(0, 1000))
        t_last = t0 + int(rng.choice([0, 1, 2, 5, int(rng.integers(6, 100_000))]))
        lo, hi = bin_intervals(t0, t_last, frames)
        assert lo[0] == t0 and hi[-1] == t_last + 1 and (lo[1:] == hi[:-1]).all()
        for j in np.flatnonzero(hi > lo):
            for t in {int(lo[j]), int(hi[j]) - 1, int(rng.integers(lo[j], hi[j]))}:
                events = np.zeros(3, dtype=DTYPE)
                events["t"], events["x"] = [t0, t, t_last], [0, 1, 0]  # t at pixel x=1
                counts = events_to_frames(events, SENSOR, frames, "time")
                assert counts[:, 0, 0, 1].tolist() == [int(k == j) for k in range(frames)], (t0, t_last, j, t)
    for pixels in (1, 7, 34):
        for cells in (1, 3, 16, 34, 50):
            lo, hi = cell_bounds(cells, pixels)
            x = np.arange(pixels)
            assert ((lo[(x * cells) // pixels] <= x) & (x < hi[(x * cells) // pixels])).all()
            assert (hi - lo).sum() == pixels


@pytest.mark.parametrize("encoding,size", [("counts", (16, 16)), ("binary", (16, 16)), ("counts", None),
                                           ("binary", (50, 40))])
def test_edits_made_real_land_in_their_slots_and_cost_what_they_say(encoding, size):
    """Framing the materialised stream gives the clean frames plus the chosen slot changes (+1 adds, -1
    removes one event, on binary frames clears the slot), and ``check_event_stream`` counts no more edits."""
    rng = np.random.default_rng(1)
    framing = FramingConfig(frames=4, size=size, encoding=encoding)
    view = EventView(SENSOR, framing)
    out_h, out_w = size or (SENSOR[1], SENSOR[0])
    shape = (4, 2, out_h, out_w)
    cells = cell_bounds(out_w, SENSOR[0]), cell_bounds(out_h, SENSOR[1])
    checked = 0
    for _ in range(40):
        events = random_stream(rng)
        grid = GumbelSoftmax._grid(events, view, shape)
        counts = events_to_frames(events, SENSOR, 4, "time", size).astype(np.int64)
        y_ok = cells[1][1] > cells[1][0]
        x_ok = cells[0][1] > cells[0][0]
        allowed, cost = GumbelSoftmax._choices([grid], counts[None], shape, y_ok[:, None] & x_ok[None],
                                               encoding == "binary")
        hard = np.full(allowed.shape[1], KEEP)
        pick = rng.random(allowed.shape[1])
        hard[(pick < 0.05) & allowed[0, :, ADD]] = ADD
        hard[(pick > 0.9) & allowed[0, :, REMOVE]] = REMOVE
        adv, edits = materialise(grid, hard, shape, SENSOR, encoding == "binary", rng)
        assert edits == (hard == ADD).sum() + cost[0][hard == REMOVE].sum() - _flips(hard, shape)
        found = check_event_stream(adv, SENSOR, events, {"total": edits})
        assert found["total"] <= edits
        after = events_to_frames(adv, SENSOR, 4, "time", size).astype(np.int64).reshape(-1)
        want = counts.reshape(-1) + (hard == ADD)
        want -= np.where(hard == REMOVE, counts.reshape(-1) if encoding == "binary" else 1, 0)
        assert (after == want).all()
        checked += int((hard != KEEP).sum())
    assert checked > 100


def _flips(hard: np.ndarray, shape) -> int:
    """Adds paired with a removal in the other polarity of the same bin and cell (at most one per event)."""
    grid = hard.reshape(shape)
    one_way = (grid[:, 0] == ADD) & (grid[:, 1] == REMOVE)
    return int(one_way.sum() + ((grid[:, 1] == ADD) & (grid[:, 0] == REMOVE)).sum())


@pytest.mark.parametrize("encoding", ["binary", "counts"])
def test_every_output_stream_is_valid_and_within_its_budget(encoding):
    rng = np.random.default_rng(2 if encoding == "binary" else 3)
    view = EventView(SENSOR, FramingConfig(frames=4, size=(16, 16), encoding=encoding))
    victim = small_victim()
    attack = create_evasion("gumbel", steps=6, checkpoints=3)
    moved: list[int] = []
    for round_ in range(4):
        streams = [random_stream(rng) for _ in range(6)]
        labels = victim.predict(view.batch(streams))
        targets = (labels + torch.as_tensor(rng.integers(1, 10, len(labels)))) % 10 if round_ % 2 else None
        budget = Budget("events", int(rng.integers(1, 40)))
        adv = attack.perturb_events(victim, streams, Goal(labels, targets), budget, view,
                                    torch.Generator().manual_seed(round_))
        assert len(adv) == len(streams)
        for clean, out in zip(streams, adv):
            assert out.dtype == clean.dtype
            moved.append(check_event_stream(out, SENSOR, clean, {"total": int(budget.value)})["total"])
    assert sum(m > 0 for m in moved) >= 4, moved  # not vacuous: streams were edited


def test_options_are_checked_and_only_time_slicing_is_supported():
    for bad in ({"steps": 0}, {"lr": 0.0}, {"tau_end": -1.0}, {"sparsity": -0.1}, {"checkpoints": 0},
                {"steps": 5, "checkpoints": 6}, {"bound": 1.0, "init_keep": 2.0}):
        with pytest.raises(ConfigError):
            create_evasion("gumbel", **bad)
    view = EventView(SENSOR, FramingConfig(frames=4, slicing="count", size=(16, 16)))
    stream = random_stream(np.random.default_rng(4))
    with pytest.raises(ConfigError, match="only time slicing"):
        create_evasion("gumbel").perturb_events(small_victim(), [stream], Goal(torch.tensor([0])),
                                                Budget("events", 5), view, torch.Generator())


MODEL = AttackConfig(dataset=THIRD, model_config="tiny", frames=4, size=16, epochs=8, batch_size=8, lr=1e-2)


def test_breaks_a_trained_tiny_model_within_the_budget(tmp_path):
    with registered():
        workspace = Workspace(cache_dir=tmp_path / "cache", out_dir=tmp_path / "out", device="cpu")
        setup = prepare_attack(MODEL, workspace)
        victim = Victim(clean_model(setup, workspace))
        view = EventView(SENSOR, setup.framing)
        rows = [setup.raw_test[i] for i in range(24)]
        streams, labels = [e for e, _ in rows], torch.tensor([int(label) for _, label in rows])
        right = (victim.predict(view.batch(streams)) == labels).nonzero().flatten()[:12].tolist()
        assert len(right) >= 10
        streams, labels = [streams[i] for i in right], labels[right]
        budget = 64
        adv = create_evasion("gumbel").perturb_events(
            victim, streams, Goal(labels), Budget("events", budget), view, torch.Generator().manual_seed(0))
    goal = Goal(labels)
    logits = victim.predict_logits(view.batch(adv))
    edits = np.array([check_event_stream(a, SENSOR, c, {"total": budget})["total"] for a, c in zip(adv, streams)])
    broken = goal.success(logits.argmax(1)).numpy()
    assert (edits[broken] > 0).all() and (edits <= budget).all()
    # a stream that moved without breaking is the best try: its margin is below the clean stream's
    closer = (goal.margin(logits) < goal.margin(victim.predict_logits(view.batch(streams)))).numpy()
    assert (broken | closer | (edits == 0)).all() and not (closer & (edits == 0)).any()
    print(f"gumbel on the trained tiny model, budget {budget}: {int(broken.sum())}/{len(streams)} broken, "
          f"mean edits {edits[broken].mean():.1f}")
    assert broken.sum() >= len(streams) // 2, (broken, edits)
    assert edits[broken].mean() < budget
