"""`snnsec evade` end to end on digits-dvs-third (every third digits-dvs sample, 16x16, T=4): robust accuracy
against the budget, obfuscation checks, records and tables, adversarial training, one-line errors."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from click.testing import CliRunner

import snnsec.model_cache as model_cache
from snnsec.attack_config import AttackConfig, Workspace
from snnsec.cli import cli
from snnsec.errors import ConfigError
from snnsec.evading import EvasionConfig, run_evasion
from snnsec.records import load_records

try:
    from digits_third import THIRD, registered
except ImportError:  # run from the repository root
    from tests.digits_third import THIRD, registered

MODEL = AttackConfig(dataset=THIRD, model_config="tiny", frames=4, size=16, epochs=8, batch_size=8, lr=1e-2)
MODEL_ARGS = ["--dataset", THIRD, "--model-config", "tiny", "-T", "4", "--size", "16", "--epochs", "8",
              "--batch-size", "8", "--lr", "0.01", "--device", "cpu"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A workspace whose cache holds the clean tiny model after the first run (1 torch thread)."""
    root = tmp_path_factory.mktemp("evade")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with registered():
        yield Workspace(cache_dir=root / "cache", out_dir=root / "out", device="cpu")
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pgd_record(workspace):
    return run_evasion(EvasionConfig(attack="pgd", budgets=(4, 16, 64), samples=60), MODEL, workspace)


def rows_of(record, role="attack", surrogate=None):
    return [r for r in record.metrics["rows"] if r["role"] == role and (surrogate is None or r["surrogate"] == surrogate)]


def test_pgd_robust_accuracy_falls_with_the_budget_and_passes_the_obfuscation_checks(pgd_record):
    m = pgd_record.metrics
    assert m["clean_accuracy"] > 0.7 and m["attacked_samples"] == 60 and m["denominator"] == 4 * 2 * 16 * 16
    robust = [r["robust_accuracy"] for r in rows_of(pgd_record)]
    assert robust == sorted(robust, reverse=True) and robust[0] > robust[-1] + 0.3, robust
    (unbounded,) = rows_of(pgd_record, "unbounded")
    assert unbounded["robust_accuracy"] <= 0.05
    random = {r["budget"]: r["robust_accuracy"] for r in rows_of(pgd_record, "random")}
    assert all(random[r["budget"]] >= r["robust_accuracy"] for r in rows_of(pgd_record))
    assert m["flags"] == [] and all(c["passed"] for c in m["checks"])
    for r in rows_of(pgd_record):  # sizes of successful examples, within the budget
        assert r["success_rate"] == pytest.approx(1 - r["robust_accuracy"])
        if r["l0_mean"] is not None:
            assert r["l0_mean"] <= r["budget"] and r["success_l0_lt_200"] == r["success_rate"]


def test_record_tables_and_plot_are_written(pgd_record, workspace):
    out = workspace.out_dir
    (record,) = [r for r in load_records(out / "records.jsonl", "evasion") if r["run_id"] == pgd_record.run_id]
    assert record["config"]["evasion"]["budgets"] == [4.0, 16.0, 64.0]
    assert record["config"]["model"]["dataset"] == THIRD and "runtime" in record["config"]["model"]
    assert record["versions"]["torch_threads"] == "1"
    table = (out / "evasion_results.md").read_text()
    assert "random (baseline)" in table and "pgd (unbounded)" in table and "| ok " in table
    assert (out / "evasion_results.png").stat().st_size > 0 and (out / "evasion_results.tex").exists()


def test_cli_evade_prints_every_budget_and_writes_json(workspace):
    out = workspace.out_dir / "cli"
    result = CliRunner().invoke(cli, ["evade", "--attack", "fgsm", "--budget", "8", "--budget", "32", "--samples",
                                      "10", "--cache-dir", str(workspace.cache_dir), "--out", str(out), *MODEL_ARGS])
    assert result.exit_code == 0, result.output
    assert "clean accuracy" in result.output and result.output.count("fgsm ") >= 2
    assert "random (baseline)" in result.output and (out / "evasion_results.md").exists()
    result = CliRunner().invoke(cli, ["evade", "--attack", "sparsefool", "--budget", "64", "--samples", "4",
                                      "--no-checks", "--json", "--cache-dir", str(workspace.cache_dir),
                                      "--out", str(out), *MODEL_ARGS])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["kind"] == "evasion" and [r["role"] for r in record["metrics"]["rows"]] == ["attack"]


