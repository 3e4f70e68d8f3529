"""Processes for the relay tests and benchmark: ``relay`` serves, ``app`` observes and reports.

    python tests/relay_procs.py relay REDIS_URL CLOUDCOIN_URL NAME INTERVAL LEASE
    python tests/relay_procs.py app REDIS_URL < task ids, one a line

A relay prints ``ready`` once serving. An app observes every task with ``after=-1`` and prints
one JSON line per event ``[task, sequence, state, progress, observed_at, received_at]``, then
``done``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time

from reactive_tasks import PollPolicy, ReactiveTasksError, aiter
from reactive_tasks.backends import CloudCoinBackend
from reactive_tasks.relay import Relay, RelayBackend


async def relay(redis_url: str, api_url: str, name: str, interval: str, lease: str) -> None:
    logging.basicConfig(stream=sys.stderr, format="%(message)s")
    logging.getLogger("reactive_tasks.relay").setLevel(logging.DEBUG)
    policy = PollPolicy(interval=float(interval), jitter=0.0)
    async with CloudCoinBackend(api_url, policy=policy) as backend:
        server = Relay(redis_url, {"cloudcoin": backend}, lease=float(lease), name=name)
        job = asyncio.ensure_future(server.run())
        print("ready", flush=True)
        await job


async def app(redis_url: str, after: str = "-1") -> None:
    tasks = [line.strip() for line in sys.stdin if line.strip()]
    reader = RelayBackend(redis_url, "cloudcoin")
    lines: list[str] = []

    async def one(task: str) -> None:
        try:
            async for e in aiter(reader.observe(task, after=int(after))):
                lines.append(json.dumps([task, e.sequence, e.state.value, e.progress,
                                         e.observed_at.timestamp(), time.time()]))
        except ReactiveTasksError as exc:
            lines.append(json.dumps([task, "error", type(exc).__name__]))

    print("ready", flush=True)
    await asyncio.gather(*(one(t) for t in tasks))
    await reader.aclose()
    sys.stdout.write("\n".join(lines) + "\ndone\n")


if __name__ == "__main__":
    command, *rest = sys.argv[1:]
    asyncio.run(relay(*rest) if command == "relay" else app(*rest))
