"""Per-task reads of one session, served from one queue by a bounded set of workers.

Every ``each`` call (a hub round of an API without a batch endpoint) appends its reads to the
session's single queue, which at most ``cap`` workers drain in order. A round that takes longer
than its interval therefore never competes with the next one: the reads of the next round wait
behind it, so no task is read again while a task that fell due before it still waits.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from ._types import TaskRef, request_timeout_var

__all__ = ["ReadQueue"]

T = TypeVar("T")


class _Round(Generic[T]):
    """One ``each`` call: where its answers go, and whether anyone still waits for them."""

    __slots__ = ("answers", "open")

    def __init__(self) -> None:
        self.answers: asyncio.Queue[tuple[TaskRef, T | BaseException]] = asyncio.Queue()
        self.open = True


#: One read waiting: its round, the task, the read, and the poll's request timeout.
_Job = tuple[_Round[Any], TaskRef, Callable[[TaskRef], Awaitable[Any]], float | None]


class ReadQueue:
    """One queue of per-task reads, first asked first served, at most ``cap`` at a time."""

    def __init__(self, cap: int, closed_error: Callable[[], BaseException]) -> None:
        self.cap = cap
        #: Set when closing begins: no read starts from then on.
        self.closed = False
        self._closed_error = closed_error
        self._jobs: deque[_Job] = deque()
        # each worker -> the round and task of the read it is in (None between reads)
        self._workers: dict[asyncio.Task[None], tuple[_Round[Any], TaskRef] | None] = {}
        self._inline = 0  # reads run by their caller itself (a lone read, nothing waiting)

    @property
    def waiting(self) -> int:
        """How many reads wait for a worker (reads of abandoned rounds included)."""
        return len(self._jobs)

    async def each(
        self, refs: Sequence[TaskRef], read: Callable[[TaskRef], Awaitable[T]]
    ) -> AsyncIterator[tuple[TaskRef, T | BaseException]]:
        """``read`` every ref, behind every read asked for before; answers as they come."""
        if len(refs) == 1 and not self._jobs and self._busy() < self.cap:
            # Nobody waits: the caller reads itself rather than start a worker for one read.
            self._inline += 1
            try:
                outcome = await _capture(read(refs[0]))
            finally:
                self._inline -= 1
                self._spawn()
            yield refs[0], outcome
            return
        round_: _Round[T] = _Round()
        timeout = request_timeout_var.get()
        jobs = self._jobs
        for ref in refs:
            jobs.append((round_, ref, read, timeout))
        self._spawn()
        try:
            for _ in range(len(refs)):
                yield await round_.answers.get()
        finally:
            round_.open = False  # its reads still queued are skipped
            mine = [task for task, now in self._workers.items() if now and now[0] is round_]
            for task in mine:
                task.cancel()  # lands inside this round's read: a worker awaits nothing else
            if mine:
                # Let them unwind before the caller goes on (it may be closing the client).
                await asyncio.gather(*mine, return_exceptions=True)
            self._spawn()

    async def aclose(self) -> None:
        """Take no more reads, cancel the running ones and wait for them to unwind; every read
        left unanswered is answered with the closed error, so that no caller waits forever."""
        self.closed = True
        left = [(round_, ref) for round_, ref, _, _ in self._jobs]
        self._jobs.clear()
        left += [now for now in self._workers.values() if now is not None]
        workers = list(self._workers)
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        for round_, ref in left:
            if round_.open:
                round_.answers.put_nowait((ref, self._closed_error()))

    def _busy(self) -> int:
        return len(self._workers) + self._inline

    def _spawn(self) -> None:
        """Start workers for the waiting reads, up to the cap."""
        if self.closed:
            return
        for _ in range(min(len(self._jobs), self.cap - self._busy())):
            task = asyncio.ensure_future(self._work())
            self._workers[task] = None
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        """A worker ended (queue drained, cancelled, even before it started): free its slot."""
        self._workers.pop(task, None)
        self._spawn()

    async def _work(self) -> None:
        me = asyncio.current_task()
        assert me is not None
        workers, jobs = self._workers, self._jobs
        while jobs and not self.closed:
            round_, ref, read, timeout = jobs.popleft()
            if not round_.open:
                continue
            workers[me] = (round_, ref)
            # The poll context of the round that asked (a task's context is its own copy).
            request_timeout_var.set(timeout)
            outcome = await _capture(read(ref))
            workers[me] = None
            if round_.open:
                round_.answers.put_nowait((ref, outcome))


async def _capture(awaitable: Awaitable[T]) -> T | BaseException:
    """The awaitable's result, or the ``Exception`` it raised (cancellation still propagates)."""
    try:
        return await awaitable
    except Exception as exc:
        return exc
