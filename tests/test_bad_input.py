"""Every bad input is one line, and early: CLI options, sweep specs, records, damaged or out-of-range data.

Each case goes through the CLI (click's CliRunner, exceptions not caught, so a traceback fails the test) or
through the dataset registry; none trains a model: every rejection happens before training.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

try:
    import event_fixtures as fx
except ImportError:  # tests/ imported as a package
    from tests import event_fixtures as fx
from snnsec.cli import cli
from snnsec.datasets.base import DATASETS, CheckedDataset, DatasetInfo, DatasetSpec
from snnsec.errors import DataError


@pytest.fixture
def run(tmp_path, monkeypatch):
    """``run(*args)`` invokes the CLI in ``tmp_path`` with a private cache; exceptions propagate."""
    monkeypatch.setenv("SNNSEC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("SNNSEC_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)

    def invoke(*args: str):
        return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)

    return invoke


def one_line_error(result, *fragments: str) -> str:
    """The run failed with exactly one ``Error:`` line, last, holding every fragment; no traceback."""
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output and "Aborted!" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.output
    for fragment in fragments:
        assert fragment in errors[0], result.output
    return errors[0]


# --------------------------------------------------------------------------------------------------
# attack options


@pytest.mark.parametrize("args, fragments", [
    (["--seed", "-1"], ["--seed", "0<=x<=4294967295"]),
    (["--seed", "1e23"], ["--seed", "not a valid integer"]),
    (["--seed", str(10**23)], ["--seed", "0<=x<=4294967295"]),
    (["--size", "100000"], ["--size must be in [7, 34]"]),
    (["--size", "4"], ["--size must be in [7, 34]", "SSIM"]),
    (["--size", "6"], ["--size must be in [7, 34]"]),
    (["--trigger-opt", "size=0.5"], ["'size'", "--trigger-size"]),
    (["--trigger-opt", "seed=3"], ["'seed'", "--seed"]),
    (["--injection", "event", "--trigger-opt", "bins=3"], ["'bins'", "--frames"]),
    (["--trigger", "framed", "--model", "sew-resnet", "--model-config", "nope"], ["unknown config 'nope'"]),
])
def test_attack_options(run, args, fragments):
    one_line_error(run("attack", *args), *fragments)


def test_unknown_trigger_option_lists_only_the_triggers_own_options(run):
    line = one_line_error(run("attack", "--trigger", "strobing", "--trigger-opt", "bogus=1"), "'bogus'", "period")
    for top_level in ("size", "position", "polarity", "value", "seed"):
        assert f" {top_level}," not in line and not line.endswith(f" {top_level}")


@pytest.mark.parametrize("out", ["a-file/reports", "a-file"])
def test_unwritable_out_is_found_before_any_work(run, tmp_path, out):
    (tmp_path / "a-file").write_text("not a folder")
    one_line_error(run("attack", "--out", tmp_path / out), "--out")
    assert not (tmp_path / "cache").exists()  # nothing was framed or trained


def test_show_trigger_checks_the_same_options(run):
    one_line_error(run("show-trigger", "--trigger-opt", "position=middle"), "--position")


# --------------------------------------------------------------------------------------------------
# defend --attack-run


def _attack_line(run_id: str) -> str:
    return json.dumps({"kind": "attack", "run_id": run_id, "config": {"dataset": "digits-dvs"}, "metrics": {},
                       "artifacts": {}, "duration_s": 1.0, "started": "2026-01-01T00:00:00+00:00",
                       "finished": "2026-01-01T00:00:01+00:00", "versions": {}})


def test_empty_attack_run_is_rejected(run, tmp_path):
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "records.jsonl").write_text(_attack_line("abc123") + "\n")  # "" would match it
    one_line_error(run("defend", "--defense", "strip", "--attack-run", ""), "--attack-run needs a run id")


def test_ambiguous_attack_run_prefix_lists_the_candidates(run, tmp_path):
    (tmp_path / "reports").mkdir()
    lines = [_attack_line(i) for i in ("abc123", "abd456", "xyz789")]
    (tmp_path / "reports" / "records.jsonl").write_text("\n".join(lines) + "\n")
    one_line_error(run("defend", "--defense", "strip", "--attack-run", "ab"), "2 attack runs", "abc123", "abd456")


def test_defend_seed_is_checked(run):
    one_line_error(run("defend", "--defense", "strip", "--attack-run", "ab", "--seed", "-1"), "--seed")


# --------------------------------------------------------------------------------------------------
# sweep specs


@pytest.mark.parametrize("content, fragments", [
    ("[1, 2]", ["must be a JSON object", "got a list"]),
    ('{"base": {"epochs": 2.5}}', ["epochs must be an integer", "2.5"]),
    ('{"base": {"seed": "x"}}', ["seed must be an integer", "'x'"]),
    ('{"base": {"target": 1.0}}', ["target must be an integer", "1.0"]),
    ('{"defenses": [5]}', ["each defense is a name or an object", "got 5"]),
    ('{"grid": {"trigger": ["static"]}, "defences": ["strip"]}', ["unknown key(s) ['defences']"]),
    ('{"name": "../../outside"}', ["name must be a plain folder name"]),
    ('{"name": "/tmp/x"}', ["name must be a plain folder name"]),
    ('{"base": "epochs=2"}', ["base must be an object"]),
    ('{"base": {"trigger_options": [["speed", 2]]}}', ["trigger_options must be an object"]),
    ('{"grid": {"trigger_options": [{"seed": 3}]}}', ["--seed"]),
    ('{"defenses": [{"defense": "strip", "reserve_rate": "x"}]}', ["reserve_rate must be a number"]),
    ('{"base": {"epochs": 1}', ["not valid JSON"]),
])
def test_bad_sweep_specs(run, tmp_path, content, fragments):
    spec = tmp_path / "spec.json"
    spec.write_text(content)
    one_line_error(run("sweep", spec, "--out", tmp_path / "out"), *fragments)
    assert not (tmp_path / "out" / "records.jsonl").exists()


def test_binary_sweep_spec(run, tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_bytes(bytes(range(256)))
    one_line_error(run("sweep", spec), "not a text file")


def test_sweep_checks_every_config_before_the_first_run(run, tmp_path):
    spec = tmp_path / "spec.json"  # the first config is fine: it must not start before the third is rejected
    spec.write_text(json.dumps({"base": {"epochs": 1}, "grid": {"trigger": ["static", "moving"], "seed": [0, -1]}}))
    one_line_error(run("sweep", spec, "--out", tmp_path / "out"), "config 2/4", "seed=-1")
    assert not (tmp_path / "cache").exists() and not (tmp_path / "out" / "records.jsonl").exists()


# --------------------------------------------------------------------------------------------------
# report on damaged records


def test_report_on_a_record_missing_fields(run, tmp_path):
    """A record shaped like one whose fields the tables cannot use: one line naming the database."""
    out = tmp_path / "r"
    out.mkdir()
    (out / "records.jsonl").write_text(json.dumps({
        "kind": "defense", "run_id": "d1", "config": {}, "metrics": {"ca_before": "x"}, "artifacts": {},
        "duration_s": 1.0, "started": "2026-01-01T00:00:00+00:00", "finished": "2026-01-01T00:00:01+00:00",
        "versions": {}}) + "\n")
    one_line_error(run("report", "--out", out), "results.sqlite", "cannot use")


def test_report_skips_a_line_that_is_not_a_record_with_a_warning(run, tmp_path):
    """Not a run record at all (fields missing, e.g. cut short): never imported, a warning names file and line."""
    out = tmp_path / "r"
    out.mkdir()
    (out / "records.jsonl").write_text(json.dumps({"kind": "defense", "run_id": "d1", "config": {},
                                                   "metrics": {"ca_before": "x"}}) + "\n")
    result = run("report", "--out", out)
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert "records.jsonl line 1: damaged record skipped (not a run record (missing" in result.output


# --------------------------------------------------------------------------------------------------
# raw data: out-of-range events and damaged files, through the registry (the one validating place)


def _gesture(tmp_path: Path, column: str, value: int) -> Path:
    """A DVS128 Gesture tree whose first train sample holds one event with the given x or y (tonic reads
    its polarity as bool, so a bad polarity cannot reach us from this format: see the plugin test below)."""
    samples = fx.make_dvsgesture(tmp_path)
    path = samples[0].path
    arr = np.load(path)
    arr[3, ("x", "y").index(column)] = value  # columns x, y, p, t
    np.save(path, arr)
    return path


@pytest.mark.parametrize("column, value, fragment", [
    ("x", 128, "x outside the sensor"),
    ("y", 200, "y outside the sensor"),
    ("x", -1, "x outside the sensor"),
    ("y", -5, "y outside the sensor"),
])
def test_out_of_range_events_are_rejected_not_wrapped(tmp_path, column, value, fragment):
    path = _gesture(tmp_path, column, value)
    ds = DATASETS.get("dvs128").load("train", tmp_path)
    index = ds.files.index(path)
    with pytest.raises(DataError, match=re.escape(fragment)) as info:
        ds[index]
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    good = next(i for i in range(len(ds)) if i != index)
    assert len(ds[good][0]) > 0  # the other samples still load


def _zero(path: Path) -> None:
    path.write_bytes(b"")


def _cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-3])


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x93NUMPY\x07\x00garbage" * 5)


@pytest.mark.parametrize("name, damage, fragment", [
    ("dvs128", _zero, "empty (0 bytes)"),
    ("dvs128", _cut, "cannot be read"),
    ("dvs128", _garbage, "cannot be read"),
    ("nmnist", _zero, "empty (0 bytes)"),
    ("nmnist", _cut, "truncated"),
    ("ncaltech101", _cut, "truncated"),
    ("cifar10-dvs", _zero, "empty (0 bytes)"),
    ("cifar10-dvs", _cut, "cannot be read"),
    ("cifar10-dvs", _garbage, "cannot be read"),
])
def test_damaged_files_name_the_file(tmp_path, name, damage, fragment):
    if name == "cifar10-dvs":
        pytest.importorskip("aedat")
    makers = {"dvs128": fx.make_dvsgesture, "nmnist": fx.make_nmnist, "ncaltech101": fx.make_ncaltech101,
              "cifar10-dvs": fx.make_cifar10dvs}
    makers[name](tmp_path)
    ds = DATASETS.get(name).load("train", tmp_path)
    damage(ds.files[0])
    with pytest.raises(DataError, match=re.escape(fragment)) as info:
        ds[0]
    assert str(ds.files[0]) in str(info.value) and "\n" not in str(info.value)


def test_zero_byte_sample_through_the_cli_is_one_line(run, tmp_path):
    """The case that printed only "Aborted!" (np.load of a 0-byte .npy raises EOFError, click's abort)."""
    samples = fx.make_dvsgesture(tmp_path / "data")
    samples[0].path.write_bytes(b"")
    result = run("attack", "--dataset", "dvs128", "--data-dir", tmp_path / "data", "--frames", "2", "--size", "8",
                 "--out", tmp_path / "out")
    one_line_error(result, samples[0].path.name, "empty (0 bytes)")
    assert not (tmp_path / "cache" / "models").exists()  # rejected while framing, before any training


@pytest.mark.parametrize("field, value, fragment", [
    ("x", 8, "x outside the sensor"),  # an 8-pixel-wide sensor: x <= 7
    ("y", -1, "y outside the sensor"),
    ("p", 2, "polarity"),
    ("p", -1, "polarity"),
])
def test_any_registered_loader_is_checked(field, value, fragment):
    """A plugin's loader gets the same checks: the spec wraps it, so no dataset can skip validation."""
    events = np.zeros(3, dtype=fx.EVENTS)
    events["x"], events["y"], events["p"] = (0, 5, 7), (1, 2, 3), (0, 1, 1)
    events[field][2] = value

    class Plain:
        info = DatasetInfo("toy", (8, 8, 2), ("a", "b"))
        cache_key = "toy"

        def __len__(self) -> int:
            return 2

        def __getitem__(self, index: int):
            return (events[:2] if index == 0 else events), 1

    spec = DatasetSpec(info=Plain.info, load=lambda split, data_dir: Plain(), needs_data_dir=False)
    ds = spec.load("train", None)
    assert isinstance(ds, CheckedDataset) and ds.cache_key == "toy" and len(ds) == 2
    assert ds[0][1] == 1 and len(ds[0][0]) == 2
    with pytest.raises(DataError, match=re.escape(fragment)) as info:
        ds[1]
    assert str(info.value).startswith("toy sample 1:")
    with pytest.raises(IndexError):
        ds[2]


def test_malformed_h5_through_a_plugin_loader_names_the_file(tmp_path):
    """No registered dataset reads HDF5 today; a plugin's reader failing on a bad .h5 is reported the same way."""
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "sample.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 40)  # the signature, then nothing valid

    class H5Set:
        info = DatasetInfo("toy-h5", (8, 8, 2), ("a",))
        cache_key = "toy-h5"
        files = (path,)

        def __len__(self) -> int:
            return 1

        def __getitem__(self, index: int):
            with h5py.File(self.files[index], "r") as f:
                return f["events"][()], 0

    ds = DatasetSpec(info=H5Set.info, load=lambda split, data_dir: H5Set(), needs_data_dir=False).load("train", None)
    with pytest.raises(DataError, match="cannot be read") as info:
        ds[0]
    assert str(path) in str(info.value) and "\n" not in str(info.value)
