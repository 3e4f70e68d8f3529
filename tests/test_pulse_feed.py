"""The Pulse feed on its own, over a real RabbitMQ: messages published here reach a recording
sink as the source's own status model; bindings follow watches; the password stays hidden."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest
from rabbitmq_server import RabbitMQServer

from reactive_tasks import ConfigurationError
from reactive_tasks._types import TaskRef
from reactive_tasks.backends import TaskclusterBackend
from reactive_tasks.backends.taskcluster import TaskclusterStatus
from reactive_tasks.backends.taskcluster._pulse import TASK_EXCHANGES, PulseFeed
from reactive_tasks.emulator.taskcluster import new_slugid

TASK = "fN1SbArXTPSVFNUvaOlinQ"
OTHER = "Tl8xVvqHT6GDPLkUyB1n5g"
GROUP = "aCGZvJG5TquLSKQQwsHQgQ"
ROOT = "http://127.0.0.1:9"  # never asked: the feed reads only the broker


@pytest.fixture
def amqp_url(rabbitmq: RabbitMQServer) -> str:
    return rabbitmq.url


class RecordingSink:
    """A FeedSink that records every call, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.changed = asyncio.Event()

    def feed_live(self, live: bool) -> None:
        self.calls.append(("live", live))
        self.changed.set()

    def feed_snapshot(self, ref: TaskRef, snapshot: Any) -> None:
        self.calls.append(("snapshot", ref, snapshot))
        self.changed.set()

    def feed_bound(self, refs: Any) -> None:
        self.calls.append(("bound", list(refs)))
        self.changed.set()

    @property
    def bound(self) -> list[TaskRef]:
        return [r for c in self.calls if c[0] == "bound" for r in c[1]]

    @property
    def snapshots(self) -> list[tuple[TaskRef, Any]]:
        return [(c[1], c[2]) for c in self.calls if c[0] == "snapshot"]

    @property
    def lives(self) -> list[bool]:
        return [c[1] for c in self.calls if c[0] == "live"]

    async def until(self, check: Any, timeout: float = 10.0) -> None:
        async def loop() -> None:
            while not check():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(loop(), timeout)


def status(task_id: str, state: str, runs: int = 1) -> dict[str, Any]:
    """A task status structure as the queue publishes it."""
    run_list = [
        {"runId": i, "state": "exception" if i < runs - 1 else state,
         "reasonCreated": "scheduled" if i == 0 else "retry",
         "reasonResolved": "worker-shutdown" if i < runs - 1 else None,
         "scheduled": "2026-01-01T00:00:00.000Z"}
        for i in range(runs)
    ]
    return {
        "taskId": task_id, "provisionerId": "prov", "workerType": "wt", "taskQueueId": "prov/wt",
        "schedulerId": "sched", "projectId": "none", "taskGroupId": GROUP,
        "deadline": "2030-01-01T00:00:00.000Z", "expires": "2031-01-01T00:00:00.000Z",
        "retriesLeft": 5, "state": state, "runs": run_list,
    }


class Publisher:
    """Publishes task messages to the queue's exchanges, as Taskcluster's queue does."""

    def __init__(self, channel: aio_pika.abc.AbstractChannel) -> None:
        self.channel = channel
        self.exchanges: dict[str, aio_pika.abc.AbstractExchange] = {}

    async def declare(self) -> None:
        for name in TASK_EXCHANGES:
            self.exchanges[name] = await self.channel.declare_exchange(
                name, aio_pika.ExchangeType.TOPIC, durable=True
            )

    async def task(self, task_id: str, state: str, runs: int = 1, body: bytes | None = None,
                   exchange: str = "task-running") -> None:
        key = f"primary.{task_id}.0.wg.wi.prov.wt.sched.{GROUP}._"
        payload = body if body is not None else json.dumps(
            {"version": 1, "status": status(task_id, state, runs), "runId": runs - 1}
        ).encode()
        full = "exchange/taskcluster-queue/v1/" + exchange
        await self.exchanges[full].publish(aio_pika.Message(payload), key)


