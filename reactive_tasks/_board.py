"""The CLI's view of watched tasks: a live table on a terminal, plain lines elsewhere, or JSON.

The live table is redrawn by a timer at a bounded rate, never per event, and shows only the rows
that fit the terminal: the troubled and most recently changed ones, plus counts per state.
"""

from __future__ import annotations

import heapq
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TextIO

from ._models import TaskEvent, TaskState

__all__ = ["Board", "RetryHandler", "Row", "short_label"]

Mode = Literal["json", "live", "lines"]

#: Seconds between two redraws of the live table, whatever the event rate.
REDRAW_PERIOD = 0.25

_COLOURS = {TaskState.COMPLETED: "green", TaskState.FAILED: "red",
            TaskState.CANCELLED: "yellow", TaskState.TIMED_OUT: "magenta"}


def short_label(task_id: str, limit: int = 21) -> str:
    """A long id cut in the middle so that both of its ends stay recognisable."""
    if len(task_id) <= limit:
        return task_id
    tail = max((limit - 1) // 3, 1)
    return task_id[: limit - 1 - tail] + "…" + task_id[-tail:]


@dataclass
class Row:
    """One watched task as the board shows it."""

    backend: str
    task_id: str
    label: str = ""
    index: int = 0
    started: float = field(default_factory=time.monotonic)
    changed: float = 0.0
    event: TaskEvent[Any] | None = None
    ended: float | None = None
    error: str | None = None
    retry: str | None = None

    @property
    def state(self) -> str:
        """The word for the row's state: the task's state, ``ERROR`` or ``waiting``."""
        if self.error:
            return "ERROR"
        return "waiting" if self.event is None else self.event.state.value

    @property
    def troubled(self) -> bool:
        """Failed, could not be watched, or its polls are failing."""
        if self.error or self.retry:
            return True
        return self.event is not None and self.event.state.terminal and (
            self.event.state is not TaskState.COMPLETED)

    @property
    def message(self) -> str:
        if self.error:
            return self.error
        if self.retry:
            return self.retry
        return self.event.message or "" if self.event is not None else ""


class Board:
    """Every watched task's latest state, shown in one of three modes."""

    def __init__(self, rows: Sequence[Row], *, mode: Mode, out: TextIO) -> None:
        for i, row in enumerate(rows):
            row.index = i
        self.rows = {(r.backend, r.task_id): r for r in rows}
        self._by_label: dict[tuple[str, str], list[Row]] = {}
        self.mode: Mode = mode
        self.out = out
        self._live: Any = None
        self._dirty = True
        self._drawn = 0.0

    def alias(self, row: Row, shown: str) -> None:
        """Match log records that name the row's task by ``shown`` (its display id)."""
        self._by_label.setdefault((row.backend, shown), []).append(row)

    def __enter__(self) -> Board:
        if self.mode == "live":
            from rich.console import Console
            from rich.live import Live

            self._live = Live(
                self.render(), auto_refresh=False, transient=False, vertical_overflow="crop",
                console=Console(file=self.out),
            )
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(self.render())  # drawn once more as the live display stops
            self._live.__exit__(None, None, None)

    # -- changes -------------------------------------------------------------------------

    def update(self, event: TaskEvent[Any]) -> None:
        row = self.rows.get((event.backend, event.task_id))
        if row is None:
            row = Row(event.backend, event.task_id, label=event.task_id,
                      index=len(self.rows))
            self.rows[(event.backend, event.task_id)] = row
        row.event, row.retry, row.changed = event, None, time.monotonic()
        if event.state.terminal:
            row.ended = row.changed
        self._dirty = True
        if self.mode == "json":
            data = event.model_dump(mode="json")
            data["task_id"] = row.label  # the display id: secret tokens stay shortened
            self._write(json.dumps(data, default=str))
        elif self.mode == "lines":
            progress = "" if event.progress is None else f" {event.progress:5.1f}%"
            self._write(f"{row.backend} {row.label} {event.state.value}{progress}"
                        f" {event.message or ''}".rstrip())

    def fail(self, backend: str, task_id: str, error: BaseException) -> None:
        row = self.rows[(backend, task_id)]
        row.error, row.retry = f"{type(error).__name__}: {error}", None
        row.changed = row.ended = time.monotonic()
        self._dirty = True
        if self.mode == "json":
            self._write(json.dumps({"backend": backend, "task_id": row.label,
                                    "error": type(error).__name__, "message": str(error)}))
        elif self.mode == "lines":
            self._write(f"{backend} {row.label} ERROR {row.error}")

    def retrying(self, backend: str, shown: str, attempt: int, budget: int, reason: str) -> None:
        """A poll of the task shown as ``shown`` failed and will be retried."""
        text = f"retrying {attempt}/{budget}: {reason}"
        for row in self._by_label.get((backend, shown), ()):
            row.retry, row.changed = text, time.monotonic()
            self._dirty = True
            if self.mode == "json":
                self._write(json.dumps({"backend": backend, "task_id": row.label,
                                        "retrying": attempt, "budget": budget,
                                        "message": text}))
            elif self.mode == "lines":
                self._write(f"{backend} {row.label} {row.state} {text}")

    def _write(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    # -- drawing -------------------------------------------------------------------------

    def tick(self) -> None:
        """Redraw if anything changed (or once a second, for the elapsed column)."""
        if self._live is None:
            return
        now = time.monotonic()
        if self._dirty or now - self._drawn >= 1.0:
            self._dirty, self._drawn = False, now
            self._live.update(self.render(), refresh=True)

    def counts(self) -> dict[str, int]:
        """How many rows are in each state (``ERROR`` for those that could not be watched)."""
        counts: dict[str, int] = {}
        for row in self.rows.values():
            key = row.state if row.state != "waiting" else "UNKNOWN"
            counts[key] = counts.get(key, 0) + 1
        return counts

    def _visible(self, room: int) -> tuple[list[Row], list[Row]]:
        """The rows to draw in ``room`` lines, and those left out (summarised)."""
        rows = list(self.rows.values())
        if len(rows) <= room:
            return rows, []
        room = max(room - 1, 1)  # one line for the summary of the rest
        troubled = heapq.nlargest(room // 2, (r for r in rows if r.troubled),
                                  key=lambda r: r.changed)
        chosen = {id(r) for r in troubled}
        recent = heapq.nlargest(room - len(troubled), (r for r in rows if id(r) not in chosen),
                                key=lambda r: (r.changed, -r.index))
        chosen.update(id(r) for r in recent)
        shown = sorted(troubled + recent, key=lambda r: r.index)
        return shown, [r for r in rows if id(r) not in chosen]

    def render(self, size: tuple[int, int] | None = None) -> Any:
        """The table for a terminal of ``size`` (columns, lines): the live console's size."""
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        if size is None:
            size = self._live.console.size if self._live is not None else (80, 24)
        width, height = size
        shown, hidden = self._visible(max(height - 5, 3))
        bar, wide = width >= 120, width >= 100
        limit = 21 if wide else 13
        table = Table(box=None, padding=(0, 1, 0, 0), expand=True, header_style="bold")
        label_width = min(max((len(r.label) for r in shown), default=4), limit)
        table.add_column("backend", no_wrap=True, max_width=11)
        table.add_column("task", no_wrap=True, min_width=4, max_width=label_width)
        table.add_column("state", no_wrap=True, min_width=9)
        table.add_column("progress" if bar else "done", no_wrap=True, width=16 if bar else 4,
                         justify="right")
        table.add_column("elapsed", no_wrap=True, width=7, justify="right")
        table.add_column("message", no_wrap=True, overflow="ellipsis", ratio=1)
        now = time.monotonic()
        for row in shown:
            event = row.event
            colour = ("red" if row.error else _COLOURS.get(event.state, "cyan") if event
                      else "dim")
            pct = event.progress if event is not None else None
            if pct is None and event is not None and event.state.terminal:
                pct = 100.0
            progress: Any = ""
            if pct is not None:
                progress = ProgressBar(total=100, completed=pct, width=16) if bar else f"{pct:.0f}%"
            elapsed = (row.ended or now) - row.started
            message = row.message
            if row.retry and not row.error:
                message = f"[yellow]{_escape(message)}[/]"
            else:
                message = _escape(message)
            table.add_row(row.backend, _escape(short_label(row.label, limit)),
                          f"[{colour}]{row.state}[/]",
                          progress, f"{elapsed:6.1f}s", message)
        if hidden:
            counts: dict[str, int] = {}
            for row in hidden:
                counts[row.state] = counts.get(row.state, 0) + 1
            text = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
            table.add_row("", f"+{len(hidden)} more", "", "", "", f"[dim]{text}[/]")
        return table


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


class RetryHandler(logging.Handler):
    """Shows the library's poll-fault records (see ``_log``) on the board's rows."""

    def __init__(self, board: Board) -> None:
        super().__init__(logging.INFO)
        self.board = board

    def emit(self, record: logging.LogRecord) -> None:
        backend = getattr(record, "rt_backend", None)
        if backend is None or getattr(record, "rt_gave_up", False):
            return
        fields = record.__dict__
        self.board.retrying(backend, fields["rt_task"], fields["rt_attempt"],
                            fields["rt_budget"], fields["rt_reason"])
