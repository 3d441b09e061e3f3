"""Exact tests of the frame-level trigger plugins: moving, smart, framed, strobing, flashy, blended."""
import json
from dataclasses import replace

import pytest
import torch

from snnsec.attacks.base import TRIGGERS, create_trigger
from snnsec.attacks.blended import BlendedTrigger
from snnsec.attacks.flashy import FlashyTrigger
from snnsec.attacks.framed import FramedTrigger
from snnsec.attacks.moving import MovingTrigger
from snnsec.attacks.smart import SmartTrigger
from snnsec.attacks.strobing import StrobingTrigger
from snnsec.errors import ConfigError

torch.set_num_threads(1)

BG = 0.5  # background level: any write (0 or 1) is visible against it


def bg(t=8, p=2, h=10, w=10):
    return torch.full((t, p, h, w), BG)


def with_patch(x, t, row, col, side, off, on):
    """``x`` with the patch painted in bin ``t``: OFF channel 0 set to ``off``, ON channel 1 to ``on``."""
    y = x.clone()
    y[..., t, 0, row : row + side, col : col + side] = off
    y[..., t, 1, row : row + side, col : col + side] = on
    return y


def binary_frames(n=3, t=8, p=2, h=16, w=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, t, p, h, w, generator=g) < 0.3).float()


def fitted_smart(**kw):
    return SmartTrigger(size=0.2, **kw).fit(binary_frames(n=4))


# One representative configuration per trigger, for the contract tests.
CASES = {
    "moving": lambda: MovingTrigger(size=0.2, position="top-left", path="diagonal", speed=3),
    "smart": lambda: fitted_smart(walk=2),
    "framed": lambda: FramedTrigger(size=0.2, start=2, length=3),
    "strobing": lambda: StrobingTrigger(size=0.2, period=3, on=1),
    "flashy": lambda: FlashyTrigger(start=1, length=2),
    "blended": lambda: BlendedTrigger(ratio=0.3, seed=4),
}


# --------------------------------------------------------------------------------------------------
# Contract: every trigger


@pytest.mark.parametrize("name", sorted(CASES))
def test_registered_and_created_by_name(name):
    assert name in TRIGGERS.names()
    trigger = CASES[name]()
    params = trigger.params()
    assert params["trigger"] == name
    again = create_trigger(name, **{k: v for k, v in params.items() if k != "trigger"})
    assert again == trigger


