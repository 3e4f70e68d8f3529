"""Many tasks, possibly on several backends: overall progress, all done, and fail-fast.

The ``reactive_tasks.compose`` operators combine task streams of any backends. They add no
polling: several operators over the same tasks share each task's one poll loop.

    pip install "reactive-tasks[emulator]"
    python examples/compose_many.py                        # starts an emulator in-process
    python examples/compose_many.py --url http://127.0.0.1:8765   # or `reactive-tasks emulate`
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from _scripted import coin_script, emulator, parser
from reactivex import Observable

from reactive_tasks import PollPolicy, TaskEvent, aiter, wait
from reactive_tasks.backends import (
    AparaviBackend,
    Backend,
    CloudCoinBackend,
    GreenCloudBackend,
    IExecBackend,
    TaskclusterBackend,
)
from reactive_tasks.compose import TaskFailed, all_terminal, fail_fast, overall_progress
from reactive_tasks.emulator import EmulatorClient
from reactive_tasks.emulator.aparavi import API_KEYS
from reactive_tasks.emulator.iexec import HUB_ADDRESS as IEXEC_HUB
from reactive_tasks.emulator.iexec import create_deal

APARAVI_KEY = API_KEYS[0]  # the key the emulator accepts

POLICY = PollPolicy(interval=0.1)

Streams = list[Observable[TaskEvent[Any]]]
#: Scripts one task per outcome (True: it completes, False: it fails) on the emulator; returns
#: the backend watching them and their streams.
TaskFactory = Callable[[EmulatorClient, Sequence[bool]], tuple[Backend[Any], Streams]]


def cloudcoin_tasks(emu: EmulatorClient, outcomes: Sequence[bool]) -> tuple[Backend[Any], Streams]:
    """CloudCoin Coin Manager tasks: each detects coins for a second or so."""
    backend = CloudCoinBackend(emu.api_url("cloudcoin"), policy=POLICY)
    ids = [
        emu.create_task(
            "cloudcoin",
            coin_script([10 + 5 * (i % 5), 50, 90], seconds=0.15 + 0.05 * (i % 4), fails=not ok),
        )
        for i, ok in enumerate(outcomes)
    ]
    return backend, [backend.observe(task_id) for task_id in ids]


#: The backends this example spreads its tasks over: add one here and it takes part.
def taskcluster_tasks(
    emu: EmulatorClient, outcomes: Sequence[bool]
) -> tuple[Backend[Any], Streams]:
    """Taskcluster queue tasks: pending, running, then their last run resolves."""
    backend = TaskclusterBackend(emu.api_url("taskcluster"), policy=POLICY)
    ids = [
        emu.create_task("taskcluster", [
            {"runs": [{"state": "pending"}], "seconds": 0.2},
            {"runs": [{"state": "running"}], "seconds": 0.2 + 0.05 * (i % 4)},
            {"runs": [{"state": "completed" if ok else "failed"}]},
        ])
        for i, ok in enumerate(outcomes)
    ]
    return backend, [backend.observe(task_id) for task_id in ids]


def aparavi_tasks(emu: EmulatorClient, outcomes: Sequence[bool]) -> tuple[Backend[Any], Streams]:
    """Aparavi DTC pipelines: progress is objects done out of objects found."""
    backend = AparaviBackend(emu.api_url("aparavi"), api_key=APARAVI_KEY, policy=POLICY)
    tokens = []
    for ok in outcomes:
        steps: list[dict[str, Any]] = [
            {"status": "Running", "totalCount": 10, "completedCount": n, "seconds": 0.15}
            for n in (2, 5, 8)
        ]
        steps.append({"status": "Completed", "completed": True, "totalCount": 10,
                      "completedCount": 10 if ok else 9,
                      "errors": [] if ok else ["parse_1: cannot read 1 object"]})
        tokens.append(emu.create_task("aparavi", steps, type="cpu"))
    return backend, [backend.observe(token, task_type="cpu") for token in tokens]


def greencloud_tasks(
    emu: EmulatorClient, outcomes: Sequence[bool]
) -> tuple[Backend[Any], Streams]:
    """GreenCloud function calls: the function's HTTP status decides success."""
    backend = GreenCloudBackend(emu.api_url("greencloud"), api_key="example-key", policy=POLICY)
    ids = [
        emu.create_task("greencloud", [
            {"state": "issued", "progress": 0, "seconds": 0.15},
            {"state": "assigned", "progress": 40, "seconds": 0.2},
            {"state": "finished", "progress": 100, "status": 200 if ok else 500},
        ])
        for ok in outcomes
    ]
    return backend, [backend.observe(task_id) for task_id in ids]


