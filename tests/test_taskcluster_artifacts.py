"""Artifacts: paged listings, downloads through the 303 redirect, typed errors."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from reactive_tasks import BackendUnavailable, TaskNotFound
from reactive_tasks.backends import (
    ArtifactError,
    ArtifactNotFound,
    TaskclusterArtifact,
    TaskclusterBackend,
)
from reactive_tasks.emulator import EmulatorClient
from tests.taskcluster_helpers import FAST, UNKNOWN, step

STORAGE = "taskcluster GET /_storage/{id}/{run}/{name:path}"
LATEST = "taskcluster GET /api/queue/v1/task/{id}/artifacts/{name:path}"

ARTIFACTS = [
    {"name": "public/logs/live.log", "content": "line 1\nline 2\n"},
    {"name": "public/build/target.tar.gz", "contentType": "application/gzip",
     "content": "tarball", "runId": 1},
    {"name": "public/build/target.tar.gz", "content": "first attempt", "runId": 0},
    {"name": "public/missing.txt", "storageType": "error", "reason": "file-missing-on-worker",
     "message": "no such file"},
]


@pytest.fixture
async def backend(emulator: EmulatorClient) -> Any:
    b = TaskclusterBackend(emulator.api_url("taskcluster"), policy=FAST)
    yield b
    await b.aclose()


@pytest.fixture
def task(emulator: EmulatorClient) -> str:
    return emulator.create_task(
        "taskcluster", [step("exception:worker-shutdown", "completed")], artifacts=ARTIFACTS
    )


async def test_listing_latest_and_by_run(task: str, backend: TaskclusterBackend) -> None:
    latest = await backend.artifacts(task)
    assert all(isinstance(a, TaskclusterArtifact) for a in latest)
    assert [(a.name, a.storageType) for a in latest] == [
        ("public/logs/live.log", "s3"),
        ("public/build/target.tar.gz", "s3"),
        ("public/missing.txt", "error"),
    ]
    first = await backend.artifacts(task, run_id=0)
    assert [a.name for a in first] == [
        "public/logs/live.log", "public/build/target.tar.gz", "public/missing.txt"
    ]
    with pytest.raises(TaskNotFound, match="no run 7"):
        await backend.artifacts(task, run_id=7)
    with pytest.raises(TaskNotFound):
        await backend.artifacts(UNKNOWN)
    with pytest.raises(ValueError):
        await backend.artifacts(task, run_id=-1)


async def test_listing_follows_continuation_tokens(
    emulator: EmulatorClient, backend: TaskclusterBackend
) -> None:
    many = [{"name": f"public/part-{i:04d}"} for i in range(1001)]
    task = emulator.create_task("taskcluster", [step("completed")], artifacts=many)
    listed = await backend.artifacts(task)
    assert [a.name for a in listed] == [m["name"] for m in many]
    assert emulator.requests()["by_route"] == {
        "taskcluster GET /api/queue/v1/task/{id}/artifacts": 2
    }


async def test_fetch_follows_the_redirect(
    emulator: EmulatorClient, backend: TaskclusterBackend, task: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    assert await backend.fetch_artifact(task, "public/logs/live.log") == b"line 1\nline 2\n"
    assert await backend.fetch_artifact(task, "public/build/target.tar.gz") == b"tarball"
    old = await backend.fetch_artifact(task, "public/build/target.tar.gz", run_id=0)
    assert old == b"first attempt"
    counts = emulator.requests()["by_route"]
    assert counts[LATEST] == 2 and counts[STORAGE] == 3
    assert "X-Amz-Signature=emulated" not in caplog.text, "presigned URLs stay out of logs"


async def test_fetch_streams_into_a_file(
    task: str, backend: TaskclusterBackend, tmp_path: Path
) -> None:
    target = tmp_path / "live.log"
    written = await backend.fetch_artifact(task, "public/logs/live.log", dest=target)
    assert written == target and target.read_bytes() == b"line 1\nline 2\n"


async def test_typed_errors(
    emulator: EmulatorClient, task: str, backend: TaskclusterBackend
) -> None:
    with pytest.raises(ArtifactNotFound, match="public/nope"):
        await backend.fetch_artifact(task, "public/nope")
    with pytest.raises(ArtifactError, match="424") as info:
        await backend.fetch_artifact(task, "public/missing.txt")
    assert info.value.reason == "file-missing-on-worker" and info.value.task_id == task
    with pytest.raises(ArtifactNotFound):
        await backend.fetch_artifact(UNKNOWN, "public/logs/live.log")
    # A read is retried like a poll: one 503 is absorbed, a persistent one exhausts the budget.
    emulator.inject_fault("taskcluster", "status", status=503, path_contains="/artifacts/")
    assert await backend.fetch_artifact(task, "public/logs/live.log")
    assert not emulator.faults()
    emulator.inject_fault("taskcluster", "status", status=503, count=100,
                          path_contains="/artifacts/")
    with pytest.raises(BackendUnavailable, match="503") as failed:
        await backend.fetch_artifact(task, "public/logs/live.log")
    assert "consecutive failed polls" in str(failed.value)
    emulator.clear_faults()
