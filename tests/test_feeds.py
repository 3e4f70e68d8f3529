"""Push feeds beside polls: a fake in-process feed drives the hub while the emulator counts polls.

The feed is installed the way a real one is (a backend's ``open_feed``); the test plays the
broker by calling the sink (the hub) on the loop. Polls go over real HTTP to the emulator.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable
from typing import Any

from reactive_tasks import PollPolicy, ProtocolError, TaskEvent, TaskState
from reactive_tasks._board import Board
from reactive_tasks._types import FeedSink, TaskRef
from reactive_tasks.backends import TaskclusterBackend
from reactive_tasks.backends.taskcluster._source import TaskclusterRun, TaskclusterStatus
from reactive_tasks.emulator import EmulatorClient
from reactive_tasks.relay._records import decode_record, event_record
from tests.taskcluster_helpers import step

BATCH = "taskcluster POST /api/queue/v1/tasks/status"
SLOW = PollPolicy(interval=30.0, max_interval=60.0, jitter=0.0, reconcile_interval=60.0)


class FakeFeed:
    """A feed that never connects anywhere: it records what the hub tells it and hands the test
    its sink."""

    def __init__(self) -> None:
        self.watched: list[str] = []
        self.unwatched: list[str] = []
        self.sink: FeedSink | None = None
        self.running = asyncio.Event()
        self.cancelled = False

    def watch(self, ref: TaskRef) -> None:
        self.watched.append(ref.task_id)

    def unwatch(self, ref: TaskRef) -> None:
        self.unwatched.append(ref.task_id)

    async def run(self, sink: FeedSink) -> None:
        self.sink = sink
        self.running.set()
        try:
            await asyncio.Future()
        except asyncio.CancelledError:
            self.cancelled = True
            raise


class PushedTaskcluster(TaskclusterBackend):
    """Taskcluster with the fake feed where Pulse would be."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.feeds: list[FakeFeed] = []

    async def __aenter__(self) -> PushedTaskcluster:
        return self

    def open_feed(self) -> FakeFeed:
        feed = FakeFeed()
        self.feeds.append(feed)
        return feed


class Watcher:
    """One subscription's events and end, with waits that fail instead of hanging."""

    def __init__(self, backend: TaskclusterBackend, task_id: str, policy: PollPolicy) -> None:
        self.events: list[TaskEvent[Any]] = []
        self.error: BaseException | None = None
        self.completed = False
        self._changed = asyncio.Event()
        self.sub = backend.observe(task_id, policy=policy).subscribe(
            self._on_next, self._on_error, self._on_completed
        )

    def _on_next(self, event: TaskEvent[Any]) -> None:
        self.events.append(event)
        self._changed.set()

    def _on_error(self, error: BaseException) -> None:
        self.error = error
        self._changed.set()

    def _on_completed(self) -> None:
        self.completed = True
        self._changed.set()

    async def until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        async def loop() -> None:
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(loop(), timeout)

    @property
    def seen(self) -> list[tuple[str, str, int]]:
        """(via, native status, number of runs) of every event."""
        return [(e.via, e.native_status, len(e.snapshot.runs)) for e in self.events]


async def running_feed(backend: PushedTaskcluster) -> tuple[FakeFeed, FeedSink]:
    assert len(backend.feeds) == 1, "the hub opens its source's feed on its first watch"
    feed = backend.feeds[0]
    await asyncio.wait_for(feed.running.wait(), 5)
    assert feed.sink is not None
    return feed, feed.sink


def with_runs(snapshot: TaskclusterStatus, *specs: str) -> TaskclusterStatus:
    """``snapshot`` with its runs replaced by ``specs`` ("running", "exception:claim-expired")."""
    base = snapshot.runs[0] if snapshot.runs else None
    runs = []
    for run_id, spec in enumerate(specs):
        state, _, reason = spec.partition(":")
        runs.append(TaskclusterRun(
            runId=run_id, state=state,
            reasonCreated="scheduled" if run_id == 0 else "retry",
            reasonResolved=reason or (state if state in ("completed", "failed") else None),
            scheduled=base.scheduled if base else snapshot.deadline,
        ))
    return snapshot.model_copy(update={"runs": tuple(runs), "state": runs[-1].state})


async def polls_of(emulator: EmulatorClient, task_id: str) -> int:
    counts = await asyncio.to_thread(emulator.requests)
    return int(counts["by_task"].get(task_id, 0))


