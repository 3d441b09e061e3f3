"""The poisoning benchmark compares equal work: its reference recipe (Sneaky Spikes' eager preparation) and
snnsec's lazy view give identical poisoned sets, and its reference smart statistics are the reference's."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from snnsec.attacks import create_trigger

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_poisoning.py"
_spec = importlib.util.spec_from_file_location("bench_poisoning", _PATH)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

N, T, H = 30, 3, 20


@pytest.fixture
def clean():
    return bench.make_frames(N, T, H, seed=3, density=0.3), bench.make_labels(N, seed=3)


def _fitted_smart(frames):
    return create_trigger("smart", size=0.1).fit(torch.from_numpy(frames))


@pytest.mark.parametrize("make_trigger", [
    lambda frames: create_trigger("static", size=0.1, position="top-left", polarity=1),
    lambda frames: create_trigger("static", size=0.15, position="bottom-right", polarity=0),
    lambda frames: create_trigger("moving", size=0.1, polarity=3),
    _fitted_smart,
])
def test_reference_recipe_equals_lazy_view(clean, make_trigger):
    frames, labels = clean
    source = frames.copy()
    trigger = make_trigger(frames)
    view = bench.lazy_poison(frames, labels, trigger, bench.RATE * 2, bench.TARGET)
    ref_data, ref_targets = bench.reference_poison(
        bench.SampleDataset(frames, labels), trigger, bench.RATE * 2, bench.TARGET, perm=view.indices)
    lazy = [view[i] for i in range(N)]
    assert ref_data.dtype == torch.float32 and ref_data.shape == (N, T, 2, H, H)
    assert torch.equal(ref_data, torch.stack([x for x, _ in lazy]))
    assert ref_targets.tolist() == [float(y) for _, y in lazy]
    # the poisoned samples really carry the trigger (the trigger object's own output), the rest are untouched
    poisoned = set(view.indices.tolist())
    for i in range(N):
        expected = trigger.apply(torch.from_numpy(frames[i])) if i in poisoned else torch.from_numpy(frames[i])
        assert torch.equal(ref_data[i], expected)
    assert sum(not torch.equal(ref_data[i], torch.from_numpy(frames[i])) for i in poisoned) >= len(poisoned) - 1
    assert np.array_equal(frames, source)  # the reference works on its deep copy


def test_reference_recipe_draws_its_own_indices(clean):
    frames, labels = clean
    trigger = create_trigger("static", size=0.1, position="top-left", polarity=3)
    np.random.seed(7)
    data, targets = bench.reference_poison(bench.SampleDataset(frames, labels), trigger, 0.25, 4)
    np.random.seed(7)
    perm = np.random.permutation(N)[: int(N * 0.25)]  # the reference's draw: int(), not round()
    assert len(perm) == 7
    expected = torch.tensor(labels, dtype=torch.float32)
    expected[perm] = 4
    assert torch.equal(targets, expected)
    changed = [i for i in range(N) if not torch.equal(data[i], torch.from_numpy(frames[i]))]
    assert set(changed) <= set(perm.tolist()) and len(changed) >= 6


def test_reference_masks_are_the_references_unequal_cells():
    masks = bench.reference_masks(128, 128, 2)
    assert masks[:3].tolist() == [[0, 42, 0, 42], [0, 42, 42, 85], [0, 42, 85, 128]]
    assert masks[8].tolist() == [85, 128, 85, 128]
    assert bench.reference_masks(6, 6, 2)[5].tolist() == [2, 4, 4, 6]


def test_reference_smart_statistics_on_planted_frames():
    data = np.zeros((1, 1, 2, 6, 6), dtype=np.float32)  # 3 x 3 cells of 2 x 2 px (n = 2)
    # cell 5 (rows 2-3, cols 4-5): pixel A has both polarities, B and C are ON only
    data[0, 0, :, 2, 4] = 1
    data[0, 0, 1, 2, 5] = 1
    data[0, 0, 1, 3, 4] = 1
    # cell 0: three pixels with 2 ON events each; the reference counts only values equal to 1
    data[0, 0, 1, 0, 0] = data[0, 0, 1, 0, 1] = data[0, 0, 1, 1, 0] = 2
    stats = bench.reference_smart_statistics(data)
    # cell 5: 8 elements, 4 ones -> p0 = 4; p1 = B, C; p2 = none; p3 = elements == 1 (A counts twice) = 4
    assert stats["codes"][5] == [4, 2, 0, 4] and stats["activity"][5] == 6
    assert stats["codes"][0] == [5, 0, 0, 0] and stats["activity"][0] == 0
    assert stats["mask"] == [2, 4, 4, 6] and stats["polarity"] == 2  # most active cell, least counted code
    assert bench.reference_smart_statistics(data, most_polarity=True)["polarity"] == 0  # ties: first code
    assert bench.reference_smart_statistics(data, least=True)["mask"] == [0, 2, 0, 2]  # count-2 events unseen


def test_smart_fit_reference_statistic_agrees_with_the_benchmarks_reference():
    smart_options = {"statistic": "reference", "region": "most", "polarity_choice": "least"}
    if not bench.smart_options(smart_options):
        pytest.skip("the smart trigger offers no reference statistic")
    rng = np.random.default_rng(0)
    data = (rng.random((8, 4, 2, 12, 12)) < 0.05).astype(np.float32)
    data[:, :, 1, 4:8, 8:12] = rng.random((8, 4, 4, 4)) < 0.6  # cell (1, 2): busy, mostly ON events
    stats = bench.reference_smart_statistics(data)
    fitted = create_trigger("smart", size=0.1, **smart_options).fit(torch.from_numpy(data))
    top, bottom, left, right = stats["mask"]
    assert (top, bottom, left, right) == (4, 8, 8, 12)
    assert tuple(fitted.cell) == (top, left, bottom, right) and fitted.polarity == stats["polarity"]