@pytest.mark.parametrize("name", sorted(CASES))
def test_shape_batch_axes_purity_and_repeatability(name):
    trigger = CASES[name]()
    x = binary_frames(n=6).reshape(2, 3, 8, 2, 16, 16)
    keep = x.clone()
    out = trigger.apply(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(x, keep)  # never in place
    assert torch.equal(out, trigger.apply(x))  # same parameters, same output: train == test
    # leading axes are independent samples: batching changes nothing
    assert torch.equal(out[1, 2], trigger.apply(x[1, 2]))
    assert torch.equal(out.reshape(6, 8, 2, 16, 16), trigger.apply(x.reshape(6, 8, 2, 16, 16)))


@pytest.mark.parametrize("name", sorted(CASES))
def test_params_reproduce_the_trigger_through_json(name):
    trigger = CASES[name]()
    params = json.loads(json.dumps(trigger.params()))  # what a record stores: tuples come back as lists
    rebuilt = create_trigger(params.pop("trigger"), **params)
    x = binary_frames(n=2, seed=9)
    assert torch.equal(rebuilt.apply(x), trigger.apply(x))


@pytest.mark.parametrize("name", sorted(CASES))
def test_binary_in_binary_out(name):
    out = CASES[name]().apply(binary_frames())
    assert set(out.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("name", sorted(CASES))
def test_counts_in_counts_out(name):
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 6, (2, 8, 2, 16, 16), generator=g).float()
    trigger = CASES[name]()
    out = replace(trigger, value=9.0).apply(x)
    assert (out >= 0).all() and torch.equal(out, out.round())


# --------------------------------------------------------------------------------------------------
# moving


def moving_expected(x, origins, side, off=0.0, on=1.0):
    y = x
    for t, (row, col) in enumerate(origins):
        y = with_patch(y, t, row, col, side, off, on)
    return y


def test_moving_horizontal_bounce_every_bin_exact():
    # 10x10, side 2 -> columns 0..8; speed 3 from the left edge: 0, 3, 6, 9->7, 12->4, 15->1, 18->2
    trigger = MovingTrigger(size=0.2, position="top-left", path="horizontal", speed=3, polarity=1)
    x = bg(t=7)
    cols = [0, 3, 6, 7, 4, 1, 2]
    assert trigger.origins(7, 10, 10) == [(0, c) for c in cols]
    assert torch.equal(trigger.apply(x), moving_expected(x, [(0, c) for c in cols], 2))


def test_moving_last_bin_carries_the_patch():
    out = MovingTrigger(size=0.2, position="top-left", path="horizontal", polarity=3).apply(bg(t=5))
    assert all((out[t] != BG).sum() == 2 * 4 for t in range(5))  # both channels, 2x2, every bin incl. t=4
    assert torch.equal(out[4, :, 0:2, 4:6], torch.ones(2, 2, 2))  # speed 1: column 4 at t=4


def test_moving_vertical_from_bottom_moves_up():
    trigger = MovingTrigger(size=0.2, position="bottom-left", path="vertical", speed=2, polarity=2)
    rows = [8, 6, 4, 2, 0, 2]  # bounce off the top
    assert trigger.origins(6, 10, 10) == [(r, 0) for r in rows]
    x = bg(t=6)
    assert torch.equal(trigger.apply(x), moving_expected(x, [(r, 0) for r in rows], 2, off=1.0, on=0.0))


def test_moving_diagonal_wrap_from_top_right():
    trigger = MovingTrigger(size=0.2, position="top-right", path="diagonal", speed=3, boundary="wrap")
    # rows 0, 3, 6, 9 mod 9 = 0; columns 8, 5, 2, -1 mod 9 = 8
    assert trigger.origins(5, 10, 10) == [(0, 8), (3, 5), (6, 2), (0, 8), (3, 5)]


def test_moving_non_square_frames_bounce_each_axis():
    trigger = MovingTrigger(size=0.25, position="top-left", path="diagonal", speed=2)  # side round(0.25*8) = 2
    # 6x8 frames: rows 0..4, columns 0..6
    assert trigger.origins(6, 6, 8) == [(0, 0), (2, 2), (4, 4), (2, 6), (0, 4), (2, 2)]


@pytest.mark.parametrize("boundary", ["bounce", "wrap"])
@pytest.mark.parametrize("path", ["horizontal", "vertical", "diagonal"])
@pytest.mark.parametrize("position", ["top-left", "top-right", "bottom-left", "bottom-right", "middle", "random"])
def test_moving_stays_inside_the_frame(boundary, path, position):
    trigger = MovingTrigger(size=0.3, position=position, path=path, speed=5, boundary=boundary, polarity=3)
    out = trigger.apply(bg(t=30, h=11, w=13))
    side = 3  # int(0.3 * 13), Sneaky Spikes' sizing
    assert all((out[t] != BG).sum() == 2 * side * side for t in range(30))  # the whole patch, every bin
    for row, col in trigger.origins(30, 11, 13):
        assert 0 <= row <= 11 - side and 0 <= col <= 13 - side


def test_moving_full_size_stays_put():
    trigger = MovingTrigger(size=1.0, position="top-left", path="diagonal", speed=4)
    assert trigger.origins(4, 10, 10) == [(0, 0)] * 4


def test_moving_random_start_is_fixed_by_seed():
    a = MovingTrigger(position="random", seed=3).origins(4, 20, 20)
    assert a == MovingTrigger(position="random", seed=3).origins(4, 20, 20)
    assert a != MovingTrigger(position="random", seed=4).origins(4, 20, 20)


@pytest.mark.parametrize(
    "kwargs", [{"path": "circle"}, {"speed": 0}, {"speed": 1.5}, {"speed": True}, {"boundary": "stop"}, {"size": 0}]
)
def test_moving_bad_parameters(kwargs):
    with pytest.raises(ConfigError):
        MovingTrigger(**kwargs)


# --------------------------------------------------------------------------------------------------
# framed


@pytest.mark.parametrize("polarity, off, on", [(0, 0.0, 0.0), (1, 0.0, 1.0), (2, 1.0, 0.0), (3, 1.0, 1.0)])
def test_framed_patch_only_in_window(polarity, off, on):
    trigger = FramedTrigger(size=0.2, position="bottom-right", polarity=polarity, start=2, length=3)
    x = bg(t=8)
    expected = x
    for t in (2, 3, 4):
        expected = with_patch(expected, t, 8, 8, 2, off, on)
    assert torch.equal(trigger.apply(x), expected)


@pytest.mark.parametrize(
    "start, length, steps, bins",
    [
        (0.5, 0.25, 8, [4, 5]),
        (0.5, 0.25, 4, [2]),  # 0.25 * 4 = 1 bin
        (0.0, 0.25, 16, [0, 1, 2, 3]),
        (0, 0.1, 4, [0]),  # at least one bin
        (0.25, 0.75, 8, [2, 3, 4, 5, 6, 7]),
        (7, 1, 8, [7]),
    ],
)
def test_framed_window_resolution(start, length, steps, bins):
    out = FramedTrigger(size=0.2, position="top-left", polarity=1, start=start, length=length).apply(bg(t=steps))
    assert [t for t in range(steps) if (out[t] != BG).any()] == bins


def test_framed_window_past_the_end_is_an_error():
    with pytest.raises(ConfigError, match="does not fit"):
        FramedTrigger(start=6, length=3).apply(bg(t=8))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"start": -1},
        {"start": 1.0},
        {"start": "0"},
        {"start": True},
        {"length": 0},
        {"length": 0.0},
        {"length": 1.5},
        {"start": 0.6, "length": 0.5},
    ],
)
def test_framed_bad_parameters(kwargs):
    with pytest.raises(ConfigError):
        FramedTrigger(**kwargs)


