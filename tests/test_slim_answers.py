"""Slim answers (issue 15, item 3): in the hub's rounds a batch entry is read only for its change
key; the full snapshot model is validated only when that key moved, and a large batch leaves
the loop to other tasks while it is being settled.

Each test serves a batch API's real answer shape from a HostileServer (or the emulator) whose
answers the test changes between rounds, and counts the full validations the backend makes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from reactive_tasks import PollPolicy, ProtocolError, TaskEvent, TaskState
from reactive_tasks.backends import GreenCloudBackend, IExecBackend, TaskclusterBackend
from reactive_tasks.backends.greencloud import GreenCloudListEntry
from reactive_tasks.backends.iexec import _abi
from reactive_tasks.backends.taskcluster import _source as tc_source
from reactive_tasks.emulator import EmulatorClient
from reactive_tasks.emulator.iexec import HUB_ADDRESS, create_deal
from tests.hostile import HostileServer, RawRequest, Reply

POLICY = PollPolicy(interval=0.05, max_interval=0.5, jitter=0.0, request_timeout=20.0)
N = 1000
TC_IDS = [f"{i:08d}QaC{'a' * 10}A" for i in range(N)]
GC_IDS = [f"65a0{i:020x}" for i in range(N)]


def tc_status(task_id: str, state: str, **extra: Any) -> dict[str, Any]:
    """A task status structure as the queue writes it, one run in ``state``."""
    run = {
        "runId": 0, "state": state, "reasonCreated": "scheduled",
        "reasonResolved": None if state in ("pending", "running") else state,
        "workerGroup": "g", "workerId": "w", "scheduled": "2026-01-01T00:00:00.000Z",
        "started": "2026-01-01T00:00:01.000Z",
    }  # fmt: skip
    status = {
        "taskId": task_id, "provisionerId": "p", "workerType": "w", "taskQueueId": "p/w",
        "schedulerId": "-", "projectId": "none", "taskGroupId": task_id,
        "deadline": "2030-01-01T00:00:00.000Z", "expires": "2031-01-01T00:00:00.000Z",
        "retriesLeft": 5, "state": state, "runs": [run],
    }  # fmt: skip
    status.update(extra)
    return status


class Queue:
    """A Taskcluster queue whose batch endpoint answers from ``statuses``; counts rounds."""

    def __init__(self, ids: list[str]) -> None:
        self.statuses = {i: tc_status(i, "running") for i in ids}
        self.rounds = 0

    def __call__(self, request: RawRequest) -> Reply:
        if request.method == "POST" and request.path.endswith("/tasks/status"):
            self.rounds += 1
            ids = request.json()["taskIds"]
            entries = [{"taskId": i, "status": self.statuses[i]} for i in ids]
            return Reply.json({"statuses": entries})
        return Reply.json({"code": "ResourceNotFound", "message": "no"}, status=404)


def counting(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> list[int]:
    """Counts the calls of ``owner.name`` from now on (a model's ``model_validate``, a decoder,
    a hook); ``monkeypatch`` puts the original back when the test ends."""
    calls = [0]
    original = getattr(owner, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


class Watcher:
    """Every event and the error (if any) of each watched task."""

    def __init__(self, backend: Any, ids: list[str], **identity: Any) -> None:
        self.events: dict[str, list[TaskEvent[Any]]] = {i: [] for i in ids}
        self.errors: dict[str, BaseException] = {}
        self.done: dict[str, asyncio.Event] = {i: asyncio.Event() for i in ids}
        self.subs = [
            backend.observe(i, policy=POLICY, **identity).subscribe(
                on_next=self.events[i].append,
                on_error=lambda e, i=i: self._end(i, e),
                on_completed=lambda i=i: self._end(i, None),
            )
            for i in ids
        ]

    def _end(self, task_id: str, error: BaseException | None) -> None:
        if error is not None:
            self.errors[task_id] = error
        self.done[task_id].set()

    def dispose(self) -> None:
        for sub in self.subs:
            sub.dispose()


async def until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Wait (without a timing assertion: the bound only keeps a broken run from hanging)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)
    assert condition(), what


@contextlib.asynccontextmanager
async def watching(queue: Queue, ids: list[str]) -> AsyncIterator[Watcher]:
    """``ids`` watched through a Taskcluster backend on ``queue``, every first event in; the
    watches are disposed and the backend closed on the way out."""
    with HostileServer(queue) as server:
        backend = TaskclusterBackend(server.url, policy=POLICY)
        watcher = Watcher(backend, ids)
        try:
            await until(lambda: all(watcher.events.values()), "every first event")
            yield watcher
        finally:
            watcher.dispose()
            await backend.aclose()


async def more_rounds(queue: Queue, count: int) -> None:
    """Wait until ``queue`` has answered ``count`` more batch rounds."""
    rounds = queue.rounds
    await until(lambda: queue.rounds >= rounds + count, f"{count} more rounds")


async def test_taskcluster_validates_only_entries_whose_key_moved(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    queue = Queue(TC_IDS)
    validated = counting(monkeypatch, tc_source._BatchEntry, "model_validate")
    async with watching(queue, TC_IDS) as watcher:
        assert validated[0] == N  # the first round builds every snapshot
        await more_rounds(queue, 3)
        assert validated[0] == N, "nothing moved: no entry validated again"
        queue.statuses[TC_IDS[7]] = tc_status(TC_IDS[7], "completed")
        await watcher.done[TC_IDS[7]].wait()
        await more_rounds(queue, 2)
        assert validated[0] == N + 1, "one of 1,000 moved: one validation"
    events = watcher.events[TC_IDS[7]]
    assert [e.state for e in events] == [TaskState.RUNNING, TaskState.COMPLETED]
    assert isinstance(events[-1].snapshot, tc_source.TaskclusterStatus)
    assert events[-1].snapshot.runs[0].state == "completed"
    assert all(len(e) == 1 for i, e in watcher.events.items() if i != TC_IDS[7])


async def test_taskcluster_malformed_key_fails_at_once_other_fields_when_the_key_moves() -> None:
    """A malformed key field is a ProtocolError in the round it appears. A malformed field
    outside the key is not validated while the key stays (nothing of that answer is used);
    it is a ProtocolError in the round the key moves."""
    ids = TC_IDS[:4]  # one more, so that rounds stay batched when one task has ended
    key_bad, other_bad, fine = ids[:3]
    queue = Queue(ids)
    async with watching(queue, ids) as watcher:
        queue.statuses[key_bad]["runs"][0]["state"] = 7
        queue.statuses[other_bad]["deadline"] = "not a date"
        await more_rounds(queue, 3)
        assert set(watcher.errors) == {key_bad}
        assert "'status.runs.0.state'" in str(watcher.errors[key_bad])
        queue.statuses[other_bad] = tc_status(other_bad, "completed", deadline="not a date")
        queue.statuses[fine] = tc_status(fine, "completed")
        await until(lambda: len(watcher.errors) == 2, "the moved key's error")
        await watcher.done[fine].wait()
    error = watcher.errors[other_bad]
    assert isinstance(error, ProtocolError) and "'status.deadline'" in error.message
    assert isinstance(watcher.errors[key_bad], ProtocolError)
    assert fine not in watcher.errors
    assert [e.state for e in watcher.events[fine]] == [TaskState.RUNNING, TaskState.COMPLETED]


class CompactQueue(Queue):
    """``Queue`` writing compact JSON, as the real queue does (the session's entry memo peeks at
    ``{"taskId":"...`` to find an entry's task); ``texts`` overrides an entry's whole text."""

    def __init__(self, ids: list[str]) -> None:
        super().__init__(ids)
        self.texts: dict[str, str] = {}

    def __call__(self, request: RawRequest) -> Reply:
        if request.method == "POST" and request.path.endswith("/tasks/status"):
            self.rounds += 1
            entries = [
                self.texts.get(i)
                or json.dumps({"taskId": i, "status": self.statuses[i]}, separators=(",", ":"))
                for i in request.json()["taskIds"]
            ]
            body = '{"statuses":[' + ",".join(entries) + "]}"
            return Reply.of(200, body.encode(), headers={"Content-Type": "application/json"})
        return super().__call__(request)


async def test_the_entry_memo_answers_only_entries_whose_text_is_the_kept_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once a task read the same twice, its unchanged entry is answered from the session's
    memo without decoding. Whatever else comes in its place is decoded and read as always: a
    field outside the key that moved (no event), a malformed key field (that task's
    ProtocolError), a new state (an event), the same status written with other spacing (no
    event), and a task repeated in the page (its first entry counts)."""
    ids = TC_IDS[:6]
    moved, broken, done, spaced, repeated, calm = ids
    queue = CompactQueue(ids)
    async with watching(queue, ids) as watcher:
        await more_rounds(queue, 3)
        slim_reads = counting(monkeypatch, tc_source, "_slim_entry")
        await more_rounds(queue, 3)
        assert slim_reads[0] == 0, "unchanged entries are not decoded"

        queue.statuses[moved]["runs"][0]["started"] = "2026-01-01T00:00:02.000Z"
        queue.statuses[broken]["state"] = "bogus"
        queue.statuses[done] = tc_status(done, "completed")
        whole = {"taskId": spaced, "status": queue.statuses[spaced]}
        queue.texts[spaced] = json.dumps(whole, indent=1)
        first = json.dumps({"taskId": repeated, "status": queue.statuses[repeated]})
        second = json.dumps({"taskId": repeated, "status": tc_status(repeated, "failed")})
        queue.texts[repeated] = first + "," + second
        await watcher.done[done].wait()
        await until(lambda: broken in watcher.errors, "the malformed key's error")
        await more_rounds(queue, 3)
    assert set(watcher.errors) == {broken}
    assert isinstance(watcher.errors[broken], ProtocolError)
    assert [e.state for e in watcher.events[done]] == [TaskState.RUNNING, TaskState.COMPLETED]
    for task_id in (moved, spaced, repeated, calm):
        assert [e.state for e in watcher.events[task_id]] == [TaskState.RUNNING], task_id
        assert not watcher.done[task_id].is_set()


async def test_a_changed_entry_is_built_straight_from_its_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An entry whose kept text stopped matching is validated straight from its text, taken to
    end where the next entry starts: a changed task gets the event it gets when decoded. A
    guessed end that is wrong (the queue's entry separator inside a moved field), an entry
    about another task, and a malformed one are decoded and read as always."""
    ids = TC_IDS[:6]
    changed, nested, other, broken, calm, last = ids
    queue = CompactQueue(ids)
    async with watching(queue, ids) as watcher:
        await more_rounds(queue, 3)
        direct = counting(monkeypatch, tc_source.TaskclusterSource, "_read_entry_text")
        validated = counting(monkeypatch, tc_source._BatchEntry, "model_validate")

        queue.statuses[changed] = tc_status(changed, "completed")
        queue.statuses[nested] = tc_status(
            nested, "failed", note=[1, {"taskId": nested, "status": "a decoy"}]
        )
        queue.statuses[other] = tc_status(TC_IDS[9], "completed")
        queue.statuses[broken] = tc_status(broken, "completed", retriesLeft="many")
        await until(lambda: watcher.done[changed].is_set() and len(watcher.errors) == 2,
                    "the changed task's end and two errors")
        await more_rounds(queue, 2)
    assert direct[0] == 4, "the four moved entries before the last were read from their text"
    # built from text: the changed one; decoded and validated: the other three (once a round
    # while they stay, for the two whose task ends with an error only once)
    assert validated[0] >= 3
    assert set(watcher.errors) == {other, broken}
    assert "'status.retriesLeft'" in str(watcher.errors[broken])
    assert TC_IDS[9] in str(watcher.errors[other])
    final = watcher.events[changed][-1]
    assert final.state is TaskState.COMPLETED
    expected = tc_source.TaskclusterStatus.model_validate(queue.statuses[changed])
    assert final.snapshot == expected
    assert [e.state for e in watcher.events[nested]] == [TaskState.RUNNING, TaskState.FAILED]
    assert watcher.events[nested][-1].snapshot.model_extra == {
        "note": [1, {"taskId": nested, "status": "a decoy"}]
    }
    for task_id in (calm, last):
        assert [e.state for e in watcher.events[task_id]] == [TaskState.RUNNING], task_id


async def test_a_large_batch_gives_the_loop_turns_while_it_settles() -> None:
    """A 1,000-entry answer is settled in slices: a ticker on the loop runs between the first
    and the last event of the round (on main the whole batch ran in one loop step)."""
    queue = Queue(TC_IDS)
    ticks = [0]

    async def ticker() -> None:
        while True:
            ticks[0] += 1
            await asyncio.sleep(0)

    seen: list[int] = []
    with HostileServer(queue) as server:
        backend = TaskclusterBackend(server.url, policy=POLICY)
        running = asyncio.get_running_loop().create_task(ticker())
        subs = [
            backend.observe(i).subscribe(on_next=lambda e: seen.append(ticks[0]))
            for i in TC_IDS
        ]
        try:
            await until(lambda: len(seen) >= N, "every first event")
        finally:
            for sub in subs:
                sub.dispose()
            running.cancel()
            await backend.aclose()
    # The first N events are the first round's: one batch request, one answer.
    assert seen[N - 1] > seen[0], "the ticker ran while the batch was being settled"


class TaskList:
    """GreenCloud's list endpoint from ``rows``; every record shows its task assigned."""

    def __init__(self, ids: list[str]) -> None:
        self.rows = {
            i: {"id": i, "issued": "1700000000", "progress": 10, "status": 0} for i in ids
        }
        self.rounds = 0

    def __call__(self, request: RawRequest) -> Reply:
        if request.path == "/v1/task/list":
            self.rounds += 1
            return Reply.json(list(self.rows.values()))
        task_id = request.path.rsplit("/", 1)[-1]
        return Reply.json({
            "functionId": "f" * 24, "issued": "1700000000", "assigned": "1700000001",
            "progress": self.rows[task_id]["progress"],
        })  # fmt: skip


async def test_greencloud_validates_only_rows_whose_key_moved(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    listing = TaskList(GC_IDS)
    validated = counting(monkeypatch, GreenCloudListEntry, "model_validate")
    with HostileServer(listing) as server:
        backend = GreenCloudBackend(server.url, token="t0k3n", policy=POLICY)
        watcher = Watcher(backend, GC_IDS)
        try:
            await until(lambda: all(watcher.events.values()), "every first event")
            first = validated[0]
            rounds = listing.rounds
            await until(lambda: listing.rounds >= rounds + 3, "three more rounds")
            assert validated[0] == first, "nothing moved: no row validated again"
            listing.rows[GC_IDS[3]]["progress"] = 50
            await until(lambda: len(watcher.events[GC_IDS[3]]) == 2, "the progress event")
            rounds = listing.rounds
            await until(lambda: listing.rounds >= rounds + 2, "two more rounds")
            assert validated[0] == first + 1, "one of 1,000 moved: one validation"
        finally:
            watcher.dispose()
            await backend.aclose()
    moved = watcher.events[GC_IDS[3]][-1]
    assert moved.progress == 50.0 and moved.snapshot.progress == 50.0
    assert moved.state is TaskState.RUNNING and moved.snapshot.assigned
    assert all(len(e) == 1 for i, e in watcher.events.items() if i != GC_IDS[3])


async def test_iexec_decodes_only_tasks_whose_key_moved(
    emulator: EmulatorClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole viewTask tuple is decoded only when status or statusName moved."""
    _, tasks = create_deal(
        emulator, [{"status": "ACTIVE", "polls": 6}, {"status": "COMPLETED"}], count=3
    )
    decoded = counting(monkeypatch, _abi, "decode_task")
    backend = IExecBackend(emulator.api_url("iexec") + "/rpc", HUB_ADDRESS, policy=POLICY)
    watcher = Watcher(backend, list(tasks))
    try:
        for task in tasks:
            await watcher.done[task].wait()
    finally:
        watcher.dispose()
        await backend.aclose()
    assert not watcher.errors
    for task in tasks:
        assert [e.native_status for e in watcher.events[task]] == ["ACTIVE", "COMPLETED"]
        assert watcher.events[task][-1].snapshot.statusName == "COMPLETED"
    assert decoded[0] == 2 * len(tasks), "six or seven reads per task, two decodes"
