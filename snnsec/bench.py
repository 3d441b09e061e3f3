"""Benchmarks: a grid of runs (datasets x models x backdoor attacks x defenses, and evasion attacks, each
for several seeds), validated whole before the first run, resumable, and safe to run twice at once.

A bench config is YAML or JSON (``benchmarks/configs/*.yaml``)::

    name: sneaky-spikes-reduced        # results folder: reports/<name> unless --out
    seeds: [0, 1, 2]
    base: {epochs: 4, model_config: tiny}   # AttackConfig fields shared by every run
    datasets: [digits-dvs]             # optional axes (default: base's, else the defaults)
    models: [spiking-cnn, {model: spikformer, model_config: tiny}]
    attacks:                           # backdoor attacks: each block a grid of AttackConfig fields
      - grid: {trigger: [static, moving], poison_rate: [0.01, 0.1]}
        defenses: [spectral-signatures, {defense: fine-pruning, options: {prune_rate: 0.5}}]
    evasions:                          # evasion attacks on each dataset x model x seed's clean model
      - {attack: pgd, budgets: [10, 50, 200], samples: 50}

A legacy ``snnsec sweep`` spec (``name``, ``base``, ``grid``, ``defenses``) is the one-block form.

**Resume.** Every run is keyed by its request id (the hash of its unresolved config, stored in its record
as ``config.request_id``). The results database (:mod:`snnsec.results_db`, caught up from ``records.jsonl``
first) says which are done; those are skipped. A run killed part-way resumes its model training from the
last finished epoch (:mod:`snnsec.model_cache`); its record is written once, when it ends.

**Concurrency.** Before a run starts, the bench takes the run's claim, an ``fcntl`` lock on
``<out>/.claims/<key>.lock`` (released by the kernel when a process dies, even by ``kill -9``). A run
claimed by another bench is deferred and waited for at the end; once claimed, it is skipped if the other
bench recorded it meanwhile. Two benches (or Ray workers, :mod:`snnsec.bench_ray`) on one folder therefore
split the work and never record a run twice.
"""
from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from snnsec import distributed, integrity
from snnsec.attack_config import AttackConfig, Workspace, fill_defaults, resolve_attack
from snnsec.checks import check_seed, check_types
from snnsec.defending import DefenseConfig, defense_request_id
from snnsec.errors import ConfigError, SnnsecError
from snnsec.evading import EvasionConfig
from snnsec.progress import log
from snnsec.records import RunRecord, config_hash
from snnsec.sweep import NAME_PATTERN, defense_configs, json_type

#: The keys a bench config may have (anything else, e.g. a typo "defences", is an error).
BENCH_KEYS = ("name", "seeds", "base", "datasets", "models", "attacks", "evasions")
ATTACK_BLOCK_KEYS = ("grid", "base", "defenses")
#: EvasionConfig fields a bench's evasion entry may set (its seed is the bench's seed).
EVASION_KEYS = tuple(f.name for f in fields(EvasionConfig) if f.name != "seed")
_TUPLE_EVASION_FIELDS = ("options", "budgets", "surrogates", "defense_options", "filter_options", "transfer_to")
#: AttackConfig fields that say which model is trained (and so which clean model an evasion attacks).
MODEL_FIELDS = ("dataset", "model", "model_config", "frames", "slicing", "size", "encoding", "epochs",
                "batch_size", "lr", "optimizer", "seed")


@dataclass(frozen=True)
class Job:
    """One run of a bench: an attack, a defense against an attack, or an evasion attack on a model."""

    kind: str  # "attack", "defense" or "evasion"
    attack: AttackConfig  # the backdoor attack, or for an evasion the model it attacks
    defense: DefenseConfig | None = None
    evasion: EvasionConfig | None = None

    @property
    def key(self) -> str:
        """The request id its record carries (``config.request_id``): the resume key."""
        if self.kind == "defense":
            return defense_request_id(self.defense, self.attack)
        if self.kind == "evasion":
            return config_hash({"evasion": asdict(self.evasion), "model": asdict(self.attack)})
        return config_hash(asdict(self.attack))

    @property
    def label(self) -> str:
        a = self.attack
        model = f"{a.dataset}/{a.model}" + (f":{a.model_config}" if a.model_config else "") + f" seed {a.seed}"
        if self.kind == "evasion":
            return f"{model}: evasion {self.evasion.attack}" + (f" ({self.evasion.norm})" if self.evasion.norm else "")
        what = f"{a.trigger} rate {a.poison_rate:g} size {a.trigger_size:g} {a.position} pol {a.polarity} {a.injection}"
        return f"{model}: {what}" + (f" + defense {self.defense.defense}" if self.kind == "defense" else "")

    def run(self, workspace: Workspace) -> RunRecord:
        """Run it (cached frames and models are reused) and record it in ``workspace.out_dir``."""
        if self.kind == "evasion":
            from snnsec.evading import run_evasion

            return run_evasion(self.evasion, self.attack, workspace)
        if self.kind == "defense":
            from snnsec.defending import run_defense

            return run_defense(self.defense, self.attack, workspace)
        from snnsec.experiment import run_attack

        return run_attack(self.attack, workspace)