def iexec_tasks(emu: EmulatorClient, outcomes: Sequence[bool]) -> tuple[Backend[Any], Streams]:
    """One iExec deal with a task per outcome, read from the PoCo hub over JSON-RPC."""
    backend = IExecBackend(emu.api_url("iexec") + "/rpc", IEXEC_HUB, policy=POLICY)
    if not outcomes:
        return backend, []
    deal_id, task_ids = create_deal(emu, [
        [{"status": "ACTIVE", "seconds": 0.2}, {"status": "REVEALING", "seconds": 0.2},
         {"status": "COMPLETED" if ok else "FAILED"}]
        for ok in outcomes
    ])
    return backend, [backend.observe(task_id, deal_id=deal_id) for task_id in task_ids]


BACKENDS: dict[str, TaskFactory] = {
    "cloudcoin": cloudcoin_tasks,
    "taskcluster": taskcluster_tasks,
    "aparavi": aparavi_tasks,
    "greencloud": greencloud_tasks,
    "iexec": iexec_tasks,
}


def script(emu: EmulatorClient, outcomes: Sequence[bool]) -> tuple[list[Backend[Any]], Streams]:
    """Spread tasks with these outcomes over every backend in ``BACKENDS``, round robin."""
    backends: list[Backend[Any]] = []
    streams: Streams = []
    for offset, factory in enumerate(BACKENDS.values()):
        backend, own = factory(emu, outcomes[offset :: len(BACKENDS)])
        backends.append(backend)
        streams.extend(own)
    return backends, streams


async def follow_all(streams: Streams) -> None:
    """Print overall progress as it moves, then a summary once every task is terminal."""

    async def progress() -> None:
        shown = -1
        async for percent in aiter(overall_progress(streams)):
            if int(percent // 10) > shown:  # one line per tenth, to keep the output short
                shown = int(percent // 10)
                print(f"overall {percent:5.1f}% |{'#' * round(percent / 5):<20}|")

    _, summary = await asyncio.gather(progress(), wait(all_terminal(streams), timeout=60))
    counts = ", ".join(f"{count} {state}" for state, count in sorted(summary.counts.items()))
    print(f"all {summary.total} tasks terminal: {counts}")


async def stop_at_first_failure(streams: Streams) -> None:
    """Watch tasks until the first one fails; that ends the stream and stops watching the rest."""
    try:
        await wait(fail_fast(streams), timeout=60)
    except TaskFailed as failed:  # failed.event is the task's last event, in full
        print(f"fail_fast: {failed}; stopped watching the other {len(streams) - 1}")
    else:
        print("fail_fast: every task completed")


async def closing(backends: list[Backend[Any]], work: Awaitable[None]) -> None:
    """Run ``work``, then close the backends (their HTTP connections belong to this loop)."""
    try:
        await work
    finally:
        for backend in backends:
            await backend.aclose()


def main(argv: list[str] | None = None) -> int:
    args = parser("Watch many tasks together with reactive_tasks.compose.").parse_args(argv)
    with emulator(args.url) as emu:
        # Ten tasks, two of which fail: follow them all to the end.
        backends, streams = script(emu, [i not in (3, 7) for i in range(10)])
        asyncio.run(closing(backends, follow_all(streams)))
        # Six more, the third of which fails: stop at that failure.
        backends, streams = script(emu, [i != 2 for i in range(6)])
        asyncio.run(closing(backends, stop_at_first_failure(streams)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
