"""A live Tkinter window: one row per task, with a progress bar and its state.

Task events arrive on the library's loop thread; widgets may only be touched on the Tk thread.
``observe_on`` with reactivex's ``TkinterScheduler`` moves every event there (it schedules with
``root.after``, which Tcl built with threads, as usual, accepts from any thread while the main
loop runs). The window closes by itself once every task is terminal (or after ``--max-seconds``).

    pip install "reactive-tasks[emulator,gui]"   # gui: Pillow, for --screenshot
    python examples/gui_tk.py                                # starts an emulator in-process
    python examples/gui_tk.py --url http://127.0.0.1:8765    # or `reactive-tasks emulate`
    python examples/gui_tk.py --screenshot window.png        # saves the window before quitting

``--screenshot`` grabs the window's area of the X screen with Pillow's ``ImageGrab`` (in the
``gui`` extra), or with ImageMagick's ``import`` when Pillow is missing.

Exit code: 0 when every task reached a terminal state, 1 after ``--max-seconds``, 2 on a
monitoring error.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import tkinter as tk
from tkinter import ttk
from typing import Any

from _scripted import coin_script, emulator, overall_state, parser
from reactivex import operators as ops
from reactivex.disposable import CompositeDisposable
from reactivex.scheduler.mainloop import TkinterScheduler

from reactive_tasks import PollPolicy, TaskEvent, TaskState
from reactive_tasks.backends import CloudCoinBackend
from reactive_tasks.compose import merge_tasks, overall_progress

#: Progress-bar colours by state.
COLOURS = {
    TaskState.PENDING: "#1e88e5",
    TaskState.RUNNING: "#1e88e5",
    TaskState.PAUSED: "#1e88e5",
    TaskState.COMPLETED: "#2e7d32",
    TaskState.FAILED: "#c62828",
    TaskState.CANCELLED: "#8d6e63",
    TaskState.TIMED_OUT: "#ef6c00",
}


def _bar_style(style: ttk.Style, state: TaskState) -> str:
    name = f"{state.value}.Horizontal.TProgressbar"
    style.configure(name, background=COLOURS[state], troughcolor="#f5f5f5")
    return name


class TaskWindow:
    """One row per task (id, progress bar, percent, state), and an overall bar below."""

    def __init__(self, root: tk.Tk, tasks: list[tuple[str, str]]) -> None:
        self.root = root
        root.title("reactive-tasks")
        self.style = ttk.Style(root)
        self.style.theme_use("clam")
        self.events: dict[str, TaskEvent[Any]] = {}
        self.off_gui_thread = 0
        self.outcome = TaskState.RUNNING  # what the overall bar's colour says
        self._total = len(tasks)
        self._bars: dict[str, ttk.Progressbar] = {}
        self._percents: dict[str, ttk.Label] = {}
        self._states: dict[str, ttk.Label] = {}

        frame = ttk.Frame(root, padding=10)
        frame.grid(sticky="nsew")
        frame.columnconfigure(1, weight=1)
        bold = ("TkDefaultFont", 10, "bold")
        for column, title in enumerate(("Task", "Progress", "", "State")):
            ttk.Label(frame, text=title, font=bold).grid(row=0, column=column, sticky="w", padx=4)
        running = _bar_style(self.style, TaskState.RUNNING)
        for row, (backend, task_id) in enumerate(tasks, start=1):
            ttk.Label(frame, text=f"{backend} {task_id[:8]}").grid(row=row, column=0, sticky="w",
                                                                  padx=4, pady=2)
            bar = self._bars[task_id] = ttk.Progressbar(frame, length=260, maximum=100,
                                                        style=running)
            bar.grid(row=row, column=1, sticky="ew", padx=4)
            percent = self._percents[task_id] = ttk.Label(frame, text="", width=5, anchor="e")
            percent.grid(row=row, column=2, padx=4)
            state = self._states[task_id] = ttk.Label(frame, text="waiting for the first poll",
                                                      width=34)
            state.grid(row=row, column=3, sticky="w", padx=4)
        last = len(tasks) + 1
        ttk.Label(frame, text="Overall", font=bold).grid(row=last, column=0, sticky="w", padx=4,
                                                         pady=(8, 0))
        self.overall = ttk.Progressbar(frame, maximum=100, style=running)
        self.overall.grid(row=last, column=1, sticky="ew", padx=4, pady=(8, 0))
        self.overall_percent = ttk.Label(frame, text="0%", width=5, anchor="e")
        self.overall_percent.grid(row=last, column=2, padx=4, pady=(8, 0))

    def _check_thread(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            self.off_gui_thread += 1  # would be a bug: observe_on is there to prevent it

    def show_event(self, event: TaskEvent[Any]) -> None:
        """Show one task's latest event in its row (runs on the Tk thread)."""
        self._check_thread()
        self.events[event.task_id] = event
        bar = self._bars[event.task_id]
        if event.progress is not None:
            bar["value"] = event.progress
            self._percents[event.task_id]["text"] = f"{event.progress:.0f}%"
        bar["style"] = _bar_style(self.style, event.state)
        text = event.state.value + (f" · {event.message}" if event.message else "")
        self._states[event.task_id]["text"] = text
        outcome = overall_state((e.state for e in self.events.values()), self._total)
        if outcome is not self.outcome:
            self.outcome = outcome
            self.overall["style"] = _bar_style(self.style, outcome)

    def show_overall(self, percent: float) -> None:
        """Show the overall progress across every task (runs on the Tk thread)."""
        self._check_thread()
        self.overall["value"] = percent
        self.overall_percent["text"] = f"{percent:.0f}%"

    def save_screenshot(self, path: str) -> None:
        """Save the window as a PNG: Pillow's ImageGrab, else ImageMagick's ``import``."""
        self.root.update()  # draw everything first
        x, y = self.root.winfo_rootx(), self.root.winfo_rooty()
        width, height = self.root.winfo_width(), self.root.winfo_height()
        try:
            from PIL import ImageGrab
        except ImportError:
            if shutil.which("import") is None:
                raise RuntimeError(
                    "--screenshot needs Pillow (pip install pillow) or ImageMagick's `import`"
                ) from None
            window = str(self.root.winfo_id())
            subprocess.run(["import", "-window", window, path], check=True)
        else:
            ImageGrab.grab(bbox=(x, y, x + width, y + height)).save(path)


