"""Result plots for papers: defenses' clean accuracy and attack success before and after, per attack.

Uses matplotlib's Agg canvas directly (no pyplot, no display needed).
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure


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
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
