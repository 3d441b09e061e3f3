"""Reports of a results folder, built from its database alone (:func:`snnsec.results_db.load_results`): the
per-run tables and, aggregated over seeds, ``summary_attacks``, ``summary_defenses`` and ``summary_evasion``
(.md/.csv/.tex, each with a PNG plot).

**Groups.** Runs whose configs differ only in their seeds form one group, one summary row: every key named
``seed`` at any depth (an attack's ``seed`` and its trigger's ``trigger_params.seed``; a defense's seed and its
attack's; an evasion's seed and its model's) and the ids that follow from the config (``request_id``,
``attack_run_id``) are left out of the comparison; any other difference makes another group.

**Mean ± std.** Each number is the mean over the group's runs ± the sample standard deviation (ddof=1), both
with the same decimals (percentages one; otherwise the column's, or three significant digits of the mean),
and ``n`` says over how many runs. With one run the deviation is undefined and shown as ``-``: ``97.3 ± -``.
LaTeX: ``$97.3 \\pm 0.4$`` and ``$97.3 \\pm$ -``. A run lacking a metric (a defense without detection has no
AUROC) is left out of that mean; a metric no run has is ``-``.

Everything written is a function of the database's rows: rows sorted by their labels, floats formatted with
fixed decimals, PNGs without a timestamp or version; the same database gives the same bytes.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from snnsec import integrity
from snnsec.records import Column, Snapshot, cell, flatten, latex_table, markdown_table
from snnsec.results_db import canonical

SEED_KEYS = frozenset({"seed"})  # at any depth of a config
ID_KEYS = frozenset({"request_id", "attack_run_id"})  # ids that follow from the config and its seeds


def seedless(config: Any) -> Any:
    """``config`` without its seeds and derived ids (at any depth): what the runs of one group share."""
    if isinstance(config, dict):
        return {k: seedless(v) for k, v in config.items() if k not in SEED_KEYS | ID_KEYS}
    if isinstance(config, list):
        return [seedless(v) for v in config]
    return config


@dataclass(frozen=True)
class Group:
    """Runs that differ only in their seeds; ``config`` is what they share."""

    config: dict[str, Any]
    runs: tuple[dict[str, Any], ...]  # the records, by finish time

    @property
    def id(self) -> str:
        """8 hex digits naming the shared config."""
        return hashlib.sha256(canonical(self.config).encode()).hexdigest()[:8]


def group_runs(records: Sequence[dict[str, Any]]) -> list[Group]:
    """The records grouped by their config without seeds (and by kind), groups in the order of their first
    run's finish time, runs by finish time (then run id)."""
    ordered = sorted(records, key=lambda r: (r.get("finished", ""), r["run_id"]))
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in ordered:
        groups.setdefault(canonical([record["kind"], seedless(record["config"])]), []).append(record)
    return [Group(seedless(runs[0]["config"]), tuple(runs)) for runs in groups.values()]


# ---- mean ± std --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """A summarised number: ``key`` is looked up in a run's flattened record (or its evasion row)."""

    title: str
    key: str
    percent: bool = False  # a fraction, shown as a percentage with one decimal
    scale: float = 1.0
    decimals: int | None = None  # None: three significant digits of the mean


def decimals_for(mean: float, std: float | None, metric: Metric) -> int:
    if metric.percent:
        return 1
    if metric.decimals is not None:
        return metric.decimals
    ref = abs(mean) or (std or 0.0)
    return 0 if ref == 0 else min(6, max(0, 2 - math.floor(math.log10(ref))))


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof=1; None for one value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def format_mean_std(values: Sequence[float], metric: Metric, latex: bool = False) -> str:
    """``97.3 ± 0.4`` (``$97.3 \\pm 0.4$`` for LaTeX); ``97.3 ± -`` for one value; ``-`` for none."""
    if not values:
        return "-"
    if not all(math.isfinite(float(v)) for v in values):  # a run that measured nan or inf: shown, not averaged
        return "nan" if any(math.isnan(float(v)) for v in values) else "inf"
    factor = 100.0 if metric.percent else metric.scale
    mean, std = mean_std([factor * float(v) for v in values])
    places = decimals_for(mean, std, metric)
    shown = _fixed(mean, places)
    if std is None:
        return f"${shown} \\pm$ -" if latex else f"{shown} ± -"
    spread = _fixed(std, places)
    return f"${shown} \\pm {spread}$" if latex else f"{shown} ± {spread}"


def _fixed(value: float, places: int) -> str:
    text = f"{value:.{places}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.0"


