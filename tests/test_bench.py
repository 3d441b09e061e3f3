"""`snnsec bench`: the grid, its keys, validation before any run, resume after kill -9, two benches at
once, and the Ray path on a local instance."""
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from click.testing import CliRunner

from snnsec.bench import jobs_of, read_config
from snnsec.cli import cli
from snnsec.errors import ConfigError, SnnsecError
from snnsec.report import write_report
from snnsec.results_db import ResultsDB
from snnsec.verify import verify_folder

TINY = {"model_config": "tiny", "epochs": 1, "frames": 4, "size": 16}
GRID = {"name": "tiny", "seeds": [0, 1], "base": TINY,
        "attacks": [{"grid": {"trigger": ["static"], "poison_rate": [0.05, 0.1]}, "defenses": ["pruning"]}],
        "evasions": [{"attack": "fgsm", "budgets": [10], "samples": 4, "checks": False}]}


def test_grid_order_and_size():
    jobs = jobs_of(GRID)
    assert len(jobs) == 2 * (2 * 2 + 1)  # seeds x (rates x (attack + defense) + evasion)
    assert [j.kind for j in jobs[:5]] == ["attack", "defense", "attack", "defense", "evasion"]
    assert {j.attack.seed for j in jobs[5:]} == {1} and all(j.defense.seed == 1 for j in jobs[5:] if j.defense)
    assert jobs[4].evasion.seed == 0 and jobs[4].attack.trigger == "static"  # the clean model's config


def test_keys_same_config_same_key_any_change_new_key():
    keys = [j.key for j in jobs_of(GRID)]
    assert keys == [j.key for j in jobs_of(json.loads(json.dumps(GRID)))] and len(set(keys)) == len(keys)
    base = jobs_of(GRID)
    for change in ({"base": {**TINY, "epochs": 2}}, {"seeds": [3, 1]},
                   {"attacks": [{**GRID["attacks"][0], "defenses": [{"defense": "pruning", "options": {"rate": 0.3}}]}]},
                   {"evasions": [{**GRID["evasions"][0], "samples": 5}]}):
        changed = jobs_of({**GRID, **change})
        assert {j.key for j in changed} != {j.key for j in base}, change
    # the key is the request id its record carries: the attack's is the sweep's config hash
    from dataclasses import asdict

    from snnsec.records import config_hash

    assert base[0].key == config_hash(asdict(base[0].attack))


def test_yaml_and_json_and_sweep_spec_agree(tmp_path):
    (tmp_path / "g.json").write_text(json.dumps(GRID))
    (tmp_path / "g.yaml").write_text(
        "name: tiny\nseeds: [0, 1]\nbase: {model_config: tiny, epochs: 1, frames: 4, size: 16}\n"
        "attacks:\n  - grid: {trigger: [static], poison_rate: [0.05, 0.1]}\n    defenses: [pruning]\n"
        "evasions:\n  - {attack: fgsm, budgets: [10], samples: 4, checks: false}\n")
    assert read_config(tmp_path / "g.yaml") == read_config(tmp_path / "g.json")
    sweep = {"base": {**TINY, "seed": 1}, "grid": {"poison_rate": [0.05, 0.1]}, "defenses": ["pruning"]}
    assert [j.key for j in jobs_of(sweep)] == [j.key for j in jobs_of(GRID)[5:9]]


@pytest.mark.parametrize("change, message", [
    ({"colour": 1}, "unknown key(s) ['colour']"),
    ({"seeds": [0, "1"]}, "seeds must be integers"),
    ({"seeds": []}, "seeds must be a non-empty list"),
    ({"attacks": [], "evasions": []}, "has no runs"),
    ({"attacks": [{"grid": {"trigger": ["nosuch"]}}]}, "run 1/"),
    ({"attacks": [{"grid": {"poison_rate": [2.0]}}]}, "poison"),
    ({"attacks": [{"grid": {"trigger": ["static"]}, "defenses": ["nosuch"]}]}, "unknown defense 'nosuch'"),
    ({"evasions": [{"attack": "pgd", "budgets": [-1]}]}, "budget must be > 0"),
    ({"evasions": [{"attack": "pgd", "colour": 1}]}, "unknown key(s) ['colour']"),
    ({"models": [{"name": "x"}]}, "each model is a name or a mapping"),
])
def test_bad_configs_fail_in_one_line_before_any_run(change, message):
    with pytest.raises(SnnsecError, match=re.escape(message)) as err:
        jobs_of({**GRID, **change})
    assert "\n" not in str(err.value)


def test_bad_file_one_line(tmp_path):
    (tmp_path / "b.yaml").write_text("seeds: [0\n")
    result = CliRunner().invoke(cli, ["bench", str(tmp_path / "b.yaml"), "--dry-run"])
    assert result.exit_code != 0 and "not valid YAML (line" in result.output and "Traceback" not in result.output


