"""The results database: one row per run id, imports that add nothing twice, byte-stable exports, concurrent
writers and a killed writer lose nothing, and a damaged file or an edited row is caught in one line. Planted
records only; the whole file runs in a few seconds (the process tests fork a handful of short writers)."""
from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from snnsec.cli import cli
from snnsec.errors import SnnsecError
from snnsec.integrity import DamagedFileError
from snnsec.records import RunRecord, append_record, config_hash, load_records
from snnsec.results_db import DB_NAME, SCHEMA_VERSION, Imported, ResultsDB, canonical

FORK = multiprocessing.get_context("fork")


def record(name: str, asr: float = 0.5, kind: str = "attack", pad: int = 0) -> RunRecord:
    config = {"name": name, "rate": 0.1, "options": (("size", 2),), "pad": "x" * pad}
    return RunRecord(kind=kind, run_id=config_hash(config), config=config, metrics={"asr": asr, "n": 3},
                     started="2026-11-29T10:00:00+00:00", finished="2026-11-29T10:01:00+00:00", duration_s=60,
                     versions={"python": "3.11"}, artifacts={"model": f"/nonexistent/{name}.safetensors"})


def as_json(rec: RunRecord) -> dict:
    return json.loads(json.dumps(rec.to_dict()))  # what reads back: tuples are lists


