"""IExecBackend's rounds with logs (the default): one eth_blockNumber + eth_getLogs batch, and
viewTask only for the tasks that moved, were never read, or are due for reconciliation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from reactive_tasks import PollPolicy, aiter
from reactive_tasks.backends.iexec import IExecBackend, IExecTask
from reactive_tasks.emulator import EmulatorClient
from reactive_tasks.emulator.iexec import HUB_ADDRESS, create_deal

ROUTE = "iexec POST /rpc"
FAST = PollPolicy(interval=0.05, max_interval=0.2, jitter=0.0, request_timeout=5.0)


pytestmark = pytest.mark.usefixtures("fast_iexec_blocks")


@pytest.fixture
async def backend(emulator: EmulatorClient) -> AsyncIterator[IExecBackend]:
    b = IExecBackend(emulator.api_url("iexec") + "/rpc", HUB_ADDRESS, policy=FAST)
    yield b
    await b.aclose()


async def round_of(backend: IExecBackend, refs: list[Any]) -> dict[str, Any]:
    return {ref.task_id: outcome async for ref, outcome in backend.fetch_many(refs)}


def posts(emulator: EmulatorClient) -> int:
    return int(emulator.requests()["by_route"].get(ROUTE, 0))


def reads(emulator: EmulatorClient) -> dict[str, int]:
    """viewTask reads by task (the emulator counts eth_call ids; getLogs names none)."""
    return dict(emulator.requests()["by_task"])


async def mined(emulator: EmulatorClient, task_id: str, count: int) -> None:
    """Wait until the chain holds ``count`` logs of ``task_id`` (removed ones included)."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "eth_getLogs",
            "params": [{"fromBlock": "0x0", "topics": [None, task_id]}]}
    async with httpx.AsyncClient() as client:
        for _ in range(200):
            reply = await client.post(emulator.api_url("iexec") + "/rpc", json=body)
            if len(reply.json()["result"]) >= count:
                return
            await asyncio.sleep(0.02)
    raise AssertionError(f"{task_id} never had {count} logs")


async def test_idle_round_is_one_post_and_no_read(
    emulator: EmulatorClient, backend: IExecBackend
) -> None:
    # 250 tasks: more than one viewTask batch (100) and more than one getLogs filter (200)
    _, tasks = create_deal(emulator, [{"status": "ACTIVE"}], count=250)
    refs = [backend.task_ref(t) for t in tasks]
    await mined(emulator, tasks[-1], 1)
    first = await round_of(backend, refs)
    assert all(isinstance(s, IExecTask) and s.statusName == "ACTIVE" for s in first.values())
    assert set(reads(emulator)) >= set(tasks)  # the first round reads every task
    emulator.reset_requests()
    for _ in range(3):
        again = await round_of(backend, refs)
        assert again == first
    assert posts(emulator) == 3  # one POST per round, whatever the number of tasks
    assert reads(emulator) == {}


async def test_a_task_with_new_logs_is_read_like_a_per_task_read(
    emulator: EmulatorClient, backend: IExecBackend
) -> None:
    _, (idle, moving) = create_deal(emulator, [
        [{"status": "ACTIVE"}],
        [{"status": "ACTIVE", "seconds": 0.3}, {"status": "COMPLETED"}],
    ])
    refs = [backend.task_ref(idle), backend.task_ref(moving)]
    await mined(emulator, moving, 1)
    await round_of(backend, refs)
    await mined(emulator, moving, 5)  # initialize, contribute, consensus, reveal, finalize
    emulator.reset_requests()
    after = await round_of(backend, refs)
    assert reads(emulator) == {moving: 1}
    assert posts(emulator) == 2  # the logs batch, then the read of the moved task
    per_task = IExecBackend(emulator.api_url("iexec") + "/rpc", HUB_ADDRESS, logs=False)
    try:
        direct = await round_of(per_task, [per_task.task_ref(moving)])
    finally:
        await per_task.aclose()
    assert after[moving] == direct[moving]
    assert after[moving].statusName == "COMPLETED"


