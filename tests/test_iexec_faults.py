"""IExecBackend under RPC faults: transient ones are retried with no lost or duplicated event;
reverted calls, malformed hex and undecodable results are ProtocolErrors."""

from __future__ import annotations

from typing import Any

import pytest

from reactive_tasks import (
    AuthenticationError,
    BackendUnavailable,
    PollPolicy,
    ProtocolError,
    aiter,
    wait,
)
from reactive_tasks.backends import IExecBackend
from reactive_tasks.emulator import EmulatorClient
from reactive_tasks.emulator.iexec import HUB_ADDRESS, create_deal

FAST = PollPolicy(interval=0.02, max_interval=0.05, jitter=0.0, request_timeout=2.0)
LIFECYCLE = [
    {"status": "UNSET", "polls": 1},
    {"status": "ACTIVE", "polls": 1},
    {"status": "REVEALING", "polls": 1},
    {"status": "COMPLETED"},
]
ACTIVE_THEN_COMPLETED = [{"status": "ACTIVE", "polls": 1}, {"status": "COMPLETED"}]
EXPECTED = [
    ("TASK_UPDATED", "UNSET"),
    ("TASK_UPDATED", "ACTIVE"),
    ("TASK_UPDATED", "REVEALING"),
    ("TASK_COMPLETED", "COMPLETED"),
]


@pytest.fixture
async def backend(emulator: EmulatorClient) -> Any:
    # per-task reads: each round's eth_call meets the fault (the logs round: test_iexec_logs.py)
    b = IExecBackend(emulator.api_url("iexec") + "/rpc", HUB_ADDRESS, policy=FAST, logs=False)
    yield b
    await b.aclose()


async def lifecycle(backend: IExecBackend, task: str, deal: str) -> list[tuple[str, str]]:
    observation = backend.observe(task, deal_id=deal)
    return [(e.kind.value, e.native_status) async for e in aiter(observation)]


@pytest.mark.parametrize(
    "kind, fields",
    [
        ("status", {"status": 503}),
        ("status", {"status": 500}),
        ("rate_limit", {"retry_after": 0.05}),
        ("reset", {}),
        ("api_error", {}),  # JSON-RPC -32000 server error
        ("api_error", {"code": -32005, "message": "limit exceeded"}),
        ("api_error", {"code": -32099, "message": "header not found"}),
    ],
)
async def test_transient_faults_lose_and_repeat_nothing(
    emulator: EmulatorClient, backend: IExecBackend, kind: str, fields: dict[str, Any]
) -> None:
    deal, (task,) = create_deal(emulator, LIFECYCLE)
    emulator.inject_fault("iexec", kind, count=3, **fields)
    assert await lifecycle(backend, task, deal) == EXPECTED
    assert emulator.faults() == []


async def test_faults_between_every_step(emulator: EmulatorClient, backend: IExecBackend) -> None:
    """A fault after each state change (the task only advances on served reads)."""
    deal, (task,) = create_deal(emulator, LIFECYCLE)
    seen: list[tuple[str, str]] = []
    kinds = iter([("status", {"status": 502}), ("api_error", {}), ("reset", {})])
    async for event in aiter(backend.observe(task, deal_id=deal)):
        seen.append((event.kind.value, event.native_status))
        kind, fields = next(kinds, ("rate_limit", {"retry_after": 0}))
        emulator.inject_fault("iexec", kind, count=2, **fields)
    assert seen == EXPECTED


async def test_a_json_rpc_error_on_one_call_spares_the_others(
    emulator: EmulatorClient, backend: IExecBackend
) -> None:
    import asyncio

    steps = [{"status": "ACTIVE", "polls": 2}, {"status": "COMPLETED"}]
    _deal, tasks = create_deal(emulator, steps, count=3)
    emulator.inject_fault("iexec", "api_error", task_id=tasks[1], count=4)
    finals = await asyncio.gather(*(wait(backend.observe(t)) for t in tasks))
    assert [f.native_status for f in finals] == ["COMPLETED"] * 3
    counts = emulator.requests()["by_task"]
    assert counts[tasks[0]] == 3 and counts[tasks[2]] == 3
    assert counts[tasks[1]] == 3 + 4  # its 4 failed reads, then 3 served ones


async def test_transient_faults_of_the_deal_read_are_retried(
    emulator: EmulatorClient, backend: IExecBackend
) -> None:
    # A poll whose deal read fails yields nothing: UNSET lasts long enough to be seen after.
    deal, (task,) = create_deal(emulator, [{"status": "UNSET", "polls": 3}, *LIFECYCLE[1:]])
    emulator.inject_fault("iexec", "api_error", task_id=deal, count=2)
    assert await lifecycle(backend, task, deal) == EXPECTED
    assert emulator.requests()["by_task"][deal] == 3


async def test_retry_budget_ends_with_backend_unavailable(
    emulator: EmulatorClient, backend: IExecBackend
) -> None:
    _deal, (task,) = create_deal(emulator, [{"status": "ACTIVE"}])
    emulator.inject_fault("iexec", "api_error", count=50, message="header not found")
    policy = PollPolicy(interval=0.01, max_interval=0.02, jitter=0.0, retry_budget=3)
    with pytest.raises(BackendUnavailable) as info:
        await wait(backend.observe(task, policy=policy))
    assert "header not found" in str(info.value.__cause__)


