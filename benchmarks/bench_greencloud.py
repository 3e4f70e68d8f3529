"""GreenCloud: one task-list request per round against one record GET per task, side by side.

The emulator runs in its own process; this process is the client, and only its CPU time
(``time.process_time``) is counted. Both contenders are the same engine watching the same number
of running GreenCloud tasks (already assigned, so the list alone answers them after the first
round):

- ``list per round``: ``GreenCloudBackend`` as shipped (``fetch_many`` reads ``/v1/task/list``);
- ``GET per task``: a subclass whose ``fetch_many`` is the base default, fanning out one
  ``GET /v1/task/<id>`` per task (the record) under the same concurrency cap.

The first round (the list backend also reads each record once there) is left out of the figures.

Run: ``python benchmarks/bench_greencloud.py [--tasks 2000] [--rounds 5]``
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from _emulator import start_emulator

from reactive_tasks import PollPolicy
from reactive_tasks.backends import Backend, GreenCloudBackend, GreenCloudTask, TaskRef
from reactive_tasks.backends.greencloud import GreenCloudListEntry, GreenCloudRecord
from reactive_tasks.emulator import EmulatorClient

CAP = 32
INTERVAL = 0.25
LIST = "greencloud GET /v1/task/list"
RECORD = "greencloud GET /v1/task/{id}"


class PerTaskBackend(GreenCloudBackend):
    """The peer: the base's fan-out ``fetch_many``, one record GET per task and round."""

    async def fetch_many(
        self, refs: Sequence[TaskRef]
    ) -> AsyncIterator[tuple[TaskRef, GreenCloudTask | BaseException]]:
        async for answer in Backend.fetch_many(self, refs):
            yield answer

    async def fetch(self, ref: TaskRef) -> GreenCloudTask:
        path = f"/v1/task/{ref.task_id}"
        response = await self.session().request("GET", path, task_id=ref.task_id)
        record = self.parse(GreenCloudRecord, response.content, ref.task_id)
        entry = GreenCloudListEntry(
            id=ref.task_id, issued=record.issued, progress=record.progress, status=0
        )
        return GreenCloudTask(id=ref.task_id, status=0, progress=entry.progress,
                              issued=entry.issued, record=record)


class _Tally:
    """Answers handed to the engine; CPU marks when the first and the last round completed."""

    def __init__(self, tasks: int, rounds: int) -> None:
        self.tasks = tasks
        self.target = tasks * (rounds + 1)
        self.answers = 0
        self.first_round_cpu: float | None = None
        self.done = asyncio.Event()


def counting(cls: type[GreenCloudBackend], tally: _Tally) -> type[GreenCloudBackend]:
    """``cls`` counting answered polls: a round is one answer per task, however batched."""

    class Counting(cls):  # type: ignore[valid-type,misc]
        async def fetch_many(self, refs: Sequence[TaskRef]) -> AsyncIterator[Any]:
            async for answer in super().fetch_many(refs):
                tally.answers += 1
                if tally.first_round_cpu is None and tally.answers >= tally.tasks:
                    tally.first_round_cpu = time.process_time()
                if tally.answers >= tally.target:
                    tally.done.set()
                yield answer

    return Counting


async def run(
    cls: type[GreenCloudBackend], url: str, ids: list[str], rounds: int
) -> tuple[float, float, float, int]:
    """Watch ``ids`` for ``rounds + 1`` rounds of answers: CPU at start, first round, end."""
    tally = _Tally(len(ids), rounds)
    policy = PollPolicy(interval=INTERVAL, max_interval=5.0, jitter=0.0, request_timeout=60)
    backend = counting(cls, tally)(url, api_key="bench-key", policy=policy, max_concurrency=CAP)
    start = time.process_time()
    async with backend:
        subs = [backend.observe(i).subscribe(lambda e: None) for i in ids]
        await tally.done.wait()
        end = time.process_time()
        for sub in subs:
            sub.dispose()
    assert tally.first_round_cpu is not None
    return start, tally.first_round_cpu, end, tally.answers


def measure(
    control: EmulatorClient, cls: type[GreenCloudBackend], tasks: int, rounds: int
) -> tuple[float, float, float]:
    """Requests per round, client CPU ms per round, and first-round CPU ms."""
    ids = control.create_tasks("greencloud", tasks, [{"state": "assigned", "progress": 10}])
    url = control.api_url("greencloud")
    gc.collect()
    control.reset_requests()
    start, first, end, answers = asyncio.run(run(cls, url, ids, rounds))
    counts = control.requests()["by_route"]
    measured = answers / tasks - 1  # rounds after the first
    first_requests = tasks if cls is PerTaskBackend else 1 + tasks
    requests = counts.get(LIST, 0) + counts.get(RECORD, 0) - first_requests
    return requests / measured, (end - first) / measured * 1e3, (first - start) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    proc, url = start_emulator()
    try:
        with EmulatorClient(url) as control:
            measure(control, GreenCloudBackend, 100, 1)  # warm-up: imports, first connections
            control.reset()
            results = {}
            for name, cls in (("list per round", GreenCloudBackend),
                              ("GET per task", PerTaskBackend)):
                results[name] = measure(control, cls, args.tasks, args.rounds)
                control.reset()
            print(f"{args.tasks} running GreenCloud tasks, {args.rounds} measured rounds "
                  f"(after the first), concurrency {CAP}, one run:")
            print(f"  {'contender':16} {'requests/round':>15} {'CPU ms/round':>13} "
                  f"{'first round CPU ms':>19}")
            for name, (requests, cpu, first) in results.items():
                print(f"  {name:16} {requests:>15.1f} {cpu:>13.1f} {first:>19.1f}")
            listed, fanned = results["list per round"], results["GET per task"]
            print(f"  ratio (GET per task / list per round): "
                  f"{fanned[0] / max(listed[0], 1e-9):.0f}x requests, "
                  f"{fanned[1] / max(listed[1], 1e-9):.1f}x client CPU per round")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
