"""Run records (one JSON line per run, keyed by a hash of the full config) and the tables made from them.

``records.jsonl`` survives damage and races: a line that does not parse is skipped with a warning naming the
file and line; an append always starts on a fresh line; appends and table writes hold the folder's lock
(:func:`snnsec.integrity.locked`) and tables are replaced atomically, from the records as they are then.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import platform
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from snnsec import distributed, integrity

TRACKED_PACKAGES = ("snnsec", "torch", "spikingjelly", "tonic", "numpy", "scikit-learn", "scikit-image")


def config_hash(config: dict[str, Any]) -> str:
    """Stable 12-hex-digit id of a JSON-able config."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


def package_versions() -> dict[str, str]:
    """Versions of what produced a result, the CPU thread count (it changes float summation order), the CPU
    architecture, the CUDA build and, for a torchrun launch, how many processes trained together."""
    import torch

    found = {"python": platform.python_version(), "torch_threads": str(torch.get_num_threads()),
             "machine": platform.machine(), "cuda": str(torch.version.cuda)}
    if distributed.world() > 1:  # dropout masks and summation order differ from one process's
        found["processes"] = str(distributed.world())
    for name in TRACKED_PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


@dataclass
class RunRecord:
    kind: str  # "attack", "defense", ...
    run_id: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    started: str
    finished: str
    duration_s: float
    versions: dict[str, str] = field(default_factory=package_versions)
    artifacts: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def append_record(path: Path, record: RunRecord) -> None:
    """Append one JSON line under the folder's lock, on a fresh line (after a line cut short by a kill, a
    newline is written first), and flush it to disk; earlier runs are never rewritten. Then, under the same
    lock, store the run in the folder's ``results.sqlite`` (:mod:`snnsec.results_db`): a kill between the two
    leaves a database that the next append (or ``snnsec db import``) brings up to date from this file.
    Of several processes of one torchrun launch, only the main one appends (:mod:`snnsec.distributed`)."""
    from snnsec.results_db import ResultsDB  # it imports this module

    if not distributed.is_main():
        return
    line = (json.dumps(record.to_dict(), sort_keys=True) + "\n").encode()
    with integrity.locked(path.parent):
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        ResultsDB.of(path.parent).record_appended(path, record, before=size, after=size + len(line))


class Snapshot(list, ABC):
    """Records as read at one moment from where they are kept; :func:`write_tables` re-reads them under the
    folder's lock when they have changed since (:meth:`stale`), so a delayed writer never replaces newer
    tables with older ones."""

    @abstractmethod
    def stale(self) -> bool:
        """Whether the source has changed since these records were read."""

    @abstractmethod
    def reload(self) -> Snapshot:
        """The records as they are now."""


class Records(Snapshot):
    """Records loaded from ``path`` (of ``kind``), and how long the file was then: tables written from them
    are regenerated from the file when it has grown since (a record appended by another process)."""

    def __init__(self, items: Iterable[dict[str, Any]], path: Path, kind: str | None, size: int) -> None:
        super().__init__(items)
        self.path, self.kind, self.size = path, kind, size

    def stale(self) -> bool:
        try:
            return self.path.stat().st_size != self.size
        except FileNotFoundError:
            return self.size != 0

    def reload(self) -> Records:
        return load_records(self.path, self.kind)


_warned: set[tuple[str, int, str]] = set()  # damaged lines already reported by this process


def load_records(path: Path, kind: str | None = None) -> Records:
    """All records in ``path`` (the latest record wins when a run id repeats), optionally of one kind. A
    line that is not a run record (damaged, cut short) is skipped with a warning naming file and line."""
    if not path.exists():
        return Records([], path, kind, 0)
    with integrity.locked(path.parent, shared=True):
        data = path.read_bytes()
    latest: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(data.split(b"\n"), 1):
        if not line.strip():
            continue
        rec = parse_line(path, number, line)
        if rec is not None and (kind is None or rec["kind"] == kind):
            latest[rec["run_id"]] = rec
    return Records(latest.values(), path, kind, len(data))


def parse_line(path: Path, number: int, line: bytes) -> dict[str, Any] | None:
    """The record on one line, or None (reported once per process) when the line is not one."""
    try:
        rec = json.loads(line)
        if not (isinstance(rec, dict) and isinstance(rec.get("run_id"), str) and isinstance(rec.get("kind"), str)
                and isinstance(rec.get("config"), dict) and isinstance(rec.get("metrics"), dict)):
            raise ValueError("not a run record (kind, run_id, config and metrics expected)")
        return rec
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError included
        report_skipped(path, number, line, f"not JSON: {err.msg} at column {err.colno}"
                       if isinstance(err, json.JSONDecodeError) else str(err).splitlines()[0][:120])
        return None


