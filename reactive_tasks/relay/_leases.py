"""A relay's leases, renewed from a thread of their own so that a busy event loop cannot lose them.

A relay's loop polls and publishes thousands of tasks; under CPU load its timers run late, and
renewals queued behind that work let leases lapse while the relay still watches their tasks. The
renewer runs in its own thread with its own Redis connection; it gives the leases up only when
the loop has not turned for ``3 * lease`` seconds (hung, not merely busy). A lease it finds lost
is reported to the loop, which stops watching that task; the publish script refuses the
holder's writes from then on anyway (it checks the token, unique per acquisition).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from redis.exceptions import RedisError

from . import _scripts
from ._records import GROUP, TaskKeys, request_stream

__all__ = ["Lease", "Renewer"]

_log = logging.getLogger("reactive_tasks.relay")
#: Leases renewed by one script call.
_CHUNK = 500
#: A loop that has not turned for this many leases is hung: its leases are left to lapse.
HUNG_LEASES = 3.0


@dataclass
class Lease:
    """One task's lease: its keys, the request entry it serves and the acquisition's token."""

    keys: TaskKeys
    entry: str
    token: str
    held: bool = False  # set once ACQUIRE said so: until then a refusal means nothing


class Renewer:
    """Renews every registered lease each ``lease / 4`` seconds from a thread of its own."""

    def __init__(
        self, url: str, consumer: str, lease: float, on_lost: Callable[[Lease], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.url = url
        self.consumer = consumer
        self.lease = lease
        self.period = lease / 4
        self._on_lost = on_lost
        self._loop = loop
        self._leases: dict[str, Lease] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._beat = time.monotonic()
        self._thread: threading.Thread | None = None

    # -- from the loop -----------------------------------------------------------------------

    def add(self, lease: Lease) -> None:
        """Renew ``lease`` from now on (before ACQUIRE, so that a slow loop cannot lose it)."""
        with self._lock:
            self._leases[lease.token] = lease

    def confirm(self, lease: Lease) -> None:
        """ACQUIRE granted ``lease``: a refused renewal now means it is lost."""
        with self._lock:
            lease.held = True

    def discard(self, token: str) -> None:
        with self._lock:
            self._leases.pop(token, None)

    def beat(self) -> None:
        """The loop turns: its leases are worth renewing."""
        self._beat = time.monotonic()

    def start(self) -> None:
        self._beat = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="relay-leases", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Stop renewing (the thread ends within one Redis round trip)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.to_thread(thread.join)

    # -- in the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        client = redis.Redis.from_url(
            self.url, client_name="reactive-tasks-relay-leases",
            socket_timeout=max(self.lease / 2, 0.05), socket_connect_timeout=max(self.lease, 0.1),
        )
        renew = client.register_script(_scripts.RENEW_MANY)
        wait = self.period
        try:
            while not self._stop.wait(wait):
                if time.monotonic() - self._beat > HUNG_LEASES * self.lease:
                    wait = self.period  # hung loop: let its leases lapse
                    continue
                try:
                    self._renew(client, renew)
                    wait = self.period
                except RedisError as exc:
                    _log.warning("relay %s: lease renewal failed: %s", self.consumer, exc)
                    wait = min(0.05, self.period)
                except Exception:  # never a silent end of renewals
                    _log.exception("relay %s: lease renewal failed", self.consumer)
                    wait = min(0.05, self.period)
        finally:
            client.close()

    def _renew(self, client: redis.Redis, renew: Any) -> None:
        with self._lock:
            leases = [(lease, lease.held) for lease in self._leases.values()]
        lease_ms = int(self.lease * 1000)
        kept: dict[str, list[Any]] = {}
        for start in range(0, len(leases), _CHUNK):
            chunk = leases[start:start + _CHUNK]
            results = renew(keys=[lease.keys.owner for lease, _ in chunk],
                            args=[lease_ms, *(lease.token for lease, _ in chunk)])
            for (lease, held), ok in zip(chunk, results, strict=True):
                if ok == 1:
                    kept.setdefault(lease.keys.backend, []).append(lease.entry)
                elif held:  # granted before this renewal was sent, refused now: lost
                    self.discard(lease.token)
                    self._tell_lost(lease)
        for backend, entries in kept.items():  # reset the entries' idle time: still alive
            client.xclaim(request_stream(backend), GROUP, self.consumer, 0, entries,
                          justid=True)

    def _tell_lost(self, lease: Lease) -> None:
        if not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(self._on_lost, lease)
