"""Sweeps (the one-block form of a bench config, :mod:`snnsec.bench`): the product of a few config axes, run one after another, skipping runs already recorded.

A sweep spec is JSON::

    {"name": "triggers", "base": {"epochs": 4}, "grid": {"trigger": ["static", "moving"], "poison_rate": [0.01, 0.1]}}

``base`` and each grid axis name :class:`~snnsec.attack_config.AttackConfig` fields. An optional
``"defenses"`` list runs defenses against every attack of the grid, each a name or an object
``{"defense": "strip", "options": {"overlays": 16}, "reserve_rate": 0.05}``. Records go to the
workspace's out dir (``reports/<name>`` by default, so ``name`` must be a plain folder name); a run whose
request (the unresolved config) is already recorded there is skipped, so an interrupted sweep resumes where
it stopped. Keys other than ``name``, ``base``, ``grid`` and ``defenses`` are errors, and every config of
the grid is type-checked and resolved before the first run starts.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

from snnsec.attack_config import AttackConfig, Workspace, fill_defaults, resolve
from snnsec.defending import DefenseConfig
from snnsec.defenses import create_defense
from snnsec.checks import check_seed, check_types
from snnsec.errors import ConfigError, SnnsecError
from snnsec.records import RunRecord


#: The keys a sweep spec may have; anything else (a typo such as "defences") is an error, not ignored.
SPEC_KEYS = ("name", "base", "grid", "defenses")
#: ``name`` becomes a folder under reports/: one plain folder name, never a path out of it.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def load_spec(path: Path) -> dict[str, Any]:
    """Read and validate a sweep spec: its shape, every field's type, and every config of its grid and
    every defense, all before the first run."""
    from snnsec.bench import read_config  # bench builds on this module

    spec = read_config(path, "sweep spec")
    check_spec(spec, f"sweep spec {path}")
    return spec


def check_spec(spec: Any, where: str = "sweep spec") -> list[AttackConfig]:
    """Raise a one-line ConfigError for anything wrong in ``spec``; returns its attack configs, each
    resolved once here so that a bad config anywhere in the grid fails before the first run."""
    if not isinstance(spec, dict):
        raise ConfigError(f"{where} must be a JSON object with keys {', '.join(SPEC_KEYS)}, "
                          f"got {json_type(spec)}")
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise ConfigError(f"{where} has unknown key(s) {unknown}; allowed: {', '.join(SPEC_KEYS)}")
    name = spec.get("name")
    if name is not None and not (isinstance(name, str) and NAME_PATTERN.fullmatch(name) and ".." not in name):
        raise ConfigError(f"{where}: name must be a plain folder name (letters, digits, '.', '_', '-'; "
                          f"written under the out dir), got {name!r}")
    known = {f.name for f in fields(AttackConfig)}
    for section in ("base", "grid"):
        value = spec.get(section, {})
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {section} must be an object of AttackConfig fields, got {json_type(value)}")
        bad = sorted(set(value) - known)
        if bad:
            raise ConfigError(f"{where}: {section} has unknown field(s) {bad}; fields: {sorted(known)}")
    if not all(isinstance(v, list) and v for v in spec.get("grid", {}).values()):
        raise ConfigError(f"{where}: every grid axis must be a non-empty list of values")
    for options in [spec.get("base", {}).get("trigger_options", {}), *spec.get("grid", {}).get("trigger_options", [])]:
        if not isinstance(options, dict):
            raise ConfigError(f"{where}: trigger_options must be an object (name: value), got {json_type(options)}")
    defense_configs(spec, where)  # validates names and parameters before anything runs
    configs = expand(spec)
    for i, config in enumerate(configs, 1):
        try:
            resolve(config)
        except SnnsecError as err:  # ConfigError, UnknownNameError: same type, the config named
            raise type(err)(f"{where}: config {i}/{len(configs)} ({_label(spec, config)}): {err}") from None
    return configs


def json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _label(spec: dict[str, Any], config: AttackConfig) -> str:
    return ", ".join(f"{k}={getattr(config, k)}" for k in spec.get("grid", {})) or "base"


def defense_configs(spec: dict[str, Any], where: str = "sweep spec") -> list[DefenseConfig]:
    """The sweep's defenses, validated."""
    items = spec.get("defenses", [])
    if not isinstance(items, list):
        raise ConfigError(f"{where}: 'defenses' must be a list of names or objects, got {json_type(items)}")
    configs = []
    for item in items:
        if not isinstance(item, (str, dict)):
            raise ConfigError(f"{where}: each defense is a name or an object "
                              f'{{"defense": NAME, "options": {{...}}}}, got {item!r}')
        item = {"defense": item} if isinstance(item, str) else dict(item)
        unknown = sorted(set(item) - {"defense", "options", "reserve_rate", "seed"})
        if unknown or "defense" not in item:
            raise ConfigError(f"{where}: defense entry {item} needs 'defense' and may have options, reserve_rate, "
                              f"seed; unknown: {unknown}")
        if not isinstance(item.get("options", {}), dict):
            raise ConfigError(f"{where}: defense {item['defense']!r} options must be an object, "
                              f"got {json_type(item['options'])}")
        if not isinstance(item.get("reserve_rate", 0.05), (int, float)) or isinstance(item.get("reserve_rate"), bool):
            raise ConfigError(f"{where}: defense {item['defense']!r} reserve_rate must be a number, "
                              f"got {item['reserve_rate']!r}")
        options = tuple(sorted(item.pop("options", {}).items()))
        config = DefenseConfig(options=options, **item)
        check_types(config, f"{where}: defense")
        check_seed(config.seed, f"{where}: defense seed")
        create_defense(config.defense, **dict(options))
        configs.append(config)
    return configs


def expand(spec: dict[str, Any]) -> list[AttackConfig]:
    """All configs of the sweep, in grid order."""
    base, grid = spec.get("base", {}), spec.get("grid", {})
    axes = list(grid)
    configs = []
    for values in itertools.product(*(grid[a] for a in axes)):
        params = {**base, **dict(zip(axes, values))}
        fill_defaults(params)  # as the CLI: an audio dataset brings its model, slicing, encoding and trigger
        if "trigger_options" in params:
            params["trigger_options"] = tuple(sorted(dict(params["trigger_options"]).items()))
        configs.append(AttackConfig(**params))
    return configs


def run_sweep(spec: dict[str, Any], workspace: Workspace) -> list[RunRecord | None]:
    """Run every attack (then every defense against it) not yet recorded, as ``snnsec bench`` does
    (:mod:`snnsec.bench`: resumable, safe beside another bench); returns the new records, then None for
    each run skipped."""
    from snnsec.bench import jobs_of, run_bench

    result = run_bench(jobs_of(spec, "sweep spec"), workspace)  # jobs_of checks the whole grid first
    return [*result.new, *([None] * result.skipped)]
