"""Sweeps expand a grid, run each attack once and skip what is already recorded (resume after a kill)."""
import json
import re

import pytest
from click.testing import CliRunner

from snnsec.cli import cli
from snnsec.errors import ConfigError, SnnsecError
from snnsec.sweep import expand, load_spec


def write_spec(path, **spec):
    path.write_text(json.dumps(spec))
    return path


def test_expand_is_the_grid_product(tmp_path):
    spec = load_spec(write_spec(tmp_path / "s.json", base={"epochs": 1},
                                grid={"trigger": ["static", "moving"], "poison_rate": [0.05, 0.1]}))
    configs = expand(spec)
    assert [(c.trigger, c.poison_rate) for c in configs] == [
        ("static", 0.05), ("static", 0.1), ("moving", 0.05), ("moving", 0.1)]
    assert all(c.epochs == 1 for c in configs)


def test_expand_fills_dataset_defaults_as_the_cli_does(tmp_path):
    from snnsec.attack_config import AttackConfig

    (audio,) = expand({"base": {"dataset": "spoken-digits"}, "grid": {"poison_rate": [0.1]}})
    assert (audio.model, audio.slicing, audio.encoding, audio.trigger) == ("delay-snn", "window", "counts", "band")
    (by_model,) = expand({"grid": {"model": ["delay-snn"]}})
    assert by_model.dataset == "spoken-digits"
    (dvs,) = expand({"base": {"epochs": 1}, "grid": {"trigger": ["static"]}})
    assert dvs == AttackConfig(epochs=1)  # DVS runs keep their configs (and run ids)


@pytest.mark.parametrize("spec, message", [
    ({"grid": {"colour": [1]}}, "unknown field(s) ['colour']"),
    ({"grid": {"trigger": []}}, "non-empty list"),
])
def test_bad_specs(tmp_path, spec, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_spec(write_spec(tmp_path / "s.json", **spec))


@pytest.mark.slow
def test_sweep_runs_then_skips(tmp_path):
    spec = write_spec(tmp_path / "tiny.json", name="tiny",
                      base={"model_config": "tiny", "epochs": 1, "frames": 4, "size": 16},
                      grid={"poison_rate": [0.05, 0.1]})
    args = ["sweep", str(spec), "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out")]
    first = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert first.exit_code == 0 and "2 new run(s), 0 skipped" in first.output
    again = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert "0 new run(s), 2 skipped" in again.output
    table = (tmp_path / "out" / "attack_results.md").read_text()
    assert table.count("| digits-dvs") == 2


@pytest.mark.parametrize("defenses, message", [
    (["no-such-defense"], "unknown defense 'no-such-defense'"),
    ([{"defense": "strip", "options": {"overlays": 0}}], "overlays must be >= 1"),
    ([{"name": "strip"}], "needs 'defense'"),
])
def test_bad_defense_entries(tmp_path, defenses, message):
    with pytest.raises(SnnsecError, match=re.escape(message)):
        load_spec(write_spec(tmp_path / "s.json", grid={"trigger": ["static"]}, defenses=defenses))


@pytest.mark.slow
def test_sweep_runs_defenses_then_skips(tmp_path):
    spec = write_spec(tmp_path / "d.json", name="d",
                      base={"model_config": "tiny", "epochs": 1, "frames": 4, "size": 16},
                      grid={"trigger": ["static"]},
                      defenses=["pruning", {"defense": "fine-tuning", "options": {"epochs": 1}}])
    args = ["sweep", str(spec), "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out")]
    first = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert first.exit_code == 0 and "3 new run(s), 0 skipped" in first.output
    again = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert "0 new run(s), 3 skipped" in again.output
    table = (tmp_path / "out" / "defense_results.md").read_text()
    assert "pruning" in table and "fine-tuning" in table
