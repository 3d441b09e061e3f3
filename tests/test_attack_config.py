"""resolve_attack: one construction path for checking a config and preparing it; poisoned-index files."""
from __future__ import annotations

import pytest

from snnsec.attack_config import AttackConfig, resolve, resolve_attack
from snnsec.errors import ConfigError
from snnsec.run_files import poisoned_indices_path, read_poisoned_indices, save_poisoned_indices


def test_resolve_builds_what_the_config_names():
    resolved = resolve_attack(AttackConfig(frames=4, size=16, lr=0.01, poison_rate=0.2, seed=3))
    assert resolved.config == resolve(AttackConfig(frames=4, size=16, lr=0.01, poison_rate=0.2, seed=3))
    assert resolved.config.trigger_value == 1.0  # binary frames
    assert (resolved.framing.frames, resolved.framing.size) == (4, (16, 16))
    assert (resolved.poison.rate, resolved.poison.seed) == (0.2, 3)
    assert (resolved.input_spec.frames, resolved.input_spec.height, resolved.input_spec.num_classes) == (4, 16, 10)
    assert (resolved.training.lr, resolved.training.seed) == (0.01, 3)
    assert resolved.trigger.params()["value"] == 1.0 and resolved.trigger.params()["size"] == 0.1


def test_count_frames_read_the_trigger_value_from_the_data():
    resolved = resolve_attack(AttackConfig(encoding="counts"))
    assert resolved.config.trigger_value is None  # prepare_attack reads it from the training frames
    assert resolved.trigger.params()["value"] == 1.0  # checked with a stand-in value


def test_a_zero_trigger_value_fails_before_any_data_is_read():
    # It used to pass resolve (0 stood in as 1) and fail only after the frames were loaded.
    with pytest.raises(ConfigError, match="trigger value must be > 0, got 0.0"):
        resolve(AttackConfig(trigger_value=0.0))


def test_poisoned_indices_round_trip_and_a_damaged_file_is_one_line(tmp_path):
    path = save_poisoned_indices(tmp_path, "abc", [5, 1, 9])
    assert path == poisoned_indices_path(tmp_path, "abc") == tmp_path / "runs" / "abc.poisoned.json"
    assert read_poisoned_indices(path).tolist() == [5, 1, 9]
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="poisoned-indices file .* cannot be read"):
        read_poisoned_indices(path)


def test_default_workspace_reads_the_cache_dir_at_call_time(monkeypatch, tmp_path):
    """`prepare_attack(config)` without a workspace uses SNNSEC_CACHE_DIR as set when it is called."""
    import snnsec.attack_setup as attack_setup
    from snnsec.experiment import AttackConfig

    seen = []

    class Seen(Exception):
        pass

    def capture(resolved, workspace):
        seen.append(workspace.cache_dir)
        raise Seen

    monkeypatch.setattr(attack_setup, "load_attack_data", capture)
    monkeypatch.setenv("SNNSEC_CACHE_DIR", str(tmp_path / "later"))
    with pytest.raises(Seen):
        attack_setup.prepare_attack(AttackConfig())
    assert seen == [tmp_path / "later"]