def test_sda_finds_sparse_examples_and_minimal_attacks_read_every_budget(workspace):
    record = run_evasion(EvasionConfig(attack="sda", budgets=(2, 8, 32), samples=8,
                                       options=(("max_iterations", 20),)), MODEL, workspace)
    rows = rows_of(record)
    unbounded = rows_of(record, "unbounded")[0]
    assert unbounded["success_rate"] >= 0.75
    assert [r["success_rate"] for r in rows] == sorted(r["success_rate"] for r in rows)
    assert unbounded["l0_median"] < 64  # sparse: a few dozen flips of 2048 elements at most


def test_surrogate_sweep_reports_the_best_over_surrogates(workspace):
    record = run_evasion(EvasionConfig(attack="pgd", budgets=(16,), samples=20, checks=False,
                                       surrogates=("model", "sigmoid:1", "rate")), MODEL, workspace)
    per = {r["surrogate"]: r["robust_accuracy"] for r in rows_of(record)}
    (best,) = rows_of(record, "best")
    assert set(per) == {"model", "sigmoid:1", "rate"}
    assert best["robust_accuracy"] <= min(per.values())


def test_targeted_attack_counts_hits_on_the_target(workspace):
    record = run_evasion(EvasionConfig(attack="pgd", budgets=(64,), samples=20, target=3, checks=False), MODEL,
                         workspace)
    (row,) = rows_of(record)
    assert row["success_rate"] > 0.2 and row["robust_accuracy"] <= 1 - row["success_rate"]


def test_adversarial_training_raises_pgd_robust_accuracy(workspace):
    config = EvasionConfig(attack="pgd", budgets=(16, 64), samples=100, checks=False)
    plain = run_evasion(config, MODEL, workspace)
    hardened = run_evasion(replace(config, defense="adversarial-training",
                                   defense_options=(("budget", 64), ("ratio", 1.0), ("steps", 5))), MODEL, workspace)
    area = lambda record: sum(r["robust_accuracy"] for r in rows_of(record))  # noqa: E731
    assert area(hardened) > area(plain) + 0.05, (rows_of(plain), rows_of(hardened))
    assert hardened.metrics["clean_accuracy"] > 0.7
    assert hardened.config["adversarial_training"]["budget"] == 64


def test_bad_evasion_input_fails_in_one_line_before_training(workspace, monkeypatch):
    def no_training(*_a, **_k):
        raise AssertionError("trained before checking the input")

    monkeypatch.setattr(model_cache, "train", no_training)
    args = ["evade", "--cache-dir", str(workspace.cache_dir / "fresh"), "--out", str(workspace.out_dir / "bad"),
            *MODEL_ARGS]
    for extra, why in [(["--budget", "2.5"], "whole number"), (["--norm", "linf"], "binary inputs take l0"),
                       (["--attack", "sda", "--encoding", "counts"], "works on binary inputs, not counts"),
                       (["--surrogate", "tanh"], "unknown surrogate"), (["--attack-opt", "stepz=2"], "has no option"),
                       (["--target", "x"], "a class number or 'random'"), (["--samples", "0"], "--samples must be"),
                       (["--attack", "random", "--surrogate", "pdsg"], "uses no gradients"),
                       (["--defense-opt", "budget=3"], "--defense-opt needs --defense"),
                       (["--defense", "adversarial-training", "--defense-opt", "ratio=2"], "ratio must be in")]:
        result = CliRunner().invoke(cli, [*args, *extra])
        assert result.exit_code != 0, extra
        assert why in result.output and "Traceback" not in result.output, (extra, result.output)
        assert sum(line.startswith("Error:") for line in result.output.splitlines()) == 1, result.output
    with pytest.raises(ConfigError, match="not a class of"):
        run_evasion(EvasionConfig(target=10, samples=2), MODEL, workspace)


def test_list_evasions_names_every_attack_with_its_domains():
    result = CliRunner().invoke(cli, ["list", "evasions"])
    assert result.exit_code == 0
    from snnsec.attacks.evasion import EVASIONS

    lines = {line.split()[0]: line for line in result.output.splitlines()}
    assert list(lines) == EVASIONS.names()
    assert {"fgsm", "pgd", "sda", "sparsefool", "random", "patch", "dash", "mf-dash", "random-events"} <= set(lines)
    assert "binary" in lines["sda"] and "events" in lines["dash"]


