"""Taskcluster: thousands of tasks observed at once, batched, unbatched, and thread-per-task.

The emulator runs in its own process (one uvicorn worker); only this process's CPU time
(``time.process_time``, all threads) is counted. Every task runs for ``rounds - 1`` status reads
and completes at the next, so each contender makes ``rounds`` task-polls per task:

- ``engine, batching``: ``TaskclusterBackend.observe`` on every task; polls go through
  ``POST /api/queue/v1/tasks/status``, 1,000 ids per request;
- ``engine, batching off``: the same with ``batch=False`` (one GET per task and poll);
- ``thread per task``: the usual script around the official ``taskcluster`` client, a thread per
  task looping ``queue.status(taskId)`` and ``time.sleep(interval)`` until resolved. With 2 cores
  thousands of threads would measure the scheduler more than the client, so this peer runs on
  ``--thread-tasks`` tasks (default 500); its figures are per task-poll, like the others';
- ``official statuses``: the official client's own batch call, ``queue.statuses`` on 1,000 ids
  at a time in one thread, every ``interval`` until every task is resolved: the floor the
  engine's batched CPU per task-poll is compared with (same tasks, same answers).

Requests per poll round = requests the emulator counted / rounds. Task-polls are counted by the
emulator too (a batch request counts once for each id it carries).

With ``--gc-freeze`` the benchmark calls ``gc.freeze()`` once after its warm-up (imports, first
connections), so that full collections no longer scan the modules' own objects; every contender
runs under it alike, and the output says so. The library never changes GC settings itself.

Run: ``python benchmarks/bench_taskcluster.py [--tasks 5000] [--rounds 3] [--thread-tasks 500]
[--gc-freeze]``
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import taskcluster
from _emulator import start_emulator

from reactive_tasks import PollPolicy
from reactive_tasks.backends import TaskclusterBackend
from reactive_tasks.emulator import EmulatorClient

CAP = 32
RESOLVED = frozenset({"completed", "failed", "exception"})


def script(rounds: int) -> list[dict[str, Any]]:
    """Running for ``rounds - 1`` reads, then completed: ``rounds`` reads per task in all."""
    return [
        {"runs": [{"state": "running"}], "polls": rounds - 1},
        {"runs": [{"state": "completed"}]},
    ]


def engine(batch: bool, interval: float) -> Callable[[str, list[str]], None]:
    """Observe every task with the engine until all complete."""

    async def run(root: str, ids: list[str]) -> None:
        policy = PollPolicy(interval=interval, max_interval=10 * interval, jitter=0.0,
                            request_timeout=60.0)
        async with TaskclusterBackend(
            root, policy=policy, batch=batch, max_concurrency=CAP
        ) as backend:
            done = asyncio.Event()
            left = len(ids)
            failures: list[BaseException] = []

            def finished() -> None:
                nonlocal left
                left -= 1
                if left == 0:
                    done.set()

            def failed(exc: BaseException) -> None:
                failures.append(exc)
                finished()

            for task_id in ids:
                backend.observe(task_id).subscribe(
                    on_next=lambda e: None, on_error=failed, on_completed=finished
                )
            await done.wait()
            if failures:
                raise failures[0]

    return lambda root, ids: asyncio.run(run(root, ids))


def thread_per_task(interval: float) -> Callable[[str, list[str]], None]:
    """A thread per task around the official client, polling until the task is resolved."""

    def run(root: str, ids: list[str]) -> None:
        errors: list[BaseException] = []

        def one(task_id: str) -> None:
            queue = taskcluster.Queue({"rootUrl": root, "maxRetries": 5})
            try:
                while queue.status(task_id)["status"]["state"] not in RESOLVED:
                    time.sleep(interval)
            except BaseException as exc:  # reported after the run
                errors.append(exc)

        threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in ids]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]

    return run


def official_statuses(interval: float) -> Callable[[str, list[str]], None]:
    """The official client's ``Queue.statuses``, 1,000 ids per call, until all are resolved."""

    def run(root: str, ids: list[str]) -> None:
        queue = taskcluster.Queue({"rootUrl": root, "maxRetries": 5})
        left = list(ids)
        while left:
            states: dict[str, str] = {}
            for start in range(0, len(left), 1000):
                answer = queue.statuses({"taskIds": left[start : start + 1000]})
                for entry in answer["statuses"]:
                    states[entry["taskId"]] = entry["status"]["state"]
            left = [i for i in left if states.get(i) not in RESOLVED]
            if left:
                time.sleep(interval)

    return run