# ---- summaries --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SummaryRow:
    labels: tuple[str, ...]  # one shown value per label column
    values: tuple[tuple[float, ...], ...]  # per metric: the runs' values (runs lacking it left out)
    group: Group
    runs: tuple[dict[str, Any], ...]  # the runs summarised in this row (evasion: those with this outcome)
    x: float | None = None  # evasion: the row's numeric budget (for plots)


@dataclass(frozen=True)
class Summary:
    kind: str  # "attack", "defense", "evasion"
    stem: str
    caption: str
    label_titles: tuple[str, ...]
    metrics: tuple[Metric, ...]
    rows: tuple[SummaryRow, ...]

    def label(self, row: SummaryRow, title: str) -> str:
        return row.labels[self.label_titles.index(title)] if title in self.label_titles else "-"

    def titles(self) -> list[str]:
        return [*self.label_titles, "n", *(m.title for m in self.metrics), "Group"]

    def cells(self, row: SummaryRow, latex: bool = False) -> list[str]:
        return [*row.labels, str(len(row.runs)), *(format_mean_std(v, m, latex) for v, m in zip(row.values, self.metrics)),
                row.group.id]


#: Config fields resolved from others (a named model's parameters, a trigger's, an attack's) or describing
#: where a run ran: named in ``Other config`` only when the fields as requested do not tell groups apart.
DERIVED = frozenset({"attack_params", "model_params", "trigger_params", "data_version", "runtime"})

Label = tuple[str, str]  # (title, flattened key of {"config": group config, "metrics": first run's metrics, ...})

ALWAYS = ("Dataset", "Model")  # label columns shown even when they do not vary

ATTACK_LABELS: tuple[Label, ...] = (
    ("Dataset", "config.dataset"), ("Model", "config.model"), ("Config", "config.model_config"),
    ("Trigger", "config.trigger"), ("Inj.", "config.injection"), ("Pos.", "config.position"),
    ("Pol.", "config.trigger_params.polarity"), ("Size", "config.trigger_size"), ("Mode", "config.mode"),
    ("Target", "config.target"), ("Rate", "config.poison_rate"), ("T", "config.frames"), ("Epochs", "config.epochs"),
    ("E. conv.", "config.energy_convention"),
)
ATTACK_METRICS = (
    Metric("CA clean (%)", "metrics.ca_clean", percent=True), Metric("CA bd (%)", "metrics.ca_backdoor", percent=True),
    Metric("ASR (%)", "metrics.asr", percent=True), Metric("SSIM", "metrics.ssim", decimals=3),
    Metric("Energy (uJ)", "metrics.energy_mj", scale=1000.0),
)
DEFENSE_LABELS: tuple[Label, ...] = (
    ("Dataset", "config.attack.dataset"), ("Model", "config.attack.model"), ("Config", "config.attack.model_config"),
    ("Trigger", "config.attack.trigger"), ("Inj.", "config.attack.injection"), ("Rate", "config.attack.poison_rate"),
    ("T", "config.attack.frames"), ("Epochs", "config.attack.epochs"), ("Defense", "config.defense.defense"),
    ("Family", "metrics.family"), ("Reserve", "config.reserve_rate"),
)
DEFENSE_METRICS = (
    Metric("CA before (%)", "metrics.ca_before", percent=True), Metric("ASR before (%)", "metrics.asr_before", percent=True),
    Metric("CA after (%)", "metrics.ca_after", percent=True), Metric("ASR after (%)", "metrics.asr_after", percent=True),
    Metric("DER", "metrics.der", decimals=3), Metric("AUROC", "metrics.auroc", decimals=3),
)
EVASION_LABELS: tuple[Label, ...] = (
    ("Dataset", "config.model.dataset"), ("Model", "config.model.model"), ("Config", "config.model.model_config"),
    ("T", "config.model.frames"), ("Epochs", "config.model.epochs"), ("Defense", "defense"), ("Filter", "filter"),
    ("Evasion", "config.evasion.attack"), ("Target", "target"), ("Samples", "config.evasion.samples"),
)
EVASION_ROW_LABELS = ("Attack", "Norm", "Surrogate", "Mode", "Budget")  # per outcome, always shown
EVASION_METRICS = (
    Metric("CA (%)", "metrics.clean_accuracy", percent=True), Metric("Robust (%)", "row.robust_accuracy", percent=True),
    Metric("Success (%)", "row.success_rate", percent=True),
)