def test_transfer_scores_the_examples_on_another_model_and_writes_the_matrix(workspace):
    record = run_evasion(EvasionConfig(attack="pgd", budgets=(64,), samples=20, checks=False,
                                       transfer_to=("resnet18:tiny",)), MODEL, workspace)
    (own,) = rows_of(record)
    (moved,) = rows_of(record, "transfer")
    assert moved["transfer_to"] == "resnet18:tiny" and moved["budget"] == own["budget"]  # an ANN baseline
    assert moved["robust_accuracy"] >= own["robust_accuracy"] - 1e-9 or own["robust_accuracy"] < 0.5
    matrix = (workspace.out_dir / "evasion_transfer.md").read_text()
    assert "resnet18:tiny" in matrix and "spiking-cnn" in matrix
    with pytest.raises(ConfigError, match="has no config 'huge'"):
        run_evasion(EvasionConfig(transfer_to=("sew-resnet:huge",)), MODEL, workspace)


def test_universal_patch_is_binary_confined_to_its_area_and_needs_a_target(workspace):
    record = run_evasion(EvasionConfig(attack="patch", budgets=(0.05,), samples=20, target=3,
                                       options=(("epochs", 1), ("max_iterations", 5))), MODEL, workspace)
    (row,) = rows_of(record)
    side = int((0.05 * 16 * 16) ** 0.5)
    assert row["norm"] == "area" and row["l0_mean"] is None or row["l0_mean"] <= 4 * 2 * side * side
    with pytest.raises(ConfigError, match="pass --target CLASS"):
        run_evasion(EvasionConfig(attack="patch", budgets=(0.05,)), MODEL, workspace)
    with pytest.raises(ConfigError, match="area budgets are for patch attacks"):
        run_evasion(EvasionConfig(attack="pgd", norm="area", budgets=(0.05,)), MODEL, workspace)


def test_event_filter_runs_every_attack_static_and_adaptive(workspace):
    record = run_evasion(EvasionConfig(attack="dash", budgets=(2000,), samples=5, event_filter="mask",
                                       filter_options=(("threshold", 20),)), MODEL, workspace)
    modes = {r["mode"]: r for r in rows_of(record)}
    assert set(modes) == {"static", "adaptive"}
    assert modes["adaptive"]["success_rate"] >= modes["static"]["success_rate"]  # filter-aware is at least as strong
    assert record.config["evasion"]["event_filter"]["filter"] == "mask"
    table = (workspace.out_dir / "evasion_results.md").read_text()
    assert "mask (static)" in table and "mask (adaptive)" in table
    with pytest.raises(ConfigError, match="needs --slicing time"):
        run_evasion(EvasionConfig(attack="pgd", event_filter="ba"), replace(MODEL, slicing="count"), workspace)


def test_frame_attack_faces_an_event_filter_as_realised_events(workspace):
    """PGD's flips become events in front of the background-activity filter; crafted through the filter (BPDA) it
    is at least as strong as crafted without it, and every row reports the events it edited."""
    record = run_evasion(EvasionConfig(attack="pgd", budgets=(32,), samples=12, event_filter="ba"), MODEL,
                         workspace)
    rows = rows_of(record)
    modes = {(r["mode"], r["budget"]): r for r in rows}
    assert {m for m, _ in modes} == {"static", "adaptive"}
    assert modes["adaptive", 32]["success_rate"] >= modes["static", 32]["success_rate"]
    unbounded = {r["mode"]: r for r in rows_of(record, "unbounded")}
    assert unbounded["adaptive"]["robust_accuracy"] <= unbounded["static"]["robust_accuracy"]
    static_checks = {c["check"] for c in record.metrics["checks"] if c["curve"].endswith("static")}
    assert static_checks == {"monotone"}  # a static attack weak behind the filter is the filter, not obfuscation
    for r in rows:
        assert r["l0_mean"] is None or r["l0_mean"] <= r["budget"]
        assert r["events_mean"] is None or r["events_mean"] >= 1
    assert "ba (adaptive)" in (workspace.out_dir / "evasion_results.md").read_text()
