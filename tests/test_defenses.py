"""Every defense runs from the CLI on a cached backdoored model and does what it claims on a strong trigger."""
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from snnsec.cli import cli
from snnsec.defenses import DEFENSES, FAMILIES

# A small spiking CNN with a strong 4x4 ON trigger, 5% all-to-one poisoning (target 0): ~17 s to train.
ATTACK = ["--model-config", "small", "--frames", "4", "--size", "16", "--epochs", "6", "--trigger-size", "0.25",
          "--poison-rate", "0.05"]
# Short settings so that every defense runs in seconds; defaults are exercised by the reports.
FAST = {
    "abl": ["isolation_epochs=2", "retrain=false"],
    "activation-clustering": ["retrain=false"],
    "spectral-signatures": ["retrain=false"],
    "strip": ["overlays=8"],
    "neural-cleanse": ["steps=80", "mini_batches=1"],
    "nc-unlearning": ["steps=80", "mini_batches=1"],
    "tmpbd": ["steps=60", "starts=4"],
}


def invoke(*args: str) -> dict:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def attacked(tmp_path_factory):
    """``(workspace options, attack record)`` of one attack run."""
    out, cache = tmp_path_factory.mktemp("defense-out"), tmp_path_factory.mktemp("defense-cache")
    where = ["--out", str(out), "--cache-dir", str(cache)]
    record = invoke("attack", *ATTACK, *where, "--json")
    assert record["metrics"]["asr"] > 0.9 and record["metrics"]["ca_backdoor"] > 0.8
    return where, record


_RUNS: dict[tuple[str, ...], dict] = {}


def defend(attacked, name: str, *extra: str) -> dict:
    """The record of one defense run against ``attacked``; identical requests are run once per session."""
    where, attack = attacked
    options = [arg for opt in FAST.get(name, []) for arg in ("--defense-opt", opt)]
    args = ("defend", "--defense", name, "--attack-run", attack["run_id"][:8], *options, *extra, *where, "--json")
    if args not in _RUNS:
        _RUNS[args] = invoke(*args)
    return _RUNS[args]


FRAME_DEFENSES = [n for n in DEFENSES.names() if n != "stream-purification"]  # that one needs event triggers


@pytest.mark.slow
@pytest.mark.parametrize("name", FRAME_DEFENSES)
def test_every_defense_runs_from_the_cli(attacked, name):
    record = defend(attacked, name)
    m = record["metrics"]
    assert record["kind"] == "defense" and m["family"] in FAMILIES
    assert record["config"]["attack_run_id"] == attacked[1]["run_id"]
    assert record["config"]["defense"]["defense"] == name
    for key in ("ca_before", "asr_before", "ca_after", "asr_after", "der"):
        assert 0.0 <= m[key] <= 1.0, key
    assert m["ca_before"] == pytest.approx(attacked[1]["metrics"]["ca_backdoor"])  # the cached model, not retrained
    assert m["asr_before"] == pytest.approx(attacked[1]["metrics"]["asr"])
    if m["family"] in ("training-data filter", "input filter", "model inspection"):
        assert 0.0 <= m["auroc"] <= 1.0 and m["detection"]["direction"].startswith("higher")


# Floors hold with margin across seeds and thread counts: over attack seeds 0-2 (and, for ABL, defense seeds 0-2,
# with 2 or 3 isolation epochs) AUROC ranged 0.89-0.92 (activation clustering), 0.68-0.77 (spectral signatures)
# and 0.58-0.85 (ABL, which trains its isolation model). Correctness of each score is tested on planted data in
# test_defense_parts.py; here a training run is only asked to rank poisoned samples above chance.
@pytest.mark.slow
@pytest.mark.parametrize("name,floor", [("activation-clustering", 0.75), ("abl", 0.5), ("spectral-signatures", 0.55)])
def test_training_data_filters_rank_poisoned_samples_high(attacked, name, floor):
    m = defend(attacked, name)["metrics"]
    assert m["detection"]["positives"] == round(0.05 * 1438)  # every poisoned sample stays in the received set
    assert m["auroc"] > floor  # chance is 0.5


@pytest.mark.slow
def test_strip_rejects_triggered_inputs(attacked):
    m = defend(attacked, "strip")["metrics"]
    assert m["auroc"] > 0.95 and m["tpr"] > 0.9
    assert m["asr_after"] < 0.1 < m["asr_before"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["neural-cleanse", "tmpbd"])
