"""Result plots for papers: defenses' clean accuracy and attack success before and after, per attack.

Uses matplotlib's Agg canvas directly (no pyplot, no display needed).
"""
from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from snnsec.integrity import temp_path


def _save(figure: Figure, path: Path) -> Path:
    """Write the PNG through a temporary file and a rename: a kill leaves the old plot or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        figure.savefig(tmp, format="png")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


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
