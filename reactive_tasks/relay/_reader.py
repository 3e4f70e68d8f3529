"""RelayBackend: what an application process observes tasks through when relays watch them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import reactivex
import redis.asyncio as aioredis
from reactivex import Observable, abc
from reactivex.disposable import Disposable
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .._errors import BackendUnavailable, ConfigurationError, InvalidTaskId, ReactiveTasksError
from .._models import TaskEvent
from .._runtime import (
    background_loop_if_started,
    close_at_exit,
    current_or_background_loop,
    in_loop_thread,
    reraise_if_cancelling,
)
from ._catalogue import check_name, event_model, validator
from ._pipeline import Batcher, Command, commands
from ._records import Record, TaskKeys, decode_record, entry_id, request_stream, sequence_of
from ._relay import check_redis_url

__all__ = ["READER_CLIENT_NAME", "RelayBackend"]

#: The name readers' Redis connections carry (``CLIENT LIST`` shows it).
READER_CLIENT_NAME = "reactive-tasks-reader"
_log = logging.getLogger("reactive_tasks.relay")
_CONNECTION_ERRORS = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)
_REQUESTS_MAXLEN = 100_000
_READ_COUNT = 512
_BLOCK_MS = 5_000
#: Connections per process and loop.
MAX_CONNECTIONS = 32
#: Subscriptions starting at once: their reads go out together, one pipeline per loop turn.
_STARTS = 1024


def _id(text: str) -> tuple[int, int]:
    first, _, second = text.partition("-")
    return int(first), int(second or 0)


@dataclass(eq=False)
class _Sub:
    """One subscription: its task, the last sequence it was given, and its observer.

    While ``pending`` is a list, the subscription is catching up from its task's stream and
    the feed's records for it wait there, to follow in order.
    """

    keys: TaskKeys
    after: int | None
    observer: abc.ObserverBase[TaskEvent[Any]]
    seq: int = -1
    pending: list[Record] | None = field(default_factory=list)
    disposed: bool = False
    job: asyncio.Task[None] | None = field(default=None, repr=False)


class RelayBackend:
    """Observes tasks of backend ``backend`` (a name, e.g. ``"cloudcoin"``) through relays.

    Events are the relays' own (same fields, snapshot model and sequence numbers); this process
    needs no API credentials. ``unavailable_after`` is how long Redis may stay unreachable
    before an observation ends with ``BackendUnavailable``.
    """

    def __init__(self, redis_url: str, backend: str, *, unavailable_after: float = 10.0) -> None:
        self._url = check_redis_url(redis_url)
        self.name = check_name(backend)
        self._validator = validator(self.name)
        self._model = event_model(self.name)
        if not unavailable_after > 0:
            raise ConfigurationError("unavailable_after must be positive")
        self.unavailable_after = float(unavailable_after)
        self._hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Hub] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RelayBackend(backend={self.name!r})"

    def task_keys(self, task_id: str, **identity: str | None) -> TaskKeys:
        """Validate ``task_id`` (and identity) with the backend's own rules; the task's keys."""
        if "policy" in identity:
            raise ConfigurationError("relays poll under their own policy; policy= is not taken")
        try:
            check: Any = self._validator.observe  # identity keywords differ by backend
            check(task_id, **identity)  # cold: validates, starts nothing
        except TypeError:
            raise InvalidTaskId(
                f"a {self.name} task takes no identity {sorted(identity)}"
            ) from None
        canonical = self._validator.validate_task_id(task_id)
        extra = tuple(sorted((k, str(v)) for k, v in identity.items() if v is not None))
        return TaskKeys(self.name, canonical, extra)

    def observe(
        self, task_id: str, *, after: int | None = None, **identity: str | None
    ) -> Observable[TaskEvent[Any]]:
        """A cold Observable of the task's events; the latest first, or every one after ``after``.

        A bad id or identity raises ``InvalidTaskId`` here, before anything reaches Redis.
        """
        if after is not None and (isinstance(after, bool) or not isinstance(after, int)
                                  or after < -1):
            raise ConfigurationError("after must be a sequence number (or -1 for all)")
        keys = self.task_keys(task_id, **identity)

        def subscribe(
            observer: abc.ObserverBase[TaskEvent[Any]],
            scheduler: abc.SchedulerBase | None = None,
        ) -> abc.DisposableBase:
            loop = current_or_background_loop()
            sub = _Sub(keys, after, observer)
            hub = self._hub(loop)
            _on(loop, lambda: hub.add(sub))

            def dispose() -> None:
                sub.disposed = True
                _on(loop, lambda: hub.remove(sub))

            return Disposable(dispose)

        return reactivex.create(subscribe)

    async def status(self, task_id: str, **identity: str | None) -> TaskEvent[Any]:
        """The task's latest event (waiting for a relay's first one if there is none yet)."""
        loop = asyncio.get_running_loop()
        first: asyncio.Future[TaskEvent[Any]] = loop.create_future()

        def settle(fn: Callable[[], None]) -> None:
            if not first.done():
                fn()

        observe: Any = self.observe
        subscription = observe(task_id, **identity).subscribe(
            on_next=lambda e: _on(loop, lambda: settle(lambda: first.set_result(e))),
            on_error=lambda x: _on(loop, lambda: settle(lambda: first.set_exception(x))),
            on_completed=lambda: _on(loop, lambda: settle(lambda: first.set_exception(
                BackendUnavailable("the relay stream ended without an event", backend=self.name)
            ))),
        )
        try:
            return await first
        finally:
            subscription.dispose()

    async def aclose(self) -> None:
        """End this loop's observations of this backend and close their Redis connections."""
        await self.close_on_loop(asyncio.get_running_loop())

    async def close_on_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close what this backend holds on ``loop`` (run on that loop; used at exit)."""
        with self._lock:
            hub = self._hubs.pop(loop, None)
        if hub is not None:
            await hub.aclose()

    def _hub(self, loop: asyncio.AbstractEventLoop) -> _Hub:
        with self._lock:
            hub = self._hubs.get(loop)
            if hub is None:
                hub = self._hubs[loop] = _Hub(self, loop)
                if loop is background_loop_if_started():
                    close_at_exit(self)
            return hub


def _on(loop: asyncio.AbstractEventLoop, fn: Callable[[], None]) -> None:
    if in_loop_thread(loop):
        fn()
    elif not loop.is_closed():
        loop.call_soon_threadsafe(fn)


def _call(fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except Exception:
        _log.exception("a subscriber's callback raised; the observation goes on")


class _Hub:
    """Every observation of one RelayBackend on one loop, read from the feeds with one XREAD.

    Relays append each record to its task's stream and to one of a few feed streams. The hub
    follows the feeds its tasks fall in (a handful of keys, however many tasks) and hands each
    record to the subscriptions of its task; a subscription starts, or catches up after a gap,
    from the task's own stream. Used from its loop's thread only. It holds Redis connections
    only while it has subscriptions: the last one leaving closes them.
    """

    def __init__(self, owner: RelayBackend, loop: asyncio.AbstractEventLoop) -> None:
        self.owner = owner
        self.loop = loop
        self.subs: dict[TaskKeys, list[_Sub]] = {}
        self.tags: dict[bytes, TaskKeys] = {}
        self.cursors: dict[str, str] = {}  # feed -> id read up to
        self.feeds: Counter[str] = Counter()  # feed -> tasks of ours in it
        self.opening: dict[str, asyncio.Task[None]] = {}
        self.redis: aioredis.Redis | None = None
        self.reader: aioredis.Redis | None = None
        self.reader_id: int | None = None
        self.runner: asyncio.Task[None] | None = None
        self.waker: asyncio.Task[None] | None = None
        self.generation = 0
        self.reading_generation: int | None = None
        self.closing: set[asyncio.Task[None]] = set()
        self.jobs: set[asyncio.Task[None]] = set()
        self.starts = asyncio.Semaphore(_STARTS)
        self.batch: Batcher[Command] | None = None

    # -- membership ---------------------------------------------------------------------------

    def add(self, sub: _Sub) -> None:
        if sub.disposed:
            return
        if self.redis is None:
            url = self.owner._url
            self.redis = aioredis.from_url(
                url, client_name=READER_CLIENT_NAME, max_connections=MAX_CONNECTIONS
            )
            # (redis-py's default read timeout, 5 s, would cut every idle blocked XREAD short:
            # a reconnect and a check of every subscription each time)
            self.reader = aioredis.from_url(
                url, client_name=READER_CLIENT_NAME, single_connection_client=True,
                socket_timeout=_BLOCK_MS / 1000 + 10.0,
            )
            self.batch = commands(self.redis)
        # Member at once, its feed's records kept aside: none falls between replay and live.
        members = self.subs.setdefault(sub.keys, [])
        if not members:
            self.tags[sub.keys.tag.encode()] = sub.keys
            self.feeds[sub.keys.feed] += 1
        members.append(sub)
        sub.job = self.loop.create_task(self._start(sub))

    def remove(self, sub: _Sub) -> None:
        if sub.job is not None and not sub.job.done():
            sub.job.cancel()
        members = self.subs.get(sub.keys)
        if members is not None and sub in members:
            members.remove(sub)
            if not members:
                del self.subs[sub.keys]
                del self.tags[sub.keys.tag.encode()]
                feed = sub.keys.feed
                self.feeds[feed] -= 1
                if self.feeds[feed] <= 0:
                    del self.feeds[feed]
                    if self.cursors.pop(feed, None) is not None:  # no task of ours left there
                        self.generation += 1
        if not self.subs:
            self._shut()

    def _end(self, sub: _Sub, error: Exception | None = None) -> None:
        """Finish ``sub``: completion, or ``error``; it stops being read."""
        if sub.disposed:
            return
        sub.disposed = True
        self.remove(sub)
        if error is None:
            _call(sub.observer.on_completed)
        else:
            _call(sub.observer.on_error, error)

    def _shut(self) -> None:
        """No subscription left: stop reading and close the connections now."""
        runner, waker, redis, reader = self.runner, self.waker, self.redis, self.reader
        reader_id, batch = self.reader_id, self.batch
        self.runner = self.waker = self.redis = self.reader = self.batch = None
        self.reader_id = None
        self.cursors.clear()
        for opening in list(self.opening.values()):
            opening.cancel()
        self.opening.clear()
        self.feeds.clear()
        self.tags.clear()
        if waker is not None:
            waker.cancel()
        for job in self.jobs:
            job.cancel()

        async def close() -> None:
            if runner is not None:
                # Wake the blocked XREAD (the loop then sees no subscription and returns);
                # cancelling a blocked redis-py read alone may leave it waiting for its timeout.
                if redis is not None and reader_id is not None:
                    with contextlib.suppress(*_CONNECTION_ERRORS):
                        await redis.client_unblock(reader_id)
                _, pending = await asyncio.wait([runner], timeout=0.2)
                for job in pending:
                    job.cancel()
            jobs = [j for j in (runner, waker) if j is not None]
            await asyncio.gather(*jobs, return_exceptions=True)
            if batch is not None:
                await batch.aclose()
            for client in (reader, redis):
                if client is not None:
                    await client.aclose()

        task = self.loop.create_task(close())
        self.closing.add(task)
        task.add_done_callback(self.closing.discard)

    async def aclose(self) -> None:
        for sub in [s for subs in self.subs.values() for s in subs]:
            sub.disposed = True
            self.remove(sub)
        if self.closing:
            await asyncio.gather(*self.closing, return_exceptions=True)

    # -- one subscription's start, or catch-up ---------------------------------------------

    async def _start(self, sub: _Sub) -> None:
        """Replay what the subscription asked for, file a watch request if needed, then go live."""
        redis, batch = self.redis, self.batch
        try:
            async with self.starts:
                if sub.disposed or redis is None or batch is None:
                    return
                await self._open(sub.keys.feed, redis)
                records = await self._retrying(lambda: self._begin(sub, batch))
        except ReactiveTasksError as exc:
            self._end(sub, exc)
            return
        except Exception as exc:  # never a lost task exception; the subscriber hears of it
            self._end(sub, BackendUnavailable(f"relay read failed: {type(exc).__name__}",
                                              backend=self.owner.name))
            return
        if sub.disposed or redis is not self.redis:
            return
        latest, history = records
        if sub.after is None:
            if latest is not None:
                self._deliver(sub, latest)  # replayed first
            self._settle(sub, [])
            return
        sub.seq = sub.after
        if latest is not None and latest.final and latest.sequence <= sub.after:
            self._end(sub)
            return
        self._settle(sub, history)

    async def _open(self, feed: str, redis: aioredis.Redis) -> None:
        """Follow ``feed`` from its current end on, before any of its tasks is read."""
        if feed in self.cursors:
            return
        opening = self.opening.get(feed)
        if opening is None:
            opening = self.opening[feed] = self.loop.create_task(self._find_end(feed, redis))
            opening.add_done_callback(
                lambda job: self.opening.pop(feed) if self.opening.get(feed) is job else None
            )
        await asyncio.shield(opening)

    async def _find_end(self, feed: str, redis: aioredis.Redis) -> None:
        newest: Any = await self._retrying(lambda: redis.xrevrange(feed, count=1))
        if self.redis is redis and feed in self.feeds:
            self.cursors.setdefault(feed, newest[0][0].decode() if newest else "0-0")
            self.generation += 1
            self._ensure_running()

    async def _begin(
        self, sub: _Sub, batch: Batcher[Command]
    ) -> tuple[Record | None, list[Record]]:
        """The latest record, and the records after ``after``; files a request if needed.

        (Its reads join those of every subscription starting in the same loop turn.)
        """
        keys = sub.keys
        reads = [batch.submit(lambda pipe: pipe.get(keys.latest)),
                 batch.submit(lambda pipe: pipe.exists(keys.owner))]
        if sub.after is not None:
            after = f"({entry_id(sub.after)}"
            reads.append(batch.submit(lambda pipe: pipe.xrange(keys.events, min=after, max="+")))
        raw, owned, *history = await asyncio.gather(*reads)
        latest = None if raw is None else decode_record(raw, self.owner._model)
        records = [decode_record(f[b"d"], self.owner._model) for _, f in (history or [[]])[0]]
        if sub.disposed:  # (a redis-py read may finish despite a cancellation)
            return None, []
        if not owned and (latest is None or not latest.final):
            await batch.submit(lambda pipe: pipe.xadd(
                request_stream(keys.backend), keys.request(),
                maxlen=_REQUESTS_MAXLEN, approximate=True,
            ))
        return latest, records

    def _settle(self, sub: _Sub, records: list[Record]) -> None:
        """Deliver ``records`` read from the task's stream, then what the feed kept aside."""
        for record in records:
            if sub.disposed:
                return
            if record.sequence > sub.seq:
                self._deliver(sub, record)
        waiting, sub.pending = sub.pending or [], None
        for record in waiting:
            self._offer(sub, record)

    def _catch_up(self, sub: _Sub) -> None:
        """Records of ``sub`` went missing from the feed: read them from the task's stream."""
        if sub.pending is None:
            sub.pending = []

        async def catch_up() -> None:
            redis = self.redis
            if redis is None:
                return
            try:
                entries: Any = await self._retrying(lambda: redis.xrange(
                    sub.keys.events, min=f"({entry_id(sub.seq)}" if sub.seq >= 0 else "-"))
                records = [decode_record(f[b"d"], self.owner._model) for _, f in entries]
            except ReactiveTasksError as exc:
                self._end(sub, exc)
                return
            if not sub.disposed and redis is self.redis:
                self._settle(sub, records)

        job = self.loop.create_task(catch_up())
        self.jobs.add(job)
        job.add_done_callback(self.jobs.discard)

    async def _retrying(self, call: Callable[[], Any]) -> Any:
        """``call()``, retried through Redis outages up to ``unavailable_after`` seconds."""
        deadline = time.monotonic() + self.owner.unavailable_after
        pause = 0.05
        while True:
            try:
                return await call()
            except _CONNECTION_ERRORS as exc:
                reraise_if_cancelling()
                if time.monotonic() + pause > deadline:
                    raise BackendUnavailable(
                        f"Redis unreachable for {self.owner.unavailable_after:g} s",
                        backend=self.owner.name,
                    ) from exc
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)

    # -- reading ----------------------------------------------------------------------------

    def _deliver(self, sub: _Sub, record: Record) -> None:
        if record.error is not None:
            self._end(sub, record.error)
            return
        sub.seq = record.sequence
        _call(sub.observer.on_next, record.event)
        if record.final:
            self._end(sub)

    def _offer(self, sub: _Sub, record: Record) -> None:
        """A record from the feed: kept aside, delivered, or (after a gap) caught up to."""
        if sub.disposed or record.sequence <= sub.seq:
            return
        if sub.pending is not None:
            sub.pending.append(record)
        elif record.sequence > sub.seq + 1:
            sub.pending = [record]
            self._catch_up(sub)
        else:
            self._deliver(sub, record)

    def _ensure_running(self) -> None:
        reading = self.reading_generation
        if self.runner is None:
            self.runner = self.loop.create_task(self._run())
        elif reading is not None and reading < self.generation and (
            self.waker is None or self.waker.done()
        ):
            self.waker = self.loop.create_task(self._wake())

    async def _wake(self) -> None:
        """Interrupt the blocked XREAD so that it is issued again with the new feeds."""
        for _ in range(200):
            generation = self.reading_generation
            if generation is None or generation >= self.generation or self.redis is None:
                return
            if self.reader_id is not None:
                try:
                    if await self.redis.client_unblock(self.reader_id):
                        return
                except _CONNECTION_ERRORS:
                    reraise_if_cancelling()
                    return
            await asyncio.sleep(0.002)  # the XREAD was sent but is not blocking yet

    async def _run(self) -> None:
        """Read the feeds of every live subscription with one blocking XREAD, until none is left."""
        suspect = False
        down_since: float | None = None
        pause = 0.05
        reader = self.reader
        while self.subs and reader is not None and reader is self.reader:
            try:
                if self.reader_id is None:
                    self.reader_id = await reader.client_id()
                if suspect:
                    await self._verify()
                    suspect = False
                streams: dict[Any, Any] = dict(self.cursors)
                if not streams:
                    break  # (a feed opened later starts a runner again)
                self.reading_generation = self.generation
                try:
                    answer: Any = await reader.xread(streams, count=_READ_COUNT, block=_BLOCK_MS)
                finally:
                    self.reading_generation = None
                down_since, pause = None, 0.05
                if reader is not self.reader:
                    return
            except _CONNECTION_ERRORS as exc:
                reraise_if_cancelling()
                self.reader_id = None
                suspect = True
                now = time.monotonic()
                down_since = down_since or now
                if now - down_since > self.owner.unavailable_after:
                    self._fail_all(exc)
                    return
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)
                continue
            for stream, entries in answer or ():
                feed = stream.decode()
                if feed not in self.cursors or not entries:
                    continue
                behind = len(entries) >= _READ_COUNT
                start = self.cursors[feed]
                self.cursors[feed] = entries[-1][0].decode()
                self._dispatch(entries)
                if behind:
                    await self._check_trimmed(feed, start)
        if self.reader is reader:
            self.runner = None

    def _dispatch(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        """Hand each feed record to its task's subscriptions (records of others are skipped)."""
        for _, fields in entries:
            keys = self.tags.get(fields.get(b"t", b""))
            if keys is None:
                continue
            try:
                record = decode_record(fields[b"d"], self.owner._model)
            except (ReactiveTasksError, KeyError):
                for sub in list(self.subs.get(keys, ())):
                    self._end(sub, BackendUnavailable("a relay record does not validate",
                                                      backend=keys.backend))
                continue
            for sub in list(self.subs.get(keys, ())):
                self._offer(sub, record)

    async def _check_trimmed(self, feed: str, start: str) -> None:
        """Far behind: if the feed dropped records past ``start``, catch up every task of it."""
        assert self.redis is not None
        info: Any = await self.redis.xinfo_stream(feed)
        first = info.get("first-entry")  # (trimming leaves no other trace)
        if first and _id(_text(first[0])) > _id(start):
            for keys, subs in list(self.subs.items()):
                if keys.feed == feed:
                    for sub in subs:
                        if sub.pending is None:
                            self._catch_up(sub)

    async def _verify(self) -> None:
        """After a reconnect: end observations whose history Redis lost, re-file lost requests."""
        assert self.redis is not None
        subs = [s for members in self.subs.values() for s in members]
        async with self.redis.pipeline(transaction=False) as pipe:
            for sub in subs:
                pipe.xrevrange(sub.keys.events, count=1)
                pipe.exists(sub.keys.owner)
            answers = await pipe.execute()
        for i, sub in enumerate(subs):
            newest, owned = answers[2 * i], answers[2 * i + 1]
            if sub.seq >= 0 and (not newest or sequence_of(newest[0][0]) < sub.seq):
                self._end(sub, BackendUnavailable(
                    "the relay's record of this task is gone (Redis lost its data)",
                    backend=sub.keys.backend, task_id=self.owner._validator.display_id(
                        sub.keys.task_id),
                ))
            elif not owned and not newest:
                await self.redis.xadd(request_stream(sub.keys.backend), sub.keys.request(),
                                      maxlen=_REQUESTS_MAXLEN, approximate=True)
            elif newest and sequence_of(newest[0][0]) > sub.seq and sub.pending is None:
                self._catch_up(sub)  # published while this reader was away

    def _fail_all(self, cause: BaseException) -> None:
        error = BackendUnavailable(
            f"Redis unreachable for {self.owner.unavailable_after:g} s", backend=self.owner.name
        )
        error.__cause__ = cause
        for sub in [s for members in self.subs.values() for s in members]:
            self._end(sub, error)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