async def test_events_match_per_task_reads(emulator: EmulatorClient) -> None:
    steps = [{"status": "UNSET", "seconds": 0.2}, {"status": "ACTIVE", "seconds": 0.3},
             {"status": "REVEALING", "seconds": 0.3}, {"status": "COMPLETED"}]
    deal, (first, second) = create_deal(emulator, [steps, steps])
    url = emulator.api_url("iexec") + "/rpc"
    with_logs = IExecBackend(url, HUB_ADDRESS, policy=FAST)
    per_task = IExecBackend(url, HUB_ADDRESS, policy=FAST, logs=False)
    async def events(backend: IExecBackend, task: str) -> list[Any]:
        return [e async for e in aiter(backend.observe(task, deal_id=deal))]

    try:
        logged, polled = await asyncio.gather(events(with_logs, first), events(per_task, second))
    finally:
        await with_logs.aclose()
        await per_task.aclose()
    assert [e.native_status for e in logged] == [e.native_status for e in polled] == [
        "UNSET", "ACTIVE", "REVEALING", "COMPLETED"
    ]
    # what differs between two tasks: their ids, values derived from them, step times
    own = {"taskid", "idx", "consensusValue", "resultDigest", "results", "revealDeadline",
           "resultsTimestamp"}
    for a, b in zip(logged, polled, strict=True):
        assert (a.kind, a.state, a.sequence) == (b.kind, b.state, b.sequence)
        assert a.snapshot.model_dump(exclude=own) == b.snapshot.model_dump(exclude=own)

async def test_a_removed_log_makes_the_task_read_again(
    emulator: EmulatorClient, backend: IExecBackend
) -> None:
    _, (task,) = create_deal(emulator, [{"status": "ACTIVE"}])
    refs = [backend.task_ref(task)]
    await mined(emulator, task, 1)
    await round_of(backend, refs)
    await round_of(backend, refs)
    emulator.reset_requests()
    reorg = httpx.post(emulator.api_url("iexec") + "/_chain/reorg", json={"task_id": task})
    assert reorg.json() == {"removed": 1}
    await mined(emulator, task, 2)
    await round_of(backend, refs)
    assert reads(emulator) == {task: 1}
    emulator.reset_requests()
    await round_of(backend, refs)
    assert reads(emulator) == {}


