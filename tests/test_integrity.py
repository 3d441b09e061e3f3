"""Damaged state is detected, moved aside and rebuilt; results files survive damage, kills and races; the run
identity covers what changes the numbers. Tiny models and planted damage only: every test runs in well under
a second (the fault test spawns a few short processes)."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from snnsec import integrity
from snnsec.artifacts import (
    load_cached_model,
    load_model,
    load_training_state,
    save_model,
    save_training_state,
)
from snnsec.classifier import Classifier
from snnsec.datasets.base import DatasetInfo
from snnsec.experiment import Workspace, _trained, model_path, runtime_identity
from snnsec.framing import FramingConfig, frame_dataset
from snnsec.integrity import DamagedFileError
from snnsec.records import Column, RunRecord, append_record, load_records, write_tables
from snnsec.training import TrainConfig, train
from snnsec.zoo import InputSpec


@pytest.fixture(autouse=True)
def new_process():
    """Each test starts as a new process would: nothing remembered as verified (a file is hashed in full
    once per process; damage planted within the file system's timestamp granularity would look unchanged)."""
    integrity._intact.clear()
    yield
    integrity._intact.clear()


def one_line(capsys) -> str:
    """The single stderr line the code printed (fails if there is none or several)."""
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def aside(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}.damaged-*"))


def zero_bytes(path: Path, start: int, count: int) -> None:
    """Damage in place, keeping the size (as the review's "zeroed 200 KB" did)."""
    with open(path, "r+b") as f:
        f.seek(start)
        f.write(bytes(count))


def truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


# ---- models -------------------------------------------------------------------------------------------

def tiny_net() -> nn.Module:
    net = nn.Sequential(nn.Flatten(2), nn.Linear(2 * 4 * 4, 3))  # [T, B, 2, 4, 4] -> [T, B, 3]
    net.input_spec = InputSpec(2, 2, 4, 4, 3)  # as the zoo marks the models it builds
    return net


def build() -> Classifier:
    torch.manual_seed(0)
    return Classifier(tiny_net())


def tiny_data() -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    return TensorDataset((torch.rand(12, 2, 2, 4, 4, generator=g) > 0.5).float(), torch.arange(12) % 3)


TRAINING = TrainConfig(epochs=2, batch_size=4, lr=1e-2, seed=0)


def test_damaged_model_same_size_is_detected_moved_aside_and_rebuilt(tmp_path, capsys):
    workspace, identity = Workspace(cache_dir=tmp_path), {"test": "damaged model"}
    first = _trained(build, tiny_data(), TRAINING, identity, workspace, "model")
    path = model_path(workspace, identity)
    assert integrity.verified(path)
    capsys.readouterr()

    size = path.stat().st_size
    zero_bytes(path, size - 64, 64)  # the last weights, same size
    integrity._intact.clear()
    assert path.stat().st_size == size and not integrity.verified(path)
    again = _trained(build, tiny_data(), TRAINING, identity, workspace, "model")

    err = capsys.readouterr().err
    assert f"{path} does not match its digest" in err and "moved aside" in err
    assert len(aside(path)) == 1 and len(aside(path.with_suffix(".json"))) == 1  # the card went with it
    assert integrity.verified(path)  # rebuilt, with a new digest
    for a, b in zip(first.net.state_dict().values(), again.net.state_dict().values()):
        assert torch.equal(a, b)  # retrained from scratch: the same seeded numbers, not the damaged weights


def test_truncated_safetensors_is_one_line_not_a_traceback(tmp_path, capsys):
    path = tmp_path / "m.safetensors"
    save_model(path, tiny_net(), {"name": "tiny"})
    truncate(path)
    with pytest.raises(DamagedFileError) as raised:
        load_model(path, tiny_net())  # an explicit load: one clear error (the CLI prints it as one line)
    assert str(raised.value).count("\n") == 0 and str(path) in str(raised.value)
    assert not load_cached_model(path, tiny_net())  # a cache entry: reported and moved aside
    assert "does not match its digest" in one_line(capsys)
    assert not path.exists() and len(aside(path)) == 1


def test_a_file_that_matches_its_digest_but_does_not_load_is_moved_aside(tmp_path, capsys):
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"not a safetensors file")
    integrity.write_digest(path)  # e.g. written by buggy code: the digest alone cannot vouch for it
    assert not load_cached_model(path, tiny_net())
    line = one_line(capsys)
    assert f"{path} cannot be loaded" in line and "moved aside" in line


def test_a_file_without_digest_is_not_reused(tmp_path, capsys):
    path = tmp_path / "m.safetensors"
    save_model(path, tiny_net(), {})
    integrity.digest_path(path).unlink()  # as a file written by code before digests
    assert not load_cached_model(path, tiny_net())
    assert "has no readable digest" in one_line(capsys)


def test_generator_card_is_read_from_the_checked_file(tmp_path):
    from snnsec.artifacts import read_card

    path = tmp_path / "g.safetensors"
    save_model(path, tiny_net(), {"frame_channels": 2})
    path.with_suffix(".json").write_text("{ damaged")  # the readable copy may break: the card still loads
    assert read_card(path)["frame_channels"] == 2


