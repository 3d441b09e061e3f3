"""``snnsec verify DIR``: check a results folder against its digests.

- the database file (``PRAGMA integrity_check``) and every row against its own digest;
- ``records.jsonl``: every run in it is in the database with the same content;
- every artifact a row names (models, poisoned indices): the file's SHA-256 against the digest the row
  stored when the run was recorded. Files inside the folder must be there; files outside it (a model cache
  on the machine that ran it) are checked where they exist and otherwise counted as not checkable
  (a problem with ``strict``);
- the content store (``DIR/artifacts``): each file's content is the digest its name says, and its card agrees.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from snnsec import integrity
from snnsec.artifact_store import STORE, check_store, locate
from snnsec.errors import SnnsecError
from snnsec.results_db import ResultsDB, as_record, canonical


@dataclass
class Verification:
    """What ``verify`` found: problems (each one line), and counts."""

    problems: list[str] = field(default_factory=list)
    runs: int = 0
    artifacts: int = 0
    outside: list[str] = field(default_factory=list)  # artifacts outside the folder that could not be checked

    @property
    def ok(self) -> bool:
        return not self.problems


def inside(recorded: str, folder: Path) -> bool:
    """Whether an artifact belongs to the results folder (its content store or run files)."""
    path = Path(recorded)
    if path.parent.name in (STORE, "runs"):
        return True
    try:
        path.absolute().relative_to(folder.absolute())
        return True
    except ValueError:
        return False


def verify_folder(folder: Path, strict: bool = False) -> Verification:
    """Check ``folder`` (see the module docstring)."""
    folder = Path(folder)
    found = Verification()
    db = ResultsDB.of(folder)
    records = folder / "records.jsonl"
    if not db.path.exists():
        hint = f"; run `snnsec db import {folder}`" if records.exists() else ""
        raise SnnsecError(f"{folder} has no results database ({db.path.name}){hint}")
    try:
        found.runs = db.check()
        stored = {r["run_id"]: r for r in db.records()}
    except SnnsecError as err:  # a damaged file or row: nothing else can be trusted
        found.problems.append(str(err))
        return found
    if records.exists():
        _check_jsonl(found, records, stored, folder)
    for run_id in sorted(stored):
        for name, entry in (db.artifacts(run_id) or {}).items():
            _check_artifact(found, folder, run_id, name, entry, strict)
    found.problems.extend(check_store(folder))
    return found


def _check_jsonl(found: Verification, records: Path, stored: dict[str, dict], folder: Path) -> None:
    """Every line of ``records`` is a run record the database holds as written (of a run recorded more than
    once, one of its lines); every run of the database has a line (the file is the log it was built from)."""
    lines: dict[str, list[tuple[int, dict]]] = {}
    for number, line in enumerate(records.read_bytes().split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            rec = as_record(json.loads(line))
        except ValueError as err:  # not JSON, or not a run record
            why = " ".join(str(err).split())[:160]
            found.problems.append(f"{records} line {number}: "
                                  f"{why if why.startswith('not a run record') else f'not a run record ({why})'}")
            continue
        lines.setdefault(rec["run_id"], []).append((number, rec))
    for run_id, written in lines.items():
        mine = stored.get(run_id)
        if mine is None:
            found.problems.append(f"{records} line {written[0][0]}: run {run_id} is not in the database "
                                  f"(run `snnsec db import {folder}`)")
        elif not any(canonical(rec) == canonical(mine) for _, rec in written):
            found.problems.append(f"{records} line {written[-1][0]}: run {run_id} differs from the database's record")
    for run_id in sorted(set(stored) - set(lines)):
        found.problems.append(f"{records}: run {run_id} of the database has no line (the file lost it)")


def _check_artifact(found: Verification, folder: Path, run_id: str, name: str, entry: dict, strict: bool) -> None:
    recorded, digest = entry["path"], entry["sha256"]
    path = locate(recorded, folder)
    what = f"run {run_id} {name.replace('_', ' ')} ({recorded})"
    if path is None:
        if inside(recorded, folder) or strict:
            found.problems.append(f"{what} is missing")
        else:
            found.outside.append(what)
        return
    found.artifacts += 1
    if digest is None:
        found.problems.append(f"{what} has no recorded digest (the file was missing when the run was recorded)")
        return
    actual = integrity.sha256_file(path)
    if actual != digest:
        found.problems.append(f"{what}: sha256 {actual[:12]}... but the run recorded {digest[:12]}...")
