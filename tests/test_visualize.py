import numpy as np
import pytest
import torch
from PIL import Image

from snnsec.errors import ConfigError
from snnsec.visualize import (
    GIF_GAP,
    GIF_HEADER,
    GIF_MIN_SIDE,
    OFF_COLOUR,
    ON_COLOUR,
    frames_to_rgb,
    gif_scale,
    grid_size_px,
    save_trigger_gif,
    save_trigger_grid,
    save_trigger_views,
)

T, P, H, W = 4, 2, 12, 12
WHITE = (255, 255, 255)


def pair(channel=1):
    """Clean frames empty; triggered frames with a 4x4 patch on ``channel`` in every bin."""
    clean = torch.zeros(T, P, H, W)
    triggered = clean.clone()
    triggered[:, channel, 2:6, 2:6] = 1
    return clean, triggered


def colour_count(image: Image.Image, colour, tol=0) -> int:
    rgb = np.asarray(image.convert("RGB")).astype(int)
    return int((np.abs(rgb - np.array(colour)).max(axis=-1) <= tol).sum())


def test_frames_to_rgb_encodes_polarity():
    x = torch.zeros(1, 2, 1, 4)
    x[0, 0, 0, 1] = 1  # OFF
    x[0, 1, 0, 2] = 1  # ON
    x[0, :, 0, 3] = 1  # both
    rgb = frames_to_rgb(x)
    assert rgb.shape == (1, 1, 4, 3) and rgb.dtype == np.uint8
    assert [tuple(c) for c in rgb[0, 0]] == [(0, 0, 0), OFF_COLOUR, ON_COLOUR, WHITE]


def test_counts_brightness_and_single_polarity():
    counts = np.zeros((1, 1, 1, 3))
    counts[0, 0, 0] = (0, 1, 10)
    rgb = frames_to_rgb(counts, vmax=10)
    assert tuple(rgb[0, 0, 0]) == (0, 0, 0) and tuple(rgb[0, 0, 2]) == WHITE
    assert 0 < rgb[0, 0, 1, 0] < 255  # dimmer for fewer events, but visible
    assert rgb[0, 0, 1, 0] >= 0.4 * 255


@pytest.mark.parametrize("difference", [True, False])
def test_grid_png_is_written_with_expected_size(tmp_path, difference):
    path = save_trigger_grid(*pair(), tmp_path / "sub" / "grid.png", "static ON", difference=difference)
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == grid_size_px(T, 3 if difference else 2)
    assert grid_size_px(16, 3)[0] > grid_size_px(4, 3)[0]
    assert grid_size_px(32, 3)[0] <= 2000  # width capped for long sequences


def test_long_sequences_show_evenly_spaced_bins(tmp_path):
    clean = torch.zeros(100, P, 8, 8)
    path = save_trigger_grid(clean, clean, tmp_path / "long.png", max_columns=10, legend=False)
    with Image.open(path) as image:
        assert image.size == grid_size_px(10, 3)


@pytest.mark.parametrize("channel, shown, hidden", [(1, ON_COLOUR, OFF_COLOUR), (0, OFF_COLOUR, ON_COLOUR)])
def test_grid_colours_encode_polarity(tmp_path, channel, shown, hidden):
    path = save_trigger_grid(*pair(channel), tmp_path / "grid.png", "t", legend=False)
    with Image.open(path) as image:
        assert colour_count(image, shown) > 100  # the patch, in the triggered and difference rows
        assert colour_count(image, hidden, tol=40) == 0
        assert colour_count(image, WHITE) > 0  # background


def test_gif_has_one_frame_per_time_bin(tmp_path):
    clean, triggered = pair()
    path = save_trigger_gif(clean, triggered, tmp_path / "anim.gif", fps=5)
    s = gif_scale(H, W)
    assert s * min(H, W) >= GIF_MIN_SIDE
    with Image.open(path) as image:
        assert image.format == "GIF" and image.n_frames == T and image.info["duration"] == 200
        assert image.size == (2 * W * s + GIF_GAP, H * s + GIF_HEADER)
        for t in range(T):
            image.seek(t)
            rgb = np.asarray(image.convert("RGB"))
            left = rgb[GIF_HEADER + 3 * s, 3 * s]  # inside the patch, clean panel
            right = rgb[GIF_HEADER + 3 * s, W * s + GIF_GAP + 3 * s]  # same pixel, triggered panel
            assert tuple(left) == (0, 0, 0) and tuple(right) == ON_COLOUR


def test_views_and_bad_input(tmp_path):
    paths = save_trigger_views(*pair(), tmp_path, "static", "title")
    assert paths["png"].exists() and paths["gif"].exists()
    with pytest.raises(ConfigError, match="shape"):
        save_trigger_grid(torch.zeros(T, P, H, W), torch.zeros(T, P, H, W + 1), tmp_path / "x.png")
    with pytest.raises(ConfigError, match="T, P, H, W"):
        save_trigger_gif(torch.zeros(P, H, W), torch.zeros(P, H, W), tmp_path / "x.gif")
    with pytest.raises(ConfigError, match="fps"):
        save_trigger_gif(*pair(), tmp_path / "x.gif", fps=0)