# ---- resume checkpoints -------------------------------------------------------------------------------

@pytest.mark.parametrize("damage", [truncate, lambda p: zero_bytes(p, 200, 100)])
def test_damaged_resume_checkpoint_restarts_training_from_scratch(tmp_path, capsys, damage):
    unbroken = build()
    expected = train(unbroken, tiny_data(), TRAINING)

    checkpoint = tmp_path / "m.partial.pt"
    resumed = build()  # a checkpoint saved after epoch 1 of a run with other weights, then damaged
    save_training_state(checkpoint, {"model": {k: v + 1 for k, v in resumed.net.state_dict().items()},
                                     "history": [9.0]})
    damage(checkpoint)
    capsys.readouterr()
    history = train(resumed, tiny_data(), TRAINING, checkpoint=checkpoint)

    assert "resume checkpoint" in one_line(capsys)
    assert history == expected and len(history) == TRAINING.epochs  # from scratch, not from the damaged epoch
    for a, b in zip(unbroken.net.state_dict().values(), resumed.net.state_dict().values()):
        assert torch.equal(a, b)
    assert len(aside(checkpoint)) == 1 and not checkpoint.exists()


def test_intact_resume_checkpoint_loads(tmp_path):
    checkpoint = tmp_path / "m.partial.pt"
    save_training_state(checkpoint, {"history": [1.0, 2.0], "w": torch.arange(3)})
    state = load_training_state(checkpoint)
    assert state["history"] == [1.0, 2.0] and torch.equal(state["w"], torch.arange(3))


# ---- frames -------------------------------------------------------------------------------------------

class ToyEvents:
    """Four samples on an 8x8 two-polarity sensor, with events on many pixels."""

    info = DatasetInfo("toy-integrity", (8, 8, 2), ("a", "b"))
    cache_key = "toy-integrity-v1"

    def __init__(self, fail_at: int | None = None) -> None:
        self.reads, self.fail_at = 0, fail_at

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int):
        if i == self.fail_at:
            raise KeyboardInterrupt  # Ctrl-C in the middle of framing
        self.reads += 1
        rng = np.random.default_rng(i)
        n = 200
        events = np.zeros(n, dtype=[("x", np.int16), ("y", np.int16), ("t", np.int64), ("p", np.int8)])
        events["x"], events["y"] = rng.integers(0, 8, n), rng.integers(0, 8, n)
        events["t"], events["p"] = np.sort(rng.integers(0, 1000, n)), rng.integers(0, 2, n)
        return events, i % 2


def test_zeroed_frames_are_detected_moved_aside_and_reframed(tmp_path, capsys):
    config = FramingConfig(frames=2)
    data = ToyEvents()
    first = frame_dataset(data, "test", config, tmp_path)
    expected, path = np.array(first.counts), first.cache_path
    del first
    with h5py.File(path, "r+") as cache:  # zero one sample's frames in place, as the review did
        assert cache["counts"][1].any()
        cache["counts"][1] = 0
    capsys.readouterr()

    again = frame_dataset(data, "test", config, tmp_path)
    line = one_line(capsys)
    assert f"cached frames {path} does not match its digest" in line
    assert data.reads == 8  # framed again
    assert np.array_equal(again.counts, expected) and len(aside(path)) == 1
    assert frame_dataset(data, "test", config, tmp_path).labels.tolist() == [0, 1, 0, 1] and data.reads == 8


def test_truncated_frame_file_is_detected(tmp_path, capsys):
    data = ToyEvents()
    truncate(frame_dataset(data, "train", FramingConfig(frames=2), tmp_path).cache_path)  # labels are in it too
    capsys.readouterr()
    assert frame_dataset(data, "train", FramingConfig(frames=2), tmp_path).labels.tolist() == [0, 1, 0, 1]
    assert "cached frames" in one_line(capsys) and data.reads == 8


def test_interrupted_framing_leaves_no_temporary_files(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        frame_dataset(ToyEvents(fail_at=2), "train", FramingConfig(frames=2), tmp_path)
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]


def test_temporary_files_of_killed_runs_are_swept(tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs
    folder = tmp_path / "frames" / ToyEvents.info.name
    folder.mkdir(parents=True)
    stale = folder / f"train-abc.tmp{dead.pid}.npy"
    stale.write_bytes(b"half a frame file")
    mine = folder / f"train-abc.tmp{os.getpid()}.npy"  # a live process's file stays
    mine.write_bytes(b"")
    frame_dataset(ToyEvents(), "train", FramingConfig(frames=2), tmp_path)
    assert not stale.exists() and mine.exists()


# ---- records and tables -------------------------------------------------------------------------------

def record(run_id: str, value: float = 0.5) -> RunRecord:
    return RunRecord(kind="attack", run_id=run_id, config={"seed": 0}, metrics={"asr": value},
                     started="2026-01-01T00:00:00", finished=f"2026-01-01T00:00:{len(run_id):02d}",
                     duration_s=1.0, versions={"python": "3"})


def test_a_damaged_records_line_is_skipped_with_file_and_line(tmp_path, capsys):
    path = tmp_path / "records.jsonl"
    append_record(path, record("aaa"))
    with open(path, "ab") as f:
        f.write(b'{"kind": "attack", "run_id": \x00\x00\x00 garbage}\n')
    append_record(path, record("bbb"))
    with open(path, "ab") as f:
        f.write(b"[1, 2]\n")  # valid JSON, not a record
    assert sorted(r["run_id"] for r in load_records(path)) == ["aaa", "bbb"]
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(": damaged record skipped")[0] for line in lines] == [f"{path} line 2", f"{path} line 4"]
    load_records(path)
    assert capsys.readouterr().err == ""  # reported once per process


