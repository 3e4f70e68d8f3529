"""One malformed entry of a batch or list answer fails only its own task (issue 9, item 5).

Each test serves an API's real answer shape from a HostileServer (the iExec one corrupts the
emulator's own JSON-RPC replies in passing): two watched tasks, one of whose entries is
malformed, plus malformed entries of tasks nobody watches. The other task must complete.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from reactive_tasks import EventKind, PollPolicy, ProtocolError, TaskState, wait
from reactive_tasks.backends import GreenCloudBackend, IExecBackend, TaskclusterBackend
from reactive_tasks.emulator import EmulatorClient
from reactive_tasks.emulator.iexec import HUB_ADDRESS, create_deal
from tests.hostile import HostileServer, RawRequest, Reply

FAST = PollPolicy(interval=0.02, max_interval=0.1, jitter=0.0, request_timeout=5.0)
GOOD, BAD, OTHER = "fN1SbArXTPSVFNUvaOlinQ", "aaaaaaaaQaCaaaaaaaaaaA", "bbbbbbbbRbGbbbbbbbbbbw"


def tc_status(task_id: str, state: str = "completed") -> dict[str, Any]:
    """A task status structure as the Taskcluster queue writes it (one resolved run)."""
    run = {
        "runId": 0, "state": state, "reasonCreated": "scheduled", "reasonResolved": state,
        "workerGroup": "g", "workerId": "w", "scheduled": "2026-01-01T00:00:00.000Z",
        "started": "2026-01-01T00:00:01.000Z", "resolved": "2026-01-01T00:00:02.000Z",
    }  # fmt: skip
    return {
        "taskId": task_id, "provisionerId": "p", "workerType": "w", "taskQueueId": "p/w",
        "schedulerId": "-", "projectId": "none", "taskGroupId": task_id,
        "deadline": "2030-01-01T00:00:00.000Z", "expires": "2031-01-01T00:00:00.000Z",
        "retriesLeft": 5, "state": state, "runs": [run],
    }  # fmt: skip


async def outcomes(*streams: Any) -> list[Any]:
    waits = (wait(s, timeout=10) for s in streams)
    return list(await asyncio.gather(*waits, return_exceptions=True))


def assert_local(good: Any, bad: Any, task_id: str) -> None:
    assert good.kind is EventKind.TASK_COMPLETED and good.state is TaskState.COMPLETED
    assert isinstance(bad, ProtocolError), bad
    assert bad.task_id == task_id and "entry" in bad.message


async def test_taskcluster_batch_entry_fails_only_its_task() -> None:
    def handler(request: RawRequest) -> Reply:
        if request.method == "POST" and request.path.endswith("/tasks/status"):
            return Reply.json({"statuses": [
                {"taskId": OTHER, "status": {"taskId": OTHER, "state": 7}},  # unwatched, bad
                "not an entry",
                {"taskId": BAD, "status": {"taskId": BAD, "state": "completed"}},
                {"taskId": GOOD, "status": tc_status(GOOD)},
            ]})  # fmt: skip
        return Reply.json({"code": "ResourceNotFound", "message": "no"}, status=404)

    with HostileServer(handler) as server:
        backend = TaskclusterBackend(server.url, policy=FAST)
        try:
            entries = {r.task_id: o async for r, o in backend.fetch_many(
                [backend.task_ref(GOOD), backend.task_ref(BAD)]
            )}  # fmt: skip
            good, bad = await outcomes(backend.observe(GOOD), backend.observe(BAD))
        finally:
            await backend.aclose()
    assert entries[GOOD].state == "completed" and isinstance(entries[BAD], ProtocolError)
    message = entries[BAD].message
    assert "batch status" in message and "'status.provisionerId'" in message
    assert_local(good, bad, BAD)
    assert not any(r.method == "GET" for r in server.requests)  # nothing fell back per task


async def test_taskcluster_batch_answer_cut_short_fails_only_the_tasks_after_the_cut() -> None:
    """The batch answer is decoded entry by entry: the entries before the cut stand."""
    page = json.dumps({"statuses": [{"taskId": GOOD, "status": tc_status(GOOD)}]}).encode()

    def handler(request: RawRequest) -> Reply:
        if request.method == "POST" and request.path.endswith("/tasks/status"):
            cut = page[:-2] + b', {"taskId": "' + BAD.encode()  # the rest never came
            return Reply.of(200, cut, headers={"Content-Type": "application/json"})
        return Reply.json({"code": "ResourceNotFound", "message": "no"}, status=404)

    with HostileServer(handler) as server:
        backend = TaskclusterBackend(server.url, policy=FAST)
        try:
            good, bad = await outcomes(backend.observe(GOOD), backend.observe(BAD))
        finally:
            await backend.aclose()
    assert good.kind is EventKind.TASK_COMPLETED
    assert isinstance(bad, ProtocolError) and "not JSON" in bad.message


async def test_taskcluster_batch_answer_with_a_bad_envelope_fails_the_tasks_it_left() -> None:
    """A continuation token that is not a string, after the entries: the tasks the page left
    out cannot be followed up and fail; the one it answered stands. A JSON list for an answer
    fails every task."""
    answers = iter([
        {"statuses": [{"taskId": GOOD, "status": tc_status(GOOD)}], "continuationToken": 7},
        [{"taskId": GOOD, "status": tc_status(GOOD)}],
    ])  # fmt: skip

    def handler(request: RawRequest) -> Reply:
        if request.method == "POST" and request.path.endswith("/tasks/status"):
            return Reply.json(next(answers))
        return Reply.json({"code": "ResourceNotFound", "message": "no"}, status=404)

    with HostileServer(handler) as server:
        backend = TaskclusterBackend(server.url, policy=FAST)
        try:
            good, bad = await outcomes(backend.observe(GOOD), backend.observe(BAD))
            late = await outcomes(backend.observe(OTHER), backend.observe(BAD))
        finally:
            await backend.aclose()
    assert good.kind is EventKind.TASK_COMPLETED
    assert isinstance(bad, ProtocolError) and "continuationToken" in bad.message
    for error in late:
        assert isinstance(error, ProtocolError) and "_BatchAnswer" in error.message


GC_GOOD, GC_BAD, GC_OTHER = ("65a0" + "0" * 19 + digit for digit in "123")


async def test_greencloud_list_entry_fails_only_its_task() -> None:
    def handler(request: RawRequest) -> Reply:
        if request.path == "/v1/task/list":
            return Reply.json([
                {"id": GC_OTHER, "issued": None, "progress": 500, "status": "x"},  # unwatched
                17,
                {"id": GC_BAD.upper(), "issued": "1700000000", "progress": "half", "status": 0},
                {"id": GC_GOOD, "issued": "1700000000", "progress": 100, "status": 200},
            ])  # fmt: skip
        return Reply.json({"error": "not found"}, status=404)

    with HostileServer(handler) as server:
        backend = GreenCloudBackend(server.url, token="Bearer t0k3n", policy=FAST)
        try:
            good, bad = await outcomes(backend.observe(GC_GOOD), backend.observe(GC_BAD))
        finally:
            await backend.aclose()
    assert_local(good, bad, GC_BAD)
    assert "task list" in bad.message and "'progress'" in bad.message


async def test_iexec_rpc_reply_fails_only_its_task(emulator: EmulatorClient) -> None:
    _, (good_id, bad_id) = create_deal(emulator, [{"status": "COMPLETED"}], count=2)
    upstream = emulator.api_url("iexec") + "/rpc"

    async def corrupt(request: RawRequest) -> Reply:
        async with httpx.AsyncClient() as client:
            answer = await client.post(upstream, content=request.body, headers={
                "content-type": "application/json"
            })  # fmt: skip
        calls = request.json()
        replies = answer.json()
        if isinstance(calls, list):
            for call, reply in zip(calls, replies, strict=True):
                if bad_id[2:] in json.dumps(call):
                    reply.pop("result", None)
                    reply["error"] = {"code": "not a number", "message": []}
            replies[:0] = [{"jsonrpc": "2.0", "id": 99, "result": {"x": 1}}, "junk", [1]]
        return Reply.json(replies)

    with HostileServer(corrupt) as server:
        backend = IExecBackend(server.url, HUB_ADDRESS, policy=FAST)
        try:
            entries = {r.task_id: o async for r, o in backend.fetch_many(
                [backend.task_ref(good_id), backend.task_ref(bad_id)]
            )}  # fmt: skip
            good, bad = await outcomes(backend.observe(good_id), backend.observe(bad_id))
        finally:
            await backend.aclose()
    assert entries[good_id].statusName == "COMPLETED"
    assert isinstance(entries[bad_id], ProtocolError) and entries[bad_id].task_id == bad_id
    assert_local(good, bad, bad_id)
    assert "JSON-RPC batch answer" in bad.message
