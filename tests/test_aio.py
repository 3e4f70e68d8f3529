"""wait, wait_sync and aiter: safe across threads, with typed timeouts."""

from __future__ import annotations

import asyncio
import threading

import pytest
import reactivex
from memory_backend import MemoryBackend

from reactive_tasks import (
    EmptyObservation,
    ObservationTimeout,
    PollPolicy,
    TaskState,
    aiter,
    wait,
    wait_sync,
)

FAST = PollPolicy(interval=0.01, max_interval=0.04)


def test_wait_sync_returns_the_terminal_event_from_a_plain_thread() -> None:
    backend = MemoryBackend(policy=FAST)
    backend.script("t1", TaskState.PENDING, TaskState.RUNNING, TaskState.COMPLETED)
    event = wait_sync(backend.observe("t1"), timeout=5)
    assert event.state is TaskState.COMPLETED and event.sequence == 2
    backend.close()


def test_wait_sync_timeout_raises_and_stops_polling() -> None:
    backend = MemoryBackend(policy=FAST)
    with pytest.raises(ObservationTimeout):
        wait_sync(backend.observe("t1"), timeout=0.1)
    calls = backend.calls["t1"]
    threading.Event().wait(0.1)
    assert backend.calls["t1"] <= calls + 1
    backend.close()


async def test_wait_sync_inside_a_running_loop_raises_at_once() -> None:
    backend = MemoryBackend(policy=FAST)
    with pytest.raises(RuntimeError, match="running event loop"):
        wait_sync(backend.observe("t1"), timeout=5)
    assert not backend.calls
    await backend.aclose()


async def test_wait_receives_events_from_another_thread() -> None:
    subject: reactivex.subject.Subject[int] = reactivex.subject.Subject()

    def produce() -> None:
        for i in range(3):
            subject.on_next(i)
        subject.on_completed()

    async def later() -> None:
        await asyncio.sleep(0.02)
        threading.Thread(target=produce).start()

    asyncio.get_running_loop().create_task(later())
    assert await wait(subject, timeout=5) == 2


async def test_aiter_receives_events_from_another_thread() -> None:
    subject: reactivex.subject.Subject[int] = reactivex.subject.Subject()

    def produce() -> None:
        for i in range(100):
            subject.on_next(i)
        subject.on_completed()

    asyncio.get_running_loop().call_later(0.02, lambda: threading.Thread(target=produce).start())
    assert [i async for i in aiter(subject)] == list(range(100))


async def test_wait_on_an_empty_stream_and_on_errors() -> None:
    with pytest.raises(EmptyObservation):
        await wait(reactivex.empty())
    with pytest.raises(KeyError):
        await wait(reactivex.throw(KeyError("x")))
    with pytest.raises(KeyError):
        [i async for i in aiter(reactivex.throw(KeyError("x")))]


def test_wait_sync_on_an_empty_stream() -> None:
    with pytest.raises(EmptyObservation):
        wait_sync(reactivex.empty())


async def test_wait_on_background_loop_observable_from_asyncio() -> None:
    """Subscribing from a loop polls on that loop; events never cross threads needlessly."""
    backend = MemoryBackend(policy=FAST)
    backend.script("t1", TaskState.RUNNING, TaskState.COMPLETED)
    seen: list[str] = []
    obs = backend.observe("t1").pipe()
    obs.subscribe(on_next=lambda e: seen.append(threading.current_thread().name))
    await wait(backend.observe("t1"), timeout=5)
    assert set(seen) == {threading.current_thread().name}
    await backend.aclose()
