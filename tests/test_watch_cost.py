"""What a watched task costs the engine (issue 15): subscribing goes straight to the hub, an
unchanged batch answer is settled on its slim key alone, and a watch keeps few objects alive.

A Taskcluster queue served by a HostileServer answers the batch endpoint; the tests count calls
and objects, never time.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from typing import Any

import pytest
from reactivex import operators as ops
from reactivex.scheduler import CurrentThreadScheduler

from reactive_tasks import TaskEvent, TaskState
from reactive_tasks.backends import TaskclusterBackend
from reactive_tasks.testing import watched_tasks
from tests.hostile import HostileServer
from tests.test_slim_answers import (
    POLICY,
    TC_IDS,
    Queue,
    Watcher,
    counting,
    tc_status,
    until,
)

IDS = TC_IDS[:200]


async def test_an_unchanged_batch_answer_is_settled_on_its_slim_key_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rounds in which nothing moved read no order key (nor build or interpret anything); a
    task that moves is read in full and its event arrives."""
    queue = Queue(IDS)
    with HostileServer(queue) as server:
        backend = TaskclusterBackend(server.url, policy=POLICY)
        watcher = Watcher(backend, IDS)
        try:
            await until(lambda: all(watcher.events.values()), "every first event")
            ordered = counting(monkeypatch, TaskclusterBackend, "order_key")
            rounds = queue.rounds
            await until(lambda: queue.rounds >= rounds + 3, "three more rounds")
            assert ordered[0] == 0, "an unchanged answer needs no order key"
            queue.statuses[IDS[3]] = tc_status(IDS[3], "completed")
            await watcher.done[IDS[3]].wait()
            assert ordered[0] == 1, "the answer that moved is ordered against the last"
        finally:
            watcher.dispose()
            await backend.aclose()
    assert [e.state for e in watcher.events[IDS[3]]] == [TaskState.RUNNING, TaskState.COMPLETED]
    assert all(len(e) == 1 for i, e in watcher.events.items() if i != IDS[3])


async def test_a_steady_watch_keeps_few_objects_for_the_collector() -> None:
    """Every object a watch keeps alive is scanned by each full garbage collection: once its
    first event is in and rounds go on unchanged, a watch (its subscription, the hub's records,
    the event with its snapshot model, plus this test's own list and callback) keeps at most
    13 objects the collector tracks (12 here). reactivex's own subscribe machinery and a set of
    field names per model kept 26; a disposable apart from the subscription and a ``Reading``
    in the change key (a tuple subclass holding an enum member, never untracked) kept 15."""
    queue = Queue([*IDS, *TC_IDS[900:902]])
    with HostileServer(queue) as server:
        backend = TaskclusterBackend(server.url, policy=POLICY)
        warm = Watcher(backend, TC_IDS[900:902])  # the session, the hub, first connections
        await until(lambda: all(warm.events.values()), "the warm-up's first events")
        warm.dispose()
        events: dict[str, list[TaskEvent[Any]]] = {i: [] for i in IDS}
        gc.collect()
        before = len(gc.get_objects())
        subs = [backend.observe(i).subscribe(on_next=events[i].append) for i in IDS]
        try:
            await until(lambda: all(events.values()), "every first event")
            rounds = queue.rounds
            await until(lambda: queue.rounds >= rounds + 3, "three more rounds")
            gc.collect()
            per_watch = (len(gc.get_objects()) - before) / len(IDS)
        finally:
            for sub in subs:
                sub.dispose()
            await backend.aclose()
    assert per_watch <= 13, f"{per_watch:.1f} tracked objects per watch"


async def test_kept_events_share_their_set_of_fields_and_copies_stay_apart() -> None:
    """The latest event of each watch, its snapshot and the snapshot's runs share one set of
    set fields per shape (pydantic gives each instance its own, hundreds of bytes); copies
    with updates get their own, and what each model says was set does not change."""
    queue = Queue(IDS[:2])
    with HostileServer(queue) as server:
        backend = TaskclusterBackend(server.url, policy=POLICY)
        watcher = Watcher(backend, IDS[:2])
        try:
            await until(lambda: all(watcher.events.values()), "every first event")
        finally:
            watcher.dispose()
            await backend.aclose()
    first, second = (watcher.events[i][0] for i in IDS[:2])
    assert first.model_fields_set is second.model_fields_set
    assert first.snapshot.model_fields_set is second.snapshot.model_fields_set
    assert first.snapshot.runs[0].model_fields_set is second.snapshot.runs[0].model_fields_set
    assert first.snapshot.model_fields_set == set(tc_status(IDS[0], "running"))
    assert "priority" not in first.snapshot.model_dump(exclude_unset=True)
    copied = first.model_copy(update={"sequence": 7})
    assert copied.sequence == 7 and first.sequence == 0
    assert copied.model_fields_set is not first.model_fields_set
    assert second.model_fields_set == first.model_fields_set == copied.model_fields_set


async def test_subscribe_hands_callbacks_to_the_hub_and_keeps_reactivex_semantics(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A plain subscribe schedules nothing on reactivex's trampoline; a second subscriber gets
    the latest event during its subscribe (through the trampoline, as reactivex would), and
    operators, completion and dispose-at-once behave as for any Observable."""
    trampolined = counting(monkeypatch, CurrentThreadScheduler, "schedule")
    queue = Queue(IDS[:3])
    with HostileServer(queue) as server:
        backend = TaskclusterBackend(server.url, policy=POLICY)
        watcher = Watcher(backend, IDS[:3])
        try:
            await until(lambda: all(watcher.events.values()), "every first event")
            assert trampolined[0] == 0, "subscribing ran reactivex's trampoline"

            replayed: list[TaskEvent[Any]] = []
            completed = threading.Event()
            late = backend.observe(IDS[0]).pipe(ops.map(lambda e: e), ops.take(1))
            late.subscribe(on_next=replayed.append, on_completed=completed.set)
            assert [e.sequence for e in replayed] == [0], "the replay came within subscribe"
            assert completed.is_set()
            assert trampolined[0] >= 1

            # dispose stops polling at once: no watch is left for the task
            stopped = backend.observe(IDS[1]).subscribe()
            assert watched_tasks(backend) == 3
            watcher.subs[1].dispose()
            stopped.dispose()
            assert watched_tasks(backend) == 2

            # on_completed after the terminal event, through an operator chain
            ended = asyncio.Event()
            states: list[TaskState] = []
            backend.observe(IDS[2]).pipe(ops.map(lambda e: e.state)).subscribe(
                on_next=states.append, on_completed=ended.set
            )
            queue.statuses[IDS[2]] = tc_status(IDS[2], "completed")
            await asyncio.wait_for(ended.wait(), 30)
            assert states == [TaskState.RUNNING, TaskState.COMPLETED]
        finally:
            watcher.dispose()
            await backend.aclose()