# ---- reading and validating a config -------------------------------------------------------------------

def read_config(path: Path, what: str = "bench config") -> dict[str, Any]:
    """Parse a bench config (YAML for .yaml/.yml, else JSON); one-line errors, naming it ``what``, for
    unreadable files."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path} is not a text file (not UTF-8); a config is YAML or JSON") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {path} is a folder; give a YAML or JSON file") from None
    except OSError as err:
        raise ConfigError(f"{what} {path} cannot be read: {err.strerror or err}") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as err:
            where = getattr(err, "problem_mark", None)
            at = f" (line {where.line + 1}, column {where.column + 1})" if where is not None else ""
            raise ConfigError(f"{what} {path} is not valid YAML{at}: "
                              f"{getattr(err, 'problem', None) or err}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{what} {path} is not valid JSON: {err}") from None


def load_bench(path: Path) -> tuple[dict[str, Any], list[Job]]:
    """Read and check a bench config; returns it (in the bench form) and its jobs, every one validated."""
    config = read_config(path)
    return config, jobs_of(config, f"bench config {path}")


def as_bench(config: Any, where: str = "bench config") -> dict[str, Any]:
    """``config`` in the bench form: a legacy sweep spec (top-level ``grid``) becomes one attack block."""
    if not isinstance(config, dict):
        raise ConfigError(f"{where} must be a mapping with keys {', '.join(BENCH_KEYS)}, got {json_type(config)}")
    if "grid" in config or "defenses" in config:
        from snnsec.sweep import SPEC_KEYS

        unknown = sorted(set(config) - set(SPEC_KEYS))
        if unknown:
            raise ConfigError(f"{where} has unknown key(s) {unknown}; allowed: {', '.join(SPEC_KEYS)} "
                              f"(a sweep spec) or {', '.join(BENCH_KEYS)} (a bench config)")
        block = {"grid": config.get("grid", {}), "defenses": config.get("defenses", [])}
        return {k: v for k, v in {"name": config.get("name"), "base": config.get("base", {}),
                                  "attacks": [block]}.items() if v is not None}
    unknown = sorted(set(config) - set(BENCH_KEYS))
    if unknown:
        raise ConfigError(f"{where} has unknown key(s) {unknown}; allowed: {', '.join(BENCH_KEYS)}")
    return config


def jobs_of(config: Any, where: str = "bench config") -> list[Job]:
    """Every run of a bench config, in order (per seed, dataset and model: each attack then its defenses,
    then the evasions); the whole grid is checked first, so a bad entry anywhere fails before any run."""
    config = as_bench(config, where)
    name = config.get("name")
    if name is not None and not (isinstance(name, str) and NAME_PATTERN.fullmatch(name) and ".." not in name):
        raise ConfigError(f"{where}: name must be a plain folder name (letters, digits, '.', '_', '-'), got {name!r}")
    base = _fields_map(config.get("base", {}), f"{where}: base")
    seeds = _list(config.get("seeds", [base.get("seed", 0)]), f"{where}: seeds")
    for seed in seeds:
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ConfigError(f"{where}: seeds must be integers, got {seed!r}")
        check_seed(seed, f"{where}: seed")
    datasets = _list(config.get("datasets", [base.get("dataset")]), f"{where}: datasets")
    models = [_model_entry(m, f"{where}: models") for m in _list(config.get("models", [{}]), f"{where}: models")]
    blocks = [_attack_block(b, f"{where}: attacks[{i}]")
              for i, b in enumerate(_list(config.get("attacks", []), f"{where}: attacks", empty=True))]
    evasions = [_evasion_entry(e, f"{where}: evasions[{i}]")
                for i, e in enumerate(_list(config.get("evasions", []), f"{where}: evasions", empty=True))]
    if not blocks and not evasions:
        raise ConfigError(f"{where} has no runs: give 'attacks' (backdoor grids) and/or 'evasions'")
    jobs: list[Job] = []
    for seed, dataset, model in itertools.product(seeds, datasets, models):
        shared = {**base, **({"dataset": dataset} if dataset is not None else {}), **model, "seed": seed}
        for block_base, grid, defenses in blocks:
            axes = list(grid)
            for values in itertools.product(*(grid[a] for a in axes)):
                attack = _attack_config({**shared, **block_base, **dict(zip(axes, values))}, where)
                jobs.append(Job("attack", attack))
                jobs.extend(Job("defense", attack, defense=d if pinned else replace(d, seed=seed))
                            for d, pinned in defenses)
        for entry in evasions:
            model_config = _attack_config({k: v for k, v in shared.items() if k in MODEL_FIELDS}, where)
            jobs.append(Job("evasion", model_config, evasion=EvasionConfig(**entry, seed=seed)))
    unique = list({job.key: job for job in jobs}.values())  # a run in two blocks runs once, where it first is
    _validate(unique, where)
    return unique


def _list(value: Any, where: str, empty: bool = False) -> list[Any]:
    if not isinstance(value, list) or (not value and not empty):
        raise ConfigError(f"{where} must be a {'' if empty else 'non-empty '}list, got {json_type(value)}")
    return value


def _fields_map(value: Any, where: str) -> dict[str, Any]:
    """A mapping of AttackConfig fields, checked by name."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a mapping of attack config fields, got {json_type(value)}")
    known = {f.name for f in fields(AttackConfig)}
    bad = sorted(set(value) - known)
    if bad:
        raise ConfigError(f"{where} has unknown field(s) {bad}; fields: {sorted(known)}")
    if "trigger_options" in value and not isinstance(value["trigger_options"], dict):
        raise ConfigError(f"{where}: trigger_options must be a mapping (name: value), "
                          f"got {json_type(value['trigger_options'])}")
    return dict(value)


