"""The CLI end to end on the embedded dataset, and its error messages."""
import json

import pytest
from click.testing import CliRunner

from snnsec.cli import cli


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setenv("SNNSEC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("SNNSEC_DATA_DIR", raising=False)

    def invoke(*args):
        return CliRunner().invoke(cli, list(args), catch_exceptions=False)

    return invoke


@pytest.mark.parametrize("what, expected", [("models", "spiking-cnn"), ("attacks", "static"), ("datasets", "digits-dvs")])
def test_list(run, what, expected):
    result = run("list", what)
    assert result.exit_code == 0 and expected in result.output.splitlines()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "resnet9000"], "unknown model 'resnet9000'; choose one of: "),
        (["--trigger", "glitter"], "unknown trigger 'glitter'; choose one of: "),
        (["--dataset", "mnist"], "unknown dataset 'mnist'; choose one of: "),
        (["--poison-rate", "1.5"], "poison rate must be in (0, 1]"),
        (["--poison-rate", "0"], "poison rate must be in (0, 1]"),
        (["--trigger-size", "2"], "fraction of the frame width in (0, 1]"),
        (["--frames", "0"], "frames (T) must be an integer in [1, 1024]"),
        (["--target", "10"], "target class must be in [0, 9]"),
        (["--epochs", "0"], "epochs must be >= 1"),
        (["--device", "cuda:7"], "cuda"),
    ],
)
def test_bad_input_gets_one_clear_error(run, args, message):
    result = run("attack", *args)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_missing_real_dataset_names_layout(run, tmp_path):
    result = run("attack", "--dataset", "dvs128", "--data-dir", str(tmp_path / "nowhere"))
    assert result.exit_code != 0
    assert "DVSGesture" in result.output and "--data-dir" in result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_attack_json_record_and_cache_reuse(run, tmp_path):
    args = ["attack", "--model-config", "tiny", "--epochs", "2", "--poison-rate", "0.1", "--json",
            "--out", str(tmp_path / "reports")]
    first = run(*args)
    assert first.exit_code == 0, first.output
    record = json.loads(first.stdout.strip().splitlines()[-1])
    metrics = record["metrics"]
    for key in ("ca_clean", "ca_backdoor", "asr", "ssim"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["poisoned_samples"] == round(0.1 * metrics["train_samples"])
    assert record["config"]["dataset"] == "digits-dvs" and record["config"]["frames"] == 10
    assert record["config"]["model_config"] == "tiny" and record["versions"]["torch"]

    second = run(*args)
    again = json.loads(second.stdout.strip().splitlines()[-1])
    assert again["run_id"] == record["run_id"]
    assert again["metrics"] == metrics  # same seed, same numbers, from the cached frames and models
    assert again["duration_s"] < record["duration_s"]

    reports = tmp_path / "reports"
    assert len((reports / "records.jsonl").read_text().splitlines()) == 2
    table = (reports / "attack_results.md").read_text()
    assert record["run_id"] in table and table.count(record["run_id"]) == 1
    csv_rows = (reports / "attack_results.csv").read_text().splitlines()[1:]
    assert len(csv_rows) == 1 and record["run_id"] in csv_rows[0]  # one row per run id, the latest record
    assert "\\begin{tabular}" in (reports / "attack_results.tex").read_text()


def test_unknown_trigger_option_lists_options(run):
    result = run("attack", "--trigger-opt", "speed=2")
    assert result.exit_code != 0
    assert "trigger 'static' has no option 'speed'; its --trigger-opt options: (none)" in result.output
    result = run("attack", "--trigger", "moving", "--trigger-opt", "sped=2")
    assert result.exit_code != 0 and "speed" in result.output
    assert "polarity" not in result.output  # top-level options are not listed as trigger options


def test_malformed_trigger_option(run):
    result = run("attack", "--trigger-opt", "speed")
    assert result.exit_code != 0 and "KEY=VALUE" in result.output


def test_report_needs_records(run, tmp_path):
    result = run("report", "--out", str(tmp_path))
    assert result.exit_code != 0 and "no records.jsonl" in result.output


def test_model_recipe_sets_the_default_lr_and_an_explicit_lr_wins(tmp_path):
    from snnsec.experiment import AttackConfig, Workspace, prepare_attack
    from snnsec.zoo import MODELS

    workspace = Workspace(cache_dir=tmp_path / "cache", out_dir=tmp_path / "out")
    base = dict(model="spikformer", model_config="tiny", frames=4, size=16)
    recipe = MODELS.get("spikformer").recipe_for("tiny")
    by_recipe = prepare_attack(AttackConfig(**base), workspace)
    assert by_recipe.training.lr == recipe.lr == by_recipe.config.lr  # recorded as resolved
    assert by_recipe.training.warmup_steps == recipe.warmup_steps
    explicit = prepare_attack(AttackConfig(**base, lr=1e-4), workspace)
    assert explicit.training.lr == 1e-4 and explicit.training.warmup_steps == recipe.warmup_steps
    plain = prepare_attack(AttackConfig(model="spiking-cnn", model_config="tiny", frames=4, size=16), workspace)
    assert plain.training.lr == 2e-3 and plain.training.warmup_steps == 0
