"""One watched task's events, published in order the moment the engine emits them.

The engine's callbacks queue each record for the publisher thread at once (no coroutine hop
behind the rest of a poll round's answers); a record goes out only after the one before it is
written, so a retry after a Redis outage can never land after a later record.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any

from reactivex import abc
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .._errors import ReactiveTasksError
from .._models import TaskEvent
from .._runtime import in_loop_thread
from ._publisher import Publisher
from ._records import TaskKeys, entry_id, error_record, event_record

__all__ = ["LeaseLost", "OrderedPublisher"]

_log = logging.getLogger("reactive_tasks.relay")
_CONNECTION_ERRORS = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


class LeaseLost(Exception):
    """Another relay holds the task now (or Redis lost it): stop without acknowledging."""


class OrderedPublisher:
    """Turns one observation's events into records ``sequence``, ``sequence + 1``... in Redis.

    ``done`` resolves once the final record (terminal event or error) is written, or fails
    with ``LeaseLost``. ``repeat`` is the change key of the record published last by a previous
    holder: an event equal to it is that same state and is skipped.
    """

    def __init__(
        self, publisher: Publisher, keys: TaskKeys, token: str, *, sequence: int,
        repeat: Hashable | None, change: Callable[[TaskEvent[Any]], Hashable],
        max_events: int, retention: float, error_retention: float,
    ) -> None:
        self._publisher = publisher
        self._keys = keys
        self._token = token
        self._sequence = sequence
        self._repeat = repeat
        self._change = change
        self._max_events = max_events
        self._retention = retention
        self._error_retention = error_retention
        self._loop = asyncio.get_running_loop()
        self._backlog: deque[tuple[int, str, float]] = deque()
        self._sending = False
        self._ended = False
        self._pause = 0.05
        self._retry: asyncio.TimerHandle | None = None
        self.subscription: abc.DisposableBase | None = None
        self.finished = False  # the final record is written
        self.done: asyncio.Future[None] = self._loop.create_future()

    # -- the observation's callbacks (on the loop's thread) -------------------------------

    def observe(self, observable: Any) -> None:
        self.subscription = observable.subscribe(
            on_next=self._here(self.on_next), on_error=self._here(self.on_error),
            on_completed=self._here(self.on_completed),
        )

    def _here(self, fn: Callable[..., None]) -> Callable[..., None]:
        def call(*args: Any) -> None:
            if in_loop_thread(self._loop):
                fn(*args)
            elif not self._loop.is_closed():
                self._loop.call_soon_threadsafe(fn, *args)

        return call

    def on_next(self, event: TaskEvent[Any]) -> None:
        if self._ended or self.done.done():
            return
        if self._repeat is not None and self._change(event) == self._repeat:
            self._repeat = None  # the state the previous holder published last
            return
        self._repeat = None
        stamped = event.model_copy(update={"sequence": self._sequence})
        if stamped.terminal:
            self._ended = True
        self._queue(event_record(stamped), self._retention if stamped.terminal else 0.0)

    def on_error(self, error: Exception) -> None:
        if self._ended or self.done.done():
            return
        self._ended = True
        if isinstance(error, ReactiveTasksError):
            self._queue(error_record(error, self._sequence), self._error_retention)
        else:
            self._fail(error)

    def on_completed(self) -> None:
        self._ended = True
        self._check_end()

    def close(self) -> None:
        """Stop observing and publishing (a lost lease, or the relay stopping)."""
        if self.subscription is not None:
            self.subscription.dispose()
        if self._retry is not None:
            self._retry.cancel()
        if not self.done.done():
            self.done.cancel()

    # -- publishing, one record at a time -------------------------------------------------

    def _queue(self, record: str, expiry: float) -> None:
        self._backlog.append((self._sequence, record, expiry))
        self._sequence += 1
        self._send()

    def _send(self) -> None:
        self._retry = None
        if self._sending or self.done.done():
            return
        if not self._backlog:
            self._check_end()
            return
        sequence, record, expiry = self._backlog[0]
        keys = self._keys
        self._sending = True
        future = self._publisher.enqueue((
            (keys.owner, keys.events, keys.latest, keys.feed),
            (self._token, entry_id(sequence), record, self._max_events, int(expiry * 1000),
             keys.tag),
        ))
        future.add_done_callback(self._sent)

    def _sent(self, future: asyncio.Future[Any]) -> None:
        self._sending = False
        if self.done.done() or future.cancelled():
            return
        error = future.exception()
        if error is None:
            if future.result() != 1:  # 0: the lease is another's; -1: that number is taken
                self._fail(LeaseLost())
                return
            self._pause = 0.05
            _, _, expiry = self._backlog.popleft()
            if expiry > 0:
                self.finished = True
            self._send()
        elif isinstance(error, ResponseError):  # a refused script: never expected
            _log.warning("relay: publishing %s failed: %s", self._keys.tag, error)
            self._fail(LeaseLost())
        elif isinstance(error, _CONNECTION_ERRORS):  # Redis away: the same record again
            self._retry = self._loop.call_later(self._pause, self._send)
            self._pause = min(self._pause * 2, 1.0)
        else:
            self._fail(error)

    def _check_end(self) -> None:
        if self._ended and not self._backlog and not self._sending and not self.done.done():
            self.done.set_result(None)

    def _fail(self, error: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(error)
