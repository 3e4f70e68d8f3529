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
    assert counts[LIST] == 2, "listed at the start, and once more to find nothing new"
    assert counts[BATCH] >= 1, "members are polled together"


async def test_large_group_is_paged_and_batched(emulator: EmulatorClient) -> None:
    decision = emulator.create_task("taskcluster", [step("completed")])
    emulator.create_tasks("taskcluster", 1000, [step("completed")], taskGroupId=decision)
    async with TaskclusterBackend(emulator.api_url("taskcluster"), policy=FAST) as backend:
        seen = {e.task_id async for e in aiter(backend.observe_group(decision))}
    assert len(seen) == 1001
    # 1,000 ids in one batch request; the 1,001st alone is read by its own GET. The group
    # is listed twice (two pages each): at the start, and to confirm nothing was added.
    assert emulator.requests()["by_route"] == {LIST: 4, BATCH: 1, SINGLE: 1}


async def test_tasks_added_while_watching_are_picked_up(emulator: EmulatorClient) -> None:
    """A decision task adds children to its group while it runs; they belong to the stream."""
    decision = emulator.create_task(
        "taskcluster", [step("running", polls=3), step("completed")]
    )
    children: list[str] = []
    async with TaskclusterBackend(emulator.api_url("taskcluster"), policy=FAST) as backend:
        events = []
        async for event in aiter(backend.observe_group(decision)):
            events.append(event)
            if event.task_id == decision and not children:  # the decision task is running
                children = emulator.create_tasks(
                    "taskcluster", 3, [step("pending"), step("running"), step("completed")],
                    taskGroupId=decision,
                )
    last = {e.task_id: e.state for e in events}
    assert last == {decision: TaskState.COMPLETED, **dict.fromkeys(children, TaskState.COMPLETED)}
    assert len(children) == 3
    # The stream completes only after the children's terminal events.
    assert events[-1].task_id in children and events[-1].state is TaskState.COMPLETED


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
