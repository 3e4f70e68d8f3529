"""Fair rounds: when one round of polls takes longer than the interval, every due task is polled
once before any task is polled again, and the interval stretches for all tasks alike.

The emulator answers slowly and the backend reads one task at a time, so that one round of the
watched tasks takes many intervals; the order in which polls start is recorded.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from memory_backend import MemoryBackend

from reactive_tasks import PollPolicy
from reactive_tasks._hub import PollHub, hubs_of
from reactive_tasks.backends import CloudCoinBackend, CloudCoinTask, TaskRef
from reactive_tasks.emulator import EmulatorClient

N = 30
# A round is N slow answers one after another: many times this interval.
POLICY = PollPolicy(interval=0.05, max_interval=1.0, jitter=0.0, request_timeout=10.0)


class Recording(CloudCoinBackend):
    """CloudCoin recording the order in which its polls start."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.order: list[str] = []

    async def fetch(self, ref: TaskRef) -> CloudCoinTask:
        self.order.append(ref.task_id)
        return await super().fetch(ref)


def running_tasks(emulator: EmulatorClient, count: int) -> list[str]:
    """``count`` CloudCoin tasks that never end, answered slowly (10 ms each)."""
    ids = emulator.create_tasks("cloudcoin", count, [{"status": "running", "progress": 1}])
    emulator.inject_fault("cloudcoin", "slow", delay=0.01, count=100_000)
    return ids


async def until(predicate: Any, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def hub_of(backend: Any) -> PollHub[Any]:
    return hubs_of(backend)[asyncio.get_running_loop()]


async def watch(emulator: EmulatorClient, ids: Sequence[str], polls: int) -> list[str]:
    """Watch ``ids`` one read at a time until ``polls`` polls started; their order."""
    backend = Recording(emulator.api_url("cloudcoin"), policy=POLICY, max_concurrency=1)
    async with backend:
        subs = [backend.observe(task).subscribe(lambda e: None) for task in ids]
        await until(lambda: len(backend.order) >= polls)
        for sub in subs:
            sub.dispose()
    return backend.order[:polls]


async def test_no_task_is_polled_twice_before_every_task_was_polled_once(
    emulator: EmulatorClient,
) -> None:
    ids = running_tasks(emulator, N)
    order = await watch(emulator, ids, N + 5)
    assert sorted(order[:N]) == sorted(ids), "the first round polls every task once"
    assert len(set(order[:N])) == N


async def test_under_sustained_overload_poll_counts_stay_within_one(
    emulator: EmulatorClient,
) -> None:
    ids = running_tasks(emulator, N)
    order = await watch(emulator, ids, 4 * N)
    counts: Counter[str] = Counter({task: 0 for task in ids})
    for step, task in enumerate(order):
        counts[task] += 1
        spread = max(counts.values()) - min(counts.values())
        assert spread <= 1, f"poll {step}: {task} polled {counts[task]} times, others less"


async def test_first_polls_follow_the_order_tasks_fell_due(emulator: EmulatorClient) -> None:
    """Tasks subscribed while a long round runs get their first polls in the order they came,
    after the tasks of the round that was running (never polled tasks first, then due order)."""
    ids = running_tasks(emulator, N)
    backend = Recording(emulator.api_url("cloudcoin"), policy=POLICY, max_concurrency=1)
    async with backend:
        subs = []
        for start in range(0, N, 5):  # a group every other interval, the first round still busy
            group = ids[start : start + 5]
            subs += [backend.observe(task).subscribe(lambda e: None) for task in group]
            await asyncio.sleep(POLICY.interval * 1.5)
        await until(lambda: set(backend.order) == set(ids))
        for sub in subs:
            sub.dispose()
    first_polls = list(dict.fromkeys(backend.order))
    assert first_polls == ids


async def test_a_hub_that_falls_behind_says_so_and_stretches_every_task_alike(
    emulator: EmulatorClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="reactive_tasks")
    ids = running_tasks(emulator, N)
    backend = Recording(emulator.api_url("cloudcoin"), policy=POLICY, max_concurrency=1)
    async with backend:
        subs = [backend.observe(task).subscribe(lambda e: None) for task in ids]
        hub = hub_of(backend)
        await until(lambda: hub.behind)
        assert hub.effective_interval is not None
        assert hub.effective_interval > 2 * POLICY.interval
        assert hub.lag > POLICY.interval
        behind = [r for r in caplog.records if "fall behind" in r.getMessage()]
        assert len(behind) == 1 and behind[0].levelno == logging.INFO
        for sub in subs[5:]:  # far fewer tasks, answered quickly: the hub catches up
            sub.dispose()
        emulator.clear_faults()
        await until(lambda: not hub.behind)
        for sub in subs[:5]:
            sub.dispose()


class SlowBatches(MemoryBackend):
    """Batches of five, each task read on its own, slowly, one at a time."""

    def __init__(self) -> None:
        super().__init__(batch=5, delay=0.005, policy=POLICY, max_concurrency=1)
        self.order: list[str] = []

    async def fetch_many(
        self, refs: Sequence[TaskRef]
    ) -> AsyncIterator[tuple[TaskRef, Any]]:
        async for item in super().fetch_many(refs):
            self.order.append(item[0].task_id)
            yield item


async def test_batched_rounds_are_fair_too() -> None:
    backend = SlowBatches()
    ids = [f"t{i}" for i in range(60)]
    async with backend:
        subs = [backend.observe(task).subscribe(lambda e: None) for task in ids]
        await until(lambda: len(backend.order) >= 4 * len(ids))
        for sub in subs:
            sub.dispose()
    counts: Counter[str] = Counter({task: 0 for task in ids})
    for step, task in enumerate(backend.order[: 4 * len(ids)]):
        counts[task] += 1
        spread = max(counts.values()) - min(counts.values())
        assert spread <= 1, f"answer {step}: {task} polled {counts[task]} times, others less"
    assert all(len(batch) <= 5 for batch in backend.batches)