async def test_a_push_arrives_before_any_poll_and_ends_the_watch(
    emulator: EmulatorClient,
) -> None:
    task = emulator.create_task("taskcluster", [step("running")])
    backend = PushedTaskcluster(emulator.api_url("taskcluster"), policy=SLOW)
    ref = backend.task_ref(task)
    watcher = Watcher(backend, task, SLOW)
    feed, sink = await running_feed(backend)
    await watcher.until(lambda: len(watcher.events) == 1)
    assert feed.watched == [task]
    sink.feed_snapshot(ref, with_runs(watcher.events[0].snapshot, "completed"))
    await watcher.until(lambda: watcher.completed)
    assert watcher.seen == [("poll", "running", 1), ("push", "completed", 1)]
    assert watcher.events[-1].state is TaskState.COMPLETED
    assert await polls_of(emulator, task) == 1, "the change came long before the next poll"
    assert feed.unwatched == [task], "a completed watch is unbound from the feed"
    # What delivered the change survives the relay's records and `watch --json`.
    pushed = watcher.events[-1]
    relayed = decode_record(event_record(pushed), TaskEvent[TaskclusterStatus]).event
    assert relayed is not None and relayed.via == "push" and relayed.snapshot == pushed.snapshot
    out = io.StringIO()
    Board([], mode="json", out=out).update(pushed)
    assert json.loads(out.getvalue().splitlines()[-1])["via"] == "push"
    await backend.aclose()


async def polls_live_then_down(
    emulator: EmulatorClient, reconcile_interval: float, window: float
) -> tuple[int, int, Watcher]:
    """Polls of one running task (interval=0.2) in ``window`` s with the feed live (after its
    reconciliation round), then in ``window`` s after the feed went down."""
    task = emulator.create_task("taskcluster", [step("running")])
    policy = PollPolicy(
        interval=0.2, max_interval=1.0, jitter=0.0, reconcile_interval=reconcile_interval
    )
    async with PushedTaskcluster(emulator.api_url("taskcluster"), policy=policy) as backend:
        watcher = Watcher(backend, task, policy)
        _, sink = await running_feed(backend)
        await watcher.until(lambda: len(watcher.events) == 1)
        sink.feed_live(True)
        await asyncio.sleep(0.3)  # the reconciliation round
        before = await polls_of(emulator, task)
        await asyncio.sleep(window)
        live = await polls_of(emulator, task) - before
        sink.feed_live(False)
        before = await polls_of(emulator, task)
        await asyncio.sleep(window)
        down = await polls_of(emulator, task) - before
        watcher.sub.dispose()
    return live, down, watcher


async def test_while_live_polls_come_only_at_the_reconcile_interval(
    emulator: EmulatorClient,
) -> None:
    live, down, watcher = await polls_live_then_down(emulator, 1.5, window=3.0)
    assert live <= 3, f"3 s live at reconcile_interval=1.5: at most 3 polls, saw {live}"
    assert down >= 2 * max(live, 2), f"feed down: back to interval=0.2 ({down} vs {live} polls)"
    assert watcher.seen == [("poll", "running", 1)]


async def test_a_feed_going_down_pulls_polls_back_to_the_interval_at_once(
    emulator: EmulatorClient,
) -> None:
    """Watches scheduled a reconcile_interval out do not wait for it once the feed is down."""
    live, down, _ = await polls_live_then_down(emulator, 60.0, window=1.5)
    assert live == 0, "the next reconciliation poll is a minute away"
    assert down >= 3, f"feed down: polls every 0.2 s again at once, saw {down} in 1.5 s"


async def test_a_feed_coming_up_reconciles_every_task_in_one_batch(
    emulator: EmulatorClient,
) -> None:
    """The feed dropped the completion: the reconciliation round on (re)connect recovers it."""
    script = [{**step("running", polls=None), "seconds": 0.5}, step("completed")]
    ids = emulator.create_tasks("taskcluster", 3, script)
    async with PushedTaskcluster(emulator.api_url("taskcluster"), policy=SLOW) as backend:
        watchers = [Watcher(backend, task, SLOW) for task in ids]
        feed, sink = await running_feed(backend)
        for watcher in watchers:
            await watcher.until(lambda w=watcher: len(w.events) == 1)  # type: ignore[misc]
        await asyncio.sleep(0.8)  # every task completes at the server; nobody pushes it
        assert all(len(w.events) == 1 for w in watchers)
        rounds = (await asyncio.to_thread(emulator.requests))["by_route"][BATCH]
        sink.feed_live(True)
        for watcher in watchers:
            await watcher.until(lambda w=watcher: w.completed)  # type: ignore[misc]
    for watcher in watchers:
        assert watcher.seen == [("poll", "running", 1), ("poll", "completed", 1)]
    counts = emulator.requests()
    assert counts["by_route"][BATCH] == rounds + 1, "one batched reconciliation round"
    assert all(counts["by_task"][task] == 2 for task in ids)
    assert sorted(feed.unwatched) == sorted(ids)


