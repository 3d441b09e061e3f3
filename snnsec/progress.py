"""Progress bars on stderr (rich), silent when stderr is not a terminal unless forced."""
from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

_console = Console(stderr=True)


def enabled() -> bool:
    """Bars show on an interactive stderr, or when SNNSEC_PROGRESS=1; SNNSEC_PROGRESS=0 hides them."""
    flag = os.environ.get("SNNSEC_PROGRESS")
    if flag is not None:
        return flag == "1"
    return sys.stderr.isatty()


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[..., None]]:
    """Yields ``advance(n=1, **fields)``; fields (e.g. ``loss=0.3``) are shown beside the bar."""
    if not enabled():
        yield lambda n=1, **fields: None
        return
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[info]}")]
    with Progress(*columns, console=_console, transient=False) as bar:
        task = bar.add_task(description, total=total, info="")

        def advance(n: int = 1, **fields: float) -> None:
            info = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
            bar.update(task, advance=n, info=info)

        yield advance


_quiet = False


def quiet() -> None:
    """Silence :func:`log` in this process (the other processes of a torchrun launch: the main one speaks)."""
    global _quiet
    _quiet = True


def log(message: str) -> None:
    """A status line on stderr (never on stdout, which --json keeps clean), printed as is: no rich markup (so
    ``[1/2]`` and paths with brackets survive) and never wrapped (a log file keeps one line per message)."""
    if _quiet:
        return
    _console.print(message, highlight=False, markup=False, soft_wrap=True)