@pytest.fixture
async def publisher(amqp_url: str) -> AsyncIterator[Publisher]:
    connection = await aio_pika.connect(amqp_url)
    try:
        pub = Publisher(await connection.channel())
        await pub.declare()
        yield pub
    finally:
        await connection.close()


class Running:
    """A feed running in a task, with its recording sink."""

    def __init__(self, feed: PulseFeed) -> None:
        self.feed = feed
        self.sink = RecordingSink()
        self.task = asyncio.ensure_future(feed.run(self.sink))

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def make_feed(url: str, **options: Any) -> PulseFeed:
    backend = TaskclusterBackend(ROOT, pulse_url=url, **options)
    feed = backend.open_feed()
    assert isinstance(feed, PulseFeed)
    return feed


async def test_a_pushed_status_reaches_the_sink_as_the_poll_model(
    amqp_url: str, publisher: Publisher
) -> None:
    feed = make_feed(amqp_url, pulse_namespace="tester")
    feed.watch(TaskRef(TASK))
    run = Running(feed)
    try:
        await run.sink.until(lambda: run.sink.lives == [True])
        await publisher.task(OTHER, "running")  # not watched: not bound, never delivered
        await publisher.task(TASK, "running")
        await publisher.task(TASK, "pending", runs=2, exchange="task-pending")
        await run.sink.until(lambda: len(run.sink.snapshots) == 2)
        (ref1, first), (ref2, second) = run.sink.snapshots
        assert ref1 == ref2 == TaskRef(TASK)
        assert isinstance(first, TaskclusterStatus) and isinstance(second, TaskclusterStatus)
        assert (first.state, len(first.runs)) == ("running", 1)
        assert (second.state, len(second.runs)) == ("pending", 2)
    finally:
        await run.stop()
    assert run.sink.lives == [True, False]


async def test_malformed_messages_are_logged_and_dropped(
    amqp_url: str, publisher: Publisher, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "reactive_tasks")
    feed = make_feed(amqp_url, pulse_namespace="tester")
    feed.watch(TaskRef(TASK))
    run = Running(feed)
    try:
        await run.sink.until(lambda: run.sink.lives == [True])
        await publisher.task(TASK, "running", body=b"not json at all")
        await publisher.task(TASK, "running", body=b'{"version": 1, "status": {"taskId": 5}}')
        await publisher.task(TASK, "running", body=b"[" * (2 << 20))
        inconsistent = status(TASK, "running")
        inconsistent["state"] = "completed"  # its latest run says running: unreadable
        await publisher.task(TASK, "running", body=json.dumps({"status": inconsistent}).encode())
        await publisher.task(TASK, "completed", exchange="task-completed")
        await run.sink.until(lambda: len(run.sink.snapshots) == 1)
        assert run.sink.snapshots[0][1].state == "completed"
        assert run.sink.lives == [True]  # the feed went on
    finally:
        await run.stop()
    dropped = [r for r in caplog.records if "dropped a Pulse message" in r.getMessage()]
    assert len(dropped) == 4


async def test_bindings_follow_watches(
    rabbitmq: RabbitMQServer, amqp_url: str, publisher: Publisher
) -> None:
    feed = make_feed(amqp_url, pulse_namespace="tester")
    feed.watch(TaskRef(TASK))
    run = Running(feed)

    def bound() -> set[tuple[str, str]]:
        rows = rabbitmq.bindings(feed.queue_name)
        return {(r["exchange"].rsplit("/", 1)[1], r["routing_key"]) for r in rows}

    try:
        await run.sink.until(lambda: run.sink.lives == [True])
        assert feed.queue_name.startswith("queue/tester/")
        names = {"task-defined", "task-pending", "task-running", "task-completed",
                 "task-failed", "task-exception"}
        assert bound() == {(name, f"primary.{TASK}.#") for name in names}
        feed.watch(TaskRef(OTHER))
        feed.unwatch(TaskRef(TASK))
        # a task bound while live is handed back to the hub to be read once more (a change
        # between its first poll and its binding would reach neither input); the feed stays up
        await run.sink.until(lambda: run.sink.bound == [TaskRef(OTHER)])
        assert run.sink.lives == [True]
        await publisher.task(TASK, "running")
        await publisher.task(OTHER, "running")
        await run.sink.until(lambda: len(run.sink.snapshots) >= 1)
        await asyncio.sleep(0.2)
        assert [ref for ref, _ in run.sink.snapshots] == [TaskRef(OTHER)]
        assert bound() == {(name, f"primary.{OTHER}.#") for name in names}
        feed.unwatch(TaskRef(OTHER))
        for _ in range(100):
            if not bound():
                break
            await asyncio.sleep(0.05)
        assert bound() == set()
        assert run.sink.lives[-1] is True  # unbinding never takes the feed down
    finally:
        await run.stop()
    assert feed.queue_name not in rabbitmq.queues()  # exclusive: gone with its connection


