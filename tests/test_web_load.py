"""500 browsers on one task: one poll per round for all of them, and the server's CPU per event."""

from __future__ import annotations

import asyncio
import os
import time

import httpx
from web_helpers import frames, stream_app

from reactive_tasks import PollPolicy
from reactive_tasks.backends import CloudCoinBackend
from reactive_tasks.emulator import EmulatorClient, EmulatorServer

CLIENTS = 500
INTERVAL = 0.1


def thread_cpu(native_id: int) -> float:
    """CPU seconds (user + system) one thread of this process has used so far."""
    with open(f"/proc/self/task/{native_id}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def test_500_clients_share_one_poll_per_round(emulator: EmulatorClient) -> None:
    steps = [{"status": "running", "progress": 0, "seconds": 3.0}] + [
        {"status": "running", "progress": p, "seconds": 0.3} for p in range(10, 100, 10)
    ] + [{"status": "completed", "progress": 100}]
    task = emulator.create_task("cloudcoin", steps)
    policy = PollPolicy(interval=INTERVAL, max_interval=1.0, jitter=0.0, request_timeout=5.0)
    backend = CloudCoinBackend(emulator.api_url("cloudcoin"), policy=policy)
    connected = asyncio.Event()
    opened = 0
    limits = httpx.Limits(max_connections=CLIENTS + 10, max_keepalive_connections=0)

    with EmulatorServer(app=stream_app(lambda: backend.observe(task))) as web:
        server_thread = web._thread
        assert server_thread is not None and server_thread.native_id is not None
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:

            async def browser() -> list[str]:
                nonlocal opened
                states: list[str] = []
                async with client.stream("GET", web.url + "/events") as response:
                    opened += 1
                    if opened == CLIENTS:
                        connected.set()
                    async for frame in frames(response):
                        if frame.event.startswith("TASK_"):
                            states.append(frame.json["state"])
                        elif frame.event in ("complete", "error"):
                            states.append(frame.event)
                return states

            emulator.reset_requests()
            cpu0, t0 = thread_cpu(server_thread.native_id), time.monotonic()
            runs = [asyncio.ensure_future(browser()) for _ in range(CLIENTS)]
            await asyncio.wait_for(connected.wait(), 30)
            results = await asyncio.gather(*runs)
            elapsed = time.monotonic() - t0
            cpu = thread_cpu(server_thread.native_id) - cpu0

    assert all(r[-2:] == ["COMPLETED", "complete"] for r in results)
    events = sum(len(r) - 1 for r in results)
    polls = emulator.requests()["by_task"][task]
    rounds = elapsed / INTERVAL
    print(f"\n{CLIENTS} SSE clients, one task: {events} events sent in {elapsed:.1f} s; "
          f"{polls} polls in ~{rounds:.0f} rounds ({polls / rounds:.2f} per round); "
          f"server thread CPU {cpu:.2f} s = {1e6 * cpu / events:.0f} µs per event")
    # One shared poll loop whose polls never overlap: at most one request per round (plus the
    # first), however many readers. One loop per reader would make ~500 per round.
    assert polls <= rounds + 2