def _model_entry(value: Any, where: str) -> dict[str, Any]:
    if isinstance(value, str):
        return {"model": value}
    if isinstance(value, dict) and set(value) <= {"model", "model_config"}:
        return dict(value)
    raise ConfigError(f"{where}: each model is a name or a mapping {{model: NAME, model_config: CONFIG}}, got {value!r}")


def _attack_block(value: Any, where: str) -> tuple[dict[str, Any], dict[str, list[Any]],
                                                  list[tuple[DefenseConfig, bool]]]:
    """A block's base, grid and defenses, each with whether its entry sets its own seed."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a mapping with keys {', '.join(ATTACK_BLOCK_KEYS)}, got {json_type(value)}")
    unknown = sorted(set(value) - set(ATTACK_BLOCK_KEYS))
    if unknown:
        raise ConfigError(f"{where} has unknown key(s) {unknown}; allowed: {', '.join(ATTACK_BLOCK_KEYS)}")
    grid = _fields_map(value.get("grid", {}), f"{where}: grid")
    if not all(isinstance(v, list) and v for v in grid.values()):
        raise ConfigError(f"{where}: every grid axis must be a non-empty list of values")
    for options in grid.get("trigger_options", []):
        if not isinstance(options, dict):
            raise ConfigError(f"{where}: trigger_options must be a mapping (name: value), got {json_type(options)}")
    pinned = [isinstance(item, dict) and "seed" in item for item in value.get("defenses", [])]
    return (_fields_map(value.get("base", {}), f"{where}: base"), grid,
            list(zip(defense_configs(value, where), pinned)))


def _evasion_entry(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict) or "attack" not in value:
        raise ConfigError(f"{where} must be a mapping with 'attack' (an evasion attack) and optional fields "
                          f"{', '.join(k for k in EVASION_KEYS if k != 'attack')}, got {value!r}")
    unknown = sorted(set(value) - set(EVASION_KEYS))
    if unknown:
        raise ConfigError(f"{where} has unknown key(s) {unknown}; allowed: {', '.join(EVASION_KEYS)}")
    entry = dict(value)
    for name in _TUPLE_EVASION_FIELDS:
        if name not in entry:
            continue
        item = entry[name]
        if name.endswith("options"):
            if not isinstance(item, dict):
                raise ConfigError(f"{where}: {name} must be a mapping (name: value), got {json_type(item)}")
            entry[name] = tuple(sorted(item.items()))
        else:
            entry[name] = tuple(_list(item, f"{where}: {name}"))
    try:
        config = EvasionConfig(**entry)
    except TypeError as err:
        raise ConfigError(f"{where}: {err}") from None
    check_types(config, where)
    return entry


def _attack_config(params: dict[str, Any], where: str) -> AttackConfig:
    params = dict(params)
    fill_defaults(params)  # as the CLI: an audio dataset brings its model, slicing, encoding and trigger
    if "trigger_options" in params:
        params["trigger_options"] = tuple(sorted(dict(params["trigger_options"]).items()))
    try:
        return AttackConfig(**params)
    except SnnsecError as err:
        raise type(err)(f"{where}: {err}") from None


def _validate(jobs: list[Job], where: str) -> None:
    """Resolve every attack, check every defense against its model and every evasion's plan: all before
    the first run."""
    from snnsec.defenses import create_defense
    from snnsec.evading import plan
    from snnsec.zoo import MODELS

    resolved: dict[AttackConfig, Any] = {}
    for i, job in enumerate(jobs, 1):
        try:
            if job.attack not in resolved:
                resolved[job.attack] = resolve_attack(job.attack).config
            config = resolved[job.attack]
            if job.defense is not None:
                check_types(job.defense, "defense")
                create_defense(job.defense.defense, **dict(job.defense.options)).check_model(
                    config.model, MODELS.get(config.model).spiking)
            if job.evasion is not None:
                plan(job.evasion, config.encoding, config.slicing)
        except SnnsecError as err:  # ConfigError, UnknownNameError: the same type, the run named
            raise type(err)(f"{where}: run {i}/{len(jobs)} ({job.label}): {err}") from None


# ---- running --------------------------------------------------------------------------------------------

def done_keys(out_dir: Path) -> set[str]:
    """Request ids recorded in ``out_dir``'s database (caught up from its ``records.jsonl`` first)."""
    from snnsec.results_db import ResultsDB, load_results

    if not ResultsDB.of(out_dir).path.exists() and not (Path(out_dir) / "records.jsonl").exists():
        return set()
    # a kill between a record's line and its row: the row is added now (the database is written only then)
    return {r["config"].get("request_id") for r in load_results(out_dir)}


