"""Helpers the benchmarks share: the raw-aiohttp polling floor, RSS, percentiles, a summary."""

from __future__ import annotations

import asyncio
import os
import statistics
from collections.abc import Sequence

import aiohttp


async def aiohttp_floor(base: str, ids: list[str], cap: int, pause: float = 0.05) -> int:
    """Poll CloudCoin tasks with raw aiohttp (JSON-decoded) until each stops running, under a
    concurrency cap of ``cap``: the floor for Python HTTP polling. Returns the polls made."""
    limiter = asyncio.Semaphore(cap)
    polls = 0
    connector = aiohttp.TCPConnector(limit=cap)
    async with aiohttp.ClientSession(base + "/", connector=connector) as session:

        async def one(task_id: str) -> bool:
            async with limiter, session.get(f"api/v1/task/{task_id}") as response:
                body = await response.json()
            return bool(body["payload"]["status"] != "running")

        pending = list(ids)
        while pending:
            done = await asyncio.gather(*(one(i) for i in pending))
            polls += len(pending)
            pending = [i for i, finished in zip(pending, done, strict=True) if not finished]
            await asyncio.sleep(pause)
    return polls


def rss() -> int:
    """This process's resident set size in bytes."""
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values`` by nearest rank; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    """Min, median and max of several runs, leaving out runs without a figure (NaN)."""
    known = [v for v in values if v == v]
    if not known:
        return (float("nan"),) * 3
    return min(known), statistics.median(known), max(known)
