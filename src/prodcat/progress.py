"""One progress-bar style for every long step: count, rate in products/s, ETA, on stderr."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class RateColumn(ProgressColumn):
    """Products per second, the figure people compare runs by."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f}/s" if speed else "-/s", style="progress.data.speed")


@contextmanager
def progress_bar(
    description: str, total: int, *, enabled: bool = True
) -> Iterator[Callable[[int], None]]:
    """Yield `advance(n)`; draws a bar on stderr when enabled (nothing otherwise)."""
    if not enabled:
        yield lambda n: None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


# Set while `training_progress` is active: (phase, steps done, steps in all) -> None.
_TRAINING: ContextVar[Callable[[str, int, int], None] | None] = ContextVar(
    "prodcat_training_progress", default=None
)


@contextmanager
def training_progress(enabled: bool = True) -> Iterator[None]:
    """While active, heads that train in steps (epochs, search trials) draw one bar per phase.

    A context variable rather than a head parameter: heads keep scikit-learn's contract, and
    nothing is drawn when a head is fitted outside `prodcat train`.
    """
    if not enabled:
        yield
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        tasks: dict[str, TaskID] = {}

        def update(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done, total=total)

        token = _TRAINING.set(update)
        try:
            yield
        finally:
            _TRAINING.reset(token)


def report_training(phase: str, done: int, total: int) -> None:
    """Tell the active `training_progress` (if any) that `done` of `total` steps are finished."""
    update = _TRAINING.get()
    if update is not None:
        update(phase, done, total)
