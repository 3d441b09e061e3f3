"""The Sneaky Spikes reference variants, checked on small cases worked out by hand from the reference's
definitions (GorkaAbad/Sneaky-Spikes ``poisoned_dataset.py``; spikingjelly's ``split_by`` slicings)."""
import numpy as np
import pytest
import torch

from snnsec.attacks.event_injection import MovingInjector
from snnsec.attacks.moving import MovingTrigger
from snnsec.attacks.patch import patch_side
from snnsec.attacks.poisoning import FrameDataset
from snnsec.attacks.smart import SmartTrigger, reference_edges
from snnsec.attacks.static import StaticTrigger
from snnsec.datasets.base import EVENT_DTYPE
from snnsec.errors import ConfigError
from snnsec.experiment import AttackConfig, Workspace, _high_count, _sample_frames, _sample_rows, trigger_example
from snnsec.framing import encode, events_to_frames

torch.set_num_threads(1)


# --------------------------------------------------------------------------------------------------
# patch side: int(size * W), at least 1


@pytest.mark.parametrize(
    "size, width, side",
    [
        (0.1, 128, 12),  # the paper's main setting: 12.8 -> 12 (round() gave 13)
        (0.05, 34, 1),  # 1.7 -> 1 (round() gave 2)
        (0.35, 10, 3),  # a half: 3.5 -> 3
        (0.25, 10, 2),  # 2.5 -> 2
        (0.005, 128, 1),  # 0.64 -> 0, forced to 1 px
        (1.0, 34, 34),
    ],
)
def test_patch_side_truncates_like_the_reference(size, width, side):
    assert patch_side(size, width, width) == side


def test_static_patch_on_128px_frames_is_12px():
    out = StaticTrigger(size=0.1, position="top-left", polarity=3).apply(torch.zeros(2, 2, 128, 128))
    assert out[0, 0].nonzero().amax(0).tolist() == [11, 11] and out.sum() == 2 * 2 * 12 * 12


# --------------------------------------------------------------------------------------------------
# moving: the reference's three-position hop, and the paper's 2 px per bin

# 128 px, size 0.1: side s = 12. Columns from the left x0, x0 + (s + 2) = x0 + 14, x0 + (2s + 2) = x0 + 26;
# from the right 116, 102, 90; rows fixed; "middle" starts at (128 // 2 - 2, 128 // 2 - 2) = (62, 62), moving right.
REFERENCE_PATHS = {
    "top-left": (0, [0, 14, 26]),
    "top-right": (0, [116, 102, 90]),
    "bottom-left": (116, [0, 14, 26]),
    "bottom-right": (116, [116, 102, 90]),
    "middle": (62, [62, 76, 88]),
}


@pytest.mark.parametrize("position", sorted(REFERENCE_PATHS))
def test_reference_path_positions_per_frame(position):
    row, cols = REFERENCE_PATHS[position]
    trigger = MovingTrigger(size=0.1, position=position, polarity=1)
    assert trigger.path == "reference"  # the default
    assert trigger.origins(16, 128, 128) == [(row, cols[t % 3]) for t in range(16)]
    out = trigger.apply(torch.zeros(16, 2, 128, 128))
    for t in range(16):  # every bin, the last one (t = 15, position 0) included: the reference skipped it
        rows, cs = out[t, 1].nonzero().T
        assert (rows.min(), rows.max(), cs.min(), cs.max()) == (row, row + 11, cols[t % 3], cols[t % 3] + 11)
        assert out[t, 1].sum() == 144 and out[t, 0].sum() == 0


def test_reference_path_random_start_keeps_all_three_patches_inside():
    for seed in range(20):
        origins = MovingTrigger(size=0.1, position="random", seed=seed).origins(3, 34, 34)  # side 3: 0, 5, 8
        (r0, c0), (r1, c1), (r2, c2) = origins
        assert r0 == r1 == r2 and (c1 - c0, c2 - c0) == (5, 8) and c2 + 3 <= 34 and r0 + 3 <= 34
    assert origins == MovingTrigger(size=0.1, position="random", seed=19).origins(3, 34, 34)


def test_reference_path_that_leaves_the_frame_is_an_error():
    with pytest.raises(ConfigError, match="offsets 0, 6 and 10 px"):
        MovingTrigger(size=0.4, position="top-right").origins(3, 10, 10)  # 6 - 10 < 0
    with pytest.raises(ConfigError, match="speed does not apply"):
        MovingTrigger(path="reference", speed=2)


