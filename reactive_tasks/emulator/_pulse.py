"""Publishing to a real AMQP broker from the emulator, on a thread of its own, with its clock.

`publish()` never blocks the HTTP side: it hands the message to the publisher's own event loop.
While the broker is unreachable, messages are lost (as a real service's would be) and the
connection is retried with backoff. Controls drop, duplicate or swap the next messages, so tests
can show what a consumer does with an imperfect feed. The same loop runs the emulator's clock:
`schedule()` calls back at a `time.monotonic()` instant, so scripted tasks advance unpolled.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import aio_pika
import aiormq
from aio_pika.abc import AbstractConnection
from aio_pika.connection import make_url
from aiormq.abc import ChannelFrame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from .._redact import redact_url

__all__ = ["ACTIONS", "Control", "Outgoing", "PulsePublisher"]

log = logging.getLogger("reactive_tasks.emulator.pulse")

Action = Literal["drop", "duplicate", "reorder"]
ACTIONS: tuple[Action, ...] = ("drop", "duplicate", "reorder")
#: How long a message held back by `reorder` waits for the one to publish before it.
REORDER_HOLD = 5.0
_THREAD = "reactive-tasks-emulator-pulse"
_CONNECT_TIMEOUT = 5.0
_BACKOFF_FIRST, _BACKOFF_MAX = 0.1, 2.0
#: The most queued items taken (and messages written at once) per turn of the publisher.
_BATCH = 500
#: How many recent publish lags (change instant to the write to the broker) stats keep.
_LAGS = 20_000


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message: exchange, routing key, JSON body, CC routing keys; `kind`/`task_id` filter."""

    exchange: str
    routing_key: str
    body: Mapping[str, Any]
    cc: tuple[str, ...] = ()
    kind: str = ""
    task_id: str | None = None
    at: float | None = None  # when the change it tells happened (unix time)


@dataclass(slots=True)
class Control:
    """A pending control: its action on the next `count` messages matching the filters."""

    action: Action
    count: int
    kind: str | None = None
    task_id: str | None = None
    held: Outgoing | None = field(default=None, repr=False)

    def matches(self, message: Outgoing) -> bool:
        return (self.kind is None or self.kind == message.kind) and (
            self.task_id is None or self.task_id == message.task_id
        )

    def describe(self) -> dict[str, Any]:
        return {
            "action": self.action, "count": self.count, "exchange": self.kind,
            "taskId": self.task_id, "holding": self.held is not None,
        }


@dataclass(frozen=True, slots=True)
class _Flush:
    control: Control


_STOP = object()


