"""Engine behaviour with an in-memory backend: ordering, sharing, retries, deadlines, disposal."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from memory_backend import MemoryBackend

from reactive_tasks import (
    AuthenticationError,
    BackendUnavailable,
    EventKind,
    InvalidTaskId,
    ObservationTimeout,
    PollPolicy,
    ProtocolError,
    TaskEvent,
    TaskNotFound,
    TaskState,
    aiter,
    wait,
)
from reactive_tasks.backends import TransientFault
from reactive_tasks.testing import watched_tasks

S = TaskState
FAST = PollPolicy(interval=0.01, max_interval=0.04, jitter=0.0)


class Recorder:
    """Collects what one subscription receives, and lets a test await its end."""

    def __init__(self) -> None:
        self.events: list[TaskEvent[Any]] = []
        self.error: Exception | None = None
        self.completed = False
        self.done = asyncio.Event()

    def on_next(self, event: TaskEvent[Any]) -> None:
        self.events.append(event)

    def on_error(self, error: Exception) -> None:
        self.error = error
        self.done.set()

    def on_completed(self) -> None:
        self.completed = True
        self.done.set()

    def subscribe(self, observable: Any) -> Any:
        return observable.subscribe(self.on_next, self.on_error, self.on_completed)

    @property
    def states(self) -> list[TaskState]:
        return [e.state for e in self.events]


@pytest.fixture
async def backend() -> Any:
    b = MemoryBackend(policy=FAST)
    yield b
    await b.aclose()


async def test_one_event_per_change_then_completion(backend: MemoryBackend) -> None:
    backend.script(
        "t1", S.PENDING, S.PENDING, S.RUNNING, (S.RUNNING, 10.0), (S.RUNNING, 10.0),
        (S.RUNNING, 10.0, "copying"), S.COMPLETED,
    )
    rec = Recorder()
    rec.subscribe(backend.observe("t1"))
    await asyncio.wait_for(rec.done.wait(), 5)
    assert rec.completed and rec.error is None
    assert rec.states == [S.PENDING, S.RUNNING, S.RUNNING, S.RUNNING, S.COMPLETED]
    assert [e.progress for e in rec.events] == [None, None, 10.0, 10.0, None]
    assert [e.message for e in rec.events][3] == "copying"
    assert [e.sequence for e in rec.events] == [0, 1, 2, 3, 4]
    assert rec.events[-1].kind is EventKind.TASK_COMPLETED
    assert all(e.kind is EventKind.TASK_UPDATED for e in rec.events[:-1])
    assert backend.calls["t1"] == 7
    await asyncio.sleep(0.05)
    assert backend.calls["t1"] == 7, "no poll after the terminal state"


async def test_timestamps_alone_never_make_an_event(backend: MemoryBackend) -> None:
    backend.script("t1", *([S.RUNNING] * 6), S.FAILED)
    rec = Recorder()
    rec.subscribe(backend.observe("t1"))
    await asyncio.wait_for(rec.done.wait(), 5)
    assert rec.states == [S.RUNNING, S.FAILED]
    assert rec.events[-1].kind is EventKind.TASK_FAILED
    assert rec.completed, "a failed task completes the stream; it is not an error"


async def test_terminal_at_first_poll_gives_one_event(backend: MemoryBackend) -> None:
    backend.script("t1", S.CANCELLED)
    rec = Recorder()
    rec.subscribe(backend.observe("t1"))
    await asyncio.wait_for(rec.done.wait(), 5)
    assert rec.states == [S.CANCELLED] and rec.completed
    assert rec.events[0].kind is EventKind.TASK_CANCELLED


async def test_invalid_id_raises_before_any_request(backend: MemoryBackend) -> None:
    with pytest.raises(InvalidTaskId):
        backend.observe("bad")
    with pytest.raises(ValueError):
        backend.observe("")
    assert not backend.calls


async def test_subscribers_share_one_poll_and_late_one_gets_replay(
    backend: MemoryBackend,
) -> None:
    backend.script("t1", S.PENDING, S.RUNNING, *([(S.RUNNING, 50.0)] * 10), S.COMPLETED)
    obs = backend.observe("t1")
    first, second = Recorder(), Recorder()
    first.subscribe(obs)
    while len(first.events) < 2:
        await asyncio.sleep(0.005)
    second.subscribe(obs)
    assert second.events and second.events[0] == first.events[-1], "replays the latest event"
    await asyncio.wait_for(asyncio.gather(first.done.wait(), second.done.wait()), 5)
    assert first.states == [S.PENDING, S.RUNNING, S.RUNNING, S.COMPLETED]
    assert second.events == first.events[1:]
    assert backend.calls["t1"] == 13, "one poll per round for both subscribers"
    assert backend.overlaps == 0


async def test_disposing_last_subscription_stops_polling_at_once(backend: MemoryBackend) -> None:
    obs = backend.observe("t1")
    a, b = Recorder(), Recorder()
    da, db = a.subscribe(obs), b.subscribe(obs)
    await asyncio.sleep(0.05)
    da.dispose()
    before = backend.calls["t1"]
    await asyncio.sleep(0.05)
    assert backend.calls["t1"] > before, "one subscriber left: polling goes on"
    db.dispose()
    stopped = backend.calls["t1"]
    await asyncio.sleep(0.08)
    assert backend.calls["t1"] == stopped
    assert not a.done.is_set() and not b.done.is_set(), "disposal sends no notifications"
    assert watched_tasks(backend) == 0


async def test_due_tasks_are_batched_into_one_fetch_many(backend: MemoryBackend) -> None:
    recs = [Recorder() for _ in range(40)]
    for i, rec in enumerate(recs):
        backend.script(f"t{i}", S.RUNNING, S.RUNNING, S.COMPLETED)
        rec.subscribe(backend.observe(f"t{i}"))
    await asyncio.wait_for(asyncio.gather(*(r.done.wait() for r in recs)), 5)
    assert sorted(backend.batches[0]) == sorted(f"t{i}" for i in range(40))
    assert len(backend.batches) <= 6, backend.batches


async def test_max_batch_chunks_the_round() -> None:
    backend = MemoryBackend(policy=FAST, batch=7)
    recs = [Recorder() for _ in range(20)]
    for i, rec in enumerate(recs):
        backend.script(f"t{i}", S.COMPLETED)
        rec.subscribe(backend.observe(f"t{i}"))
    await asyncio.wait_for(asyncio.gather(*(r.done.wait() for r in recs)), 5)
    assert [len(b) for b in backend.batches] == [7, 7, 6]
    await backend.aclose()


async def test_transient_faults_are_retried_without_lost_or_duplicate_events(
    backend: MemoryBackend,
) -> None:
    fault = TransientFault("HTTP 503")
    backend.script(
        "t1", S.PENDING, fault, fault, S.RUNNING, fault, (S.RUNNING, 40.0), TimeoutError(),
        OSError("reset"), (S.RUNNING, 40.0), S.COMPLETED,
    )
    rec = Recorder()
    rec.subscribe(backend.observe("t1"))
    await asyncio.wait_for(rec.done.wait(), 5)
    assert rec.error is None
    assert rec.states == [S.PENDING, S.RUNNING, S.RUNNING, S.COMPLETED]
    assert [e.sequence for e in rec.events] == [0, 1, 2, 3]


async def test_retry_budget_exhausted_is_backend_unavailable() -> None:
    backend = MemoryBackend(policy=PollPolicy(interval=0.01, max_interval=0.02, retry_budget=3))
    backend.script("t1", S.RUNNING, *[TransientFault("HTTP 502")] * 10)
    rec = Recorder()
    rec.subscribe(backend.observe("t1"))
    await asyncio.wait_for(rec.done.wait(), 5)
    assert isinstance(rec.error, BackendUnavailable)
    assert isinstance(rec.error.__cause__, TransientFault)
    assert rec.error.task_id == "t1" and rec.error.backend == "memory"
    assert backend.calls["t1"] == 5, "first poll + 4 failures (budget 3 exceeded)"
    assert rec.states == [S.RUNNING]
    await backend.aclose()


async def test_success_resets_the_failure_count() -> None:
    backend = MemoryBackend(policy=PollPolicy(interval=0.01, max_interval=0.02, retry_budget=2))
    f = TransientFault("HTTP 500")
    backend.script("t1", S.RUNNING, f, f, S.RUNNING, f, f, S.RUNNING, f, f, S.COMPLETED)
    rec = Recorder()
    rec.subscribe(backend.observe("t1"))
    await asyncio.wait_for(rec.done.wait(), 5)
    assert rec.completed and rec.states == [S.RUNNING, S.COMPLETED]
    await backend.aclose()


async def test_retry_after_is_a_floor_for_the_next_poll(backend: MemoryBackend) -> None:
    backend.script("t1", TransientFault("HTTP 429", retry_after=0.3), S.COMPLETED)
    started = time.monotonic()
    event = await wait(backend.observe("t1"), timeout=5)
    assert event.state is S.COMPLETED
    assert time.monotonic() - started >= 0.29


def test_backoff_is_full_jitter_and_capped() -> None:
    policy = PollPolicy(interval=1.0, max_interval=8.0, backoff=2.0)
    assert [policy.backoff_bound(n) for n in range(1, 6)] == [2.0, 4.0, 8.0, 8.0, 8.0]
    delays = [policy.retry_delay(3) for _ in range(500)]
    assert 0.0 <= min(delays) < 1.0 and 7.0 < max(delays) <= 8.0
    assert all(policy.retry_delay(1, retry_after=5.0) >= 5.0 for _ in range(50))


async def test_not_found_is_an_error_unless_within_creation_grace() -> None:
    backend = MemoryBackend(policy=FAST)
    backend.script("t1", TaskNotFound("no such task", backend="memory", task_id="t1"))
    rec = Recorder()
    rec.subscribe(backend.observe("t1"))
    await asyncio.wait_for(rec.done.wait(), 5)
    assert isinstance(rec.error, TaskNotFound) and backend.calls["t1"] == 1

    graced = PollPolicy(interval=0.01, max_interval=0.04, creation_grace=0.5)
    missing = TaskNotFound("no such task", backend="memory", task_id="t2")
    backend.script("t2", missing, missing, missing, S.RUNNING, S.COMPLETED)
    event = await wait(backend.observe("t2", policy=graced), timeout=5)
    assert event.state is S.COMPLETED
    await backend.aclose()


async def test_authentication_and_protocol_errors_end_the_stream_at_once(
    backend: MemoryBackend,
) -> None:
    backend.script("t1", S.RUNNING, AuthenticationError("HTTP 401", backend="memory"))
    with pytest.raises(AuthenticationError):
        await wait(backend.observe("t1"), timeout=5)
    assert backend.calls["t1"] == 2
    backend.script("t2", ValueError("garbled body"))
    with pytest.raises(ProtocolError) as info:
        await wait(backend.observe("t2"), timeout=5)
    assert isinstance(info.value.__cause__, ValueError)


async def test_interpret_failure_is_a_protocol_error() -> None:
    class Broken(MemoryBackend):
        def interpret(self, snapshot: Any, ref: Any) -> Any:
            raise KeyError("status")

    backend = Broken(policy=FAST)
    with pytest.raises(ProtocolError, match="KeyError"):
        await wait(backend.observe("t1"), timeout=5)
    await backend.aclose()


async def test_each_subscription_has_its_own_timeout(backend: MemoryBackend) -> None:
    obs_short = backend.observe("t1", policy=PollPolicy(interval=0.01, timeout=0.1))
    patient = Recorder()
    patient.subscribe(backend.observe("t1"))
    with pytest.raises(ObservationTimeout):
        await wait(obs_short)
    calls = backend.calls["t1"]
    await asyncio.sleep(0.05)
    assert backend.calls["t1"] > calls, "the other subscriber keeps the poll alive"
    assert patient.error is None
    backend.script("t1", S.COMPLETED)
    await asyncio.wait_for(patient.done.wait(), 5)
    assert patient.completed


async def test_polls_of_one_task_never_overlap() -> None:
    backend = MemoryBackend(policy=PollPolicy(interval=0.01), delay=0.05)
    backend.script("t1", *([S.RUNNING] * 5), S.COMPLETED)
    recs = [Recorder() for _ in range(3)]
    for rec in recs:
        rec.subscribe(backend.observe("t1"))
    await asyncio.wait_for(asyncio.gather(*(r.done.wait() for r in recs)), 5)
    assert backend.overlaps == 0 and backend.calls["t1"] == 6
    await backend.aclose()


async def test_smallest_interval_of_current_subscribers_wins() -> None:
    backend = MemoryBackend(policy=PollPolicy(interval=5.0))
    slow = Recorder()
    slow.subscribe(backend.observe("t1"))
    await asyncio.sleep(0.05)
    assert backend.calls["t1"] == 1
    fast = Recorder()
    d = fast.subscribe(backend.observe("t1", policy=PollPolicy(interval=0.01)))
    await asyncio.sleep(0.2)
    assert backend.calls["t1"] >= 5
    d.dispose()
    await backend.aclose()


async def test_a_raising_callback_does_not_break_other_subscribers(
    backend: MemoryBackend, caplog: pytest.LogCaptureFixture
) -> None:
    backend.script("t1", S.RUNNING, S.COMPLETED)
    obs = backend.observe("t1")
    obs.subscribe(on_next=lambda e: 1 / 0)
    good = Recorder()
    good.subscribe(obs)
    await asyncio.wait_for(good.done.wait(), 5)
    assert good.states == [S.RUNNING, S.COMPLETED]
    assert "callback raised" in caplog.text


async def test_aiter_yields_every_event_and_stops_on_break(backend: MemoryBackend) -> None:
    backend.script("t1", S.PENDING, S.RUNNING, (S.RUNNING, 1.0), (S.RUNNING, 2.0))
    seen = []
    async for event in aiter(backend.observe("t1")):
        seen.append(event.state)
        if len(seen) == 3:
            break
    await asyncio.sleep(0)
    calls = backend.calls["t1"]
    await asyncio.sleep(0.05)
    assert backend.calls["t1"] == calls, "leaving the loop disposed the subscription"
    assert seen == [S.PENDING, S.RUNNING, S.RUNNING]


async def test_wait_timeout_raises_observation_timeout(backend: MemoryBackend) -> None:
    with pytest.raises(ObservationTimeout):
        await wait(backend.observe("t1"), timeout=0.05)
    await asyncio.sleep(0.03)
    assert watched_tasks(backend) == 0


async def test_status_is_one_fresh_reading_with_retries(backend: MemoryBackend) -> None:
    backend.script("t1", TransientFault("HTTP 503"), (S.RUNNING, 30.0), S.COMPLETED)
    event = await backend.status("t1")
    assert event.state is S.RUNNING and event.progress == 30.0 and event.sequence == 0
    assert backend.calls["t1"] == 2


def test_events_are_delivered_on_the_background_loop_from_plain_threads() -> None:
    backend = MemoryBackend(policy=FAST)
    backend.script("t1", S.RUNNING, S.COMPLETED)
    threads: list[str] = []
    done = threading.Event()
    backend.observe("t1").subscribe(
        on_next=lambda e: threads.append(threading.current_thread().name),
        on_completed=done.set,
    )
    assert done.wait(5)
    assert threads == ["reactive-tasks-loop"] * 2
    backend.close()


async def test_observe_coroutine_runs_on_the_loop_and_cancels_on_dispose() -> None:
    from reactive_tasks._rx import observe_coroutine

    assert await wait(observe_coroutine(lambda: asyncio.sleep(0.01, result=42))) == 42
    with pytest.raises(KeyError):
        await wait(observe_coroutine(lambda: _raise(KeyError("x"))))
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def slow() -> int:
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return 1

    sub = observe_coroutine(slow).subscribe(lambda v: None)
    await asyncio.wait_for(started.wait(), 1)
    sub.dispose()
    await asyncio.wait_for(cancelled.wait(), 1)


async def _raise(exc: Exception) -> int:
    raise exc


async def test_a_round_stays_one_batch_even_when_settling_takes_time() -> None:
    """Answers of one round settle over a while; the next round must still be one batch."""

    class SlowToRead(MemoryBackend):
        def interpret(self, snapshot: Any, ref: Any) -> Any:
            time.sleep(0.0012)  # 200 tasks: 240 ms of settling, over half the 400 ms interval
            return super().interpret(snapshot, ref)

    backend = SlowToRead(policy=PollPolicy(interval=0.4, jitter=0.0))
    recs = [Recorder() for _ in range(200)]
    for i, rec in enumerate(recs):
        backend.script(f"t{i}", S.RUNNING, (S.RUNNING, 10.0), (S.RUNNING, 20.0), S.COMPLETED)
        rec.subscribe(backend.observe(f"t{i}"))
    await asyncio.wait_for(asyncio.gather(*(r.done.wait() for r in recs)), 10)
    assert [len(b) for b in backend.batches] == [200] * 4
    await backend.aclose()


async def test_observables_are_cold_a_new_subscription_polls_afresh(
    backend: MemoryBackend,
) -> None:
    backend.script("t1", S.RUNNING, S.COMPLETED)
    obs = backend.observe("t1")
    assert (await wait(obs, timeout=5)).state is S.COMPLETED
    calls = backend.calls["t1"]
    again = await wait(obs, timeout=5)
    assert again.state is S.COMPLETED and again.sequence == 0
    assert backend.calls["t1"] == calls + 1, "the terminal watch was dropped; this one re-polls"


def test_subscribe_and_dispose_from_many_threads_at_once() -> None:
    backend = MemoryBackend(policy=FAST)
    errors: list[BaseException] = []
    received = []

    def churn(n: int) -> None:
        try:
            for i in range(100):
                sub = backend.observe(f"t{(n * 7 + i) % 13}").subscribe(received.append)
                if i % 3:
                    threading.Event().wait(0.001)
                sub.dispose()
        except BaseException as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=churn, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    from reactive_tasks._runtime import background_loop

    loop = background_loop()
    asyncio.run_coroutine_threadsafe(asyncio.sleep(0.05), loop).result(5)  # removals land
    assert asyncio.run_coroutine_threadsafe(_watched(backend, loop), loop).result(5) == 0
    assert received, "events were delivered while subscriptions lived"
    backend.close()


async def _watched(backend: Any, loop: asyncio.AbstractEventLoop) -> int:
    return watched_tasks(backend, loop)