@pytest.mark.parametrize("position, cols", [("top-left", [0, 2, 4, 6]), ("bottom-right", [116, 114, 112, 110])])
def test_paper_path_moves_two_px_per_frame(position, cols):
    origins = MovingTrigger(size=0.1, position=position, path="paper").origins(4, 128, 128)
    assert [c for _, c in origins] == cols and len({r for r, _ in origins}) == 1
    with pytest.raises(ConfigError, match="2 px per bin"):
        MovingTrigger(path="paper", speed=3)


def _scene(n=600, width=40, height=40, seed=0):
    """Random events; the first and last sit at (39, 10), outside every patch used below."""
    rng = np.random.default_rng(seed)
    ev = np.zeros(n, dtype=EVENT_DTYPE)
    ev["x"], ev["y"] = rng.integers(0, width, n), rng.integers(0, height, n)
    ev["t"] = np.sort(rng.integers(1_000, 80_000, n))
    ev["p"] = rng.integers(0, 2, n)
    ev["t"][0], ev["t"][-1] = 1_000, 80_000
    for i in (0, -1):
        ev["x"][i], ev["y"][i] = 39, 10
    return ev


@pytest.mark.parametrize("position", ["top-left", "top-right", "bottom-right", "middle"])
@pytest.mark.parametrize("path", ["reference", "paper"])
def test_event_level_moving_follows_the_same_paths(position, path):
    sensor, steps = (40, 40, 2), 6
    ev = _scene()
    inj = MovingInjector(size=0.1, position=position, path=path, polarity=1, bins=steps, replace=True)
    framed = torch.from_numpy(encode(events_to_frames(inj.inject(ev, sensor), sensor, steps), "binary"))
    clean = torch.from_numpy(encode(events_to_frames(ev, sensor, steps), "binary"))
    assert torch.equal(framed, MovingTrigger(size=0.1, position=position, path=path).apply(clean))
    with pytest.raises(ConfigError, match="continuous"):
        MovingInjector(path="reference", continuous=True)


# --------------------------------------------------------------------------------------------------
# smart: the reference's statistic


def test_reference_cells_are_the_reference_masks():
    assert reference_edges(128, 3).tolist() == [0, 42, 85, 128]  # 42.67 accumulated, truncated
    assert reference_edges(34, 3).tolist() == [0, 11, 22, 34]
    assert reference_edges(10, 3).tolist() == [0, 3, 6, 10]


def planted_6px() -> torch.Tensor:
    """One 6x6 frame, grid 3 -> 2x2 cells. Hand-counted reference statistics (p0, p1, p2, p3):
    cell (0, 0): ON-only pixel at (0, 0)                  -> (7, 1, 0, 1), activity 2
    cell (0, 2): every pixel ON with count 3              -> (4, 0, 0, 0), activity 0 (only 0s and 1s count)
    cell (1, 1): (2,2) both, (2,3) OFF only, (3,2) ON x2  -> (4, 0, 1, 3), activity 4
    every other cell silent                               -> (8, 0, 0, 0), activity 0
    """
    x = torch.zeros(1, 1, 2, 6, 6)
    x[0, 0, 1, 0, 0] = 1
    x[0, 0, 1, 0:2, 4:6] = 3
    x[0, 0, :, 2, 2] = 1
    x[0, 0, 0, 2, 3] = 1
    x[0, 0, 1, 3, 2] = 2
    return x


@pytest.mark.parametrize(
    "region, choice, cell, polarity",
    [
        ("most", "least", (2, 2, 4, 4), 1),  # the default: most active cell, least used code [4, 0, 1, 3] -> 1
        ("most", "most", (2, 2, 4, 4), 0),
        ("least", "least", (0, 2, 2, 4), 1),  # first cell of activity 0 in row-major order: (0, 1); [8, 0, 0, 0]
    ],
)
def test_smart_reference_statistic_on_a_planted_frame(region, choice, cell, polarity):
    fitted = SmartTrigger(size=0.2, region=region, polarity_choice=choice).fit(planted_6px())  # side 1
    assert (fitted.cell, fitted.polarity) == (cell, polarity)
    if (region, choice) == ("most", "least"):
        assert fitted == SmartTrigger(size=0.2).fit(planted_6px())  # the defaults are the reference's
    # the "share" statistic reads count frames as events: cell (0, 2) is all active there
    assert SmartTrigger(size=0.2, statistic="share", region="most").fit(planted_6px()).cell == (0, 4, 2, 6)


