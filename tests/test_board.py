"""The CLI's live table: rows that fit the terminal, a summary of the rest, full-width messages,
and redraws driven by the timer rather than by events."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

from rich.console import Console

from reactive_tasks._board import Board, Row
from reactive_tasks._models import TaskEvent, TaskState

LONG = "error 4105: Connect call failed on RAIDA 7 while detecting the coins of the wallet"


def event(row: Row, state: TaskState, message: str = "") -> TaskEvent[Any]:
    return TaskEvent[Any](
        backend=row.backend, task_id=row.task_id, kind=state.event_kind, state=state,
        native_status=state.value.lower(), progress=40.0, message=message,
        observed_at=datetime.now(UTC), sequence=0, snapshot={},
    )


def board(count: int) -> tuple[Board, list[Row]]:
    rows = [Row("taskcluster", f"task-{i:04d}-fN1SbArXTPSV", label=f"task-{i:04d}")
            for i in range(count)]
    return Board(rows, mode="lines", out=io.StringIO()), rows


def draw(table: Any, width: int) -> list[str]:
    console = Console(file=io.StringIO(), width=width, force_terminal=False)
    console.print(table)
    text: str = console.file.getvalue()  # type: ignore[attr-defined]
    return text.splitlines()


def test_beyond_the_rows_that_fit_it_shows_failed_and_recent_rows_and_counts() -> None:
    b, rows = board(300)
    for i, row in enumerate(rows):
        b.update(event(row, TaskState.FAILED if i in (3, 7) else TaskState.RUNNING))
    b.update(event(rows[250], TaskState.COMPLETED))  # the most recent change
    lines = draw(b.render(size=(100, 20)), 100)
    assert len(lines) <= 20
    shown = {line.split()[1] for line in lines[1:] if line.startswith("taskcluster")}
    assert {"task-0003", "task-0007", "task-0250"} <= shown
    assert lines[-1].split()[0].startswith("+")
    hidden = 300 - len(shown)
    assert f"+{hidden} more" in lines[-1] and "RUNNING" in lines[-1]


def test_messages_use_the_width_and_elapsed_stays_at_80_columns() -> None:
    b, rows = board(2)
    b.update(event(rows[0], TaskState.FAILED, LONG))
    b.retrying("taskcluster", "task-0001", 3, 10, "connection refused")  # no alias: no match
    b.alias(rows[1], "task-0001-shown")
    b.retrying("taskcluster", "task-0001-shown", 3, 10, "connection refused")
    wide = draw(b.render(size=(200, 24)), 200)
    assert any(LONG in line for line in wide)
    assert any("retrying 3/10: connection refused" in line for line in wide)
    narrow = draw(b.render(size=(80, 24)), 80)
    assert "elapsed" in narrow[0] and "message" in narrow[0]
    assert all(len(line) <= 80 for line in narrow)
    assert "0.0s error 4105: Connect call" in narrow[1]


class _CountingLive:
    def __init__(self) -> None:
        self.draws = 0
        self.console = Console(file=io.StringIO(), width=120, height=30)

    def update(self, _table: Any, refresh: bool = False) -> None:
        self.draws += 1


def test_events_do_not_redraw_the_table_the_timer_does() -> None:
    b, rows = board(50)
    live = _CountingLive()
    b._live = live
    for _ in range(20):
        for row in rows:
            b.update(event(row, TaskState.RUNNING, "working"))
    assert live.draws == 0
    b.tick()
    b.tick()  # nothing changed since: no second draw
    assert live.draws == 1
