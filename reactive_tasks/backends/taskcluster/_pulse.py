"""Taskcluster's Pulse feed: the queue's task messages over AMQP, handed to the hub as snapshots.

One connection per feed (per backend and loop), one exclusive auto-delete queue named under
``queue/<namespace>/``, and per watched task a binding ``primary.<taskId>.#`` on each of the
queue's task exchanges; per group watched by ``observe_group``, one on ``task-defined`` by
``taskGroupId``, whose messages announce the group's new tasks. A message's ``status`` is the
very structure a status poll reads, so it is validated by the source's own model and given to
the hub like a poll's answer.

Binding changes run in the feed's own task, coalesced: ``watch``/``unwatch`` only mark what is
wanted. The feed is live (``sink.feed_live(True)``) only while every watched task is bound; a
lost connection makes it not live until it has reconnected, with backoff, and bound them all
again. Its URL's password never leaves it: aio-pika's and aiormq's records are scrubbed, and
errors are logged as a short reason, never as the library's exception text or chain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import uuid
import weakref
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import aio_pika
import aiormq.abc
import aiormq.exceptions

from ..._errors import BackendError, ConfigurationError
from ..._redact import Secrets, install_log_filters, redact_url, scrub
from ..._types import FeedSink, TaskRef
from ._groups import TaskclusterGroupMembers, is_group

if TYPE_CHECKING:
    from ._source import TaskclusterSource

__all__ = ["TASK_EXCHANGES", "PulseConfig", "PulseFeed", "bindings", "pulse_config"]

logger = logging.getLogger("reactive_tasks.pulse")

EXCHANGE_PREFIX = "exchange/taskcluster-queue/v1/"
#: The queue's exchanges that carry a task's status on each transition.
TASK_EXCHANGES = tuple(
    EXCHANGE_PREFIX + name
    for name in (
        "task-defined", "task-pending", "task-running",
        "task-completed", "task-failed", "task-exception",
    )
)
#: The largest message read; Taskcluster's task messages are a few kilobytes.
MAX_MESSAGE = 1 << 20
_NAMESPACE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class _OwnCancelledCalls(logging.Filter):
    """Drops aiormq's warning about a cancelled RPC on this library's feed channels: the only
    such cancellation is the feed's own, at close, while it was binding or unbinding."""

    def __init__(self) -> None:
        super().__init__()
        self.channels: weakref.WeakSet[Any] = weakref.WeakSet()

    def filter(self, record: logging.LogRecord) -> bool:
        if "cancelled" not in str(record.msg) or not isinstance(record.args, tuple):
            return True
        return not any(arg in self.channels for arg in record.args)


_OWN_CANCELLED = _OwnCancelledCalls()
logging.getLogger("aiormq.channel").addFilter(_OWN_CANCELLED)


class PulseConfig:
    """A checked ``pulse_url`` and namespace; its repr shows neither user nor password."""

    __slots__ = ("namespace", "shown", "url")

    def __init__(self, url: str, namespace: str) -> None:
        self.url = url
        self.namespace = namespace
        self.shown = redact_url(url)

    def __repr__(self) -> str:
        return f"PulseConfig({self.shown!r}, namespace={self.namespace!r})"


def pulse_config(url: Any, namespace: Any, secrets: Secrets) -> PulseConfig:
    """Check ``pulse_url`` (amqp/amqps with a host) and the queue namespace; register the
    password with ``secrets`` first, so that no message below can show it."""
    if not isinstance(url, str):
        raise ConfigurationError("pulse_url must be a string such as amqps://user:pass@host/")
    secrets.add_url(url)
    try:
        parts = urlsplit(url)
        host, user, password = parts.hostname, parts.username, parts.password
        parts.port  # noqa: B018 - a bad port raises here
    except ValueError:
        raise ConfigurationError(
            f"pulse_url is not a valid URL: {scrub(redact_url(url), secrets)!r}"
        ) from None
    for secret in (password, unquote(password or "")):
        secrets.add(secret)
    if parts.scheme.lower() not in ("amqp", "amqps") or not host:
        raise ConfigurationError(
            "pulse_url must be an amqp:// or amqps:// URL with a host, got "
            f"{scrub(redact_url(url), secrets)!r}"
        )
    if namespace is None:
        namespace = unquote(user or "")
        if not namespace:
            raise ConfigurationError(
                "pulse_url names no user: give pulse_namespace (Pulse queues live under "
                "queue/<user>/)"
            )
    if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
        raise ConfigurationError(
            "pulse_namespace must be a Pulse user name (letters, digits, '.', '_', '-'); "
            f"got {scrub(repr(namespace), secrets)}"
        )
    return PulseConfig(url, namespace)


