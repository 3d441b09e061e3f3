"""``snnsec cache``: what the frame and model cache holds, and pruning what no run will read again.

Prunable: frame entries of an older cache format (``<split>-<key>.npy`` memmaps of framing version 1, or any
sidecar left without its ``.frames.h5``), files moved aside as damaged (``*.damaged-<UTC time>``) and temporary
files of processes that no longer run. Never pruned: current frame entries, trained models and their cards,
resume checkpoints (``*.partial.pt``: an interrupted run resumes from them), files being written by a running
process, and lock files (``.snnsec.*``: deleting a lock another process waits on would let two processes in).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from snnsec import integrity
from snnsec.framing import CACHE_SUFFIX

#: Categories in the order they are listed: what is kept, then what ``prune`` deletes.
KEPT = ("frames", "models", "resume checkpoints", "being written", "locks")
PRUNABLE = ("stale frames", "damaged", "temporary")


@dataclass
class CacheSurvey:
    """Every file of a cache, by category."""

    root: Path
    files: dict[str, list[Path]] = field(default_factory=lambda: {c: [] for c in (*KEPT, *PRUNABLE)})

    def size(self, category: str) -> int:
        return sum(p.stat().st_size for p in self.files[category] if p.exists())

    @property
    def prunable(self) -> list[Path]:
        return [p for c in PRUNABLE for p in self.files[c]]


def survey(root: Path) -> CacheSurvey:
    """Sort the files under ``root`` (a cache: ``frames/<dataset>/``, ``models/``) into categories."""
    found = CacheSurvey(Path(root))
    if not found.root.is_dir():
        return found
    current_frames = {p.name[:-len(CACHE_SUFFIX)] for p in found.root.glob(f"frames/*/*{CACHE_SUFFIX}")}
    for path in sorted(p for p in found.root.rglob("*") if p.is_file()):
        found.files[_category(path, found.root, current_frames)].append(path)
    return found


def _category(path: Path, root: Path, current_frames: set[str]) -> str:
    name = path.name
    if ".damaged-" in name:
        return "damaged"
    orphaned = integrity.orphaned_temp(path)
    if orphaned is not None:
        return "temporary" if orphaned else "being written"
    if name.startswith(".snnsec"):
        return "locks"
    if ".partial." in name:
        return "resume checkpoints"
    if path.parent.parent == root / "frames":
        return "frames" if name.split(".", 1)[0] in current_frames else "stale frames"
    return "models"


def prune(found: CacheSurvey) -> int:
    """Delete the prunable files of ``found``; returns the bytes freed."""
    freed = 0
    for path in found.prunable:
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:  # removed meanwhile (another prune, a finishing writer)
            continue
        freed += size
    return freed