def _group_fields(group: Group, kind: str) -> dict[str, Any]:
    """The flattened fields a group's labels are read from: its config, its first run's metrics (a defense's
    family) and, for evasion, the shown defense, filter and target."""
    fields = flatten({"config": group.config, "metrics": group.runs[0]["metrics"]})
    if kind == "evasion":
        from snnsec.evading import defense_label

        config = group.config
        event_filter = (config["evasion"].get("event_filter") or {}).get("filter")
        target = config["evasion"].get("target")
        fields.update(defense=defense_label(config), filter=event_filter or "-",
                      target="-" if target is None else str(target))
    return fields


def _labels(groups: Sequence[Group], kind: str, candidates: Sequence[Label],
            suffixes: Sequence[Sequence[tuple[str, ...]]] | None = None) -> tuple[list[str], list[list[str]]]:
    """The label columns and each group's cells: ``ALWAYS``, the candidates whose value varies across groups
    and, when rows would still look alike (a group's cells plus one of its ``suffixes``, the labels of its
    rows), an ``Other config`` column naming, for those groups, every config field that tells them apart."""
    fields = [_group_fields(g, kind) for g in groups]
    shown = lambda f, key: cell(f, Column(key, key))  # noqa: E731
    chosen = [(t, k) for t, k in candidates
              if t in ALWAYS or len({shown(f, k) for f in fields}) > 1]
    cells = [[shown(f, k) for _, k in chosen] for f in fields]
    alike: dict[tuple[str, ...], set[int]] = {}
    for index, row in enumerate(cells):
        for suffix in (suffixes[index] if suffixes is not None else [()]):
            alike.setdefault((*row, *suffix), set()).add(index)
    other: dict[int, set[str]] = {}
    for members in alike.values():
        if len(members) > 1:
            configs = {i: flatten(groups[i].config) for i in members}
            keys = {k for c in configs.values() for k in c}
            differ = {k for k in keys if len({canonical(c.get(k)) for c in configs.values()}) > 1}
            given = {k for k in differ if not DERIVED & set(k.split("."))}
            if len({canonical([c.get(k) for k in sorted(given)]) for c in configs.values()}) == len(members):
                differ = given  # the fields as requested tell them apart: their resolved values add nothing
            for i in members:
                other.setdefault(i, set()).update(differ)
    titles = [t for t, _ in chosen]
    if other:
        titles.append("Other config")
        for index, row in enumerate(cells):
            config = flatten(groups[index].config)
            row.append("; ".join(f"{k}={_compact(config.get(k))}" for k in sorted(other.get(index, ()))) or "-")
    return titles, cells


def _compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":")) if isinstance(value, (list, dict)) else str(value)


def _values(runs: Sequence[dict[str, Any]], metric: Metric) -> tuple[float, ...]:
    found = (flatten(r).get(metric.key) for r in runs)
    return tuple(float(v) for v in found if isinstance(v, (int, float)) and not isinstance(v, bool))


def _sort_key(labels: Sequence[str]) -> tuple:
    """Labels in order, numbers by value, then text."""
    def one(text: str) -> tuple:
        try:
            return (0, float(text), "")
        except ValueError:
            return (1, 0.0, text)
    return tuple(one(t) for t in labels)


def summarize(records: Sequence[dict[str, Any]], kind: str) -> Summary:
    """The seed-aggregated summary of the ``kind`` records among ``records``."""
    groups = group_runs([r for r in records if r["kind"] == kind])
    if kind == "evasion":
        return _summarize_evasion(groups)
    candidates, metrics, stem, caption = {
        "attack": (ATTACK_LABELS, ATTACK_METRICS, "summary_attacks",
                   "Backdoor attacks over seeds: mean ± sample std (n runs) of clean accuracy (CA) of the clean and "
                   "backdoored models, attack success rate (ASR), SSIM and energy"),
        "defense": (DEFENSE_LABELS, DEFENSE_METRICS, "summary_defenses",
                    "Backdoor defenses over seeds: mean ± sample std (n runs) of CA and ASR before and after, DER and "
                    "detection AUROC"),
    }[kind]
    titles, cells = _labels(groups, kind, candidates)
    rows = [SummaryRow(tuple(c), tuple(_values(g.runs, m) for m in metrics), g, g.runs) for g, c in zip(groups, cells)]
    rows.sort(key=lambda r: (_sort_key(r.labels), r.group.id))
    return Summary(kind, stem, caption, tuple(titles), metrics, tuple(rows))


def _outcome(row: dict[str, Any]) -> tuple[str, ...]:
    """An evasion outcome's shown labels (as :func:`snnsec.evading.table_rows` names it): attack, norm,
    surrogate, mode, budget."""
    from snnsec.evading import attack_label

    return (attack_label(row), str(row.get("norm", "-")), str(row.get("surrogate", "-")), str(row.get("mode") or "-"),
            str(row.get("budget_label", "-")))