def _bench(config, out, cache, *extra, **popen):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SNNSEC_PROGRESS": "0"}
    return subprocess.Popen([sys.executable, "-m", "snnsec.cli", "bench", str(config), "--out", str(out),
                             "--cache-dir", str(cache), *extra], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **popen)


def _rows(out):
    records = ResultsDB.of(out).records()
    return Counter(r["config"]["request_id"] for r in records), records


@pytest.mark.slow
def test_kill_9_at_random_points_then_rerun_gives_one_row_per_run(tmp_path):
    config = tmp_path / "g.json"
    config.write_text(json.dumps({**GRID, "seeds": [0], "base": {**TINY, "epochs": 2}}))
    out, cache = tmp_path / "out", tmp_path / "cache"
    rng = random.Random(os.getpid())
    for _ in range(3):
        proc = _bench(config, out, cache, start_new_session=True)
        time.sleep(rng.uniform(3.0, 9.0))  # imports take ~3 s: kills land in framing, training, records
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done = _bench(config, out, cache)
    output, _ = done.communicate(timeout=600)
    assert done.returncode == 0, output
    keys = {j.key for j in jobs_of(json.loads(config.read_text()))}
    counts, records = _rows(out)
    assert set(counts) == keys and set(counts.values()) == {1}
    assert len({r["run_id"] for r in records}) == len(keys)
    summaries = {p.name: p.read_bytes() for p in out.glob("summary_*")}  # the bench ends with its report
    assert {"summary_attacks.md", "summary_defenses.md"} <= set(summaries)
    write_report(out)
    assert {p.name: p.read_bytes() for p in out.glob("summary_*")} == summaries
    again = _bench(config, out, cache).communicate(timeout=300)[0]
    assert f"0 new run(s), {len(keys)} skipped" in again


@pytest.mark.slow
def test_two_benches_at_once_share_the_work_and_lose_nothing(tmp_path):
    config = tmp_path / "g.json"
    config.write_text(json.dumps(GRID))
    out, cache = tmp_path / "out", tmp_path / "cache"
    procs = [_bench(config, out, cache) for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    new = [int(re.search(r"(\d+) new run\(s\)", o).group(1)) for o in outputs]
    keys = {j.key for j in jobs_of(GRID)}
    counts, _ = _rows(out)
    assert set(counts) == keys and set(counts.values()) == {1}
    assert sum(new) == len(keys)  # no run done twice
    lines = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert len(lines) == len(keys)
    trainings = [line for o in outputs for line in o.splitlines() if re.search(r"model: training", line)]
    assert len(trainings) == len(list((cache / "models").glob("*.safetensors")))  # each model trained once


@pytest.mark.slow
def test_ray_path_on_a_local_instance(tmp_path):
    pytest.importorskip("ray")
    config = tmp_path / "g.json"
    config.write_text(json.dumps({**GRID, "seeds": [0]}))
    out = tmp_path / "out"
    proc = _bench(config, out, tmp_path / "cache", "--ray-address", "local", "--ray-cpus", "1")
    output = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, output
    keys = {j.key for j in jobs_of(json.loads(config.read_text()))}
    counts, records = _rows(out)
    assert set(counts) == keys and set(counts.values()) == {1}
    assert f"{len(keys)} new run(s), 0 skipped" in output
    assert len((out / "records.jsonl").read_text().splitlines()) == len(keys)  # each run recorded once
    attack = next(r for r in records if r["kind"] == "attack")
    assert attack["versions"]["torch_threads"] == "1"  # the task's CPU request became torch's threads
    found = verify_folder(out, strict=True)  # run files and published models landed in the results folder
    assert found.ok and found.artifacts >= len(keys), found.problems


def test_a_bench_under_torchrun_is_refused_in_one_line(monkeypatch, tmp_path):
    from snnsec.attack_config import Workspace
    from snnsec.bench import run_bench

    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it: each process would pick runs of its own
    with pytest.raises(ConfigError, match="cannot run under torchrun"):
        run_bench(jobs_of(GRID), Workspace(out_dir=tmp_path / "out", cache_dir=tmp_path / "cache"))
    assert not (tmp_path / "out").exists()


def test_a_defense_takes_the_runs_seed_unless_its_entry_pins_one():
    grid = {**GRID, "evasions": [], "attacks": [{"grid": {"trigger": ["static"], "poison_rate": [0.1]},
                                                 "defenses": ["pruning", {"defense": "strip", "seed": 0}]}]}
    defenses = [(j.attack.seed, j.defense.defense, j.defense.seed) for j in jobs_of(grid) if j.kind == "defense"]
    assert defenses == [(0, "pruning", 0), (0, "strip", 0), (1, "pruning", 1), (1, "strip", 0)]
