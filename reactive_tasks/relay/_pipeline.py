"""Coalesces the Redis work of many concurrent coroutines into one round trip per loop turn.

A relay watching thousands of tasks publishes thousands of events per poll round; a round trip
(and redis-py's per-command overhead) for each would leave its loop busy with Redis instead of
polling.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

__all__ = ["Batcher", "Command", "commands"]

T = TypeVar("T")
_MAX_BATCH = 500


class Batcher(Generic[T]):
    """Queues items from any coroutine of one loop; ``send`` handles all queued ones at once
    and returns one result (or exception) per item."""

    def __init__(self, send: Callable[[list[T]], Awaitable[list[Any]]]) -> None:
        self._send = send
        self._queue: list[tuple[T, asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> Any:
        """Queue ``item`` and await its own result."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush())
        return await future

    async def _flush(self) -> None:
        # Started with ensure_future, this runs a loop turn after the first submit: whatever the
        # coroutines woken in that turn queued goes out together.
        while self._queue:
            batch, self._queue = self._queue[:_MAX_BATCH], self._queue[_MAX_BATCH:]
            # A submitter cancelled meanwhile (a watch whose lease was lost) sends nothing.
            batch = [(item, future) for item, future in batch if not future.done()]
            if not batch:
                continue
            try:
                results = await self._send([item for item, _ in batch])
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
        """Stop sending; whatever is still queued is cancelled."""
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        for _, future in self._queue:
            future.cancel()
        self._queue.clear()


Command = Callable[[Pipeline], Any]


def commands(redis: aioredis.Redis) -> Batcher[Command]:
    """Commands (each puts itself on a pipeline) sent in one pipeline."""

    async def send(batch: list[Command]) -> list[Any]:
        async with redis.pipeline(transaction=False) as pipe:
            for add in batch:
                add(pipe)
            results: list[Any] = await pipe.execute(raise_on_error=False)
            return results

    return Batcher(send)
