"""Many processes watching the same tasks: through one or two relays, against polling directly.

Every scenario watches the same number of CloudCoin tasks on the emulator (its own process) from
``--apps`` application processes. ``direct``: each process polls every task itself. ``1 relay``
and ``2 relays``: relay processes poll (``reactive-tasks relay``'s engine) and publish to a real
``redis-server``; the application processes read through ``RelayBackend``. Each task's script
changes state every two poll intervals, then completes.

Printed side by side: requests to the task API per poll round (the total over the rounds one
poller needs), their ratio to ``direct``, and relay-to-application delivery latency (receipt
time minus the event's ``observed_at``, stamped by the relay's engine when it saw the change;
events replayed at subscription are left out).

Run: ``python benchmarks/bench_relay.py [--apps 8] [--tasks 2000] [--interval 1.0] [--steps 3]``
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


async def run_relay(redis_url: str, api_url: str, interval: float) -> None:
    from reactive_tasks.relay import Relay

    policy = PollPolicy(interval=interval, jitter=0.0)
    async with CloudCoinBackend(api_url, policy=policy) as backend:
        job = asyncio.ensure_future(Relay(redis_url, {"cloudcoin": backend}).run())
        print("ready", flush=True)
        await job


async def run_app(mode: str, url: str, interval: float) -> None:
    """Say ready, read task ids until an empty line, watch every task to its end, then print
    the latencies (ms) of live events as JSON."""
    if mode == "direct":
        source: Any = CloudCoinBackend(url, policy=PollPolicy(interval=interval, jitter=0.0))
    else:
        from reactive_tasks.relay import RelayBackend

        source = RelayBackend(url, "cloudcoin")
    latencies: list[float] = []

    async def one(task: str) -> None:
        started = time.time()
        observable = source.observe(task) if mode == "direct" else source.observe(task, after=-1)
        async for event in aiter(observable):
            observed = event.observed_at.timestamp()
            if mode != "direct" and observed > started:
                latencies.append((time.time() - observed) * 1000)

    print("ready", flush=True)
    tasks = []
    for line in sys.stdin:
        if not line.strip():
            break
        tasks.append(line.strip())
    await asyncio.gather(*(one(t) for t in tasks))
    await source.aclose()
    print(json.dumps(latencies), flush=True)


def spawn(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(HERE.parent.parent), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, str(HERE), *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)


def ready(*procs: subprocess.Popen[str]) -> None:
    """Wait until every process has started (imports done), so none is timed starting up."""
    for proc in procs:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise SystemExit("a benchmark process did not start")


# -- one scenario --------------------------------------------------------------------------


def scenario(
    relays: int, args: argparse.Namespace, emulator: EmulatorClient, redis: RedisServer | None
) -> dict[str, Any]:
    emulator.reset()
    steps: list[dict[str, Any]] = [
        {"status": "running", "progress": 10 * (i + 1), "seconds": 2 * args.interval}
        for i in range(args.steps)
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
    apps = [spawn("app", mode, url, str(args.interval)) for _ in range(args.apps)]
    ready(*servers, *apps)
    tasks = emulator.create_tasks("cloudcoin", args.tasks, steps)
    emulator.reset_requests()
    began = time.monotonic()
    for app in apps:
        assert app.stdin is not None
        app.stdin.write("\n".join(tasks) + "\n\n")
        app.stdin.flush()
    latencies: list[float] = []
    for app in apps:
        assert app.stdin is not None
        app.stdin.close()
        app.stdin = None
        out, _ = app.communicate(timeout=600)
        latencies += json.loads(out.strip().splitlines()[-1])
    elapsed = time.monotonic() - began
    for server in servers:
        server.terminate()
        server.communicate(timeout=30)
    requests = emulator.requests()["by_api"].get("cloudcoin", 0)
    return {"requests": requests, "latencies": latencies, "elapsed": elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=8, help="application processes")
    parser.add_argument("--tasks", type=int, default=2000, help="tasks each process watches")
    parser.add_argument("--interval", type=float, default=1.0, help="poll interval (s)")
    parser.add_argument("--steps", type=int, default=3, help="state changes per task")
    args = parser.parse_args()
    # Rounds one poller needs per task: a change every two intervals, then the terminal read.
    rounds = 2 * args.steps + 1
    emulator_proc, emulator_url = start_emulator()
    try:
        with EmulatorClient(emulator_url) as emulator, RedisServer() as redis:
            results = {
                "direct": scenario(0, args, emulator, None),
                "1 relay": scenario(1, args, emulator, redis),
                "2 relays": scenario(2, args, emulator, redis),
            }
    finally:
        emulator_proc.terminate()
        emulator_proc.wait()
    base = results["direct"]["requests"] / rounds
    print(f"\n{args.apps} application processes x {args.tasks} tasks, interval "
          f"{args.interval:g} s, {rounds} rounds per task\n")
    print(f"{'':<10}{'API req/round':>15}{'vs direct':>11}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'events':>9}{'wall s':>8}")
    for name, r in results.items():
        per_round = r["requests"] / rounds
        lat = sorted(r["latencies"])
        p50 = f"{statistics.median(lat):.1f}" if lat else "-"
        p99 = f"{lat[min(len(lat) - 1, int(len(lat) * 0.99))]:.1f}" if lat else "-"
        print(f"{name:<10}{per_round:>15.0f}{per_round / base:>10.3f}x{p50:>9}{p99:>9}"
              f"{len(lat):>9}{r['elapsed']:>8.1f}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("relay", "app"):
        if sys.argv[1] == "relay":
            asyncio.run(run_relay(sys.argv[2], sys.argv[3], float(sys.argv[4])))
        else:
            asyncio.run(run_app(sys.argv[2], sys.argv[3], float(sys.argv[4])))
    else:
        main()
