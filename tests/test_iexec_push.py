"""IExecBackend(ws_url=...): eth_subscribe("logs") pushes task changes into the hub (via="push"),
across reconnects, while polls slow down to reconcile_interval."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from reactive_tasks import ConfigurationError, PollPolicy, aiter
from reactive_tasks.backends import TransientFault
from reactive_tasks.backends.iexec import IExecBackend, _ws
from reactive_tasks.backends.iexec._logs import task_topics
from reactive_tasks.emulator import EmulatorClient
from reactive_tasks.emulator.iexec import HUB_ADDRESS, create_deal

# Polls every 0.05 s when not live: only a live feed explains slow polls, and only push
# explains an event while polls wait a minute.
POLICY = PollPolicy(interval=0.05, max_interval=0.2, jitter=0.0, reconcile_interval=60.0)


pytestmark = pytest.mark.usefixtures("fast_iexec_blocks")


def ws_url(emulator: EmulatorClient) -> str:
    return emulator.api_url("iexec").replace("http://", "ws://") + "/rpc"


@pytest.fixture
async def backend(emulator: EmulatorClient) -> AsyncIterator[IExecBackend]:
    b = IExecBackend(
        emulator.api_url("iexec") + "/rpc", HUB_ADDRESS, ws_url=ws_url(emulator), policy=POLICY
    )
    yield b
    await b.aclose()


async def chain(emulator: EmulatorClient, path: str = "", method: str = "GET") -> Any:
    async with httpx.AsyncClient() as client:
        response = await client.request(method, emulator.api_url("iexec") + "/_chain" + path)
    return response.json()


async def connected(emulator: EmulatorClient, count: int = 1) -> None:
    for _ in range(250):
        if (await chain(emulator))["connections"] >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the feed never connected")


async def test_changes_arrive_by_push(emulator: EmulatorClient, backend: IExecBackend) -> None:
    _, (task,) = create_deal(emulator, [
        {"status": "ACTIVE", "seconds": 1.0}, {"status": "REVEALING", "seconds": 0.3},
        {"status": "COMPLETED"},
    ])
    events = [e async for e in aiter(backend.observe(task))]
    assert [e.native_status for e in events] == ["ACTIVE", "REVEALING", "COMPLETED"]
    assert [e.via for e in events[1:]] == ["push", "push"]
    assert events[-1].snapshot.results.storage == "ipfs"


async def test_polls_slow_to_the_reconcile_interval_while_live(
    emulator: EmulatorClient, backend: IExecBackend
) -> None:
    _, (task,) = create_deal(emulator, [{"status": "ACTIVE"}])
    stream = aiter(backend.observe(task))
    first = await anext(stream)
    assert first.native_status == "ACTIVE"
    await connected(emulator)
    await asyncio.sleep(0.3)  # the reconciliation round when the feed came up
    emulator.reset_requests()
    await asyncio.sleep(0.6)  # 12 polls at interval; none at reconcile_interval
    assert emulator.requests()["by_route"].get("iexec POST /rpc", 0) == 0
    await stream.aclose()


async def test_push_resumes_after_the_node_drops_the_socket(
    emulator: EmulatorClient, backend: IExecBackend
) -> None:
    _, (task,) = create_deal(emulator, [
        {"status": "ACTIVE", "seconds": 3.0}, {"status": "COMPLETED"},
    ])
    stream = aiter(backend.observe(task))
    assert (await anext(stream)).native_status == "ACTIVE"
    await connected(emulator)
    dropped = await chain(emulator, "/drop", "POST")
    assert dropped["dropped"] == 1
    await asyncio.sleep(0.1)
    await connected(emulator)  # reconnected (with backoff) and subscribed again
    last = await anext(stream)
    assert last.native_status == "COMPLETED" and last.via == "push"


async def test_watches_coming_and_going_resubscribe(
    emulator: EmulatorClient, backend: IExecBackend
) -> None:
    _, (early, late) = create_deal(emulator, [
        [{"status": "ACTIVE"}],
        [{"status": "ACTIVE", "seconds": 1.5}, {"status": "COMPLETED"}],
    ])
    first = aiter(backend.observe(early))
    await anext(first)
    await connected(emulator)
    events = [e async for e in aiter(backend.observe(late))]  # subscribed after the first
    assert events[-1].native_status == "COMPLETED" and events[-1].via == "push"
    await first.aclose()


def test_ws_url_must_be_a_websocket_url_and_stays_secret(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with pytest.raises(ConfigurationError):
        IExecBackend("http://localhost:8545", HUB_ADDRESS, ws_url="http://localhost:8546")
    key = "k3yK3yK3yK3yK3yK3y"
    backend = IExecBackend(
        "https://node.example/v3/" + key, HUB_ADDRESS, ws_url="wss://node.example/ws/v3/" + key
    )
    assert key not in repr(backend)
    assert key not in repr(backend.open_feed())


async def test_connection_errors_never_show_the_key(caplog: pytest.LogCaptureFixture) -> None:
    key = "s3cr3tS3cr3tS3cr3t"
    backend = IExecBackend(
        "http://127.0.0.1:9/" + key, HUB_ADDRESS, ws_url="ws://127.0.0.1:9/" + key,
    )
    feed = backend.open_feed()
    assert feed is not None

    class Sink:
        def feed_live(self, live: bool) -> None: ...
        def feed_snapshot(self, ref: Any, snapshot: Any) -> None: ...
        def feed_bound(self, refs: Any) -> None: ...

    with caplog.at_level(logging.DEBUG):
        task = asyncio.ensure_future(feed.run(Sink()))
        await asyncio.sleep(0.5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert "connection lost" in caplog.text
    assert key not in caplog.text
    await backend.aclose()


class _Sink:
    def __init__(self) -> None:
        self.snapshots: list[Any] = []

    def feed_live(self, live: bool) -> None:
        pass

    def feed_snapshot(self, ref: Any, snapshot: Any) -> None:
        self.snapshots.append(snapshot)


@pytest.mark.parametrize(("batch_size", "sizes"), [(100, [10]), (4, [4, 4, 2])])
async def test_a_burst_of_logs_is_read_in_one_batch(
    monkeypatch: pytest.MonkeyPatch, batch_size: int, sizes: list[int]
) -> None:
    monkeypatch.setattr(_ws, "_QUIET", 0.5)  # the burst's messages come well within this
    monkeypatch.setattr(_ws, "_BURST", 5.0)
    backend = IExecBackend("http://127.0.0.1:9/rpc", HUB_ADDRESS,
                           ws_url="ws://127.0.0.1:9/rpc", batch_size=batch_size)
    feed = _ws.LogFeed(backend, "ws://127.0.0.1:9/rpc")
    ids = [f"0x{i:064x}" for i in range(1, 11)]
    for task_id in ids:
        feed.watch(backend.task_ref(task_id))
    batches: list[list[str]] = []
    done = asyncio.Event()

    async def read_tasks(chunk: list[Any]) -> list[tuple[Any, BaseException]]:
        batches.append([ref.task_id for ref in chunk])
        if sum(map(len, batches)) == len(ids):
            done.set()
        return [(ref, TransientFault("not read here")) for ref in chunk]

    monkeypatch.setattr(backend, "_read_tasks", read_tasks)
    consensus = task_topics()[2]
    try:
        for task_id in ids:
            feed._dispatch({"jsonrpc": "2.0", "method": "eth_subscription", "params": {
                "subscription": "0x1",
                "result": {"address": HUB_ADDRESS, "topics": [consensus, task_id],
                           "blockNumber": "0x10", "removed": False},
            }}, _Sink())
            await asyncio.sleep(0)  # each message its own network read: the loop runs between
        await asyncio.wait_for(done.wait(), 5)
        # one viewTask batch for the burst, not one per message; a long one per full batch
        assert [len(b) for b in batches] == sizes
        assert [task_id for b in batches for task_id in b] == ids
    finally:
        await backend.aclose()
