"""TaskclusterBackend over real HTTP against the emulator: lifecycle, run semantics, faults."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import reactivex
import taskcluster
from fault_matrix import transient_faults

from reactive_tasks import (
    AuthenticationError,
    BackendUnavailable,
    ConfigurationError,
    EventKind,
    InvalidTaskId,
    PollPolicy,
    ProtocolError,
    TaskNotFound,
    TaskState,
    aiter,
    wait,
)
from reactive_tasks.backends import Reading, TaskclusterBackend, TaskclusterStatus
from reactive_tasks.emulator import EmulatorClient
from tests.taskcluster_helpers import FAST, UNKNOWN, step

STATUS_ROUTE = "taskcluster GET /api/queue/v1/task/{id}/status"
BATCH_ROUTE = "taskcluster POST /api/queue/v1/tasks/status"


@pytest.fixture
async def backend(emulator: EmulatorClient) -> Any:
    b = TaskclusterBackend(emulator.api_url("taskcluster"), policy=FAST)
    yield b
    await b.aclose()


def summary(events: list[Any]) -> list[tuple[EventKind, TaskState, str, str | None]]:
    return [(e.kind, e.state, e.native_status, e.message) for e in events]


async def test_full_lifecycle(emulator: EmulatorClient, backend: TaskclusterBackend) -> None:
    task = emulator.create_task(
        "taskcluster",
        [step(polls=2), step("pending"), step("running", polls=3), step("completed")],
    )
    events = [e async for e in aiter(backend.observe(task))]
    assert summary(events) == [
        (EventKind.TASK_UPDATED, TaskState.PENDING, "unscheduled", "unscheduled"),
        (EventKind.TASK_UPDATED, TaskState.PENDING, "pending", "run 0 pending"),
        (EventKind.TASK_UPDATED, TaskState.RUNNING, "running", "run 0 running"),
        (EventKind.TASK_COMPLETED, TaskState.COMPLETED, "completed", "run 0 completed"),
    ]
    assert [e.sequence for e in events] == [0, 1, 2, 3]
    assert all(e.progress is None and e.task_id == task for e in events)
    final = events[-1].snapshot
    assert isinstance(final, TaskclusterStatus)
    assert final.taskId == task and final.taskGroupId == task and final.state == "completed"
    (only,) = final.runs
    assert (only.runId, only.reasonCreated, only.reasonResolved) == (0, "scheduled", "completed")
    assert only.started is not None and only.resolved is not None and only.workerId
    # three running polls, each with a new takenUntil, made one event: timestamps are no change
    assert emulator.requests()["by_task"][task] == 7


async def test_retry_after_worker_shutdown_goes_on_to_the_retry(
    emulator: EmulatorClient, backend: TaskclusterBackend
) -> None:
    task = emulator.create_task(
        "taskcluster",
        [
            step("running"),
            step("exception:worker-shutdown", "pending"),
            step("exception:worker-shutdown", "running"),
            step("exception:worker-shutdown", "completed"),
        ],
    )
    events = [e async for e in aiter(backend.observe(task))]
    assert summary(events) == [
        (EventKind.TASK_UPDATED, TaskState.RUNNING, "running", "run 0 running"),
        (EventKind.TASK_UPDATED, TaskState.PENDING, "pending", "run 1 pending (retry)"),
        (EventKind.TASK_UPDATED, TaskState.RUNNING, "running", "run 1 running (retry)"),
        (EventKind.TASK_COMPLETED, TaskState.COMPLETED, "completed", "run 1 completed (retry)"),
    ]
    final = events[-1].snapshot
    assert [r.reasonResolved for r in final.runs] == ["worker-shutdown", "completed"]
    assert final.runs[1].reasonCreated == "retry" and final.retriesLeft == 4


async def test_rerun_is_seen_by_a_new_observation(
    emulator: EmulatorClient, backend: TaskclusterBackend
) -> None:
    task = emulator.create_task(
        "taskcluster",
        [step("running"), step("failed"), step("failed", "running"), step("failed", "completed")],
    )
    first = [e async for e in aiter(backend.observe(task))]
    assert [(e.state, e.message) for e in first] == [
        (TaskState.RUNNING, "run 0 running"),
        (TaskState.FAILED, "run 0 failed"),
    ]
    assert first[-1].kind is EventKind.TASK_FAILED
    second = [e async for e in aiter(backend.observe(task))]
    assert [(e.state, e.message) for e in second] == [
        (TaskState.RUNNING, "run 1 running (rerun)"),
        (TaskState.COMPLETED, "run 1 completed (rerun)"),
    ]
    assert [r.reasonCreated for r in second[-1].snapshot.runs] == ["scheduled", "rerun"]


@pytest.mark.parametrize(
    ("last", "state", "kind"),
    [
        ("exception:deadline-exceeded", TaskState.TIMED_OUT, EventKind.TASK_TIMEDOUT),
        ("exception:canceled", TaskState.CANCELLED, EventKind.TASK_CANCELLED),
        ("exception:malformed-payload", TaskState.FAILED, EventKind.TASK_FAILED),
        ("exception:worker-shutdown", TaskState.FAILED, EventKind.TASK_FAILED),
        ("failed", TaskState.FAILED, EventKind.TASK_FAILED),
    ],
)
async def test_resolutions(
    emulator: EmulatorClient,
    backend: TaskclusterBackend,
    last: str,
    state: TaskState,
    kind: EventKind,
) -> None:
    steps = [step("pending"), step(last)]
    task = emulator.create_task(
        "taskcluster", steps, **({"retries": 0} if "shutdown" in last else {})
    )
    events = [e async for e in aiter(backend.observe(task))]
    assert [e.state for e in events] == [TaskState.PENDING, state]
    final = events[-1]
    assert final.kind is kind and final.native_status == last.partition(":")[0]
    reason = last.partition(":")[2]
    if reason:
        assert final.message == f"run 0 exception: {reason}"
    if reason in ("deadline-exceeded", "canceled"):  # resolved while pending: never started
        assert final.snapshot.runs[0].started is None


def test_change_key_counts_runs_not_timestamps() -> None:
    backend = TaskclusterBackend("https://tc.example.com")
    now = datetime(2024, 1, 1, tzinfo=UTC)

    def status(*runs: dict[str, Any]) -> TaskclusterStatus:
        return TaskclusterStatus.model_validate(
            {
                "taskId": UNKNOWN, "provisionerId": "p", "workerType": "w",
                "taskQueueId": "p/w", "schedulerId": "-", "projectId": "none",
                "taskGroupId": UNKNOWN, "deadline": now, "expires": now, "retriesLeft": 5,
                "state": runs[-1]["state"], "runs": list(runs),
            }
        )

    def run(run_id: int, state: str, taken: int = 0, **more: Any) -> dict[str, Any]:
        return {"runId": run_id, "state": state, "reasonCreated": "scheduled",
                "scheduled": now, "takenUntil": now + timedelta(minutes=taken), **more}

    def key(snapshot: TaskclusterStatus) -> Any:
        return backend.change_key(snapshot, Reading(TaskState.RUNNING, "running"))

    one = status(run(0, "running", taken=1))
    assert key(one) == key(status(run(0, "running", taken=20)))  # a reclaim is no change
    retried = status(run(0, "exception", reasonResolved="worker-shutdown"),
                     run(1, "running", reasonCreated="retry"))
    assert key(one) != key(retried)  # same reading, a new run: a change


async def test_unknown_task_is_task_not_found(backend: TaskclusterBackend) -> None:
    with pytest.raises(TaskNotFound, match="ResourceNotFound") as info:
        await wait(backend.observe(UNKNOWN), timeout=10)
    assert info.value.task_id == UNKNOWN and info.value.backend == "taskcluster"


async def test_expired_task_is_task_not_found(
    emulator: EmulatorClient, backend: TaskclusterBackend
) -> None:
    task = emulator.create_task("taskcluster", [step("completed")], expiresIn=0.001)
    with pytest.raises(TaskNotFound):
        await backend.status(task)


async def test_private_task_without_credentials_is_refused(
    emulator: EmulatorClient, backend: TaskclusterBackend
) -> None:
    task = emulator.create_task(
        "taskcluster", [step("running")], clientId="ci/private", accessToken="t" * 44
    )
    with pytest.raises(AuthenticationError, match="403"):
        await wait(backend.observe(task), timeout=10)


def test_ids_are_validated() -> None:
    backend = TaskclusterBackend("https://tc.example.com/")
    assert backend.root_url == "https://tc.example.com"
    assert backend.validate_task_id(UNKNOWN) == UNKNOWN
    for bad in ["", "nope", UNKNOWN.lower(), UNKNOWN + "A", UNKNOWN[:-1] + "B",
                "fN1SbArXTPSVFNUvaOlin", 42]:
        with pytest.raises(InvalidTaskId):
            backend.observe(bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidTaskId):
            backend.observe_group(bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        TaskclusterBackend("tc.example.com")


LIFECYCLE = [step("pending"), step("running"), step("exception:worker-shutdown", "running"),
             step("exception:worker-shutdown", "completed")]
EXPECTED = [(TaskState.PENDING, 1), (TaskState.RUNNING, 1), (TaskState.RUNNING, 2),
            (TaskState.COMPLETED, 2)]
FAULTS = transient_faults(
    {"code": 500, "message": "InternalServerError"}, slow=False
)


@pytest.mark.parametrize("fault", FAULTS)
async def test_fault_bursts_lose_and_duplicate_nothing(
    emulator: EmulatorClient, fault: dict[str, Any]
) -> None:
    policy = PollPolicy(interval=0.02, max_interval=0.1, request_timeout=0.5, jitter=0.0)
    task = emulator.create_task("taskcluster", LIFECYCLE)
    async with TaskclusterBackend(emulator.api_url("taskcluster"), policy=policy) as backend:
        seen = []
        async for event in aiter(backend.observe(task)):
            seen.append((event.state, len(event.snapshot.runs)))
            if len(seen) == 2:
                emulator.inject_fault("taskcluster", task_id=task, **fault)
    assert seen == EXPECTED
    assert not emulator.faults(), "every injected fault was met and retried"


@pytest.mark.parametrize("fault", FAULTS[:3])
async def test_fault_bursts_on_the_batch_endpoint(
    emulator: EmulatorClient, fault: dict[str, Any]
) -> None:
    policy = PollPolicy(interval=0.05, max_interval=0.2, request_timeout=0.5, jitter=0.0)
    ids = emulator.create_tasks("taskcluster", 3, LIFECYCLE)
    async with TaskclusterBackend(emulator.api_url("taskcluster"), policy=policy) as backend:
        seen: dict[str, list[tuple[TaskState, int]]] = {i: [] for i in ids}
        merged = reactivex.merge(*(backend.observe(task) for task in ids))
        async for event in aiter(merged):
            seen[event.task_id].append((event.state, len(event.snapshot.runs)))
            if sum(map(len, seen.values())) == 4:  # mid-lifecycle, once
                emulator.inject_fault("taskcluster", path_contains="/tasks/status", **fault)
    assert all(events == EXPECTED for events in seen.values()), seen
    # the burst hit the batch request; retries (scattered by jitter) may go task by task
    assert all(f["remaining"] < fault["count"] for f in emulator.faults())
    assert emulator.requests()["by_route"][BATCH_ROUTE] >= 2


async def test_retry_budget_exhausted(emulator: EmulatorClient) -> None:
    policy = PollPolicy(interval=0.01, max_interval=0.02, retry_budget=2)
    task = emulator.create_task("taskcluster", [step("running")])
    emulator.inject_fault("taskcluster", "status", status=502, count=50, task_id=task)
    async with TaskclusterBackend(emulator.api_url("taskcluster"), policy=policy) as backend:
        with pytest.raises(BackendUnavailable, match="3 consecutive failed polls"):
            await wait(backend.observe(task), timeout=10)


async def test_malformed_answer_is_a_protocol_error(
    emulator: EmulatorClient, backend: TaskclusterBackend
) -> None:
    task = emulator.create_task("taskcluster", [step("running")])
    emulator.inject_fault("taskcluster", "malformed", task_id=task,
                          body={"status": {"taskId": task, "state": "running"}})
    with pytest.raises(ProtocolError, match="_StatusAnswer"):
        await wait(backend.observe(task), timeout=10)


async def test_status_one_shot(emulator: EmulatorClient, backend: TaskclusterBackend) -> None:
    task = emulator.create_task("taskcluster", [step("running"), step("completed")])
    event = await backend.status(task)
    assert (event.state, event.sequence, event.message) == (TaskState.RUNNING, 0, "run 0 running")
    assert emulator.requests()["by_route"] == {STATUS_ROUTE: 1}


def test_official_client_works_against_the_emulator(emulator: EmulatorClient) -> None:
    ids = emulator.create_tasks("taskcluster", 2, [step("running", polls=None)])
    queue = taskcluster.Queue({"rootUrl": emulator.api_url("taskcluster"), "maxRetries": 0})
    status = queue.status(ids[0])["status"]
    assert TaskclusterStatus.model_validate(status).state == "running"
    answer = queue.statuses({"taskIds": [*ids, UNKNOWN]})
    assert sorted(s["taskId"] for s in answer["statuses"]) == sorted(ids)
    with pytest.raises(taskcluster.exceptions.TaskclusterRestFailure) as info:
        queue.status(UNKNOWN)
    assert info.value.status_code == 404
    assert info.value.body["code"] == "ResourceNotFound"
    assert set(info.value.body) == {"code", "message", "requestInfo"}