#: What one watched ref binds: ("task", taskId) or ("group", taskGroupId).
Topic = tuple[str, str]


def topic_of(ref: TaskRef) -> Topic:
    """What ``ref`` needs bound: its task's messages, or a group's new tasks."""
    return ("group" if is_group(ref) else "task", ref.task_id)


def bindings(topic: Topic) -> list[tuple[str, str]]:
    """The (exchange, routing key) pairs of a topic: every task exchange for a task; for a
    group, ``task-defined`` by ``taskGroupId`` (its members' changes come with their own
    watches, which ``observe_group`` starts as each member becomes known)."""
    kind, ident = topic
    if kind == "group":
        return [(TASK_EXCHANGES[0], f"primary.*.*.*.*.*.*.*.{ident}.#")]
    return [(exchange, f"primary.{ident}.#") for exchange in TASK_EXCHANGES]


def reason(exc: BaseException) -> str:
    """A short phrase for a broker fault, free of URLs and passwords."""
    if isinstance(exc, BackendError):
        return exc.message
    if isinstance(exc, aiormq.exceptions.ProbableAuthenticationError):
        return "login refused (check the Pulse user and password)"
    if isinstance(exc, aiormq.exceptions.ChannelNotFoundEntity):
        return "an exchange is missing on the broker"
    if isinstance(exc, aiormq.exceptions.ChannelAccessRefused):
        return "access refused (Pulse users may only create queues under queue/<user>/)"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiormq.exceptions.ConnectionClosed | ConnectionResetError):
        return "connection closed by the broker"
    return type(exc).__name__


