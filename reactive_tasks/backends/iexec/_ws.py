"""Push: ``eth_subscribe("logs")`` over a WebSocket for the watched tasks, as a hub feed.

The feed subscribes to the hub's task events for the watched ids (one subscription per chunk of
ids), subscribes again as watches come and go (changes coalesced) and after each reconnect
(with backoff). A log names a task that moved: the feed reads it with ``viewTask`` through the
session (the logs of one burst in one batch) and hands the snapshot to the hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
from typing import TYPE_CHECKING, Any

import aiohttp

from ..._redact import scrub
from ..._types import FeedSink, TaskRef, snapshot_of
from . import _logs
from ._logs import IDS_PER_FILTER, cursor_of, log_facts, task_topics

if TYPE_CHECKING:
    from ._source import IExecBackend

__all__ = ["LogFeed"]

logger = logging.getLogger("reactive_tasks.iexec.ws")

_COALESCE = 0.005  # watches changing within this many seconds share one resubscription
#: The logs of a block come as a burst of messages: its tasks are read together once no log
#: came for _QUIET seconds (at most _BURST after the first), in one ``viewTask`` batch rather
#: than one per network read; a long burst starts a read at each full batch (``batch_size``).
_QUIET = 0.002
_BURST = 0.01
_MAX_BACKOFF = 30.0
_CALL_TIMEOUT = 10.0
_HEARTBEAT = 30.0


class _Lost(Exception):
    """The connection ended or answered a call with an error."""


class LogFeed:
    """The ``Feed`` of an ``IExecBackend`` with ``ws_url`` on one loop."""

    def __init__(self, backend: IExecBackend, url: str) -> None:
        self._backend = backend
        self._url = url
        self._refs: dict[str, set[TaskRef]] = {}
        self._changed = asyncio.Event()
        self._ids = itertools.count(1)
        self._calls: dict[int, asyncio.Future[Any]] = {}
        self._to_read: dict[TaskRef, int] = {}  # ref -> block of the log that named it
        self._flush_at: asyncio.TimerHandle | None = None
        self._burst = (0.0, 0.0)  # (first, latest) log of the burst waiting for its read
        self._readers: set[asyncio.Future[None]] = set()

    def __repr__(self) -> str:
        return f"LogFeed({self._backend!r}, watched={len(self._refs)})"

    # -- watches ------------------------------------------------------------------------------

    def watch(self, ref: TaskRef) -> None:
        refs = self._refs.setdefault(ref.task_id, set())
        if not refs:
            self._changed.set()
        refs.add(ref)

    def unwatch(self, ref: TaskRef) -> None:
        refs = self._refs.get(ref.task_id)
        if refs is None:
            return
        refs.discard(ref)
        if not refs:
            del self._refs[ref.task_id]
            self._changed.set()

    # -- the connection ---------------------------------------------------------------------

    async def run(self, sink: FeedSink) -> None:
        """Connect, subscribe, push; on a lost connection go not-live and reconnect."""
        try:
            await self._run(sink)
        finally:
            if self._flush_at is not None:
                self._flush_at.cancel()
                self._flush_at = None
            readers = list(self._readers)
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)

    async def _run(self, sink: FeedSink) -> None:
        failures = 0
        while True:
            live = False
            try:
                async with aiohttp.ClientSession() as http, http.ws_connect(
                    self._url, heartbeat=_HEARTBEAT, max_msg_size=4 * 1024 * 1024
                ) as ws:
                    receiving = asyncio.ensure_future(self._receive(ws, sink))
                    try:
                        subs = await self._bind(ws, {})
                        live = True
                        failures = 0
                        sink.feed_live(True)
                        await self._follow(ws, subs, receiving, sink)
                    finally:
                        receiving.cancel()
                        with contextlib.suppress(BaseException):
                            await receiving
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                text = scrub(str(exc), self._backend.secrets)[:200]
                logger.warning("iexec log feed: connection lost (%s: %s); reconnecting",
                               type(exc).__name__, text)
            finally:
                self._fail_calls()
                if live:
                    sink.feed_live(False)
            failures += 1
            await asyncio.sleep(random.uniform(0.05, min(_MAX_BACKOFF, 0.25 * 2**failures)))

    async def _follow(
        self, ws: aiohttp.ClientWebSocketResponse, subs: dict[str, list[str]],
        receiving: asyncio.Future[Any], sink: FeedSink,
    ) -> None:
        """Resubscribe as watches change, until the connection ends."""
        while True:
            changed: asyncio.Future[Any] = asyncio.ensure_future(self._changed.wait())
            done, _ = await asyncio.wait(
                {changed, receiving}, return_when=asyncio.FIRST_COMPLETED
            )
            if receiving in done:
                changed.cancel()
                receiving.result()
                raise _Lost("the node closed the connection")
            await asyncio.sleep(_COALESCE)
            before = {i for chunk in subs.values() for i in chunk}
            subs = await self._bind(ws, subs)
            # Ids subscribed only now: a change between their first poll and the subscription
            # reached neither input, so the hub reads those once more.
            fresh = [r for i in self._refs if i not in before for r in self._refs[i]]
            if fresh:
                sink.feed_bound(fresh)

    async def _bind(
        self, ws: aiohttp.ClientWebSocketResponse, old: dict[str, list[str]]
    ) -> dict[str, list[str]]:
        """Subscribe to the watched ids (new subscriptions first), then drop the old ones."""
        self._changed.clear()
        ids = sorted(self._refs)
        wanted = [ids[i : i + IDS_PER_FILTER] for i in range(0, len(ids), IDS_PER_FILTER)]
        if sorted(old.values()) == wanted:
            return old
        subs: dict[str, list[str]] = {}
        topics = list(task_topics())
        for chunk in wanted:
            flt = {"address": self._backend.hub_address, "topics": [topics, chunk]}
            sub_id = await self._call(ws, "eth_subscribe", ["logs", flt])
            if not isinstance(sub_id, str):
                raise self._backend.protocol_error("eth_subscribe did not answer an id")
            subs[sub_id] = chunk
        for sub_id in old:
            await self._call(ws, "eth_unsubscribe", [sub_id])
        return subs

    async def _call(
        self, ws: aiohttp.ClientWebSocketResponse, method: str, params: list[Any]
    ) -> Any:
        call_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._calls[call_id] = future
        try:
            await ws.send_str(json.dumps(
                {"jsonrpc": "2.0", "id": call_id, "method": method, "params": params}
            ))
            return await asyncio.wait_for(future, _CALL_TIMEOUT)
        finally:
            self._calls.pop(call_id, None)

    def _fail_calls(self) -> None:
        for future in self._calls.values():
            if not future.done():
                future.set_exception(_Lost("the connection ended"))
        self._calls.clear()

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse, sink: FeedSink) -> None:
        """Read messages until the connection ends: call answers and notifications."""
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            try:
                body = json.loads(message.data)
            except ValueError:
                continue
            for item in body if isinstance(body, list) else [body]:
                if isinstance(item, dict):
                    self._dispatch(item, sink)
        self._fail_calls()

    def _dispatch(self, item: dict[str, Any], sink: FeedSink) -> None:
        call_id = item.get("id")
        if isinstance(call_id, int) and call_id in self._calls:
            future = self._calls[call_id]
            if future.done():
                return
            error = item.get("error")
            if error is not None:
                text = scrub(str(error)[:200], self._backend.secrets)
                future.set_exception(_Lost(f"the node refused the call: {text}"))
            else:
                future.set_result(item.get("result"))
            return
        if item.get("method") != "eth_subscription":
            return
        params = item.get("params")
        result = params.get("result") if isinstance(params, dict) else None
        log = log_facts(result, self._backend.hub_address)
        if log is None:
            return
        for ref in self._refs.get(log.task_id or "", ()):
            block = log.block or 0
            self._to_read[ref] = max(self._to_read.get(ref, 0), block)
        if len(self._to_read) >= self._backend.batch_size:
            if self._flush_at is not None:
                self._flush_at.cancel()
                self._flush_at = None
            self._read_named(sink)
        elif self._to_read:
            loop = asyncio.get_running_loop()
            now = loop.time()
            if self._flush_at is None:
                self._burst = (now, now)
                self._flush_at = loop.call_at(now + _QUIET, self._flush, sink)
            else:
                self._burst = (self._burst[0], now)

    def _flush(self, sink: FeedSink) -> None:
        """Read the burst's tasks once it went quiet (or ran long)."""
        loop = asyncio.get_running_loop()
        first, latest = self._burst
        quiet_at = min(latest + _QUIET, first + _BURST)
        if loop.time() < quiet_at:
            self._flush_at = loop.call_at(quiet_at, self._flush, sink)
            return
        self._flush_at = None
        self._read_named(sink)

    def _read_named(self, sink: FeedSink) -> None:
        named, self._to_read = self._to_read, {}
        if named:
            reader = asyncio.ensure_future(self._read(sink, named))
            self._readers.add(reader)
            reader.add_done_callback(self._readers.discard)

    async def _read(self, sink: FeedSink, named: dict[TaskRef, int]) -> None:
        """Read the tasks the logs named, in batches (concurrent with other reads), and push
        the snapshots."""
        refs = [r for r in named if r.task_id in self._refs]
        size = self._backend.batch_size
        chunks = [refs[i : i + size] for i in range(0, len(refs), size)]
        batches = await asyncio.gather(
            *(self._backend._read_tasks(chunk) for chunk in chunks), return_exceptions=True
        )
        cursor = cursor_of(self._backend.session())
        now = _logs.clock()
        for batch in batches:
            if isinstance(batch, BaseException):
                self._log_miss(batch)
                continue
            for ref, answer in batch:
                try:  # reads outside the hub's rounds are full snapshots already
                    outcome = answer if isinstance(answer, BaseException) else snapshot_of(answer)
                except Exception as exc:
                    outcome = exc
                if isinstance(outcome, BaseException):
                    self._log_miss(outcome)
                    continue
                if ref in cursor.known:
                    cursor.note(ref, outcome, named[ref], now)
                if ref.task_id in self._refs:
                    sink.feed_snapshot(ref, outcome)

    @staticmethod
    def _log_miss(exc: BaseException) -> None:
        if isinstance(exc, asyncio.CancelledError):
            raise exc
        logger.info(
            "iexec log feed: a pushed task's read failed (%s); polls catch up", type(exc).__name__
        )

