"""No leaks: subscribe/dispose cycles leave asyncio tasks, threads and sockets at baseline."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from reactive_tasks import PollPolicy, TaskState
from reactive_tasks.backends import CloudCoinBackend
from reactive_tasks.emulator import EmulatorClient
from reactive_tasks.testing import watched_tasks


def open_sockets() -> int:
    """Sockets this process holds (client and in-process emulator sides alike)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                count += 1
        except OSError:
            pass
    return count


async def settle(predicate: object, timeout: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate() and loop.time() < deadline:  # type: ignore[operator]
        await asyncio.sleep(0.02)


async def test_thousand_subscribe_dispose_cycles_leak_nothing(emulator: EmulatorClient) -> None:
    ids = emulator.create_tasks("cloudcoin", 50, [{"status": "running", "progress": 1}])
    tasks0 = len(asyncio.all_tasks())
    threads0 = threading.active_count()
    sockets0 = open_sockets()
    policy = PollPolicy(interval=0.01, max_interval=0.05)
    backend = CloudCoinBackend(emulator.api_url("cloudcoin"), policy=policy, max_concurrency=8)
    for cycle in range(1000):
        got = asyncio.Event()
        sub = backend.observe(ids[cycle % len(ids)]).subscribe(lambda e, got=got: got.set())
        if cycle % 2:  # half are disposed mid-request, half after their first event
            await asyncio.wait_for(got.wait(), 5)
        else:
            await asyncio.sleep(0)
        sub.dispose()
        assert watched_tasks(backend) == 0
    await settle(lambda: len(asyncio.all_tasks()) == tasks0)
    assert len(asyncio.all_tasks()) == tasks0, asyncio.all_tasks()
    assert threading.active_count() == threads0
    assert open_sockets() <= sockets0 + 2 * 8, "at most the pooled connections (both ends)"
    await backend.aclose()
    await settle(lambda: open_sockets() == sockets0)
    assert open_sockets() == sockets0
    requests = emulator.requests()["by_api"]["cloudcoin"]
    await asyncio.sleep(0.1)
    assert emulator.requests()["by_api"]["cloudcoin"] == requests, "nothing polls any more"


async def test_completed_observations_leak_nothing(emulator: EmulatorClient) -> None:
    ids = emulator.create_tasks(
        "cloudcoin", 200, [{"status": "running", "progress": 1}, {"status": "completed"}]
    )
    tasks0 = len(asyncio.all_tasks())
    sockets0 = open_sockets()
    policy = PollPolicy(interval=0.01, max_interval=0.05)
    async with CloudCoinBackend(emulator.api_url("cloudcoin"), policy=policy) as backend:
        done = asyncio.Event()
        finished: list[str] = []

        def on_next(event: object) -> None:
            if getattr(event, "state", None) is TaskState.COMPLETED:
                finished.append("x")
                if len(finished) == len(ids):
                    done.set()

        for task_id in ids:
            backend.observe(task_id).subscribe(on_next)
        await asyncio.wait_for(done.wait(), 10)
        await settle(lambda: len(asyncio.all_tasks()) == tasks0)
        assert len(asyncio.all_tasks()) == tasks0
        assert watched_tasks(backend) == 0
    await settle(lambda: open_sockets() == sockets0)
    assert open_sockets() == sockets0


def test_a_script_exits_cleanly_without_closing_anything(emulator: EmulatorClient) -> None:
    """Scripts that never call close() still leave no unclosed session or warning at exit."""
    import subprocess
    import sys

    task = emulator.create_task("cloudcoin", [{"status": "running"}, {"status": "completed"}])
    script = (
        "from reactive_tasks import PollPolicy, wait_sync\n"
        "from reactive_tasks.backends import CloudCoinBackend\n"
        f"b = CloudCoinBackend({emulator.api_url('cloudcoin')!r}, "
        "policy=PollPolicy(interval=0.02))\n"
        f"print(wait_sync(b.observe({task!r}), timeout=10).state)\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "error::ResourceWarning", "-c", script],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "COMPLETED"
    assert "Unclosed" not in done.stderr and "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize("api", ["cloudcoin", "greencloud"])
async def test_closing_mid_request_leaves_no_session_behind(
    emulator: EmulatorClient, caplog: pytest.LogCaptureFixture, api: str
) -> None:
    import gc

    from reactive_tasks.backends import GreenCloudBackend

    steps = {"cloudcoin": [{"status": "running", "progress": 1}],
             "greencloud": [{"state": "assigned", "progress": 1}]}[api]
    ids = emulator.create_tasks(api, 40, steps)
    emulator.inject_fault(api, "slow", delay=0.3, count=80)
    sockets0 = open_sockets()
    tasks0 = len(asyncio.all_tasks())
    url = emulator.api_url(api)
    backend = (
        CloudCoinBackend(url, max_concurrency=8) if api == "cloudcoin"
        else GreenCloudBackend(url, api_key="leak-test-key", max_concurrency=8)
    )
    subs = [backend.observe(task_id).subscribe(lambda e: None) for task_id in ids]
    await asyncio.sleep(0.1)  # requests in flight, more queued behind the cap
    for sub in subs[: len(subs) // 2]:  # half disposed just before closing, half left running
        sub.dispose()
    await backend.aclose()
    assert len(asyncio.all_tasks()) == tasks0, "aclose waited for every request to unwind"
    gc.collect()
    await asyncio.sleep(0.4)
    gc.collect()
    assert "Unclosed" not in caplog.text
    await settle(lambda: open_sockets() == sockets0)
    assert open_sockets() == sockets0