def _summarize_evasion(groups: Sequence[Group]) -> Summary:
    found: list[dict[tuple[str, ...], list[tuple[dict[str, Any], dict[str, Any]]]]] = []
    for group in groups:
        outcomes: dict[tuple[str, ...], list[tuple[dict[str, Any], dict[str, Any]]]] = {}
        for run in group.runs:
            for row in run["metrics"]["rows"]:
                # the role too: the shown labels alone could coincide
                outcomes.setdefault((*_outcome(row), row["role"]), []).append((run, row))
        found.append(outcomes)
    titles, cells = _labels(groups, "evasion", EVASION_LABELS, [[key[:-1] for key in o] for o in found])
    rows = []
    for group, labels, outcomes in zip(groups, cells, found):
        for key, pairs in outcomes.items():
            flat = [{**run, "row": row} for run, row in pairs]
            rows.append(SummaryRow((*labels, *key[:-1]), tuple(_values(flat, m) for m in EVASION_METRICS), group,
                                   tuple(run for run, _ in pairs), pairs[0][1].get("budget")))
    rows.sort(key=lambda r: (_sort_key(r.labels[:len(titles)]), r.group.id, _sort_key(r.labels[len(titles):])))
    return Summary("evasion", "summary_evasion",
                   "Evasion over seeds: mean ± sample std (n runs) of clean accuracy and, per attack, surrogate, mode "
                   "and budget, robust accuracy and success rate",
                   (*titles, *EVASION_ROW_LABELS), EVASION_METRICS, tuple(rows))


# ---- writing ----------------------------------------------------------------------------------------------


def summary_texts(summary: Summary) -> dict[str, str]:
    """The summary's Markdown, CSV (the Markdown's cells plus the run ids of each row) and LaTeX."""
    titles = summary.titles()
    columns = [Column(t, str(i)) for i, t in enumerate(titles)]
    as_rows = lambda latex: [dict(enumerate(summary.cells(r, latex))) for r in summary.rows]  # noqa: E731
    keyed = lambda rows: [{str(i): v for i, v in row.items()} for row in rows]  # noqa: E731
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*titles, "Runs"])
    for row in summary.rows:
        writer.writerow([*summary.cells(row), " ".join(r["run_id"] for r in row.runs)])
    return {"md": f"# {summary.caption}\n\n" + markdown_table(keyed(as_rows(False)), columns),
            "csv": buf.getvalue(),
            "tex": latex_table(keyed(as_rows(True)), columns, summary.caption)}


KINDS = ("attack", "defense", "evasion")


def write_summary(records: Sequence[dict[str, Any]], kind: str, out_dir: Path) -> list[Path]:
    """``summary_<kind>s.{md,csv,tex,png}`` in ``out_dir`` from ``records`` (re-read under the folder's lock
    when they are a stale :class:`~snnsec.records.Snapshot`); nothing without runs of ``kind``."""
    from snnsec.plots import save_png, summary_figure

    with integrity.locked(out_dir):
        if isinstance(records, Snapshot) and records.stale():
            records = records.reload()
        summary = summarize(records, kind)
        if not summary.rows:
            return []
        written = []
        for suffix, text in summary_texts(summary).items():
            integrity.atomic_write_text(out_dir / f"{summary.stem}.{suffix}", text)
            written.append(out_dir / f"{summary.stem}.{suffix}")
        figure = summary_figure(summary)
        if figure is not None:
            written.append(save_png(figure, out_dir / f"{summary.stem}.png"))
    return written


def write_report(out_dir: Path) -> list[Path]:
    """Every table of ``out_dir`` from its results database: the per-run tables (attack, defense, evasion)
    and the summaries over seeds, with their plots. The database first catches up with ``records.jsonl``."""
    from snnsec.defending import write_defense_tables
    from snnsec.evading import write_evasion_tables
    from snnsec.experiment import write_attack_tables
    from snnsec.results_db import load_results

    records = load_results(out_dir)
    kinds = {r["kind"] for r in records}
    paths = [*(write_attack_tables(out_dir) if "attack" in kinds or not kinds else []), *write_defense_tables(out_dir),
             *write_evasion_tables(out_dir)]
    for kind in KINDS:
        if kind in kinds:
            paths += write_summary(load_results(out_dir, kind), kind, out_dir)
    return paths


def summaries(out_dir: Path) -> list[Summary]:
    """The summaries (attacks, defenses, evasion) of ``out_dir``'s database that have rows."""
    from snnsec.results_db import load_results

    records = load_results(out_dir)
    return [s for s in (summarize(records, kind) for kind in KINDS) if s.rows]


