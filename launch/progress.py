"""The progress bar of every training verb (rich): steps done, loss, time left."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def training_progress(label: str, steps: int, disable: bool = False) -> Iterator[Callable[[int, float], None]]:
    """A bar of ``steps`` steps named ``label``; yields ``on_step(step, loss)`` to advance it
    (``step`` counts from 0). ``disable``: no bar (JSON output, or a non-zero DDP rank)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.4f}"),
               TimeRemainingColumn())
    with Progress(*columns, disable=disable) as progress:
        bar = progress.add_task(label, total=steps, loss=float("nan"))
        yield lambda step, loss: progress.update(bar, completed=step + 1, loss=loss)
