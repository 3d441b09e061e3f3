"""The README's main job with its defaults: the backdoor works and costs almost no clean accuracy."""
import json

import pytest
from click.testing import CliRunner

from snnsec.cli import cli


@pytest.mark.slow
def test_default_attack_reaches_high_asr_at_clean_accuracy(tmp_path, monkeypatch):
    monkeypatch.setenv("SNNSEC_CACHE_DIR", str(tmp_path / "cache"))
    result = CliRunner().invoke(cli, ["attack", "--json", "--out", str(tmp_path / "reports")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    m = record["metrics"]
    assert record["config"]["trigger"] == "static" and record["config"]["poison_rate"] == 0.1
    assert m["asr"] >= 0.90
    assert m["ca_clean"] >= 0.90
    assert abs(m["ca_backdoor"] - m["ca_clean"]) <= 0.03
    assert m["asr_clean_model"] <= 0.2  # the trigger alone does not flip a clean model
