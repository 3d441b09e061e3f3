"""Content-addressed artifacts, `snnsec verify DIR` and `snnsec reproduce RUN_ID` on a tiny bench."""
import json
import shutil

import pytest
from click.testing import CliRunner

from snnsec.cli import cli
from snnsec.results_db import ResultsDB

TINY = {"model_config": "tiny", "epochs": 1, "frames": 4, "size": 16}
CONFIG = {"name": "tiny", "seeds": [0], "base": TINY, "attacks": [{"grid": {"trigger": ["static"]}}],
          "evasions": [{"attack": "fgsm", "budgets": [10], "samples": 4, "checks": False}]}


@pytest.fixture(scope="module")
def bench_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("verify")
    (root / "c.json").write_text(json.dumps(CONFIG))
    result = CliRunner().invoke(cli, ["bench", str(root / "c.json"), "--out", str(root / "out"),
                                      "--cache-dir", str(root / "cache")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture
def folder(bench_folder, tmp_path):
    """A copy of the bench's results folder (tests damage it)."""
    copy = tmp_path / "out"
    shutil.copytree(bench_folder / "out", copy)
    return copy


def _verify(folder, *extra):
    return CliRunner().invoke(cli, ["verify", str(folder), *extra])


def test_models_are_published_content_addressed_with_cards(bench_folder):
    out = bench_folder / "out"
    attack = next(r for r in ResultsDB.of(out).records() if r["kind"] == "attack")
    for name in ("clean_model", "backdoored_model"):
        path = out / "artifacts" / attack["artifacts"][name].rsplit("/", 1)[-1]
        card = json.loads(path.with_suffix(".json").read_text())
        assert card["sha256"] == path.stem == ResultsDB.of(out).artifacts(attack["run_id"])[name]["sha256"]
        assert card["architecture"]["model"] == "spiking-cnn" and card["input_spec"]["frames"] == 4
        assert card["config"]["training"]["epochs"] == 1 and card["format"] == "safetensors"
    evasion = next(r for r in ResultsDB.of(out).records() if r["kind"] == "evasion")
    assert evasion["artifacts"]["model"] == attack["artifacts"]["clean_model"]  # stored once


def test_verify_passes_on_an_intact_folder_even_after_it_moved(folder):
    result = _verify(folder)
    assert result.exit_code == 0 and "2 run(s), 4 artifact(s) checked" in result.output and ": OK" in result.output


def test_verify_finds_a_damaged_artifact(folder):
    model = sorted((folder / "artifacts").glob("*.safetensors"))[0]
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF
    model.write_bytes(bytes(data))
    result = _verify(folder)
    assert result.exit_code == 1
    assert "does not match its name" in result.output and "but the run recorded" in result.output


def test_verify_finds_a_missing_artifact_and_an_edited_record(folder):
    (folder / "runs").joinpath(next(p.name for p in (folder / "runs").iterdir())).unlink()
    lines = (folder / "records.jsonl").read_text().splitlines()
    edited = json.loads(lines[0])
    edited["metrics"]["asr"] = 0.5
    (folder / "records.jsonl").write_text("\n".join([json.dumps(edited), *lines[1:]]) + "\n")
    result = _verify(folder)
    assert result.exit_code == 1 and "poisoned indices" in result.output and "is missing" in result.output
    assert "differs from the database's record" in result.output


def test_verify_names_a_folder_without_database(tmp_path):
    result = _verify(tmp_path)
    assert result.exit_code != 0 and "has no results database" in result.output


def test_reproduce_reruns_from_scratch_and_compares(folder, tmp_path):
    db = ResultsDB.of(folder)
    for record in db.records():
        result = CliRunner().invoke(cli, ["reproduce", record["run_id"][:8], "--out", str(folder)])
        assert result.exit_code == 0 and "REPRODUCED" in result.output and "NOT" not in result.output, result.output
    attack = next(r for r in db.records() if r["kind"] == "attack")
    db.put({**attack, "metrics": {**attack["metrics"], "asr": attack["metrics"]["asr"] - 0.25}}, replace=True)
    result = CliRunner().invoke(cli, ["reproduce", attack["run_id"], "--out", str(folder),
                                      "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 1 and "DIFFERS asr" in result.output and "NOT REPRODUCED" in result.output


def test_reproduce_unknown_run_one_line(folder):
    result = CliRunner().invoke(cli, ["reproduce", "ffffffff", "--out", str(folder)])
    assert result.exit_code != 0 and "no run in" in result.output and "Traceback" not in result.output


def test_verify_finds_damaged_lost_and_incomplete_lines(folder):
    lines = (folder / "records.jsonl").read_text().splitlines()
    incomplete = {k: v for k, v in json.loads(lines[0]).items() if k != "versions"}
    (folder / "records.jsonl").write_text("\n".join(['{"cut short', json.dumps(incomplete)]) + "\n")  # line 2 lost
    result = _verify(folder)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert "line 1: not a run record" in result.output and "line 2: not a run record (missing ['versions']" in result.output
    assert result.output.count("of the database has no line") == 2


def test_a_killed_publish_leaves_no_false_alarm(folder):
    (folder / "artifacts" / "0123abcd.safetensors.tmp999999999").write_bytes(b"partial")
    result = _verify(folder)
    assert result.exit_code == 0 and ": OK" in result.output, result.output


def test_the_database_rebuilt_elsewhere_finds_the_folders_artifacts(folder, monkeypatch, tmp_path):
    (folder / "results.sqlite").unlink()
    monkeypatch.chdir(tmp_path)  # recorded paths are relative to where the bench ran, not here
    assert CliRunner().invoke(cli, ["db", "import", str(folder)]).exit_code == 0
    result = _verify(folder)
    assert result.exit_code == 0 and "4 artifact(s) checked" in result.output, result.output


def test_verify_finds_an_edited_card(folder):
    card = sorted((folder / "artifacts").glob("*.json"))[0]
    data = json.loads(card.read_text())
    data["architecture"]["model"] = "spikformer"
    card.write_text(json.dumps(data, indent=1, sort_keys=True))
    result = _verify(folder)
    assert result.exit_code == 1 and "card does not match its digest" in result.output, result.output
