"""Scale: thousands of tasks watched by one process, CloudCoin (a GET per task) and Taskcluster
(the batch endpoint), with a baseline measured in the same run beside each.

The emulator runs under uvicorn in its own process; every scenario (API, N, run) runs in a fresh
child process, so that its CPU time and RSS are its own. Each task changes twice, 3 s apart (its
script: 3 s in a first state, 3 s in a second, then terminal); the engine polls every 2 s. Per
API and N, min / median / max over the runs:

- ``us/poll``: the composite figure: ALL of the child's CPU while the engine watches every task
  to its end (subscribing every task, every poll, building the snapshot and event of each of the
  three events per task, the benchmark's own callback) divided by the task-polls (as the
  emulator counted them: a batch request counts once per id it carries). Few polls per task
  (large N) make it carry more subscribe and event work per poll;
- ``steady``: CPU per task-poll in steady state, measured in the same child on N fresh tasks
  that do not change (each answers the same ``running`` state throughout): once every task has
  had its first event and one more interval has passed, all of the child's CPU over
  ``STEADY_ROUNDS`` intervals divided by the task-polls the emulator counted meanwhile. It holds
  polling of unchanged answers only (request, reading the answer, change-key compare,
  rescheduling, the hub's timers), as the baselines do;
- ``base``: the same child right after, with no engine running: for CloudCoin the raw-aiohttp
  polling floor (a GET per task of fresh ``running`` tasks, JSON decoded, same concurrency cap),
  for Taskcluster the official ``taskcluster`` client's ``Queue.statuses`` on the same batch
  endpoint, 1,000 ids a request, reading the steady phase's tasks (the very answers ``steady``
  read), the median of ``OFFICIAL_ROUNDS`` rounds each timed alone; ``ratio`` is us/poll /
  base and ``s.ratio`` is steady / base, from the same run: the issue's CPU-per-poll targets
  are about ``s.ratio``;
- ``sub``: CPU per task of ``observe(task_id).subscribe(...)`` (steady phase, nothing else
  running: the synchronous subscribe loop over N tasks, hub registration included) / N;
- ``event``: CPU per event of the composite watch left when subscribing and polling are taken
  out, ``(watch CPU - N x sub - task-polls x steady) / events``: validating the snapshot,
  interpreting it, building and delivering the ``TaskEvent``, the benchmark's callback (derived,
  so noisier than the measured columns);
- ``RSS/task``: RSS growth per watched task when every task has had its first event
  (tracemalloc off; includes the benchmark's own record of each task, about 0.1 KiB);
- ``s.RSS``: RSS growth per task over the steady phase, from before subscribing its N fresh
  tasks to the end of its window: the watches at rest with all the session keeps for them
  (such as the text of each unchanged batch entry); memory the watch phase freed may be reused,
  so it can read lower than ``RSS/task``;
- ``p50``/``p99``: delivery latency, the time the subscriber got a change minus the time the
  emulator made it (the task's creation time plus 3 s or 6 s);
- ``own``: the share of the 2N changes delivered on their own (an event for the next state right
  after the one before; a change merged into a later one, or seen first, is not);
- ``first``: seconds from subscribing until every task had its first event;
- ``cpu %``: the client's CPU time over the watch's wall time (near 100 %: the client is the
  bottleneck; well below: the emulator is, one uvicorn worker on the same cores);
- ``polls/task``: task-polls per task over its 6 s or more (few when a round outlasts the
  script; then the per-poll CPU carries each task's subscription and events);
- ``s.polls``: task-polls per task in the steady window (``STEADY_ROUNDS`` when the engine keeps
  up; fewer when a round of N polls takes longer than the interval).

The machine may be busy: compare ratios from the same run, not absolute figures.

Taskcluster runs are reclaimed every ``RECLAIM_EVERY`` seconds (900, as docker-worker does;
``BENCH_RECLAIM_EVERY=0`` for a reclaim at every read, which changes every status's text at every
poll and so defeats the session's memo of unchanged entries).

Run: ``python benchmarks/bench_scale.py [--n 1000,5000,10000,30000] [--runs 3]
[--api cloudcoin,taskcluster]``
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
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
OFFICIAL_ROUNDS = 5  # rounds of the official client's baseline, each timed on its own
STEADY_ROUNDS = 5  # intervals of the steady-state window
#: How often a running Taskcluster run is reclaimed, moving its ``takenUntil`` (and so its
#: status's text): docker-worker reclaims when 1/1.3 of a 20-minute claim is left, about every
#: 15 minutes. ``BENCH_RECLAIM_EVERY=0`` makes it every read, the emulator's own worst case.
RECLAIM_EVERY = float(os.environ.get("BENCH_RECLAIM_EVERY", "900"))
_RUNNING: dict[str, Any] = {"state": "running"}
if RECLAIM_EVERY > 0:
    _RUNNING["reclaimEvery"] = RECLAIM_EVERY
SCRIPTS: dict[str, list[dict[str, Any]]] = {
    "cloudcoin": [
        {"status": "running", "progress": 0, "seconds": STEP},
        {"status": "running", "progress": 50, "seconds": STEP},
        {"status": "completed", "progress": 100},
    ],
    "taskcluster": [
        {"runs": [{"state": "pending"}], "seconds": STEP},
        {"runs": [_RUNNING], "seconds": STEP},
        {"runs": [{"state": "completed"}]},
    ],
}
#: Tasks that answer the same for an hour: the steady-state window's.
STEADY: dict[str, list[dict[str, Any]]] = {
    "cloudcoin": [
        {"status": "running", "progress": 10, "seconds": 3600},
        {"status": "completed", "progress": 100},
    ],
    "taskcluster": [
        {"runs": [_RUNNING], "seconds": 3600},
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


def make_backend(api: str, url: str) -> CloudCoinBackend | TaskclusterBackend:
    policy = PollPolicy(interval=INTERVAL, request_timeout=120.0)
    base = f"{url}/{api}"
    return (
        CloudCoinBackend(base, policy=policy, max_concurrency=CAP) if api == "cloudcoin"
        else TaskclusterBackend(base, policy=policy, max_concurrency=CAP)
    )


def task_polls(api: str, counted: dict[str, Any]) -> int:
    """Task-polls in the emulator's request counts (a batch counts once per id it carries)."""
    if api == "cloudcoin":
        return int(counted["by_api"].get("cloudcoin", 0))
    return sum(counted["by_task"].values())