def main(argv: list[str] | None = None) -> int:
    options = parser("Watch CloudCoin tasks in a Tk window.")
    options.add_argument("--tasks", type=int, default=6, help="how many tasks (default 6)")
    options.add_argument("--max-seconds", type=float, default=30.0,
                         help="quit after this long even if tasks still run (default 30)")
    options.add_argument("--screenshot", metavar="PATH",
                         help="save a PNG of the window just before quitting")
    args = options.parse_args(argv)

    root = tk.Tk()
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
        window = TaskWindow(root, [(backend.name, task_id) for task_id in ids])

        scheduler = TkinterScheduler(root)
        outcome: list[int] = []
        subscriptions = CompositeDisposable()
        running = [2]  # the two subscriptions below that have yet to complete

        def finish(code: int) -> None:
            if outcome:
                return
            outcome.append(code)
            subscriptions.dispose()  # stops watching whatever is still running
            if args.screenshot:
                window.save_screenshot(args.screenshot)
                print(f"screenshot saved to {args.screenshot}")
            # Keep the main loop running a moment: a call into Tk that the loop thread started
            # just before the disposal must still be served, or it would wait forever.
            root.after(50, root.quit)

        def completed() -> None:
            running[0] -= 1
            if not running[0]:
                finish(0)

        def failed(error: Exception) -> None:
            print(f"monitoring failed: {error!r}")
            finish(2)

        def start() -> None:
            # Subscribed once the main loop runs: Tk serves other threads' calls only then.
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

        root.after(0, start)
        root.after(round(args.max_seconds * 1000), lambda: finish(1))
        root.mainloop()
        backend.close()
        root.destroy()

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
