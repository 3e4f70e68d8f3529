"""Subscribe to a task with on_next / on_error / on_completed callbacks, from a plain script.

Like iExec's ``obsTask(taskid).subscribe({next, error, complete})``: every change of the task
arrives in ``on_next``; ``on_completed`` follows the terminal event; ``on_error`` only when
monitoring cannot go on (a failed *task* is a TASK_FAILED event, not an error).

Outside asyncio, polling runs on the library's background loop thread, so the callbacks run on
that thread too; the script waits for them with a ``threading.Event`` (or ``wait_sync``).

    pip install "reactive-tasks[emulator]"
    python examples/callbacks.py                        # starts an emulator in-process
    python examples/callbacks.py --url http://127.0.0.1:8765   # or `reactive-tasks emulate`
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from _scripted import coin_script, emulator, parser

from reactive_tasks import PollPolicy, TaskEvent, wait_sync
from reactive_tasks.backends import CloudCoinBackend


def describe(event: TaskEvent[Any]) -> str:
    """One line for an event: what happened, the state, the progress and the API's message."""
    progress = "" if event.progress is None else f" {event.progress:3.0f}%"
    return f"{event.kind:<15} {event.state:<9}{progress}  {event.message or ''}"


def main(argv: list[str] | None = None) -> int:
    args = parser("Watch CloudCoin tasks with callbacks.").parse_args(argv)
    with emulator(args.url) as emu:
        # Tasks that a real Coin Manager would create (an echo, a backup ...): scripted here.
        healthy = emu.create_task("cloudcoin", coin_script([10, 40, 80]))
        broken = emu.create_task("cloudcoin", coin_script([20, 50], fails=True))

        backend = CloudCoinBackend(emu.api_url("cloudcoin"), policy=PollPolicy(interval=0.1))
        try:
            # 1. Callbacks, the obsTask way.
            done = threading.Event()
            errors: list[Exception] = []

            def on_error(error: Exception) -> None:
                print(f"monitoring failed: {error!r}")
                errors.append(error)
                done.set()

            def on_completed() -> None:
                print("final state reached")
                done.set()

            subscription = backend.observe(healthy).subscribe(
                on_next=lambda event: print(describe(event)),
                on_error=on_error,
                on_completed=on_completed,
            )
            finished = done.wait(timeout=30)
            subscription.dispose()  # stops watching (a no-op once completed)
            if not finished or errors:
                return 1

            # 2. Just the outcome: wait_sync blocks until the stream completes, returns the last
            #    event, and raises on a monitoring error or when the timeout elapses.
            final = wait_sync(backend.observe(broken), timeout=30)
            print(f"task {final.task_id} ended {final.state}: {final.message}")
        finally:
            backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
