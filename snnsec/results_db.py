"""The results database: one row per run in ``<out>/results.sqlite`` (stdlib ``sqlite3``), each row checked
against its digest when read.

- **Concurrency.** WAL mode (readers never block the writer) and a busy timeout, so concurrent writers wait
  for each other instead of failing; every write is one ``BEGIN IMMEDIATE`` transaction.
- **Durability.** ``synchronous=FULL``: each commit is fsynced, as :func:`snnsec.records.append_record`
  fsyncs its line. A run takes minutes and an fsync milliseconds, and NORMAL may lose the last commits on a
  power cut (not on a kill), which a source of truth should not.
- **One row per run id.** A run id already present with the same content is left as it is; with other
  content the stored row is kept (reported in one line) unless the caller passes ``replace=True``, which
  updates the row in place (it keeps its position). ``append_record`` and :meth:`ResultsDB.import_jsonl`
  replace: as :func:`~snnsec.records.load_records`, the latest record of a run id wins.
- **Integrity.** ``digest`` is the SHA-256 of the canonical JSON (``sort_keys``, the format of a
  ``records.jsonl`` line) of the whole row: the record, its artifacts' digests and its insertion time. It
  is checked on every read; a row that fails it, or a damaged file, raises a one-line
  :class:`~snnsec.integrity.DamagedFileError` that names the file and what to do; nothing damaged is used.
- **Repair.** ``append_record`` notes how long ``records.jsonl`` was when the database last took it in; if
  the file has changed since (a kill between the line and the row, or an older snnsec), the next append
  imports the whole file first, so the database catches up by itself.
- **Tables.** Every table, summary and the leaderboard read the runs through :func:`load_results`, which
  first brings the database up to date with ``records.jsonl`` (the same import) and then reads it alone.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from snnsec import integrity
from snnsec.errors import SnnsecError
from snnsec.integrity import DamagedFileError
from snnsec.records import RunRecord, Snapshot, parse_line, report_skipped

DB_NAME = "results.sqlite"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 120.0  # a writer waits this long for another one before giving up with a one-line error
FIELDS = {"kind": str, "run_id": str, "config": dict, "metrics": dict, "versions": dict, "started": str,
          "finished": str, "duration_s": (int, float), "artifacts": dict}  # RunRecord.to_dict(), and types
COLUMNS = "run_id, kind, config, metrics, versions, started, finished, duration_s, artifacts, inserted, digest"
Outcome = Literal["added", "unchanged", "replaced", "kept"]


def _create_v1(conn: sqlite3.Connection) -> None:
    # duration_s has no declared type, so an int stays an int and the row's canonical JSON does not change
    conn.execute("CREATE TABLE runs (run_id TEXT PRIMARY KEY, kind TEXT NOT NULL, config TEXT NOT NULL, "
                 "metrics TEXT NOT NULL, versions TEXT NOT NULL, started TEXT NOT NULL, finished TEXT NOT NULL, "
                 "duration_s NOT NULL, artifacts TEXT NOT NULL, inserted TEXT NOT NULL, digest TEXT NOT NULL)")
    conn.execute("CREATE INDEX runs_kind ON runs (kind)")
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")


#: ``user_version`` n -> the step that brings a database to n + 1 (each runs in the opening transaction).
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {0: _create_v1}


def canonical(value: Any) -> str:
    """Canonical JSON: sorted keys, the format of a ``records.jsonl`` line."""
    return json.dumps(value, sort_keys=True)


def as_record(record: RunRecord | dict[str, Any]) -> dict[str, Any]:
    """``record`` as a plain JSON dict shaped like ``RunRecord.to_dict()``; ValueError (one line) when it is
    not one."""
    data = record.to_dict() if isinstance(record, RunRecord) else record
    if not isinstance(data, dict):
        raise ValueError("not a run record (a JSON object expected)")
    missing, extra = sorted(set(FIELDS) - set(data)), sorted(set(data) - set(FIELDS))
    if missing or extra:
        raise ValueError(f"not a run record (missing {missing}, unexpected {extra})")
    for name, kind in FIELDS.items():
        if not isinstance(data[name], kind) or isinstance(data[name], bool):
            raise ValueError(f"not a run record ({name} is {type(data[name]).__name__})")
    if not all(isinstance(v, str) for v in data["artifacts"].values()):
        raise ValueError("not a run record (artifacts must map names to paths)")
    try:
        return json.loads(canonical(data))  # tuples become lists, as they read back
    except (TypeError, ValueError) as err:
        raise ValueError(f"not a run record (not JSON: {integrity.describe(err)})") from None


def artifact_digests(artifacts: dict[str, str], folder: Path) -> dict[str, dict[str, str | None]]:
    """Each artifact's path and, where the file exists, its SHA-256 (None otherwise). The results folder's
    own files (``artifacts/``, ``runs/``) are looked up in ``folder``, wherever it was moved or cloned to."""
    from snnsec.artifact_store import locate

    found: dict[str, dict[str, str | None]] = {}
    for name, path in artifacts.items():
        where = locate(path, folder)
        try:
            digest = integrity.sha256_file(where) if where is not None else None
        except OSError:
            digest = None
        found[name] = {"path": path, "sha256": digest}
    return found


def _row_digest(row: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(row).encode()).hexdigest()


@dataclass(frozen=True)
class Imported:
    """What :meth:`ResultsDB.import_jsonl` did with the runs of a file (one count per run id)."""
    added: int = 0
    replaced: int = 0
    unchanged: int = 0
    kept: int = 0


class ResultsDB:
    """Run records in an SQLite file (see the module docstring); opened per operation, so it is safe to use
    from forked processes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @classmethod
    def of(cls, folder: Path) -> ResultsDB:
        """The database of a results folder, ``<folder>/results.sqlite``."""
        return cls(Path(folder) / DB_NAME)

    # ---- writing ---------------------------------------------------------------------------------------

    def put(self, record: RunRecord | dict[str, Any], replace: bool = False) -> Outcome:
        """Store one run in one transaction; a run id already there with other content is kept (reported)
        unless ``replace``. Returns what happened."""
        try:
            rec = as_record(record)
        except ValueError as err:
            raise SnnsecError(f"cannot store in {self.path}: {err}") from None
        return self._put_all([rec], replace)[0]

    def import_jsonl(self, path: Path, replace: bool = True) -> Imported:
        """Take in the runs of a ``records.jsonl`` (the latest line of a run id wins, as in ``load_records``;
        a damaged line is skipped with a warning naming file and line), all in one transaction, under the
        folder's lock so no append interleaves. Importing again adds nothing."""
        path = Path(path)
        with integrity.locked(path.parent):
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                raise SnnsecError(f"{path} does not exist; nothing to import") from None
            latest: dict[str, dict[str, Any]] = {}
            for number, line in enumerate(data.split(b"\n"), 1):
                rec = parse_line(path, number, line) if line.strip() else None
                if rec is None:
                    continue
                try:
                    latest[rec["run_id"]] = as_record(rec)
                except ValueError as err:
                    report_skipped(path, number, line, str(err))
            outcomes = self._put_all(list(latest.values()), replace, synced=self._synced_key(path, len(data)))
        return Imported(**{name: outcomes.count(name) for name in ("added", "replaced", "unchanged", "kept")})

    def record_appended(self, path: Path, record: RunRecord, before: int, after: int) -> None:
        """Store a run just appended to ``path`` (which was ``before`` bytes long, now ``after``), replacing
        an older run of its id. When ``path`` changed since the database last took it in, the whole file is
        imported instead (this run included). Called under the folder's lock."""
        try:
            rec = as_record(record)
        except ValueError as err:
            raise SnnsecError(f"cannot store in {self.path}: {err}") from None
        key = self._synced_key(path, after)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key[0],)).fetchone() if key else None
        if key is not None and (row[0] if row else "0") != str(before):
            self.import_jsonl(path)
        else:
            self._put_all([rec], replace=True, synced=key)

    def _synced_key(self, path: Path, size: int) -> tuple[str, int] | None:
        """The meta key noting how much of ``path`` the database holds: only for a file beside it."""
        if path.resolve().parent != self.path.resolve().parent:
            return None
        return f"bytes of {path.name}", size

    def _put_all(self, recs: Sequence[dict[str, Any]], replace: bool,
                 synced: tuple[str, int] | None = None) -> list[Outcome]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            ids = [r["run_id"] for r in recs] if len(recs) <= 500 else None  # a big import reads every row
            stored = {r["run_id"]: canonical(r) for r in self._rows(conn, ids, check=False)}
            # files are hashed before the write lock is taken, and only for runs that will be written
            artifacts = {r["run_id"]: artifact_digests(r["artifacts"], self.path.parent) for r in recs
                         if stored.get(r["run_id"]) != canonical(r)}
            with _transaction(conn):
                outcomes = [self._put_one(conn, rec, artifacts, replace) for rec in recs]
                if synced is not None:
                    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (synced[0], str(synced[1])))
        return outcomes

    def _put_one(self, conn: sqlite3.Connection, rec: dict[str, Any], artifacts: dict[str, Any],
                 replace: bool) -> Outcome:
        run_id = rec["run_id"]
        found = conn.execute(f"SELECT {COLUMNS} FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        problem = self._problem(found) if found is not None else None
        if found is not None and problem is None and canonical(self._record(found)) == canonical(rec):
            return "unchanged"
        if found is not None and not replace:
            if problem is not None:
                raise self._damaged_row(run_id, problem)
            integrity.report(f"{self.path} already holds run {run_id} with other content: kept the stored "
                             "record (pass replace=True to replace it)")
            return "kept"
        if problem is not None:
            integrity.report(f"{self.path} run {run_id} {problem}: replaced with the record given")
        stored = artifacts.get(run_id) or artifact_digests(rec["artifacts"], self.path.parent)
        inserted = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        row = {**rec, "artifacts": stored, "inserted": inserted}
        values = (rec["kind"], canonical(rec["config"]), canonical(rec["metrics"]), canonical(rec["versions"]),
                  rec["started"], rec["finished"], rec["duration_s"], canonical(stored), inserted, _row_digest(row))
        if found is None:
            conn.execute(f"INSERT INTO runs ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (run_id, *values))
            return "added"
        conn.execute("UPDATE runs SET kind = ?, config = ?, metrics = ?, versions = ?, started = ?, finished = ?, "
                     "duration_s = ?, artifacts = ?, inserted = ?, digest = ? WHERE run_id = ?", (*values, run_id))
        return "replaced"

    # ---- reading ---------------------------------------------------------------------------------------

    def get(self, run_id: str) -> dict[str, Any] | None:
        """The run ``run_id`` (shaped like ``RunRecord.to_dict()``), or None."""
        if not self.path.exists():
            return None
        with self._connect() as conn:
            rows = self._rows(conn, [run_id])
        return rows[0] if rows else None

    def records(self, kind: str | None = None) -> list[dict[str, Any]]:
        """All runs (of ``kind``) in insertion order, shaped like ``RunRecord.to_dict()``."""
        if not self.path.exists():
            return []
        with self._connect() as conn:
            return self._rows(conn, None, kind)

    def snapshot(self, kind: str | None = None, synced: Path | None = None) -> tuple[list[dict[str, Any]], str, int | None]:
        """In one read transaction: the runs (of ``kind``) as :meth:`records` gives them, the :meth:`state` of
        the database, and how many bytes of ``synced`` (a ``records.jsonl`` beside it) it holds (None when
        not noted)."""
        if not self.path.exists():
            return [], "", None
        key = self._synced_key(Path(synced), 0) if synced is not None else None
        with self._connect() as conn:
            conn.execute("BEGIN")
            try:
                rows = self._rows(conn, None, kind)
                state = self._state(conn)
                noted = conn.execute("SELECT value FROM meta WHERE key = ?", (key[0],)).fetchone() if key else None
            finally:
                conn.execute("COMMIT")
        return rows, state, int(noted[0]) if noted else None

    def synced(self, path: Path) -> int | None:
        """How many bytes of ``path`` (a ``records.jsonl`` beside the database) it has taken in; None when not
        noted."""
        key = self._synced_key(Path(path), 0)
        if key is None or not self.path.exists():
            return None
        with self._connect() as conn:
            noted = conn.execute("SELECT value FROM meta WHERE key = ?", (key[0],)).fetchone()
        return int(noted[0]) if noted else None

    def state(self) -> str:
        """A fingerprint of every row (their digests, in order): any write that changes a run changes it."""
        if not self.path.exists():
            return ""
        with self._connect() as conn:
            return self._state(conn)

    @staticmethod
    def _state(conn: sqlite3.Connection) -> str:
        digest = hashlib.sha256()
        for (row_digest,) in conn.execute("SELECT digest FROM runs ORDER BY rowid"):
            digest.update(row_digest.encode() + b"\n")
        return digest.hexdigest()

    def artifacts(self, run_id: str) -> dict[str, dict[str, str | None]] | None:
        """The paths and SHA-256 digests (when the run was stored) of a run's artifacts, or None."""
        if not self.path.exists():
            return None
        with self._connect() as conn:
            found = conn.execute(f"SELECT {COLUMNS} FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if found is None:
                return None
            self._verify(found)
            return json.loads(found[8])

    def export_jsonl(self, path: Path) -> int:
        """Write every run as one canonical JSON line, in insertion order, atomically (the same rows give the
        same bytes); returns how many."""
        recs = self.records()
        integrity.atomic_write_text(Path(path), "".join(canonical(r) + "\n" for r in recs))
        return len(recs)

    def check(self) -> int:
        """Raise a one-line error unless SQLite's integrity check passes and every row matches its digest;
        returns the number of runs."""
        if not self.path.exists():
            raise SnnsecError(f"no results database {self.path}; create it from records.jsonl with "
                              f"`snnsec db import {self.path.parent}`")
        with self._connect() as conn:
            found = [row[0] for row in conn.execute("PRAGMA integrity_check(3)")]
            if found != ["ok"]:
                raise self._damaged_file(" ".join(" ".join(found).replace("*** in database main ***", "").split()))
            return len(self._rows(conn, None))

    def _rows(self, conn: sqlite3.Connection, run_ids: Sequence[str] | None, kind: str | None = None,
              check: bool = True) -> list[dict[str, Any]]:
        query, args = f"SELECT {COLUMNS} FROM runs", []
        if run_ids is not None:
            query += f" WHERE run_id IN ({', '.join('?' * len(run_ids))})"
            args = list(run_ids)
        elif kind is not None:
            query, args = query + " WHERE kind = ?", [kind]
        found = []
        for row in conn.execute(query + " ORDER BY rowid", args):
            if check:
                self._verify(row)
            elif self._problem(row) is not None:
                continue  # the write that follows reports it
            found.append(self._record(row))
        return found

    @staticmethod
    def _record(row: tuple) -> dict[str, Any]:
        (run_id, kind, config, metrics, versions, started, finished, duration_s, artifacts, _, _) = row
        return {"kind": kind, "run_id": run_id, "config": json.loads(config), "metrics": json.loads(metrics),
                "versions": json.loads(versions), "started": started, "finished": finished,
                "duration_s": duration_s, "artifacts": {k: v["path"] for k, v in json.loads(artifacts).items()}}

    def _problem(self, row: tuple) -> str | None:
        """What is wrong with a stored row; None when it matches its digest."""
        try:
            rec = self._record(row)
            whole = {**rec, "artifacts": json.loads(row[8]), "inserted": row[9]}
        except (ValueError, TypeError, KeyError, AttributeError) as err:
            return f"cannot be read ({integrity.describe(err)})"
        if _row_digest(whole) != row[10]:
            return "does not match its digest (changed outside snnsec)"
        return None

    def _verify(self, row: tuple) -> None:
        problem = self._problem(row)
        if problem is not None:
            raise self._damaged_row(row[0], problem)

    # ---- connections and errors ------------------------------------------------------------------------

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection in WAL mode with a busy timeout, the schema up to date; sqlite3 errors become one
        line."""
        conn = None
        try:
            # isolation_level=None: no implicit transactions, ours are explicit; timeout: SQLite's busy timeout
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            conn.execute("PRAGMA synchronous = FULL")
            if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                self._migrate(conn)
            yield conn
        except sqlite3.Error as err:
            raise self._failure(err) from None
        finally:
            if conn is not None:
                conn.close()

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Create or upgrade the schema (one step per version), under the folder's lock so that processes
        opening a new database at once do not race to create it."""
        with integrity.locked(self.path.parent):
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode = WAL")  # persistent: stored in the file
            with _transaction(conn):
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise SnnsecError(f"results database {self.path} has schema version {version}, newer than "
                                      f"this snnsec's {SCHEMA_VERSION}: upgrade snnsec")
                while version < SCHEMA_VERSION:
                    MIGRATIONS[version](conn)
                    version += 1
                conn.execute(f"PRAGMA user_version = {version}")

    def _rebuild_hint(self) -> str:
        return (f"move {self.path.name} aside and rebuild it from records.jsonl with "
                f"`snnsec db import {self.path.parent}`")

    def _damaged_file(self, what: str) -> DamagedFileError:
        return DamagedFileError(f"results database {self.path} is damaged ({what[:200]}); {self._rebuild_hint()}")

    def _damaged_row(self, run_id: str, problem: str) -> DamagedFileError:
        return DamagedFileError(f"results database {self.path}: run {run_id} {problem}; restore it with "
                                f"`snnsec db import {self.path.parent}`, or {self._rebuild_hint()}")

    def _failure(self, err: sqlite3.Error) -> SnnsecError:
        name = getattr(err, "sqlite_errorname", "") or ""
        text = " ".join(str(err).split()) or type(err).__name__
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
            return SnnsecError(f"results database {self.path} stayed locked by another process for over "
                               f"{BUSY_TIMEOUT_S:.0f} s ({text}); try again when it is done")
        if name.startswith(("SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_PERM", "SQLITE_FULL", "SQLITE_IOERR")):
            return SnnsecError(f"results database {self.path} cannot be used: {text}")
        return self._damaged_file(text)


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One ``BEGIN IMMEDIATE`` transaction (the write lock taken at once): committed whole or rolled back."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


# ---- the tables' source ----------------------------------------------------------------------------------


class Results(Snapshot):
    """Runs read from a folder's database (:func:`load_results`), with the database's state then: tables
    written from them are regenerated when the database has changed since, or ``records.jsonl`` holds runs
    it has not taken in yet."""

    def __init__(self, items: list[dict[str, Any]], folder: Path, kind: str | None, state: str,
                 synced: int | None) -> None:
        super().__init__(items)
        self.folder, self.kind, self.state, self.synced = folder, kind, state, synced

    def stale(self) -> bool:
        return _behind(self.folder / JSONL_NAME, self.synced) or ResultsDB.of(self.folder).state() != self.state

    def reload(self) -> Results:
        return load_results(self.folder, self.kind)


JSONL_NAME = "records.jsonl"


def _behind(jsonl: Path, synced: int | None) -> bool:
    """Whether ``jsonl`` holds bytes that a database noting ``synced`` of them has not taken in."""
    try:
        return jsonl.stat().st_size != synced
    except FileNotFoundError:
        return False  # nothing to take in: the database alone is the record


def load_results(out_dir: Path, kind: str | None = None) -> Results:
    """The runs (of ``kind``) of a results folder, read from its ``results.sqlite``: the source of every
    table. The database first catches up with the folder's ``records.jsonl`` when it is missing or behind
    (a kill between a run's line and its row, runs made by an older snnsec): the file is imported as
    :meth:`ResultsDB.import_jsonl` does. Runs come in insertion order; a damaged database raises a one-line
    :class:`~snnsec.integrity.DamagedFileError`."""
    folder = Path(out_dir)
    db, jsonl = ResultsDB.of(folder), folder / JSONL_NAME
    if jsonl.exists() and (not db.path.exists() or _behind(jsonl, db.synced(jsonl))):
        db.import_jsonl(jsonl)
    rows, state, synced = db.snapshot(kind, synced=jsonl)
    return Results(rows, folder, kind, state, synced)
