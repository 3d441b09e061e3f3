"""``digits-dvs-third``: every third digits-dvs sample of a split (all ten classes), for tests that train a
tiny model end to end in seconds. :func:`registered` puts it in the dataset registry for a block."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from snnsec.datasets import DATASETS
from snnsec.datasets.digits_dvs import SPEC as DIGITS_SPEC
from snnsec.datasets.digits_dvs import DigitsDvs

THIRD = "digits-dvs-third"


class EveryThird:
    """digits-dvs with every third sample of a split."""

    info = replace(DIGITS_SPEC.info, name=THIRD)

    def __init__(self, split: str, data_dir: Path | None = None) -> None:
        self.base = DigitsDvs(split)
        self.rows = np.arange(0, len(self.base), 3)
        self.labels = self.base.labels[self.rows]
        self.cache_key = f"{self.base.cache_key}-every3"

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int):
        return self.base[int(self.rows[index])]


@contextmanager
def registered() -> Iterator[pytest.MonkeyPatch]:
    """Within the block, ``digits-dvs-third`` is a dataset (default T=4) and progress bars are off."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(DATASETS._entries, THIRD, replace(DIGITS_SPEC, info=EveryThird.info, load=EveryThird,
                                                         default_frames=4))
        patch.setenv("SNNSEC_PROGRESS", "0")
        yield patch
