"""Push beside polls, end to end: TaskclusterBackend(pulse_url=...) watching the emulator's tasks
over real HTTP while the emulator publishes their changes to a real RabbitMQ.

Scripts start with ``pending`` for two status reads: the watch's first poll, then the
reconciliation poll the hub makes once the feed is live; so every later change happens with the
task bound on the broker, and arrives by push unless a test disturbs the feed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from rabbitmq_server import RabbitMQServer

from reactive_tasks import PollPolicy, TaskEvent, TaskState
from reactive_tasks.backends import TaskclusterBackend
from reactive_tasks.backends.taskcluster._pulse import PulseFeed
from reactive_tasks.emulator import EmulatorClient, EmulatorServer

WAIT = 60.0
NAMESPACE = "tests"
#: Polls that never come during a test: every change after the first must come by push.
PUSH_ONLY = PollPolicy(interval=30.0, reconcile_interval=60.0, jitter=0.0, request_timeout=5.0)


def pending_then(*later: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"runs": [{"state": "pending"}], "polls": 2}, *later]


def runs(*states: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for spec in states:
        state, _, reason = spec.partition(":")
        run: dict[str, Any] = {"state": state}
        if reason:
            run["reasonResolved"] = reason
        out.append(run)
    return out


LIFECYCLE = pending_then(
    {"runs": runs("running"), "seconds": 0.5},
    {"runs": runs("completed")},
)


@pytest.fixture(scope="module")
def pulse_server(rabbitmq_server: RabbitMQServer) -> Iterator[EmulatorServer]:
    with EmulatorServer(pulse_url=rabbitmq_server.url) as server:
        yield server


@pytest.fixture
def tc(pulse_server: EmulatorServer, rabbitmq: RabbitMQServer) -> Iterator[EmulatorClient]:
    """The publishing emulator, reset, connected to a running broker."""
    with EmulatorClient(pulse_server.url) as client:
        client.reset()
        until(lambda: client.pulse()["connected"], "the emulator's broker connection")
        yield client


@pytest.fixture(autouse=True)
def quick_reconnect(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reconnect attempts at most a second apart, so a restarted broker is found soon."""
    monkeypatch.setattr(PulseFeed, "max_delay", 1.0)


def until(done: Callable[[], Any], what: str, wait: float = WAIT) -> None:
    deadline = time.monotonic() + wait
    while not done():
        assert time.monotonic() < deadline, f"no {what} within {wait} s"
        time.sleep(0.05)


async def eventually(done: Callable[[], Any], what: str, wait: float = WAIT) -> None:
    deadline = time.monotonic() + wait
    while not done():
        assert time.monotonic() < deadline, f"no {what} within {wait} s"
        await asyncio.sleep(0.05)


def backend(tc: EmulatorClient, rabbitmq: RabbitMQServer, **options: Any) -> TaskclusterBackend:
    return TaskclusterBackend(
        tc.api_url("taskcluster"), pulse_url=rabbitmq.url, pulse_namespace=NAMESPACE, **options
    )


class Recorder:
    """Every event of one subscription, and its end."""

    def __init__(self) -> None:
        self.events: list[TaskEvent[Any]] = []
        self.done = asyncio.Event()
        self.error: BaseException | None = None

    def on_error(self, error: BaseException) -> None:
        self.error = error
        self.done.set()

    def watch(self, observable: Any) -> Any:
        return observable.subscribe(
            on_next=self.events.append, on_error=self.on_error, on_completed=self.done.set
        )

    async def finished(self, wait: float = WAIT) -> list[TaskEvent[Any]]:
        await asyncio.wait_for(self.done.wait(), wait)
        assert self.error is None, self.error
        return self.events

    def states(self) -> list[TaskState]:
        return [e.state for e in self.events]

    def vias(self) -> list[str]:
        return [e.via for e in self.events]


