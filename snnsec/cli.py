"""Command line: click parses, builds a config and calls the library; errors become one clear line."""
from __future__ import annotations

import errno
import json
import sys
import tempfile
from dataclasses import fields, replace
from pathlib import Path

import click

from snnsec.checks import MAX_SEED
from snnsec.errors import SnnsecError

LISTABLE = ("models", "attacks", "triggers", "datasets", "defenses", "evasions")


class _Cli(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SnnsecError as err:
            raise click.ClickException(str(err)) from None
        except OSError as err:  # the environment (a full disk, a read-only folder), not the input: one line too
            where = f" ({err.filename})" if err.filename else ""
            raise click.ClickException(f"{err.strerror or err}{where}") from None


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="snnsec")
def cli() -> None:
    """Backdoor and adversarial security benchmarks for spiking neural networks on event data."""


def _options(*decorators):
    """Apply a list of click options (shared between commands) as one decorator."""

    def apply(func):
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return apply


DATA_OPTIONS = _options(
    click.option("--dataset", default=None,
                 help="Dataset (see `snnsec list datasets`) [default: the --model's dataset, else digits-dvs]."),
    click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                 envvar="SNNSEC_DATA_DIR", help="Folder holding real datasets [env: SNNSEC_DATA_DIR]."),
    click.option("--frames", "-T", type=int, default=None, help="Time bins T (default: the dataset's)."),
    click.option("--slicing", type=click.Choice(["time", "count", "sj-number", "sj-time", "window"]), default=None,
                 help="Equal time windows, equal event counts per bin, spikingjelly's split_by='number' / "
                      "'time' (Sneaky Spikes' framing: sj-number; the last frame takes the remainder), or fixed "
                      "10 ms bins from t=0 (SNN-delays' audio binning) [default: the dataset's: time, audio window]."),
    click.option("--size", type=int, default=None,
                 help="Resize frames to SIZE x SIZE; on 1-D (audio) data, to SIZE channels (default: the dataset's, "
                      "else the sensor size)."),
    click.option("--encoding", type=click.Choice(["binary", "counts"]), default=None,
                 help="[default: the dataset's: binary, audio counts]"),
    click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                 help="Frame and model cache [env: SNNSEC_CACHE_DIR; default ~/.cache/snnsec]."),
)

TRIGGER_OPTIONS = _options(
    click.option("--trigger", default=None,
                 help="Trigger (see `snnsec list attacks`) [default: the dataset's: static, audio band]."),
    click.option("--trigger-size", type=float, default=0.1, show_default=True,
                 help="Trigger side as a fraction of the frame width, in (0, 1]."),
    click.option("--position", type=click.Choice(["top-left", "top-right", "bottom-left", "bottom-right", "middle",
                                                  "random", "low", "high"]),
                 default="bottom-right", show_default=True,
                 help="Trigger position; random is fixed by --seed. Band triggers (audio): low, middle, high (the "
                      "2-D names by their column: *-left low, *-right high)."),
    click.option("--polarity", type=click.IntRange(0, 3), default=1, show_default=True,
                 help="0: both channels off, 1: ON events, 2: OFF events, 3: both."),
    click.option("--trigger-value", type=float, default=None,
                 help="Trigger pixel value (default 1 on binary frames, a high event count on count frames); "
                      "with --injection event, events per pixel and time bin."),
    click.option("--trigger-opt", "trigger_options", multiple=True, metavar="KEY=VALUE",
                 help="A trigger-specific option (repeatable), e.g. --trigger-opt speed=2."),
    click.option("--injection", type=click.Choice(["frame", "event"]), default="frame", show_default=True,
                 help="Paint the trigger on frames, or add synthetic events to the raw stream before framing."),
    click.option("--seed", type=click.IntRange(0, MAX_SEED), default=0, show_default=True),
)