async def watch(api: str, url: str, created: dict[str, float]) -> dict[str, float]:
    """Watch every task until it ends; CPU, RSS and delivery figures."""
    backend = make_backend(api, url)
    count = len(created)
    last: dict[str, int] = {}
    latencies: list[float] = []
    figures = {"own": 0.0, "first": float("nan"), "rss": float("nan"), "events": 0.0}
    finished = asyncio.Event()
    ended = 0
    failures: list[BaseException] = []

    def seen(event: TaskEvent[Any]) -> None:
        now = time.time()
        figures["events"] += 1
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
        "events": figures["events"],
        "load": cpu / wall,
        "rss": figures["rss"],
        "first": figures["first"],
        "own": figures["own"] / (2 * count),
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
    }


async def steady(api: str, url: str, ids: list[str], control: EmulatorClient) -> dict[str, float]:
    """Subscribe CPU per task, then CPU per task-poll while no watched task changes."""
    backend = make_backend(api, url)
    count = len(ids)
    first: set[str] = set()
    everyone = asyncio.Event()
    failures: list[BaseException] = []

    def seen(event: TaskEvent[Any]) -> None:
        first.add(event.task_id)
        if len(first) == count:
            everyone.set()

    async with backend:
        gc.collect()
        rss0 = rss()
        cpu = time.process_time()
        subscriptions = [
            backend.observe(task_id).subscribe(on_next=seen, on_error=failures.append)
            for task_id in ids
        ]
        sub = (time.process_time() - cpu) / count
        await asyncio.wait_for(everyone.wait(), timeout=300 + count / 50)
        await asyncio.sleep(INTERVAL)  # the first round's stragglers settle
        control.reset_requests()
        cpu = time.process_time()
        await asyncio.sleep(STEADY_ROUNDS * INTERVAL)
        cpu = time.process_time() - cpu
        grown = (rss() - rss0) / count
        polls = task_polls(api, control.requests())
        for subscription in subscriptions:
            subscription.dispose()
    if failures:
        raise failures[0]
    return {"sub": sub, "steady": cpu / polls, "steady_polls": polls / count, "s.rss": grown}


