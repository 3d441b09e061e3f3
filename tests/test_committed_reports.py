"""The committed reports are exactly what `snnsec report` builds: the reduced benches (reports/bench-*, with
their leaderboards) from their committed databases, the older folders from their records.jsonl; the bench
folders pass `snnsec verify`."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from snnsec.leaderboard import write_leaderboard
from snnsec.report import write_report
from snnsec.results_db import DB_NAME
from snnsec.verify import verify_folder

REPORTS = Path(__file__).resolve().parent.parent / "reports"
BENCH_FOLDERS = sorted(p for p in REPORTS.glob("bench-*") if (p / DB_NAME).exists())
RECORD_FOLDERS = sorted(p.parent for p in REPORTS.glob("*/records.jsonl") if p.parent not in BENCH_FOLDERS)


def test_the_reduced_benches_are_committed() -> None:
    assert {p.name for p in BENCH_FOLDERS} >= {"bench-sneaky-spikes", "bench-evasion"}


@pytest.mark.parametrize("folder", BENCH_FOLDERS, ids=lambda p: p.name)
def test_report_regenerates_the_committed_tables_byte_for_byte(folder: Path, tmp_path: Path) -> None:
    copy = tmp_path / folder.name
    copy.mkdir()
    shutil.copy2(folder / DB_NAME, copy / DB_NAME)  # the database alone: no records.jsonl to catch up from
    written = write_report(copy) + [write_leaderboard(copy)]
    assert written
    for path in written:
        committed = folder / path.name
        assert committed.exists(), f"{path.name} is generated but not committed in {folder}"
        assert path.read_bytes() == committed.read_bytes(), f"{folder / path.name} differs from its regeneration"


@pytest.mark.parametrize("folder", BENCH_FOLDERS, ids=lambda p: p.name)
def test_committed_bench_folder_verifies(folder: Path) -> None:
    found = verify_folder(folder, strict=True)
    assert found.ok, found.problems
    assert found.runs >= 9 and found.artifacts >= found.runs


@pytest.mark.parametrize("folder", RECORD_FOLDERS, ids=lambda p: p.name)
def test_report_regenerates_the_committed_tables_from_records(folder: Path, tmp_path: Path) -> None:
    copy = tmp_path / folder.name
    copy.mkdir()
    shutil.copy2(folder / "records.jsonl", copy / "records.jsonl")
    written = write_report(copy)
    assert any(p.name.startswith("summary_") for p in written)
    for path in written:
        committed = folder / path.name
        assert committed.exists(), f"{path.name} is generated but not committed in {folder}"
        assert path.read_bytes() == committed.read_bytes(), f"{folder / path.name} differs from its regeneration"


def test_an_attack_run_is_found_in_a_folder_holding_only_its_database(tmp_path: Path) -> None:
    from snnsec.defending import find_attack_record
    from snnsec.results_db import ResultsDB

    shutil.copy2(REPORTS / "bench-sneaky-spikes" / DB_NAME, tmp_path / DB_NAME)
    attack = next(r for r in ResultsDB.of(tmp_path).records() if r["kind"] == "attack")
    assert find_attack_record(attack["run_id"][:8], tmp_path)["run_id"] == attack["run_id"]