def _workspace(options: dict):
    """Pop the workspace options (paths, device) out of ``options``."""
    from snnsec.attack_config import Workspace, default_cache_dir

    workspace = Workspace(
        data_dir=options.pop("data_dir"), cache_dir=options.pop("cache_dir") or default_cache_dir(),
        out_dir=options.pop("out", Path("reports")), device=options.pop("device", "auto"),
    )
    _check_writable(workspace.out_dir, "--out")
    _check_writable(workspace.cache_dir, "--cache-dir")
    return workspace


def _check_writable(folder: Path, option: str) -> None:
    """Prove now, before any training, that ``folder`` can be created and written: a bad ``--out`` is found
    in milliseconds, not when the first record is written. Nothing is left behind (the probe is a temporary
    file in ``folder`` or in its nearest existing parent, which must be a folder)."""
    existing = folder.expanduser().absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"{existing} is a file, not a folder")
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise click.BadParameter(f"cannot write to {folder}: {err.strerror or err}", param_hint=option) from None


def _attack_config(options: dict):
    from snnsec.attack_config import AttackConfig, fill_defaults

    fill_defaults(options)
    options["trigger_options"] = _parse_options(options["trigger_options"])
    config_fields = {f.name for f in fields(AttackConfig)}
    return AttackConfig(**{k: v for k, v in options.items() if k in config_fields})


ATTACK_OPTIONS = _options(
    click.option("--model", default=None,
                 help="Zoo model (see `snnsec list models`) [default: the dataset's, spiking-cnn for DVS data]."),
    click.option("--model-config", default=None, help="Named model configuration (default: chosen for the data)."),
    TRIGGER_OPTIONS,
    DATA_OPTIONS,
    click.option("--poison-rate", type=float, default=0.1, show_default=True,
                 help="Fraction of training samples poisoned, in (0, 1]."),
    click.option("--target", type=int, default=0, show_default=True, help="Target class of the backdoor."),
    click.option("--mode", type=click.Choice(["all-to-one", "all-to-all", "clean-label"]), default="all-to-one",
                 show_default=True),
    click.option("--epochs", type=int, default=8, show_default=True),
    click.option("--batch-size", type=int, default=32, show_default=True),
    click.option("--lr", type=float, default=None,
                 help="Learning rate (default: the model config's recipe, see `snnsec zoo`, else 2e-3)."),
    click.option("--optimizer", type=click.Choice(["adamw", "adam"]), default="adamw", show_default=True),
    click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
    click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("reports"),
                 show_default=True, help="Where records and tables are written."),
    click.option("--json", "as_json", is_flag=True, help="Print the run's record as one JSON object on stdout."),
)


ENERGY_CONVENTIONS = ("measured", "papers", "spikingformer-script")  # snnsec.energy.CONVENTIONS (tested equal)


@cli.command()
@ATTACK_OPTIONS
@click.option("--energy-convention", type=click.Choice(ENERGY_CONVENTIONS), default="measured", show_default=True,
              help="How energy is counted: measured (first layer by its input, attention as computed), papers "
                   "(first layer as MAC), spikingformer-script (attention as Q(K^T V)); see README.")
def attack(**options) -> None:
    """Train a clean and a backdoored model and report CA, ASR and stealth."""
    from snnsec.experiment import run_attack

    as_json = options.pop("as_json")
    energy_convention = options.pop("energy_convention")
    workspace = _workspace(options)
    config = _attack_config(options)
    record = run_attack(config, workspace, energy_convention)
    if as_json:
        click.echo(json.dumps(record.to_dict(), sort_keys=True))
    else:
        m = record.metrics
        click.echo(
            f"run {record.run_id}: CA clean {100 * m['ca_clean']:.1f}%  CA backdoored {100 * m['ca_backdoor']:.1f}%  "
            f"ASR {100 * m['asr']:.1f}%  SSIM {m['ssim']:.3f}  ({record.duration_s:.0f} s)\n"
            f"tables: {workspace.out_dir / 'attack_results.md'}"
        )


@cli.command()
@click.option("--defense", "defense_name", required=True, help="Defense (see `snnsec list defenses`).")
@click.option("--defense-opt", "defense_options", multiple=True, metavar="KEY=VALUE",
              help="A defense parameter (repeatable), e.g. --defense-opt removal_rate=0.2.")
