"""CloudCoinBackend end to end over real HTTP against the emulator: lifecycle and every fault."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx
import pytest
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
    wait_sync,
)
from reactive_tasks.backends import CloudCoinBackend, CloudCoinTask
from reactive_tasks.emulator import EmulatorClient

FAST = PollPolicy(interval=0.02, max_interval=0.1, jitter=0.0, request_timeout=2.0)
GUID = "bdc8e99d-dd8a-40e9-8840-f9f8eef16c71"


def steps(*states: tuple[str, int], data: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"status": s, "progress": p, "polls": 1} for s, p in states]
    if data is not None:
        out[-1]["data"] = data
    return out


@pytest.fixture
async def backend(emulator: EmulatorClient) -> Any:
    b = CloudCoinBackend(emulator.api_url("cloudcoin"), policy=FAST)
    yield b
    await b.aclose()


async def test_full_lifecycle(emulator: EmulatorClient, backend: CloudCoinBackend) -> None:
    task = emulator.create_task(
        "cloudcoin",
        [
            {"status": "running", "progress": 0, "message": "Queued", "polls": 2},
            {"status": "running", "progress": 40, "message": "Detecting", "polls": 3},
            {"status": "running", "progress": 80, "message": "Detecting", "polls": 1},
            {"status": "completed", "progress": 100, "message": "Command Completed",
             "data": {"online": 25}},
        ],
    )
    events = [e async for e in aiter(backend.observe(task))]
    assert [(e.kind, e.state, e.progress, e.message) for e in events] == [
        (EventKind.TASK_UPDATED, TaskState.RUNNING, 0.0, "Queued"),
        (EventKind.TASK_UPDATED, TaskState.RUNNING, 40.0, "Detecting"),
        (EventKind.TASK_UPDATED, TaskState.RUNNING, 80.0, "Detecting"),
        (EventKind.TASK_COMPLETED, TaskState.COMPLETED, 100.0, "Command Completed"),
    ]
    assert [e.native_status for e in events] == ["running"] * 3 + ["completed"]
    assert [e.sequence for e in events] == [0, 1, 2, 3]
    final = events[-1]
    assert isinstance(final.snapshot, CloudCoinTask)
    assert final.snapshot.data == {"online": 25} and final.snapshot.id == task
    assert final.snapshot.finished is not None and final.snapshot.started is not None
    assert all(e.backend == "cloudcoin" and e.task_id == task for e in events)
    assert emulator.requests()["by_task"][task] == 7


async def test_failed_task_is_an_event_not_an_error(
    emulator: EmulatorClient, backend: CloudCoinBackend
) -> None:
    task = emulator.create_task(
        "cloudcoin",
        [{"status": "running", "progress": 10},
         {"status": "error", "progress": 10, "message": "Not enough coins"}],
    )
    final = await wait(backend.observe(task), timeout=10)
    assert final.kind is EventKind.TASK_FAILED and final.state is TaskState.FAILED
    assert final.message == "Not enough coins" and final.native_status == "error"


async def test_unknown_task_is_task_not_found(backend: CloudCoinBackend) -> None:
    with pytest.raises(TaskNotFound, match="4105") as info:
        await wait(backend.observe(GUID), timeout=10)
    assert info.value.task_id == GUID and info.value.backend == "cloudcoin"


async def test_creation_grace_waits_for_a_late_task(emulator: EmulatorClient) -> None:
    policy = PollPolicy(interval=0.02, max_interval=0.1, creation_grace=5.0)
    async with CloudCoinBackend(emulator.api_url("cloudcoin"), policy=policy) as backend:
        observed = asyncio.ensure_future(wait(backend.observe(GUID), timeout=10))
        await asyncio.sleep(0.15)
        emulator.create_task("cloudcoin", steps(("running", 5), ("completed", 100)), id=GUID)
        assert (await observed).state is TaskState.COMPLETED


def test_ids_are_validated_and_canonical() -> None:
    backend = CloudCoinBackend()
    assert backend.base_url == "http://localhost:8004"
    for bad in ["", "nope", "123", GUID + "0", GUID.replace("4", "5", 1).replace("-40e9", "-50e9"),
                "zdc8e99d-dd8a-40e9-8840-f9f8eef16c71", 42]:
        with pytest.raises(InvalidTaskId):
            backend.observe(bad)  # type: ignore[arg-type]
    assert backend.validate_task_id(GUID.upper()) == GUID
    assert backend.validate_task_id(GUID.replace("-", "")) == GUID
    with pytest.raises(ConfigurationError):
        CloudCoinBackend(route="/api/v1/task")
    with pytest.raises(ConfigurationError):
        CloudCoinBackend("localhost:8004")


async def test_alias_route(emulator: EmulatorClient) -> None:
    task = emulator.create_task("cloudcoin", steps(("completed", 100)))
    async with CloudCoinBackend(
        emulator.api_url("cloudcoin"), route="/api/v1/tasks/{id}", policy=FAST
    ) as backend:
        assert (await wait(backend.observe(task), timeout=10)).state is TaskState.COMPLETED
    assert "cloudcoin GET /api/v1/tasks/{id}" in emulator.requests()["by_route"]


LIFECYCLE = [("running", 0), ("running", 30), ("running", 60), ("completed", 100)]


@pytest.mark.parametrize("fault", transient_faults({"code": 5000, "message": "Internal error"}))
async def test_transient_faults_lose_and_duplicate_nothing(
    emulator: EmulatorClient, fault: dict[str, Any]
) -> None:
    policy = PollPolicy(interval=0.02, max_interval=0.1, request_timeout=0.3, jitter=0.0)
    task = emulator.create_task("cloudcoin", steps(*LIFECYCLE))
    async with CloudCoinBackend(emulator.api_url("cloudcoin"), policy=policy) as backend:
        seen = []
        async for event in aiter(backend.observe(task)):
            seen.append((event.state, event.progress))
            if len(seen) == 2:  # a burst of faults in the middle of the lifecycle
                emulator.inject_fault("cloudcoin", task_id=task, **fault)
    assert seen == [(TaskState.RUNNING, 0.0), (TaskState.RUNNING, 30.0),
                    (TaskState.RUNNING, 60.0), (TaskState.COMPLETED, 100.0)]
    assert not emulator.faults(), "every injected fault was met and retried"


async def test_retry_after_is_honoured(emulator: EmulatorClient, backend: CloudCoinBackend) -> None:
    task = emulator.create_task("cloudcoin", steps(("completed", 100)))
    emulator.inject_fault("cloudcoin", "rate_limit", retry_after=1, task_id=task)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await wait(backend.observe(task), timeout=10)
    assert loop.time() - started >= 0.95
    assert emulator.requests()["by_task"][task] == 2


async def test_retry_budget_exhausted(emulator: EmulatorClient) -> None:
    policy = PollPolicy(interval=0.01, max_interval=0.02, retry_budget=3)
    task = emulator.create_task("cloudcoin", steps(("running", 1)))
    emulator.inject_fault("cloudcoin", "status", status=502, count=50, task_id=task)
    async with CloudCoinBackend(emulator.api_url("cloudcoin"), policy=policy) as backend:
        with pytest.raises(BackendUnavailable, match="4 consecutive failed polls") as info:
            await wait(backend.observe(task), timeout=10)
    assert "502" in str(info.value.__cause__)
    assert emulator.requests()["by_task"][task] == 4


async def test_malformed_body_is_a_protocol_error(
    emulator: EmulatorClient, backend: CloudCoinBackend
) -> None:
    task = emulator.create_task("cloudcoin", steps(("running", 1)))
    emulator.inject_fault("cloudcoin", "malformed", task_id=task)
    with pytest.raises(ProtocolError):
        await wait(backend.observe(task), timeout=10)
    task2 = emulator.create_task("cloudcoin", steps(("running", 1)))
    emulator.inject_fault("cloudcoin", "malformed", task_id=task2, body={"payload": {"id": 1}})
    with pytest.raises(ProtocolError, match=r"CloudCoinTask|_Envelope"):
        await wait(backend.observe(task2), timeout=10)


async def test_other_api_error_codes_are_typed(
    emulator: EmulatorClient, backend: CloudCoinBackend
) -> None:
    task = emulator.create_task("cloudcoin", steps(("running", 1)))
    emulator.inject_fault("cloudcoin", "api_error", code=4100, message="Invalid Parameters",
                          task_id=task)
    with pytest.raises(ProtocolError, match="4100"):
        await wait(backend.observe(task), timeout=10)


@pytest.mark.parametrize("status", [401, 403])
async def test_refused_credentials(
    emulator: EmulatorClient, backend: CloudCoinBackend, status: int
) -> None:
    task = emulator.create_task("cloudcoin", steps(("running", 1)))
    emulator.inject_fault("cloudcoin", "status", status=status, task_id=task)
    with pytest.raises(AuthenticationError):
        await wait(backend.observe(task), timeout=10)


async def test_subscribers_share_one_poll_over_http(
    emulator: EmulatorClient, backend: CloudCoinBackend
) -> None:
    task = emulator.create_task("cloudcoin", steps(*LIFECYCLE))
    obs = backend.observe(task)
    results = await asyncio.gather(*(wait(obs, timeout=10) for _ in range(5)))
    assert {r.state for r in results} == {TaskState.COMPLETED}
    assert emulator.requests()["by_task"][task] == 4, "one poll per round for 5 subscribers"


async def test_disposal_stops_requests(emulator: EmulatorClient, backend: CloudCoinBackend) -> None:
    task = emulator.create_task("cloudcoin", steps(("running", 1)))
    sub = backend.observe(task).subscribe(lambda e: None)
    await asyncio.sleep(0.15)
    sub.dispose()
    count = emulator.requests()["by_task"][task]
    assert count >= 3
    await asyncio.sleep(0.15)
    assert emulator.requests()["by_task"][task] == count


async def test_status_one_shot(emulator: EmulatorClient, backend: CloudCoinBackend) -> None:
    task = emulator.create_task("cloudcoin", steps(("running", 30), ("completed", 100)))
    event = await backend.status(task)
    assert (event.state, event.progress, event.sequence) == (TaskState.RUNNING, 30.0, 0)
    with pytest.raises(TaskNotFound):
        await backend.status(GUID)


def test_wait_sync_from_a_script(emulator: EmulatorClient) -> None:
    task = emulator.create_task("cloudcoin", steps(*LIFECYCLE))
    backend = CloudCoinBackend(emulator.api_url("cloudcoin"), policy=FAST)
    before = threading.active_count()
    final = wait_sync(backend.observe(task), timeout=10)
    assert final.state is TaskState.COMPLETED and final.sequence == 3
    backend.close()
    assert threading.active_count() <= before + 1  # at most the shared loop thread


def _mock_answers() -> httpx.MockTransport:
    answers = iter([
        {"payload": {"id": GUID, "status": "running", "progress": 10}, "status": "success"},
        {"payload": {"id": GUID, "status": "completed", "progress": 100, "data": {"ok": 1}},
         "status": "success"},
    ])

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == f"/api/v1/task/{GUID}"
        return httpx.Response(200, json=next(answers))

    return httpx.MockTransport(handler)


@pytest.mark.parametrize("how", ["transport", "client"])
async def test_accepts_an_httpx_transport_or_client(how: str) -> None:
    transport = _mock_answers()
    client = httpx.AsyncClient(transport=transport) if how == "client" else None
    backend = CloudCoinBackend(
        "http://wallet.test", policy=FAST,
        **({"client": client} if client else {"transport": transport}),
    )
    events = [e async for e in aiter(backend.observe(GUID))]
    assert [e.state for e in events] == [TaskState.RUNNING, TaskState.COMPLETED]
    assert events[-1].snapshot.data == {"ok": 1}
    await backend.aclose()
    if client is not None:
        assert not client.is_closed, "a client the caller gave stays the caller's to close"
        await client.aclose()
