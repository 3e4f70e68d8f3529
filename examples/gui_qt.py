"""A live PySide6 window: one row per task, with a progress bar and its state.

Task events arrive on the library's loop thread; widgets may only be touched on the GUI thread.
``observe_on`` with ``reactive_tasks.gui.qt_scheduler`` (reactivex's ``QtScheduler``, made safe
to call from the engine's thread) moves every event there. The window closes by
itself once every task is terminal (or after ``--max-seconds``).

    pip install "reactive-tasks[emulator,gui]"
    python examples/gui_qt.py                                # starts an emulator in-process
    python examples/gui_qt.py --url http://127.0.0.1:8765    # or `reactive-tasks emulate`
    python examples/gui_qt.py --screenshot window.png        # saves the window before quitting

Exit code: 0 when every task reached a terminal state, 1 after ``--max-seconds``, 2 on a
monitoring error.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from _scripted import coin_script, emulator, overall_state, parser
from PySide6 import QtCore, QtWidgets
from reactivex import operators as ops
from reactivex.disposable import CompositeDisposable

from reactive_tasks import PollPolicy, TaskEvent, TaskState
from reactive_tasks.backends import CloudCoinBackend
from reactive_tasks.compose import merge_tasks, overall_progress
from reactive_tasks.gui import qt_scheduler

#: Progress-bar colours by state; running and pending tasks use the default.
COLOURS = {
    TaskState.COMPLETED: "#2e7d32",
    TaskState.FAILED: "#c62828",
    TaskState.CANCELLED: "#8d6e63",
    TaskState.TIMED_OUT: "#ef6c00",
}
BAR_STYLE = """
QProgressBar {{ border: 1px solid #9e9e9e; border-radius: 3px; background: #f5f5f5;
               text-align: center; min-height: 18px; }}
QProgressBar::chunk {{ background-color: {colour}; border-radius: 2px; }}
"""


class TaskWindow(QtWidgets.QWidget):
    """One row per task (id, progress bar, state), and an overall bar below."""

    def __init__(self, tasks: list[tuple[str, str]]) -> None:
        super().__init__()
        self.setWindowTitle("reactive-tasks")
        self.events: dict[str, TaskEvent[Any]] = {}
        self.off_gui_thread = 0
        self.outcome = TaskState.RUNNING  # what the overall bar's colour says
        self._total = len(tasks)
        self._bars: dict[str, QtWidgets.QProgressBar] = {}
        self._states: dict[str, QtWidgets.QLabel] = {}

        grid = QtWidgets.QGridLayout(self)
        grid.setHorizontalSpacing(12)
        for column, title in enumerate(("Task", "Progress", "State")):
            header = QtWidgets.QLabel(f"<b>{title}</b>")
            grid.addWidget(header, 0, column)
        for row, (backend, task_id) in enumerate(tasks, start=1):
            grid.addWidget(QtWidgets.QLabel(f"{backend} {task_id[:8]}"), row, 0)
            bar = self._bars[task_id] = self._new_bar()
            grid.addWidget(bar, row, 1)
            state = self._states[task_id] = QtWidgets.QLabel("waiting for the first poll")
            state.setMinimumWidth(230)
            grid.addWidget(state, row, 2)
        self.overall = self._new_bar()
        grid.addWidget(QtWidgets.QLabel("<b>Overall</b>"), len(tasks) + 1, 0)
        grid.addWidget(self.overall, len(tasks) + 1, 1, 1, 2)
        grid.setColumnStretch(1, 1)
        self.resize(640, 0)

    @staticmethod
    def _new_bar() -> QtWidgets.QProgressBar:
        bar = QtWidgets.QProgressBar()
        bar.setRange(0, 100)
        bar.setValue(0)
        bar.setStyleSheet(BAR_STYLE.format(colour="#1e88e5"))
        return bar

    def _check_thread(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            self.off_gui_thread += 1  # would be a bug: observe_on is there to prevent it

    def show_event(self, event: TaskEvent[Any]) -> None:
        """Show one task's latest event in its row (runs on the GUI thread)."""
        self._check_thread()
        self.events[event.task_id] = event
        bar = self._bars[event.task_id]
        if event.progress is not None:
            bar.setValue(round(event.progress))
        if event.state in COLOURS:
            bar.setStyleSheet(BAR_STYLE.format(colour=COLOURS[event.state]))
        text = event.state.value + (f" · {event.message}" if event.message else "")
        self._states[event.task_id].setText(text)
        outcome = overall_state((e.state for e in self.events.values()), self._total)
        if outcome is not self.outcome:
            self.outcome = outcome
            self.overall.setStyleSheet(BAR_STYLE.format(colour=COLOURS.get(outcome, "#1e88e5")))

    def show_overall(self, percent: float) -> None:
        """Show the overall progress across every task (runs on the GUI thread)."""
        self._check_thread()
        self.overall.setValue(round(percent))