def order(event: TaskEvent[Any]) -> tuple[int, int]:
    rank = {"pending": 1, "running": 2}
    run = event.snapshot.runs[-1] if event.snapshot.runs else None
    return (0, 0) if run is None else (len(event.snapshot.runs), rank.get(run.state, 3))


def bindings(rabbitmq: RabbitMQServer) -> list[dict[str, str]]:
    return rabbitmq.bindings(f"queue/{NAMESPACE}/")


async def test_a_lifecycle_arrives_by_push(tc: EmulatorClient, rabbitmq: RabbitMQServer) -> None:
    task = tc.create_task("taskcluster", LIFECYCLE)
    async with backend(tc, rabbitmq) as tcb:
        rec = Recorder()
        rec.watch(tcb.observe(task, policy=PUSH_ONLY))
        await rec.finished()
    assert rec.states() == [TaskState.PENDING, TaskState.RUNNING, TaskState.COMPLETED]
    assert rec.vias() == ["poll", "push", "push"]
    assert tc.requests()["by_task"][task] == 2  # the first poll and the reconciliation


async def test_a_dropped_message_is_recovered_by_reconciliation(
    tc: EmulatorClient, rabbitmq: RabbitMQServer
) -> None:
    task = tc.create_task("taskcluster", pending_then(
        {"runs": runs("running"), "seconds": 4.0},
        {"runs": runs("completed")},
    ))
    tc.drop_messages(1, exchange="task-running", task_id=task)
    policy = PollPolicy(interval=0.5, reconcile_interval=1.0, jitter=0.0)
    async with backend(tc, rabbitmq) as tcb:
        rec = Recorder()
        rec.watch(tcb.observe(task, policy=policy))
        await rec.finished()
    assert tc.pulse()["dropped"] == 1
    assert rec.states() == [TaskState.PENDING, TaskState.RUNNING, TaskState.COMPLETED]
    assert rec.vias() == ["poll", "poll", "push"]  # running: the message never came


async def test_duplicated_and_reordered_messages_never_repeat_or_go_back(
    tc: EmulatorClient, rabbitmq: RabbitMQServer
) -> None:
    task = tc.create_task("taskcluster", pending_then(
        {"runs": runs("running"), "seconds": 0.4},
        {"runs": runs("exception:worker-shutdown", "pending"), "seconds": 0.4},
        {"runs": runs("exception:worker-shutdown", "running"), "seconds": 0.4},
        {"runs": runs("exception:worker-shutdown", "completed")},
    ))
    # run 0's `running` goes out after the retry's messages: it must not move the task back
    tc.reorder_messages(1, exchange="task-running", task_id=task)
    tc.duplicate_messages(10, task_id=task)
    async with backend(tc, rabbitmq) as tcb:
        rec = Recorder()
        rec.watch(tcb.observe(task, policy=PUSH_ONLY))
        events = await rec.finished()
    stats = tc.pulse()
    assert stats["duplicated"] >= 2 and stats["reordered"] == 1
    keys = [order(e) for e in events]
    assert keys == sorted(keys)  # never backwards
    changes = [(e.native_status, tuple((r.runId, r.state) for r in e.snapshot.runs))
               for e in events]
    assert len(changes) == len(set(changes))  # never the same change twice
    assert [e.sequence for e in events] == list(range(len(events)))
    assert events[-1].state == TaskState.COMPLETED and len(events[-1].snapshot.runs) == 2
    assert set(rec.vias()[1:]) == {"push"}


async def test_a_killed_broker_hands_over_to_polls_and_nothing_is_lost(
    tc: EmulatorClient, rabbitmq: RabbitMQServer
) -> None:
    task = tc.create_task("taskcluster", pending_then(
        {"runs": runs("running"), "seconds": 6.0},
        {"runs": runs("completed")},
    ))
    policy = PollPolicy(interval=0.3, reconcile_interval=60.0, jitter=0.0, request_timeout=5.0)
    async with backend(tc, rabbitmq) as tcb:
        rec = Recorder()
        rec.watch(tcb.observe(task, policy=policy))
        await eventually(lambda: TaskState.RUNNING in rec.states(), "running by push")
        await asyncio.to_thread(rabbitmq.kill)
        await rec.finished()
    assert rec.states() == [TaskState.PENDING, TaskState.RUNNING, TaskState.COMPLETED]
    assert rec.vias() == ["poll", "push", "poll"]