async def test_stopping_while_unbinding_logs_no_cancelled_call(
    amqp_url: str, publisher: Publisher, caplog: pytest.LogCaptureFixture
) -> None:
    """Closing a backend right after its watches were disposed cancels the feed mid-unbind:
    that is the feed's own doing, not a fault, so nothing is logged about it."""
    caplog.set_level(logging.INFO)
    feed = make_feed(amqp_url, pulse_namespace="tester")
    refs = [TaskRef(new_slugid()) for _ in range(150)]
    for ref in refs:
        feed.watch(ref)
    run = Running(feed)
    try:
        await run.sink.until(lambda: run.sink.lives == [True], timeout=30)
        for ref in refs:
            feed.unwatch(ref)
        await asyncio.sleep(0.01)  # the feed has started unbinding (50 tasks a turn)
    finally:
        await run.stop()
    noisy = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert noisy == []


def test_pulse_settings_are_checked_without_showing_the_password() -> None:
    secret = "s3cr3t-Pulse-pw"
    for url, namespace in [
        (f"http://me:{secret}@pulse.example.org/", None),  # not AMQP
        (f"amqps://me:{secret}@/", None),  # no host
        (f"amqps://me:{secret}@pulse.example.org:99999/", None),  # bad port
        ("amqps://pulse.example.org/", None),  # no user: no namespace to default to
        (f"amqps://me:{secret}@pulse.example.org/", "other/user"),  # not a queue name part
        (f"amqps://me:{secret}@pulse.example.org/", ""),
    ]:
        with pytest.raises(ConfigurationError) as caught:
            TaskclusterBackend(ROOT, pulse_url=url, pulse_namespace=namespace)
        assert secret not in str(caught.value)
        assert caught.value.__cause__ is None
    with pytest.raises(ConfigurationError):
        TaskclusterBackend(ROOT, pulse_namespace="me")  # a namespace without a broker
    backend = TaskclusterBackend(ROOT, pulse_url=f"amqps://me:{secret}@pulse.example.org/")
    feed = backend.open_feed()
    assert isinstance(feed, PulseFeed)
    assert feed.queue_name.startswith("queue/me/")
    assert secret not in repr(backend) and secret not in repr(feed)
    assert "pulse.example.org" in repr(backend)
    assert TaskclusterBackend(ROOT).open_feed() is None


async def test_a_refused_login_never_shows_the_password(
    amqp_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "Wr0ng-Pulse-pw-4242"
    host = amqp_url.rsplit("@", 1)[1]
    feed = make_feed(f"amqp://guest:{secret}@{host}", pulse_namespace="tester")
    feed.first_delay = 0.05
    feed.watch(TaskRef(TASK))
    run = Running(feed)
    try:
        def refused() -> bool:
            return any("login refused" in r.getMessage() for r in caplog.records)

        async def wait_refused() -> None:
            while not refused():
                await asyncio.sleep(0.05)

        await asyncio.wait_for(wait_refused(), 20)
    finally:
        await run.stop()
    assert True not in run.sink.lives
    for record in caplog.records:
        handler = logging.Handler()
        handler.setFormatter(logging.Formatter())
        text = handler.format(record)
        assert secret not in text, record.name
