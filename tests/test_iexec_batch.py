"""IExecBackend with per-task reads (logs=False): one JSON-RPC batch per chunk of ``batch_size``
tasks, one HTTP request each."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from reactivex import operators as ops

from reactive_tasks import PollPolicy, TaskNotFound, wait
from reactive_tasks.backends import IExecBackend, IExecTask
from reactive_tasks.emulator import EmulatorClient
from reactive_tasks.emulator.iexec import HUB_ADDRESS, create_deal

FAST = PollPolicy(interval=0.02, max_interval=0.1, jitter=0.0, request_timeout=5.0)


class RecordingTransport(httpx.AsyncBaseTransport):
    """Forwards to httpx's transport and records how many calls each request carried."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.batches: list[int] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.batches.append(len(body) if isinstance(body, list) else 0)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def rpc_requests(emulator: EmulatorClient) -> int:
    count: int = emulator.requests()["by_route"].get("iexec POST /rpc", 0)
    return count


async def collect(backend: IExecBackend, refs: list[Any]) -> dict[str, Any]:
    return {ref.task_id: outcome async for ref, outcome in backend.fetch_many(refs)}


async def watch_to_the_end(backend: IExecBackend, tasks: list[str]) -> list[Any]:
    """Every task's last event, all watched at once; the backend is closed after."""
    try:
        return list(await asyncio.gather(*(wait(backend.observe(t)) for t in tasks)))
    finally:
        await backend.aclose()


async def first_snapshots(backend: IExecBackend, tasks: list[str]) -> dict[str, Any]:
    """Each task's first reading, all watched at once: the hub reads them in one round."""
    events = await asyncio.gather(*(wait(backend.observe(t).pipe(ops.first())) for t in tasks))
    return {event.task_id: event.snapshot for event in events}


async def test_each_chunk_is_one_http_request(emulator: EmulatorClient) -> None:
    _, tasks = create_deal(emulator, [{"status": "ACTIVE"}], count=7)
    transport = RecordingTransport()
    backend = IExecBackend(
        emulator.api_url("iexec") + "/rpc", HUB_ADDRESS, batch_size=3, transport=transport,
        logs=False,
    )
    try:
        outcomes = await first_snapshots(backend, tasks)
    finally:
        await backend.aclose()
    assert set(outcomes) == set(tasks)
    assert all(isinstance(o, IExecTask) and o.statusName == "ACTIVE" for o in outcomes.values())
    assert transport.batches == [3, 3, 1]
    assert rpc_requests(emulator) == 3


async def test_batch_size_is_the_size_of_every_json_rpc_batch(emulator: EmulatorClient) -> None:
    # issue 11: IExecBackend(batch_size=500) once still sent JSON-RPC batches of 100
    _, tasks = create_deal(emulator, [{"status": "COMPLETED"}], count=600)
    transport = RecordingTransport()
    backend = IExecBackend(
        emulator.api_url("iexec") + "/rpc", HUB_ADDRESS, batch_size=500, policy=FAST,
        transport=transport, logs=False,
    )
    finals = await watch_to_the_end(backend, tasks)
    assert {f.native_status for f in finals} == {"COMPLETED"}
    counts = emulator.requests()["by_task"]
    assert all(counts[t] == 1 for t in tasks)  # one round reads all 600
    # that round: one request of 500 calls and one of 100, counted at the emulator
    assert rpc_requests(emulator) == 2
    assert sorted(transport.batches) == [100, 500]


async def test_a_round_of_many_tasks_is_one_request(emulator: EmulatorClient) -> None:
    _, tasks = create_deal(emulator, [{"status": "ACTIVE"}], count=40)
    missing = "0x" + "ee" * 32
    transport = RecordingTransport()
    backend = IExecBackend(
        emulator.api_url("iexec") + "/rpc", HUB_ADDRESS, transport=transport, logs=False
    )
    try:
        outcomes = await collect(backend, [backend.task_ref(t) for t in [*tasks, missing]])
    finally:
        await backend.aclose()
    assert transport.batches == [41]
    assert isinstance(outcomes[missing], TaskNotFound)
    assert sum(isinstance(o, IExecTask) for o in outcomes.values()) == 40


async def test_unset_tasks_of_one_deal_share_their_deal_reads(emulator: EmulatorClient) -> None:
    deal, tasks = create_deal(emulator, [{"status": "UNSET"}], count=5)
    transport = RecordingTransport()
    backend = IExecBackend(
        emulator.api_url("iexec") + "/rpc", HUB_ADDRESS, transport=transport, logs=False
    )
    try:
        refs = [backend.task_ref(t, deal_id=deal) for t in tasks]
        first = await collect(backend, refs)
        again = await collect(backend, refs)
    finally:
        await backend.aclose()
    assert {o.statusName for o in [*first.values(), *again.values()]} == {"UNSET"}
    # tasks; viewDeal + final_deadline_ratio; viewCategory; then tasks only
    assert transport.batches == [5, 2, 1, 5]


async def test_observed_tasks_are_polled_together(emulator: EmulatorClient) -> None:
    steps = [{"status": "ACTIVE", "polls": 3}, {"status": "COMPLETED"}]
    _, tasks = create_deal(emulator, steps, count=150)
    transport = RecordingTransport()
    backend = IExecBackend(
        emulator.api_url("iexec") + "/rpc", HUB_ADDRESS, policy=FAST, transport=transport,
        logs=False,
    )
    finals = await watch_to_the_end(backend, tasks)
    assert {f.native_status for f in finals} == {"COMPLETED"}
    counts = emulator.requests()["by_task"]
    assert all(counts[t] == 4 for t in tasks)  # 4 polls each, never more
    assert sum(transport.batches) == 600
    assert max(transport.batches) == 100  # chunked by IExecBackend.max_batch
    # 4 rounds of 150 tasks in chunks of at most 100: a handful of requests, not 600
    assert len(transport.batches) <= 12


async def test_concurrent_chunks_read_a_deal_once(emulator: EmulatorClient) -> None:
    steps = [{"status": "UNSET", "polls": 2}, {"status": "COMPLETED"}]
    deal, tasks = create_deal(emulator, steps, count=250)  # 3 chunks polled concurrently
    backend = IExecBackend(
        emulator.api_url("iexec") + "/rpc", HUB_ADDRESS, policy=FAST, logs=False
    )
    try:
        finals = await asyncio.gather(*(wait(backend.observe(t, deal_id=deal)) for t in tasks))
    finally:
        await backend.aclose()
    assert {f.native_status for f in finals} == {"COMPLETED"}
    assert emulator.requests()["by_task"][deal] == 1