class PulsePublisher:
    """Publishes `Outgoing` messages to durable topic exchanges; reconnects; never blocks."""

    def __init__(self, url: str, exchanges: Sequence[str]) -> None:
        self._url = url
        self.display_url = redact_url(url)
        self._names = tuple(exchanges)
        self._loop = asyncio.new_event_loop()
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._controls: list[Control] = []
        self._inbox: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self._inbox_lock = threading.Lock()
        self._woken = False
        self._timers: dict[Hashable, asyncio.TimerHandle] = {}
        self._channel: Any = None  # the aiormq channel while connected
        self._no_wait: dict[str, Any] = {}
        self._batched = False
        self._down = asyncio.Event()
        self._connected = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=_THREAD, daemon=True
        )
        self._closed = False
        self.counts = {
            "published": 0, "lost": 0, "dropped": 0, "duplicated": 0, "reordered": 0,
            "connects": 0,
        }
        self._lags: deque[float] = deque(maxlen=_LAGS)

    # -- the caller's side (any thread) ----------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether a connection to the broker is open now."""
        return self._connected.is_set()

    def start(self) -> PulsePublisher:
        """Start the publisher's thread (it connects in the background)."""
        self._thread.start()
        return self

    def wait_connected(self, timeout: float) -> bool:
        """Wait until the broker is connected and the exchanges declared; False on timeout."""
        return self._connected.wait(timeout)

    def publish(self, message: Outgoing) -> None:
        """Queue one message for publishing (lost if the broker is down when its turn comes)."""
        self._call(self._queue.put_nowait, message)

    def control(
        self, action: str, count: int = 1, *, kind: str | None = None,
        task_id: str | None = None,
    ) -> Control:
        """Apply `action` to the next `count` messages matching the filters (in publish order).

        drop: not published; duplicate: published twice; reorder: each time, the next matching
        message is held back and published right after the one following it (or after
        REORDER_HOLD seconds when none follows).
        """
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)}")
        if count < 1:
            raise ValueError("count must be at least 1")
        ctl = Control(action, count, kind, task_id)
        self._call(self._queue.put_nowait, ctl)
        return ctl

    def schedule(self, key: Hashable, when: float, callback: Callable[[], None]) -> None:
        """Call `callback` on the publisher's thread at `when` (time.monotonic()); one per key."""
        self._call(self._arm, key, when, callback)

    def reset(self) -> None:
        """Forget pending controls and timers, and zero the counts."""
        self._call(self._reset)

    def stats(self) -> dict[str, Any]:
        """The broker (without credentials), whether connected, the counts, pending controls."""
        return {
            "url": self.display_url,
            "connected": self.connected,
            **self.counts,
            "controls": [c.describe() for c in list(self._controls)],
            "publish_lag_ms": _summary(list(self._lags)),
        }

    def close(self) -> None:
        """Stop publishing, close the connection and join the thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive():
            self._call(self._queue.put_nowait, _STOP)
            self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()

    def _call(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run `fn` on the publisher's loop, in call order; one loop wake-up per burst of calls."""
        with self._inbox_lock:
            self._inbox.append((fn, args))
            if self._woken:
                return
            self._woken = True
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to do any more
            if threading.get_ident() == self._thread.ident:
                self._loop.call_soon(self._drain_inbox)
            else:
                self._loop.call_soon_threadsafe(self._drain_inbox)

    def _drain_inbox(self) -> None:
        with self._inbox_lock:
            calls = list(self._inbox)
            self._inbox.clear()
            self._woken = False
        for fn, args in calls:
            fn(*args)

    # -- the publisher's own thread ----------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._connected.clear()

    async def _main(self) -> None:
        connector = asyncio.ensure_future(self._connect_forever())
        try:
            await self._pump()
        finally:
            connector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connector
            self._reset()

    async def _connect_forever(self) -> None:
        delay = _BACKOFF_FIRST
        outage = False
        while True:
            # Built here, not by aio_pika.connect(), so that a failed attempt is closed too (an
            # unclosed one would try to close itself later from whatever thread collects it).
            connection: AbstractConnection = aio_pika.Connection(make_url(self._url))
            try:
                await connection.connect(timeout=_CONNECT_TIMEOUT)
                channel = await connection.channel(publisher_confirms=False)
                for name in self._names:
                    await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)
                raw = await channel.get_underlay_channel()
            except asyncio.CancelledError:
                await _close_quietly(connection)
                raise
            except Exception as exc:
                if not outage:
                    log.warning("Pulse broker %s unreachable (%s): retrying; messages until then "
                                "are lost", self.display_url, type(exc).__name__)
                outage = True
                await _close_quietly(connection)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX)
                continue
            if outage:
                log.warning("Pulse broker %s reachable again", self.display_url)
            delay, outage = _BACKOFF_FIRST, False
            self._down.clear()
            connection.close_callbacks.add(lambda *_: self._down.set())
            self._channel = raw
            # aiormq's `wait=False` hands a message to the writer without awaiting each write's
            # drain: about twice the throughput; order is kept by the channel's write queue.
            accepts = inspect.signature(raw.basic_publish).parameters
            self._no_wait = {"wait": False} if "wait" in accepts else {}
            # Where aiormq exposes its frame writer, a batch of messages is one write.
            self._batched = all(
                hasattr(raw, name)
                for name in ("write_queue", "max_content_size", "number", "is_closed")
            ) and hasattr(ChannelFrame, "marshall")
            self.counts["connects"] += 1
            self._connected.set()
            try:
                await self._down.wait()
                outage = True
                log.warning("Pulse broker %s connection lost: reconnecting", self.display_url)
            finally:
                self._connected.clear()
                self._channel = None
                await _close_quietly(connection)

    async def _pump(self) -> None:
        while True:
            # Everything queued so far is taken at once and written as one batch: under a burst
            # of changes, per-message hand-offs and writes were what made messages wait.
            items = [await self._queue.get()]
            while len(items) < _BATCH and not self._queue.empty():
                items.append(self._queue.get_nowait())
            batch: list[Outgoing] = []
            for item in items:
                if item is _STOP:
                    await self._send(batch)
                    return
                if isinstance(item, Control):
                    self._controls.append(item)
                elif isinstance(item, _Flush):
                    held, item.control.held = item.control.held, None
                    if held is not None:
                        self._retire(item.control)
                        batch.append(held)
                else:
                    assert isinstance(item, Outgoing)
                    batch.extend(self._controlled(item))
            await self._send(batch)

    def _controlled(self, message: Outgoing) -> list[Outgoing]:
        """What to publish for `message` under the first matching control."""
        ctl = next((c for c in self._controls if c.matches(message)), None)
        if ctl is None:
            return [message]
        if ctl.action == "drop":
            self.counts["dropped"] += 1
            self._use(ctl)
            return []
        if ctl.action == "duplicate":
            self.counts["duplicated"] += 1
            self._use(ctl)
            return [message, message]
        if ctl.held is None:  # reorder: hold this one back until the next one is out
            ctl.held = message
            self._loop.call_later(REORDER_HOLD, self._queue.put_nowait, _Flush(ctl))
            return []
        held, ctl.held = ctl.held, None
        self.counts["reordered"] += 1
        self._use(ctl)
        return [message, held]

    def _use(self, ctl: Control) -> None:
        ctl.count -= 1
        if ctl.count <= 0:
            self._retire(ctl)

    def _retire(self, ctl: Control) -> None:
        with contextlib.suppress(ValueError):
            self._controls.remove(ctl)

    async def _send(self, messages: list[Outgoing]) -> None:
        """Publish `messages` in order: one write for the lot where aiormq allows it."""
        channel = self._channel
        if not messages:
            return
        if channel is None:
            self.counts["lost"] += len(messages)
            return
        try:
            if self._batched:
                frames: list[Any] = []
                for message in messages:
                    frames.extend(_frames(message, channel.max_content_size))
                await self._write(channel, ChannelFrame.marshall(channel.number, frames))
            else:
                for message in messages:
                    await channel.basic_publish(
                        _body(message), exchange=message.exchange,
                        routing_key=message.routing_key, properties=_properties(message),
                        mandatory=False, **self._no_wait,
                    )
        except Exception as exc:
            log.debug("Pulse publish failed: %s", type(exc).__name__)
            self.counts["lost"] += len(messages)
            self._down.set()
            return
        self.counts["published"] += len(messages)
        now = time.time()
        self._lags.extend((now - m.at) * 1000 for m in messages if m.at is not None)

    async def _write(self, channel: Any, frame: ChannelFrame) -> None:
        """Hand `frame` to the connection's writer; raise if the connection goes first."""
        if channel.is_closed:
            raise ConnectionError("the broker closed the channel")
        queue: asyncio.Queue[ChannelFrame] = channel.write_queue
        if not queue.full():
            queue.put_nowait(frame)
            return
        put = asyncio.ensure_future(queue.put(frame))
        down = asyncio.ensure_future(self._down.wait())
        try:
            await asyncio.wait((put, down), return_when=asyncio.FIRST_COMPLETED)
        finally:
            down.cancel()
            if not put.done():
                put.cancel()
        if put.cancelled():
            raise ConnectionError("the broker connection closed")

    def _arm(self, key: Hashable, when: float, callback: Callable[[], None]) -> None:
        old = self._timers.pop(key, None)
        if old is not None:
            old.cancel()
        self._timers[key] = self._loop.call_at(when, self._fire, key, callback)

    def _fire(self, key: Hashable, callback: Callable[[], None]) -> None:
        self._timers.pop(key, None)
        try:
            callback()
        except Exception:
            log.exception("the emulator's clock callback failed")

    def _reset(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        self._controls.clear()
        self._lags.clear()
        for key in self.counts:
            if key != "connects":
                self.counts[key] = 0

    def __repr__(self) -> str:
        state = "connected" if self.connected else "disconnected"
        return f"PulsePublisher({self.display_url}, {state})"


class _OneWarningPerOutage(logging.Filter):
    """aiormq logs an error at each failed connection attempt; the publisher says it once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.threadName != _THREAD


logging.getLogger("aiormq.connection").addFilter(_OneWarningPerOutage())


def _summary(lags: list[float]) -> dict[str, float | int | None]:
    """Count, p50, p99 and max of publish lags in milliseconds (None without any)."""
    if not lags:
        return {"count": 0, "p50": None, "p99": None, "max": None}
    lags.sort()

    def pick(q: float) -> float:
        return round(lags[min(len(lags) - 1, int(len(lags) * q))], 1)

    return {"count": len(lags), "p50": pick(0.5), "p99": pick(0.99), "max": pick(1.0)}


def _properties(message: Outgoing) -> aiormq.spec.Basic.Properties:
    """A message's AMQP properties: JSON, persistent, its CC routing keys in the headers."""
    return aiormq.spec.Basic.Properties(
        content_type="application/json",
        content_encoding="utf-8",
        delivery_mode=2,  # persistent, as the queue service publishes
        headers={"CC": list(message.cc)} if message.cc else None,
    )


def _body(message: Outgoing) -> bytes:
    """A message's body: compact JSON."""
    return json.dumps(message.body, separators=(",", ":")).encode()


def _frames(message: Outgoing, max_size: int) -> list[Any]:
    """The AMQP frames of one publish: method, header, body in chunks of at most `max_size`."""
    body = _body(message)
    frames: list[Any] = [
        aiormq.spec.Basic.Publish(exchange=message.exchange, routing_key=message.routing_key),
        ContentHeader(properties=_properties(message), body_size=len(body)),
    ]
    frames.extend(ContentBody(body[i:i + max_size]) for i in range(0, len(body), max_size))
    return frames


async def _close_quietly(connection: AbstractConnection) -> None:
    """Close, even a broken connection: a second close() only marks it closed."""
    for _ in range(2):
        try:
            await connection.close()
            return
        except Exception:
            continue
