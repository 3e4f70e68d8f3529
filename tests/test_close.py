"""``aclose()`` ends everything: no read still unwinding opens a session, client or hub behind it,
and a request that comes too late fails with a typed error."""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from reactive_tasks import BackendUnavailable, PollPolicy
from reactive_tasks._session import Session
from reactive_tasks.backends import CloudCoinBackend, CloudCoinTask, TaskRef
from reactive_tasks.emulator import EmulatorClient
from reactive_tasks.testing import open_loops, open_sessions

POLICY = PollPolicy(interval=0.05, max_interval=0.5, jitter=0.0, request_timeout=5.0)


class ClosedAsARoundStarts(CloudCoinBackend):
    """Counts the sessions it is given, and is closed just as its first round starts: the
    round's reads are handed out, their workers not started yet, when the close begins."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sessions = 0
        self.rounds = 0
        self.closing: asyncio.Task[None] | None = None

    def new_session(self) -> Session:
        self.sessions += 1
        return super().new_session()

    def fetch_many(
        self, refs: Sequence[TaskRef]
    ) -> AsyncIterator[tuple[TaskRef, CloudCoinTask | BaseException]]:
        self.rounds += 1
        if self.rounds == 1:
            self.closing = asyncio.ensure_future(self.aclose())
        return super().fetch_many(refs)


async def test_no_read_opens_a_session_behind_aclose(
    emulator: EmulatorClient, caplog: pytest.LogCaptureFixture
) -> None:
    ids = emulator.create_tasks("cloudcoin", 20, [{"status": "running", "progress": 1}])
    tasks0 = len(asyncio.all_tasks())
    backend = ClosedAsARoundStarts(
        emulator.api_url("cloudcoin"), policy=POLICY, max_concurrency=4
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for task in ids:
            backend.observe(task).subscribe(lambda e: None)
        async with asyncio.timeout(20):
            while backend.closing is None:
                await asyncio.sleep(0.01)
            await backend.closing
        requests = emulator.requests()["total"]
        await asyncio.sleep(0.2)
        gc.collect()
    assert backend.sessions == 1, "a read unwinding from the close opened a fresh session"
    assert open_sessions(backend) == 0 and open_loops(backend) == 0
    assert len(asyncio.all_tasks()) == tasks0
    assert emulator.requests()["total"] == requests, "nothing is sent after aclose()"
    assert "Unclosed" not in caplog.text
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


async def test_a_request_after_aclose_fails_with_a_typed_error(
    emulator: EmulatorClient,
) -> None:
    task = emulator.create_task("cloudcoin", [{"status": "running"}])
    backend = CloudCoinBackend(emulator.api_url("cloudcoin"), policy=POLICY)
    session = backend.session()  # held by code still running when the backend closes
    await backend.aclose()
    requests = emulator.requests()["total"]
    with pytest.raises(BackendUnavailable, match="closed"):
        await session.request("GET", f"/api/v1/task/{task}")
    assert emulator.requests()["total"] == requests
    assert open_sessions(backend) == 0


async def test_a_read_waiting_behind_a_round_when_aclose_begins_fails_cleanly(
    emulator: EmulatorClient,
) -> None:
    ids = emulator.create_tasks("cloudcoin", 5, [{"status": "running", "progress": 1}])
    emulator.inject_fault("cloudcoin", "slow", delay=0.3, count=100)
    backend = ClosedAsARoundStarts(
        emulator.api_url("cloudcoin"), policy=POLICY, max_concurrency=1
    )
    backend.rounds = 2  # closed by the test, not by a round
    for task in ids:
        backend.observe(task).subscribe(lambda e: None)
    await asyncio.sleep(0.1)  # one read in flight, the round's others queued behind it
    status = asyncio.ensure_future(backend.status(ids[0]))
    await asyncio.sleep(0.05)
    await backend.aclose()
    with pytest.raises(BackendUnavailable, match="closed"):
        await asyncio.wait_for(status, 5)
    assert backend.sessions == 1
    assert open_sessions(backend) == 0
