"""AparaviBackend end to end over real HTTP against the emulator: start, observe, cancel, faults."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

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
)
from reactive_tasks.backends import AparaviBackend, AparaviStatus, AparaviTask
from reactive_tasks.emulator import EmulatorClient
from reactive_tasks.emulator.aparavi import API_KEYS, EXHAUSTED_KEYS

FAST = PollPolicy(interval=0.02, max_interval=0.1, jitter=0.0, request_timeout=2.0)
KEY = API_KEYS[0]
PIPELINE = {"source": "source_1", "components": [{"id": "parse_1"}]}
TOKEN = "1f0e4a52-9c3b-4d7e-8a61-2b5c9d0e7f13"


def step(status: str, done: int = 0, total: int = 4, **more: Any) -> dict[str, Any]:
    return {"status": status, "completedCount": done, "totalCount": total, **more}


@pytest.fixture
async def backend(emulator: EmulatorClient) -> Any:
    b = AparaviBackend(emulator.api_url("aparavi"), api_key=KEY, policy=FAST)
    yield b
    await b.aclose()


async def test_start_and_observe_the_default_lifecycle(
    emulator: EmulatorClient, backend: AparaviBackend
) -> None:
    task = await backend.start(PIPELINE, name="invoices", threads=2)
    assert isinstance(task, AparaviTask) and task.type == "cpu"
    assert str(uuid.UUID(task.token)) == task.token
    assert emulator.task("aparavi", task.token)["extra"]["threads"] == 2
    events = [e async for e in aiter(backend.observe(task))]
    assert [(e.kind, e.state, e.native_status, e.progress) for e in events] == [
        (EventKind.TASK_UPDATED, TaskState.PENDING, "Created", None),
        (EventKind.TASK_UPDATED, TaskState.RUNNING, "Running", 25.0),
        (EventKind.TASK_UPDATED, TaskState.RUNNING, "Running", 75.0),
        (EventKind.TASK_UPDATED, TaskState.RUNNING, "Completed", 100.0),
        (EventKind.TASK_COMPLETED, TaskState.COMPLETED, "Completed", 100.0),
    ]
    assert [e.sequence for e in events] == [0, 1, 2, 3, 4]
    final = events[-1].snapshot
    assert isinstance(final, AparaviStatus) and final.completed and final.end_time > 0
    assert final.completed_count == final.total_count == 4 and final.metrics
    assert all(e.backend == "aparavi" and e.task_id == task.token for e in events)
    assert emulator.requests()["by_route"]["aparavi GET /task"] == 5


async def test_start_body_and_pool(emulator: EmulatorClient, backend: AparaviBackend) -> None:
    gpu = await backend.start({"pipeline": {"components": [{"id": "llm", "gpu": True}]}})
    assert gpu.type == "gpu"
    assert emulator.task("aparavi", gpu.token)["extra"]["pipeline"] == {
        "components": [{"id": "llm", "gpu": True}]
    }, "a whole {'pipeline': ...} body is sent as is"
    assert (await backend.status(gpu)).state is TaskState.PENDING
    with pytest.raises(TaskNotFound):
        await backend.status(gpu.token, task_type="cpu")
    for bad in [0, 17, True, 2.5]:
        with pytest.raises(ValueError, match="threads"):
            await backend.start(PIPELINE, threads=bad)  # type: ignore[arg-type]
    assert emulator.requests()["by_route"]["aparavi PUT /task"] == 1


async def test_token_and_reference_share_one_poll(
    emulator: EmulatorClient, backend: AparaviBackend
) -> None:
    token = emulator.create_task(
        "aparavi", [step("Running", 1, polls=2), step("Completed", 4, completed=True)], type="gpu"
    )
    by_ref = backend.observe(AparaviTask(token, "gpu"))
    by_token = backend.observe(token.upper(), task_type="GPU")
    results = await asyncio.gather(wait(by_ref, timeout=10), wait(by_token, timeout=10))
    assert {r.state for r in results} == {TaskState.COMPLETED}
    assert emulator.requests()["by_task"][token] == 3, "one poll per round for both"


async def test_errors_list_fails_the_finished_task(backend: AparaviBackend) -> None:
    task = await backend.start(PIPELINE, name="errors")
    events = [e async for e in aiter(backend.observe(task))]
    assert [(e.state, e.progress) for e in events] == [
        (TaskState.RUNNING, pytest.approx(100 / 3)),
        (TaskState.RUNNING, pytest.approx(200 / 3)),
        (TaskState.FAILED, pytest.approx(200 / 3)),
    ]
    final = events[-1]
    assert final.kind is EventKind.TASK_FAILED and final.native_status == "Completed"
    assert final.message == "parse_1: cannot extract text from file://data/doc2.pdf"


async def test_paused_then_resumed(backend: AparaviBackend) -> None:
    task = await backend.start(PIPELINE, name="paused")
    events = [e async for e in aiter(backend.observe(task))]
    assert [(e.state, e.progress) for e in events] == [
        (TaskState.RUNNING, 25.0),
        (TaskState.PAUSED, 25.0),
        (TaskState.RUNNING, 50.0),
        (TaskState.RUNNING, 75.0),
        (TaskState.COMPLETED, 100.0),
    ]
    assert events[1].kind is EventKind.TASK_UPDATED and not events[1].terminal


async def test_failed_status_carries_exit_message(backend: AparaviBackend) -> None:
    task = await backend.start(PIPELINE, name="failed")
    final = await wait(backend.observe(task), timeout=10)
    assert (final.state, final.native_status) == (TaskState.FAILED, "Failed")
    assert final.message == "engine exited with code 2"


@pytest.mark.parametrize(
    ("fields", "state", "progress"),
    [
        (step("Created", 0, 0), TaskState.PENDING, None),
        (step("created", 0, 0), TaskState.PENDING, None),
        (step("RUNNING", 1, 8), TaskState.RUNNING, 12.5),
        (step("paused", 2, 8), TaskState.PAUSED, 25.0),
        (step("Completed", 4, completed=False), TaskState.RUNNING, 100.0),
        (step("completed", 4, completed=True), TaskState.COMPLETED, 100.0),
        (step("Done", 4), TaskState.COMPLETED, 100.0),
        (step("done", 3, 3, errors=[{"message": "boom", "code": 7}]), TaskState.FAILED, 100.0),
        (step("Failed", 1), TaskState.FAILED, 25.0),
        (step("Error", 1), TaskState.FAILED, 25.0),
        (step("error", 0, 0), TaskState.FAILED, None),
        (step("Cancelled", 2), TaskState.CANCELLED, 50.0),
        (step("cancelled", 2, errors=["stopped"]), TaskState.CANCELLED, 50.0),
        (step("Running", 2, errors=["not yet final"]), TaskState.RUNNING, 50.0),
        (step("Running", 9, 4), TaskState.RUNNING, 100.0),
    ],
)
async def test_status_mapping(
    emulator: EmulatorClient,
    backend: AparaviBackend,
    fields: dict[str, Any],
    state: TaskState,
    progress: float | None,
) -> None:
    token = emulator.create_task("aparavi", [fields])
    event = await backend.status(token, task_type="cpu")
    assert (event.state, event.progress, event.native_status) == (state, progress, fields["status"])
    if fields["status"] == "done":
        assert event.message == "boom"


async def test_unknown_status_is_a_protocol_error(
    emulator: EmulatorClient, backend: AparaviBackend
) -> None:
    # The emulator refuses to script an unknown status, so the answer is injected whole.
    token = emulator.create_task("aparavi", [step("Running")])
    record = {"status": "Exploded", "completed": False, "completedCount": 0, "totalCount": 4}
    emulator.inject_fault("aparavi", "malformed", body={"status": "OK", "data": record}, count=99)
    with pytest.raises(ProtocolError, match="unknown task status 'Exploded'") as info:
        await wait(backend.observe(token, task_type="cpu"), timeout=10)
    assert info.value.task_id == token[:8] + "…"


def test_tokens_and_types_are_validated() -> None:
    backend = AparaviBackend(api_key=KEY)
    assert backend.base_url == "https://eaas.aparavi.com"
    for bad in ["", "nope", TOKEN + "0", TOKEN.replace("1f", "zz"), 42, None]:
        with pytest.raises(InvalidTaskId):
            backend.observe(bad, task_type="cpu")  # type: ignore[arg-type]
    for bad_type in ["tpu", "", 1]:
        with pytest.raises(InvalidTaskId, match="'cpu' or 'gpu'"):
            backend.observe(TOKEN, task_type=bad_type)  # type: ignore[arg-type]
    with pytest.raises(InvalidTaskId, match="needs its task_type"):
        backend.observe(TOKEN)
    with pytest.raises(InvalidTaskId, match="contradicts"):
        backend.observe(AparaviTask(TOKEN, "cpu"), task_type="gpu")
    ref = backend.reference(TOKEN.upper().replace("-", ""), " GPU ")
    assert ref == AparaviTask(TOKEN, "gpu")
    assert backend.validate_task_id(TOKEN.upper()) == TOKEN
    for bad_key in ["", "   ", None]:
        with pytest.raises(ConfigurationError):
            AparaviBackend(api_key=bad_key)  # type: ignore[arg-type]


async def test_unknown_task_is_task_not_found(backend: AparaviBackend) -> None:
    with pytest.raises(TaskNotFound, match="Task not found") as info:
        await wait(backend.observe(TOKEN, task_type="cpu"), timeout=10)
    assert info.value.task_id == "1f0e4a52…" and info.value.backend == "aparavi"


async def test_creation_grace_waits_for_a_late_task(emulator: EmulatorClient) -> None:
    policy = PollPolicy(interval=0.02, max_interval=0.1, creation_grace=5.0)
    async with AparaviBackend(emulator.api_url("aparavi"), api_key=KEY, policy=policy) as backend:
        observed = asyncio.ensure_future(wait(backend.observe(TOKEN, task_type="cpu"), timeout=10))
        await asyncio.sleep(0.15)
        emulator.create_task("aparavi", [step("Done", 4)], id=TOKEN)
        assert (await observed).state is TaskState.COMPLETED


@pytest.mark.parametrize(
    ("fault", "match"),
    [
        ({"kind": "api_error", "code": 422, "message": "Invalid token"}, "HTTP 422: Invalid token"),
        (
            {"kind": "status", "status": 422,
             "body": {"detail": [{"loc": ["query", "type"], "msg": "Field required",
                                  "type": "missing"}]}},
            "HTTP 422: query.type: Field required",
        ),
        ({"kind": "malformed", "body": {"status": "OK"}}, "an OK answer without data"),
        ({"kind": "malformed", "body": {"status": "OK", "data": {"errors": 1}}}, "AparaviStatus"),
        ({"kind": "malformed", "body": {"status": "Fine", "data": {}}}, "_Envelope"),
        ({"kind": "malformed"}, "_Envelope"),
        ({"kind": "status", "status": 409}, "HTTP 409"),
        (
            {"kind": "malformed",
             "body": {"status": "Error", "error": {"message": "Bad pipeline", "code": "E42"}}},
            "HTTP 200: Bad pipeline",
        ),
    ],
)  # fmt: skip
async def test_invalid_answers_are_protocol_errors(
    emulator: EmulatorClient, backend: AparaviBackend, fault: dict[str, Any], match: str
) -> None:
    token = emulator.create_task("aparavi", [step("Running", 1)])
    emulator.inject_fault("aparavi", task_id=token, **fault)
    with pytest.raises(ProtocolError, match=match):
        await wait(backend.observe(token, task_type="cpu"), timeout=10)


async def test_error_envelope_with_http_200_keeps_its_code(
    emulator: EmulatorClient, backend: AparaviBackend
) -> None:
    token = emulator.create_task("aparavi", [step("Running", 1)])
    body = {"status": "Error", "error": {"message": "Task not found", "code": 404}}
    emulator.inject_fault("aparavi", "malformed", task_id=token, body=body)
    with pytest.raises(TaskNotFound, match="Task not found"):
        await backend.status(token, task_type="cpu")


@pytest.mark.parametrize(
    ("key", "match"),
    [("wrong-key", "HTTP 401: Invalid API key"), (EXHAUSTED_KEYS[0], "out of tokens")],
)
async def test_refused_credentials(emulator: EmulatorClient, key: str, match: str) -> None:
    token = emulator.create_task("aparavi")
    async with AparaviBackend(emulator.api_url("aparavi"), api_key=key, policy=FAST) as backend:
        with pytest.raises(AuthenticationError, match=match) as info:
            await wait(backend.observe(token, task_type="cpu"), timeout=10)
        assert info.value.task_id == token[:8] + "…"
        with pytest.raises(AuthenticationError, match=match):
            await backend.start(PIPELINE)
        with pytest.raises(AuthenticationError, match=match):
            await backend.cancel(token, task_type="cpu")
    assert emulator.task("aparavi", token)["step"] == 0


async def test_bearer_form(emulator: EmulatorClient) -> None:
    async with AparaviBackend(
        emulator.api_url("aparavi"), api_key=KEY, bearer=True, policy=FAST
    ) as backend:
        task = await backend.start(PIPELINE)
        assert (await wait(backend.observe(task), timeout=10)).state is TaskState.COMPLETED


LIFECYCLE = [
    step("Running", 1, polls=1),
    step("Paused", 1, polls=1),
    step("Running", 3, polls=1),
    step("Completed", 4, completed=True),
]


@pytest.mark.parametrize("fault", transient_faults({"code": 502, "message": "Engine busy"}))
async def test_transient_faults_lose_and_duplicate_nothing(
    emulator: EmulatorClient, fault: dict[str, Any]
) -> None:
    policy = PollPolicy(interval=0.02, max_interval=0.1, request_timeout=0.3, jitter=0.0)
    token = emulator.create_task("aparavi", LIFECYCLE)
    async with AparaviBackend(emulator.api_url("aparavi"), api_key=KEY, policy=policy) as backend:
        seen = []
        async for event in aiter(backend.observe(token, task_type="cpu")):
            seen.append((event.state, event.progress))
            if len(seen) == 2:  # a burst of faults while the task is paused
                emulator.inject_fault("aparavi", task_id=token, **fault)
    assert seen == [(TaskState.RUNNING, 25.0), (TaskState.PAUSED, 25.0),
                    (TaskState.RUNNING, 75.0), (TaskState.COMPLETED, 100.0)]  # fmt: skip
    assert not emulator.faults(), "every injected fault was met and retried"


async def test_retry_budget_exhausted(emulator: EmulatorClient) -> None:
    policy = PollPolicy(interval=0.01, max_interval=0.02, retry_budget=2)
    token = emulator.create_task("aparavi", [step("Running", 1)])
    emulator.inject_fault("aparavi", "status", status=502, count=50, task_id=token)
    async with AparaviBackend(emulator.api_url("aparavi"), api_key=KEY, policy=policy) as backend:
        with pytest.raises(BackendUnavailable, match="3 consecutive failed polls"):
            await wait(backend.observe(token, task_type="cpu"), timeout=10)
    assert emulator.requests()["by_task"][token] == 3


async def test_cancel_ends_the_observation(
    emulator: EmulatorClient, backend: AparaviBackend
) -> None:
    task = await backend.start(PIPELINE, name="endless")
    events: list[Any] = []
    observed = asyncio.ensure_future(wait(backend.observe(task), timeout=10))
    sub = backend.observe(task).subscribe(events.append)
    while len(events) < 2:
        await asyncio.sleep(0.01)
    final = await backend.cancel(task.token, task_type="cpu")
    assert isinstance(final, AparaviStatus)
    assert (final.status, final.completed, final.exit_msg) == ("Cancelled", False, "Task cancelled")
    last = await observed
    sub.dispose()
    assert last.kind is EventKind.TASK_CANCELLED and last.state is TaskState.CANCELLED
    assert [e.state for e in events] == [TaskState.PENDING, TaskState.RUNNING, TaskState.CANCELLED]
    assert emulator.requests()["by_route"]["aparavi DELETE /task"] == 1


async def test_cancel_of_a_finished_task_returns_its_results(
    emulator: EmulatorClient, backend: AparaviBackend
) -> None:
    token = emulator.create_task("aparavi", [step("Completed", 4, completed=True)], type="gpu")
    final = await backend.cancel(AparaviTask(token, "gpu"))
    assert (final.status, final.completed) == ("Completed", True)
    with pytest.raises(TaskNotFound):
        await backend.cancel(TOKEN, task_type="cpu")
    with pytest.raises(InvalidTaskId):
        await backend.cancel(TOKEN)


@pytest.mark.parametrize("fault", [{"kind": "status", "status": 503}, {"kind": "reset"}])
async def test_actions_are_sent_once(
    emulator: EmulatorClient, backend: AparaviBackend, fault: dict[str, Any]
) -> None:
    token = emulator.create_task("aparavi", [step("Running", 1)])
    emulator.inject_fault("aparavi", path_contains="/task", count=2, **fault)
    with pytest.raises(BackendUnavailable, match="not retried") as info:
        await backend.cancel(token, task_type="cpu")
    assert info.value.task_id == token[:8] + "…"
    with pytest.raises(BackendUnavailable, match="PUT /task failed"):
        await backend.start(PIPELINE)
    counts = emulator.requests()["by_route"]
    assert counts == {"aparavi DELETE /task": 1, "aparavi PUT /task": 1}


async def test_start_answer_is_validated(emulator: EmulatorClient, backend: AparaviBackend) -> None:
    for body, match in [
        ({"status": "OK", "data": {"token": "abc", "type": "cpu"}}, "a UUID"),
        ({"status": "OK", "data": {"token": TOKEN, "type": "tpu"}}, "'cpu' or 'gpu'"),
        ({"status": "OK", "data": {"type": "cpu"}}, "_Started"),
    ]:
        emulator.inject_fault("aparavi", "malformed", body=body)
        with pytest.raises(ProtocolError, match=match):
            await backend.start(PIPELINE)
