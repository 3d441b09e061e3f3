"""Sweeps: the product of a few config axes, run one after another, skipping runs already recorded.

A sweep spec is JSON::

    {"name": "triggers", "base": {"epochs": 4}, "grid": {"trigger": ["static", "moving"], "poison_rate": [0.01, 0.1]}}

``base`` and each grid axis name :class:`~snnsec.experiment.AttackConfig` fields. An optional
``"defenses"`` list runs defenses against every attack of the grid, each a name or an object
``{"defense": "strip", "options": {"overlays": 16}, "reserve_rate": 0.05}``. Records go to the
workspace's out dir; a run whose request (the unresolved config) is already recorded there is skipped,
so an interrupted sweep resumes where it stopped.
"""
from __future__ import annotations

import itertools
import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from snnsec.defending import DefenseConfig, defense_request_id, run_defense
from snnsec.defenses import create_defense
from snnsec.errors import ConfigError
from snnsec.experiment import AttackConfig, Workspace, run_attack
from snnsec.progress import log
from snnsec.records import RunRecord, config_hash, load_records


def load_spec(path: Path) -> dict[str, Any]:
    try:
        spec = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"sweep spec {path} does not exist") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"sweep spec {path} is not valid JSON: {err}") from None
    known = {f.name for f in fields(AttackConfig)}
    for section in ("base", "grid"):
        bad = sorted(set(spec.get(section, {})) - known)
        if bad:
            raise ConfigError(f"sweep spec {section} has unknown field(s) {bad}; fields: {sorted(known)}")
    if not all(isinstance(v, list) and v for v in spec.get("grid", {}).values()):
        raise ConfigError("every grid axis must be a non-empty list of values")
    defense_configs(spec)  # validates names and parameters before anything runs
    return spec


def defense_configs(spec: dict[str, Any]) -> list[DefenseConfig]:
    """The sweep's defenses, validated."""
    items = spec.get("defenses", [])
    if not isinstance(items, list):
        raise ConfigError("sweep spec 'defenses' must be a list of names or objects")
    configs = []
    for item in items:
        item = {"defense": item} if isinstance(item, str) else dict(item)
        unknown = sorted(set(item) - {"defense", "options", "reserve_rate", "seed"})
        if unknown or "defense" not in item:
            raise ConfigError(f"sweep defense entry {item} needs 'defense' and may have options, reserve_rate, "
                              f"seed; unknown: {unknown}")
        options = tuple(sorted(item.pop("options", {}).items()))
        create_defense(item["defense"], **dict(options))
        configs.append(DefenseConfig(options=options, **item))
    return configs


def expand(spec: dict[str, Any]) -> list[AttackConfig]:
    """All configs of the sweep, in grid order."""
    base, grid = spec.get("base", {}), spec.get("grid", {})
    axes = list(grid)
    configs = []
    for values in itertools.product(*(grid[a] for a in axes)):
        params = {**base, **dict(zip(axes, values))}
        if "trigger_options" in params:
            params["trigger_options"] = tuple(sorted(dict(params["trigger_options"]).items()))
        configs.append(AttackConfig(**params))
    return configs


def run_sweep(spec: dict[str, Any], workspace: Workspace) -> list[RunRecord | None]:
    """Run every attack (then every defense against it) not yet recorded; returns the new records (None
    for skipped runs)."""
    records_path = workspace.out_dir / "records.jsonl"
    done = {r["config"].get("request_id") for r in load_records(records_path)}
    configs, defenses = expand(spec), defense_configs(spec)
    results: list[RunRecord | None] = []
    for i, config in enumerate(configs, 1):
        label = ", ".join(f"{k}={getattr(config, k)}" for k in spec.get("grid", {}))
        if config_hash(asdict(config)) in done:
            log(f"[{i}/{len(configs)}] {label}: already recorded, skipped")
            results.append(None)
        else:
            log(f"[{i}/{len(configs)}] {label}")
            results.append(run_attack(config, workspace))
        for defense in defenses:
            if defense_request_id(defense, config) in done:
                log(f"[{i}/{len(configs)}] {label}: defense {defense.defense} already recorded, skipped")
                results.append(None)
                continue
            log(f"[{i}/{len(configs)}] {label}: defense {defense.defense}")
            results.append(run_defense(defense, config, workspace))
    return results
