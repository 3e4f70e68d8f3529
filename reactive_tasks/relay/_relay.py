"""Relay: one watcher process of a fleet; owns tasks under leases and publishes their events."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .._errors import ConfigurationError, InvalidTaskId, ReactiveTasksError
from .._models import TaskEvent
from .._runtime import reraise_if_cancelling
from ..backends import Backend, Reading
from . import _scripts
from ._catalogue import check_name, event_model
from ._leases import Lease, Renewer
from ._ordered import LeaseLost, OrderedPublisher
from ._pipeline import commands
from ._publisher import Publisher
from ._records import (
    GROUP,
    TaskKeys,
    decode_record,
    request_stream,
)

__all__ = ["Relay", "check_redis_url"]

_log = logging.getLogger("reactive_tasks.relay")
_CONNECTION_ERRORS = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)
_READ_BATCH = 64
_CLAIM_BATCH = 100
#: Redis connections of one relay; writes beyond it wait their turn instead of failing.
_MAX_CONNECTIONS = 48


def check_redis_url(url: object) -> str:
    """``url`` if it names a Redis server, else ``ConfigurationError`` (never echoing it)."""
    if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigurationError("the Redis URL must start with redis://, rediss:// or unix://")
    return url


@dataclass
class _Watch:
    backend: str
    keys: TaskKeys
    entry: str
    token: str
    task: asyncio.Task[None] | None = None
    out: OrderedPublisher | None = None


def _entry_of(holder: bytes) -> str:
    """The request entry a lease token (``name|entry|nonce``) was taken for."""
    parts = holder.decode(errors="replace").rsplit("|", 2)
    return parts[1] if len(parts) == 3 else ""


class Relay:
    """Takes watch requests from Redis, watches each task with a backend, publishes its events.

    ``backends`` maps backend names (``"cloudcoin"``...) to configured backends. A task is owned
    by one relay at a time under a lease of ``lease`` seconds, renewed every quarter of it from a
    thread of its own (a busy loop cannot starve it; a loop hung for three leases lets them
    lapse); when a relay dies, another takes its tasks over once the lease has run out (it
    looks every tenth of a lease) and continues their sequence numbers. Final records (a
    terminal event, or an error) expire after ``retention`` seconds (errors after at most
    ``lease``, so that a new observation soon tries again); a task's stream keeps about
    ``max_events`` entries.
    """

    def __init__(
        self,
        redis_url: str,
        backends: Mapping[str, Backend[Any]],
        *,
        lease: float = 10.0,
        name: str | None = None,
        retention: float = 3600.0,
        max_events: int = 1000,
    ) -> None:
        self._url = check_redis_url(redis_url)
        if not backends:
            raise ConfigurationError("a relay needs at least one backend")
        for key, backend in backends.items():
            check_name(key)
            if not isinstance(backend, Backend) or backend.name != key:
                raise ConfigurationError(f"backends[{key!r}] must be a {key} backend")
        if not lease > 0 or not retention > 0 or max_events < 1:
            raise ConfigurationError("lease and retention must be positive, max_events >= 1")
        self.backends = dict(backends)
        self.lease = float(lease)
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.retention = float(retention)
        self.max_events = max_events
        self._watches: dict[TaskKeys, _Watch] = {}
        # Claimed entries whose holder's lease has not run out yet: entry -> (backend, fields,
        # since); retried at each takeover round, forgotten if the holder turns out alive.
        self._waiting: dict[str, tuple[str, Mapping[bytes, bytes], float]] = {}
        self._redis: aioredis.Redis | None = None
        self._leases: Renewer | None = None

    def __repr__(self) -> str:
        return f"Relay(name={self.name!r}, backends={sorted(self.backends)}, lease={self.lease})"

    @property
    def watching(self) -> int:
        """How many tasks this relay watches now."""
        return len(self._watches)

    # -- running -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until cancelled; on the way out, hand every owned task back at once."""
        self._redis = aioredis.from_url(
            self._url, client_name="reactive-tasks-relay", max_connections=_MAX_CONNECTIONS
        )
        self._batch = commands(self._redis)
        self._publishes = Publisher(self._url, asyncio.get_running_loop())
        self._leases = Renewer(self._url, self.name, self.lease, self._lost,
                               asyncio.get_running_loop())
        self._leases.start()
        loops = [asyncio.ensure_future(self._take_requests(b)) for b in self.backends]
        loops += [asyncio.ensure_future(self._claim()), asyncio.ensure_future(self._heartbeat())]
        try:
            await asyncio.gather(*loops)
        finally:
            await _stop_all(loops)
            await self._leases.stop()
            await self._hand_back()
            await self._batch.aclose()
            await self._publishes.aclose()
            await self._redis.aclose()
            self._redis = None

    async def _take_requests(self, backend: str) -> None:
        """Read new watch requests for ``backend`` from its stream, as one consumer of the group."""
        assert self._redis is not None
        stream = request_stream(backend)
        pause = 0.05
        while True:
            try:
                with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists already
                    await self._redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
                while True:
                    answer: Any = await self._redis.xreadgroup(
                        GROUP, self.name, {stream: ">"}, count=_READ_BATCH, block=1000
                    )
                    pause = 0.05
                    for _, entries in answer or ():
                        await asyncio.gather(
                            *(self._offer(backend, e.decode(), f) for e, f in entries)
                        )
            except (*_CONNECTION_ERRORS, ResponseError) as exc:  # NOGROUP after a data loss
                reraise_if_cancelling()
                _log.warning("relay %s: request stream %s: %s", self.name, stream, exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)

    async def _offer(self, backend: str, entry: str, fields: Mapping[bytes, bytes]) -> None:
        """Take the task of a request entry under lease, or acknowledge the entry as redundant."""
        assert self._redis is not None and self._leases is not None
        try:
            keys = TaskKeys.from_request(backend, fields)
        except (KeyError, ValueError, UnicodeDecodeError):
            _log.warning("relay %s: malformed watch request %s dropped", self.name, entry)
            await self._ack(backend, entry)
            return
        mine = self._watches.get(keys)
        if mine is not None and mine.entry == entry:
            return
        # Unique per acquisition: a stale holder's writes can never pass for a later one's.
        token = f"{self.name}|{entry}|{uuid.uuid4().hex[:12]}"
        lease = Lease(keys, entry, token)
        self._leases.add(lease)  # renewed from now on, however late this loop comes back
        lease_ms = int(self.lease * 1000)
        try:
            holder = await self._batch.submit(lambda pipe: pipe.eval(
                _scripts.ACQUIRE, 2, keys.owner, keys.latest, token, lease_ms
            ))
        except BaseException:
            self._leases.discard(token)
            raise
        if holder != 1:
            self._leases.discard(token)
            if isinstance(holder, bytes) and _entry_of(holder) == entry:
                since = self._waiting.get(entry, (backend, fields, time.monotonic()))[2]
                if time.monotonic() - since < 2 * self.lease:
                    self._waiting[entry] = (backend, fields, since)
                else:  # it keeps renewing: alive after all (and it claims its entry back)
                    del self._waiting[entry]
            else:
                self._waiting.pop(entry, None)
                await self._ack(backend, entry)
            return
        self._leases.confirm(lease)
        self._waiting.pop(entry, None)
        _log.debug("relay %s: watching %s %s", self.name, backend,
                   self.backends[backend].display_id(keys.task_id))
        watch = _Watch(backend, keys, entry, token)
        if mine is not None and mine.task is not None:
            mine.task.cancel()  # its lease is gone (Redis lost it); this request replaces it
        self._watches[keys] = watch
        watch.task = asyncio.ensure_future(self._watch(watch))

    async def _watch(self, watch: _Watch) -> None:
        """Observe one task with its backend and publish each event, continuing its sequence."""
        assert self._redis is not None
        keys = watch.keys
        out: OrderedPublisher | None = None
        try:
            raw = await self._batch.submit(lambda pipe: pipe.get(keys.latest))
            last = None if raw is None else decode_record(raw, event_model(watch.backend))
            if last is not None and last.final:
                await self._finish(watch)
                return
            backend = self.backends[watch.backend]
            out = watch.out = OrderedPublisher(
                self._publishes, keys, watch.token,
                sequence=0 if last is None else last.sequence + 1,
                repeat=None if last is None or last.event is None else _change(backend, last.event),
                change=lambda event: _change(backend, event), max_events=self.max_events,
                retention=self.retention, error_retention=min(self.retention, self.lease),
            )
            try:
                observe: Any = backend.observe  # identity keywords differ by backend
                observable = observe(keys.task_id, **dict(keys.identity))
            except TypeError:
                out.on_error(InvalidTaskId(f"{watch.backend} takes no such identity"))
            except ReactiveTasksError as exc:
                out.on_error(exc)
            else:
                out.observe(observable)
            await out.done
            await self._finish(watch)
        except LeaseLost:
            _log.info("relay %s: lost the lease of %s", self.name, keys.tag)
        except (RedisError, *_CONNECTION_ERRORS) as exc:  # the lease runs out; another relay
            _log.warning("relay %s: gave up %s: %s", self.name, keys.tag, exc)  # takes over
        except Exception:  # never expected; the lease runs out and another relay tries
            _log.exception("relay %s: watching %s failed", self.name, keys.tag)
        finally:
            if out is not None:
                out.close()
            if self._watches.get(keys) is watch:
                del self._watches[keys]
            if self._leases is not None:
                self._leases.discard(watch.token)

    def _lost(self, lease: Lease) -> None:
        """The renewer found ``lease`` held by another (or gone): stop watching its task now."""
        watch = self._watches.get(lease.keys)
        if watch is not None and watch.token == lease.token and not (
            watch.out is not None and watch.out.finished  # (the final record ends the lease)
        ):
            _log.info("relay %s: lease of %s lost", self.name, lease.keys.tag)
            del self._watches[lease.keys]
            if watch.task is not None:
                watch.task.cancel()

    async def _finish(self, watch: _Watch) -> None:
        """The task needs no more watching: drop the lease and acknowledge its request."""
        owner, token = watch.keys.owner, watch.token
        await self._batch.submit(lambda pipe: pipe.eval(_scripts.RELEASE, 1, owner, token))
        await self._ack(watch.backend, watch.entry)

    async def _ack(self, backend: str, entry: str) -> None:
        await self._batch.submit(lambda pipe: pipe.xack(request_stream(backend), GROUP, entry))

    # -- leases (renewed by ._leases.Renewer) ------------------------------------------------

    async def _heartbeat(self) -> None:
        """Tell the renewer, every tenth of a lease, that this loop still turns."""
        assert self._leases is not None
        while True:
            self._leases.beat()
            await asyncio.sleep(self.lease / 10)

    async def _claim(self) -> None:
        """Often (a tenth of a lease): take over tasks whose holder stopped renewing."""

        async def claim() -> None:
            for backend in self.backends:
                await self._take_over(backend)

        await self._every(self.lease / 10, claim, "takeover")

    async def _every(self, period: float, job: Callable[[], Awaitable[None]], what: str) -> None:
        next_at = time.monotonic()
        while True:
            next_at += period
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            try:
                await job()
            except (*_CONNECTION_ERRORS, ResponseError) as exc:
                reraise_if_cancelling()
                _log.warning("relay %s: %s failed: %s", self.name, what, exc)
                next_at = time.monotonic()

    async def _take_over(self, backend: str) -> None:
        assert self._redis is not None
        stream = request_stream(backend)
        for entry, (name, fields, _) in list(self._waiting.items()):
            if name == backend:
                await self._offer(backend, entry, fields)
        answer: Any = await self._redis.xautoclaim(
            stream, GROUP, self.name, int(self.lease * 1000), "0-0", count=_CLAIM_BATCH
        )
        for entry, fields in answer[1]:
            if fields:
                await self._offer(backend, entry.decode(), fields)

    async def _hand_back(self) -> None:
        """Release every lease and re-file its request, so another relay picks it up now."""
        watches = list(self._watches.values())
        for watch in watches:
            if watch.task is not None:
                watch.task.cancel()
        await asyncio.gather(*(w.task for w in watches if w.task), return_exceptions=True)
        if self._redis is None:
            return
        for watch in watches:
            with contextlib.suppress(RedisError, *_CONNECTION_ERRORS):
                released = await self._redis.eval(
                    _scripts.RELEASE, 1, watch.keys.owner, watch.token
                )
                if released == 1:
                    stream = request_stream(watch.backend)
                    await self._redis.xadd(stream, watch.keys.request())
                    await self._redis.xack(stream, GROUP, watch.entry)
        self._watches.clear()


async def _stop_all(jobs: list[asyncio.Task[None]]) -> None:
    """Cancel ``jobs`` until they have ended: a cancellation that lands as a client's own read
    timeout expires is taken for that timeout (and uncancelled) by Python 3.11's
    ``asyncio.timeout``, and a retry loop would go on; a second one ends it."""
    pending = set(jobs)
    while pending:
        for job in pending:
            job.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.5)
    await asyncio.gather(*jobs, return_exceptions=True)


def _change(backend: Backend[Any], event: TaskEvent[Any]) -> Hashable:
    """What tells two events apart for ``backend`` (its change key over the event's reading)."""
    reading = Reading(event.state, event.native_status, event.progress, event.message)
    return backend.change_key(event.snapshot, reading)

