"""Fault matrix for the engine over real HTTP: callbacks that misbehave, per-subscription
policies, request timeouts, Retry-After caps and loops that come and go (issue 9, items 4, 6, 7
and the Retry-After part of 8), against tests/hostile.py's scripted server."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import threading
import time
import uuid
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from hostile import HostileServer, RawRequest, Reply
from test_engine import Recorder
from test_leaks import open_sockets

from reactive_tasks import (
    BackendUnavailable,
    ConfigurationError,
    PollPolicy,
    TaskNotFound,
    TaskState,
    wait,
    wait_sync,
)
from reactive_tasks.backends import CloudCoinBackend

FAST = PollPolicy(interval=0.02, max_interval=0.1, jitter=0.0, request_timeout=2.0)


def answer(task_id: str, status: str = "running", progress: float = 1, **kw: Any) -> Reply:
    """A CloudCoin task answer."""
    payload = {"id": task_id, "status": status, "progress": progress}
    return Reply.json({"status": "success", "payload": payload}, **kw)


class Script:
    """Answers each task's requests from its own list of replies; the last one repeats."""

    def __init__(self) -> None:
        self.replies: dict[str, list[Reply]] = {}
        self.times: defaultdict[str, list[float]] = defaultdict(list)

    def new_task(self, *replies: Reply | str | Callable[[str], Reply]) -> str:
        """A fresh task id answered by ``replies``: a status word stands for its answer, a
        function of the id for the answer it makes."""
        task_id = str(uuid.uuid4())
        self.replies[task_id] = [
            answer(task_id, r) if isinstance(r, str) else r if isinstance(r, Reply) else r(task_id)
            for r in replies
        ]
        return task_id

    def __call__(self, request: RawRequest) -> Reply:
        task_id = request.path.rsplit("/", 1)[1]
        self.times[task_id].append(time.monotonic())
        queue = self.replies[task_id]
        return queue.pop(0) if len(queue) > 1 else queue[0]


class Shortened(CloudCoinBackend):
    """Shows ids shortened, as Aparavi does with its secret task tokens."""

    def display_id(self, task_id: str) -> str:
        return task_id[:8] + "..."


@pytest.fixture
def script() -> Iterator[tuple[Script, HostileServer]]:
    plan = Script()
    with HostileServer(plan) as server:
        yield plan, server


# -- 4. callbacks cannot break the engine ------------------------------------------------------


@pytest.mark.parametrize("exit_with", [SystemExit, KeyboardInterrupt])
def test_exiting_from_a_callback_on_the_background_loop_ends_only_its_subscription(
    script: tuple[Script, HostileServer],
    caplog: pytest.LogCaptureFixture,
    exit_with: type[BaseException],
) -> None:
    plan, server = script
    quitter = plan.new_task("completed")
    other = plan.new_task("running", "running", "running", "completed")
    backend = Shortened(server.url, policy=FAST)
    caplog.set_level(logging.ERROR, logger="reactive_tasks")

    def leave() -> None:
        if exit_with is SystemExit:
            sys.exit(0)
        raise exit_with

    backend.observe(quitter).subscribe(on_completed=leave)
    assert wait_sync(backend.observe(other), timeout=10).state is TaskState.COMPLETED
    loop_threads = [t for t in threading.enumerate() if t.name == "reactive-tasks-loop"]
    assert loop_threads and all(t.is_alive() for t in loop_threads)
    assert wait_sync(backend.observe(quitter), timeout=10).state is TaskState.COMPLETED
    logged = [r for r in caplog.records
              if r.name == "reactive_tasks" and exit_with.__name__ in r.message]
    assert logged, caplog.text
    assert quitter[:8] + "..." in logged[0].message and quitter not in caplog.text
    backend.close()


async def test_a_raising_on_next_disposes_only_its_subscription(
    script: tuple[Script, HostileServer], caplog: pytest.LogCaptureFixture
) -> None:
    plan, server = script
    task = plan.new_task("running", lambda t: answer(t, "running", 50), "completed")
    calls: list[Any] = []

    def broken(event: Any) -> None:
        calls.append(event)
        raise RuntimeError("subscriber bug")

    async with Shortened(server.url, policy=FAST) as backend:
        obs = backend.observe(task)
        obs.subscribe(on_next=broken)
        good = Recorder()
        good.subscribe(obs)
        await asyncio.wait_for(good.done.wait(), 10)
    assert good.completed and good.states == [TaskState.RUNNING] * 2 + [TaskState.COMPLETED]
    assert len(calls) == 1, "the broken subscription was disposed after its first failure"
    assert f"cloudcoin task {task[:8]}...: a subscriber's on_next callback raised" in caplog.text
    assert task not in caplog.text


