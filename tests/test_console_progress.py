"""Long work shows progress off a terminal too (edge_runtime/console.py): a log file or CI gets plain
lines where a terminal gets rich's bars, and short work stays quiet there."""

from __future__ import annotations

import io
import time

from rich.console import Console

from edgecxr.edge_runtime.console import progress_bar


def logged(**kwargs) -> tuple[io.StringIO, object]:
    out = io.StringIO()  # not a terminal, as a redirected stderr is
    return out, progress_bar(console=Console(file=out, width=200), **kwargs)


def reported(out: io.StringIO) -> list[str]:
    """Each plain line's task and count ("predicting: 2/4")."""
    return [line.split(",")[0] for line in out.getvalue().splitlines() if line.strip()]


def test_off_a_terminal_each_interval_gives_one_plain_line_and_the_end_one_more():
    out, progress = logged(line_interval=0.0)
    with progress:
        task = progress.add_task("predicting", total=4)
        for _ in range(4):
            progress.advance(task)
        progress.update(task, description="predicting (done)")  # after the end: nothing more
    assert reported(out) == ["predicting: 1/4", "predicting: 2/4", "predicting: 3/4", "predicting: 4/4"]
    assert out.getvalue().strip().splitlines()[-1].startswith("predicting: 4/4, 100 %, ")


def test_short_work_stays_quiet_and_long_work_reports_its_end():
    out, progress = logged(line_interval=0.05)
    with progress:
        quick = progress.add_task("quick", total=3)
        for _ in range(3):
            progress.advance(quick)
        slow = progress.add_task("slow", total=2)
        time.sleep(0.06)  # longer than the interval: the first step is reported
        progress.advance(slow)
        progress.advance(slow)  # within the interval, but the end of work already reported
    assert "quick" not in out.getvalue()
    assert reported(out) == ["slow: 1/2", "slow: 2/2"]


def test_a_reset_task_reports_again_as_trainings_epoch_bar_does():
    out, progress = logged(line_interval=0.0)
    with progress:
        task = progress.add_task("epoch 1", total=2)
        progress.advance(task, 2)
        progress.reset(task, total=2, description="epoch 2")
        progress.advance(task, 2)
    assert reported(out) == ["epoch 1: 2/2", "epoch 2: 2/2"]


def test_on_a_terminal_the_bar_is_drawn_and_no_plain_line_is_added():
    out = io.StringIO()
    progress = progress_bar(console=Console(file=out, width=100, force_terminal=True), line_interval=0.0)
    with progress:
        task = progress.add_task("predicting", total=2)
        progress.advance(task, 2)
    assert "predicting: 2/2" not in out.getvalue()
    assert "2/2" in out.getvalue()  # rich's own bar (its count column)
