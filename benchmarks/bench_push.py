"""Push (Pulse) beside polls vs polls alone: how soon a change arrives, and what watching costs.

A private RabbitMQ (the tests' launcher) and the emulator in its own process, publishing every
Taskcluster change to it with the instant the change happened (its change log). Two contenders
watch the same kind of tasks through one ``TaskclusterBackend`` each:

- ``push``: ``pulse_url=`` set, ``PollPolicy(interval=2, reconcile_interval=60)``;
- ``polls``: no feed, ``PollPolicy(interval=2)``.

Latency: ``--tasks`` tasks (default 2,000), each changing state three times (running, a retry's
pending after a worker shutdown, completed) at instants spread over ``--spread`` seconds once it
is watched (per bucket of ten tasks, a random gap between its changes and a random offset of the
first, so that the changes do not all come at the same instant; with ``--burst``, every task's
first change comes at the same instant instead, a burst of ``--tasks`` changes at once). A
change's latency is the moment its event reached the subscriber minus the moment the emulator
stamped the change; the emulator's own publish lag, from a change to its write to the broker,
is printed too.

Cost: ``--tasks`` other tasks that stay running, watched for ``--idle`` seconds once the feed is
live; the queue's requests in that window, scaled to an hour.

Tasks stay pending for ``--warmup`` seconds first, so that the push contender's feed has bound
every task (six bindings each) before the first change; the time that took is printed too.

Run: ``python benchmarks/bench_push.py [--tasks 2000] [--spread 20] [--idle 125] [--warmup 45]
[--burst]``
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from _emulator import start_emulator

from reactive_tasks import PollPolicy, TaskEvent
from reactive_tasks.backends import TaskclusterBackend
from reactive_tasks.emulator import EmulatorClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from rabbitmq_server import RabbitMQServer  # the tests' RabbitMQ launcher

INTERVAL = 2.0
RECONCILE = 60.0
BUCKETS = 200  # tasks share a script per bucket of change instants


def changing_script(warmup: float, gap: float) -> list[dict[str, Any]]:
    """Pending for ``warmup`` seconds (the watch starts, the feed binds every task), then three
    changes ``gap`` seconds apart."""
    shutdown = {"state": "exception", "reasonResolved": "worker-shutdown"}
    return [
        {"runs": [{"state": "pending"}], "seconds": warmup},
        {"runs": [{"state": "running"}], "seconds": gap},
        {"runs": [shutdown, {"state": "pending"}], "seconds": gap},
        {"runs": [shutdown, {"state": "completed"}]},
    ]


IDLE_SCRIPT = [{"runs": [{"state": "running"}]}]


def make_backend(root: str, amqp: str | None) -> TaskclusterBackend:
    policy = PollPolicy(
        interval=INTERVAL, reconcile_interval=RECONCILE, request_timeout=60.0,
        max_interval=30.0,
    )
    if amqp is None:
        return TaskclusterBackend(root, policy=policy)
    return TaskclusterBackend(root, policy=policy, pulse_url=amqp, pulse_namespace="bench")


async def latency_run(
    client: EmulatorClient, rabbit: RabbitMQServer | None, root: str, amqp: str | None,
    tasks: int, spread: float, warmup: float, burst: bool = False,
) -> dict[str, Any]:
    """Watch ``tasks`` changing tasks until all complete; latencies of their changes (ms)."""
    ids: list[str] = []
    per = max(1, tasks // BUCKETS)
    while len(ids) < tasks:
        # A bucket's three changes fall at a random offset and gap inside the spread, so
        # changes arrive spread out rather than every task's first one at the same instant.
        gap = random.uniform(0.5, spread / 3)
        offset = 0.0 if burst else random.uniform(0.0, spread - 2 * gap)
        ids.extend(client.create_tasks("taskcluster", min(per, tasks - len(ids)),
                                       changing_script(warmup + offset, gap)))
    created = time.monotonic()
    since = client.changes()[-1]["seq"] if client.changes() else 0
    client.reset_requests()
    received: list[tuple[str, int, str, float, str]] = []
    async with make_backend(root, amqp) as backend:
        done = asyncio.Event()
        left = len(ids)

        def on_next(event: TaskEvent[Any]) -> None:
            run = event.snapshot.runs[-1] if event.snapshot.runs else None
            if run is not None:
                received.append((event.task_id, run.runId, run.state, time.time(), event.via))

        def finished(*_: Any) -> None:
            nonlocal left
            left -= 1
            if left == 0:
                done.set()

        for task_id in ids:
            backend.observe(task_id).subscribe(
                on_next=on_next, on_error=finished, on_completed=finished
            )
        bound_after = None
        if rabbit is not None:  # how long binding every task took (listing costs ~1 s each)
            while len(await asyncio.to_thread(rabbit.bindings, "queue/bench/")) < 6 * tasks:
                await asyncio.sleep(1.0)
            bound_after = time.monotonic() - created
            if bound_after > warmup:
                print(f"warning: binding took {bound_after:.0f} s, more than --warmup")
        await done.wait()
    stamps = {
        (c["taskId"], c["runId"], c["state"]): c["at"]
        for c in client.changes(since)
        if c.get("taskId") and c["exchange"] != "task-defined"
    }
    latencies = []
    vias = {"push": 0, "poll": 0}
    for task_id, run_id, state, at, via in received:
        if state == "pending" and run_id == 0:
            continue  # the first event: the state when watching began, not a change
        stamp = stamps.get((task_id, run_id, state))
        if stamp is not None:
            latencies.append((at - stamp) * 1000)
            vias[via] += 1
    latencies.sort()
    return {
        "changes": len(latencies),
        "p50": statistics.median(latencies),
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "vias": vias,
        "requests": client.requests()["by_api"].get("taskcluster", 0),
        "bound_after": bound_after,
        "publish_lag": client.pulse().get("publish_lag_ms", {}),
    }


async def idle_run(
    client: EmulatorClient, rabbit: RabbitMQServer | None, root: str, amqp: str | None,
    tasks: int, idle: float,
) -> float:
    """Requests per hour while ``tasks`` running tasks are watched and nothing changes."""
    ids = client.create_tasks("taskcluster", tasks, IDLE_SCRIPT)
    async with make_backend(root, amqp) as backend:
        subs = [backend.observe(t).subscribe(on_next=lambda e: None) for t in ids]
        if rabbit is not None:  # wait until every task is bound: the feed is live
            while len(rabbit.bindings("queue/bench/")) < 6 * tasks:
                await asyncio.sleep(1.0)
        await asyncio.sleep(INTERVAL * 2)  # past the reconciliation that follows
        client.reset_requests()
        await asyncio.sleep(idle)
        count = client.requests()["by_api"].get("taskcluster", 0)
        for sub in subs:
            sub.dispose()
    return float(count) * 3600.0 / idle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--spread", type=float, default=20.0)
    parser.add_argument("--idle", type=float, default=125.0)
    parser.add_argument("--burst", action="store_true",
                        help="every task's first change at the same instant")
    parser.add_argument("--warmup", type=float, default=45.0,
                        help="seconds before the first change (the push run binds meanwhile)")
    args = parser.parse_args()
    with RabbitMQServer() as rabbit:
        proc, url = start_emulator("--pulse", rabbit.url)
        try:
            root = url + "/taskcluster"
            with EmulatorClient(url) as client:
                while not client.pulse()["connected"]:
                    time.sleep(0.1)
                push = asyncio.run(latency_run(
                    client, rabbit, root, rabbit.url, args.tasks, args.spread, args.warmup,
                    args.burst,
                ))
                polls = asyncio.run(latency_run(
                    client, None, root, None, args.tasks, args.spread, 2 * INTERVAL, args.burst
                ))
                idle_push = asyncio.run(
                    idle_run(client, rabbit, root, rabbit.url, args.tasks, args.idle)
                )
                idle_polls = asyncio.run(
                    idle_run(client, None, root, None, args.tasks, min(args.idle, 30.0))
                )
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    print(f"{args.tasks} tasks x 3 changes, interval={INTERVAL:g} s, "
          f"reconcile_interval={RECONCILE:g} s"
          + (", every first change at the same instant" if args.burst else ""))
    print(f"every task bound on the broker {push['bound_after']:.1f} s after the watches began")
    print(f"{'':34}{'push':>12}{'polls':>12}{'polls/push':>12}")
    rows = [
        ("changes measured", push["changes"], polls["changes"]),
        ("delivered by push / poll", f"{push['vias']['push']}/{push['vias']['poll']}",
         f"{polls['vias']['push']}/{polls['vias']['poll']}"),
        ("latency p50 (ms)", push["p50"], polls["p50"]),
        ("latency p99 (ms)", push["p99"], polls["p99"]),
        ("queue requests, whole run", push["requests"], polls["requests"]),
        ("queue requests / hour, idle", idle_push, idle_polls),
    ]
    lag = push["publish_lag"]
    if lag.get("count"):
        print(f"the emulator's own publish lag (change -> write to the broker, "
              f"{lag['count']} messages): p50 {lag['p50']} ms, p99 {lag['p99']} ms, "
              f"max {lag['max']} ms")
    for name, a, b in rows:
        if isinstance(a, str) or isinstance(b, str):
            print(f"{name:34}{a!s:>12}{b!s:>12}")
            continue
        ratio = f"{b / a:.1f}x" if a else "-"
        print(f"{name:34}{a:>12.1f}{b:>12.1f}{ratio:>12}")


if __name__ == "__main__":
    main()
