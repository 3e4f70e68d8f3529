"""compose: merged streams, latest states, overall progress, all-terminal summary, fail-fast."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from memory_backend import MemoryBackend

from reactive_tasks import BackendUnavailable, PollPolicy, TaskState, aiter, wait
from reactive_tasks.backends import CloudCoinBackend, TransientFault
from reactive_tasks.compose import (
    TaskFailed,
    TasksSummary,
    all_terminal,
    fail_fast,
    latest_states,
    merge_tasks,
    overall_progress,
)
from reactive_tasks.emulator import EmulatorClient
from reactive_tasks.testing import watched_tasks

S = TaskState
FAST = PollPolicy(interval=0.01, max_interval=0.04, jitter=0.0, retry_budget=2)


@pytest.fixture
async def mem() -> Any:
    backend = MemoryBackend(policy=FAST)
    yield backend
    await backend.aclose()


async def test_merge_tasks_interleaves_and_completes_after_all(mem: MemoryBackend) -> None:
    mem.script("ta", S.RUNNING, S.COMPLETED)
    mem.script("tb", S.PENDING, S.RUNNING, (S.RUNNING, 50.0), S.FAILED)
    events = [e async for e in aiter(merge_tasks(mem.observe("ta"), mem.observe("tb")))]
    by_task: dict[str, list[TaskState]] = {}
    for event in events:
        by_task.setdefault(event.task_id, []).append(event.state)
    assert by_task == {"ta": [S.RUNNING, S.COMPLETED],
                       "tb": [S.PENDING, S.RUNNING, S.RUNNING, S.FAILED]}


async def test_latest_states_snapshots_every_task(mem: MemoryBackend) -> None:
    mem.script("ta", S.RUNNING, S.COMPLETED)
    mem.script("tb", S.PENDING, S.PENDING, S.PENDING, S.COMPLETED)
    snapshots = [s async for s in aiter(latest_states([mem.observe("ta"), mem.observe("tb")]))]
    assert len(snapshots) == 4
    assert {k: v.state for k, v in snapshots[-1].items()} == {"ta": S.COMPLETED,
                                                              "tb": S.COMPLETED}
    assert len(snapshots[0]) == 1 and len(snapshots[1]) == 2
    with pytest.raises(TypeError):
        snapshots[-1]["ta"] = snapshots[0]["ta"]  # type: ignore[index]


async def test_overall_progress_never_decreases_and_counts_terminal_as_done(
    mem: MemoryBackend,
) -> None:
    mem.script("ta", (S.RUNNING, 50.0), (S.RUNNING, 40.0), (S.RUNNING, 80.0), S.FAILED)
    mem.script("tb", S.PENDING, S.PENDING, S.PENDING, S.PENDING, S.PENDING, S.COMPLETED)
    values = [v async for v in aiter(overall_progress([mem.observe("ta"), mem.observe("tb")]))]
    assert values == sorted(values) and len(set(values)) == len(values)
    assert values[0] == 25.0 and values[-1] == 100.0
    assert 40.0 in values and 50.0 in values  # 80/2, then FAILED counts as done: 100/2
    assert await wait(overall_progress([])) == 100.0


async def test_all_terminal_summarizes_once(mem: MemoryBackend) -> None:
    mem.script("ta", S.RUNNING, S.COMPLETED)
    mem.script("tb", S.RUNNING, S.RUNNING, S.CANCELLED)
    mem.script("tc", S.COMPLETED)
    summaries = [s async for s in aiter(all_terminal(mem.observe(t) for t in ("ta", "tb", "tc")))]
    assert len(summaries) == 1
    summary = summaries[0]
    assert isinstance(summary, TasksSummary)
    assert summary.total == 3 and not summary.succeeded
    assert dict(summary.counts) == {S.COMPLETED: 2, S.CANCELLED: 1}
    assert summary.events["tb"].state is S.CANCELLED
    empty = await wait(all_terminal([]))
    assert empty.total == 0 and empty.succeeded


async def test_all_terminal_passes_monitoring_errors_on(mem: MemoryBackend) -> None:
    mem.script("ta", S.COMPLETED)
    mem.script("tb", *[TransientFault("HTTP 503")] * 5)
    with pytest.raises(BackendUnavailable):
        await wait(all_terminal([mem.observe("ta"), mem.observe("tb")]), timeout=5)


async def test_fail_fast_errors_with_the_failed_event_and_stops_the_rest(
    mem: MemoryBackend,
) -> None:
    mem.script("ta", S.RUNNING, S.RUNNING, S.FAILED)
    seen: list[str] = []
    with pytest.raises(TaskFailed) as info:
        async for event in aiter(fail_fast([mem.observe("ta"), mem.observe("tb")])):
            seen.append(event.task_id)
    assert info.value.event.task_id == "ta" and info.value.event.state is S.FAILED
    assert "ta" in seen and "tb" in seen
    await asyncio.sleep(0.01)
    calls = mem.calls["tb"]
    await asyncio.sleep(0.08)
    assert mem.calls["tb"] == calls, "the other task's poll stopped"


async def test_compose_across_backends_and_disposal_stops_every_poll(
    emulator: EmulatorClient, mem: MemoryBackend
) -> None:
    running = [{"status": "running", "progress": 10}]
    ids = emulator.create_tasks("cloudcoin", 3, running)
    async with CloudCoinBackend(emulator.api_url("cloudcoin"), policy=FAST) as coins:
        streams = [coins.observe(i) for i in ids] + [mem.observe("tm")]
        values: list[float] = []
        sub = overall_progress(streams).subscribe(values.append)
        await asyncio.sleep(0.15)
        assert values and values[-1] == pytest.approx(7.5)  # 3 x 10% + 0% over 4 tasks
        sub.dispose()
        await asyncio.sleep(0.03)
        before = emulator.requests()["by_api"]["cloudcoin"]
        mem_calls = mem.calls["tm"]
        await asyncio.sleep(0.1)
        assert emulator.requests()["by_api"]["cloudcoin"] == before
        assert mem.calls["tm"] == mem_calls
        assert watched_tasks(coins) == 0


async def test_composed_streams_share_polls_with_direct_subscribers(
    emulator: EmulatorClient,
) -> None:
    task = emulator.create_task(
        "cloudcoin", [{"status": "running", "progress": p, "polls": 1} for p in (0, 50)]
        + [{"status": "completed", "progress": 100}],
    )
    async with CloudCoinBackend(emulator.api_url("cloudcoin"), policy=FAST) as coins:
        obs = coins.observe(task)
        summary, last = await asyncio.gather(wait(all_terminal([obs])), wait(obs))
    assert summary.succeeded and last.state is S.COMPLETED
    assert emulator.requests()["by_task"][task] == 3
