import pytest
import torch

from snnsec.attacks import TRIGGERS
from snnsec.attacks.static import StaticTrigger
from snnsec.errors import ConfigError, UnknownNameError

T, P, H, W = 4, 2, 20, 20


def frames(fill=0.5):
    return torch.full((T, P, H, W), fill)


@pytest.mark.parametrize(
    "position, origin",
    [("top-left", (0, 0)), ("top-right", (0, 16)), ("bottom-left", (16, 0)), ("bottom-right", (16, 16)), ("middle", (8, 8))],
)
def test_static_geometry(position, origin):
    out = StaticTrigger(size=0.2, position=position, polarity=3).apply(frames())
    changed = (out != 0.5).nonzero()
    rows, cols = changed[:, 2], changed[:, 3]
    assert (rows.min().item(), cols.min().item()) == origin
    assert rows.max() - rows.min() == 3 and cols.max() - cols.min() == 3  # 0.2 * 20 = 4 px
    assert len(changed) == T * P * 16  # every time bin, both channels


@pytest.mark.parametrize("polarity, off, on", [(0, 0.0, 0.0), (1, 0.0, 1.0), (2, 1.0, 0.0), (3, 1.0, 1.0)])
def test_polarity_codes(polarity, off, on):
    out = StaticTrigger(size=0.1, position="top-left", polarity=polarity).apply(frames())
    assert torch.all(out[:, 0, :2, :2] == off) and torch.all(out[:, 1, :2, :2] == on)
    assert torch.all(out[:, :, 2:, :] == 0.5)


def test_value_and_batch_axes_and_purity():
    x = frames().expand(3, T, P, H, W).clone()
    out = StaticTrigger(size=0.1, position="top-left", polarity=1, value=7.0).apply(x)
    assert out.shape == x.shape and torch.all(out[:, :, 1, :2, :2] == 7.0)
    assert torch.all(x == 0.5)  # input untouched


def test_random_position_is_fixed_by_seed():
    a = StaticTrigger(position="random", seed=3).apply(frames())
    b = StaticTrigger(position="random", seed=3).apply(frames())
    c = StaticTrigger(position="random", seed=4).apply(frames())
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("kwargs", [{"size": 0}, {"size": 1.5}, {"position": "left"}, {"polarity": 4}, {"value": 0}])
def test_bad_parameters(kwargs):
    with pytest.raises(ConfigError):
        StaticTrigger(**kwargs)


def test_trigger_larger_than_frame():
    with pytest.raises(ConfigError, match="does not fit"):
        StaticTrigger(size=1.0).apply(torch.zeros(T, P, 10, 20))


def test_registry_lists_names_on_unknown():
    assert "static" in TRIGGERS.names()
    with pytest.raises(UnknownNameError, match="static"):
        TRIGGERS.get("nope")