# --------------------------------------------------------------------------------------------------
# strobing


@pytest.mark.parametrize(
    "kwargs, steps, bins",
    [
        ({"period": 3, "on": 1}, 8, [0, 3, 6]),
        ({"period": 4, "on": 2}, 8, [0, 1, 4, 5]),
        ({"period": 3, "on": 1, "start": 1, "length": 8}, 10, [1, 4, 7]),
        ({"period": 4, "on": 3, "start": 2, "length": 5}, 10, [2, 3, 4, 6]),  # on-bins never leave the window
        ({"period": 2, "on": 1, "start": 0.5, "length": 0.5}, 8, [4, 6]),
    ],
)
def test_strobing_on_bins_exact(kwargs, steps, bins):
    trigger = StrobingTrigger(size=0.2, position="top-left", polarity=3, **kwargs)
    assert trigger.bins(steps) == bins
    x = bg(t=steps)
    expected = x
    for t in bins:
        expected = with_patch(expected, t, 0, 0, 2, 1.0, 1.0)
    assert torch.equal(trigger.apply(x), expected)


@pytest.mark.parametrize("kwargs", [{"period": 1}, {"period": 2.0}, {"on": 0}, {"on": 2, "period": 2}, {"length": 0}])
def test_strobing_bad_parameters(kwargs):
    with pytest.raises(ConfigError):
        StrobingTrigger(**kwargs)


# --------------------------------------------------------------------------------------------------
# flashy


@pytest.mark.parametrize("polarity, off, on", [(0, 0.0, 0.0), (1, 0.0, 1.0), (2, 1.0, 0.0), (3, 1.0, 1.0)])
def test_flashy_whole_frame_in_window(polarity, off, on):
    x = bg(t=6, h=7, w=9)
    out = FlashyTrigger(polarity=polarity, start=1, length=2, size=0.1, position="top-left").apply(x)
    for t in (1, 2):
        assert torch.all(out[t, 0] == off) and torch.all(out[t, 1] == on)
    for t in (0, 3, 4, 5):
        assert torch.equal(out[t], x[t])


