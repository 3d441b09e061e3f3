"""Reports from the results database: mean ± std formatting, grouping over seeds, tables that read the
database (and catch it up with records.jsonl), and byte-for-byte reproducible `snnsec report` output.
Hand-made records put through ResultsDB.put or append_record; no training."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from snnsec.cli import cli
from snnsec.defending import write_defense_tables
from snnsec.experiment import write_attack_tables
from snnsec.records import RunRecord, append_record, config_hash, write_tables
from snnsec.report import Metric, format_mean_std, group_runs, summarize, summary_texts, write_report
from snnsec.results_db import ResultsDB, load_results

REPO = Path(__file__).resolve().parent.parent


def _record(kind: str, config: dict, metrics: dict, minute: int) -> dict:
    config = {**config, "request_id": config_hash({"request": config})}
    return RunRecord(kind=kind, run_id=config_hash(config), config=config, metrics=metrics,
                     started=f"2026-12-01T10:{minute:02d}:00+00:00", finished=f"2026-12-01T10:{minute:02d}:30+00:00",
                     duration_s=30, versions={"python": "3.11"}, artifacts={}).to_dict()


def attack_config(seed: int = 0, trigger: str = "static", rate: float = 0.1, lr: float = 0.002, **over) -> dict:
    return {"dataset": "digits-dvs", "model": "spiking-cnn", "model_config": "small", "trigger": trigger,
            "injection": "frame", "position": "bottom-right", "trigger_size": 0.1, "mode": "all-to-one",
            "poison_rate": rate, "frames": 10, "epochs": 8, "lr": lr, "seed": seed, "target": 0,
            "trigger_params": {"polarity": 1, "seed": seed, "trigger": trigger}, **over}


def attack_record(seed: int = 0, asr: float = 0.9, minute: int = 0, **config) -> dict:
    metrics = {"ca_clean": 0.98, "ca_backdoor": 0.96 + 0.001 * seed, "asr": asr, "ssim": 0.995, "energy_mj": 0.00125,
               "ann_energy_mj": 0.0052, "firing_rate": 0.05}
    return _record("attack", attack_config(seed, **config), metrics, minute)


def defense_record(defense: str = "strip", seed: int = 0, attack_seed: int = 0, asr_after: float = 0.1,
                   minute: int = 0, auroc: float | None = 0.9) -> dict:
    attack = {**attack_config(attack_seed), "request_id": f"req{attack_seed}"}
    config = {"attack": attack, "attack_run_id": f"attack{attack_seed}", "defense": {"defense": defense},
              "reserve_rate": 0.05, "seed": seed}
    metrics = {"family": "input filter", "ca_before": 0.97, "asr_before": 1.0, "ca_after": 0.9, "asr_after": asr_after,
               "der": 0.9, "auroc": auroc, "tpr": 0.8, "fpr": 0.1, "defense_time_s": 1.0}
    return _record("defense", config, metrics, minute)


def evasion_record(seed: int = 0, model_seed: int = 0, robust: tuple[float, float] = (0.8, 0.3), minute: int = 0,
                   attack: str = "pgd") -> dict:
    config = {"model": {"dataset": "digits-dvs", "model": "spiking-cnn", "model_config": "small", "frames": 10,
                        "epochs": 8, "seed": model_seed},
              "evasion": {"attack": attack, "budgets": [10.0, 50.0], "seed": seed, "target": None, "samples": 100,
                          "surrogates": ["model"]},
              "attack_params": {"attack": attack, "steps": 10}, "adversarial_training": None}
    rows = [{"attack": attack, "role": "attack", "surrogate": "model", "norm": "l0", "budget": b, "budget_label": f"{b:g}",
             "robust_accuracy": r, "success_rate": 1 - r, "samples": 100} for b, r in zip((10.0, 50.0), robust)]
    metrics = {"clean_accuracy": 0.98, "rows": rows, "norm": "l0", "domain": "binary", "flags": [], "checks": []}
    return _record("evasion", config, metrics, minute)


def planted_db(folder: Path) -> list[dict]:
    """A database (no records.jsonl) with attacks over three seeds and two rates, defenses over seeds of the
    defense and of the attack, and evasion over seeds of the evasion and of the model."""
    records = [attack_record(seed, asr=0.90 + 0.01 * seed, minute=seed) for seed in range(3)]
    records += [attack_record(0, rate=0.05, asr=0.4, minute=5)]
    records += [defense_record("strip", seed=s, attack_seed=a, asr_after=0.1 + 0.05 * (s + a), minute=10 + 2 * s + a)
                for s, a in ((0, 0), (1, 0), (0, 1))]
    records += [defense_record("fine-pruning", auroc=None, minute=20)]
    records += [evasion_record(0, 0, (0.8, 0.3), minute=30), evasion_record(1, 2, (0.9, 0.5), minute=31)]
    db = ResultsDB.of(folder)
    for rec in records:
        assert db.put(rec) == "added"
    return records


# ---- mean ± std -------------------------------------------------------------------------------------------


def test_mean_std_formatting():
    percent = Metric("ASR (%)", "metrics.asr", percent=True)
    assert format_mean_std([0.973], percent) == "97.3 ± -"  # n=1: the deviation is undefined
    assert format_mean_std([0.973], percent, latex=True) == "$97.3 \\pm$ -"
    assert format_mean_std([0.97, 0.975, 0.98], percent) == "97.5 ± 0.5"  # sample std (ddof=1)
    assert format_mean_std([0.97, 0.975, 0.98], percent, latex=True) == "$97.5 \\pm 0.5$"
    assert format_mean_std([], percent) == "-"
    assert format_mean_std([0.0, 0.0], percent) == "0.0 ± 0.0"
    ssim = Metric("SSIM", "metrics.ssim", decimals=3)
    assert format_mean_std([0.99, 0.98], ssim) == "0.985 ± 0.007"
    energy = Metric("Energy (uJ)", "metrics.energy_mj", scale=1000.0)  # three significant digits of the mean
    assert format_mean_std([0.00125, 0.00135], energy) == "1.30 ± 0.07"
    assert format_mean_std([0.0581, 0.0583], energy) == "58.2 ± 0.1"


# ---- grouping ---------------------------------------------------------------------------------------------


def test_runs_differing_only_in_seeds_merge_and_any_other_difference_splits():
    seeds = [attack_record(seed, minute=seed) for seed in range(3)]
    other_rate = attack_record(0, rate=0.05, minute=4)
    other_lr = attack_record(0, lr=0.01, minute=5)  # not a label column: named in "Other config"
    groups = group_runs([*seeds, other_rate, other_lr])
    assert sorted(len(g.runs) for g in groups) == [1, 1, 3]
    summary = summarize([*seeds, other_rate, other_lr], "attack")
    md = summary_texts(summary)["md"]
    assert "| 3 |" in md and "Rate" in summary.label_titles and "Other config" in summary.label_titles
    assert "lr=0.01" in md and "lr=0.002" in md
    # defense: the defense's seed and the attack's seed both merge
    defenses = [defense_record("strip", s, a, minute=i) for i, (s, a) in enumerate(((0, 0), (1, 0), (0, 1)))]
    assert [len(g.runs) for g in group_runs(defenses)] == [3]
    assert len(group_runs([*defenses, defense_record("abl")])) == 2
    # evasion: the evasion's seed and the model's seed merge; rows per budget
    evasions = [evasion_record(0, 0, minute=0), evasion_record(1, 2, (0.6, 0.1), minute=1)]
    assert [len(g.runs) for g in group_runs(evasions)] == [1 + 1]
    rows = summarize(evasions, "evasion").rows
    assert [(r.labels[-1], len(r.runs)) for r in rows] == [("10", 2), ("50", 2)]  # one row per budget
    assert format_mean_std(rows[0].values[1], Metric("Robust (%)", "row.robust_accuracy", percent=True)) == "70.0 ± 14.1"


def test_summary_tables_hold_mean_std_n_and_latex(tmp_path):
    planted_db(tmp_path)
    write_report(tmp_path)
    attacks = (tmp_path / "summary_attacks.md").read_text(encoding="utf-8")
    assert "91.0 ± 1.0" in attacks  # ASR over seeds 0, 1, 2: 90, 91, 92
    assert "40.0 ± -" in attacks  # rate 0.05: one run
    tex = (tmp_path / "summary_attacks.tex").read_text(encoding="utf-8")
    assert "$91.0 \\pm 1.0$" in tex and "$40.0 \\pm$ -" in tex
    defenses = (tmp_path / "summary_defenses.csv").read_text(encoding="utf-8").splitlines()
    header = defenses[0].split(",")
    strip = next(line for line in defenses if ",strip," in line).split(",")
    assert strip[header.index("n")] == "3" and strip[header.index("ASR after (%)")] == "13.3 ± 2.9"  # 10, 15, 15
    fine_pruning = next(line for line in defenses if "fine-pruning" in line).split(",")
    assert fine_pruning[header.index("AUROC")] == "-"  # no run has it
    evasion = (tmp_path / "summary_evasion.md").read_text(encoding="utf-8")
    assert "85.0 ± 7.1" in evasion and "40.0 ± 14.1" in evasion
    for stem in ("summary_attacks", "summary_defenses", "summary_evasion"):
        assert (tmp_path / f"{stem}.png").read_bytes().startswith(b"\x89PNG")


# ---- the database as the source ---------------------------------------------------------------------------


def _outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())
            if p.suffix in (".md", ".csv", ".tex", ".png", ".html")}


def test_report_is_byte_for_byte_reproducible_from_the_database(tmp_path):
    planted_db(tmp_path)
    result = CliRunner().invoke(cli, ["report", "--out", str(tmp_path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    first = _outputs(tmp_path)
    assert {"attack_results.md", "defense_results.png", "evasion_results.csv", "summary_attacks.png",
            "summary_defenses.tex", "summary_evasion.md"} <= set(first)
    CliRunner().invoke(cli, ["report", "--out", str(tmp_path)], catch_exceptions=False)
    assert _outputs(tmp_path) == first  # run twice
    for name in first:
        (tmp_path / name).unlink()
    CliRunner().invoke(cli, ["report", "--out", str(tmp_path)], catch_exceptions=False)
    assert _outputs(tmp_path) == first  # outputs deleted, rebuilt
    copy = tmp_path / "elsewhere"
    copy.mkdir()
    shutil.copy(tmp_path / "results.sqlite", copy / "results.sqlite")
    write_report(copy)
    assert _outputs(copy) == first  # another folder, the same rows


def test_report_does_not_need_records_jsonl_once_the_database_holds_the_runs(tmp_path):
    for rec in [attack_record(s, minute=s) for s in range(2)] + [defense_record(minute=5)]:
        append_record(tmp_path / "records.jsonl", RunRecord(**rec))
    write_report(tmp_path)
    before = _outputs(tmp_path)
    (tmp_path / "records.jsonl").unlink()
    write_report(tmp_path)
    assert _outputs(tmp_path) == before


def test_tables_read_the_database(tmp_path):
    append_record(tmp_path / "records.jsonl", RunRecord(**attack_record(0, minute=0)))
    only_in_db = attack_record(7, asr=0.123, minute=1)
    ResultsDB.of(tmp_path).put(only_in_db)
    write_attack_tables(tmp_path)
    table = (tmp_path / "attack_results.md").read_text()
    assert only_in_db["run_id"] in table and "12.3" in table


def test_the_database_catches_up_with_records_jsonl_first(tmp_path):
    path = tmp_path / "records.jsonl"
    first, second = attack_record(0, minute=0), attack_record(1, minute=1)
    path.write_text(json.dumps(first, sort_keys=True) + "\n")  # an older snnsec: no database
    assert [r["run_id"] for r in load_results(tmp_path)] == [first["run_id"]]
    with path.open("a") as f:  # a line the database has not taken in (a kill between line and row)
        f.write(json.dumps(second, sort_keys=True) + "\n")
    write_attack_tables(tmp_path)
    assert second["run_id"] in (tmp_path / "attack_results.md").read_text()
    assert [r["run_id"] for r in ResultsDB.of(tmp_path).records()] == [first["run_id"], second["run_id"]]


def test_a_delayed_writer_rereads_the_database(tmp_path):
    from snnsec.experiment import ATTACK_COLUMNS

    db = ResultsDB.of(tmp_path)
    db.put(attack_record(0, minute=0))
    delayed = load_results(tmp_path, "attack")  # read, then delayed while another run is stored
    assert not delayed.stale()
    newer = attack_record(1, minute=1)
    db.put(newer)
    assert delayed.stale()
    write_tables(delayed, ATTACK_COLUMNS, tmp_path, "attack_results", "caption")
    assert newer["run_id"] in (tmp_path / "attack_results.md").read_text()


def test_per_run_tables_keep_the_committed_bytes(tmp_path):
    """reports/defenses: the defense tables from the database are the committed ones, byte for byte (its
    attack table predates the Priced and Pruned columns; the PNG no longer carries matplotlib's version)."""
    folder = tmp_path / "defenses"
    shutil.copytree(REPO / "reports" / "defenses", folder, ignore=shutil.ignore_patterns("runs", "results.sqlite*"))
    write_defense_tables(folder)
    for suffix in ("md", "csv", "tex"):
        name = f"defense_results.{suffix}"
        assert (folder / name).read_bytes() == (REPO / "reports" / "defenses" / name).read_bytes(), name


def test_report_cli_needs_runs(tmp_path):
    result = CliRunner().invoke(cli, ["report", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "no records.jsonl or results.sqlite" in result.output


@pytest.mark.parametrize("kind", ["defense", "evasion"])
def test_a_summary_of_a_kind_without_runs_writes_nothing(tmp_path, kind):
    from snnsec.report import write_summary

    ResultsDB.of(tmp_path).put(attack_record())
    assert write_summary(load_results(tmp_path), kind, tmp_path) == []
    assert not list(tmp_path.glob("summary_*"))


def test_a_non_finite_value_is_shown_not_averaged():
    from snnsec.report import Metric, format_mean_std

    metric = Metric("x", "x")
    assert format_mean_std([1.0, float("nan")], metric) == "nan"
    assert format_mean_std([float("inf"), 2.0], metric) == "inf"
