"""`snnsec attack` works end to end for every trigger, poisoning mode and injection level (tiny runs)."""
import json

import pytest
from click.testing import CliRunner

from snnsec.attacks import TRIGGERS
from snnsec.cli import cli


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("matrix-cache")


def attack(cache, out, *args):
    result = CliRunner().invoke(
        cli, ["attack", "--model-config", "tiny", "--epochs", "1", "--frames", "4", "--size", "16", "--json",
              "--cache-dir", str(cache),
              "--out", str(out), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def check_record(record):
    m = record["metrics"]
    for key in ("ca_clean", "ca_backdoor", "asr", "ssim"):
        assert 0.0 <= m[key] <= 1.0
    assert m["energy_mj"] > 0 and m["sops"] > 0 and m["ann_energy_mj"] > 0
    assert record["config"]["trigger_params"]["trigger"] == record["config"]["trigger"]


@pytest.mark.slow
@pytest.mark.parametrize("trigger", [t for t in TRIGGERS.names() if t != "dynamic" and 2 in TRIGGERS.get(t).dims])
def test_every_frame_trigger(trigger, shared_cache, tmp_path):
    record = attack(shared_cache, tmp_path, "--trigger", trigger, "--trigger-size", "0.2")
    check_record(record)
    if trigger == "smart":  # resolved from the data and recorded
        assert record["config"]["trigger_params"]["origin"] is not None


@pytest.mark.slow
def test_dynamic_trigger_trains_jointly_and_is_cached(shared_cache, tmp_path):
    first = attack(shared_cache, tmp_path, "--trigger", "dynamic", "--polarity", "3")
    check_record(first)
    assert first["config"]["trigger_params"]["gamma"] > 0
    again = attack(shared_cache, tmp_path, "--trigger", "dynamic", "--polarity", "3")  # generator reloaded
    assert again["metrics"]["asr"] == first["metrics"]["asr"]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["all-to-all", "clean-label"])
def test_poisoning_modes(mode, shared_cache, tmp_path):
    record = attack(shared_cache, tmp_path, "--mode", mode, "--poison-rate", "0.05")
    check_record(record)
    expected = 323 if mode == "clean-label" else 359  # clean-label excludes target-class test samples
    assert record["metrics"]["asr_samples"] == expected


@pytest.mark.slow
@pytest.mark.parametrize("trigger", ["static", "moving", "flashy"])
def test_event_level_injection(trigger, shared_cache, tmp_path):
    record = attack(shared_cache, tmp_path, "--trigger", trigger, "--injection", "event")
    check_record(record)
    assert record["config"]["injection"] == "event" and record["config"]["trigger_params"]["injection"] == "event"


def test_event_injection_rejects_frame_only_triggers(tmp_path):
    result = CliRunner().invoke(cli, ["attack", "--trigger", "blended", "--injection", "event",
                                      "--cache-dir", str(tmp_path)])
    assert result.exit_code != 0 and "static" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("trigger, injection", [("static", "frame"), ("smart", "frame"), ("moving", "event")])
def test_show_trigger_writes_png_and_gif(trigger, injection, shared_cache, tmp_path):
    result = CliRunner().invoke(cli, ["show-trigger", "--trigger", trigger, "--injection", injection,
                                      "--cache-dir", str(shared_cache), "--out", str(tmp_path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    paths = result.output.split()
    assert [p.rsplit(".", 1)[1] for p in paths] == ["png", "gif"]
    from PIL import Image

    assert Image.open(paths[0]).format == "PNG"
    gif = Image.open(paths[1])
    assert gif.format == "GIF" and gif.n_frames == 10  # show-trigger uses the dataset default T