class PulseFeed:
    """The push feed of one Taskcluster backend on one event loop (see the module text)."""

    #: Backoff between connection attempts: full jitter up to a bound doubling from the first.
    first_delay = 0.25
    max_delay = 10.0
    connect_timeout = 10.0

    def __init__(self, source: TaskclusterSource, config: PulseConfig) -> None:
        install_log_filters()  # aio_pika and aiormq loggers exist now: scrub them too
        self._source = source
        self._config = config
        self._queue_name = f"queue/{config.namespace}/reactive-tasks/{uuid.uuid4().hex}"
        self._wanted: dict[Topic, set[TaskRef]] = {}  # what to bind -> the refs that need it
        self._changed = asyncio.Event()
        self._bound: set[Topic] = set()  # what is bound on the current connection
        self._live = False
        self._sink: FeedSink | None = None

    def __repr__(self) -> str:
        return f"PulseFeed({self._config.shown!r}, queue={self._queue_name!r})"

    @property
    def queue_name(self) -> str:
        """The name of this feed's queue on the broker (new on each connection)."""
        return self._queue_name

    # -- what the hub calls --------------------------------------------------------------

    def watch(self, ref: TaskRef) -> None:
        self._wanted.setdefault(topic_of(ref), set()).add(ref)
        self._changed.set()

    def unwatch(self, ref: TaskRef) -> None:
        topic = topic_of(ref)
        refs = self._wanted.get(topic)
        if refs is not None:
            refs.discard(ref)
            if not refs:
                del self._wanted[topic]
        self._changed.set()

    async def run(self, sink: FeedSink) -> None:
        """Connect, bind, stay live; reconnect with backoff whenever the connection is lost."""
        self._sink = sink
        failures = 0
        while True:
            try:
                await self._session(sink)
                failures = 0  # a session that ended cleanly (broker closed it): retry at once
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # every fault of the broker or the network: retry
                failures += 1
                logger.warning(
                    "%s: Pulse feed at %s: %s; polling at the normal interval, reconnecting",
                    self._source.name, self._config.shown, scrub(reason(exc)),
                )
            finally:
                self._bound.clear()
                self._set_live(sink, False)
            bound = min(self.max_delay, self.first_delay * 2 ** min(failures, 16))
            await asyncio.sleep(random.uniform(bound / 2, bound))

    # -- one connection ------------------------------------------------------------------

    async def _session(self, sink: FeedSink) -> None:
        # A fresh name per connection: the broker may still hold the last one's queue.
        self._queue_name = f"queue/{self._config.namespace}/reactive-tasks/{uuid.uuid4().hex}"
        connection = await self._connect()
        lost: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def on_close(*_: object) -> None:
            if not lost.done():
                lost.set_result(None)

        connection.close_callbacks.add(on_close)
        try:
            channel = await connection.channel()
            channel.close_callbacks.add(on_close)  # a refused binding closes the channel
            queue = await channel.declare_queue(
                self._queue_name, exclusive=True, auto_delete=True
            )
            raw = await channel.get_underlay_channel()
            _OWN_CANCELLED.channels.add(raw)
            # Consumed on the protocol channel itself: aio-pika's message wrapper cost more
            # per delivery than reading and accepting the status (a burst queued behind it).
            await raw.basic_consume(queue.name, self._on_message, no_ack=True)
            logger.info(
                "%s: Pulse feed connected to %s (queue %s)",
                self._source.name, self._config.shown, self._queue_name,
            )
            while not lost.done():
                self._changed.clear()
                added: list[Topic] = []
                while fresh := await self._bind_missing(raw):  # watches come while binding
                    added += fresh
                if added and self._live:
                    # Tasks bound only now: a change between their first poll and their
                    # binding reached neither input, so the hub reads those once more.
                    sink.feed_bound([r for t in added for r in self._wanted.get(t, ())])
                self._set_live(sink, True)
                if await self._unbind_some(raw):
                    continue  # more to unbind: bind any new watch first
                changed: asyncio.Future[Any] = asyncio.ensure_future(self._changed.wait())
                await asyncio.wait((lost, changed), return_when=asyncio.FIRST_COMPLETED)
                changed.cancel()
        finally:
            # closing a broken connection may fail; nothing is left to do then
            with contextlib.suppress(Exception):
                await connection.close()
        raise aiormq.exceptions.ConnectionClosed(320, "connection lost")

    async def _connect(self) -> aio_pika.abc.AbstractConnection:
        """Open the connection; the library's own exception (which may show the URL) becomes a
        ``BackendError`` with a short reason and no chain."""
        try:
            return await aio_pika.connect(
                self._config.url,
                timeout=self.connect_timeout,
                client_properties={"connection_name": f"reactive-tasks {self._queue_name}"},
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise BackendError(reason(exc), backend=self._source.name) from None

    async def _bind_missing(self, raw: aiormq.abc.AbstractChannel) -> list[Topic]:
        """Bind every watched task not bound yet; the topics bound now.

        Bindings are sent without waiting for each answer; the broker handles a channel's
        commands in order, so the answer to the last one (sent waiting) confirms them all.
        """
        missing = [topic for topic in self._wanted if topic not in self._bound]
        if not missing:
            return []
        pairs = [pair for topic in missing for pair in bindings(topic)]
        for exchange, key in pairs[:-1]:
            await raw.queue_bind(self._queue_name, exchange, key, nowait=True)
        exchange, key = pairs[-1]
        await raw.queue_bind(self._queue_name, exchange, key)  # a lost connection ends it
        self._bound.update(missing)
        return missing

    async def _unbind_some(self, raw: aiormq.abc.AbstractChannel, most: int = 50) -> bool:
        """Unbind up to ``most`` tasks no longer watched (each unbinding waits for its answer:
        AMQP has no unanswered form); True when more are left."""
        extra = [topic for topic in self._bound if topic not in self._wanted]
        for topic in extra[:most]:
            for exchange, key in bindings(topic):
                await raw.queue_unbind(self._queue_name, exchange, key)
            self._bound.discard(topic)
        return len(extra) > most

    # -- messages ------------------------------------------------------------------------

    async def _on_message(self, message: aiormq.abc.DeliveredMessage) -> None:
        """Hand a task message's status to the hub; a malformed one is logged and dropped."""
        try:
            if len(message.body) > MAX_MESSAGE:
                raise self._source.protocol_error(f"a message of {len(message.body)} bytes")
            status = self._source.read_pushed(message.body)
            refs = list(self._wanted.get(("task", status.taskId), ()))
            for ref in refs:  # one the source cannot read would end the watch: drop it here
                self._source.interpret(status, ref)
            groups: list[TaskRef] = []
            if message.exchange == TASK_EXCHANGES[0]:
                groups = list(self._wanted.get(("group", status.taskGroupId), ()))
        except BackendError as exc:
            logger.warning(
                "%s: dropped a Pulse message from %s: %s",
                self._source.name, message.exchange, scrub(exc.message),
            )
            return
        sink = self._sink
        if sink is None:
            return
        for ref in refs:
            sink.feed_snapshot(ref, status)
        if groups:
            member = TaskclusterGroupMembers(
                taskGroupId=status.taskGroupId, taskIds=(status.taskId,)
            )
            for ref in groups:
                sink.feed_snapshot(ref, member)

    def _set_live(self, sink: FeedSink, live: bool) -> None:
        if live != self._live:
            self._live = live
            sink.feed_live(live)
