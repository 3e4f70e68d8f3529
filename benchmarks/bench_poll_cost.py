"""Client CPU per poll: the engine against hand-written polling loops, side by side.

The emulator runs in its own process; this process is the client, and only its CPU time
(``time.process_time``) is counted. Every contender polls the same number of CloudCoin tasks for
the same number of rounds under the same concurrency cap:

- ``engine``: ``CloudCoinBackend.observe`` on every task (default transport), until all complete;
- ``httpx loop``: ``asyncio.gather`` over ``httpx.AsyncClient.get`` (httpx's own transport);
- ``aiohttp loop``: the same loop on raw aiohttp, the floor for Python HTTP polling.

Then memory: the engine watching 10,000 tasks, bytes per watched task beyond the baseline.

Run: ``python benchmarks/bench_poll_cost.py [--tasks 2000] [--rounds 4]``
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from _common import aiohttp_floor, rss
from _emulator import start_emulator

from reactive_tasks import PollPolicy, wait
from reactive_tasks.backends import CloudCoinBackend
from reactive_tasks.emulator import EmulatorClient

CAP = 32


def script(rounds: int) -> list[dict[str, Any]]:
    """Running for ``rounds - 1`` polls, then completed: ``rounds`` polls per task in all."""
    return [
        {"status": "running", "progress": 10, "message": "working", "polls": rounds - 1},
        {"status": "completed", "progress": 100, "message": "Command Completed", "data": {}},
    ]


async def engine(base: str, ids: list[str], rounds: int) -> int:
    policy = PollPolicy(interval=0.05, max_interval=1.0, request_timeout=30)
    async with CloudCoinBackend(base, policy=policy, max_concurrency=CAP) as backend:
        await asyncio.gather(*(wait(backend.observe(i)) for i in ids))
    return len(ids) * rounds


async def httpx_loop(base: str, ids: list[str], rounds: int) -> int:
    limiter = asyncio.Semaphore(CAP)
    polls = 0
    limits = httpx.Limits(max_connections=CAP)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:

        async def one(task_id: str) -> bool:
            async with limiter:
                response = await client.get(f"/api/v1/task/{task_id}")
            return bool(response.json()["payload"]["status"] != "running")

        pending = list(ids)
        while pending:
            done = await asyncio.gather(*(one(i) for i in pending))
            polls += len(pending)
            pending = [i for i, finished in zip(pending, done, strict=True) if not finished]
            await asyncio.sleep(0.05)
    return polls


async def aiohttp_loop(base: str, ids: list[str], rounds: int) -> int:
    return await aiohttp_floor(base, ids, CAP)


Contender = Callable[[str, list[str], int], Awaitable[int]]


def measure(control: EmulatorClient, fn: Contender, tasks: int, rounds: int) -> tuple[float, int]:
    """CPU microseconds per poll for one contender, on fresh tasks."""
    ids = control.create_tasks("cloudcoin", tasks, script(rounds))
    base = control.api_url("cloudcoin")
    gc.collect()
    cpu = time.process_time()
    polls = asyncio.run(fn(base, ids, rounds))
    cpu = time.process_time() - cpu
    return cpu / polls * 1e6, polls


async def engine_memory(base: str, ids: list[str]) -> tuple[float, float]:
    """Bytes per watched task (tracemalloc and RSS) with every task watched and polled once."""
    policy = PollPolicy(interval=30, max_interval=60, request_timeout=60)
    async with CloudCoinBackend(base, policy=policy, max_concurrency=CAP) as backend:
        await backend.status(ids[0])  # warm the client and pool: part of the baseline
        gc.collect()
        rss0 = rss()
        tracemalloc.start()
        first = tracemalloc.get_traced_memory()[0]
        seen: set[str] = set()
        subs = [backend.observe(i).subscribe(lambda e: seen.add(e.task_id)) for i in ids]
        while len(seen) < len(ids):
            await asyncio.sleep(0.05)
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] - first
        tracemalloc.stop()
        resident = rss() - rss0
        for sub in subs:
            sub.dispose()
    return traced / len(ids), resident / len(ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--memory-tasks", type=int, default=10_000)
    args = parser.parse_args()
    proc, url = start_emulator()
    try:
        with EmulatorClient(url) as control:
            contenders: list[tuple[str, Contender]] = [
                ("engine (reactive-tasks)", engine),
                ("httpx loop (AsyncClient.get)", httpx_loop),
                ("aiohttp loop (floor)", aiohttp_loop),
            ]
            measure(control, engine, 200, 2)  # warm-up: imports, first connections
            results = {}
            for name, fn in contenders:
                results[name] = measure(control, fn, args.tasks, args.rounds)
                control.reset()
            floor = results["aiohttp loop (floor)"][0]
            httpx_cost = results["httpx loop (AsyncClient.get)"][0]
            print(f"client CPU per poll, {args.tasks} CloudCoin tasks x {args.rounds} rounds, "
                  f"concurrency {CAP}, one run:")
            print(f"  {'contender':32} {'polls':>7} {'us/poll':>9} {'vs floor':>9} {'vs httpx':>9}")
            for name, (us, polls) in results.items():
                print(f"  {name:32} {polls:>7} {us:>9.0f} {us / floor:>8.2f}x "
                      f"{us / httpx_cost:>8.2f}x")
            ratio = results["engine (reactive-tasks)"][0]
            print(f"  engine is {ratio / floor:.2f}x the aiohttp floor and "
                  f"{httpx_cost / ratio:.1f}x cheaper than the httpx loop")
            ids = control.create_tasks(
                "cloudcoin", args.memory_tasks, [{"status": "running", "progress": 5}]
            )
            traced, resident = asyncio.run(engine_memory(control.api_url("cloudcoin"), ids))
            print(f"memory per watched task at {args.memory_tasks} tasks: "
                  f"{traced / 1024:.1f} KiB traced (Python heap), {resident / 1024:.1f} KiB RSS")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
