"""An in-memory backend for engine tests: scripted answers, fault injection, call counts."""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from reactive_tasks import InvalidTaskId, TaskState
from reactive_tasks.backends import Backend, Reading, TaskRef


@dataclass(frozen=True)
class MemSnapshot:
    task_id: str
    state: TaskState
    progress: float | None = None
    message: str | None = None
    stamp: int = 0  # changes every poll; must never cause an event


class MemoryBackend(Backend[MemSnapshot]):
    """Each task follows a script of answers: a snapshot state or an exception to raise."""

    name = "memory"

    def __init__(self, *, batch: int | None = None, delay: float = 0.0, **kw: Any) -> None:
        super().__init__("http://memory.invalid", **kw)
        self.scripts: dict[str, deque[Any]] = {}
        self.last: dict[str, Any] = {}
        self.calls: defaultdict[str, int] = defaultdict(int)
        self.batches: list[list[str]] = []
        self.in_flight: defaultdict[str, int] = defaultdict(int)
        self.overlaps = 0
        self.delay = delay
        self.batch = batch
        self.stamp = 0

    @property
    def max_batch(self) -> int | None:  # type: ignore[override]
        return self.batch

    def script(self, task_id: str, *steps: Any) -> None:
        """Steps: TaskState, (TaskState, progress), (TaskState, progress, message), Exception."""
        self.scripts[task_id] = deque(steps)

    def validate_task_id(self, task_id: str) -> str:
        if not isinstance(task_id, str) or not task_id.startswith("t"):
            raise InvalidTaskId(f"memory ids start with 't', got {task_id!r}")
        return task_id

    async def fetch(self, ref: TaskRef) -> MemSnapshot:
        tid = ref.task_id
        self.calls[tid] += 1
        self.in_flight[tid] += 1
        if self.in_flight[tid] > 1:
            self.overlaps += 1
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            queue = self.scripts.get(tid)
            step = queue.popleft() if queue else self.last.get(tid, TaskState.RUNNING)
            if queue is not None and not queue:
                self.last[tid] = step
            if isinstance(step, BaseException):
                raise step
            if isinstance(step, TaskState):
                step = (step,)
            self.stamp += 1
            return MemSnapshot(tid, *step, stamp=self.stamp)
        finally:
            self.in_flight[tid] -= 1

    async def fetch_many(
        self, refs: Sequence[TaskRef]
    ) -> AsyncIterator[tuple[TaskRef, MemSnapshot | BaseException]]:
        self.batches.append([r.task_id for r in refs])
        async for item in super().fetch_many(refs):
            yield item

    def interpret(self, snapshot: MemSnapshot, ref: TaskRef) -> Reading:
        return Reading(snapshot.state, snapshot.state.value.lower(), snapshot.progress,
                       snapshot.message)