def test_inspectors_name_the_true_target(attacked, name):
    m = defend(attacked, name)["metrics"]
    assert m["details"]["suspected_target"] == 0 and m["details"]["backdoor_detected"]
    assert m["auroc"] == 1.0 and m["tpr"] == 1.0


@pytest.mark.slow
def test_fine_pruning_lowers_asr(attacked):
    m = defend(attacked, "fine-pruning")["metrics"]
    assert m["asr_after"] < m["asr_before"] - 0.1
    assert m["details"]["pruned_channels"] > 0 and m["details"]["layer"] == "features.6"  # last conv block's LIF


@pytest.mark.slow
def test_abl_unlearning_removes_the_backdoor(attacked):
    """This project's AdamW unlearning variant (the reference's SGD leaves this model's backdoor in place),
    isolating as many samples as were poisoned (5%). At the paper's 1% this tiny model's isolation catches
    10-13 of the 72 poisoned samples and the outcome is a coin flip (ASR after 0.0-0.99 across isolation
    epochs 3-6 and thread counts); at 5% it was 0.0-0.04 in every such case, at a CA cost (0.39-0.55)."""
    m = defend(attacked, "abl", *(arg for opt in ("isolation_epochs=3", "removal_rate=0.05", "retrain=true", "optimizer=adamw",
                                                  "unlearning_epochs=20", "stop_accuracy=0.2")
                                  for arg in ("--defense-opt", opt)))["metrics"]
    assert m["model_changed"] and m["asr_after"] < 0.5 < m["asr_before"]


@pytest.mark.slow
def test_filter_retrains_on_kept_samples(attacked):
    m = defend(attacked, "activation-clustering", "--defense-opt", "removal_rate=0.2", "--defense-opt", "retrain=true")["metrics"]
    assert m["model_changed"] and m["details"]["removed"] == round(0.2 * m["received_samples"])
    assert m["received_samples"] == 1438 - m["reserve_samples"]  # the reserve is held out of the received set
    assert m["asr_after"] < m["asr_before"]


@pytest.mark.slow
def test_defend_by_attack_options_reuses_the_same_attack(attacked):
    where, attack = attacked
    record = invoke("defend", "--defense", "pruning", *ATTACK, *where, "--json")
    assert record["config"]["attack_run_id"] == attack["run_id"]
    assert record["metrics"]["asr_before"] == pytest.approx(attack["metrics"]["asr"])


@pytest.mark.slow
def test_defend_by_options_records_the_attack_first(attacked, tmp_path):
    where, attack = attacked
    cache = where[where.index("--cache-dir") + 1]
    record = invoke("defend", "--defense", "pruning", *ATTACK, "--out", str(tmp_path), "--cache-dir", cache, "--json")
    assert record["config"]["attack_run_id"] == attack["run_id"]
    rows = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in rows] == ["attack", "defense"] and rows[0]["run_id"] == attack["run_id"]
    assert rows[0]["metrics"]["asr"] == attack["metrics"]["asr"]  # the cached models, not retrained


