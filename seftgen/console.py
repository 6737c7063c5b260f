"""Terminal output in one place: the console, the error formatter and progress bars."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from seftgen.errors import UserError

console = Console(stderr=True, highlight=False, soft_wrap=True)  # never break paths mid-word


def print_error(err: UserError) -> None:
    console.print(f"[bold red]Error:[/] {err.format()}", soft_wrap=True)


def info(message: str) -> None:
    console.print(message, soft_wrap=True)


def warn(message: str) -> None:
    console.print(f"[yellow]Warning:[/] {message}", soft_wrap=True)


class _RateColumn(ProgressColumn):
    """Rows/s and generated tokens/s; tokens are tracked in the task's `tokens` field."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        if elapsed <= 0:
            return Text("")
        rows = task.fields.get("rows", 0) / elapsed
        tokens = task.fields.get("tokens", 0) / elapsed
        return Text(f"{rows:.1f} rows/s  {tokens:.0f} tok/s", style="cyan")


class StageProgress:
    """A progress bar over rows that also reports tokens/s. Silent when not on a terminal."""

    def __init__(self, progress: Progress | None, task_id: int | None) -> None:
        self._progress = progress
        self._task = task_id
        self.rows = 0
        self.tokens = 0

    def advance(self, rows: int, tokens: int = 0) -> None:
        self.rows += rows
        self.tokens += tokens
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=rows, rows=self.rows, tokens=self.tokens)


@contextmanager
def stage_progress(description: str, total: int | None, done: int = 0) -> Iterator[StageProgress]:
    if not sys.stderr.isatty():
        yield StageProgress(None, None)
        return
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
    with progress:
        task_id = progress.add_task(description, total=total, completed=done, rows=0, tokens=0)
        yield StageProgress(progress, task_id)
