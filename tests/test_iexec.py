"""IExecBackend over real HTTP against the emulated chain: obsTask's event semantics exactly."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from eth_abi.abi import decode, encode

from reactive_tasks import (
    ConfigurationError,
    EventKind,
    InvalidTaskId,
    PollPolicy,
    TaskNotFound,
    TaskState,
    aiter,
    wait,
    wait_sync,
)
from reactive_tasks.backends import IExecBackend, IExecTask
from reactive_tasks.backends.iexec import CHAINS
from reactive_tasks.backends.iexec import _abi as abi
from reactive_tasks.emulator import EmulatorClient
from reactive_tasks.emulator.iexec import HUB_ADDRESS, create_deal
from tests.iexec_helpers import VIEW_TASK_SAMPLES

FAST = PollPolicy(interval=0.02, max_interval=0.1, jitter=0.0, request_timeout=2.0)
LIFECYCLE = [
    {"status": "UNSET", "polls": 2},
    {"status": "ACTIVE", "polls": 2},
    {"status": "REVEALING", "polls": 2},
    {"status": "COMPLETED"},
]


@pytest.fixture
async def backend(emulator: EmulatorClient) -> Any:
    b = IExecBackend(
        emulator.api_url("iexec") + "/rpc",
        HUB_ADDRESS,
        ipfs_gateway=emulator.api_url("iexec"),
        policy=FAST,
        logs=False,  # per-task reads, counted below; the logs round: test_iexec_logs.py
    )
    yield b
    await b.aclose()


def pairs(events: list[Any]) -> list[tuple[str, str]]:
    return [(e.kind.value, e.native_status) for e in events]


async def test_deal_lifecycle_from_unset_to_completed(
    emulator: EmulatorClient, backend: IExecBackend
) -> None:
    deal, (task,) = create_deal(emulator, LIFECYCLE)
    events = [e async for e in aiter(backend.observe(task, deal_id=deal))]
    assert pairs(events) == [
        ("TASK_UPDATED", "UNSET"),
        ("TASK_UPDATED", "ACTIVE"),
        ("TASK_UPDATED", "REVEALING"),
        ("TASK_COMPLETED", "COMPLETED"),
    ]
    assert [e.state for e in events] == [
        TaskState.PENDING, TaskState.RUNNING, TaskState.RUNNING, TaskState.COMPLETED
    ]
    assert [e.sequence for e in events] == [0, 1, 2, 3]
    unset, final = events[0].snapshot, events[-1].snapshot
    assert isinstance(final, IExecTask)
    assert unset.status == 0 and unset.dealid == deal and unset.idx is None
    assert unset.finalDeadline == final.finalDeadline  # computed from the deal = on chain
    assert final.taskid == task and final.dealid == deal and final.idx == 0
    assert final.status == 3 and not final.taskTimedOut
    assert final.results.storage == "ipfs" and final.results.location.startswith("/ipfs/Qm")
    assert final.revealCounter == 1 and len(final.contributors) == 1
    assert final.resultsTimestamp > 0 and final.timeref == 300
    # 7 status reads: a change only on status, never on other fields (revealDeadline ...)
    assert emulator.requests()["by_task"][task] == 7


async def test_deal_reads_happen_once_per_deal(
    emulator: EmulatorClient, backend: IExecBackend
) -> None:
    steps = [{"status": "UNSET", "polls": 5}, {"status": "COMPLETED"}]
    deal, tasks = create_deal(emulator, steps, count=3)
    events = await asyncio.gather(*(wait(backend.observe(t, deal_id=deal)) for t in tasks))
    assert {e.native_status for e in events} == {"COMPLETED"}
    counts = emulator.requests()["by_task"]
    assert counts[deal] == 1  # viewDeal read once for 3 tasks x 5 UNSET polls
    assert all(counts[t] == 6 for t in tasks)
    # a second observation of the same deal reads nothing but the tasks
    other_deal_task = tasks[0]
    emulator.reset_requests()
    await backend.status(other_deal_task, deal_id=deal)
    assert deal not in emulator.requests()["by_task"]


async def test_unset_without_deal_id_is_not_found(
    emulator: EmulatorClient, backend: IExecBackend
) -> None:
    _deal, (task,) = create_deal(emulator, [{"status": "UNSET"}])
    with pytest.raises(TaskNotFound, match="No task found") as info:
        await wait(backend.observe(task))
    assert info.value.task_id == task
    unknown = "0x" + "ab" * 32
    with pytest.raises(TaskNotFound):
        await backend.status(unknown)


async def test_unset_with_unknown_deal_is_not_found(
    emulator: EmulatorClient, backend: IExecBackend
) -> None:
    with pytest.raises(TaskNotFound, match="No deal found"):
        await wait(backend.observe("0x" + "ab" * 32, deal_id="0x" + "cd" * 32))


async def test_creation_grace_waits_for_the_task(
    emulator: EmulatorClient, backend: IExecBackend
) -> None:
    _deal, (task,) = create_deal(emulator, [{"status": "UNSET", "polls": 3}, {"status": "ACTIVE"}])
    policy = PollPolicy(interval=0.02, max_interval=0.1, jitter=0.0, creation_grace=5.0)
    first = await wait(backend.observe(task, policy=policy).pipe(_take(1)))
    assert (first.kind, first.native_status) == (EventKind.TASK_UPDATED, "ACTIVE")


async def test_active_task_times_out_with_the_clock(
    emulator: EmulatorClient, backend: IExecBackend
) -> None:
    # On chain the task stays ACTIVE; TIMEOUT comes from finalDeadline and the local clock.
    _deal, (task,) = create_deal(emulator, [{"status": "ACTIVE"}], deadline_in=1.2)
    events = [e async for e in aiter(backend.observe(task))]
    assert pairs(events) == [("TASK_UPDATED", "ACTIVE"), ("TASK_TIMEDOUT", "TIMEOUT")]
    final = events[-1]
    assert final.state is TaskState.TIMED_OUT and final.terminal
    assert final.snapshot.status == 1 and final.snapshot.taskTimedOut
    assert time.time() >= final.snapshot.finalDeadline


async def test_unset_task_times_out_at_the_deal_deadline(
    emulator: EmulatorClient, backend: IExecBackend
) -> None:
    deal, (task,) = create_deal(emulator, [{"status": "UNSET"}], deadline_in=1.2)
    events = [e async for e in aiter(backend.observe(task, deal_id=deal))]
    assert pairs(events) == [("TASK_UPDATED", "UNSET"), ("TASK_TIMEDOUT", "TIMEOUT")]
    assert events[-1].snapshot.status == 0 and events[-1].snapshot.taskTimedOut


async def test_timed_out_at_first_poll_is_one_event(
    emulator: EmulatorClient, backend: IExecBackend
) -> None:
    deal, (task,) = create_deal(emulator, [{"status": "REVEALING"}], deadline_in=-10)
    events = [e async for e in aiter(backend.observe(task, deal_id=deal))]
    assert pairs(events) == [("TASK_TIMEDOUT", "TIMEOUT")]


async def test_claimed_task_is_failed_not_timeout(
    emulator: EmulatorClient, backend: IExecBackend
) -> None:
    # status 4 wins over the timeout, as in the SDK (statusName is TIMEOUT only below 3).
    _deal, (task,) = create_deal(
        emulator, [{"status": "ACTIVE", "polls": 2}, {"status": "FAILED"}], deadline_in=-10
    )
    first = await backend.status(task)
    assert (first.kind, first.native_status) == (EventKind.TASK_TIMEDOUT, "TIMEOUT")
    _claimed_deal, (claimed,) = create_deal(emulator, [{"status": "FAILED"}], deadline_in=-10)
    events = [e async for e in aiter(backend.observe(claimed))]
    assert pairs(events) == [("TASK_FAILED", "FAILED")]
    assert events[0].state is TaskState.FAILED and events[0].snapshot.taskTimedOut


async def test_completed_task_never_times_out(
    emulator: EmulatorClient, backend: IExecBackend
) -> None:
    _deal, (task,) = create_deal(emulator, [{"status": "COMPLETED"}], deadline_in=-10)
    event = await wait(backend.observe(task))
    assert (event.kind, event.native_status) == (EventKind.TASK_COMPLETED, "COMPLETED")
    assert not event.snapshot.taskTimedOut


async def test_results_decode_like_the_sdk(
    emulator: EmulatorClient, backend: IExecBackend
) -> None:
    cases: list[tuple[Any, dict[str, Any]]] = [
        ({"storage": "dropbox", "location": "/results/1"},
         {"storage": "dropbox", "location": "/results/1"}),
        ("not json", {"storage": "none", "location": None}),
        (None, {"storage": "none", "location": None}),
        ("[1, 2]", {"storage": "none", "location": None}),
        ('{"storage": 5}', {"storage": "none", "location": None}),
    ]
    for raw, expected in cases:
        _deal, (task,) = create_deal(emulator, [{"status": "COMPLETED", "results": raw}])
        snapshot = (await backend.status(task)).snapshot
        assert snapshot.results.model_dump(include={"storage", "location"}) == expected


async def test_status_reads_once_like_show(
    emulator: EmulatorClient, backend: IExecBackend
) -> None:
    deal, (task,) = create_deal(emulator, LIFECYCLE)
    event = await backend.status(task, deal_id=deal)
    assert (event.kind, event.native_status, event.sequence) == (EventKind.TASK_UPDATED, "UNSET", 0)
    assert emulator.requests()["by_task"][task] == 1


async def test_subscribers_share_one_poll(
    emulator: EmulatorClient, backend: IExecBackend
) -> None:
    _deal, (task,) = create_deal(
        emulator, [{"status": "ACTIVE", "polls": 6}, {"status": "COMPLETED"}]
    )
    a, b = await asyncio.gather(
        wait(backend.observe(task)), wait(backend.observe(task, deal_id=None))
    )
    assert a.native_status == b.native_status == "COMPLETED"
    assert emulator.requests()["by_task"][task] == 7  # one poll loop for both


def test_observe_from_sync_code(emulator: EmulatorClient) -> None:
    backend = IExecBackend(emulator.api_url("iexec") + "/rpc", HUB_ADDRESS, policy=FAST)
    try:
        deal, (task,) = create_deal(emulator, [{"status": "ACTIVE"}, {"status": "COMPLETED"}])
        final = wait_sync(backend.observe(task, deal_id=deal), timeout=10)
        assert final.kind is EventKind.TASK_COMPLETED
    finally:
        backend.close()


async def test_ids_are_validated_before_any_request(
    emulator: EmulatorClient, backend: IExecBackend
) -> None:
    for bad in ["", "0x1234", "ab" * 32, "0x" + "zz" * 32, "0x" + "ab" * 33]:
        with pytest.raises(InvalidTaskId):
            backend.observe(bad)
    with pytest.raises(InvalidTaskId, match="deal id"):
        backend.observe("0x" + "ab" * 32, deal_id="0x12")
    with pytest.raises(InvalidTaskId):
        backend.observe_deal("nope")
    assert emulator.requests()["total"] == 0
    event_ref = backend.task_ref("0x" + "AB" * 32)
    assert event_ref.task_id == "0x" + "ab" * 32


def test_configuration_and_presets() -> None:
    with pytest.raises(ConfigurationError):
        IExecBackend("http://localhost:8545", "0x1234")
    with pytest.raises(ConfigurationError):
        IExecBackend("localhost:8545", HUB_ADDRESS)
    with pytest.raises(ConfigurationError):
        IExecBackend("http://localhost:8545", HUB_ADDRESS, ipfs_gateway="ipfs.io")
    with pytest.raises(ConfigurationError):
        IExecBackend("http://localhost:8545", HUB_ADDRESS, batch_size=0)
    arbitrum = IExecBackend.for_chain("arbitrum-mainnet")
    assert arbitrum.base_url == "https://arb1.arbitrum.io/rpc"
    assert arbitrum.hub_address == CHAINS["arbitrum-mainnet"].hub_address.lower()
    assert arbitrum.ipfs_gateway == "https://ipfs-gateway.arbitrum-mainnet.iex.ec"
    assert IExecBackend.for_chain(421614).hub_address == (
        "0xb2157bf2fab286b2a4170e3491ac39770111da3e"
    )
    assert IExecBackend.for_chain("134").base_url == "https://bellecour.iex.ec"
    own = IExecBackend.for_chain("bellecour", rpc_url="https://node.example/key123")
    assert own.base_url == "https://node.example/key123"
    assert "key123" not in repr(own) and "node.example" in repr(own)
    with pytest.raises(ConfigurationError, match="unknown iExec chain"):
        IExecBackend.for_chain("goerli")


def _take(count: int) -> Any:
    from reactivex import operators as ops

    return ops.take(count)


def test_view_task_results_decode_as_eth_abi_decodes_them() -> None:
    for task in VIEW_TASK_SAMPLES:
        data = encode([abi.TASK_TYPE], [task])
        fast = abi._canonical_task(data)  # the hub's layout: read word by word
        assert fast is not None
        (raw,) = decode([abi.TASK_TYPE], data)
        assert fast == abi.TaskTuple(
            raw[0], "0x" + raw[1].hex(), *raw[2:7], "0x" + raw[7].hex(), raw[8], raw[9],
            tuple(raw[10]), "0x" + raw[11].hex(), raw[12], raw[13], "0x" + raw[14].hex(),
        )
        # another layout eth-abi accepts (bytes after the end) is eth-abi's to read
        assert abi._canonical_task(data + bytes(32)) is None
        assert abi.decode_task(data + bytes(32)) == fast
    data = bytearray(encode([abi.TASK_TYPE], [VIEW_TASK_SAMPLES[1]]))
    data[data.index(bytes.fromhex("ab" * 20)) - 1] = 1  # an address with dirty padding
    with pytest.raises(abi.AbiError):
        abi.decode_task(bytes(data))
