"""``snnsec reproduce RUN_ID``: rerun one recorded run from its record and compare the numbers.

The run is rebuilt from the record's config (attack, defense or evasion), with the torch thread count the
record names (it changes float summation order), into a scratch results folder and, unless a cache is
given, a fresh cache: the models are trained again from scratch. The configs must match (request ids
aside: the record holds the resolved config, which is what is rerun) and every number of the metrics must
match within ``tolerance`` (absolute; 0 means bit-identical). Timings are not compared.
"""
from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from snnsec.attack_config import AttackConfig, Workspace
from snnsec.bench import Job
from snnsec.defending import DefenseConfig
from snnsec.errors import ConfigError
from snnsec.evading import EvasionConfig
from snnsec.results_db import ResultsDB, canonical

#: Metric leaves that measure time, not results: never compared.
TIMING_KEYS = ("time", "duration", "seconds")


def find_run(run_id: str, folder: Path) -> dict[str, Any]:
    """The record of ``run_id`` (or a unique prefix) in ``folder``'s database; one line otherwise."""
    db = ResultsDB.of(folder)
    if not db.path.exists():
        raise ConfigError(f"{folder} has no results database ({db.path.name}); give the results folder with --out")
    matches = [r for r in db.records() if r["run_id"].startswith(run_id)]
    if len(matches) != 1:
        some = ", ".join(r["run_id"] for r in matches[:5])
        raise ConfigError(f"run {run_id!r}: {'no run' if not matches else f'{len(matches)} runs ({some})'} "
                          f"in {db.path} {'matches' if not matches else 'match'}; give more of the id")
    return matches[0]


def job_of(record: dict[str, Any]) -> Job:
    """The bench job that reruns ``record``."""
    config = record["config"]
    if record["kind"] == "attack":
        return Job("attack", _attack_config(config))
    if record["kind"] == "defense":
        params = dict(config["defense"])
        name = params.pop("defense")
        defense = DefenseConfig(defense=name, options=tuple(sorted(params.items())),
                                reserve_rate=config["reserve_rate"], seed=config["seed"])
        return Job("defense", _attack_config(config["attack"]), defense=defense)
    if record["kind"] == "evasion":
        known = {f.name for f in fields(EvasionConfig)}
        values = {k: v for k, v in config["evasion"].items() if k in known}
        if isinstance(values.get("event_filter"), dict):  # recorded as the filter's resolved parameters
            params = dict(values["event_filter"])
            values["event_filter"] = params.pop("filter")
            values["filter_options"] = tuple(sorted(params.items()))
        for name in ("options", "defense_options", "filter_options"):
            values[name] = tuple(tuple(pair) for pair in values.get(name, ()))
        for name in ("budgets", "surrogates", "transfer_to"):
            values[name] = tuple(values.get(name, ()))
        return Job("evasion", _attack_config(config["model"]), evasion=EvasionConfig(**values))
    raise ConfigError(f"run {record['run_id']} is a {record['kind']!r} run; reproduce reruns attack, defense "
                      "and evasion runs")


def _attack_config(config: dict[str, Any]) -> AttackConfig:
    known = {f.name for f in fields(AttackConfig)}
    values = {k: v for k, v in config.items() if k in known}
    values["trigger_options"] = tuple(tuple(pair) for pair in values.get("trigger_options", ()))
    return AttackConfig(**values)


@dataclass
class Difference:
    what: str  # "config" or a metric path
    recorded: Any
    reproduced: Any


@dataclass
class Reproduction:
    record: dict[str, Any]
    rerun: dict[str, Any]
    differences: list[Difference]
    compared: int  # numbers compared

    @property
    def ok(self) -> bool:
        return not self.differences


def reproduce(run_id: str, folder: Path, cache_dir: Path | None = None, data_dir: Path | None = None,
              device: str = "auto", tolerance: float = 0.0) -> Reproduction:
    """Rerun ``run_id`` of ``folder`` (see the module docstring) and compare."""
    import torch

    record = find_run(run_id, folder)
    job = job_of(record)
    threads = record.get("versions", {}).get("torch_threads")
    if threads and threads.isdigit():
        torch.set_num_threads(int(threads))
    with tempfile.TemporaryDirectory(prefix="snnsec-reproduce-") as scratch:
        workspace = Workspace(data_dir=data_dir, cache_dir=cache_dir or Path(scratch) / "cache",
                              out_dir=Path(scratch) / "out", device=device)
        rerun = json.loads(canonical(job.run(workspace).to_dict()))  # as stored: tuples read back as lists
    differences: list[Difference] = []
    if _without_ids(record["config"]) != _without_ids(rerun["config"]):
        differences.append(Difference("config", "(recorded)", "(rebuilt: differs; code or data changed?)"))
    compared = _compare(record["metrics"], rerun["metrics"], "", tolerance, differences)
    return Reproduction(record, rerun, differences, compared)


def _without_ids(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_ids(v) for k, v in value.items() if k not in ("request_id", "attack_run_id")}
    if isinstance(value, list):
        return [_without_ids(v) for v in value]
    return value


def _compare(recorded: Any, rerun: Any, path: str, tolerance: float, out: list[Difference]) -> int:
    """Compare two metric trees leaf by leaf; returns how many numbers were compared."""
    if any(key in path.rsplit(".", 1)[-1] for key in TIMING_KEYS):
        return 0
    if isinstance(recorded, dict) and isinstance(rerun, dict):
        return sum(_compare(recorded.get(k), rerun.get(k), f"{path}.{k}".lstrip("."), tolerance, out)
                   for k in sorted(set(recorded) | set(rerun)))
    if isinstance(recorded, list) and isinstance(rerun, list) and len(recorded) == len(rerun):
        return sum(_compare(a, b, f"{path}[{i}]", tolerance, out) for i, (a, b) in enumerate(zip(recorded, rerun)))
    numbers = (int, float)
    if isinstance(recorded, numbers) and isinstance(rerun, numbers) and not isinstance(recorded, bool):
        same = (math.isnan(recorded) and math.isnan(rerun)) or abs(recorded - rerun) <= tolerance
        if not same:
            out.append(Difference(path, recorded, rerun))
        return 1
    if recorded != rerun:
        out.append(Difference(path, recorded, rerun))
    return 0