def main(argv: list[str] | None = None) -> int:
    options = parser("Watch CloudCoin tasks in a Qt window.")
    options.add_argument("--tasks", type=int, default=6, help="how many tasks (default 6)")
    options.add_argument("--max-seconds", type=float, default=30.0,
                         help="quit after this long even if tasks still run (default 30)")
    options.add_argument("--screenshot", metavar="PATH",
                         help="save a PNG of the window just before quitting")
    args = options.parse_args(argv)

    app = QtWidgets.QApplication(sys.argv[:1])
    app.setStyle("Fusion")
    with emulator(args.url) as emu:
        ids = [
            emu.create_task(
                "cloudcoin",
                coin_script([5 + 7 * i, 35 + 5 * i, 75], seconds=0.2 + 0.1 * (i % 3),
                            fails=(i % 4 == 2)),
            )
            for i in range(args.tasks)
        ]
        backend = CloudCoinBackend(emu.api_url("cloudcoin"), policy=PollPolicy(interval=0.1))
        streams = [backend.observe(task_id) for task_id in ids]
        window = TaskWindow([(backend.name, task_id) for task_id in ids])
        window.show()

        scheduler = qt_scheduler(QtCore)  # created here, on the GUI thread
        outcome: list[int] = []
        subscriptions = CompositeDisposable()
        running = [2]  # the two subscriptions below that have yet to complete

        def finish(code: int) -> None:
            if outcome:
                return
            outcome.append(code)
            subscriptions.dispose()  # stops watching whatever is still running
            if args.screenshot:
                window.grab().save(args.screenshot)
                print(f"screenshot saved to {args.screenshot}")
            app.quit()

        def completed() -> None:
            running[0] -= 1
            if not running[0]:
                finish(0)

        def failed(error: Exception) -> None:
            print(f"monitoring failed: {error!r}")
            finish(2)

        subscriptions.add(
            merge_tasks(*streams)
            .pipe(ops.observe_on(scheduler))
            .subscribe(on_next=window.show_event, on_error=failed, on_completed=completed)
        )
        subscriptions.add(
            overall_progress(streams)
            .pipe(ops.observe_on(scheduler))
            .subscribe(on_next=window.show_overall, on_error=failed, on_completed=completed)
        )
        QtCore.QTimer.singleShot(round(args.max_seconds * 1000), lambda: finish(1))
        app.exec()
        backend.close()

    for task_id in ids:
        event = window.events.get(task_id)
        print(f"task {task_id}: " + ("no event" if event is None else event.state.value))
    terminal = sum(1 for event in window.events.values() if event.terminal)
    print(f"{terminal} of {len(ids)} tasks terminal; "
          f"{window.off_gui_thread} updates ran off the GUI thread")
    print(f"overall bar: {window.outcome.value}")
    if outcome[0] == 1:
        print(f"stopped after {args.max_seconds} s")
    return outcome[0] if window.off_gui_thread == 0 else 3


if __name__ == "__main__":
    sys.exit(main())
