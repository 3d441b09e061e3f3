"""Command line: click parses, builds a config and calls the library; errors become one clear line."""
from __future__ import annotations

import json
import os
import sys
from dataclasses import fields
from pathlib import Path

import click

from snnsec.errors import SnnsecError

LISTABLE = ("models", "attacks", "triggers", "datasets", "defenses")


def _default_cache_dir() -> Path:
    return Path(os.environ.get("SNNSEC_CACHE_DIR", Path.home() / ".cache" / "snnsec"))


class _Cli(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SnnsecError as err:
            raise click.ClickException(str(err)) from None


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
    click.option("--dataset", default="digits-dvs", show_default=True, help="Dataset (see `snnsec list datasets`)."),
    click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                 envvar="SNNSEC_DATA_DIR", help="Folder holding real datasets [env: SNNSEC_DATA_DIR]."),
    click.option("--frames", "-T", type=int, default=None, help="Time bins T (default: the dataset's)."),
    click.option("--slicing", type=click.Choice(["time", "count"]), default="time", show_default=True,
                 help="Equal time windows or equal event counts per bin."),
    click.option("--size", type=int, default=None, help="Resize frames to SIZE x SIZE (default: sensor size)."),
    click.option("--encoding", type=click.Choice(["binary", "counts"]), default="binary", show_default=True),
    click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                 help="Frame and model cache [env: SNNSEC_CACHE_DIR; default ~/.cache/snnsec]."),
)

TRIGGER_OPTIONS = _options(
    click.option("--trigger", default="static", show_default=True, help="Trigger (see `snnsec list attacks`)."),
    click.option("--trigger-size", type=float, default=0.1, show_default=True,
                 help="Trigger side as a fraction of the frame width, in (0, 1]."),
    click.option("--position", type=click.Choice(["top-left", "top-right", "bottom-left", "bottom-right", "middle", "random"]),
                 default="bottom-right", show_default=True, help="Trigger position; random is fixed by --seed."),
    click.option("--polarity", type=click.IntRange(0, 3), default=1, show_default=True,
                 help="0: both channels off, 1: ON events, 2: OFF events, 3: both."),
    click.option("--trigger-value", type=float, default=None,
                 help="Trigger pixel value (default 1 on binary frames, a high event count on count frames); "
                      "with --injection event, events per pixel and time bin."),
    click.option("--trigger-opt", "trigger_options", multiple=True, metavar="KEY=VALUE",
                 help="A trigger-specific option (repeatable), e.g. --trigger-opt speed=2."),
    click.option("--injection", type=click.Choice(["frame", "event"]), default="frame", show_default=True,
                 help="Paint the trigger on frames, or add synthetic events to the raw stream before framing."),
    click.option("--seed", type=int, default=0, show_default=True),
)


def _workspace(options: dict):
    """Pop the workspace options (paths, device) out of ``options``."""
    from snnsec.experiment import Workspace

    return Workspace(
        data_dir=options.pop("data_dir"), cache_dir=options.pop("cache_dir") or _default_cache_dir(),
        out_dir=options.pop("out", Path("reports")), device=options.pop("device", "auto"),
    )


def _attack_config(options: dict):
    from snnsec.experiment import AttackConfig

    options["trigger_options"] = _parse_options(options["trigger_options"])
    config_fields = {f.name for f in fields(AttackConfig)}
    return AttackConfig(**{k: v for k, v in options.items() if k in config_fields})


@cli.command()
@click.option("--model", default="spiking-cnn", show_default=True, help="Zoo model (see `snnsec list models`).")
@click.option("--model-config", default=None, help="Named model configuration (default: chosen for the data).")
@TRIGGER_OPTIONS
@DATA_OPTIONS
@click.option("--poison-rate", type=float, default=0.1, show_default=True, help="Fraction of training samples poisoned, in (0, 1].")
@click.option("--target", type=int, default=0, show_default=True, help="Target class of the backdoor.")
@click.option("--mode", type=click.Choice(["all-to-one", "all-to-all", "clean-label"]), default="all-to-one", show_default=True)
@click.option("--epochs", type=int, default=8, show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--lr", type=float, default=2e-3, show_default=True)
@click.option("--optimizer", type=click.Choice(["adamw", "adam"]), default="adamw", show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("reports"), show_default=True,
              help="Where records and tables are written.")
@click.option("--json", "as_json", is_flag=True, help="Print the run's record as one JSON object on stdout.")
def attack(**options) -> None:
    """Train a clean and a backdoored model and report CA, ASR and stealth."""
    from snnsec.experiment import run_attack

    as_json = options.pop("as_json")
    workspace = _workspace(options)
    config = _attack_config(options)
    record = run_attack(config, workspace)
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
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None, envvar="SNNSEC_DATA_DIR")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--device", default="auto", show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Records and tables (default: reports/<spec name>).")
def sweep(spec: Path, **options) -> None:
    """Run every attack of a sweep SPEC (JSON: base config + grid), skipping runs already recorded."""
    from snnsec.sweep import load_spec, run_sweep

    loaded = load_spec(spec)
    options["out"] = options["out"] or Path("reports") / loaded.get("name", spec.stem)
    workspace = _workspace(options)
    records = run_sweep(loaded, workspace)
    click.echo(f"{sum(r is not None for r in records)} new run(s), {sum(r is None for r in records)} skipped; "
               f"table: {workspace.out_dir / 'attack_results.md'}")


@cli.command()
@click.option("--out", type=click.Path(file_okay=False, exists=True, path_type=Path), default=Path("reports"),
              show_default=True, help="A folder holding records.jsonl.")
def report(out: Path) -> None:
    """Regenerate the Markdown, CSV and LaTeX tables of OUT from its records."""
    from snnsec.experiment import write_attack_tables

    if not (out / "records.jsonl").exists():
        raise click.ClickException(f"no records.jsonl in {out}; run `snnsec attack --out {out}` first")
    for path in write_attack_tables(out):
        click.echo(str(path))


@cli.command("show-trigger")
@TRIGGER_OPTIONS
@DATA_OPTIONS
@click.option("--split", type=click.Choice(["train", "test"]), default="test", show_default=True)
@click.option("--index", type=int, default=0, show_default=True, help="Which sample of the split to show.")
@click.option("--target", type=int, default=0, show_default=True, help="Target class (only for validation).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("reports/triggers"), show_default=True)
def show_trigger(**options) -> None:
    """Write a PNG grid of clean vs triggered frames over time and an animated GIF."""
    from snnsec.experiment import trigger_example
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


def _parse_options(pairs: tuple[str, ...]) -> tuple[tuple[str, object], ...]:
    """``("speed=2", "path=zigzag")`` -> ``(("path", "zigzag"), ("speed", 2))``; values are JSON when they parse."""
    parsed: dict[str, object] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--trigger-opt")
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
    if what == "defenses":
        from snnsec.defenses import DEFENSES

        registries["defenses"] = DEFENSES
    for name in registries[what].names():
        click.echo(name)


def main() -> None:
    cli(prog_name="snnsec")


if __name__ == "__main__":
    sys.exit(main())