@contextmanager
def claim(out_dir: Path, key: str, wait: bool) -> Iterator[bool]:
    """Hold the claim on run ``key`` (yields True), or yield False when another process holds it and
    ``wait`` is False. The kernel drops the claim when its holder dies, so a killed bench never blocks."""
    with integrity.file_lock(Path(out_dir) / ".claims" / f"{key}.lock", wait) as held:
        yield held


def execute(job: Job, workspace: Workspace, wait: bool = True) -> RunRecord | str:
    """Run ``job`` unless it is recorded: returns its record, ``"done"`` (recorded, here or by another
    bench meanwhile) or ``"busy"`` (claimed by another process, and ``wait`` is False). A defense also
    holds its attack's claim: the attack it needs is never run by two processes at once."""
    keys = [job.key] + ([Job("attack", job.attack).key] if job.kind == "defense" else [])
    with ExitStack() as held:
        if not all(held.enter_context(claim(workspace.out_dir, key, wait)) for key in keys):
            return "busy"
        if job.key in done_keys(workspace.out_dir):
            return "done"
        return job.run(workspace)


@dataclass
class BenchResult:
    """What a bench did: new records, runs found recorded, and the jobs' count."""

    new: list[RunRecord]
    skipped: int
    total: int


def run_bench(jobs: list[Job], workspace: Workspace,
              execute_job: Callable[[Job, Workspace, bool], RunRecord | str] = execute) -> BenchResult:
    """Run every job not yet recorded in ``workspace.out_dir``, in order, with progress lines; runs claimed
    by another bench are deferred, then waited for."""
    distributed.refuse("a bench (or sweep)")
    done = done_keys(workspace.out_dir)
    pending = [job for job in jobs if job.key not in done]
    log(f"bench: {len(jobs)} run(s), {len(jobs) - len(pending)} already recorded, {len(pending)} to run "
        f"(results in {workspace.out_dir})")
    new: list[RunRecord] = []
    deferred: list[Job] = []
    clock, position = time.perf_counter(), 0
    for wait, queue in ((False, pending), (True, deferred)):
        for job in queue:  # deferred grows while the first pass runs; the second pass reads it after
            if not wait:
                position += 1
            log(f"[{jobs.index(job) + 1}/{len(jobs)}] {job.label}"
                f"{_eta(clock, len(new), len(pending) - position + 1)}")
            outcome = execute_job(job, workspace, wait)
            if outcome == "busy":
                log("  claimed by another bench: deferred to the end")
                deferred.append(job)
            elif outcome == "done":
                log("  recorded meanwhile by another bench: skipped")
            else:
                new.append(outcome)
    return BenchResult(new, len(jobs) - len(new), len(jobs))


def _eta(clock: float, finished: int, left: int) -> str:
    if not finished or not left:
        return ""
    seconds = (time.perf_counter() - clock) / finished * left
    return f"  (about {seconds / 60:.0f} min left)" if seconds >= 90 else f"  (about {seconds:.0f} s left)"
