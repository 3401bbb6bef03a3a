"""One console for progress and warnings (stderr), so stdout stays clean for JSON and CSV."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

console = Console(stderr=True)


def warn(message: str) -> None:
    console.print(f"[yellow]warning:[/yellow] {message}", highlight=False, soft_wrap=True)


# Off a terminal (a log file, CI, cron) a bar redrawn in place shows nothing until it is gone, so
# long work says where it is in a plain line this often instead.
LINE_INTERVAL_S = 30.0


class LoggedProgress(Progress):
    """Rich's bars on a terminal; elsewhere one plain line per task every `line_interval` seconds
    while it runs, and one when it ends if it ran that long (short work stays quiet in a log)."""

    def __init__(self, *columns, line_interval: float = LINE_INTERVAL_S, **kwargs):
        super().__init__(*columns, **kwargs)
        self.line_interval = line_interval
        self._last_line: dict[TaskID, float] = {}  # when each task last printed (or began)
        self._has_printed: set[TaskID] = set()

    def add_task(self, *args, **kwargs) -> TaskID:
        task_id = super().add_task(*args, **kwargs)
        self._last_line[task_id] = time.monotonic()
        return task_id

    def reset(self, task_id: TaskID, **kwargs) -> None:
        super().reset(task_id, **kwargs)
        self._last_line[task_id] = time.monotonic()
        self._has_printed.discard(task_id)

    def _task(self, task_id: TaskID):
        return next(task for task in self.tasks if task.id == task_id)

    def update(self, task_id: TaskID, **kwargs) -> None:
        was_finished = self._task(task_id).finished
        super().update(task_id, **kwargs)
        self._log_line(task_id, was_finished)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        was_finished = self._task(task_id).finished
        super().advance(task_id, advance)
        self._log_line(task_id, was_finished)

    def _log_line(self, task_id: TaskID, was_finished: bool) -> None:
        if self.console.is_terminal:
            return
        task, now = self._task(task_id), time.monotonic()
        due = now - self._last_line[task_id] >= self.line_interval
        if task.finished and not was_finished:  # the end: said when the work was long enough to report
            report = due or task_id in self._has_printed
        else:
            report = due and not task.finished
        if not report:
            return
        self._last_line[task_id] = now
        self._has_printed.add(task_id)
        total = f"/{task.total:g}" if task.total is not None else ""
        share = f", {task.percentage:.0f} %" if task.total else ""
        self.console.print(f"{task.description}: {task.completed:g}{total}{share}, {task.elapsed or 0:.0f} s",
                           highlight=False, markup=False)


def progress_bar(transient: bool = True, console: Console = console,
                 line_interval: float = LINE_INTERVAL_S) -> LoggedProgress:
    return LoggedProgress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
        line_interval=line_interval,
    )
