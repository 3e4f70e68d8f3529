"""observe_group: one stream for a whole task group, listed once and polled in batches."""

from __future__ import annotations

import asyncio
import threading

import pytest

from reactive_tasks import TaskNotFound, TaskState, aiter, wait
from reactive_tasks.backends import TaskclusterBackend
from reactive_tasks.emulator import EmulatorClient
from tests.taskcluster_helpers import FAST, UNKNOWN, step

LIST = "taskcluster GET /api/queue/v1/task-group/{id}/list"
BATCH = "taskcluster POST /api/queue/v1/tasks/status"
SINGLE = "taskcluster GET /api/queue/v1/task/{id}/status"


async def test_every_member_until_all_are_terminal(emulator: EmulatorClient) -> None:
    decision = emulator.create_task("taskcluster", [step("running"), step("completed")])
    scripts = {
        "completed": [step("pending"), step("running", polls=2), step("completed")],
        "retried": [step("running"), step("exception:worker-shutdown", "running"),
                    step("exception:worker-shutdown", "completed")],
        "failed": [step("running", polls=3), step("failed")],
        "canceled": [step("pending"), step("exception:canceled")],
    }
    members = {
        name: emulator.create_task("taskcluster", steps, taskGroupId=decision)
        for name, steps in scripts.items()
    }
    other = emulator.create_task("taskcluster", [step("running")])  # another group
    async with TaskclusterBackend(emulator.api_url("taskcluster"), policy=FAST) as backend:
        listed = await backend.list_task_group(decision)
        assert {m.status.taskId for m in listed} == {decision, *members.values()}
        assert all(m.task.taskGroupId == decision for m in listed)
        emulator.reset_requests()
        events = [e async for e in aiter(backend.observe_group(decision))]
    last = {e.task_id: e for e in events}
    assert set(last) == {decision, *members.values()} and other not in last
    assert {name: last[tid].state for name, tid in members.items()} == {
        "completed": TaskState.COMPLETED,
        "retried": TaskState.COMPLETED,
        "failed": TaskState.FAILED,
        "canceled": TaskState.CANCELLED,
    }
    assert len(last[members["retried"]].snapshot.runs) == 2
    for task_id in last:  # per task: sequence numbers in order, one terminal event, last
        mine = [e for e in events if e.task_id == task_id]
        assert [e.sequence for e in mine] == list(range(len(mine)))
        assert [e.state.terminal for e in mine] == [False] * (len(mine) - 1) + [True]
    counts = emulator.requests()["by_route"]
    assert counts[LIST] == 1
    assert counts[BATCH] >= 1, "members are polled together"


async def test_large_group_is_paged_and_batched(emulator: EmulatorClient) -> None:
    decision = emulator.create_task("taskcluster", [step("completed")])
    emulator.create_tasks("taskcluster", 1000, [step("completed")], taskGroupId=decision)
    async with TaskclusterBackend(emulator.api_url("taskcluster"), policy=FAST) as backend:
        seen = {e.task_id async for e in aiter(backend.observe_group(decision))}
    assert len(seen) == 1001
    # 1,000 ids in one batch request; the 1,001st alone is read by its own GET
    assert emulator.requests()["by_route"] == {LIST: 2, BATCH: 1, SINGLE: 1}


async def test_unknown_group_is_an_error(emulator: EmulatorClient) -> None:
    async with TaskclusterBackend(emulator.api_url("taskcluster"), policy=FAST) as backend:
        with pytest.raises(TaskNotFound, match="task group") as info:
            await wait(backend.observe_group(UNKNOWN), timeout=10)
    assert info.value.task_id == UNKNOWN


def test_group_stream_from_a_plain_thread(emulator: EmulatorClient) -> None:
    decision = emulator.create_task("taskcluster", [step("running"), step("completed")])
    emulator.create_tasks("taskcluster", 3, [step("completed")], taskGroupId=decision)
    backend = TaskclusterBackend(emulator.api_url("taskcluster"), policy=FAST)
    done = threading.Event()
    seen: list[str] = []
    backend.observe_group(decision).subscribe(
        on_next=lambda e: seen.append(e.task_id), on_completed=done.set
    )
    assert done.wait(10)
    assert len(set(seen)) == 4
    backend.close()


async def test_disposing_the_group_stream_stops_polling(emulator: EmulatorClient) -> None:
    decision = emulator.create_task("taskcluster", [step("running")])
    emulator.create_tasks("taskcluster", 3, [step("running")], taskGroupId=decision)
    async with TaskclusterBackend(emulator.api_url("taskcluster"), policy=FAST) as backend:
        sub = backend.observe_group(decision).subscribe(lambda e: None)
        await asyncio.sleep(0.15)
        sub.dispose()
        await asyncio.sleep(0.05)
        before = emulator.requests()["total"]
        await asyncio.sleep(0.15)
        assert emulator.requests()["total"] == before
        assert before >= 3
