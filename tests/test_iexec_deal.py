"""IExecBackend.observe_deal: one obsDeal-like stream over every task of a deal."""

from __future__ import annotations

from typing import Any

import pytest

from reactive_tasks import PollPolicy, ProtocolError, TaskNotFound, aiter, wait
from reactive_tasks.backends import IExecBackend, IExecDealEvent
from reactive_tasks.emulator import EmulatorClient
from reactive_tasks.emulator.iexec import HUB_ADDRESS, create_deal, task_id_of

FAST = PollPolicy(interval=0.02, max_interval=0.05, jitter=0.0, request_timeout=2.0)


@pytest.fixture
async def backend(emulator: EmulatorClient) -> Any:
    b = IExecBackend(emulator.api_url("iexec") + "/rpc", HUB_ADDRESS, policy=FAST)
    yield b
    await b.aclose()


async def test_deal_events_count_completed_tasks(
    emulator: EmulatorClient, backend: IExecBackend
) -> None:
    scripts = [
        [{"status": "ACTIVE", "polls": 1}, {"status": "COMPLETED"}],
        [
            {"status": "UNSET", "polls": 1},
            {"status": "ACTIVE", "polls": 1},
            {"status": "REVEALING", "polls": 1},
            {"status": "COMPLETED"},
        ],
        [{"status": "ACTIVE", "polls": 2}, {"status": "COMPLETED"}],
    ]
    deal, tasks = create_deal(emulator, scripts)
    events: list[IExecDealEvent] = [e async for e in aiter(backend.observe_deal(deal))]
    # 2 + 4 + 2 task events; the first deal event comes once all three have reported
    assert len(events) == 6
    assert [e.kind for e in events] == ["DEAL_UPDATED"] * 5 + ["DEAL_COMPLETED"]
    completed = [e.completed_tasks_count for e in events]
    assert completed == sorted(completed) and completed[-1] == 3
    assert all(e.tasks_count == 3 and e.failed_tasks_count == 0 for e in events)
    final = events[-1]
    assert final.terminal and final.deal_id == deal
    assert final.deal.botSize == 3 and final.deal.tasks == dict(enumerate(tasks))
    assert [final.tasks[i].task_id for i in range(3)] == tasks
    assert {e.native_status for e in final.tasks.values()} == {"COMPLETED"}
    assert emulator.requests()["by_task"][deal] == 1  # the deal is read once, for everyone


async def test_deal_times_out_when_every_task_has_ended(
    emulator: EmulatorClient, backend: IExecBackend
) -> None:
    scripts = [
        [{"status": "COMPLETED"}],
        [{"status": "FAILED"}],
        [{"status": "UNSET"}],
    ]
    deal, _ = create_deal(emulator, scripts, deadline_in=-5)
    final = await wait(backend.observe_deal(deal))
    assert final.kind == "DEAL_TIMEDOUT"
    assert (final.completed_tasks_count, final.failed_tasks_count) == (1, 2)
    assert [final.tasks[i].native_status for i in range(3)] == ["COMPLETED", "FAILED", "TIMEOUT"]


async def test_deal_task_ids_are_computed_like_poco(emulator: EmulatorClient) -> None:
    deal = "0x" + "12" * 32
    _, tasks = create_deal(emulator, [{"status": "ACTIVE"}], count=2, deal_id=deal)
    # keccak256(abi.encodePacked(bytes32 dealid, uint256 idx))
    from Crypto.Hash import keccak

    def packed(idx: int) -> str:
        data = bytes.fromhex(deal[2:]) + idx.to_bytes(32, "big")
        return "0x" + keccak.new(digest_bits=256, data=data).hexdigest()

    assert tasks == [packed(0), packed(1)] == [task_id_of(deal, 0), task_id_of(deal, 1)]


async def test_unknown_deal_is_not_found(emulator: EmulatorClient, backend: IExecBackend) -> None:
    with pytest.raises(TaskNotFound, match="No deal found"):
        await wait(backend.observe_deal("0x" + "ab" * 32))


async def test_deal_read_faults_are_retried(
    emulator: EmulatorClient, backend: IExecBackend
) -> None:
    deal, _ = create_deal(emulator, [{"status": "COMPLETED"}], count=2)
    emulator.inject_fault("iexec", "status", status=503, count=2)
    final = await wait(backend.observe_deal(deal))
    assert final.kind == "DEAL_COMPLETED" and final.completed_tasks_count == 2


async def test_transient_json_rpc_errors_of_the_deal_read_are_retried(
    emulator: EmulatorClient, backend: IExecBackend
) -> None:
    # a node's transient JSON-RPC error in the reply to viewDeal (HTTP 200), not an HTTP fault
    deal, _ = create_deal(emulator, [{"status": "COMPLETED"}], count=2)
    emulator.inject_fault("iexec", "api_error", task_id=deal, count=2)
    final = await wait(backend.observe_deal(deal))
    assert final.kind == "DEAL_COMPLETED" and final.completed_tasks_count == 2
    assert emulator.faults() == []


async def test_a_failing_task_fails_the_deal_stream(
    emulator: EmulatorClient, backend: IExecBackend
) -> None:
    deal, tasks = create_deal(emulator, [{"status": "ACTIVE"}], count=2)
    emulator.inject_fault("iexec", "api_error", task_id=tasks[1], code=3, count=100)
    with pytest.raises(ProtocolError, match="reverted"):
        await wait(backend.observe_deal(deal))