async def test_a_callback_blocking_the_loop_fails_no_other_task(
    script: tuple[Script, HostileServer],
) -> None:
    """The cause: the request timer runs on while the loop is blocked, so an answer already in
    the socket is read after its deadline; that timeout must not be charged as a failed poll.
    A server that really does not answer still ends its stream once the loop is free."""
    plan, server = script
    blocker = plan.new_task("running")
    slow = [lambda t: answer(t, "running", delay=0.2)] * 3  # in flight while the loop blocks
    victim = plan.new_task(*slow, "completed")
    silent = plan.new_task(Reply(hang=True))
    strict = PollPolicy(interval=0.05, max_interval=0.1, jitter=0.0, request_timeout=1.0,
                        retry_budget=0)
    async with CloudCoinBackend(server.url, policy=strict) as backend:
        blocker_sub = backend.observe(blocker).subscribe(lambda e: time.sleep(2.0))
        rec, hung = Recorder(), Recorder()
        rec.subscribe(backend.observe(victim))
        hung.subscribe(backend.observe(silent))
        await asyncio.wait_for(asyncio.gather(rec.done.wait(), hung.done.wait()), 15)
        blocker_sub.dispose()
    assert rec.error is None and rec.completed
    assert isinstance(hung.error, BackendUnavailable)
    assert "request timed out after 1 s" in str(hung.error)
    assert len(plan.times[silent]) == 2, "the timeout behind the callback was not charged"


# -- 6. policies per subscription ---------------------------------------------------------------


async def test_retry_budget_counts_per_subscription(script: tuple[Script, HostileServer]) -> None:
    plan, server = script
    task = plan.new_task("running", Reply.of(503), lambda t: answer(t, "running", 60), "completed")
    async with CloudCoinBackend(server.url, policy=FAST) as backend:
        fragile, patient = Recorder(), Recorder()
        fragile.subscribe(backend.observe(task, policy=PollPolicy(
            interval=0.02, max_interval=0.1, jitter=0.0, retry_budget=0)))
        patient.subscribe(backend.observe(task, policy=PollPolicy(
            interval=0.02, max_interval=0.1, jitter=0.0, retry_budget=20)))
        await asyncio.wait_for(asyncio.gather(fragile.done.wait(), patient.done.wait()), 10)
    assert isinstance(fragile.error, BackendUnavailable)
    assert "HTTP 503" in str(fragile.error)
    assert patient.error is None and patient.completed
    assert [e.progress for e in patient.events] == [1, 60, 1]


async def test_request_timeout_given_to_observe_is_honoured_and_reported(
    script: tuple[Script, HostileServer],
) -> None:
    plan, server = script
    task = plan.new_task(Reply(hang=True))
    async with CloudCoinBackend(server.url) as backend:  # the backend's default: 10 s
        policy = PollPolicy(interval=0.05, request_timeout=0.5, retry_budget=0)
        with pytest.raises(BackendUnavailable) as info:
            await wait(backend.observe(task, policy=policy), timeout=5)
    assert "request timed out after 0.5 s" in str(info.value)
    assert isinstance(info.value.__cause__, httpx.TimeoutException)


async def test_shared_poll_uses_the_longest_request_timeout_of_current_subscribers(
    script: tuple[Script, HostileServer],
) -> None:
    plan, server = script
    task = plan.new_task(lambda t: answer(t, "running", delay=0.6))
    quick = PollPolicy(interval=0.05, max_interval=0.1, request_timeout=0.3, retry_budget=0)
    patient = PollPolicy(interval=0.05, max_interval=0.1, request_timeout=3.0)
    async with CloudCoinBackend(server.url, policy=FAST) as backend:
        strict, lenient = Recorder(), Recorder()
        lenient_sub = lenient.subscribe(backend.observe(task, policy=patient))
        strict.subscribe(backend.observe(task, policy=quick))
        while len(plan.times[task]) < 3:  # several slow answers read under the 3 s bound
            await asyncio.sleep(0.05)
        assert strict.error is None and [e.state for e in strict.events] == [TaskState.RUNNING]
        lenient_sub.dispose()  # now the poll runs under 0.3 s, the only subscriber's bound
        await asyncio.wait_for(strict.done.wait(), 10)
    assert isinstance(strict.error, BackendUnavailable)
    assert "request timed out after 0.3 s" in str(strict.error)


# -- 8. Retry-After, honoured up to a documented cap --------------------------------------------


def test_max_retry_after_is_validated_and_caps_the_floor() -> None:
    assert PollPolicy().max_retry_after == 300.0
    for bad in (0, -1.0, float("inf"), "5", True):
        with pytest.raises(ConfigurationError, match="max_retry_after"):
            PollPolicy(max_retry_after=bad)  # type: ignore[arg-type]
    policy = PollPolicy(interval=0.1, max_interval=1.0, max_retry_after=2.0)
    assert all(policy.retry_delay(1, retry_after=1.5) >= 1.5 for _ in range(50))
    assert all(policy.retry_delay(1, retry_after=3600) <= 2.0 for _ in range(50))