def count_rows(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def test_round_trip_in_insertion_order(tmp_path):
    db = ResultsDB.of(tmp_path)
    recs = [record("b"), record("a", kind="defense"), record("c")]
    assert [db.put(r) for r in recs] == ["added"] * 3
    assert db.get(recs[1].run_id) == as_json(recs[1]) and db.get("missing") is None
    assert db.records() == [as_json(r) for r in recs]
    assert db.records("attack") == [as_json(recs[0]), as_json(recs[2])]
    assert set(db.records()[0]) == set(RunRecord.__dataclass_fields__)
    assert db.artifacts(recs[0].run_id) == {"model": {"path": "/nonexistent/b.safetensors", "sha256": None}}
    with sqlite3.connect(db.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert json.loads(conn.execute("SELECT config FROM runs LIMIT 1").fetchone()[0]) == as_json(recs[0])["config"]


def test_an_existing_artifact_is_stored_with_its_digest(tmp_path):
    model = tmp_path / "model.bin"
    model.write_bytes(b"abc")
    rec = record("a")
    rec.artifacts = {"model": str(model)}
    ResultsDB.of(tmp_path).put(rec)
    assert ResultsDB.of(tmp_path).artifacts(rec.run_id)["model"]["sha256"] == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")  # sha256("abc")


def test_one_row_per_run_id_and_other_content_only_replaced_when_asked(tmp_path, capsys):
    db = ResultsDB.of(tmp_path)
    first, other = record("a"), record("b")
    same_config = record("a", asr=0.9)
    assert same_config.run_id == first.run_id  # the id is the config's hash
    assert [db.put(first), db.put(other), db.put(record("a"))] == ["added", "added", "unchanged"]
    assert db.put(same_config) == "kept"
    assert "already holds run" in one_line(capsys.readouterr().err)
    assert db.get(first.run_id)["metrics"]["asr"] == 0.5
    assert db.put(same_config, replace=True) == "replaced"
    assert db.get(first.run_id)["metrics"]["asr"] == 0.9
    assert count_rows(db.path) == 2
    assert [r["run_id"] for r in db.records()] == [first.run_id, other.run_id]  # replaced in place


def test_a_record_that_is_not_one_is_a_one_line_error(tmp_path):
    bad = record("a").to_dict()
    del bad["started"]
    with pytest.raises(SnnsecError, match="missing \\['started'\\]"):
        ResultsDB.of(tmp_path).put(bad)
    bad = {**record("a").to_dict(), "duration_s": "long"}
    with pytest.raises(SnnsecError, match="duration_s is str"):
        ResultsDB.of(tmp_path).put(bad)


def write_jsonl(path: Path, *lines: bytes) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def test_import_is_idempotent_skips_damaged_lines_and_export_is_byte_stable(tmp_path, capsys):
    src = tmp_path / "records.jsonl"
    a, b, a_newer = record("a"), record("b", kind="defense"), record("a", asr=0.9)
    minimal = json.dumps({"kind": "attack", "run_id": "m", "config": {}, "metrics": {}}).encode()
    write_jsonl(src, canonical(a.to_dict()).encode(), b'{"kind": "attack", garbage', canonical(b.to_dict()).encode(),
                minimal, canonical(a_newer.to_dict()).encode())
    db = ResultsDB.of(tmp_path)
    assert db.import_jsonl(src) == Imported(added=2)
    warned = capsys.readouterr().err.splitlines()
    assert [w.split(": damaged record skipped")[0] for w in warned] == [f"{src} line 2", f"{src} line 4"]
    assert db.import_jsonl(src) == Imported(unchanged=2)  # again: nothing added
    assert count_rows(db.path) == 2
    assert db.records() == [as_json(a_newer), as_json(b)]  # as load_records: latest wins, first position
    assert db.records() == [r for r in load_records(src) if r["run_id"] != "m"]  # m: not a full record

    out1, out2 = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    assert db.export_jsonl(out1) == 2
    db.import_jsonl(src)
    db.export_jsonl(out2)
    assert out1.read_bytes() == out2.read_bytes()
    assert out1.read_bytes() == (canonical(a_newer.to_dict()) + "\n" + canonical(b.to_dict()) + "\n").encode()
    copy = ResultsDB(tmp_path / "copy" / DB_NAME)  # export -> import -> export: the same bytes
    copy.import_jsonl(out1)
    copy.export_jsonl(out2)
    assert out1.read_bytes() == out2.read_bytes()


def test_append_record_writes_the_line_and_the_row(tmp_path):
    path = tmp_path / "records.jsonl"
    append_record(path, record("a"))
    append_record(path, record("b"))
    append_record(path, record("a", asr=0.9))  # a rerun of a config: the latest wins in both
    assert len(path.read_bytes().splitlines()) == 3
    assert ResultsDB.of(tmp_path).records() == list(load_records(path))
    assert ResultsDB.of(tmp_path).check() == 2


def test_a_kill_between_the_line_and_the_row_is_repaired_by_the_next_append(tmp_path):
    path = tmp_path / "records.jsonl"
    append_record(path, record("a"))
    with open(path, "ab") as f:  # the line made it to disk, the process died before the database write
        f.write((canonical(record("lost").to_dict()) + "\n").encode())
    append_record(path, record("c"))
    assert [r["config"]["name"] for r in ResultsDB.of(tmp_path).records()] == ["a", "lost", "c"]


def put_many(path: str, prefix: str, count: int, start, shared: int = 0) -> None:
    start.wait()
    db = ResultsDB(Path(path))
    for i in range(count):
        db.put(record(f"{prefix}-{i}"))
        if i < shared:
            db.put(record(f"shared-{i}"))


def test_concurrent_writers_lose_nothing(tmp_path):
    path = tmp_path / DB_NAME  # not created yet: the writers also race to create it
    start = FORK.Barrier(4)
    procs = [FORK.Process(target=put_many, args=(str(path), f"p{n}", 25, start, 5)) for n in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    assert count_rows(path) == 105
    db = ResultsDB(path)
    names = {r["config"]["name"] for r in db.records()}
    assert names == {f"p{n}-{i}" for n in range(4) for i in range(25)} | {f"shared-{i}" for i in range(5)}
    assert db.check() == 105


def put_forever(path: str, ready) -> None:
    db = ResultsDB(Path(path))
    for i in range(100_000):
        db.put(record(f"k{i}", pad=3000))
        if i == 10:
            ready.set()


def test_a_writer_killed_mid_batch_leaves_every_committed_row_readable(tmp_path):
    path = tmp_path / DB_NAME
    ready = FORK.Event()
    proc = FORK.Process(target=put_forever, args=(str(path), ready))
    proc.start()
    assert ready.wait(60)
    time.sleep(random.uniform(0.0, 0.05))  # a random point of its writes
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    assert proc.exitcode == -signal.SIGKILL
    db = ResultsDB(path)
    found = [r["config"]["name"] for r in db.records()]
    assert len(found) > 10 and found == [f"k{i}" for i in range(len(found))]  # every commit, in order
    assert db.check() == len(found)
    assert db.put(record("after")) == "added" and db.check() == len(found) + 1


def test_a_damaged_file_is_caught_in_one_line(tmp_path):
    db = ResultsDB.of(tmp_path)
    write_jsonl(tmp_path / "records.jsonl", *(canonical(record(f"r{i}", pad=500).to_dict()).encode() for i in range(60)))
    db.import_jsonl(tmp_path / "records.jsonl")
    assert not (tmp_path / f"{DB_NAME}-wal").exists()  # the last connection checkpointed it into the file
    size = db.path.stat().st_size
    assert size > 16 * 4096
    with open(db.path, "r+b") as f:  # three whole pages in the middle
        f.seek(size // 2 - size // 2 % 4096)
        f.write(random.Random(0).randbytes(3 * 4096))
    with pytest.raises(DamagedFileError) as caught:
        db.check()
    message = one_line(str(caught.value))
    assert str(db.path) in message and "is damaged" in message and f"snnsec db import {tmp_path}" in message


def test_an_edited_row_is_caught_and_import_restores_it(tmp_path, capsys):
    path = tmp_path / "records.jsonl"
    for name in ("a", "b"):
        append_record(path, record(name))
    db = ResultsDB.of(tmp_path)
    with sqlite3.connect(db.path) as conn:
        conn.execute("UPDATE runs SET metrics = ? WHERE run_id = ?", ('{"asr": 0.99, "n": 3}', record("b").run_id))
    for read in (db.check, db.records, lambda: db.get(record("b").run_id), lambda: db.export_jsonl(tmp_path / "e")):
        with pytest.raises(DamagedFileError, match=f"run {record('b').run_id} does not match its digest"):
            read()
    assert not (tmp_path / "e").exists()  # nothing damaged is exported
    assert db.get(record("a").run_id) == as_json(record("a"))  # an intact row still reads
    with pytest.raises(DamagedFileError):
        db.put(record("b", asr=0.2))  # not silently compared against a damaged row
    assert db.import_jsonl(path) == Imported(replaced=1, unchanged=1)
    assert "does not match its digest" in one_line(capsys.readouterr().err)
    assert db.check() == 2 and db.get(record("b").run_id)["metrics"]["asr"] == 0.5


def test_a_newer_schema_is_refused(tmp_path):
    db = ResultsDB.of(tmp_path)
    db.put(record("a"))
    with sqlite3.connect(db.path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(SnnsecError, match="newer than this snnsec"):
        db.records()


def test_cli_import_export_check(tmp_path):
    runner = CliRunner()
    path = tmp_path / "records.jsonl"
    write_jsonl(path, canonical(record("a").to_dict()).encode(), canonical(record("b").to_dict()).encode())
    db = str(tmp_path / DB_NAME)

    result = runner.invoke(cli, ["db", "check", str(tmp_path)])
    assert result.exit_code == 1 and "snnsec db import" in one_line(result.stderr)
    result = runner.invoke(cli, ["db", "import", str(tmp_path)])
    assert result.exit_code == 0 and result.stdout.startswith("2 run(s) added")
    result = runner.invoke(cli, ["db", "import", str(tmp_path)])
    assert result.exit_code == 0 and result.stdout.startswith("0 run(s) added")
    result = runner.invoke(cli, ["db", "check", str(tmp_path)])
    assert result.exit_code == 0 and result.stdout == f"{db}: 2 run(s), intact\n"

    result = runner.invoke(cli, ["db", "export", str(tmp_path), "--to", str(tmp_path / "out.jsonl")])
    assert result.exit_code == 0 and (tmp_path / "out.jsonl").read_bytes() == path.read_bytes()
    result = runner.invoke(cli, ["db", "export", str(tmp_path)])
    assert result.exit_code == 0 and (tmp_path / "results-export.jsonl").read_bytes() == path.read_bytes()
    result = runner.invoke(cli, ["db", "export", str(tmp_path), "--to", str(path)])
    assert result.exit_code == 1 and "append log" in one_line(result.stderr)

    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE runs SET finished = 'later'")
    result = runner.invoke(cli, ["db", "check", str(tmp_path)])
    assert result.exit_code == 1 and "does not match its digest" in one_line(result.stderr)
    assert "Traceback" not in result.output