def test_flashy_default_window_and_value():
    out = FlashyTrigger(value=4.0).apply(bg(t=16))  # 0.125 * 16 = bins 0, 1
    assert torch.all(out[:2, 1] == 4.0) and torch.all(out[:2, 0] == 0.0) and torch.all(out[2:] == BG)


def test_flashy_single_channel():
    out = FlashyTrigger(polarity=2, start=0, length=1).apply(bg(t=3, p=1))
    assert torch.all(out[0] == 1.0) and torch.all(out[1:] == BG)


@pytest.mark.parametrize("kwargs", [{"start": 0.9, "length": 0.2}, {"length": -1}, {"start": 0.5, "length": "2"}])
def test_flashy_bad_parameters(kwargs):
    with pytest.raises(ConfigError):
        FlashyTrigger(**kwargs)


# --------------------------------------------------------------------------------------------------
# smart

# 12x12 frames, grid 3: 4x4 regions. Region (0, 2) (rows 0-3, cols 8-11) is silent; region (2, 1)
# (rows 8-11, cols 4-7) is fully active: per bin, 10 of its 16 pixels OFF only, 4 both, 2 ON only;
# every other region has 1 ON-only pixel per bin.
LEAST_CELL, MOST_CELL = (0, 8, 4, 12), (8, 4, 12, 8)


def planted(n=30, t=3):
    x = torch.zeros(n, t, 2, 12, 12)
    for r in range(3):
        for c in range(3):
            x[:, :, 1, 4 * r + 1, 4 * c + 2] = 1.0  # one ON pixel per region
    x[:, :, :, 0:4, 8:12] = 0.0  # region (0, 2) silent
    block = torch.zeros(2, 16)
    block[0, :10] = 1.0  # OFF only
    block[:, 10:14] = 1.0  # both
    block[1, 14:] = 1.0  # ON only
    x[:, :, :, 8:12, 4:8] = block.reshape(2, 4, 4)
    return x  # n * t = 90 slices: more than one counting chunk


@pytest.mark.parametrize(
    "region, choice, cell, polarity",
    [
        ("least", "least", LEAST_CELL, 1),  # silent region: codes 1, 2, 3 tie at 0 -> lowest
        ("least", "most", LEAST_CELL, 0),
        ("most", "most", MOST_CELL, 2),  # OFF only is the most used code there
        ("most", "least", MOST_CELL, 0),  # no silent pixel there
    ],
)
def test_smart_picks_the_planted_region_and_polarity(region, choice, cell, polarity):
    fitted = SmartTrigger(statistic="share", size=0.1, region=region, polarity_choice=choice, grid=3).fit(planted())
    assert fitted.cell == cell and fitted.polarity == polarity and fitted.frame_shape == (12, 12)
    assert fitted.origin == (cell[0] + 1, cell[1] + 1)  # side 1 centred in a 4x4 region: offset (4 - 1) // 2
    params = fitted.params()
    assert (params["origin"], params["cell"], params["polarity"]) == (fitted.origin, cell, polarity)


def test_smart_apply_is_fixed_for_train_and_test():
    fitted = SmartTrigger(statistic="share", size=0.2, region="most", polarity_choice="most").fit(planted())  # side 2
    assert fitted.cell == MOST_CELL and fitted.origin == (9, 5) and fitted.polarity == 2
    for x in (bg(t=3, h=12, w=12), torch.zeros(4, 2, 12, 12)):  # "train" and "test" frames
        expected = x
        for t in range(x.shape[0]):
            expected = with_patch(expected, t, 9, 5, 2, 1.0, 0.0)
        assert torch.equal(fitted.apply(x), expected)