def report_skipped(path: Path, number: int, line: bytes, reason: str) -> None:
    """Warn (once per process for the same line) that line ``number`` of ``path`` was skipped, and why."""
    seen = (str(path), number, hashlib.sha256(line).hexdigest())
    if seen not in _warned:
        _warned.add(seen)
        integrity.report(f"{path} line {number}: damaged record skipped ({reason})")


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


@dataclass(frozen=True)
class Column:
    title: str  # header in Markdown/LaTeX
    key: str  # flattened record key, e.g. "metrics.asr"
    percent: bool = False  # fraction shown as a percentage with one decimal
    scale: float = 1.0  # numbers are multiplied by this (e.g. 1000 to show mJ as uJ)
    decimals: int | None = None  # fixed decimals for numbers (None: 3 significant digits)
    default: str | None = None  # shown when a record lacks the field (None: "-")


def cell(record: dict[str, Any], column: Column) -> str:
    value = record.get(column.key, column.default if column.default is not None else "")
    if value is None or value == "":
        return "-"
    if column.percent and isinstance(value, (int, float)):
        return f"{100 * value:.1f}"
    if isinstance(value, (int, float)) and not isinstance(value, bool) and column.scale != 1.0:
        value = float(value) * column.scale
    if column.decimals is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.{column.decimals}f}"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def markdown_table(records: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    rows = [[cell(r, c) for c in columns] for r in records]
    widths = [max(len(c.title), *(len(row[i]) for row in rows)) if rows else len(c.title) for i, c in enumerate(columns)]
    line = lambda cells: "| " + " | ".join(s.ljust(w) for s, w in zip(cells, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line([c.title for c in columns]), sep, *(line(r) for r in rows)]) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "<": r"\textless{}", ">": r"\textgreater{}"}
_LATEX_MATH = re.compile(r"^\$[^$]*\$(?: -)?$")  # a cell already in math mode: "$97.3 \pm 0.4$", "$97.3 \pm$ -"


def latex_escape(text: str) -> str:
    """``text`` for a LaTeX document: every special character escaped, ``->`` as an arrow (a cell already in
    math mode, as the summaries' mean ± std, is kept)."""
    if _LATEX_MATH.match(text):
        return text
    return r"$\rightarrow$".join("".join(_LATEX_SPECIAL.get(ch, ch) for ch in part) for part in text.split("->"))


def latex_table(records: Sequence[dict[str, Any]], columns: Sequence[Column], caption: str) -> str:
    escape = latex_escape
    body = "\n".join(" & ".join(escape(cell(r, c)) for c in columns) + r" \\" for r in records)
    return (
        "\\begin{table}[t]\n\\centering\n\\caption{" + escape(caption) + "}\n"
        "\\begin{tabular}{" + "l" * len(columns) + "}\n\\toprule\n"
        + " & ".join(escape(c.title) for c in columns) + r" \\" + "\n\\midrule\n" + body + "\n\\bottomrule\n"
        "\\end{tabular}\n\\end{table}\n"
    )


def csv_table(records: Iterable[dict[str, Any]]) -> str:
    """Every flattened field of every record: the full config behind each row."""
    records = list(records)
    keys = sorted({k for r in records for k in r})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    for r in records:
        writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in r.items()})
    return buf.getvalue()


def write_tables(records: Sequence[dict[str, Any]], columns: Sequence[Column], out_dir: Path, stem: str, caption: str,
                 rows: Callable[[Sequence[dict[str, Any]]], Sequence[dict[str, Any]]] | None = None,
                 also: Callable[[Sequence[dict[str, Any]]], Sequence[Path | None]] | None = None) -> list[Path]:
    """Regenerate ``stem``.md/.csv/.tex in ``out_dir`` from all records; returns the paths written.

    Runs under ``out_dir``'s lock and replaces each file atomically (a kill leaves the old table or the new
    one). A :class:`Snapshot` (from :func:`load_records` or :func:`snnsec.results_db.load_results`) is
    re-read first if its source has changed since, so a writer that was delayed never replaces newer tables
    with older ones. ``rows`` turns the records into table rows (default: one row per record); ``also``
    writes further files from the same records (plots) under the same lock and returns their paths.
    Of several processes of one torchrun launch, only the main one writes (the others return ``[]``)."""
    if not distributed.is_main():
        return []
    with integrity.locked(out_dir):
        if isinstance(records, Snapshot) and records.stale():
            records = records.reload()
        flat = sorted((flatten(r) for r in (rows(records) if rows else records)), key=lambda r: r.get("finished", ""))
        paths = {
            out_dir / f"{stem}.md": f"# {caption}\n\n" + markdown_table(flat, columns),
            out_dir / f"{stem}.csv": csv_table(flat),
            out_dir / f"{stem}.tex": latex_table(flat, columns, caption),
        }
        for path, text in paths.items():
            integrity.atomic_write_text(path, text)
        extra = [p for p in (also(records) if also else ()) if p is not None]
    return [*paths, *extra]
