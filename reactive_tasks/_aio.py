"""Bridges from Observables to asyncio and to blocking code that are safe across threads.

reactivex's own ``Observable.__await__`` stalls when events arrive from another thread; these
hand every notification to the waiting loop with ``call_soon_threadsafe`` instead.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from reactivex import Observable

from ._errors import EmptyObservation, ObservationTimeout
from ._runtime import in_loop_thread

__all__ = ["aiter", "wait", "wait_sync"]

T = TypeVar("T")


def _on_loop(loop: asyncio.AbstractEventLoop, fn: Callable[[], None]) -> None:
    """Run ``fn`` on ``loop``: right away on its own thread, scheduled from any other."""
    if in_loop_thread(loop):
        fn()
    elif not loop.is_closed():
        loop.call_soon_threadsafe(fn)


async def wait(observable: Observable[T], *, timeout: float | None = None) -> T:
    """Await the last event of ``observable`` (usually the terminal one).

    Errors of the stream are raised here; ``timeout`` raises ``ObservationTimeout`` and stops
    watching.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    last: list[T] = []

    def settle_result() -> None:
        if future.done():
            return
        if last:
            future.set_result(last[-1])
        else:
            future.set_exception(EmptyObservation("the stream completed without any event"))

    def settle_error(error: Exception) -> None:
        if not future.done():
            future.set_exception(error)

    def on_next(value: T) -> None:
        if last:
            last[0] = value
        else:
            last.append(value)

    subscription = observable.subscribe(
        on_next=on_next,
        on_error=lambda e: _on_loop(loop, lambda: settle_error(e)),
        on_completed=lambda: _on_loop(loop, settle_result),
    )
    try:
        if timeout is None:
            return await future
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError as exc:
            if isinstance(exc, ObservationTimeout) or not future.cancelled():
                raise
            raise ObservationTimeout(f"no terminal event within {timeout} s") from None
    finally:
        subscription.dispose()


def wait_sync(observable: Observable[T], timeout: float | None = None) -> T:
    """Block until ``observable`` completes and return its last event; for scripts.

    Raises ``RuntimeError`` at once on a thread whose event loop is running (blocking it would
    stall the very loop that delivers events); ``timeout`` raises ``ObservationTimeout``.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError(
            "wait_sync() would block the running event loop; use `await wait(...)` instead"
        )
    done = threading.Event()
    box: dict[str, Any] = {}

    def on_next(value: T) -> None:
        box["last"] = value

    def on_error(error: Exception) -> None:
        box["error"] = error
        done.set()

    subscription = observable.subscribe(
        on_next=on_next, on_error=on_error, on_completed=done.set
    )
    try:
        if not done.wait(timeout):
            raise ObservationTimeout(f"no terminal event within {timeout} s")
    finally:
        subscription.dispose()
    if "error" in box:
        raise box["error"]
    if "last" not in box:
        raise EmptyObservation("the stream completed without any event")
    result: T = box["last"]
    return result


async def aiter(observable: Observable[T]) -> AsyncIterator[T]:
    """Iterate over every event of ``observable``; leaving the loop stops watching."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()
    NEXT, ERROR, DONE = 0, 1, 2

    def put(item: tuple[int, Any]) -> None:
        _on_loop(loop, lambda: queue.put_nowait(item))

    subscription = observable.subscribe(
        on_next=lambda v: put((NEXT, v)),
        on_error=lambda e: put((ERROR, e)),
        on_completed=lambda: put((DONE, None)),
    )
    try:
        while True:
            kind, value = await queue.get()
            if kind == NEXT:
                yield value
            elif kind == ERROR:
                raise value
            else:
                return
    finally:
        subscription.dispose()
