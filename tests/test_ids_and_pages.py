"""Ids, artifact names, the batch endpoint's comeback and runaway pages (issue 9, item 8).

Every test runs against a HostileServer: a request that should never be sent would show in
``server.requests``.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from reactive_tasks import InvalidTaskId, PollPolicy, ProtocolError
from reactive_tasks._redact import shorten
from reactive_tasks.backends import (
    AparaviBackend,
    CloudCoinBackend,
    GreenCloudBackend,
    IExecBackend,
    InvalidArtifactName,
    TaskclusterBackend,
)
from reactive_tasks.backends._answers import MAX_PAGES
from tests.hostile import HostileServer, RawRequest, Reply
from tests.test_blast_radius import BAD, GOOD, tc_status

FAST = PollPolicy(interval=0.02, max_interval=0.1, jitter=0.0, request_timeout=5.0)
HUB = "0x3eca1b216a7df1c7689aeb259ffb83adfb894e7f"
B32 = "0x" + "ab" * 32


def not_found(request: RawRequest) -> Reply:
    return Reply.json({"message": "nothing here"}, status=404)


async def test_a_trailing_newline_passes_no_validator() -> None:
    with HostileServer(not_found) as server:
        backends: list[tuple[Any, str]] = [
            (TaskclusterBackend(server.url), GOOD),
            (GreenCloudBackend(server.url, token="t0k3n"), "65a0" + "0" * 20),
            (IExecBackend(server.url, HUB), B32),
            (CloudCoinBackend(server.url), str(uuid.uuid4())),
            (AparaviBackend(server.url, api_key="k"), str(uuid.uuid4())),
        ]
        for backend, good in backends:
            assert backend.validate_task_id(good)
            for bad in (good + "\n", good + "\r\n", "\n" + good):
                with pytest.raises(InvalidTaskId):
                    backend.validate_task_id(bad)
        iexec, aparavi, tc = backends[2][0], backends[4][0], backends[0][0]
        with pytest.raises(InvalidTaskId):
            iexec.observe(B32, deal_id=B32 + "\n")
        with pytest.raises(InvalidTaskId):
            aparavi.observe(str(uuid.uuid4()), task_type="cpu\n")
        with pytest.raises(InvalidTaskId):
            await tc.list_task_group(GOOD + "\n")
        with pytest.raises(Exception, match="hub"):
            IExecBackend(server.url, HUB + "\n")
        for backend, _ in backends:
            await backend.aclose()
    assert server.requests == []


@pytest.mark.parametrize(
    "name",
    ["../../../admin/x", "/etc/passwd", "public//x", "public/./x", "a/..", "x\ny", "a\\..\\b"],
)
async def test_artifact_names_cannot_leave_the_artifacts_path(name: str) -> None:
    with HostileServer(lambda r: Reply.of(200, b"secret admin page")) as server:
        backend = TaskclusterBackend(server.url)
        try:
            with pytest.raises(InvalidArtifactName):
                await backend.fetch_artifact(GOOD, name)
        finally:
            await backend.aclose()
    assert server.requests == []


async def test_artifact_names_are_checked_then_encoded_per_segment() -> None:
    with HostileServer(lambda r: Reply.of(200, b"content")) as server:
        backend = TaskclusterBackend(server.url)
        try:
            with pytest.raises(InvalidArtifactName):
                await backend.fetch_artifact(GOOD, "public/../../../../admin", 2)
            got = await backend.fetch_artifact(GOOD, "public/my report?v=1#top/100%.txt", 2)
        finally:
            await backend.aclose()
    assert got == b"content"
    assert [r.target for r in server.requests] == [
        f"/api/queue/v1/task/{GOOD}/runs/2/artifacts/public/my%20report%3Fv=1%23top/100%25.txt"
    ]


def batch_then_missing(missing: list[bool]) -> Any:
    """The queue: the batch endpoint answers 404 while ``missing[0]``, per-task reads work."""

    def handler(request: RawRequest) -> Reply:
        if request.method == "POST":
            if missing[0]:
                return Reply.json({"code": "ResourceNotFound", "message": "no"}, status=404)
            ids = request.json()["taskIds"]
            return Reply.json({"statuses": [{"taskId": i, "status": tc_status(i)} for i in ids]})
        task_id = request.path.split("/")[-2]
        return Reply.json({"status": tc_status(task_id)})

    return handler


async def read_round(backend: TaskclusterBackend, ids: tuple[str, ...] = (GOOD, BAD)) -> Any:
    """One poll round as the hub splits it (by ``max_batch``), its batches read in turn."""
    refs = [backend.task_ref(i) for i in ids]
    size = backend.max_batch or len(refs)
    chunks = [refs[start : start + size] for start in range(0, len(refs), size)]
    answers = {}
    for chunk in chunks:
        answers.update({ref.task_id: outcome async for ref, outcome in backend.fetch_many(chunk)})
    return answers


class PairsBackend(TaskclusterBackend):
    max_batch = 2  # so that a round of four tasks is two batch requests


FOUR = (GOOD, BAD, "a" + GOOD[1:], "b" + GOOD[1:])


async def batch_rounds(retry_after: float) -> tuple[list[str], bool]:
    """Two rounds of four tasks (two chunks each), the batch endpoint missing only in the
    first: the requests sent and whether the backend uses the batch endpoint at the end."""
    missing = [True]
    with HostileServer(batch_then_missing(missing)) as server:
        backend = PairsBackend(server.url)
        backend.batch_retry_seconds = retry_after
        try:
            first = await read_round(backend, FOUR)
            missing[0] = False  # the endpoint is back (a proxy was misrouting, say)
            second = await read_round(backend, FOUR)
        finally:
            await backend.aclose()
    assert all(s.state == "completed" for s in [*first.values(), *second.values()])
    assert len(first) == len(second) == 4
    return [r.method for r in server.requests], backend.uses_batch_endpoint


async def test_batch_endpoint_is_tried_again_after_a_404() -> None:
    # within the window: per-task reads only, for the rest of the round too
    assert await batch_rounds(3600.0) == (["POST"] + ["GET"] * 8, False)
    # past it (at once, here): the batch endpoint for each chunk again, and then for good
    per_chunk = ["POST", "GET", "GET"]
    assert await batch_rounds(0.0) == (per_chunk * 2 + ["POST", "POST"], True)


def runaway(limit: int) -> Any:
    """Every page hands out a new continuation token, until ``limit`` pages of an endpoint."""
    served: dict[str, int] = {}

    def handler(request: RawRequest) -> Reply:
        kind = "batch" if request.method == "POST" else request.path.split("/")[-1]
        n = served[kind] = served.get(kind, 0) + 1
        token = None if n >= limit else f"tok{n:07d}-opaque-continuation"
        if kind == "batch":
            return Reply.json({"statuses": [], "continuationToken": token})
        if kind == "list":
            return Reply.json({"taskGroupId": GOOD, "tasks": [], "continuationToken": token})
        return Reply.json({"artifacts": [], "continuationToken": token})

    return handler


async def test_runaway_continuation_tokens_are_a_protocol_error() -> None:
    # The server would stop after 1.5 times the bound: following it to the end is the bug.
    with HostileServer(runaway(MAX_PAGES * 3 // 2)) as server:
        backend = TaskclusterBackend(server.url, policy=FAST)
        try:
            batch = await read_round(backend)
            with pytest.raises(ProtocolError) as group:
                await backend.list_task_group(GOOD)
            with pytest.raises(ProtocolError) as artifacts:
                await backend.artifacts(GOOD)
        finally:
            await backend.aclose()
    assert len(server.requests) == 3 * MAX_PAGES
    assert set(batch) == {GOOD, BAD}
    for task_id, outcome in batch.items():
        assert isinstance(outcome, ProtocolError) and outcome.task_id == task_id
        assert f"after {MAX_PAGES} pages" in outcome.message
        assert repr(shorten(f"tok{MAX_PAGES:07d}-opaque-continuation")) in outcome.message
    assert "task group listing" in group.value.message
    assert "task or run listing" in artifacts.value.message