@pytest.mark.slow
def test_defense_table_is_written(attacked):
    defend(attacked, "pruning")
    table = (Path(attacked[0][1]) / "defense_results.md").read_text()
    assert re.search(r"\| pruning +\|", table) and "DER" in table and "AUROC" in table
    assert (Path(attacked[0][1]) / "defense_results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_list_defenses_shows_every_family():
    result = CliRunner().invoke(cli, ["list", "defenses"])
    assert result.exit_code == 0
    for name in DEFENSES.names():
        assert name in result.output
    assert {DEFENSES.get(n).family for n in DEFENSES.names()} == set(FAMILIES)


@pytest.mark.parametrize("options,message", [
    (["--defense-opt", "removal_rate=1.5"], "removal_rate must be in (0, 1)"),
    (["--defense-opt", "nonsense=1"], "has no option(s) ['nonsense']"),
    (["--defense-opt", "retrain=maybe"], "retrain must be true or false"),
    (["--reserve-rate", "0"], "--reserve-rate must be in (0, 1)"),
])
def test_bad_defense_parameters_are_clear_errors(options, message, tmp_path):
    result = CliRunner().invoke(cli, ["defend", "--defense", "spectral-signatures", *options, "--out", str(tmp_path)])
    assert result.exit_code != 0 and message in result.output
    assert "Traceback" not in result.output


def test_unknown_attack_run_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(cli, ["defend", "--defense", "strip", "--attack-run", "abc123", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "no attack run with id 'abc123'" in result.output


def test_attack_run_and_attack_options_are_exclusive(tmp_path):
    result = CliRunner().invoke(cli, ["defend", "--defense", "strip", "--attack-run", "abc", "--trigger", "moving",
                                      "--out", str(tmp_path)])
    assert result.exit_code != 0 and "drop the attack option(s) --trigger" in result.output


@pytest.fixture(scope="module")
def attacked_moving(tmp_path_factory):
    out, cache = tmp_path_factory.mktemp("moving-out"), tmp_path_factory.mktemp("moving-cache")
    where = ["--out", str(out), "--cache-dir", str(cache)]
    record = invoke("attack", "--trigger", "moving", "--model-config", "tiny", "--frames", "4", "--size", "16",
                    "--epochs", "2", "--trigger-size", "0.25", *where, "--json")
    return where, record


QUICK = {"abl": ["isolation_epochs=1", "unlearning_epochs=1", "retrain=false"],
         "neural-cleanse": ["steps=20", "mini_batches=1"], "nc-unlearning": ["steps=20", "epochs=1", "mini_batches=1"], "tmpbd": ["steps=10", "starts=2"], "fine-tuning": ["epochs=1"],
         "fine-pruning": ["epochs=1"], "strip": ["overlays=2"], "activation-clustering": ["retrain=false"],
         "spectral-signatures": ["retrain=false"]}


@pytest.mark.slow
@pytest.mark.parametrize("name", FRAME_DEFENSES)
def test_every_defense_runs_against_a_moving_trigger(attacked_moving, name):
    where, attack = attacked_moving
    options = [arg for opt in QUICK.get(name, []) for arg in ("--defense-opt", opt)]
    record = invoke("defend", "--defense", name, "--attack-run", attack["run_id"], *options, *where, "--json")
    assert record["config"]["attack"]["trigger"] == "moving"
    assert 0.0 <= record["metrics"]["asr_after"] <= 1.0


@pytest.mark.slow
def test_stream_purification_filters_raw_events_of_event_triggers(tmp_path):
    where = ["--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]
    attack = ["--injection", "event", "--model-config", "tiny", "--frames", "4", "--size", "16", "--epochs", "1",
              "--trigger-size", "0.25"]
    record = invoke("defend", "--defense", "stream-purification", *attack, *where, "--json")
    m = record["metrics"]
    assert record["config"]["attack"]["injection"] == "event" and not m["details"]["rejects"]
    assert 0 <= m["auroc"] <= 1 and 0 <= m["asr_after"] <= 1
    assert m["detection"]["positives"] > 0 and m["detection"]["negatives"] > 0


@pytest.mark.slow
def test_stream_purification_refuses_frame_triggers(attacked):
    where, attack = attacked
    result = CliRunner().invoke(cli, ["defend", "--defense", "stream-purification", "--attack-run", attack["run_id"],
                                      *where])
    assert result.exit_code != 0 and "needs an attack whose trigger is in it (--injection event)" in result.output


@pytest.mark.slow
def test_same_seed_same_numbers(attacked):
    where, attack = attacked
    args = ("defend", "--defense", "strip", "--defense-opt", "overlays=3", "--attack-run", attack["run_id"], *where,
            "--json")
    first, second = invoke(*args), invoke(*args)
    assert first["run_id"] == second["run_id"]
    for key in ("ca_after", "asr_after", "auroc", "tpr", "fpr", "details"):
        assert first["metrics"][key] == second["metrics"][key]


@pytest.mark.slow
def test_a_defense_against_a_learned_trigger_records_its_attack_once(tmp_path):
    """A learned trigger's run id is known once it is trained: the second defense finds the attack recorded."""
    out = tmp_path / "o"
    args = ("defend", "--defense", "pruning", "--trigger", "dynamic", "--model-config", "tiny", "--frames", "4",
            "--size", "16", "--epochs", "1", "--out", str(out), "--cache-dir", str(tmp_path / "c"), "--json")
    first, second = invoke(*args), invoke(*args)
    attacks = [r for r in map(json.loads, (out / "records.jsonl").read_text().splitlines()) if r["kind"] == "attack"]
    assert len(attacks) == 1
    assert first["config"]["attack_run_id"] == second["config"]["attack_run_id"] == attacks[0]["run_id"]
