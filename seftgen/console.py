"""Terminal output in one place: the console, the error formatter and progress bars."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.markup import escape
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


def print_error(err: UserError, flag_of: Callable[[str], str | None] | None = None) -> None:
    console.print(f"[bold red]Error:[/] {escape(err.format(flag_of))}", soft_wrap=True)


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


@contextmanager
def tools_to_log(log: Path, enabled: bool = True) -> Iterator[Path | None]:
    """Send what vLLM, Ray, axolotl and their child processes print to `log`, keeping the terminal
    for seftgen's own lines. Works at the file-descriptor level, so output of C code and of
    processes started meanwhile is caught too. Off when stderr is not the process's own (tests
    capturing output) or when `enabled` is False (`--verbose`)."""
    if not enabled or sys.stderr is not sys.__stderr__ or sys.stdout is not sys.__stdout__:
        yield None
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    target = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    terminal = os.fdopen(os.dup(saved_err), "w", buffering=1)
    previous = console.file
    try:
        os.dup2(target, 1)
        os.dup2(target, 2)
        console.file = terminal
        yield log
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        for fd in (saved_out, saved_err, target):
            os.close(fd)
        console.file = previous
        terminal.close()


class StepLine:
    """One line that updates in place (training steps); on a pipe, one line per new step."""

    def __init__(self) -> None:
        self._last: tuple[str, int] | None = None

    def update(self, name: str, step: int, total: int, loss: float | None) -> None:
        if self._last == (name, step):
            return
        self._last = (name, step)
        text = f"  train {name}: step {step}/{total}" + (f"  loss {loss:.4f}" if loss is not None else "")
        if console.is_terminal:
            console.print(f"\r{text}", end="", soft_wrap=True)
            if step >= total:
                console.print()
        else:
            console.print(text, soft_wrap=True)