async def test_every_task_is_read_again_at_the_reconcile_interval(
    emulator: EmulatorClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr("reactive_tasks.backends.iexec._logs.clock", lambda: now[0])
    policy = PollPolicy(interval=0.05, jitter=0.0, reconcile_interval=30.0)
    backend = IExecBackend(emulator.api_url("iexec") + "/rpc", HUB_ADDRESS, policy=policy)
    _, tasks = create_deal(emulator, [{"status": "ACTIVE"}], count=5)
    for task in tasks:  # their first logs land before round 1: no later block moves them
        await mined(emulator, task, 1)
    refs = [backend.task_ref(t) for t in tasks]
    try:
        await round_of(backend, refs)
        emulator.reset_requests()
        now[0] += 29.0
        await round_of(backend, refs)
        assert reads(emulator) == {}
        now[0] += 1.0
        await round_of(backend, refs)
        assert reads(emulator) == {t: 1 for t in tasks}
    finally:
        await backend.aclose()


async def test_timeout_fires_at_the_deadline_without_a_read(
    emulator: EmulatorClient, backend: IExecBackend
) -> None:
    deal, (task,) = create_deal(emulator, [{"status": "ACTIVE"}], deadline_in=1.5)
    await mined(emulator, task, 1)
    events = []
    async for event in aiter(backend.observe(task, deal_id=deal)):
        events.append(event)
        if len(events) == 1:
            emulator.reset_requests()
    assert [e.native_status for e in events] == ["ACTIVE", "TIMEOUT"]
    assert events[-1].snapshot.taskTimedOut and time.time() >= events[-1].snapshot.finalDeadline
    assert reads(emulator) == {}  # rounds of logs only: the deadline needs no read


async def test_logs_false_reads_every_task_every_round(emulator: EmulatorClient) -> None:
    backend = IExecBackend(emulator.api_url("iexec") + "/rpc", HUB_ADDRESS, logs=False)
    _, tasks = create_deal(emulator, [{"status": "ACTIVE"}], count=3)
    refs = [backend.task_ref(t) for t in tasks]
    try:
        await round_of(backend, refs)
        emulator.reset_requests()
        await round_of(backend, refs)
    finally:
        await backend.aclose()
    assert reads(emulator) == {t: 1 for t in tasks}
    assert backend.max_batch == 100


def test_order_key_ranks_a_reopen_after_revealing(backend: IExecBackend) -> None:
    def key(status: int, contributors: int, name: str) -> Any:
        snap = IExecTask(
            taskid="0x" + "11" * 32, dealid="0x" + "22" * 32, status=status, statusName=name,
            taskTimedOut=name == "TIMEOUT", contributors=("0x" + "33" * 20,) * contributors,
        )
        return backend.order_key(snap, backend.interpret(snap, backend.task_ref(snap.taskid)))

    unset, active = key(0, 0, "UNSET"), key(1, 1, "ACTIVE")
    revealing, reopened = key(2, 2, "REVEALING"), key(1, 2, "ACTIVE")
    again, completed = key(2, 3, "REVEALING"), key(3, 3, "COMPLETED")
    assert unset < active < revealing < reopened < again < completed
    assert key(1, 0, "TIMEOUT") > again


async def test_a_log_query_refused_or_off_shape_costs_reads_not_errors(
    emulator: EmulatorClient,
) -> None:
    from hostile import HostileServer, RawRequest, Reply

    _, tasks = create_deal(emulator, [{"status": "ACTIVE"}], count=3)
    node = emulator.api_url("iexec") + "/rpc"
    mode = ["refuse"]

    def logs_answer(call_id: Any) -> dict[str, Any]:
        if mode[0] == "refuse":
            error = {"code": -32005, "message": "query returned more than 10000 results"}
            return {"jsonrpc": "2.0", "id": call_id, "error": error}
        result = [] if mode[0] == "none" else [{"address": HUB_ADDRESS, "topics": "odd"}]
        return {"jsonrpc": "2.0", "id": call_id, "result": result}

    def handler(request: RawRequest) -> Reply:
        out = [
            logs_answer(item["id"]) if item["method"] == "eth_getLogs"
            else httpx.post(node, json=item).json()
            for item in request.json()
        ]
        return Reply.json(out)

    with HostileServer(handler) as server:
        backend = IExecBackend(server.url + "/rpc", HUB_ADDRESS)
        refs = [backend.task_ref(t) for t in tasks]
        try:
            await round_of(backend, refs)
            for wanted in ("refuse", "odd", "none"):
                mode[0] = wanted
                emulator.reset_requests()
                answers = await round_of(backend, refs)
                assert all(a.statusName == "ACTIVE" for a in answers.values())
                assert reads(emulator) == ({} if wanted == "none" else {t: 1 for t in tasks})
        finally:
            await backend.aclose()


async def test_status_is_a_read_even_with_logs(
    emulator: EmulatorClient, backend: IExecBackend
) -> None:
    _, (task,) = create_deal(emulator, [{"status": "ACTIVE"}])
    await round_of(backend, [backend.task_ref(task)])
    emulator.reset_requests()
    event = await backend.status(task)
    assert event.native_status == "ACTIVE"
    assert reads(emulator) == {task: 1} and posts(emulator) == 1  # viewTask alone, like show


async def test_an_idle_round_looks_only_at_tasks_past_their_deadline(
    emulator: EmulatorClient, backend: IExecBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the deadline is a whole second: 3-4 s leaves the first rounds well before it
    _, soon = create_deal(emulator, [{"status": "ACTIVE"}], deadline_in=4.0)
    _, later = create_deal(emulator, [{"status": "ACTIVE"}], count=20)
    refs = [backend.task_ref(t) for t in soon + later]
    await mined(emulator, later[-1], 1)
    looked: list[str] = []
    at_time = backend.at_time

    def counted(snapshot: IExecTask, now: int) -> IExecTask:
        looked.append(snapshot.taskid)
        return at_time(snapshot, now)

    monkeypatch.setattr(backend, "at_time", counted)
    first = await round_of(backend, refs)
    emulator.reset_requests()
    await round_of(backend, refs)
    assert first[soon[0]].statusName == "ACTIVE"  # read before its deadline
    assert looked == []  # idle tasks before their deadline: nothing to recompute
    while time.time() < first[soon[0]].finalDeadline:
        await asyncio.sleep(0.05)
    after = await round_of(backend, refs)
    assert looked == soon  # the one task whose deadline passed, and only it
    assert after[soon[0]].statusName == "TIMEOUT" and after[soon[0]].taskTimedOut
    assert all(after[t].statusName == "ACTIVE" for t in later)
    looked.clear()
    again = await round_of(backend, refs)
    assert looked == [] and again == after
    assert reads(emulator) == {}  # TIMEOUT needs no read


async def test_tasks_joining_and_leaving_the_rounds(
    emulator: EmulatorClient, backend: IExecBackend
) -> None:
    _, (a, b, c) = create_deal(emulator, [{"status": "ACTIVE"}], count=3)
    ra, rb, rc = (backend.task_ref(t) for t in (a, b, c))
    await mined(emulator, c, 1)
    first = await round_of(backend, [ra, rb])
    emulator.reset_requests()
    swapped = await round_of(backend, [ra, rc])  # c joined as b left
    assert reads(emulator) == {c: 1}  # the newcomer only
    assert {t: s.statusName for t, s in swapped.items()} == {a: "ACTIVE", c: "ACTIVE"}
    emulator.reset_requests()
    assert await round_of(backend, [rc, ra]) == swapped  # the same tasks in another order
    joined = await round_of(backend, [ra, rb, rc])  # and b came back
    assert joined == {**first, **swapped} and reads(emulator) == {}
    httpx.post(emulator.api_url("iexec") + "/_chain/reorg", json={"task_id": b})
    await mined(emulator, b, 2)
    emulator.reset_requests()
    moved = await round_of(backend, [rb, rc])
    assert reads(emulator) == {b: 1} and moved == {b: joined[b], c: joined[c]}


async def test_a_moved_task_whose_read_failed_is_read_at_the_next_round(
    emulator: EmulatorClient,
) -> None:
    from hostile import HostileServer, RawRequest, Reply

    _, (idle, task) = create_deal(emulator, [{"status": "ACTIVE"}], count=2)
    node = emulator.api_url("iexec") + "/rpc"
    failing = [False]

    def answer(item: dict[str, Any]) -> Any:
        data = str(item["params"][0].get("data", "")) if item["method"] == "eth_call" else ""
        if failing[0] and task[2:] in data:
            busy = {"code": -32000, "message": "busy"}
            return {"jsonrpc": "2.0", "id": item["id"], "error": busy}
        return httpx.post(node, json=item).json()

    def handler(request: RawRequest) -> Reply:
        return Reply.json([answer(item) for item in request.json()])

    await mined(emulator, task, 1)
    with HostileServer(handler) as server:
        backend = IExecBackend(server.url + "/rpc", HUB_ADDRESS)
        refs = [backend.task_ref(idle), backend.task_ref(task)]
        try:
            await round_of(backend, refs)
            httpx.post(emulator.api_url("iexec") + "/_chain/reorg", json={"task_id": task})
            await mined(emulator, task, 2)
            failing[0] = True
            emulator.reset_requests()
            failed = await round_of(backend, refs)
            assert isinstance(failed[task], Exception) and failed[idle].statusName == "ACTIVE"
            failing[0] = False
            emulator.reset_requests()
            again = await round_of(backend, refs)  # no new log: its last one is still unread
            assert reads(emulator) == {task: 1} and again[task].statusName == "ACTIVE"
            emulator.reset_requests()
            await round_of(backend, refs)
            assert reads(emulator) == {}
        finally:
            await backend.aclose()


@pytest.mark.parametrize("change", [
    {}, {"removed": True}, {"blockNumber": None}, {"blockNumber": "0xZZ"}, {"address": "0xABC"},
    {"topics": ["0x" + "12" * 32, "0x" + "34" * 32]}, {"topics": ["odd"]}, {"topics": "odd"},
    {"topics": [None, "0x" + "34" * 32]}, {"removed": "yes"}, {"removed": 1}, {"address": None},
])
def test_log_facts_read_an_entry_as_the_log_model_does(change: dict[str, Any]) -> None:
    from pydantic import ValidationError

    from reactive_tasks.backends.iexec._logs import ChainLog, log_facts, task_topics

    hub = HUB_ADDRESS.lower()
    task = "0x" + "ab" * 32
    entry = {"address": HUB_ADDRESS.upper().replace("0X", "0x"), "blockNumber": "0x1f",
             "topics": [task_topics()[3].upper().replace("0X", "0x"), task, "0x" + "00" * 32],
             "data": "0x", "logIndex": "0x0", "removed": False, **change}
    try:
        log = ChainLog.model_validate(entry)
    except ValidationError:
        assert log_facts(entry, hub) is None
    else:
        assert log_facts(entry, hub) == (log.task_id(hub), log.block, log.removed)
    if not change:  # the usual entry: a task event of the hub (case aside)
        assert log_facts(entry, hub) == (task, 31, False)