def official_statuses(root: str, ids: list[str]) -> float:
    """CPU seconds per task-poll of the official client reading ``ids`` in batches: the median
    of ``OFFICIAL_ROUNDS`` rounds (one round's CPU varied by a third from round to round)."""
    queue = taskcluster.Queue({"rootUrl": root, "maxRetries": 5})
    per_poll: list[float] = []
    for _ in range(OFFICIAL_ROUNDS):
        polls = 0
        cpu = time.process_time()
        for start in range(0, len(ids), BATCH):
            chunk = ids[start : start + BATCH]
            answer = queue.statuses({"taskIds": chunk})
            while answer.get("continuationToken"):
                query = {"continuationToken": answer["continuationToken"]}
                polls += len(answer["statuses"])
                answer = queue.statuses({"taskIds": chunk}, query=query)
            polls += len(answer["statuses"])
        per_poll.append((time.process_time() - cpu) / polls)
    return statistics.median(per_poll)


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
        polls = task_polls(api, control.requests())
        cpu = result.pop("cpu")
        result["us"] = cpu / polls * 1e6
        result["polls"] = polls / count
        calm = list(control.create_timed_tasks(api, count, STEADY[api]))
        result.update(asyncio.run(steady(api, url, calm, control)))
        events = result.pop("events")
        result["event"] = (cpu - count * result["sub"] - polls * result["steady"]) / events * 1e6
        result["sub"] *= 1e6
        result["steady"] *= 1e6
        if api == "cloudcoin":
            result["base"] = floor(control) * 1e6
        else:
            result["base"] = official_statuses(control.api_url(api), calm) * 1e6
    result["ratio"] = result["us"] / result["base"]
    result["s.ratio"] = result["steady"] / result["base"]
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
    ("steady", "steady", "{:.0f}", 1.0),
    ("base", "base", "{:.0f}", 1.0),
    ("ratio", "ratio", "{:.2f}x", 1.0),
    ("s.ratio", "s.ratio", "{:.2f}x", 1.0),
    ("sub", "sub us", "{:.0f}", 1.0),
    ("event", "event us", "{:.0f}", 1.0),
    ("rss", "RSS/task KiB", "{:.1f}", 1 / 1024),
    ("s.rss", "s.RSS KiB", "{:.1f}", 1 / 1024),
    ("p50", "p50 s", "{:.2f}", 1.0),
    ("p99", "p99 s", "{:.2f}", 1.0),
    ("own", "own %", "{:.1f}", 100.0),
    ("first", "first s", "{:.1f}", 1.0),
    ("load", "cpu %", "{:.0f}", 100.0),
    ("polls", "polls/task", "{:.1f}", 1.0),
    ("steady_polls", "s.polls", "{:.1f}", 1.0),
]


W = 13  # column width


def table(results: dict[tuple[str, int], list[dict[str, float]]], runs: int) -> None:
    print(f"\ninterval {INTERVAL:g} s, each task changing twice {STEP:g} s apart, concurrency "
          f"{CAP}; median of {runs} run(s), [min-max] below it; base: CloudCoin = raw aiohttp "
          f"floor, Taskcluster = official Queue.statuses; Taskcluster runs reclaimed every "
          f"{RECLAIM_EVERY:g} s (0: at every read)\n")
    print(f"{'api':<12}{'N':>7}" + "".join(f"{h:>{W}}" for _, h, _, _ in COLUMNS))
    for (api, count), rows in results.items():
        meds, ranges = [], []
        for key, _, fmt, scale in COLUMNS:
            low, mid, high = spread([row[key] * scale for row in rows])
            shown = fmt.format if mid == mid else lambda _: "-"  # NaN: no change seen
            meds.append(shown(mid))
            ranges.append(f"{shown(low)}-{shown(high)}" if runs > 1 else "")
        print(f"{api:<12}{count:>7}" + "".join(f"{m:>{W}}" for m in meds))
        if runs > 1:
            print(f"{'':<19}" + "".join(f"{r:>{W}}" for r in ranges))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", default="1000,5000,10000,30000", help="task counts, comma-separated")
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
