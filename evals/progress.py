"""Rich progress bars for long work (drawn only on a terminal, so logs and tests stay clean)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

_console = Console(stderr=True)


@contextmanager
def progress_bar(total: int, description: str) -> Iterator[callable]:
    """Yield ``advance(n=1)``; the bar shows done/total and elapsed time."""
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=_console, transient=True, disable=not _console.is_terminal,
    )
    with progress:
        task_id = progress.add_task(description, total=total)

        def advance(n: int = 1) -> None:
            progress.advance(task_id, n)

        yield advance