def test_smart_reference_sums_raw_activity_over_unequal_cells():
    # 10 px, grid 3: cells of 3, 3, 4 px. Cell (0, 0) (3x3) has 3 ON-only pixels (p1 + p3 = 6, share 3/9);
    # cell (2, 2) (4x4) has 4 (p1 + p3 = 8, share 4/16): the raw sum picks (2, 2), the share (0, 0).
    x = torch.zeros(2, 3, 2, 10, 10)  # summed over samples and bins alike
    x[:, :, 1, 0, 0:3] = 1
    x[:, :, 1, 9, 6:10] = 1
    assert SmartTrigger(size=0.1).fit(x).cell == (6, 6, 10, 10)
    assert SmartTrigger(size=0.1, statistic="share").fit(x).cell == (0, 0, 3, 3)


def test_smart_reference_placement_walks_two_px_inside_the_safe_zone():
    x = torch.zeros(1, 1, 2, 34, 34)
    x[0, 0, 1, 12:20, 12:20] = 1  # centre cell (11..22) most active
    fitted = SmartTrigger(size=0.1, placement="reference", seed=3).fit(x)  # side 3: safe rows/cols [14, 19]
    assert fitted.cell == (11, 11, 22, 22) and 14 <= min(fitted.origin) and max(fitted.origin) < 19
    path = fitted.origins(64, 34, 34)
    assert path == fitted.origins(64, 34, 34)  # identical for training and test frames
    prev = fitted.origin
    for row, col in path:  # bin 0 already moved, as in the reference
        assert 14 <= row <= 19 and 14 <= col <= 19
        assert abs(row - prev[0]) in (0, 2) and abs(col - prev[1]) in (0, 2)
        prev = (row, col)
    assert len(set(path)) > 3
    with pytest.raises(ConfigError, match="placement 'reference' needs cells of at least 13 px"):
        SmartTrigger(size=0.2, placement="reference").fit(x)  # side 6 in an 11 px cell


# --------------------------------------------------------------------------------------------------
# spikingjelly's slicings


def _events(t, xs=None):
    ev = np.zeros(len(t), dtype=EVENT_DTYPE)
    ev["t"] = t
    ev["x"] = 0 if xs is None else xs
    ev["p"] = 1
    return ev


def _per_frame(ev, slicing, frames=3, sensor=(4, 1, 2)):
    return events_to_frames(ev, sensor, frames, slicing).sum((1, 2, 3)).tolist()


def test_sj_number_first_frames_take_floor_n_over_t():
    ev = _events(np.arange(10))
    assert _per_frame(ev, "sj-number") == [3, 3, 4]  # floor(10 / 3) = 3, the last takes the rest
    assert _per_frame(ev, "count") == [4, 3, 3]  # snnsec's count slicing: floor(i * T / N)
    assert _per_frame(_events([0, 1]), "sj-number") == [0, 0, 2]  # N < T: all in the last frame


def test_sj_time_windows_of_floor_duration_over_t():
    ev = _events([0, 1, 2, 3, 4, 5, 6, 7, 8, 10])
    assert _per_frame(ev, "sj-time") == [3, 3, 4]  # dT = floor(10 / 3) = 3: [0,3) [3,6) [6,...]
    assert _per_frame(ev, "time") == [4, 4, 2]  # snnsec's time slicing: floor(t * 3 / 11)
    assert _per_frame(_events([0, 1, 9]), "sj-time") == [2, 0, 1]  # an empty window stays empty
    assert _per_frame(_events([5, 5, 6]), "sj-time") == [0, 0, 3]  # dT = 0: the last frame takes all


def test_events_outside_the_sensor_count_for_slicing_then_are_dropped():
    ev = _events(np.arange(6), xs=[0, 9, 0, 9, 0, 0])  # x = 9 lies outside a 4 px wide sensor
    assert _per_frame(ev, "sj-number") == [1, 1, 2]  # slices of 2 events each, then the outside ones drop


# --------------------------------------------------------------------------------------------------
# data-fitted triggers read a seeded, class-stratified sample


