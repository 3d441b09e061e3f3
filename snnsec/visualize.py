"""Pictures of a trigger: clean vs triggered frames over time, as a PNG grid and an animated GIF.

Colours (same in both outputs): OFF events (channel 0) blue, ON events (channel 1) orange, both at
once white (the two colours add up), no event black; a single-polarity sensor's events are white.
Brightness shows the count on count frames: any event is at least 40% bright, full at ``vmax``
(by default the 99th percentile of the non-zero values of the clean and triggered frames together,
1 on binary frames). Plots use matplotlib's Agg canvas directly (no pyplot, no display needed).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from PIL import Image, ImageDraw, ImageFont

from snnsec.errors import ConfigError

OFF_COLOUR = (0, 120, 255)
ON_COLOUR = (255, 140, 0)
SINGLE_COLOUR = (255, 255, 255)
MIN_BRIGHTNESS = 0.4

# Grid geometry (inches, dpi) and GIF geometry (pixels).
GRID_DPI = 100
GRID_MAX_WIDTH_IN = 20.0
GRID_CELL_IN = 1.2
GRID_LABEL_IN = 1.1  # left margin for the row names
GRID_HEADER_IN = 0.6  # title
GRID_FOOTER_IN = 0.45  # legend
GIF_MIN_SIDE = 192  # frames are upscaled (nearest neighbour) until their shorter side is at least this
GIF_HEADER = 16
GIF_GAP = 4


def frames_to_rgb(frames, vmax: float | None = None) -> np.ndarray:
    """Frames ``[T, P, H, W]`` (tensor or array, P = 1 or 2) -> uint8 RGB images ``[T, H, W, 3]``."""
    x = _as_array(frames)
    if vmax is None:
        vmax = _default_vmax(x)

    def brightness(channel: np.ndarray) -> np.ndarray:
        level = MIN_BRIGHTNESS + (1 - MIN_BRIGHTNESS) * np.clip(channel / vmax, 0, 1)
        return np.where(channel > 0, level, 0.0)[..., None]

    if x.shape[1] == 1:
        rgb = brightness(x[:, 0]) * np.array(SINGLE_COLOUR, dtype=np.float64)
    else:
        off, on = np.array(OFF_COLOUR, np.float64), np.array(ON_COLOUR, np.float64)
        rgb = brightness(x[:, 0]) * off + brightness(x[:, 1]) * on
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def grid_size_px(time_bins: int, rows: int, aspect: float = 1.0, dpi: int = GRID_DPI) -> tuple[int, int]:
    """(width, height) in pixels of the PNG :func:`save_trigger_grid` writes with ``time_bins`` columns
    for frames with ``aspect`` = H / W."""
    width_in, height_in = _grid_figsize(time_bins, rows, aspect)
    return round(width_in * dpi), round(height_in * dpi)


def save_trigger_grid(clean, triggered, path_png: str | Path, title: str = "", difference: bool = True,
                      legend: bool = True, vmax: float | None = None, dpi: int = GRID_DPI,
                      max_columns: int = 32) -> Path:
    """A PNG grid: rows "clean", "triggered" (and "difference" = |triggered - clean| per channel, so
    added and removed events both show, in their polarity's colour), one column per time bin.
    More than ``max_columns`` bins: that many evenly spaced bins are shown (titles give their index).
    Returns the path written."""
    a, b = _pair(clean, triggered)
    shown = np.unique(np.linspace(0, a.shape[0] - 1, min(a.shape[0], max_columns)).round().astype(int))
    if vmax is None:
        vmax = _default_vmax(np.concatenate([a, b]))
    rows = [("clean", frames_to_rgb(a, vmax)), ("triggered", frames_to_rgb(b, vmax))]
    if difference:
        rows.append(("difference", frames_to_rgb(np.abs(b - a), vmax)))
    time_bins = len(shown)
    width_in, height_in = _grid_figsize(time_bins, len(rows), a.shape[2] / a.shape[3])
    fig = Figure(figsize=(width_in, height_in), dpi=dpi)
    left, right = GRID_LABEL_IN / width_in, 1 - 0.1 / width_in
    bottom, top = (GRID_FOOTER_IN if legend else 0.15) / height_in, 1 - GRID_HEADER_IN / height_in
    axes = fig.subplots(len(rows), time_bins, squeeze=False,
                        gridspec_kw={"left": left, "right": right, "bottom": bottom, "top": top,
                                     "wspace": 0.08, "hspace": 0.12})
    label_size = 10 if time_bins <= 24 else 8
    for r, (name, images) in enumerate(rows):
        for t in range(time_bins):
            ax = axes[r, t]
            ax.imshow(images[shown[t]], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_edgecolor("#999999")
                spine.set_linewidth(0.6)
            if r == 0:
                ax.set_title(f"t={shown[t]}", fontsize=label_size - 1, pad=3)
        axes[r, 0].set_ylabel(name, fontsize=label_size, rotation=0, ha="right", va="center", labelpad=6)
    fig.suptitle(title or "trigger", fontsize=12, y=1 - 0.12 / height_in, va="top")
    if legend:
        handles = [Patch(facecolor=np.array(c) / 255, edgecolor="#999999", label=name) for name, c in
                   (("OFF", OFF_COLOUR), ("ON", ON_COLOUR), ("ON + OFF", (255, 255, 255)), ("no event", (0, 0, 0)))]
        fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=9, frameon=False,
                   bbox_to_anchor=(0.5, 0.02 / height_in))
    path = Path(path_png)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=dpi, facecolor="white")
    return path


def gif_scale(height: int, width: int) -> int:
    """Integer nearest-neighbour upscaling factor so the shorter side is at least ``GIF_MIN_SIDE``."""
    return max(1, math.ceil(GIF_MIN_SIDE / min(height, width)))


def save_trigger_gif(clean, triggered, path_gif: str | Path, fps: float = 4.0, vmax: float | None = None) -> Path:
    """An animated GIF, one frame per time bin: clean on the left, triggered on the right, upscaled
    (nearest neighbour) by :func:`gif_scale`, with a caption strip. Loops forever. Returns the path."""
    if not fps > 0:
        raise ConfigError(f"fps must be > 0, got {fps}")
    a, b = _pair(clean, triggered)
    if vmax is None:
        vmax = _default_vmax(np.concatenate([a, b]))
    left, right = frames_to_rgb(a, vmax), frames_to_rgb(b, vmax)
    time_bins, height, width = left.shape[:3]
    s = gif_scale(height, width)
    font = ImageFont.load_default()
    images = []
    for t in range(time_bins):
        canvas = np.full((GIF_HEADER + height * s, 2 * width * s + GIF_GAP, 3), 64, dtype=np.uint8)
        canvas[:GIF_HEADER] = 255
        canvas[GIF_HEADER:, : width * s] = _upscale(left[t], s)
        canvas[GIF_HEADER:, width * s + GIF_GAP:] = _upscale(right[t], s)
        image = Image.fromarray(canvas, "RGB")
        draw = ImageDraw.Draw(image)
        draw.text((2, 2), "clean", fill=(0, 0, 0), font=font)
        draw.text((width * s + GIF_GAP + 2, 2), f"triggered  t={t}/{time_bins}", fill=(0, 0, 0), font=font)
        images.append(image)
    path = Path(path_gif)
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps),
                   loop=0, optimize=False, disposal=1)
    return path


def save_trigger_views(clean, triggered, out_dir: str | Path, name: str = "trigger", title: str = "",
                       fps: float = 4.0) -> dict[str, Path]:
    """Both pictures of one sample: ``<out_dir>/<name>.png`` and ``<out_dir>/<name>.gif``. 1-D (audio) frames
    ``[T, P, 1, W]`` are shown as one time x channel image (rows: time bins, top first; columns: channels)."""
    out = Path(out_dir)
    if _as_array(clean).shape[2] == 1:
        clean, triggered = (np.transpose(_as_array(x), (2, 1, 0, 3)) for x in (clean, triggered))  # [1, P, T, W]
    return {"png": save_trigger_grid(clean, triggered, out / f"{name}.png", title),
            "gif": save_trigger_gif(clean, triggered, out / f"{name}.gif", fps)}


# --------------------------------------------------------------------------------------------------


def _as_array(frames) -> np.ndarray:
    x = frames.detach().cpu().numpy() if hasattr(frames, "detach") else np.asarray(frames)
    if x.ndim != 4 or x.shape[1] not in (1, 2):
        raise ConfigError(f"expected frames [T, P, H, W] with P = 1 or 2, got shape {tuple(x.shape)}")
    return x.astype(np.float64)


def _pair(clean, triggered) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_array(clean), _as_array(triggered)
    if a.shape != b.shape:
        raise ConfigError(f"clean and triggered frames differ in shape: {a.shape} vs {b.shape}")
    return a, b


def _default_vmax(x: np.ndarray) -> float:
    nonzero = np.abs(x[x != 0])
    return float(max(1.0, np.percentile(nonzero, 99))) if nonzero.size else 1.0


def _grid_figsize(time_bins: int, rows: int, aspect: float) -> tuple[float, float]:
    cell = min(GRID_CELL_IN, (GRID_MAX_WIDTH_IN - GRID_LABEL_IN - 0.1) / (time_bins * 1.08))
    width = GRID_LABEL_IN + time_bins * cell * 1.08 + 0.1
    height = GRID_HEADER_IN + rows * cell * aspect * 1.15 + GRID_FOOTER_IN
    return width, height


def _upscale(image: np.ndarray, s: int) -> np.ndarray:
    return np.repeat(np.repeat(image, s, axis=0), s, axis=1)