async def test_a_broker_back_resumes_push_and_polls_slow_down(
    tc: EmulatorClient, rabbitmq: RabbitMQServer
) -> None:
    forever = tc.create_task("taskcluster", pending_then({"runs": runs("running")}))
    policy = PollPolicy(interval=0.25, reconcile_interval=60.0, jitter=0.0, request_timeout=5.0)
    async with backend(tc, rabbitmq) as tcb:
        rec = Recorder()
        rec.watch(tcb.observe(forever, policy=policy))
        await eventually(lambda: TaskState.RUNNING in rec.states(), "running by push")
        assert rec.vias() == ["poll", "push"]

        async def polls_in(seconds: float) -> int:
            before = tc.requests()["by_task"].get(forever, 0)
            await asyncio.sleep(seconds)
            return int(tc.requests()["by_task"].get(forever, 0) - before)

        assert await polls_in(1.5) == 0  # live: only reconciliation, a minute apart
        await asyncio.to_thread(rabbitmq.kill)
        await asyncio.sleep(0.5)
        assert await polls_in(1.5) >= 3  # down: back at the interval
        await asyncio.to_thread(rabbitmq.start)
        await eventually(lambda: len(bindings(rabbitmq)) == 6, "the task bound again")
        await eventually(lambda: tc.pulse()["connected"], "the emulator reconnected")
        await asyncio.sleep(0.5)  # the reconciliation poll that follows the reconnection
        assert await polls_in(1.5) == 0  # live again: polls back to reconcile_interval
        # and new changes arrive by push
        later = tc.create_task("taskcluster", LIFECYCLE)
        rec2 = Recorder()
        rec2.watch(tcb.observe(later, policy=PUSH_ONLY))
        await rec2.finished()
        assert rec2.vias() == ["poll", "push", "push"]


async def test_a_group_is_observed_by_push(tc: EmulatorClient, rabbitmq: RabbitMQServer) -> None:
    group = tc.create_task("taskcluster", pending_then(
        {"runs": runs("running"), "seconds": 0.3}, {"runs": runs("completed")}
    ))
    members = [group] + [
        tc.create_task("taskcluster", pending_then(
            {"runs": runs("running"), "seconds": 0.3 * i}, {"runs": runs("failed")}
        ), taskGroupId=group)
        for i in (2, 3)
    ]
    async with backend(tc, rabbitmq) as tcb:
        rec = Recorder()
        rec.watch(tcb.observe_group(group, policy=PUSH_ONLY))
        events = await rec.finished()
    by_task: dict[str, list[TaskEvent[Any]]] = {}
    for event in events:
        by_task.setdefault(event.task_id, []).append(event)
    assert sorted(by_task) == sorted(members)
    for task, seen in by_task.items():
        assert [e.via for e in seen] == ["poll", "push", "push"], task
        assert seen[-1].state.terminal


