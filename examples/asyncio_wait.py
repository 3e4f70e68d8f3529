"""Watch tasks from asyncio: ``await wait(...)`` for the outcome, ``async for`` for every change.

Subscribed inside a running loop, polling runs on that very loop: no thread is started.

    pip install "reactive-tasks[emulator]"
    python examples/asyncio_wait.py                        # starts an emulator in-process
    python examples/asyncio_wait.py --url http://127.0.0.1:8765   # or `reactive-tasks emulate`
"""

from __future__ import annotations

import asyncio
import sys

from _scripted import coin_script, emulator, parser

from reactive_tasks import PollPolicy, aiter, wait
from reactive_tasks.backends import CloudCoinBackend


async def watch(base_url: str, first: str, second: str) -> None:
    """Wait for one task's outcome while iterating over every event of another, concurrently."""
    async with CloudCoinBackend(base_url, policy=PollPolicy(interval=0.1)) as backend:

        async def outcome() -> None:
            # The last event (usually the terminal one); raises on a monitoring error or timeout.
            final = await wait(backend.observe(first), timeout=30)
            print(f"wait: task {final.task_id} ended {final.state} ({final.message})")

        async def every_event() -> None:
            # Every event as it happens; leaving the loop early would stop watching.
            async for event in aiter(backend.observe(second)):
                print(f"aiter: {event.kind} {event.state} {event.progress:.0f}% {event.message}")
            print("aiter: stream completed")

        await asyncio.gather(outcome(), every_event())

        # A one-off read, without watching.
        now = await backend.status(first)
        print(f"status: task {now.task_id} is {now.state}")


def main(argv: list[str] | None = None) -> int:
    args = parser("Watch CloudCoin tasks from asyncio.").parse_args(argv)
    with emulator(args.url) as emu:
        first = emu.create_task("cloudcoin", coin_script([30, 70], seconds=0.4))
        second = emu.create_task("cloudcoin", coin_script([25, 50, 75], seconds=0.2))
        asyncio.run(watch(emu.api_url("cloudcoin"), first, second))
    return 0


if __name__ == "__main__":
    sys.exit(main())
