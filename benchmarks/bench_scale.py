"""Scale: thousands of tasks watched by one process, CloudCoin (a GET per task) and Taskcluster
(the batch endpoint), with a baseline measured in the same run beside each.

The emulator runs under uvicorn in its own process; every scenario (API, N, run) runs in a fresh
child process, so that its CPU time and RSS are its own. Each task changes twice, 3 s apart (its
script: 3 s in a first state, 3 s in a second, then terminal); the engine polls every 2 s. Per
API and N, min / median / max over the runs:

- ``us/poll``: the child's CPU per task-poll while the engine watches every task to its end
  (task-polls as the emulator counted them: a batch request counts once per id it carries);
- ``base``: the same child right after, on fresh tasks: for CloudCoin the raw-aiohttp polling
  floor (a GET per task, JSON decoded, same concurrency cap), for Taskcluster the official
  ``taskcluster`` client's ``Queue.statuses`` on the same batch endpoint, 1,000 ids a request
  (answers of the same shape); ``ratio`` is engine / base, from the same run;
- ``RSS/task``: RSS growth per watched task when every task has had its first event
  (tracemalloc off; includes the benchmark's own record of each task, about 0.1 KiB);
- ``p50``/``p99``: delivery latency, the time the subscriber got a change minus the time the
  emulator made it (the task's creation time plus 3 s or 6 s);
- ``own``: the share of the 2N changes delivered on their own (an event for the next state right
  after the one before; a change merged into a later one, or seen first, is not);
- ``first``: seconds from subscribing until every task had its first event;
- ``cpu %``: the client's CPU time over the watch's wall time (near 100 %: the client is the
  bottleneck; well below: the emulator is, one uvicorn worker on the same cores);
- ``polls/task``: task-polls per task over its 6 s or more (few when a round outlasts the
  script; then the per-poll CPU carries each task's subscription and events).

The machine may be busy: compare ratios from the same run, not absolute figures.

Run: ``python benchmarks/bench_scale.py [--n 1000,10000,30000] [--runs 3]
[--api cloudcoin,taskcluster]``
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import taskcluster
from _common import aiohttp_floor, percentile, rss, spread
from _emulator import start_emulator

from reactive_tasks import PollPolicy, TaskEvent, TaskState
from reactive_tasks.backends import CloudCoinBackend, TaskclusterBackend
from reactive_tasks.emulator import EmulatorClient

CAP = 32
INTERVAL = 2.0
STEP = 3.0
BATCH = 1000
BASE_TASKS = 5000  # the aiohttp floor's tasks (CPU per poll does not depend on their number)
BASE_ROUNDS = 2
SCRIPTS: dict[str, list[dict[str, Any]]] = {
    "cloudcoin": [
        {"status": "running", "progress": 0, "seconds": STEP},
        {"status": "running", "progress": 50, "seconds": STEP},
        {"status": "completed", "progress": 100},
    ],
    "taskcluster": [
        {"runs": [{"state": "pending"}], "seconds": STEP},
        {"runs": [{"state": "running"}], "seconds": STEP},
        {"runs": [{"state": "completed"}]},
    ],
}


def step_of(event: TaskEvent[Any]) -> int:
    """Which step of its script an event reports: 0, 1 or 2 (terminal)."""
    if event.state.terminal:
        return 2
    if event.backend == "cloudcoin":
        return 1 if (event.progress or 0) >= 50 else 0
    return 1 if event.state is TaskState.RUNNING else 0


# -- one scenario, in a child process ---------------------------------------------------------


async def watch(api: str, url: str, created: dict[str, float]) -> dict[str, float]:
    """Watch every task until it ends; CPU, RSS and delivery figures."""
    policy = PollPolicy(interval=INTERVAL, request_timeout=120.0)
    base = f"{url}/{api}"
    backend = (
        CloudCoinBackend(base, policy=policy, max_concurrency=CAP) if api == "cloudcoin"
        else TaskclusterBackend(base, policy=policy, max_concurrency=CAP)
    )
    count = len(created)
    last: dict[str, int] = {}
    latencies: list[float] = []
    figures = {"own": 0.0, "first": float("nan"), "rss": float("nan")}
    finished = asyncio.Event()
    ended = 0
    failures: list[BaseException] = []

    def seen(event: TaskEvent[Any]) -> None:
        now = time.time()
        step = step_of(event)
        before = last.get(event.task_id)
        last[event.task_id] = step
        if before is None:
            if len(last) == count:
                figures["first"] = time.perf_counter() - started
                figures["rss"] = (rss() - rss0) / count
            return
        latencies.append(now - (created[event.task_id] + STEP * step))
        if step == before + 1:
            figures["own"] += 1

    def end(error: BaseException | None = None) -> None:
        nonlocal ended
        if error is not None:
            failures.append(error)
        ended += 1
        if ended == count:
            finished.set()

    async with backend:
        gc.collect()
        rss0 = rss()
        cpu = time.process_time()
        started = time.perf_counter()
        subscriptions = [
            backend.observe(task_id).subscribe(on_next=seen, on_error=end, on_completed=end)
            for task_id in created
        ]
        await asyncio.wait_for(finished.wait(), timeout=300 + count / 50)
        cpu = time.process_time() - cpu
        wall = time.perf_counter() - started
        for subscription in subscriptions:
            subscription.dispose()
    if failures:
        raise failures[0]
    return {
        "cpu": cpu,
        "load": cpu / wall,
        "rss": figures["rss"],
        "first": figures["first"],
        "own": figures["own"] / (2 * count),
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
    }


def official_statuses(root: str, ids: list[str]) -> float:
    """CPU seconds per task-poll of the official client reading ``ids`` in batches."""
    queue = taskcluster.Queue({"rootUrl": root, "maxRetries": 5})
    polls = 0
    cpu = time.process_time()
    for _ in range(BASE_ROUNDS):
        for start in range(0, len(ids), BATCH):
            chunk = ids[start : start + BATCH]
            answer = queue.statuses({"taskIds": chunk})
            while answer.get("continuationToken"):
                query = {"continuationToken": answer["continuationToken"]}
                polls += len(answer["statuses"])
                answer = queue.statuses({"taskIds": chunk}, query=query)
            polls += len(answer["statuses"])
    return (time.process_time() - cpu) / polls


def floor(control: EmulatorClient) -> float:
    """CPU seconds per poll of the raw-aiohttp loop on fresh CloudCoin tasks."""
    steps: list[dict[str, Any]] = [
        {"status": "running", "polls": BASE_ROUNDS - 1}, {"status": "completed"}
    ]
    ids = control.create_tasks("cloudcoin", BASE_TASKS, steps)
    gc.collect()
    cpu = time.process_time()
    polls = asyncio.run(aiohttp_floor(control.api_url("cloudcoin"), ids, CAP))
    return (time.process_time() - cpu) / polls


def scenario(api: str, count: int, url: str) -> dict[str, float]:
    with EmulatorClient(url, timeout=300) as control:
        created = control.create_timed_tasks(api, count, SCRIPTS[api])
        control.reset_requests()
        result = asyncio.run(watch(api, url, created))
        counted = control.requests()
        polls = (
            counted["by_api"].get("cloudcoin", 0) if api == "cloudcoin"
            else sum(counted["by_task"].values())
        )
        result["us"] = result.pop("cpu") / polls * 1e6
        result["polls"] = polls / count
        if api == "cloudcoin":
            result["base"] = floor(control) * 1e6
        else:
            result["base"] = official_statuses(control.api_url(api), list(created)) * 1e6
    result["ratio"] = result["us"] / result["base"]
    return result


# -- the runs and the table ---------------------------------------------------------------------


def run_child(api: str, count: int, url: str) -> dict[str, float]:
    here = Path(__file__).resolve()
    out = subprocess.run(
        [sys.executable, str(here), "--child", api, str(count), url],
        capture_output=True, text=True, check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"{api} x {count} failed:\n{out.stderr[-3000:]}")
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


COLUMNS = [  # key, heading, format, scale
    ("us", "us/poll", "{:.0f}", 1.0),
    ("base", "base", "{:.0f}", 1.0),
    ("ratio", "ratio", "{:.2f}x", 1.0),
    ("rss", "RSS/task KiB", "{:.1f}", 1 / 1024),
    ("p50", "p50 s", "{:.2f}", 1.0),
    ("p99", "p99 s", "{:.2f}", 1.0),
    ("own", "own %", "{:.1f}", 100.0),
    ("first", "first s", "{:.1f}", 1.0),
    ("load", "cpu %", "{:.0f}", 100.0),
    ("polls", "polls/task", "{:.1f}", 1.0),
]


def table(results: dict[tuple[str, int], list[dict[str, float]]], runs: int) -> None:
    print(f"\ninterval {INTERVAL:g} s, each task changing twice {STEP:g} s apart, concurrency "
          f"{CAP}; median of {runs} run(s), [min-max] below it; base: CloudCoin = raw aiohttp "
          "floor, Taskcluster = official Queue.statuses\n")
    print(f"{'api':<12}{'N':>7}" + "".join(f"{h:>14}" for _, h, _, _ in COLUMNS))
    for (api, count), rows in results.items():
        meds, ranges = [], []
        for key, _, fmt, scale in COLUMNS:
            low, mid, high = spread([row[key] * scale for row in rows])
            shown = fmt.format if mid == mid else lambda _: "-"  # NaN: no change seen
            meds.append(shown(mid))
            ranges.append(f"{shown(low)}-{shown(high)}" if runs > 1 else "")
        print(f"{api:<12}{count:>7}" + "".join(f"{m:>14}" for m in meds))
        if runs > 1:
            print(f"{'':<19}" + "".join(f"{r:>14}" for r in ranges))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", default="1000,10000,30000", help="task counts, comma-separated")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--api", default="cloudcoin,taskcluster")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        api, count, url = args.child
        print(json.dumps(scenario(api, int(count), url)))
        return
    counts = [int(n) for n in args.n.split(",")]
    apis = args.api.split(",")
    proc, url = start_emulator()
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    wall = time.perf_counter()
    try:
        with EmulatorClient(url) as control:
            for run in range(args.runs):
                for api in apis:
                    for count in counts:
                        control.reset()
                        row = run_child(api, count, url)
                        results.setdefault((api, count), []).append(row)
                        print(f"run {run + 1}: {api} x {count}: " + ", ".join(
                            f"{k} {v:.3g}" for k, v in row.items()), flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    table(results, args.runs)
    print(f"\n({time.perf_counter() - wall:.0f} s in all)")


if __name__ == "__main__":
    main()