@click.option("--reserve-rate", type=float, default=0.05, show_default=True,
              help="Share of the training set the defender holds as clean, labelled data.")
@click.option("--attack-run", default=None, metavar="RUN_ID",
              help="Defend the attack recorded under this run id (or a unique prefix) in --out; "
                   "otherwise the attack given by the options below (the same options as `snnsec attack`).")
@ATTACK_OPTIONS
@click.pass_context
def defend(ctx: click.Context, **options) -> None:
    """Run a defense on the cached backdoored model and data of an attack; report CA/ASR before and after,
    DER and detection TPR/FPR/AUROC."""
    from snnsec.defending import DefenseConfig, find_attack, run_defense

    as_json, run_id = options.pop("as_json"), options.pop("attack_run")
    config = DefenseConfig(defense=options.pop("defense_name"), reserve_rate=options.pop("reserve_rate"),
                           options=_parse_options(options.pop("defense_options"), "--defense-opt"),
                           seed=options["seed"])
    workspace = _workspace(options)
    if run_id is not None:
        given = [name for name in options if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
                 and name != "seed"]
        if given:
            raise click.UsageError(f"--attack-run names the attack; drop the attack option(s) "
                                   f"{', '.join('--' + g.replace('_', '-') for g in sorted(given))}")
        attack, run_id = find_attack(run_id, workspace.out_dir)
    else:
        attack = _attack_config(options)
    record = run_defense(config, attack, workspace, attack_run_id=run_id)
    if as_json:
        click.echo(json.dumps(record.to_dict(), sort_keys=True))
        return
    m = record.metrics
    line = (f"run {record.run_id} ({m['family']}): CA {100 * m['ca_before']:.1f}% -> {100 * m['ca_after']:.1f}%  "
            f"ASR {100 * m['asr_before']:.1f}% -> {100 * m['asr_after']:.1f}%  DER {m['der']:.3f}")
    if m["auroc"] is not None:
        line += f"  AUROC {m['auroc']:.3f}  TPR {m['tpr']:.3f}  FPR {m['fpr']:.3f}"
    if "suspected_target" in m["details"]:
        line += f"  suspected target {m['details']['suspected_target']}" + \
            ("" if m["details"].get("backdoor_detected", m["details"].get("unlearned")) else " (not flagged)")
    click.echo(f"{line}  ({m['defense_time_s']:.0f} s)\ntables: {workspace.out_dir / 'defense_results.md'}")


BENCH_OPTIONS = _options(
    click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                 envvar="SNNSEC_DATA_DIR", help="Folder holding real datasets [env: SNNSEC_DATA_DIR]."),
    click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                 help="Frame and model cache [env: SNNSEC_CACHE_DIR; default ~/.cache/snnsec]."),
    click.option("--device", default="auto", show_default=True),
    click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
                 help="Results folder (default: reports/<config name>)."),
)


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@BENCH_OPTIONS
@click.option("--dry-run", is_flag=True, help="List the runs and which are recorded; run nothing.")
@click.option("--ray-address", default=None, metavar="ADDRESS",
              help="Run on Ray, one task per run: auto (this machine's cluster), ray://HOST:PORT, or local "
                   "(a private instance on this machine).")
