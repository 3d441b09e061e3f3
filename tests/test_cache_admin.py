"""`snnsec cache`: the cache's files by category, and --prune deletes only what no run reads again."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from snnsec.cache_admin import survey
from snnsec.cli import cli


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _cache(root: Path) -> dict[str, list[Path]]:
    frames, models = root / "frames" / "digits-dvs", root / "models"
    frames.mkdir(parents=True)
    models.mkdir()
    files = {
        "kept": [frames / "train-aaaa.frames.h5", frames / "train-aaaa.frames.h5.sha256", frames / "train-aaaa.json",
                 frames / ".snnsec.train-aaaa.lock", models / "m1.safetensors", models / "m1.safetensors.sha256",
                 models / "m1.json", models / "m2.partial.pt", models / "m2.partial.pt.sha256",
                 models / ".snnsec.m1.lock", models / f"m3.safetensors.tmp{os.getpid()}"],
        "pruned": [frames / "train-bbbb.npy", frames / "train-bbbb.labels.npy", frames / "train-bbbb.npy.sha256",
                   frames / "train-bbbb.json", frames / "test-cccc.json",  # a sidecar left without its entry
                   models / "m4.safetensors.damaged-20260101T000000Z",
                   frames / "train-aaaa.frames.h5.damaged-20260101T000000Z",
                   models / f"m5.safetensors.tmp{_dead_pid()}"],
    }
    for path in files["kept"] + files["pruned"]:
        path.write_bytes(b"x" * 100)
    return files


def test_survey_sorts_every_file(tmp_path):
    files = _cache(tmp_path)
    found = survey(tmp_path)
    assert sorted(found.prunable) == sorted(files["pruned"])
    assert sum(len(v) for v in found.files.values()) == len(files["kept"]) + len(files["pruned"])
    assert len(found.files["stale frames"]) == 5 and len(found.files["being written"]) == 1


def test_cli_lists_then_prunes_only_the_prunable(tmp_path):
    files = _cache(tmp_path)
    listed = CliRunner().invoke(cli, ["cache", "--cache-dir", str(tmp_path)])
    assert listed.exit_code == 0 and "8 prunable file(s)" in listed.output, listed.output
    assert all(p.exists() for p in files["kept"] + files["pruned"])  # listing deletes nothing
    pruned = CliRunner().invoke(cli, ["cache", "--cache-dir", str(tmp_path), "--prune"])
    assert pruned.exit_code == 0 and "pruned 8 file(s)" in pruned.output, pruned.output
    assert all(p.exists() for p in files["kept"]) and not any(p.exists() for p in files["pruned"])
    assert survey(tmp_path).prunable == []


def test_a_missing_cache_is_one_line(tmp_path):
    result = CliRunner().invoke(cli, ["cache", "--cache-dir", str(tmp_path / "none")])
    assert result.exit_code != 0 and result.output.count("\n") == 1 and "no cache at" in result.output