def test_smart_fit_is_a_pure_function_of_the_data():
    x = planted()
    keep = x.clone()
    a = SmartTrigger(statistic="share", size=0.1).fit(x)
    assert a == SmartTrigger(statistic="share", size=0.1).fit(x) and torch.equal(x, keep)
    assert SmartTrigger(statistic="share", size=0.1).fit(x[:, :1].reshape(30, 1, 2, 12, 12)) == a  # same statistics


@pytest.mark.parametrize("size", [0.01, 0.05, 0.1, 0.3, 0.34, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("grid", [1, 2, 3, 7, 100])
@pytest.mark.parametrize("region", ["least", "most"])
def test_smart_any_size_fits_its_region(size, grid, region):
    fitted = SmartTrigger(statistic="share", size=size, grid=grid, region=region, walk=1)
    fitted = fitted.fit(binary_frames(n=2, t=2, h=12, w=12))
    side = max(1, int(size * 12))
    top, left, bottom, right = fitted.cell
    assert bottom - top >= side and right - left >= side
    for row, col in fitted.origins(20, 12, 12):
        assert top <= row <= bottom - side and left <= col <= right - side
    out = fitted.apply(bg(t=3, h=12, w=12))
    assert all(((out[t] != BG).sum(0) > 0).sum() == side * side for t in range(3))


def test_smart_size_one_covers_the_frame():
    fitted = SmartTrigger(statistic="share", region="least", size=1.0, polarity_choice="most").fit(planted())
    assert fitted.cell == (0, 0, 12, 12) and fitted.origin == (0, 0) and fitted.polarity == 0
    assert torch.equal(fitted.apply(bg(t=2, h=12, w=12)), torch.zeros(2, 2, 12, 12))


def test_smart_non_square_frames():
    fitted = SmartTrigger(statistic="share", size=0.75, grid=3).fit(binary_frames(n=2, t=2, h=12, w=16))  # side 12
    assert fitted.cell == (0, 0, 12, 16) and fitted.origin == (0, 2)


def test_smart_tiny_size_fine_grid_finds_one_pixel():
    x = torch.ones(5, 2, 2, 12, 12)
    x[:, :, :, 5, 7] = 0.0
    fitted = SmartTrigger(statistic="share", region="least", size=0.01, grid=50).fit(x)  # 12 regions per axis of 1 px
    assert fitted.cell == (5, 7, 6, 8) and fitted.origin == (5, 7) and fitted.polarity == 1


def test_smart_walk_is_seeded_bounded_and_identical():
    fitted = SmartTrigger(statistic="share", size=0.1, region="most", polarity_choice="most", walk=2, seed=5)
    fitted = fitted.fit(planted())
    path = fitted.origins(40, 12, 12)
    assert path[0] == fitted.origin and path == fitted.origins(40, 12, 12)
    assert all(8 <= r <= 11 and 4 <= c <= 7 for r, c in path)
    assert len(set(path)) > 1
    other = SmartTrigger(statistic="share", size=0.1, region="most", walk=2, seed=6).fit(planted())
    assert path != other.origins(40, 12, 12)
    x = bg(t=40, h=12, w=12)
    expected = x
    for t, (r, c) in enumerate(path):
        expected = with_patch(expected, t, r, c, 1, 1.0, 0.0)
    assert torch.equal(fitted.apply(x), expected)


def test_smart_unfitted_or_wrong_frames():
    with pytest.raises(ConfigError, match="not fitted"):
        SmartTrigger().apply(bg())
    fitted = SmartTrigger(size=0.1).fit(planted())
    with pytest.raises(ConfigError, match="fitted on 12x12"):
        fitted.apply(bg(h=16, w=16))
    manual = SmartTrigger(size=0.2, origin=(3, 4), polarity=3)  # a location given by hand, no fit
    assert torch.equal(manual.apply(bg(t=1)), with_patch(bg(t=1), 0, 3, 4, 2, 1.0, 1.0))
    with pytest.raises(ConfigError, match="does not fit"):
        SmartTrigger(size=0.2, origin=(9, 0)).apply(bg())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"region": "middle"},
        {"polarity_choice": "random"},
        {"grid": 0},
        {"grid": 2.5},
        {"walk": -1},
        {"origin": (1,)},
        {"origin": (1, -2)},
        {"cell": (4, 4, 4, 8)},
        {"frame_shape": (12, 12.0)},
    ],
)
def test_smart_bad_parameters(kwargs):
    with pytest.raises(ConfigError):
        SmartTrigger(**kwargs)