async def test_a_task_added_to_a_group_is_followed_by_push_at_once(
    tc: EmulatorClient, rabbitmq: RabbitMQServer
) -> None:
    decision = tc.create_task("taskcluster", pending_then(
        {"runs": runs("running"), "seconds": 30.0}, {"runs": runs("completed")}
    ))
    async with backend(tc, rabbitmq) as tcb:
        rec = Recorder()
        sub = rec.watch(tcb.observe_group(decision, policy=PUSH_ONLY))
        await eventually(lambda: TaskState.RUNNING in rec.states(), "the decision task running")
        # the group is bound on task-defined by its id: the new task is announced
        await eventually(
            lambda: any(b["routing_key"] == f"primary.*.*.*.*.*.*.*.{decision}.#"
                        for b in bindings(rabbitmq)),
            "the group's binding",
        )
        child = tc.create_task("taskcluster", pending_then(
            {"runs": runs("running"), "seconds": 0.3}, {"runs": runs("completed")}
        ), taskGroupId=decision)

        def child_states() -> list[TaskState]:
            return [e.state for e in rec.events if e.task_id == child]

        await eventually(lambda: TaskState.COMPLETED in child_states(), "the child completed")
        # long before the decision task ends (a listing would only come then)
        assert [e.state for e in rec.events if e.task_id == decision][-1] == TaskState.RUNNING
        assert child_states() == [TaskState.PENDING, TaskState.RUNNING, TaskState.COMPLETED]
        assert [e.via for e in rec.events if e.task_id == child][1:] == ["push", "push"]
        sub.dispose()
        await eventually(lambda: not bindings(rabbitmq), "no binding left", 20)


async def test_disposal_removes_the_bindings(
    tc: EmulatorClient, rabbitmq: RabbitMQServer
) -> None:
    tasks = [tc.create_task("taskcluster", pending_then({"runs": runs("running")}))
             for _ in range(2)]
    async with backend(tc, rabbitmq) as tcb:
        recs = [Recorder() for _ in tasks]
        subs = [
            rec.watch(tcb.observe(t, policy=PUSH_ONLY)) for rec, t in zip(recs, tasks, strict=True)
        ]
        await eventually(lambda: all(TaskState.RUNNING in r.states() for r in recs), "running")
        keys = {(b["exchange"].rsplit("/", 1)[1], b["routing_key"]) for b in bindings(rabbitmq)}
        assert {k for _, k in keys} == {f"primary.{t}.#" for t in tasks}
        assert len(keys) == 12
        subs[0].dispose()
        await eventually(lambda: len(bindings(rabbitmq)) == 6, "one task unbound", 20)
        assert {b["routing_key"] for b in bindings(rabbitmq)} == {f"primary.{tasks[1]}.#"}
        subs[1].dispose()
        await eventually(lambda: not bindings(rabbitmq), "no binding left", 20)


async def test_the_amqp_password_never_shows(
    tc: EmulatorClient, rabbitmq: RabbitMQServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    password = "Pulse-s3cret-9f8e7d"
    wrong = "Wr0ng-s3cret-1a2b3c"
    rabbitmq.ctl("add_user", "pulseuser", password)
    rabbitmq.ctl("set_permissions", "-p", "/", "pulseuser", ".*", ".*", ".*")
    host = rabbitmq.url.rsplit("@", 1)[1]
    task = tc.create_task("taskcluster", LIFECYCLE)
    texts: list[str] = []
    good = TaskclusterBackend(
        tc.api_url("taskcluster"), pulse_url=f"amqp://pulseuser:{password}@{host}"
    )
    async with good:
        texts.append(repr(good))
        rec = Recorder()
        rec.watch(good.observe(task, policy=PUSH_ONLY))
        await rec.finished()
        assert rec.vias() == ["poll", "push", "push"]
    refused = TaskclusterBackend(
        tc.api_url("taskcluster"), pulse_url=f"amqp://pulseuser:{wrong}@{host}"
    )
    later = tc.create_task("taskcluster", [{"runs": runs("running")}])
    async with refused:
        texts.append(repr(refused))
        rec = Recorder()
        rec.watch(refused.observe(later, policy=PollPolicy(interval=0.2)))
        await eventually(
            lambda: any("login refused" in r.getMessage() for r in caplog.records),
            "the refused login in the log",
        )
        assert rec.vias() == ["poll"]  # polls go on
    formatter = logging.Formatter()
    for record in caplog.records:
        texts.append(formatter.format(record))
    assert texts
    for text in texts:
        assert password not in text and wrong not in text