@click.option("--ray-cpus", type=float, default=1.0, show_default=True, help="CPUs each run's Ray task asks for.")
@click.option("--ray-gpus", type=float, default=0.0, show_default=True, help="GPUs each run's Ray task asks for.")
def bench(config: Path, dry_run: bool, ray_address: str | None, ray_cpus: float, ray_gpus: float,
          **options) -> None:
    """Run a bench CONFIG (YAML or JSON): datasets x models x attacks x defenses and evasions, per seed.
    Runs already recorded in the results folder are skipped, so a killed bench resumes; two benches on one
    folder share the work."""
    from snnsec.bench import done_keys, load_bench, run_bench

    loaded, jobs = load_bench(config)  # the whole grid is checked before anything runs
    options["out"] = options["out"] or Path("reports") / loaded.get("name", config.stem)
    workspace = replace(_workspace(options), publish_artifacts=True)
    if dry_run:
        done = done_keys(workspace.out_dir) if workspace.out_dir.exists() else set()
        for i, job in enumerate(jobs, 1):
            click.echo(f"{i:>4}  {job.key}  {'recorded' if job.key in done else 'to run':<8}  {job.label}")
        click.echo(f"{len(jobs)} run(s), {sum(j.key in done for j in jobs)} recorded")
        return
    if ray_address is not None:
        from snnsec.bench_ray import run_bench_on_ray

        result = run_bench_on_ray(jobs, workspace, ray_address, ray_cpus, ray_gpus)
    else:
        result = run_bench(jobs, workspace)
    if result.new or not any(workspace.out_dir.glob("summary_*.md")):
        from snnsec.report import write_report

        _from_results(workspace.out_dir, write_report)  # the tables and summaries over seeds (mean ± std)
    click.echo(f"{len(result.new)} new run(s), {result.skipped} skipped; results and report: {workspace.out_dir} "
               f"(`snnsec leaderboard {workspace.out_dir}` for the HTML page)")


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@BENCH_OPTIONS
def sweep(spec: Path, **options) -> None:
    """Run a sweep SPEC (JSON: base config + grid + defenses): `snnsec bench` with a one-block config."""
    from snnsec.sweep import load_spec, run_sweep

    loaded = load_spec(spec)
    options["out"] = options["out"] or Path("reports") / loaded.get("name", spec.stem)
    workspace = _workspace(options)
    records = run_sweep(loaded, workspace)
    tables = [workspace.out_dir / "attack_results.md", workspace.out_dir / "defense_results.md"]
    click.echo(f"{sum(r is not None for r in records)} new run(s), {sum(r is None for r in records)} skipped; "
               f"tables: {', '.join(str(p) for p in tables if p.exists())}")


@cli.command()
@click.option("--out", type=click.Path(file_okay=False, exists=True, path_type=Path), default=Path("reports"),
              show_default=True, help="A folder holding results.sqlite (or records.jsonl).")
def report(out: Path) -> None:
    """Regenerate the tables of OUT from its results database: per-run tables, summaries over seeds (mean ±
    std) and their plots (Markdown, CSV, LaTeX, PNG; the same database gives the same bytes)."""
    from snnsec.report import write_report

    _check_results(out, "report")
    paths = _from_results(out, write_report)
    for path in paths:
        click.echo(str(path))


@cli.command()
@click.argument("folder", metavar="DIR", type=click.Path(file_okay=False, exists=True, path_type=Path))
def leaderboard(folder: Path) -> None:
    """Write DIR/leaderboard.html from DIR's results database: one self-contained page of sortable tables
    (attacks, defenses, robustness; mean ± std over seeds, n), the summary plots and every run's config."""
    from snnsec.leaderboard import write_leaderboard

    _check_results(folder, "leaderboard")
    click.echo(str(_from_results(folder, write_leaderboard)))


def _check_results(folder: Path, command: str) -> None:
    from snnsec.results_db import DB_NAME

    if not (folder / "records.jsonl").exists() and not (folder / DB_NAME).exists():
        raise click.ClickException(f"no records.jsonl or {DB_NAME} in {folder}; run `snnsec attack --out {folder}` "
                                   f"first (or pass the folder of the runs to `snnsec {command}`)")


def _from_results(folder: Path, build):
    """``build(folder)``; a record missing a field becomes one line naming the database."""
    try:
        return build(folder)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:  # a record missing a field
        detail = f"missing field {err}" if isinstance(err, KeyError) else " ".join(str(err).split())
        raise click.ClickException(f"{folder / 'results.sqlite'} holds a record the tables cannot use ({detail}); "
                                   "fix or remove it in records.jsonl, move results.sqlite aside and rerun") from None


