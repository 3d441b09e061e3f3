"""How visible a trigger is: SSIM per frame, change in event count, L0 of the change."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from skimage.metrics import structural_similarity
from torch.utils.data import Dataset


@dataclass(frozen=True)
class Stealth:
    ssim: float  # mean over samples of the mean SSIM over all (time bin, polarity) frames
    event_change: float  # mean relative change of the total frame mass (events, or active pixels on binary frames)
    l0: float  # mean number of changed frame elements per sample

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def frame_ssim(clean: np.ndarray, triggered: np.ndarray) -> float:
    """Mean SSIM over the 2-D frames of ``[T, P, H, W]`` arrays (window 7, data range of the pair).

    1-D (audio) frames ``[T, P, 1, W]`` have no 2-D frame per time bin: SSIM then runs over the time x
    channel image ``[T, W]`` of each polarity (a spectrogram-like picture; the 7x7 window spans 7 time
    bins and 7 channels), averaged over polarities.
    """
    t, p, h, w = clean.shape
    if h == 1:
        a, b = clean[:, :, 0, :].transpose(0, 2, 1), triggered[:, :, 0, :].transpose(0, 2, 1)  # [T, W, P]
        h, w = t, w
    else:
        a = clean.reshape(t * p, h, w).transpose(1, 2, 0)
        b = triggered.reshape(t * p, h, w).transpose(1, 2, 0)
    data_range = max(float(a.max()), float(b.max()), 1.0)
    win = min(7, h, w)
    win -= 1 - win % 2  # odd, no larger than the image
    return float(structural_similarity(a, b, data_range=data_range, channel_axis=2, win_size=win))


def measure_stealth(pairs: Dataset, limit: int | None = 512) -> Stealth:
    """``pairs[i]`` yields ``(clean_frames, triggered_frames)`` tensors; uses the first ``limit`` samples."""
    n = len(pairs) if limit is None else min(limit, len(pairs))
    ssims, changes, l0s = [], [], []
    for i in range(n):
        clean, triggered = (x.numpy() for x in pairs[i])
        ssims.append(frame_ssim(clean, triggered))
        mass = float(clean.sum())
        changes.append((float(triggered.sum()) - mass) / max(mass, 1.0))
        l0s.append(float((clean != triggered).sum()))
    return Stealth(ssim=float(np.mean(ssims)), event_change=float(np.mean(changes)), l0=float(np.mean(l0s)))


class TriggerPairs(Dataset):
    """``(clean, triggered)`` frame pairs from a frame dataset and a trigger, lazily."""

    def __init__(self, base: Dataset, trigger) -> None:
        self.base, self.trigger = base, trigger

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        frames, _ = self.base[index]
        return frames, self.trigger.apply(frames)