def test_stratified_sample_covers_every_class():
    labels = np.repeat([0, 1, 2, 3], [50, 30, 15, 5])  # sorted by class, as tonic's sets are
    rows = _sample_rows(labels, 12, seed=0)
    assert len(rows) == 12 and np.all(np.diff(rows) > 0)
    assert np.bincount(labels[rows]).tolist() == [3, 3, 3, 3]
    assert rows.tolist() == _sample_rows(labels, 12, seed=0).tolist()
    assert rows.tolist() != _sample_rows(labels, 12, seed=1).tolist()
    assert np.bincount(labels[_sample_rows(labels, 40, seed=0)]).tolist() == [12, 12, 11, 5]  # class 3 exhausted
    assert _sample_rows(labels, 500, seed=0).tolist() == list(range(100))


def test_fitting_sample_and_trigger_value_see_the_last_class():
    labels = np.repeat([0, 1], [300, 10])
    counts = np.zeros((310, 1, 2, 4, 4), dtype=np.int16)
    counts[:300, :, 1, 0, 0] = 1
    counts[300:, :, 1, 0, 0] = 9  # only class 1 is bright
    data = FrameDataset(counts, labels, lambda c: np.asarray(c, dtype=np.float32))
    assert _high_count(data, samples=256) == 9.0  # the first 256 rows would all be class 0 -> 1.0
    frames = _sample_frames(data, samples=20)
    assert frames.shape == (20, 1, 2, 4, 4) and int((frames[:, 0, 1, 0, 0] == 9).sum()) == 10
    subset = data.subset(np.arange(290, 310))  # positions map through the subset's rows
    assert _high_count(subset, samples=4) == 9.0


# --------------------------------------------------------------------------------------------------
# end to end on DVS128 Gesture fixtures: --trigger-size 0.1 paints 12 px


def test_dvs128_trigger_size_01_paints_12px(tmp_path):
    from event_fixtures import make_dvsgesture

    make_dvsgesture(tmp_path / "data")
    config = AttackConfig(dataset="dvs128", frames=2, trigger="static", trigger_size=0.1, polarity=3)
    clean, triggered, _ = trigger_example(config, Workspace(data_dir=tmp_path / "data", cache_dir=tmp_path / "c"))
    assert triggered.shape == (2, 2, 128, 128)
    patch = torch.zeros(128, 128, dtype=torch.bool)
    patch[116:, 116:] = True  # bottom-right, 12 x 12
    assert bool((triggered[..., patch] == 1).all())
    assert torch.equal(triggered[..., ~patch], clean[..., ~patch])


def test_ncaltech_crop_keeps_the_centre_180_columns(tmp_path):
    from event_fixtures import make_ncaltech101

    from snnsec.datasets import DATASETS
    from snnsec.datasets.tonic_sets import load_ncaltech101

    make_ncaltech101(tmp_path, per_class={"accordion": 2}, n_events=60, annotations=False)
    full, crop = load_ncaltech101("train", tmp_path), DATASETS.get("ncaltech101-crop").load("train", tmp_path)
    assert crop.info.sensor_size == (180, 180, 2) and len(full) == len(crop)
    for i in range(len(full)):
        events, cropped = full[i][0], crop[i][0]  # the registry's loader validates every event
        inside = events[(events["x"] >= 30) & (events["x"] < 210) & (events["y"] < 180)]
        assert 0 < len(cropped) == len(inside) < len(events)
        assert np.array_equal(cropped["x"], inside["x"] - 30) and np.array_equal(cropped["t"], inside["t"])
        whole = events_to_frames(events, (240, 180, 2), 4)  # [T, P, 180, 240]
        assert events_to_frames(cropped, (180, 180, 2), 4).sum() == whole[..., 30:210].sum()


@pytest.mark.parametrize("size, grid", [(0.5, 3), (1.0, 3), (0.3, 100)])
def test_smart_reference_cells_hold_patches_larger_than_a_cell(size, grid):
    x = (torch.rand(2, 2, 2, 12, 12, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    fitted = SmartTrigger(size=size, grid=grid).fit(x)  # the reference crashed here
    side = max(1, int(size * 12))
    top, left, bottom, right = fitted.cell
    assert bottom - top >= side and right - left >= side and bottom <= 12 and right <= 12
    out = fitted.apply(torch.full((1, 2, 12, 12), 0.5))
    assert int(((out[0] != 0.5).sum(0) > 0).sum()) == side * side