@cli.command()
@click.argument("folder", metavar="DIR", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--strict", is_flag=True, help="Artifacts outside DIR (a model cache) that cannot be found are problems.")
def verify(folder: Path, strict: bool) -> None:
    """Check results folder DIR against its digests: the database and each row, records.jsonl, every
    artifact's SHA-256, and the content-addressed store. Exit status 1 when anything fails."""
    from snnsec.verify import verify_folder

    found = verify_folder(folder, strict)
    for problem in found.problems:
        click.echo(f"PROBLEM {problem}")
    outside = f"; {len(found.outside)} outside DIR not found, not checked" if found.outside else ""
    click.echo(f"{folder}: {found.runs} run(s), {found.artifacts} artifact(s) checked{outside}: "
               f"{'OK' if found.ok else f'{len(found.problems)} problem(s)'}")
    if not found.ok:
        sys.exit(1)


@cli.command()
@click.argument("run_id")
@click.option("--out", type=click.Path(file_okay=False, exists=True, path_type=Path), default=Path("reports"),
              show_default=True, help="The results folder holding the run.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Reuse this cache's frames and models (default: a fresh one, so models are trained again).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None, envvar="SNNSEC_DATA_DIR")
@click.option("--device", default="auto", show_default=True)
@click.option("--tolerance", type=click.FloatRange(min=0.0), default=0.0, show_default=True,
              help="Largest absolute difference accepted per number (0: bit-identical).")
def reproduce(run_id: str, out: Path, cache_dir: Path | None, data_dir: Path | None, device: str,
              tolerance: float) -> None:
    """Rerun RUN_ID (or a unique prefix) from its record in --out and compare every number."""
    from snnsec.reproduce import reproduce as rerun

    result = rerun(run_id, out, cache_dir, data_dir, device, tolerance)
    for diff in result.differences:
        click.echo(f"DIFFERS {diff.what}: recorded {diff.recorded!r}, reproduced {diff.reproduced!r}")
    click.echo(f"run {result.record['run_id']} ({result.record['kind']}): {result.compared} number(s) compared, "
               f"{'all equal' if tolerance == 0 else f'tolerance {tolerance:g}'}"
               f"{'' if result.ok else f'; {len(result.differences)} differ'}: "
               f"{'REPRODUCED' if result.ok else 'NOT REPRODUCED'}")
    if not result.ok:
        sys.exit(1)


@cli.command()
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The cache [env: SNNSEC_CACHE_DIR; default ~/.cache/snnsec].")
@click.option("--prune", is_flag=True, help="Delete stale frame entries, damaged files and orphaned temporary files.")
def cache(cache_dir: Path | None, prune: bool) -> None:
    """What the frame and model cache holds, by category; --prune deletes what no run reads again (never
    current frames, models, resume checkpoints or locks)."""
    from snnsec.attack_config import default_cache_dir
    from snnsec.cache_admin import KEPT, PRUNABLE, prune as prune_files, survey

    root = cache_dir or default_cache_dir()
    if not root.is_dir():
        raise click.ClickException(f"no cache at {root} (nothing framed or trained there yet; --cache-dir names it)")
    found = survey(root)
    click.echo(f"cache {root}")
    for category in (*KEPT, *PRUNABLE):
        files = found.files[category]
        click.echo(f"  {category:<20} {len(files):>6} file(s) {found.size(category) / 2**20:>10.1f} MiB"
                   f"{'  (prunable)' if category in PRUNABLE and files else ''}")
    stale = found.prunable
    if prune:
        click.echo(f"pruned {len(stale)} file(s), {prune_files(found) / 2**20:.1f} MiB freed")
    elif stale:
        click.echo(f"{len(stale)} prunable file(s): `snnsec cache --prune` deletes them")


@cli.group()
def db() -> None:
    """The results database (DIR/results.sqlite) beside DIR/records.jsonl."""


RESULTS_DIR = click.argument("folder", metavar="DIR", type=click.Path(file_okay=False, exists=True, path_type=Path))


@db.command("import")
@RESULTS_DIR
def db_import(folder: Path) -> None:
    """Take DIR/records.jsonl into DIR/results.sqlite (runs already there are not added again)."""
    from snnsec.results_db import ResultsDB

    results = ResultsDB.of(folder)
    done = results.import_jsonl(folder / "records.jsonl")
    click.echo(f"{done.added} run(s) added to {results.path} ({done.replaced} replaced by the file's record, "
               f"{done.unchanged} already there)")


@db.command("export")
@RESULTS_DIR
@click.option("--to", "target", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Output file [default: DIR/results-export.jsonl].")
def db_export(folder: Path, target: Path | None) -> None:
    """Write every run of DIR/results.sqlite as one JSON line, in insertion order."""
    from snnsec.results_db import ResultsDB

    target = target or folder / "results-export.jsonl"
    if target.resolve() == (folder / "records.jsonl").resolve():
        raise click.ClickException(f"{target} is the append log the runs write to; export to another file")
    results = ResultsDB.of(folder)
    results.check()
    click.echo(f"{results.export_jsonl(target)} run(s) written to {target}")


@db.command("check")
@RESULTS_DIR
def db_check(folder: Path) -> None:
    """Check DIR/results.sqlite: SQLite's integrity check and every row against its digest."""
    from snnsec.results_db import ResultsDB

    results = ResultsDB.of(folder)
    click.echo(f"{results.path}: {results.check()} run(s), intact")


@cli.command()
@click.option("--model", default=None,
              help="Zoo model (see `snnsec list models`) [default: the dataset's, spiking-cnn for DVS data].")
@click.option("--model-config", default=None, help="Named model configuration (default: chosen for the data).")
@click.option("--attack", "attack_name", default="pgd", show_default=True,
              help="Evasion attack (see `snnsec list evasions`).")
@click.option("--attack-opt", "attack_options", multiple=True, metavar="KEY=VALUE",
              help="An attack parameter (repeatable), e.g. --attack-opt steps=20.")
@click.option("--budget", "budgets", type=float, multiple=True,
              help="Perturbation budget (repeatable): elements flipped on binary frames (L0), events per element "
                   "on count frames (L-inf; see --norm). Default: 10 50 200 800 (binary), 1 2 4 (counts).")
@click.option("--norm", type=click.Choice(["l0", "linf", "l2", "events", "area"]), default=None,
              help="Budget norm (default: l0 on binary frames, linf on count frames, events for raw-event "
                   "attacks, area for patches).")
@click.option("--surrogate", "surrogates", multiple=True, metavar="NAME",
              help="Surrogate gradient of the attack (repeatable): model, sigmoid:A, atan:A, pdsg, rate, or sweep "
                   "(all of them; the table adds the best over them). Default: model.")
@click.option("--samples", type=int, default=100, show_default=True,
              help="Correctly classified test samples attacked (seeded random order).")
@click.option("--target", default=None, help="Targeted attack: a class number, or 'random' (default: untargeted).")
@click.option("--attack-batch", type=int, default=32, show_default=True, help="Samples attacked at once.")
@click.option("--defense", default=None, type=click.Choice(["adversarial-training"]),
              help="Attack a PGD adversarially trained model instead of the standard one.")
@click.option("--defense-opt", "defense_options", multiple=True, metavar="KEY=VALUE",
              help="Adversarial training option (repeatable): budget, steps, ratio, surrogate.")
@click.option("--filter", "event_filter", default=None, type=click.Choice(["ba", "mask", "purify"]),
              help="An event filter in front of the model (a frame attack's edits are made real as events first): "
                   "background activity, mask filter or stream purification (tonic Denoise/RefractoryPeriod); "
                   "every attack then runs static (crafted without it) and adaptive (through it).")
@click.option("--filter-opt", "filter_options", multiple=True, metavar="KEY=VALUE",
              help="Event filter option (repeatable): ba: s, time_us, reference_bounds; mask: threshold, bin_us; "
                   "purify: method, filter_time_us, refractory_us.")
@click.option("--transfer-to", "transfer_to", multiple=True, metavar="MODEL[:CONFIG]",
              help="Also score the adversarial inputs on this zoo model (repeatable; trained on the same data): "
                   "a transfer attack; the transfer matrix goes to evasion_transfer.md.")
@click.option("--no-checks", is_flag=True, help="Skip the random baseline and unbounded run (obfuscation checks).")
@DATA_OPTIONS
@click.option("--epochs", type=int, default=8, show_default=True, help="Training epochs of the attacked model.")
@click.option("--batch-size", type=int, default=32, show_default=True, help="Training batch size.")
@click.option("--lr", type=float, default=None, help="Training learning rate (default: the model's recipe).")
@click.option("--optimizer", type=click.Choice(["adamw", "adam"]), default="adamw", show_default=True)
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("reports"),
              show_default=True, help="Where records and tables are written.")
@click.option("--json", "as_json", is_flag=True, help="Print the run's record as one JSON object on stdout.")
def evade(**options) -> None:
    """Evasion attack on a trained model: clean and robust accuracy, success rate, events changed, time per
    sample; with several budgets, a robust-accuracy-vs-budget table and plot."""
    from snnsec.evading import EvasionConfig, run_evasion

    as_json = options.pop("as_json")
    target = options.pop("target")
    if target is not None and target != "random":
        try:
            target = int(target)
        except ValueError:
            raise click.BadParameter(f"a class number or 'random', got {target!r}", param_hint="--target") from None
    config = EvasionConfig(
        attack=options.pop("attack_name"), options=_parse_options(options.pop("attack_options"), "--attack-opt"),
        budgets=tuple(options.pop("budgets")), norm=options.pop("norm"), surrogates=tuple(options.pop("surrogates")),
        samples=options.pop("samples"), target=target, batch_size=options.pop("attack_batch"), seed=options["seed"],
        defense=options.pop("defense"), defense_options=_parse_options(options.pop("defense_options"), "--defense-opt"),
        checks=not options.pop("no_checks"), event_filter=options.pop("event_filter"),
        filter_options=_parse_options(options.pop("filter_options"), "--filter-opt"),
        transfer_to=tuple(options.pop("transfer_to")))
    workspace = _workspace(options)
    options["trigger_options"] = ()
    record = run_evasion(config, _attack_config(options), workspace)
    if as_json:
        click.echo(json.dumps(record.to_dict(), sort_keys=True))
        return
    m = record.metrics
    click.echo(f"run {record.run_id}: clean accuracy {100 * m['clean_accuracy']:.1f}% on the test set; "
               f"{m['attacked_samples']} correctly classified samples attacked "
               f"({'raw events' if m['domain'] == 'events' else m['domain'] + ' frames'}, "
               f"{m['norm']} budget, of {m['denominator']} elements)")
    for row in m["rows"]:
        name = {"random": "random (baseline)", "unbounded": f"{row['attack']} unbounded",
                "transfer": f"{row['attack']} -> {row.get('transfer_to')}"}.get(row["role"], row["attack"])
        name += f" {row['mode']}" if row.get("mode") else ""
        size = "events" if m["domain"] == "events" else "l0"
        l0 = "-" if row[f"{size}_mean"] is None else f"{row[f'{size}_mean']:.1f}/{row[f'{size}_median']:.0f}"
        click.echo(f"  {name:<20} {row['surrogate']:<10} budget {row['budget_label']:>9}: robust "
                   f"{100 * row['robust_accuracy']:5.1f}%  success {100 * row['success_rate']:5.1f}%  "
                   f"{'events' if size == 'events' else 'L0'} mean/median {l0:>11}  {row['time_per_sample_s']:.3f} s/sample")
    for flag in m["flags"]:
        click.echo(f"  FLAG {flag}")
    click.echo(f"tables: {workspace.out_dir / 'evasion_results.md'}")


@cli.command("show-trigger")
@TRIGGER_OPTIONS
@DATA_OPTIONS
@click.option("--split", type=click.Choice(["train", "test"]), default="test", show_default=True)
@click.option("--index", type=int, default=0, show_default=True, help="Which sample of the split to show.")
@click.option("--target", type=int, default=0, show_default=True, help="Target class (only for validation).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("reports/triggers"), show_default=True)
def show_trigger(**options) -> None:
    """Write a PNG grid of clean vs triggered frames over time and an animated GIF."""
    from snnsec.attack_setup import trigger_example
    from snnsec.visualize import save_trigger_views

    split, index = options.pop("split"), options.pop("index")
    workspace = _workspace(options)
    config = _attack_config(options)
    clean, triggered, label = trigger_example(config, workspace, split, index)
    name = f"{config.dataset}-{config.trigger}-{config.injection}-{split}{index}"
    title = f"{config.dataset} {split}[{index}] (label {label}): {config.trigger} trigger, {config.injection} level"
    paths = save_trigger_views(clean, triggered, workspace.out_dir, name=name, title=title)
    for path in paths.values():
        click.echo(str(path))


@cli.command()
@click.argument("name", required=False)
@click.option("--config", "config_name", default=None, help="One named config of NAME (default: all of them).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one object with --config, else one per line).")
def zoo(name: str | None, config_name: str | None, as_json: bool) -> None:
    """List zoo models with their configs, parameter counts and reference accuracies."""
    from snnsec.records import Column, markdown_table
    from snnsec.zoo import MODELS
    from snnsec.zoo.base import describe

    if config_name is not None and name is None:
        raise click.UsageError("--config needs a model NAME")
    names = [name] if name else MODELS.names()
    if name is not None:
        MODELS.get(name)  # unknown names list the known ones
    cards = [describe(n, c) for n in names for c in ([config_name] if config_name else MODELS.get(n).configs)]
    if as_json:
        for card in cards:
            click.echo(json.dumps(card, sort_keys=True))
        return
    rows = [{**c, "input": "{frames}x{channels}x{height}x{width}, {num_classes} classes".format(**c["input"]),
             "params": f"{c['params']:,}",
             "reference_accuracy": ", ".join(f"{k} {100 * v:.1f}" for k, v in c["reference_accuracy"].items()) or "-"}
            for c in cards]
    columns = [Column("Model", "model"), Column("Config", "config"), Column("Input (TxPxHxW)", "input"),
               Column("Params", "params"), Column("Reported acc. (%)", "reference_accuracy")]
    click.echo(markdown_table(rows, columns), nl=False)


def _parse_options(pairs: tuple[str, ...], hint: str = "--trigger-opt") -> tuple[tuple[str, object], ...]:
    """``("speed=2", "path=zigzag")`` -> ``(("path", "zigzag"), ("speed", 2))``; values are JSON when they parse."""
    parsed: dict[str, object] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint=hint)
        try:
            parsed[key.strip().replace("-", "_")] = json.loads(raw)
        except json.JSONDecodeError:
            parsed[key.strip().replace("-", "_")] = raw
    return tuple(sorted(parsed.items()))


@cli.command("list")
@click.argument("what", type=click.Choice(LISTABLE))
def list_names(what: str) -> None:
    """Print the registered names of WHAT, one per line."""
    from snnsec.attacks import TRIGGERS
    from snnsec.datasets import DATASETS
    from snnsec.zoo import MODELS

    registries = {"models": MODELS, "attacks": TRIGGERS, "triggers": TRIGGERS, "datasets": DATASETS}
    if what == "evasions":
        from snnsec.attacks.evasion import EVASIONS

        width = max(len(n) for n in EVASIONS.names())
        for name in EVASIONS.names():
            cls = EVASIONS.get(name)
            click.echo(f"{name:<{width}}  {'/'.join(cls.domains):<26}  {cls.summary}")
        return
    if what == "defenses":
        from snnsec.defending import describe_defenses

        width = max(len(d["name"]) for d in describe_defenses())
        for d in describe_defenses():
            click.echo(f"{d['name']:<{width}}  {d['family']:<20}  {d['summary']}")
        return
    for name in registries[what].names():
        click.echo(name)


def main() -> None:
    cli(prog_name="snnsec")


if __name__ == "__main__":
    sys.exit(main())
