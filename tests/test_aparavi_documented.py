"""Aparavi's documented answer shape (seed 003), beside the SDK's envelope (issue 9, item 9).

``GET /task`` answering ``{"data": {"id", "status", "progress", "files_processed",
"total_files", "error", ...}, "message"}`` and ``{"error": "Task not found", "message"}``: the
emulator serves it per task (extra ``shape``) or per server (``make_api(shape=...)``).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from reactive_tasks import (
    AuthenticationError,
    EventKind,
    PollPolicy,
    TaskNotFound,
    TaskState,
    aiter,
    wait,
)
from reactive_tasks.backends import AparaviBackend
from reactive_tasks.emulator import EmulatorClient, EmulatorError, EmulatorServer, create_app
from reactive_tasks.emulator.aparavi import API_KEYS, make_api
from tests.hostile import HostileServer, RawRequest, Reply

FAST = PollPolicy(interval=0.02, max_interval=0.1, jitter=0.0, request_timeout=2.0)
KEY = API_KEYS[0]
TOKEN = "1f0e4a52-9c3b-4d7e-8a61-2b5c9d0e7f13"


def step(status: str, done: int = 0, total: int = 4, **more: Any) -> dict[str, Any]:
    return {"status": status, "completedCount": done, "totalCount": total, **more}


@pytest.fixture
async def backend(emulator: EmulatorClient) -> Any:
    b = AparaviBackend(emulator.api_url("aparavi"), api_key=KEY, policy=FAST)
    yield b
    await b.aclose()


def summary(events: list[Any]) -> list[tuple[EventKind, TaskState, str, float | None, Any]]:
    return [(e.kind, e.state, e.native_status, e.progress, e.message) for e in events]


async def test_emulator_serves_the_documented_shape(emulator: EmulatorClient) -> None:
    token = emulator.create_task("aparavi", [step("Running", 1, 3)], shape="documented")
    url = emulator.api_url("aparavi") + "/task"
    with httpx.Client(headers={"Authorization": KEY}) as http:
        body = http.get(url, params={"token": token, "type": "cpu"}).json()
    assert set(body) == {"data", "message"}
    data = body["data"]
    assert {"id", "status", "progress", "files_processed", "total_files", "error"} <= set(data)
    assert (data["id"], data["status"], data["progress"]) == (token, "Running", 33)
    assert (data["files_processed"], data["total_files"], data["error"]) == (1, 3, None)
    with pytest.raises(EmulatorError, match="shape must be"):
        emulator.create_task("aparavi", shape="xml")
    with pytest.raises(ValueError, match="shape must be"):
        make_api(shape="xml")


async def test_documented_shape_lifecycles(
    emulator: EmulatorClient, backend: AparaviBackend
) -> None:
    script = [
        step("Created", 0, 0), step("Running", 1, 3), step("Completed", 3, 3, completed=False),
        step("Completed", 3, 3, completed=True),
    ]  # fmt: skip
    token = emulator.create_task("aparavi", script, shape="documented")
    events = [e async for e in aiter(backend.observe(token, task_type="cpu"))]
    assert summary(events) == [  # progress as the server rounds it (33), not 1/3 of the files
        (EventKind.TASK_UPDATED, TaskState.PENDING, "Created", 0.0, None),
        (EventKind.TASK_UPDATED, TaskState.RUNNING, "Running", 33.0, None),
        (EventKind.TASK_UPDATED, TaskState.RUNNING, "Running", 100.0, None),  # wrapping up
        (EventKind.TASK_COMPLETED, TaskState.COMPLETED, "Completed", 100.0, None),
    ]
    assert events[-1].snapshot.files_processed == 3 and events[-1].snapshot.total_files == 3
    failed = emulator.create_task(
        "aparavi", [step("Running", 1), step("Failed", 1, exitMsg="engine exited with code 2")],
        shape="documented",
    )  # fmt: skip
    final = await wait(backend.observe(failed, task_type="cpu"), timeout=10)
    assert (final.kind, final.state, final.native_status) == (
        EventKind.TASK_FAILED, TaskState.FAILED, "Failed"
    )  # fmt: skip
    assert final.message == "engine exited with code 2" and final.snapshot.error == final.message
    broken = emulator.create_task(
        "aparavi", [step("Completed", 2, 3, errors=["parse_1: cannot read doc2.pdf"])],
        shape="documented",
    )  # fmt: skip
    final = await wait(backend.observe(broken, task_type="cpu"), timeout=10)
    assert final.state is TaskState.FAILED and final.message == "parse_1: cannot read doc2.pdf"
    cancelled = emulator.create_task("aparavi", [step("Running", 1)], shape="documented")
    record = await backend.cancel(cancelled, task_type="cpu")
    assert record.status == "Cancelled" and record.progress == 25


async def test_documented_failures_are_typed() -> None:
    app = create_app([make_api(shape="documented")])
    with EmulatorServer(app=app) as server:
        with httpx.Client() as http:
            body = http.get(
                server.url + "/aparavi/task", params={"token": TOKEN, "type": "cpu"},
                headers={"Authorization": KEY},
            ).json()  # fmt: skip
        assert body == {
            "error": "Task not found",
            "message": "The specified task does not exist or has been deleted",
        }
        backend = AparaviBackend(server.url + "/aparavi", api_key=KEY, policy=FAST)
        wrong = AparaviBackend(server.url + "/aparavi", api_key="not-a-key", policy=FAST)
        try:
            with pytest.raises(TaskNotFound, match="Task not found") as missing:
                await backend.status(TOKEN, task_type="cpu")
            with pytest.raises(AuthenticationError, match="Invalid API key"):
                await wrong.status(TOKEN, task_type="cpu")
        finally:
            await backend.aclose()
            await wrong.aclose()
    assert missing.value.task_id == "1f0e4a52…" and TOKEN not in str(missing.value)


async def test_documented_progress_falls_back_to_file_counts() -> None:
    answers = iter([
        {"data": {"id": "t", "status": "Running", "files_processed": 1, "total_files": 4,
                  "error": None}, "message": "Task status retrieved successfully"},
        {"data": {"id": "t", "status": "Paused", "files_processed": 2, "total_files": 4},
         "message": "ok"},
        {"data": {"id": "t", "status": "Cancelled", "files_processed": 2, "total_files": 4,
                  "error": "stopped by its owner"}, "message": "ok"},
    ])  # fmt: skip

    def handler(request: RawRequest) -> Reply:
        return Reply.json(next(answers))

    with HostileServer(handler) as server:
        backend = AparaviBackend(server.url, api_key=KEY, policy=FAST)
        try:
            events = [e async for e in aiter(backend.observe(TOKEN, task_type="gpu"))]
        finally:
            await backend.aclose()
    assert [(e.state, e.progress) for e in events] == [
        (TaskState.RUNNING, 25.0), (TaskState.PAUSED, 50.0), (TaskState.CANCELLED, 50.0)
    ]  # fmt: skip
