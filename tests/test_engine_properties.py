"""Property: whatever the script of answers and faults, events are exactly the changes."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from memory_backend import MemoryBackend

from reactive_tasks import PollPolicy, TaskState, aiter
from reactive_tasks.backends import TransientFault

NON_TERMINAL = [TaskState.PENDING, TaskState.RUNNING, TaskState.PAUSED]
TERMINAL = [s for s in TaskState if s.terminal]

answer = st.one_of(
    st.tuples(st.sampled_from(NON_TERMINAL), st.sampled_from([None, 10.0, 50.0])),
    st.just("fault"),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    script=st.lists(answer, max_size=12),
    final=st.sampled_from(TERMINAL),
    subscribers=st.integers(min_value=1, max_value=3),
)
def test_events_are_exactly_the_changes(
    script: list[Any], final: TaskState, subscribers: int
) -> None:
    steps: list[Any] = [
        TransientFault("HTTP 503") if a == "fault" else (a[0], a[1]) for a in script
    ]
    steps.append((final, None))
    expected: list[tuple[TaskState, float | None]] = []
    for step in steps:
        if isinstance(step, tuple) and (not expected or expected[-1] != step):
            expected.append(step)

    async def run() -> list[list[tuple[TaskState, float | None, int]]]:
        backend = MemoryBackend(
            policy=PollPolicy(interval=0.001, max_interval=0.002, retry_budget=len(steps) + 1)
        )
        backend.script("t1", *steps)
        obs = backend.observe("t1")

        async def collect() -> list[tuple[TaskState, float | None, int]]:
            return [(e.state, e.progress, e.sequence) async for e in aiter(obs)]

        try:
            return await asyncio.wait_for(
                asyncio.gather(*(collect() for _ in range(subscribers))), 10
            )
        finally:
            await backend.aclose()

    for seen in asyncio.run(run()):
        assert [(s, p) for s, p, _ in seen] == expected
        assert [n for _, _, n in seen] == list(range(len(expected)))
