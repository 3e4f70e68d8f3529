"""iExec: rounds with logs against per-task reads, and WebSocket push against polls.

The emulator runs in its own process (blocks every ``--block-time`` s); this process is the client.

1. Rounds: ``--tasks`` watched tasks, 5 % of them changing status between two rounds. Each round
   is one ``fetch_many`` over every task, as the hub makes it; counted per round: HTTP POSTs the
   emulator served and the client's CPU time (``time.process_time``). Round 0 (first reads) is
   left out of the averages.
2. The same through the hub: the tasks watched with ``observe`` (polls every ``--period`` s, 5 %
   changing per period); the client's CPU time over a steady ``--window`` s after every task's
   first event, per poll period: the hub's own work per watched task is in both figures.
3. Delivery latency: the same tasks watched with ``observe``, 5 % changing every ``--period`` s;
   for each change, the time from the landing of the block holding its logs (the emulator's clock
   stamps it) to the event's arrival in the subscriber's callback (stamped there, with the same
   wall clock), with ``ws_url`` (push) and with polls only
   (logs rounds every ``--interval`` s). A bystander subscribes to new heads so that the emulator
   mines every block on time in both runs.

Run: ``python benchmarks/bench_iexec.py [--tasks 1000] [--rounds 10]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import time
from typing import Any

import aiohttp
import httpx
from _emulator import start_emulator

from reactive_tasks import PollPolicy
from reactive_tasks.backends.iexec import IExecBackend
from reactive_tasks.emulator import EmulatorClient
from reactive_tasks.emulator.iexec import HUB_ADDRESS

ROUTE = "iexec POST /rpc"
GROUP_SHARE = 0.05  # the share of tasks changing per round / period
CONSENSUS = "0x" + __import__("eth_hash.auto", fromlist=["keccak"]).keccak(
    b"TaskConsensus(bytes32,bytes32)"
).hex()


def create_groups(client: EmulatorClient, tasks: int, start: float, period: float) -> list[str]:
    """``tasks`` ACTIVE tasks in groups of 5 %; group g turns REVEALING at start + g * period."""
    size = max(1, int(tasks * GROUP_SHARE))
    ids: list[str] = []
    for group in range((tasks + size - 1) // size):
        count = min(size, tasks - len(ids))
        steps = [{"status": "ACTIVE", "seconds": start + group * period}, {"status": "REVEALING"}]
        ids += client.create_tasks("iexec", count, steps)
    return ids


async def one_round(backend: IExecBackend, refs: list[Any]) -> dict[str, Any]:
    """One round as the hub makes it: ``fetch_many`` over chunks of ``max_batch``, at once."""
    size = backend.max_batch or len(refs)

    async def chunk(part: list[Any]) -> dict[str, Any]:
        return {r.task_id: o async for r, o in backend.fetch_many(part)}

    parts = await asyncio.gather(*(chunk(refs[i : i + size]) for i in range(0, len(refs), size)))
    return {k: v for part in parts for k, v in part.items()}


async def rounds(url: str, client: EmulatorClient, args: Any, logs: bool) -> dict[str, float]:
    client.reset()
    ids = create_groups(client, args.tasks, start=1.5 * args.period, period=args.period)
    backend = IExecBackend(url + "/rpc", HUB_ADDRESS, logs=logs)
    refs = [backend.task_ref(i) for i in ids]
    cpu: list[float] = []
    posts: list[int] = []
    changed: list[int] = []
    last: dict[str, str] = {}
    started = time.monotonic()
    try:
        for k in range(args.rounds + 1):
            await asyncio.sleep(max(0.0, started + k * args.period - time.monotonic()))
            before = client.requests()["by_route"].get(ROUTE, 0)
            t0 = time.process_time()
            outcomes = await one_round(backend, refs)
            spent = time.process_time() - t0
            served = client.requests()["by_route"].get(ROUTE, 0) - before
            names = {i: getattr(o, "statusName", "error") for i, o in outcomes.items()}
            moved = sum(1 for i, n in names.items() if last.get(i, n) != n)
            last = names
            if k:
                cpu.append(spent)
                posts.append(served)
                changed.append(moved)
    finally:
        await backend.aclose()
    return {
        "posts": statistics.mean(posts), "posts_max": max(posts),
        "cpu_ms": 1000 * statistics.mean(cpu), "changed": statistics.mean(changed),
    }


async def hub_rounds(url: str, client: EmulatorClient, args: Any, logs: bool) -> dict[str, float]:
    """CPU per poll period with every task watched through the hub (``observe``)."""
    client.reset()
    start = 3.0  # subscribe and read every task first
    ids = create_groups(client, args.tasks, start=start, period=args.period)
    policy = PollPolicy(interval=args.period, jitter=0.0, reconcile_interval=60.0)
    backend = IExecBackend(url + "/rpc", HUB_ADDRESS, policy=policy, logs=logs)
    events = [0]
    subs = [backend.observe(i).subscribe(lambda e: events.__setitem__(0, events[0] + 1))
            for i in ids]
    try:
        await asyncio.sleep(start)
        before, seen = client.requests()["by_route"].get(ROUTE, 0), events[0]
        t0 = time.process_time()
        await asyncio.sleep(args.window)
        spent = time.process_time() - t0
        served = client.requests()["by_route"].get(ROUTE, 0) - before
        seen = events[0] - seen
    finally:
        for sub in subs:
            sub.dispose()
        await backend.aclose()
    periods = args.window / args.period
    return {"cpu_ms": 1000 * spent / periods, "posts": served / periods, "events": seen / periods}


async def heads(ws_url: str, stop: asyncio.Event) -> None:
    """A bystander subscribed to new heads: the emulator mines each block as it lands."""
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url) as ws:
        await ws.send_str(json.dumps(
            {"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["newHeads"]}
        ))
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ws.receive(), 0.5)


async def latency(url: str, client: EmulatorClient, args: Any, push: bool) -> dict[str, float]:
    client.reset()
    ws_url = url.replace("http://", "ws://") + "/rpc"
    stop = asyncio.Event()
    bystander = asyncio.ensure_future(heads(ws_url, stop))
    start = 3.0  # connect and read every task first
    groups = 10
    ids = create_groups(client, args.tasks, start=start, period=args.period)
    policy = PollPolicy(interval=args.interval, jitter=0.0, reconcile_interval=60.0)
    backend = IExecBackend(url + "/rpc", HUB_ADDRESS, policy=policy,
                           ws_url=ws_url if push else None)
    received: dict[str, float] = {}
    subs = [
        backend.observe(i).subscribe(
            lambda e: received.__setitem__(e.task_id, time.time())
            if e.native_status == "REVEALING" else None
        )
        for i in ids
    ]
    size = max(1, int(args.tasks * GROUP_SHARE))
    expected = min(len(ids), groups * size)
    deadline = time.monotonic() + start + groups * args.period + 2 * args.interval + 5
    while len(received) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    for sub in subs:
        sub.dispose()
    await backend.aclose()
    stop.set()
    await bystander
    chain = httpx.get(url + "/_chain").json()
    logs = httpx.post(url + "/rpc", json={
        "jsonrpc": "2.0", "id": 1, "method": "eth_getLogs",
        "params": [{"fromBlock": "0x0", "topics": [CONSENSUS]}],
    }).json()["result"]
    landed = {
        log["topics"][1]: chain["landed_at"]
        - (chain["head"] - int(log["blockNumber"], 16)) * chain["block_time"]
        for log in logs
    }
    delays = sorted(1000 * (received[i] - landed[i]) for i in received if i in landed)
    return {
        "p50": statistics.median(delays),
        "p99": delays[min(len(delays) - 1, int(0.99 * len(delays)))],
        "count": len(delays),
    }


async def run(args: Any) -> None:
    proc, base = start_emulator()
    try:
        with EmulatorClient(base) as client:
            url = client.api_url("iexec")
            httpx.post(url + "/_chain", json={"block_time": args.block_time})
            per_task = await rounds(url, client, args, logs=False)
            with_logs = await rounds(url, client, args, logs=True)
            hub_per_task = await hub_rounds(url, client, args, logs=False)
            hub_logs = await hub_rounds(url, client, args, logs=True)
            polls = await latency(url, client, args, push=False)
            push = await latency(url, client, args, push=True)
    finally:
        proc.terminate()
        proc.wait()
    print(f"iExec, {args.tasks} watched tasks, 5 % changing per round, {args.rounds} rounds "
          f"{args.period} s apart, blocks every {args.block_time} s")
    print(f"  {'per round':24} {'per-task reads':>15} {'logs':>10} {'ratio':>8}")
    print(f"  {'HTTP POSTs (mean)':24} {per_task['posts']:>15.1f} {with_logs['posts']:>10.1f} "
          f"{per_task['posts'] / with_logs['posts']:>7.1f}x")
    print(f"  {'HTTP POSTs (max)':24} {per_task['posts_max']:>15.0f} "
          f"{with_logs['posts_max']:>10.0f}")
    print(f"  {'client CPU, ms':24} {per_task['cpu_ms']:>15.2f} {with_logs['cpu_ms']:>10.2f} "
          f"{per_task['cpu_ms'] / with_logs['cpu_ms']:>7.1f}x")
    print(f"  {'tasks changed':24} {per_task['changed']:>15.1f} {with_logs['changed']:>10.1f}")
    print(f"  through the hub (observe): per poll period, over a steady {args.window} s window")
    print(f"  {'HTTP POSTs':24} {hub_per_task['posts']:>15.1f} {hub_logs['posts']:>10.1f}")
    print(f"  {'client CPU, ms':24} {hub_per_task['cpu_ms']:>15.2f} {hub_logs['cpu_ms']:>10.2f} "
          f"{hub_per_task['cpu_ms'] / hub_logs['cpu_ms']:>7.1f}x")
    print(f"  {'events':24} {hub_per_task['events']:>15.1f} {hub_logs['events']:>10.1f}")
    print(f"  {'delivery after the block':24} {'polls':>15} {'push':>10} {'ratio':>8}")
    print(f"  {'  (polls every':24} {str(args.interval) + ' s)':>15}")
    for name in ("p50", "p99"):
        print(f"  {name + ', ms':24} {polls[name]:>15.1f} {push[name]:>10.1f} "
              f"{polls[name] / max(push[name], 0.001):>7.1f}x")
    print(f"  {'changes measured':24} {polls['count']:>15.0f} {push['count']:>10.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--period", type=float, default=0.5, help="seconds between rounds")
    parser.add_argument("--block-time", type=float, default=0.1)
    parser.add_argument("--window", type=float, default=5.0, help="seconds measured (hub)")
    parser.add_argument("--interval", type=float, default=1.0, help="poll interval (latency)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
