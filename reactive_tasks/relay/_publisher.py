"""Publishes a relay's records from a thread of its own, as soon as they are queued.

A relay's loop handles a whole poll round's answers in bursts (thousands of tasks); a publish
sent and answered on that loop waits for the burst to be processed before the next one goes
out, which is most of the delay between a change and its readers. The publisher's thread sends
whatever is queued in one script call on its own Redis connection and tells the loop the results.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from typing import Any

import redis
from redis.exceptions import RedisError

from . import _scripts
from ._records import FEED_LENGTH

__all__ = ["Publish", "Publisher"]

_log = logging.getLogger("reactive_tasks.relay")
_MAX_BATCH = 500
#: One record to publish: (owner, events, latest, feed) keys and (token, id, record, maxlen,
#: expiry, tag).
Publish = tuple[tuple[str, str, str, str], tuple[Any, ...]]
_Queued = tuple[Publish, "asyncio.Future[Any]"]


class Publisher:
    """``await submit(record)`` is PUBLISH_MANY's result for it (or the error that stopped it)."""

    def __init__(self, url: str, loop: asyncio.AbstractEventLoop) -> None:
        self._url = url
        self._loop = loop
        self._queue: queue.SimpleQueue[_Queued | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="relay-publisher", daemon=True)
        self._thread.start()

    def enqueue(self, item: Publish) -> asyncio.Future[Any]:
        """Queue ``item`` now (from the loop's thread); the future gets its result."""
        future: asyncio.Future[Any] = self._loop.create_future()
        self._queue.put((item, future))
        return future

    async def submit(self, item: Publish) -> Any:
        return await self.enqueue(item)

    async def aclose(self) -> None:
        """Stop the thread; whatever was not sent yet is cancelled."""
        self._queue.put(None)
        await asyncio.to_thread(self._thread.join)
        while True:
            try:
                queued = self._queue.get_nowait()
            except queue.Empty:
                return
            if queued is not None:
                queued[1].cancel()

    def _run(self) -> None:
        client = redis.Redis.from_url(
            self._url, client_name="reactive-tasks-relay-publisher", socket_timeout=10.0,
            socket_connect_timeout=5.0,
        )
        script = client.register_script(_scripts.PUBLISH_MANY)
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                batch = [first]
                stop = False
                while len(batch) < _MAX_BATCH:
                    try:
                        queued = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if queued is None:
                        stop = True
                        break
                    batch.append(queued)
                # A submitter cancelled meanwhile (a watch whose lease was lost) sends nothing.
                batch = [(item, future) for item, future in batch if not future.done()]
                if batch:
                    self._send(client, script, batch)
                if stop:
                    return
        finally:
            client.close()

    def _send(self, client: redis.Redis, script: Any, batch: list[_Queued]) -> None:
        keys = [key for (keys, _), _ in batch for key in keys]
        args = [arg for (_, values), _ in batch for arg in values]
        try:
            results: list[Any] = script(keys=keys, args=[FEED_LENGTH, *args], client=client)
        except (RedisError, OSError) as exc:
            self._tell([(future, exc) for _, future in batch])
            return
        except Exception as exc:  # never a publish left unanswered
            _log.exception("relay publisher: unexpected failure")
            self._tell([(future, exc) for _, future in batch])
            return
        self._tell([(future, result) for (_, future), result in zip(batch, results, strict=True)])

    def _tell(self, outcomes: list[tuple[asyncio.Future[Any], Any]]) -> None:
        def settle() -> None:
            for future, outcome in outcomes:
                if future.done():
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

        if not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed meanwhile
                self._loop.call_soon_threadsafe(settle)