# --------------------------------------------------------------------------------------------------
# blended


def test_blended_ratio_one_is_the_pattern_in_every_bin():
    trigger = BlendedTrigger(ratio=1.0, polarity=1, seed=2)
    out = trigger.apply(binary_frames(n=1, t=4, h=16, w=16)[0])
    pattern = torch.from_numpy(trigger.pattern_image(2, 16, 16))
    assert torch.equal(out, pattern.expand(4, 2, 16, 16))
    assert torch.all(out[:, 0] == 0)  # polarity 1: the OFF channel's pattern is empty
    assert 0.4 < (pattern[1] > 0).float().mean() < 0.6  # density 0.5


def test_blended_checkerboard_pattern():
    out = BlendedTrigger(ratio=1.0, pattern="checkerboard", polarity=3).apply(torch.zeros(2, 2, 4, 4))
    board = torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1]])
    assert torch.equal(out, board.expand(2, 2, 4, 4))


def test_blended_binary_dither_semantics():
    ratio = 0.3
    trigger = BlendedTrigger(ratio=ratio, polarity=3, seed=1)
    x = binary_frames(n=1, t=8, h=32, w=32, seed=3)[0]
    out = trigger.apply(x)
    p = torch.from_numpy(trigger.pattern_image(2, 32, 32)).expand_as(x) > 0
    on, was = out > 0, x > 0
    assert torch.all(on[was & p]) and not torch.any(on[~was & ~p])  # agreement is kept exactly
    assert abs(on[~was & p].float().mean().item() - ratio) < 0.05  # pattern shows with probability ratio
    assert abs(on[was & ~p].float().mean().item() - (1 - ratio)) < 0.05  # events survive with 1 - ratio


def test_blended_counts_round_half_up():
    trigger = BlendedTrigger(ratio=0.5, pattern="checkerboard", polarity=1, value=4.0)
    x = torch.zeros(1, 2, 2, 2)
    x[0, 1] = torch.tensor([[5.0, 3.0], [3.0, 5.0]])  # pattern 4 at (0,0), (1,1) of the ON channel
    x[0, 0] = 3.0  # OFF channel: pattern 0 -> 1.5 -> 2
    out = trigger.apply(x)
    assert torch.equal(out[0, 1], torch.tensor([[5.0, 2.0], [2.0, 5.0]]))  # 4.5 -> 5, 1.5 -> 2
    assert torch.all(out[0, 0] == 2.0)


def test_blended_mode_auto_and_explicit():
    x = binary_frames(n=1)[0]
    assert torch.equal(BlendedTrigger(mode="auto").apply(x), BlendedTrigger(mode="binary").apply(x))
    counts = BlendedTrigger(mode="counts", ratio=0.4).apply(x)  # 0.6 -> 1, 0.4 -> 0: rounding keeps x here
    assert torch.equal(counts, x)


def test_blended_seed_fixes_the_pattern():
    x = binary_frames(n=1)[0]
    a = BlendedTrigger(seed=1).apply(x)
    assert torch.equal(a, BlendedTrigger(seed=1).apply(x)) and not torch.equal(a, BlendedTrigger(seed=2).apply(x))


@pytest.mark.parametrize(
    "kwargs",
    [{"ratio": 0}, {"ratio": 1.5}, {"ratio": "0.2"}, {"pattern": "noise"}, {"density": 0}, {"density": 2},
     {"mode": "float"}],
)
def test_blended_bad_parameters(kwargs):
    with pytest.raises(ConfigError):
        BlendedTrigger(**kwargs)
