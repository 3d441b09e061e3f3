"""Result plots for papers: defenses' clean accuracy and attack success before and after, per attack;
evasion curves; and the plots of the summaries over seeds (:mod:`snnsec.report`), with error bars.

Uses matplotlib's Agg canvas directly (no pyplot, no display needed). PNGs carry no metadata (no matplotlib
version, no time), so the same records give the same bytes.
"""
from __future__ import annotations

import io
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure

from snnsec.integrity import temp_path

if TYPE_CHECKING:
    from snnsec.report import Summary, SummaryRow


PNG_METADATA = {"Software": None}  # matplotlib writes its version otherwise; nothing else varies


def png_bytes(figure: Figure) -> bytes:
    """The figure as PNG bytes, the same for the same figure."""
    buf = io.BytesIO()
    figure.savefig(buf, format="png", metadata=PNG_METADATA)
    return buf.getvalue()


def save_png(figure: Figure, path: Path) -> Path:
    """Write the PNG through a temporary file and a rename: a kill leaves the old plot or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        tmp.write_bytes(png_bytes(figure))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


_save = save_png


def plot_defenses(records: list[dict[str, Any]], path: Path) -> Path | None:
    """One panel per attack run: for every defense, CA and ASR after it (bars) against their values
    before (dashed lines). Returns the PNG written, or None without records."""
    by_attack: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_attack[record["config"]["attack_run_id"]].append(record)
    if not by_attack:
        return None
    panels = sorted(by_attack.items(), key=lambda item: item[1][0]["config"]["attack"]["trigger"])
    rows = max(len(runs) for _, runs in panels)
    figure = Figure(figsize=(4.2 * len(panels), 1.2 + 0.32 * rows), dpi=150, layout="constrained")
    axes = figure.subplots(1, len(panels), sharey=False, squeeze=False)[0]
    for ax, (run_id, runs) in zip(axes, panels):
        runs = sorted(runs, key=lambda r: (r["metrics"]["family"], r["config"]["defense"]["defense"]))
        names = [r["config"]["defense"]["defense"] for r in runs]
        y = np.arange(len(runs))
        ca = [100 * r["metrics"]["ca_after"] for r in runs]
        asr = [100 * r["metrics"]["asr_after"] for r in runs]
        ax.barh(y - 0.2, ca, height=0.4, color="#4c72b0", label="CA after")
        ax.barh(y + 0.2, asr, height=0.4, color="#dd8452", label="ASR after")
        ax.axvline(100 * runs[0]["metrics"]["ca_before"], color="#4c72b0", linestyle="--", linewidth=1,
                   label="CA before")
        ax.axvline(100 * runs[0]["metrics"]["asr_before"], color="#dd8452", linestyle="--", linewidth=1,
                   label="ASR before")
        ax.set_yticks(y, names, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlim(0, 105)
        ax.set_xlabel("%", fontsize=8)
        attack = runs[0]["config"]["attack"]
        ax.set_title(f"{attack['model']} / {attack['trigger']} ({attack['injection']}), rate {attack['poison_rate']}\n"
                     f"attack run {run_id}", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=4, fontsize=7, frameon=False)
    return _save(figure, path)


def plt_colours() -> list:
    """20 distinguishable colours (matplotlib's tab20), so that a surrogate sweep's curves do not repeat."""
    from matplotlib import colormaps

    return [colormaps["tab20"](i) for i in range(20)]


def plot_evasion(records: list[dict[str, Any]], path: Path) -> Path | None:
    """One panel per (dataset, model, defense, norm): robust accuracy against the budget, one line per attack
    and surrogate (the best over surrogates bold, the random baseline dashed). Returns the PNG, or None."""
    panels: dict[tuple, list[tuple[str, list[tuple[float, float]], str]]] = defaultdict(list)
    for record in sorted(records, key=lambda r: r.get("finished", "")):
        config, metrics = record["config"], record["metrics"]
        at = config.get("adversarial_training")
        event_filter = (config["evasion"].get("event_filter") or {}).get("filter")
        defense = "adv. training" if at else (f"{event_filter} filter" if event_filter else "undefended")
        key = (config["model"]["dataset"], config["model"]["model"], defense, metrics["norm"], metrics["domain"])
        curves: dict[tuple[str, str, str, str], list[tuple[float, float]]] = defaultdict(list)
        for row in metrics["rows"]:
            if row["role"] in ("attack", "best", "random") and row["budget"] is not None:
                name = "random" if row["role"] == "random" else row["attack"]
                curves[(name, row["surrogate"], row["role"], row.get("mode", ""))].append(
                    (row["budget"], 100 * row["robust_accuracy"]))
        for (name, surrogate, role, mode), points in curves.items():
            target = config["evasion"].get("target")
            label = (name if surrogate == "-" else f"{name} ({surrogate})") + (f", {mode}" if mode else "") + \
                ("" if target is None or role == "random" else f", target {target}")
            panels[key].append((label, sorted(points), role))
    if not panels:
        return None
    keys = sorted(panels)
    figure = Figure(figsize=(6.4 * len(keys), 3.6), dpi=150, layout="constrained")
    axes = figure.subplots(1, len(keys), squeeze=False)[0]
    colours = plt_colours()
    for ax, key in zip(axes, keys):
        seen: set[str] = set()
        for index, (label, points, role) in enumerate(p for p in panels[key] if p[0] not in seen and not seen.add(p[0])):
            xs, ys = zip(*points)  # a curve recorded twice (the random baseline of two runs) is drawn once
            style = {"random": dict(linestyle="--", color="grey"), "best": dict(linewidth=2.4, color="black")}.get(
                role, dict(color=colours[index % len(colours)]))
            ax.plot(xs, ys, marker="o", markersize=3, label=label, **style)
        dataset, model, defense, norm, domain = key
        if norm in ("l0", "events"):
            ax.set_xscale("log")
        ax.set_ylim(-3, 103)
        unit = {"binary": ", elements flipped", "events": " edited"}.get(domain, "") if norm != "area" else " share"
        ax.set_xlabel(f"budget ({norm}{unit})", fontsize=8)
        ax.set_ylabel("robust accuracy (%)", fontsize=8)
        ax.set_title(f"{dataset} / {model} ({defense})", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return _save(figure, path)


# ---- summaries over seeds (snnsec.report) ----------------------------------------------------------------

CA_COLOUR, ASR_COLOUR = "#4c72b0", "#dd8452"


def summary_figure(summary: Summary) -> Figure | None:
    """The plot of a summary (:mod:`snnsec.report`): attacks, defenses or evasion; None when it has nothing
    to draw."""
    return {"attack": attack_summary_figure, "defense": defense_summary_figure,
            "evasion": evasion_summary_figure}[summary.kind](summary)


def _mean_err(row: SummaryRow, index: int, factor: float = 100.0) -> tuple[float, float]:
    from snnsec.report import mean_std

    values = row.values[index]
    if not values:
        return float("nan"), 0.0
    mean, std = mean_std([factor * v for v in values])
    return mean, std or 0.0


def _others(summary: Summary, row: SummaryRow, skip: set[str]) -> str:
    """The row's labels except ``skip``, joined: what tells its line apart."""
    return ", ".join(v for t, v in zip(summary.label_titles, row.labels) if t not in skip) or "all"


def attack_summary_figure(summary: Summary) -> Figure | None:
    """Per dataset/model: ASR and CA of the backdoored model against the poison rate, one line per trigger
    (and whatever else varies), error bars = std over seeds."""
    panels: dict[tuple[str, str], dict[str, list[tuple[float, SummaryRow]]]] = defaultdict(lambda: defaultdict(list))
    for row in summary.rows:
        rate = row.group.config.get("poison_rate")
        if isinstance(rate, (int, float)):
            line = _others(summary, row, {"Dataset", "Model", "Rate"})
            panels[(summary.label(row, "Dataset"), summary.label(row, "Model"))][line].append((float(rate), row))
    if not panels:
        return None
    keys = sorted(panels)
    figure = Figure(figsize=(8.4, 3.0 * len(keys)), dpi=120, layout="constrained")
    axes = figure.subplots(len(keys), 2, squeeze=False)
    titles = [m.title for m in summary.metrics]
    colours = plt_colours()
    for (ax_asr, ax_ca), key in zip(axes, keys):
        for index, (line, points) in enumerate(sorted(panels[key].items())):
            points.sort(key=lambda p: p[0])
            xs = [x for x, _ in points]
            for ax, title in ((ax_asr, "ASR (%)"), (ax_ca, "CA bd (%)")):
                stats = [_mean_err(r, titles.index(title)) for _, r in points]
                ax.errorbar(xs, [m for m, _ in stats], yerr=[e for _, e in stats], marker="o", markersize=3,
                            capsize=3, color=colours[index % len(colours)], label=line)
        for ax, what in ((ax_asr, "ASR (%)"), (ax_ca, "CA of the backdoored model (%)")):
            ax.set_xlabel("poison rate", fontsize=8)
            ax.set_ylabel(what, fontsize=8)
            ax.set_ylim(-3, 103)
            ax.set_title(f"{key[0]} / {key[1]}", fontsize=8)
            ax.tick_params(labelsize=7)
        ax_ca.legend(fontsize=6, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return figure


def defense_summary_figure(summary: Summary) -> Figure | None:
    """Per attack (dataset, model, trigger, ...): CA and ASR before and after each defense, mean over seeds
    with std error bars."""
    attack_side = {"Dataset", "Model", "Config", "Trigger", "Inj.", "Rate", "T", "Epochs"}
    attack_side |= {t for t in summary.label_titles if t.startswith("attack.")}  # further fields told apart
    defense_side = set(summary.label_titles) - attack_side
    panels: dict[str, list[SummaryRow]] = defaultdict(list)
    for row in summary.rows:
        panels[_others(summary, row, defense_side)].append(row)
    if not panels:
        return None
    keys = sorted(panels)
    titles = [m.title for m in summary.metrics]
    bars = (("CA before (%)", CA_COLOUR, 0.35), ("CA after (%)", CA_COLOUR, 1.0),
            ("ASR before (%)", ASR_COLOUR, 0.35), ("ASR after (%)", ASR_COLOUR, 1.0))
    rows = max(len(panels[k]) for k in keys)
    figure = Figure(figsize=(4.6 * len(keys), 1.4 + 0.5 * rows), dpi=120, layout="constrained")
    axes = figure.subplots(1, len(keys), squeeze=False)[0]
    for ax, key in zip(axes, keys):
        runs = panels[key]
        names = [_others(summary, r, attack_side | {"Family"}) for r in runs]
        y = np.arange(len(runs))
        for offset, (title, colour, alpha) in enumerate(bars):
            stats = [_mean_err(r, titles.index(title)) for r in runs]
            ax.barh(y - 0.3 + 0.2 * offset, [m for m, _ in stats], height=0.2, xerr=[e for _, e in stats],
                    color=colour, alpha=alpha, capsize=2, error_kw={"elinewidth": 0.8}, label=title)
        ax.set_yticks(y, names, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlim(0, 105)
        ax.set_xlabel("%", fontsize=8)
        ax.set_title(key, fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=4, fontsize=7, frameon=False)
    return figure


def evasion_summary_figure(summary: Summary) -> Figure | None:
    """Per dataset/model/defense/filter/norm: robust accuracy against the budget, one line per attack (and
    surrogate, mode), error bars = std over seeds."""
    panels: dict[str, dict[str, list[tuple[float, SummaryRow]]]] = defaultdict(lambda: defaultdict(list))
    panel_titles = {"Dataset", "Model", "Config", "T", "Epochs", "Defense", "Filter", "Target", "Norm"}
    robust = [m.title for m in summary.metrics].index("Robust (%)")
    for row in summary.rows:
        if row.x is None or not row.values[robust]:
            continue
        labels = dict(zip(summary.label_titles, row.labels))
        panel = ", ".join(v for t, v in labels.items() if t in panel_titles and v != "-")
        attack = labels.get("Attack", "")
        named = ("Attack", "Surrogate", "Mode")
        line = ", ".join([*(labels[t] for t in named if labels.get(t, "-") != "-"),
                          *(f"{t.lower()} {v}" for t, v in labels.items() if t not in panel_titles | {"Budget", *named}
                            and v != "-" and not (t == "Evasion" and attack.startswith(v)))])
        panels[panel][line].append((float(row.x), row))
    if not panels:
        return None
    keys = sorted(panels)
    columns = min(2, len(keys))
    figure = Figure(figsize=(7.2 * columns, 3.4 * math.ceil(len(keys) / columns)), dpi=100, layout="constrained")
    axes = figure.subplots(math.ceil(len(keys) / columns), columns, squeeze=False).flatten()
    for ax in axes[len(keys):]:
        ax.set_axis_off()
    colours = plt_colours()
    for ax, key in zip(axes, keys):
        log_scale = False
        for index, (line, points) in enumerate(sorted(panels[key].items())):
            points.sort(key=lambda p: p[0])
            stats = [_mean_err(r, robust) for _, r in points]
            ax.errorbar([x for x, _ in points], [m for m, _ in stats], yerr=[e for _, e in stats], marker="o",
                        markersize=3, capsize=3, color=colours[index % len(colours)], label=line)
            log_scale |= summary.label(points[0][1], "Norm") in ("l0", "events") and all(x > 0 for x, _ in points)
        if log_scale:
            ax.set_xscale("log")
        ax.set_ylim(-3, 103)
        ax.set_xlabel("budget", fontsize=8)
        ax.set_ylabel("robust accuracy (%)", fontsize=8)
        ax.set_title(key, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return figure
