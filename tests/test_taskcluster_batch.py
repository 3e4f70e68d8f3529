"""Batched polling through POST /api/queue/v1/tasks/status, proved by the emulator's counts."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from reactive_tasks import AuthenticationError, PollPolicy, TaskNotFound, TaskState, wait
from reactive_tasks.backends import TaskclusterBackend
from reactive_tasks.emulator import EmulatorClient
from tests.taskcluster_helpers import FAST, UNKNOWN, step

BATCH = "taskcluster POST /api/queue/v1/tasks/status"
SINGLE = "taskcluster GET /api/queue/v1/task/{id}/status"


async def watch_all(backend: TaskclusterBackend, ids: list[str]) -> list[Any]:
    return list(await asyncio.gather(*(wait(backend.observe(i), timeout=60) for i in ids)))


async def test_one_request_per_thousand_tasks(emulator: EmulatorClient) -> None:
    ids = emulator.create_tasks("taskcluster", 1200, [step("completed")])
    async with TaskclusterBackend(emulator.api_url("taskcluster"), policy=FAST) as backend:
        finals = await watch_all(backend, ids)
    assert {f.state for f in finals} == {TaskState.COMPLETED}
    counts = emulator.requests()
    assert counts["by_route"] == {BATCH: 2}, "1,000 + 200 ids: two requests, none per task"
    assert set(counts["by_task"].values()) == {1}


async def test_every_round_is_batched(emulator: EmulatorClient) -> None:
    rounds = 3
    ids = emulator.create_tasks(
        "taskcluster", 300, [step("running", polls=rounds - 1), step("completed")]
    )
    policy = PollPolicy(interval=0.3, max_interval=1.0, jitter=0.0)
    async with TaskclusterBackend(emulator.api_url("taskcluster"), policy=policy) as backend:
        await watch_all(backend, ids)
    counts = emulator.requests()
    assert set(counts["by_task"].values()) == {rounds}
    assert SINGLE not in counts["by_route"]
    assert counts["by_route"][BATCH] <= 2 * rounds  # one per round (a slow round may split)


async def test_the_hubs_split_is_the_only_one(emulator: EmulatorClient) -> None:
    """``fetch_many`` sends every ref it is given in one request: only the hub splits by
    ``max_batch`` (``test_one_request_per_thousand_tasks`` covers that split)."""
    ids = emulator.create_tasks("taskcluster", 5, [step("completed")])
    async with TaskclusterBackend(emulator.api_url("taskcluster"), policy=FAST) as backend:
        backend.max_batch = 2  # what the hub splits a round by
        refs = [backend.task_ref(i) for i in ids]
        answers = {ref.task_id: snap async for ref, snap in backend.fetch_many(refs)}
        assert {s.state for s in answers.values()} == {"completed"}  # type: ignore[union-attr]
    assert emulator.requests()["by_route"] == {BATCH: 1}, "all it is given, in one request"


class _PageLimit(httpx.AsyncBaseTransport):
    """Asks the batch endpoint for pages of two, to make it answer with continuation tokens."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/tasks/status"):
            request.url = request.url.copy_merge_params({"limit": "2"})
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


async def test_continuation_tokens_are_followed(emulator: EmulatorClient) -> None:
    ids = emulator.create_tasks("taskcluster", 5, [step("completed")])
    async with TaskclusterBackend(
        emulator.api_url("taskcluster"), policy=FAST, transport=_PageLimit()
    ) as backend:
        finals = await watch_all(backend, ids)
    assert {f.task_id for f in finals} == set(ids)
    counts = emulator.requests()
    assert counts["by_route"] == {BATCH: 3}, "pages of 2 + 2 + 1"


async def test_ids_left_out_are_checked_one_by_one(emulator: EmulatorClient) -> None:
    ids = emulator.create_tasks("taskcluster", 2, [step("completed")])
    async with TaskclusterBackend(emulator.api_url("taskcluster"), policy=FAST) as backend:
        results = await asyncio.gather(
            *(wait(backend.observe(i), timeout=10) for i in [*ids, UNKNOWN]),
            return_exceptions=True,
        )
    assert [r.state for r in results[:2]] == [TaskState.COMPLETED] * 2  # type: ignore[union-attr]
    assert isinstance(results[2], TaskNotFound) and results[2].task_id == UNKNOWN
    assert emulator.requests()["by_route"] == {BATCH: 1, SINGLE: 1}


async def test_a_deployment_without_the_batch_endpoint(emulator: EmulatorClient) -> None:
    missing = {"code": "ResourceNotFound", "message": "no such route", "requestInfo": {}}
    emulator.inject_fault("taskcluster", "status", status=404, count=100, body=missing,
                          path_contains="/tasks/status")
    ids = emulator.create_tasks("taskcluster", 3, [step("running"), step("completed")])
    async with TaskclusterBackend(emulator.api_url("taskcluster"), policy=FAST) as backend:
        assert backend.uses_batch_endpoint
        finals = await watch_all(backend, ids)
        assert not backend.uses_batch_endpoint, "remembered"
    assert {f.state for f in finals} == {TaskState.COMPLETED}
    assert emulator.requests()["by_route"] == {BATCH: 1, SINGLE: 6}