async def test_retry_after_within_the_cap_is_honoured(
    script: tuple[Script, HostileServer],
) -> None:
    plan, server = script
    task = plan.new_task(Reply.of(429, headers={"Retry-After": "1"}), "completed")
    policy = PollPolicy(interval=0.02, max_interval=0.05, max_retry_after=5.0)
    async with CloudCoinBackend(server.url, policy=policy) as backend:
        event = await wait(backend.observe(task), timeout=10)
    assert event.state is TaskState.COMPLETED
    first, second = plan.times[task][:2]
    assert second - first >= 0.95, "the next poll waited for Retry-After"


async def test_retry_after_beyond_the_cap_is_cut_to_it(
    script: tuple[Script, HostileServer],
) -> None:
    plan, server = script
    task = plan.new_task(Reply.of(429, headers={"Retry-After": "3600"}), "completed")
    policy = PollPolicy(interval=0.02, max_interval=1.0, max_retry_after=0.2)
    async with CloudCoinBackend(server.url, policy=policy) as backend:
        event = await wait(backend.observe(task), timeout=8)
    assert event.state is TaskState.COMPLETED


# -- 7. no leaks across loops -------------------------------------------------------------------


def test_fifty_asyncio_runs_without_aclose_leave_no_loop_scope_or_socket(
    script: tuple[Script, HostileServer],
) -> None:
    plan, server = script
    task = plan.new_task("running")
    sockets0 = open_sockets()
    backend = CloudCoinBackend(server.url, policy=FAST)
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def one_status() -> TaskState:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        return (await backend.status(task)).state

    for _ in range(50):
        assert asyncio.run(one_status()) is TaskState.RUNNING
    assert len(plan.times[task]) == 50
    gc.collect()
    assert [ref for ref in loops if ref() is not None] == [], "every loop was released"
    deadline = time.monotonic() + 5
    while open_sockets() > sockets0 and time.monotonic() < deadline:
        time.sleep(0.02)  # the server's ends close on its own thread
    assert open_sockets() == sockets0
    cached = [o for o in gc.get_objects() if isinstance(o, httpx.Request)
              and str(o.url).startswith(server.url)]
    assert cached == [], "no prepared request outlives its loops"


async def test_creation_grace_counts_per_subscription(script: tuple[Script, HostileServer]) -> None:
    plan, server = script
    task = plan.new_task(Reply.of(404), Reply.of(404), "running", "completed")
    eager = PollPolicy(interval=0.02, max_interval=0.1, jitter=0.0)
    graceful = PollPolicy(interval=0.02, max_interval=0.1, jitter=0.0, creation_grace=5.0)
    async with CloudCoinBackend(server.url, policy=FAST) as backend:
        first, second = Recorder(), Recorder()
        first.subscribe(backend.observe(task, policy=eager))
        second.subscribe(backend.observe(task, policy=graceful))
        await asyncio.wait_for(asyncio.gather(first.done.wait(), second.done.wait()), 10)
    assert isinstance(first.error, TaskNotFound)
    assert second.error is None and second.states == [TaskState.RUNNING, TaskState.COMPLETED]


async def test_aclose_while_polls_run_leaves_no_open_session(
    script: tuple[Script, HostileServer],
) -> None:
    """Closing lets in-flight batches unwind; a worker that starts its fetch meanwhile must not
    leave a fresh client behind the close."""
    import aiohttp

    plan, server = script
    tasks = [plan.new_task("running"), plan.new_task(lambda t: answer(t, "running", delay=0.2))]
    policy = PollPolicy(interval=0.05, max_interval=0.1, jitter=0.0)
    for _ in range(3):
        backend = CloudCoinBackend(server.url, policy=policy)
        for task in tasks:
            backend.observe(task).subscribe(lambda e: None)
        await asyncio.sleep(1.0)
        await backend.aclose()
        await asyncio.sleep(0.1)
        gc.collect()
        sessions = [o for o in gc.get_objects() if isinstance(o, aiohttp.ClientSession)]
        assert all(s.closed for s in sessions), "a session was opened behind aclose()"


def test_the_background_loop_survives_an_exit_raised_by_any_code_it_runs(
    script: tuple[Script, HostileServer],
) -> None:
    from reactive_tasks._runtime import background_loop

    plan, server = script
    loop = background_loop()
    loop.call_soon_threadsafe(sys.exit, 3)  # not a subscriber's callback: no engine frame
    task = plan.new_task("running", "completed")
    backend = CloudCoinBackend(server.url, policy=FAST)
    assert wait_sync(backend.observe(task), timeout=10).state is TaskState.COMPLETED
    assert background_loop() is loop, "the same loop thread still runs"
    backend.close()
