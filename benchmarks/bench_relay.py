"""Many processes watching the same tasks: through one or two relays, against polling directly.

Every scenario watches the same CloudCoin tasks on the emulator (its own process) from ``--apps``
application processes. ``direct``: each process polls every task itself. ``1 relay`` and
``2 relays``: relay processes poll and publish to a real ``redis-server``; the application
processes read through ``RelayBackend``. Each task's progress changes every ``--change-every``
poll intervals (default two): ``tasks / (interval * change_every)`` changes per second, each
delivered to every application process.

Once every process watches every task and a warm-up of two rounds has passed, the emulator's
request count is read over ``--rounds`` poll intervals. Printed side by side: requests to the
task API per round, their ratio to ``direct`` and to one process's tasks (the ideal of a shared
watch is 1.0), and relay-to-application delivery latency: receipt time minus the event's
``observed_at``, which the relay's engine stamped when its poll saw the change (events replayed
at subscription are left out), over the events received during the counted rounds, and the p99
of every live event since the subscriptions started. Last, one of two relays is killed and the
time until its tasks' next events is printed. Beside each scenario, the CPU its processes used
while counted (in percent of one core: the applications together, the relays, the emulator,
Redis) and the machine's load. On a machine whose cores are busy, polls slip and every figure
is lower than the ideal; the ratios are what to compare (``--nice 10`` gives the task API and
the relays the CPU first, as if the applications ran on other machines).

Run: ``python benchmarks/bench_relay.py [--apps 8] [--tasks 2000] [--interval 2.0]
[--change-every 2] [--rounds 5] [--nice 0]``. The workload of the first figures (1,000 changes
per second, which saturates a 2-core machine by itself): ``--interval 1``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _emulator import start_emulator

from reactive_tasks import PollPolicy, aiter
from reactive_tasks.backends import CloudCoinBackend
from reactive_tasks.emulator import EmulatorClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from redis_server import RedisServer  # the tests' redis-server launcher

HERE = Path(__file__).resolve()


# -- the processes -------------------------------------------------------------------------


async def run_relay(
    redis_url: str, api_url: str, interval: float, lease: float = 10.0, name: str | None = None
) -> None:
    from reactive_tasks.relay import Relay

    policy = PollPolicy(interval=interval, jitter=0.0)
    async with CloudCoinBackend(api_url, policy=policy) as backend:
        relay = Relay(redis_url, {"cloudcoin": backend}, lease=lease, name=name)
        job = asyncio.ensure_future(relay.run())
        print("ready", flush=True)
        await job


async def run_app(mode: str, url: str, interval: float) -> None:
    """Say ready; read task ids until an empty line; watch them all, say so; on a ``count``
    line start a second list, and on a ``stop`` line print the latencies (ms) of the live events
    received since the start and since ``count``, as JSON."""
    if mode == "direct":
        source: Any = CloudCoinBackend(url, policy=PollPolicy(interval=interval, jitter=0.0))
    else:
        from reactive_tasks.relay import RelayBackend

        source = RelayBackend(url, "cloudcoin")
    latencies: list[float] = []
    first = asyncio.Event()
    count = 0

    async def one(task: str, total: int) -> None:
        nonlocal count
        started = time.time()
        async for event in aiter(source.observe(task)):
            if event.observed_at.timestamp() > started and mode != "direct":
                latencies.append((time.time() - event.observed_at.timestamp()) * 1000)
            if not first.is_set():
                count += 1
                if count == total:
                    first.set()
                started = 0.0  # every later event is live

    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    tasks = []
    while line := (await loop.run_in_executor(None, sys.stdin.readline)).strip():
        tasks.append(line)
    watchers = [asyncio.ensure_future(one(t, len(tasks))) for t in tasks]
    await first.wait()
    print("watching", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    counted_from = len(latencies)
    await loop.run_in_executor(None, sys.stdin.readline)
    for watcher in watchers:
        watcher.cancel()
    await asyncio.gather(*watchers, return_exceptions=True)
    await source.aclose()
    print(json.dumps([latencies, latencies[counted_from:]]), flush=True)


def spawn(*args: str, nice: int = 0) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(HERE.parent.parent), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, str(HERE), *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env,
                            preexec_fn=(lambda: os.nice(nice)) if nice else None)


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time the processes ``pids`` have used so far."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def expect(line: str, *procs: subprocess.Popen[str]) -> None:
    """Wait until every process has printed ``line`` (started; watching every task)."""
    for proc in procs:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != line:
            raise SystemExit(f"a benchmark process did not say {line!r}")


# -- one scenario --------------------------------------------------------------------------


def scenario(
    relays: int, args: argparse.Namespace, emulator: EmulatorClient, redis: RedisServer | None,
    emulator_pid: int,
) -> dict[str, Any]:
    emulator.reset()
    changes = args.rounds // args.change_every + 30
    steps: list[dict[str, Any]] = [
        {"status": "running", "progress": i % 100,
         "seconds": args.change_every * args.interval}
        for i in range(changes)
    ]
    steps.append({"status": "completed", "progress": 100})
    servers: list[subprocess.Popen[str]] = []
    if relays:
        assert redis is not None
        redis.restart()  # an empty Redis per scenario
        servers = [spawn("relay", redis.url, emulator.api_url("cloudcoin"), str(args.interval))
                   for _ in range(relays)]
    mode, url = ("relay", redis.url) if redis and relays else ("direct", emulator.api_url(
        "cloudcoin"))
    apps = [spawn("app", mode, url, str(args.interval), nice=args.nice)
            for _ in range(args.apps)]
    expect("ready", *servers, *apps)
    tasks = emulator.create_tasks("cloudcoin", args.tasks, steps)
    for app in apps:
        assert app.stdin is not None
        app.stdin.write("\n".join(tasks) + "\n\n")
        app.stdin.flush()
    expect("watching", *apps)
    time.sleep(2 * args.interval)  # warm-up: subscriptions settled, rounds aligned
    emulator.reset_requests()
    for app in apps:
        assert app.stdin is not None
        app.stdin.write("count\n")
        app.stdin.flush()
    groups = {"apps": [a.pid for a in apps], "relays": [s.pid for s in servers],
              "emulator": [emulator_pid],
              "redis": [redis.proc.pid] if relays and redis and redis.proc else []}
    before = {name: cpu_seconds(pids) for name, pids in groups.items()}
    started = time.monotonic()
    time.sleep(args.rounds * args.interval)
    elapsed = time.monotonic() - started
    cpu = {name: 100 * (cpu_seconds(pids) - before[name]) / elapsed
           for name, pids in groups.items()}
    load = os.getloadavg()[0]
    requests = emulator.requests()["by_api"].get("cloudcoin", 0)
    latencies: list[float] = []
    counted: list[float] = []
    for app in apps:
        assert app.stdin is not None
        app.stdin.write("stop\n")
        app.stdin.close()
        app.stdin = None
    for app in apps:
        out, _ = app.communicate(timeout=600)
        every, steady = json.loads(out.strip().splitlines()[-1])
        latencies += every
        counted += steady
    for server in servers:
        server.terminate()
        server.communicate(timeout=30)
    return {"per_round": requests / args.rounds, "latencies": counted, "all": latencies, "cpu": cpu,
            "load": load}


def takeover(emulator: EmulatorClient, redis: RedisServer, tasks: int) -> dict[str, Any]:
    """Two relays (lease 2 s, interval 0.5 s) share ``tasks`` tasks; one is SIGKILLed. For each
    of its tasks: the time from the kill to the first event the other relay observed."""
    import redis as redis_client

    from reactive_tasks.relay import RelayBackend

    lease, interval = 2.0, 0.5
    emulator.reset()
    redis.restart()
    api = emulator.api_url("cloudcoin")
    relays = {n: spawn("relay", redis.url, api, str(interval), str(lease), n) for n in "ab"}
    expect("ready", *relays.values())
    steps = [{"status": "running", "progress": i, "seconds": interval} for i in range(60)]
    ids = emulator.create_tasks("cloudcoin", tasks, steps)
    reader = RelayBackend(redis.url, "cloudcoin")
    seen: dict[str, list[Any]] = {t: [] for t in ids}

    owners: dict[str, bytes | None] = {}

    async def watch() -> float:
        async def one(task: str) -> None:
            async for event in aiter(reader.observe(task, after=-1)):
                seen[task].append(event)

        watchers = [asyncio.ensure_future(one(t)) for t in ids]
        while not all(len(v) >= 2 for v in seen.values()):
            await asyncio.sleep(0.05)
        with redis_client.Redis.from_url(redis.url) as plain:
            owners.update({t: plain.get(f"rt:{{cloudcoin:{t}}}:owner") for t in ids})
        relays["a"].kill()
        killed_at = time.time()
        await asyncio.sleep(2 * lease + 2 * interval)
        for watcher in watchers:
            watcher.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        await reader.aclose()
        return killed_at

    killed_at = asyncio.run(watch())
    relays["b"].terminate()
    for proc in relays.values():
        proc.communicate(timeout=30)
    orphans = [t for t, o in owners.items() if o and o.startswith(b"a|")]
    gaps = sorted(
        next(e.observed_at.timestamp() for e in seen[t] if e.observed_at.timestamp() > killed_at)
        - killed_at
        for t in orphans
    )
    contiguous = all([e.sequence for e in v] == list(range(len(v))) for v in seen.values())
    return {"orphans": len(orphans), "gaps": gaps, "contiguous": contiguous,
            "lease": lease, "interval": interval}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=8, help="application processes")
    parser.add_argument("--tasks", type=int, default=2000, help="tasks each process watches")
    parser.add_argument("--interval", type=float, default=2.0, help="poll interval (s)")
    parser.add_argument("--change-every", type=int, default=2,
                        help="poll intervals between two changes of a task")
    parser.add_argument("--rounds", type=int, default=5, help="rounds counted")
    parser.add_argument("--nice", type=int, default=0,
                        help="niceness of the application processes: on a small machine, lets "
                             "the task API and the relays run as if the applications were "
                             "elsewhere")
    args = parser.parse_args()
    emulator_proc, emulator_url = start_emulator()
    try:
        with EmulatorClient(emulator_url) as emulator, RedisServer() as redis:
            pid = emulator_proc.pid
            results = {
                "direct": scenario(0, args, emulator, None, pid),
                "1 relay": scenario(1, args, emulator, redis, pid),
                "2 relays": scenario(2, args, emulator, redis, pid),
            }
            dead = takeover(emulator, redis, min(args.tasks, 200))
    finally:
        emulator_proc.terminate()
        emulator_proc.wait()
    base = results["direct"]["per_round"]
    rate = args.tasks / (args.interval * args.change_every)
    print(f"\n{args.apps} application processes x {args.tasks} tasks, interval "
          f"{args.interval:g} s, a change every {args.change_every} intervals ({rate:g} "
          f"changes/s, each to {args.apps} processes), {args.rounds} rounds counted, apps' "
          f"niceness {args.nice}\n")
    print(f"{'':<10}{'API req/round':>15}{'ideal':>8}{'vs direct':>11}{'p50 ms':>9}"
          f"{'p99 ms':>9}{'events':>9}{'all p99':>9}   CPU % of a core: "
          "apps/relays/emulator/redis, load")
    for name, r in results.items():
        ideal = args.tasks * (args.apps if name == "direct" else 1)
        lat = sorted(r["latencies"])
        p50 = f"{statistics.median(lat):.1f}" if lat else "-"
        p99 = f"{lat[min(len(lat) - 1, int(len(lat) * 0.99))]:.1f}" if lat else "-"
        every = sorted(r["all"])
        p99_all = f"{every[min(len(every) - 1, int(len(every) * 0.99))]:.1f}" if every else "-"
        cpu = "/".join(f"{r['cpu'][g]:.0f}" for g in ("apps", "relays", "emulator", "redis"))
        print(f"{name:<10}{r['per_round']:>15.0f}{ideal:>8}{r['per_round'] / base:>10.3f}x"
              f"{p50:>9}{p99:>9}{len(lat):>9}{p99_all:>9}   {cpu}, {r['load']:.1f}")
    print("\nideal: one request per task per round, from each process (direct) or once (relays)")
    print("p50/p99/events: events received during the counted rounds; all p99: every live event "
          "since the subscriptions started (their start-up included)")
    gaps = dead["gaps"]
    print(f"\nrelay killed (SIGKILL) holding {dead['orphans']} tasks; lease {dead['lease']:g} s, "
          f"interval {dead['interval']:g} s: first event from the other relay after "
          f"{statistics.median(gaps):.2f} s (median), {gaps[-1]:.2f} s (max); sequence numbers "
          f"{'contiguous' if dead['contiguous'] else 'NOT contiguous'}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("relay", "app"):
        if sys.argv[1] == "relay":
            lease, name = (float(sys.argv[5]), sys.argv[6]) if len(sys.argv) > 6 else (10.0, None)
            asyncio.run(run_relay(sys.argv[2], sys.argv[3], float(sys.argv[4]), lease, name))
        else:
            asyncio.run(run_app(sys.argv[2], sys.argv[3], float(sys.argv[4])))
    else:
        main()
