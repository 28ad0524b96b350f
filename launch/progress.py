"""Progress bars of the long-running verbs (rich), readable in a terminal and in a log file.

rich draws a bar only on a terminal: written to a file or a pipe (``tether train ... > log``,
``nohup``, a ``tether launch`` process) it prints nothing until the work ends, so a four-hour
training would show no sign of life. :func:`progress_bar` gives rich's bar on a terminal and,
elsewhere, the same columns as one plain line per task at most every ``interval_s``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

LOG_INTERVAL_S = 60.0
"""Seconds between a task's lines when the output is not a terminal."""


class LineProgress(Progress):
    """A rich ``Progress`` for files and pipes: a task's row is printed as a line when it starts,
    at most every ``interval_s`` seconds while it runs, and once when it completes. Nothing is
    redrawn in place, so a log holds no control codes."""

    def __init__(self, *columns: str | ProgressColumn, interval_s: float = LOG_INTERVAL_S, **kwargs):
        # transient: rich's own render of the finished bars at exit would repeat the last lines.
        super().__init__(*columns, transient=True, **kwargs)
        self.interval_s = interval_s
        self._printed_at: dict[TaskID, float] = {}

    def update(self, task_id: TaskID, **kwargs) -> None:
        super().update(task_id, **kwargs)
        self._print_line(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._print_line(task_id)

    def _print_line(self, task_id: TaskID) -> None:
        if self.disable:
            return
        task = next(t for t in self.tasks if t.id == task_id)
        last, now = self._printed_at.get(task_id), time.monotonic()
        if last == float("inf") or (not task.finished and last is not None and now - last < self.interval_s):
            return
        self._printed_at[task_id] = float("inf") if task.finished else now
        self.console.print(self.make_tasks_table([task]), soft_wrap=True)


def progress_bar(*columns: str | ProgressColumn, disable: bool = False,
                 interval_s: float = LOG_INTERVAL_S) -> Progress:
    """rich's ``Progress`` with ``columns`` (rich's default ones when none are given): a live bar
    on a terminal, a :class:`LineProgress` otherwise. ``disable``: show nothing."""
    if disable or Console().is_terminal:
        return Progress(*columns, disable=disable)
    return LineProgress(*columns, interval_s=interval_s)


@contextlib.contextmanager
def training_progress(label: str, steps: int, disable: bool = False) -> Iterator[Callable[[int, float], None]]:
    """A bar of ``steps`` steps named ``label``; yields ``on_step(step, loss)`` to advance it
    (``step`` counts from 0). ``disable``: no bar (JSON output, or a non-zero DDP rank)."""
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.4f}"),
               TimeRemainingColumn())
    with progress_bar(*columns, disable=disable) as progress:
        bar = progress.add_task(label, total=steps, loss=float("nan"))
        yield lambda step, loss: progress.update(bar, completed=step + 1, loss=loss)