async def test_batch_refused_for_one_private_task(emulator: EmulatorClient) -> None:
    public = emulator.create_tasks("taskcluster", 2, [step("running"), step("completed")])
    private = emulator.create_task(
        "taskcluster", [step("running")], clientId="ci/private", accessToken="x" * 44
    )
    async with TaskclusterBackend(emulator.api_url("taskcluster"), policy=FAST) as backend:
        results = await asyncio.gather(
            *(wait(backend.observe(i), timeout=10) for i in [*public, private]),
            return_exceptions=True,
        )
        assert backend.uses_batch_endpoint, "a 403 is no reason to stop batching"
    assert [r.state for r in results[:2]] == [TaskState.COMPLETED] * 2  # type: ignore[union-attr]
    assert isinstance(results[2], AuthenticationError) and results[2].task_id == private


@pytest.mark.parametrize("batch", [False, True])
async def test_batching_can_be_turned_off(emulator: EmulatorClient, batch: bool) -> None:
    ids = emulator.create_tasks("taskcluster", 4, [step("completed")])
    async with TaskclusterBackend(
        emulator.api_url("taskcluster"), policy=FAST, batch=batch
    ) as backend:
        await watch_all(backend, ids)
    expected = {BATCH: 1} if batch else {SINGLE: 4}
    assert emulator.requests()["by_route"] == expected


def reclaimed(every: float | None, polls: int) -> dict[str, Any]:
    """A running step whose run is reclaimed every ``every`` seconds (None: at every read)."""
    spec: dict[str, Any] = {"state": "running"}
    if every is not None:
        spec["reclaimEvery"] = every
    return {"runs": [spec], "polls": polls}


@pytest.mark.parametrize("every", [3600.0, None])
async def test_an_entry_that_reads_the_same_again_is_not_decoded_again(
    emulator: EmulatorClient, monkeypatch: pytest.MonkeyPatch, every: float | None
) -> None:
    """Entries the same, character for character, as the task's last one are answered from the
    session's memo of their text; one whose text moved (``takenUntil`` at each reclaim) is
    read again. Either way the events are the same: one for running, one for completed.

    An entry read again is decoded and slim-read, or, when its task's kept text stopped
    matching (a change, or a reclaim), built straight from its text; each is counted."""
    from reactive_tasks.backends.taskcluster import _source

    slim_reads = [0]
    built = [0]
    real = _source._slim_entry
    real_direct = _source.TaskclusterSource._read_entry_text

    def counted(raw: Any) -> Any:
        slim_reads[0] += 1
        return real(raw)

    def counted_direct(self: Any, text: str) -> Any:
        built[0] += 1
        return real_direct(self, text)

    monkeypatch.setattr(_source, "_slim_entry", counted)
    monkeypatch.setattr(_source.TaskclusterSource, "_read_entry_text", counted_direct)
    polls = 4
    ids = emulator.create_tasks("taskcluster", 3, [reclaimed(every, polls), step("completed")])
    policy = PollPolicy(interval=0.05, max_interval=1.0, jitter=0.0)
    async with TaskclusterBackend(emulator.api_url("taskcluster"), policy=policy) as backend:
        events: dict[str, list[Any]] = {i: [] for i in ids}
        subs = [backend.observe(i).subscribe(events[i].append) for i in ids]
        await watch_all(backend, ids)
        for sub in subs:
            sub.dispose()
    for task_events in events.values():
        assert [e.state for e in task_events] == [TaskState.RUNNING, TaskState.COMPLETED]
    running_reads = 3 * polls
    # every completed entry is new text; of the running ones the first two reads of each task
    # when the text stays (a text is kept once the reading repeats), every one when takenUntil
    # moves at every read
    expected = 3 + (3 * 2 if every is not None else running_reads)
    assert slim_reads[0] + built[0] == expected
    if every is not None:  # completed: the kept running texts stopped matching
        assert built[0] == 2  # the page's last entry (no entry after it to end it) is decoded


def test_the_emulators_batch_answer_is_one_instant(emulator: EmulatorClient) -> None:
    """The emulated queue answers a batch as one read at one instant: runs that start in the
    same answer carry the same stamps, and a task's fixed dates are written as the queue does
    (milliseconds and a Z), the same at every read."""
    ids = emulator.create_tasks("taskcluster", 1000, [step("running", polls=None)])
    url = emulator.api_url("taskcluster") + "/api/queue/v1/tasks/status"
    with httpx.Client(timeout=10) as http:
        first, again = (http.post(url, json={"taskIds": ids}).json() for _ in range(2))
    runs = [entry["status"]["runs"][0] for entry in first["statuses"]]
    assert len({(r["started"], r["takenUntil"]) for r in runs}) == 1
    stamp = runs[0]["started"]
    assert len(stamp) == 24 and stamp[19] == "." and stamp.endswith("Z")
    for before, after in zip(first["statuses"], again["statuses"], strict=True):
        for field in ("deadline", "expires"):
            assert before["status"][field] == after["status"][field]
            assert before["status"][field].endswith("Z") and len(before["status"][field]) == 24
