"""Shared fixtures: the embedded dataset framed once per test session, golden reference files."""
import os
from functools import partial
from pathlib import Path

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER") and "OMP_NUM_THREADS" not in os.environ:
    # Parallel test workers (pytest -n 2): one intra-op thread each, so two workers on two cores do not
    # oversubscribe OpenMP (its barriers stall many times over when another process holds a core).
    torch.set_num_threads(1)

from snnsec.attacks.poisoning import FrameDataset
from snnsec.datasets import DATASETS
from snnsec.framing import FramingConfig, encode, frame_dataset


@pytest.fixture(scope="session")
def digits_frames(tmp_path_factory):
    """``(train, test)`` FrameDatasets of digits-dvs at T=5 (short, for fast training tests), binary encoding."""
    cache = tmp_path_factory.mktemp("frame-cache")
    spec = DATASETS.get("digits-dvs")
    framing = FramingConfig(frames=5)
    sets = []
    for split in ("train", "test"):
        arrays = frame_dataset(spec.load(split, None), split, framing, cache)
        sets.append(FrameDataset(arrays.counts, arrays.labels, partial(encode, encoding="binary")))
    return tuple(sets)


@pytest.fixture
def one_thread():
    """One intra-op thread: many small ops run faster so, and a shared CPU does not stall OpenMP barriers."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


#: Golden outputs of the reference code: ``../shared/golden`` beside the checkout, or ``$SNNSEC_GOLDEN_DIR``.
GOLDEN_DIR = Path(os.environ.get("SNNSEC_GOLDEN_DIR", Path(__file__).resolve().parents[2] / "shared" / "golden"))


def in_ci() -> bool:
    """``CI=true`` (GitHub Actions, GitLab CI and most runners set it): missing inputs fail instead of skipping."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


@pytest.fixture
def golden():
    """``golden(name)`` -> the path of golden file ``name``. A missing file skips the test, except under CI
    (``CI=true``), where it fails it: a CI run must not pass by skipping the faithfulness checks."""

    def find(name: str) -> Path:
        path = GOLDEN_DIR / name
        if not path.is_file():
            message = f"golden reference file {path} not found (provide ../shared/golden or set SNNSEC_GOLDEN_DIR)"
            if in_ci():
                pytest.fail(f"{message}; CI=true requires it", pytrace=False)
            pytest.skip(message)
        return path

    return find


#: Files whose tests take the longest (minutes of training, in total), sent to the xdist workers first: with
#: ``--dist loadfile`` a file runs whole on one worker, so a long one started last would finish alone.
LONGEST_FIRST = ("test_main_job.py", "test_defenses.py", "test_evade.py", "test_zoo_learns.py", "test_cli.py",
                 "test_attack_matrix.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order the collected tests by :data:`LONGEST_FIRST` (then as collected); each file's order is kept."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