async def test_tasks_bound_while_live_are_read_once_more_and_no_others(
    emulator: EmulatorClient,
) -> None:
    """A task bound after its first poll may have changed in between: only it is read again."""
    script = [{**step("running", polls=None), "seconds": 0.5}, step("completed")]
    late, other = emulator.create_tasks("taskcluster", 2, script)
    async with PushedTaskcluster(emulator.api_url("taskcluster"), policy=SLOW) as backend:
        watchers = [Watcher(backend, task, SLOW) for task in (late, other)]
        _, sink = await running_feed(backend)
        sink.feed_live(True)
        for watcher in watchers:
            await watcher.until(lambda w=watcher: len(w.events) == 1)  # type: ignore[misc]
        await asyncio.sleep(0.8)  # both complete at the server before ``late`` was bound
        before = {task: await polls_of(emulator, task) for task in (late, other)}
        sink.feed_bound([TaskRef(late)])
        await watchers[0].until(lambda: watchers[0].completed)
        await asyncio.sleep(0.3)
        assert await polls_of(emulator, late) == before[late] + 1
        assert await polls_of(emulator, other) == before[other], "the others keep their schedule"
        assert watchers[0].seen == [("poll", "running", 1), ("poll", "completed", 1)]
        assert len(watchers[1].events) == 1
        watchers[1].sub.dispose()


async def test_a_poll_in_flight_when_the_feed_comes_up_is_checked_again(
    emulator: EmulatorClient,
) -> None:
    """Its answer may have left before the feed was bound: the reconciliation reads it again."""
    emulator.inject_fault("taskcluster", "slow", delay=0.6, count=1)
    task = emulator.create_task("taskcluster", [step("running")])
    async with PushedTaskcluster(emulator.api_url("taskcluster"), policy=SLOW) as backend:
        watcher = Watcher(backend, task, SLOW)
        _, sink = await running_feed(backend)
        await asyncio.sleep(0.2)  # the first poll is held at the server
        assert not watcher.events
        sink.feed_live(True)
        await watcher.until(lambda: len(watcher.events) == 1)
        for _ in range(60):
            if await polls_of(emulator, task) >= 2:
                break
            await asyncio.sleep(0.05)
        watcher.sub.dispose()
    assert await polls_of(emulator, task) == 2, "one more poll at once, then a minute's wait"


async def test_duplicated_and_stale_pushes_make_no_event(emulator: EmulatorClient) -> None:
    task = emulator.create_task("taskcluster", [step("pending")])
    async with PushedTaskcluster(emulator.api_url("taskcluster"), policy=SLOW) as backend:
        ref = backend.task_ref(task)
        watcher = Watcher(backend, task, SLOW)
        feed, sink = await running_feed(backend)
        await watcher.until(lambda: len(watcher.events) == 1)
        first = watcher.events[0].snapshot
        running = with_runs(first, "running")
        retry = with_runs(first, "exception:claim-expired", "pending")
        sink.feed_snapshot(ref, running)
        sink.feed_snapshot(ref, running)  # at-least-once delivery: a duplicate
        sink.feed_snapshot(ref, first)  # late: pending, before it ran
        sink.feed_snapshot(ref, retry)  # the retry run reads pending, and is newer
        sink.feed_snapshot(ref, running)  # late again: the first run still running
        sink.feed_snapshot(ref, retry)
        await asyncio.sleep(0.05)
        assert not watcher.completed and watcher.error is None
        watcher.sub.dispose()
    assert watcher.seen == [
        ("poll", "pending", 1), ("push", "running", 1), ("push", "pending", 2)
    ]
    assert [e.sequence for e in watcher.events] == [0, 1, 2]
    assert feed.unwatched == [task], "a disposed watch is unbound from the feed"


