"""``leaderboard.html``: one self-contained static page of a results folder's database (no external
resources: inline CSS and vanilla JS, plots as base64 PNG).

Sections: attacks, defenses and robustness (evasion), each with one table per dataset and model of the
summaries over seeds (:mod:`snnsec.report`: mean ± sample std, n). A click on a header sorts the rows by
that column (numbers by value, a second click reverses); each row's runs (run ids and full configs) open
in a ``<details>``. Everything shown is HTML-escaped; the same database gives the same bytes.
"""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from snnsec import integrity
from snnsec.report import Summary, SummaryRow, format_mean_std, mean_std, summaries

SECTIONS = {"attack": ("attacks", "Attacks"), "defense": ("defenses", "Defenses"),
            "evasion": ("robustness", "Robustness (evasion)")}

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; cursor: pointer; user-select: none; white-space: nowrap; }
th[aria-sort="ascending"]::after { content: " \\25B2"; }
th[aria-sort="descending"]::after { content: " \\25BC"; }
td.num { text-align: right; white-space: nowrap; }
pre { font-size: 0.9em; max-width: 60em; overflow-x: auto; }
img { max-width: 100%; }
"""

# Sort a table's body by the clicked column: by data-sort (numbers by value before text, text in order), empty last;
# a second click on the same header reverses. Stable, so ties keep the previous order.
SCRIPT = """
function sortBy(th) {
  var table = th.closest("table"), body = table.tBodies[0];
  var index = Array.prototype.indexOf.call(th.parentNode.children, th);
  var ascending = th.getAttribute("aria-sort") !== "ascending";
  Array.prototype.forEach.call(th.parentNode.children, function (h) { h.removeAttribute("aria-sort"); });
  th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  var key = function (row) { return row.cells[index].getAttribute("data-sort"); };
  var rows = Array.prototype.slice.call(body.rows);
  rows.sort(function (a, b) {
    var x = key(a), y = key(b);
    if (x === "" || y === "") { return (x === "") - (y === ""); }
    var nx = Number(x), ny = Number(y), xn = !isNaN(nx), yn = !isNaN(ny), order;
    if (xn && yn) { order = nx - ny; } else if (xn !== yn) { order = xn ? -1 : 1; }
    else { order = x < y ? -1 : (x > y ? 1 : 0); }
    return ascending ? order : -order;
  });
  rows.forEach(function (row) { body.appendChild(row); });
}
document.addEventListener("click", function (event) {
  var th = event.target.closest("th[data-sortable]");
  if (th) { sortBy(th); }
});
"""


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _number(value: float) -> str:
    return repr(float(f"{value:.12g}"))  # stable, and parsed by JavaScript's Number()


def _row_html(summary: Summary, row: SummaryRow, skip: set[int]) -> str:
    cells = [f'<td data-sort="{esc(v)}">{esc(v)}</td>' for i, v in enumerate(row.labels) if i not in skip]
    cells.append(f'<td class="num" data-sort="{len(row.runs)}">{len(row.runs)}</td>')
    for values, metric in zip(row.values, summary.metrics):
        factor = 100.0 if metric.percent else metric.scale
        key = _number(mean_std([factor * v for v in values])[0]) if values else ""
        cells.append(f'<td class="num" data-sort="{key}">{esc(format_mean_std(values, metric))}</td>')
    runs = [{"run_id": r["run_id"], "finished": r.get("finished", ""), "config": r["config"]} for r in row.runs]
    shown = json.dumps(runs, indent=2, sort_keys=True, default=str)
    cells.append(f'<td data-sort="{esc(row.group.id)}"><details><summary>group {esc(row.group.id)}, '
                 f'{len(row.runs)} run(s)</summary><pre>{esc(shown)}</pre></details></td>')
    return "<tr>" + "".join(cells) + "</tr>"


def _tables(summary: Summary, section: str) -> list[str]:
    """One table per dataset and model (those two columns left out of it)."""
    skip = {summary.label_titles.index(t) for t in ("Dataset", "Model")}
    by_pair: dict[tuple[str, str], list[SummaryRow]] = {}
    for row in summary.rows:
        by_pair.setdefault((summary.label(row, "Dataset"), summary.label(row, "Model")), []).append(row)
    head = [t for i, t in enumerate(summary.label_titles) if i not in skip]
    head += ["n", *(m.title for m in summary.metrics), "Runs (config)"]
    parts = []
    for number, ((dataset, model), rows) in enumerate(sorted(by_pair.items())):
        parts.append(f'<h3 id="{esc(section)}-{number}">{esc(dataset)} / {esc(model)}</h3>')
        parts.append(f'<table class="sortable" data-section="{esc(section)}"><thead><tr>'
                     + "".join(f'<th data-sortable="1" scope="col">{esc(t)}</th>' for t in head)
                     + "</tr></thead><tbody>")
        parts.extend(_row_html(summary, row, skip) for row in rows)
        parts.append("</tbody></table>")
    return parts


def leaderboard_html(out_dir: Path) -> str:
    """The page for ``out_dir``'s database (caught up with its ``records.jsonl`` first)."""
    from snnsec.plots import png_bytes, summary_figure

    found = summaries(out_dir)
    runs = len({r["run_id"] for s in found for row in s.rows for r in row.runs})
    body = [f"<h1>snnsec leaderboard: {esc(Path(out_dir).name or out_dir)}</h1>",
            f"<p>{runs} run(s) from <code>{esc(Path(out_dir).name)}/results.sqlite</code>. Each number is the mean "
            "over the runs that differ only in their seeds &plusmn; the sample standard deviation (ddof=1; "
            "&ldquo;-&rdquo; for one run); n is the number of runs. Click a column header to sort.</p>"]
    nav = []
    for summary in found:
        section, title = SECTIONS[summary.kind]
        nav.append(f'<a href="#{section}">{esc(title)}</a>')
        body.append(f'<section id="{section}"><h2>{esc(title)}</h2><p>{esc(summary.caption)}</p>')
        body.extend(_tables(summary, section))
        figure = summary_figure(summary)
        if figure is not None:
            data = base64.b64encode(png_bytes(figure)).decode("ascii")
            body.append(f'<figure><img alt="{esc(title)}: summary plot" src="data:image/png;base64,{data}">'
                        f"<figcaption>{esc(title)}: means over seeds, error bars one standard deviation"
                        "</figcaption></figure>")
        body.append("</section>")
    if not found:
        body.append("<p>No runs.</p>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>snnsec leaderboard: {esc(Path(out_dir).name)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            + (f"<nav>{' | '.join(nav)}</nav>\n" if nav else "") + "\n".join(body)
            + f"\n<script>{SCRIPT}</script>\n</body>\n</html>\n")


def write_leaderboard(out_dir: Path) -> Path:
    """Write ``out_dir/leaderboard.html`` (atomically) and return its path."""
    path = Path(out_dir) / "leaderboard.html"
    text = leaderboard_html(out_dir)
    with integrity.locked(path.parent):
        integrity.atomic_write_text(path, text)
    return path