def measure(
    control: EmulatorClient, fn: Callable[[str, list[str]], None], tasks: int, rounds: int
) -> dict[str, float]:
    """Client CPU, wall time, requests and task-polls of one contender on fresh tasks."""
    control.reset()
    ids = control.create_tasks("taskcluster", tasks, script(rounds))
    root = control.api_url("taskcluster")
    gc.collect()
    control.reset_requests()
    wall, cpu = time.perf_counter(), time.process_time()
    fn(root, ids)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    counts = control.requests()
    polls = sum(counts["by_task"].values())
    return {
        "tasks": tasks,
        "polls": polls,
        "requests": counts["total"],
        "per_round": counts["total"] / rounds,
        "us_per_poll": cpu / polls * 1e6,
        "cpu": cpu,
        "wall": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--thread-tasks", type=int, default=500)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--gc-freeze", action="store_true",
                        help="gc.freeze() after the warm-up (default: the default GC)")
    args = parser.parse_args()
    if args.rounds < 2:
        raise SystemExit("--rounds must be at least 2")
    proc, url = start_emulator()
    try:
        with EmulatorClient(url, timeout=120) as control:
            measure(control, engine(True, 0.05), 200, 2)  # warm-up: imports, first connections
            if args.gc_freeze:
                gc.collect()
                gc.freeze()
            results = {
                "engine, batching": measure(
                    control, engine(True, args.interval), args.tasks, args.rounds
                ),
                "engine, batching off": measure(
                    control, engine(False, args.interval), args.tasks, args.rounds
                ),
                "official statuses": measure(
                    control, official_statuses(args.interval), args.tasks, args.rounds
                ),
                "thread per task (official)": measure(
                    control, thread_per_task(args.interval), args.thread_tasks, args.rounds
                ),
            }
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    threads = results["thread per task (official)"]["us_per_poll"]
    batched = results["engine, batching"]
    print(f"Taskcluster, {args.rounds} poll rounds per task, interval {args.interval} s, "
          f"engine concurrency {CAP}, "
          f"{'gc.freeze() after the warm-up' if args.gc_freeze else 'default GC'}, one run:")
    print(f"  {'contender':28} {'tasks':>6} {'task-polls':>10} {'requests':>9} "
          f"{'req/round':>10} {'us CPU/poll':>12} {'vs threads':>10} {'wall s':>7}")
    for name, r in results.items():
        print(f"  {name:28} {r['tasks']:>6.0f} {r['polls']:>10.0f} {r['requests']:>9.0f} "
              f"{r['per_round']:>10.1f} {r['us_per_poll']:>12.1f} "
              f"{threads / r['us_per_poll']:>9.1f}x {r['wall']:>7.1f}")
    bound = math.ceil(args.tasks / 1000) + 1
    print(f"  batching: {batched['per_round']:.1f} requests per round for {args.tasks} tasks "
          f"(target <= {bound}); client CPU per task-poll "
          f"{threads / batched['us_per_poll']:.1f}x lower than thread-per-task (target >= 10x), "
          f"{results['engine, batching off']['us_per_poll'] / batched['us_per_poll']:.1f}x "
          f"lower than the engine with batching off")
    floor = results["official statuses"]["us_per_poll"]
    print(f"  batched CPU per task-poll: engine {batched['us_per_poll']:.1f} us, official "
          f"statuses {floor:.1f} us: {batched['us_per_poll'] / floor:.2f}x (target <= 1.3x)")


if __name__ == "__main__":
    main()