async def test_a_poll_older_than_a_push_does_not_move_the_task_back(
    emulator: EmulatorClient,
) -> None:
    """The server still answers the first run running; a push has seen its retry already."""
    task = emulator.create_task("taskcluster", [step("running")])
    policy = PollPolicy(interval=0.1, max_interval=1.0, jitter=0.0)
    async with PushedTaskcluster(emulator.api_url("taskcluster"), policy=policy) as backend:
        ref = backend.task_ref(task)
        watcher = Watcher(backend, task, policy)
        _, sink = await running_feed(backend)
        await watcher.until(lambda: len(watcher.events) == 1)
        first = watcher.events[0].snapshot
        sink.feed_snapshot(ref, with_runs(first, "exception:worker-shutdown", "pending"))
        polled = await polls_of(emulator, task)
        while await polls_of(emulator, task) < polled + 3:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.05)
        watcher.sub.dispose()
    assert watcher.seen == [("poll", "running", 1), ("push", "pending", 2)]


async def test_an_unreadable_push_ends_the_watch_like_a_poll(emulator: EmulatorClient) -> None:
    task = emulator.create_task("taskcluster", [step("running")])
    async with PushedTaskcluster(emulator.api_url("taskcluster"), policy=SLOW) as backend:
        watcher = Watcher(backend, task, SLOW)
        feed, sink = await running_feed(backend)
        await watcher.until(lambda: len(watcher.events) == 1)
        broken = watcher.events[0].snapshot.model_copy(update={"state": "completed"})
        sink.feed_snapshot(backend.task_ref(task), broken)  # state differs from its run's
        await watcher.until(lambda: watcher.error is not None)
        sink.feed_snapshot(backend.task_ref(task), broken)  # unwatched now: ignored
    assert isinstance(watcher.error, ProtocolError)
    assert feed.unwatched == [task]
    assert len(watcher.events) == 1


class BrokenFeed(FakeFeed):
    """A feed that breaks its contract: it goes live, then raises when told to."""

    def __init__(self) -> None:
        super().__init__()
        self.breaks = asyncio.Event()

    async def run(self, sink: FeedSink) -> None:
        self.sink = sink
        sink.feed_live(True)
        self.running.set()
        await self.breaks.wait()
        raise RuntimeError("the feed's own bug")


async def test_a_feed_that_dies_leaves_the_polls_at_the_interval(
    emulator: EmulatorClient, caplog: Any
) -> None:
    task = emulator.create_task("taskcluster", [step("running")])
    policy = PollPolicy(interval=0.2, max_interval=1.0, jitter=0.0, reconcile_interval=60.0)

    class Broken(PushedTaskcluster):
        def open_feed(self) -> FakeFeed:
            feed = BrokenFeed()
            self.feeds.append(feed)
            return feed

    async with Broken(emulator.api_url("taskcluster"), policy=policy) as backend:
        watcher = Watcher(backend, task, policy)
        feed, _ = await running_feed(backend)
        await watcher.until(lambda: len(watcher.events) == 1)
        await asyncio.sleep(0.3)
        before = await polls_of(emulator, task)
        assert isinstance(feed, BrokenFeed)
        feed.breaks.set()
        await asyncio.sleep(1.5)
        after = await polls_of(emulator, task)
        watcher.sub.dispose()
    assert after - before >= 3, "polling took over at interval=0.2"
    assert "the push feed stopped with RuntimeError" in caplog.text


async def test_closing_the_backend_cancels_the_feed_and_leaks_nothing(
    emulator: EmulatorClient,
) -> None:
    ids = emulator.create_tasks("taskcluster", 2, [step("running")])
    tasks0 = len(asyncio.all_tasks())
    backend = PushedTaskcluster(emulator.api_url("taskcluster"), policy=SLOW)
    watchers = [Watcher(backend, task, SLOW) for task in ids]
    feed, _ = await running_feed(backend)
    for watcher in watchers:
        await watcher.until(lambda w=watcher: len(w.events) == 1)  # type: ignore[misc]
    watchers[0].sub.dispose()
    assert feed.unwatched == [ids[0]]
    assert not feed.cancelled, "the feed runs as long as its hub"
    await backend.aclose()
    assert feed.cancelled
    assert sorted(feed.watched) == sorted(ids) and sorted(feed.unwatched) == sorted(ids)
    assert len(backend.feeds) == 1, "one feed per hub"
    assert len(asyncio.all_tasks()) == tasks0, asyncio.all_tasks()