async def test_reverted_call_is_a_protocol_error(
    emulator: EmulatorClient, backend: IExecBackend
) -> None:
    deal, (task,) = create_deal(emulator, LIFECYCLE)
    events: list[Any] = []
    emulator.inject_fault("iexec", "api_error", code=3, path_contains="rpc")
    with pytest.raises(ProtocolError, match="reverted") as info:
        async for event in aiter(backend.observe(task, deal_id=deal)):
            events.append(event)
    assert events == [] and info.value.task_id == task
    # a geth-style -32000 "execution reverted" is a revert too, not a transient fault
    emulator.inject_fault("iexec", "api_error", code=-32000, message="execution reverted")
    with pytest.raises(ProtocolError, match="reverted"):
        await backend.status(task, deal_id=deal)


async def test_unknown_category_reverts(emulator: EmulatorClient, backend: IExecBackend) -> None:
    deal, (task,) = create_deal(emulator, [{"status": "UNSET"}])
    emulator.inject_fault(
        "iexec", "api_error", task_id=deal,
        body={"result": "0x" + _deal_with_category(emulator, deal, 99)},
    )
    with pytest.raises(ProtocolError, match="reverted"):
        await backend.status(task, deal_id=deal)


def _deal_with_category(emulator: EmulatorClient, deal: str, category: int) -> str:
    import httpx
    from eth_abi.abi import decode, encode

    from reactive_tasks.backends.iexec._abi import DEAL_TYPE, call_data

    reply = httpx.post(
        emulator.api_url("iexec") + "/rpc",
        json={"jsonrpc": "2.0", "id": 1, "method": "eth_call", "params": [
            {"to": HUB_ADDRESS, "data": call_data("viewDeal(bytes32)", ("bytes32",),
                                                   (bytes.fromhex(deal[2:]),))}, "latest"]},
    ).json()
    fields = list(decode([DEAL_TYPE], bytes.fromhex(reply["result"][2:]))[0])
    fields[4] = category
    return encode([DEAL_TYPE], [tuple(fields)]).hex()


@pytest.mark.parametrize(
    "result, match",
    [
        ("0xzz", "not 0x-prefixed hex"),
        ("0x123", "not 0x-prefixed hex"),
        ("1234", "not 0x-prefixed hex"),
        (12, "not 0x-prefixed hex"),
        ("0x1234", "does not decode"),
        ("0x", "returned no data"),
    ],
)
async def test_malformed_results_are_protocol_errors(
    emulator: EmulatorClient, backend: IExecBackend, result: Any, match: str
) -> None:
    _deal, (task,) = create_deal(emulator, ACTIVE_THEN_COMPLETED)
    events: list[Any] = []
    emulator.inject_fault("iexec", "api_error", task_id=task, body={"result": result})
    with pytest.raises(ProtocolError, match=match):
        async for event in aiter(backend.observe(task)):
            events.append(event)
    assert events == []


async def test_malformed_result_after_events_keeps_the_events(
    emulator: EmulatorClient, backend: IExecBackend
) -> None:
    deal, (task,) = create_deal(emulator, LIFECYCLE)
    events: list[tuple[str, str]] = []
    with pytest.raises(ProtocolError):
        async for event in aiter(backend.observe(task, deal_id=deal)):
            events.append((event.kind.value, event.native_status))
            if event.native_status == "ACTIVE":
                emulator.inject_fault("iexec", "api_error", task_id=task, body={"result": "0xq"})
    assert events == EXPECTED[:2]


@pytest.mark.parametrize(
    "body",
    [
        "not json at all",
        {"jsonrpc": "2.0", "id": 0, "result": "0x"},  # a single answer to a batch
        [{"jsonrpc": "2.0", "id": 0, "error": {"code": "x"}}],
        {"unexpected": True},
    ],
)
async def test_malformed_bodies_are_protocol_errors(
    emulator: EmulatorClient, backend: IExecBackend, body: Any
) -> None:
    _deal, (task,) = create_deal(emulator, [{"status": "ACTIVE"}])
    emulator.inject_fault("iexec", "malformed", body=body)
    with pytest.raises(ProtocolError):
        await wait(backend.observe(task))


async def test_batch_wide_json_rpc_error_is_classified(
    emulator: EmulatorClient, backend: IExecBackend
) -> None:
    _deal, (task,) = create_deal(emulator, ACTIVE_THEN_COMPLETED)
    server_error = {"jsonrpc": "2.0", "id": None, "error": {"code": -32000, "message": "busy"}}
    emulator.inject_fault("iexec", "malformed", body=server_error, count=2)
    final = await wait(backend.observe(task))
    assert final.native_status == "COMPLETED"
    invalid = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "Invalid"}}
    emulator.inject_fault("iexec", "malformed", body=invalid)
    with pytest.raises(ProtocolError, match="-32600"):
        await backend.status(task)


async def test_wrong_hub_address_is_a_protocol_error(emulator: EmulatorClient) -> None:
    _deal, (task,) = create_deal(emulator, [{"status": "ACTIVE"}])
    wrong = IExecBackend(emulator.api_url("iexec") + "/rpc", "0x" + "12" * 20, policy=FAST)
    try:
        with pytest.raises(ProtocolError, match="is hub_address a PoCo hub"):
            await wrong.status(task)
    finally:
        await wrong.aclose()


async def test_http_errors(emulator: EmulatorClient, backend: IExecBackend) -> None:
    _deal, (task,) = create_deal(emulator, [{"status": "ACTIVE"}])
    emulator.inject_fault("iexec", "status", status=401)
    with pytest.raises(AuthenticationError):
        await backend.status(task)
    emulator.inject_fault("iexec", "status", status=404)
    with pytest.raises(ProtocolError, match="HTTP 404"):
        await backend.status(task)
