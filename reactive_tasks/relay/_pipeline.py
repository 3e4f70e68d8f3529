"""Batches the Redis commands of many concurrent coroutines into one pipelined round trip.

A relay watching thousands of tasks publishes thousands of events per poll round; one round trip
each would leave its loop waiting on the network instead of polling.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

__all__ = ["Batcher"]

_MAX_BATCH = 1000


class Batcher:
    """Queues commands from any coroutine of one loop; sends what is queued in one pipeline."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._queue: list[tuple[Callable[[Pipeline], Any], asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def call(self, add: Callable[[Pipeline], Any]) -> Any:
        """Queue one command (``add`` puts it on a pipeline) and await its own result."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((add, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush())
        return await future

    async def script(self, source: str, keys: list[str], args: list[Any]) -> Any:
        """Run a Lua script in the next batch."""
        return await self.call(lambda pipe: pipe.eval(source, len(keys), *keys, *args))

    async def _flush(self) -> None:
        while self._queue:
            await asyncio.sleep(0)  # let the coroutines woken with this one queue theirs too
            batch, self._queue = self._queue[:_MAX_BATCH], self._queue[_MAX_BATCH:]
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for add, _ in batch:
                        add(pipe)
                    results = await pipe.execute(raise_on_error=False)
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    async def aclose(self) -> None:
        """Stop sending; whatever is still queued fails with ``CancelledError``."""
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        for _, future in self._queue:
            future.cancel()
        self._queue.clear()