def test_a_partial_last_line_does_not_swallow_the_next_record(tmp_path, capsys):
    path = tmp_path / "records.jsonl"
    append_record(path, record("aaa"))
    with open(path, "ab") as f:
        f.write(json.dumps(record("cut").to_dict()).encode()[:40])  # killed mid-write: no newline
    append_record(path, record("bbb"))
    assert sorted(r["run_id"] for r in load_records(path)) == ["aaa", "bbb"]
    assert f"{path} line 2" in one_line(capsys)


COLUMNS = [Column("ASR (%)", "metrics.asr", percent=True), Column("Run", "run_id")]


def test_tables_are_replaced_atomically(tmp_path, monkeypatch):
    path = tmp_path / "records.jsonl"
    append_record(path, record("aaa"))
    write_tables(load_records(path), COLUMNS, tmp_path, "t", "caption")
    before = {p.name: p.read_text() for p in tmp_path.glob("t.*")}
    append_record(path, record("bbb"))

    real = Path.write_text

    def killed_halfway(self, text, *args, **kwargs):  # the process dies in the middle of writing a table
        real(self, text[: len(text) // 2], *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", killed_halfway)
    with pytest.raises(KeyboardInterrupt):
        write_tables(load_records(path), COLUMNS, tmp_path, "t", "caption")
    monkeypatch.undo()
    assert {p.name: p.read_text() for p in tmp_path.glob("t.*")} == before  # old tables, whole, not 0 bytes
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_a_delayed_table_writer_does_not_overwrite_newer_tables(tmp_path):
    path = tmp_path / "records.jsonl"
    append_record(path, record("aaa"))
    delayed = load_records(path)  # read, then delayed while another run appends and writes its tables
    append_record(path, record("bbbb"))
    write_tables(load_records(path), COLUMNS, tmp_path, "t", "caption")
    write_tables(delayed, COLUMNS, tmp_path, "t", "caption")
    table = (tmp_path / "t.md").read_text()
    assert "aaa" in table and "bbbb" in table


APPENDER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from snnsec.records import RunRecord, append_record
    path, name, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    print("ready", flush=True)
    for i in range(count):
        append_record(path, RunRecord(kind="attack", run_id=f"{name}-{i}", config={"pad": "x" * 20000},
                                      metrics={"i": i}, started="s", finished="f", duration_s=0.0,
                                      versions={"python": "3"}))
""")


def test_concurrent_appenders_and_a_kill_leave_every_complete_record_readable(tmp_path):
    path = tmp_path / "records.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    count, names = 40, ["p0", "p1", "p2", "victim"]
    procs = {name: subprocess.Popen([sys.executable, "-c", APPENDER, str(path), name,
                                     str(count * 10 if name == "victim" else count)],  # still appending when killed
                                    env=env, stdout=subprocess.PIPE, text=True) for name in names}
    for proc in procs.values():
        assert proc.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 30
    while b'"victim-0"' not in (path.read_bytes() if path.exists() else b"") and time.monotonic() < deadline:
        time.sleep(0.001)  # the victim is appending
    time.sleep(random.uniform(0.0, 0.01))  # then a random point of its appends
    procs["victim"].send_signal(signal.SIGKILL)
    for name, proc in procs.items():
        assert proc.wait(timeout=60) == (-signal.SIGKILL if name == "victim" else 0)
    append_record(path, record("after"))

    found = {r["run_id"] for r in load_records(path)}
    for name in names[:3]:
        assert {f"{name}-{i}" for i in range(count)} <= found  # every record of the survivors
    assert "after" in found  # the next append after the kill is intact
    lines = path.read_bytes().split(b"\n")
    complete = [line for line in lines if line.strip()]
    victim = {r for r in found if r.startswith("victim-")}
    assert len(complete) - len(found) <= 1  # at most the victim's one cut line is not a record
    assert victim == {f"victim-{i}" for i in range(len(victim))}  # its records up to the kill, in order


# ---- run identity -------------------------------------------------------------------------------------

def test_thread_count_device_and_format_are_part_of_the_identity(tmp_path):
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = runtime_identity(torch.device("cpu"))
        torch.set_num_threads(2)
        two = runtime_identity(torch.device("cpu"))
    finally:
        torch.set_num_threads(saved)
    assert one["threads"] == 1 and two["threads"] == 2 and one["device"] == "cpu" and one["model_format"]
    workspace = Workspace(cache_dir=tmp_path)
    base = {"model": "x"}
    assert model_path(workspace, {**base, "runtime": one}) != model_path(workspace, {**base, "runtime": two})
