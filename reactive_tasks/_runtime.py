"""Finds the event loop that polling runs on: the caller's, or one shared background thread."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import threading
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Protocol

__all__ = [
    "LoopEnd",
    "background_loop",
    "background_loop_if_started",
    "close_at_exit",
    "current_or_background_loop",
    "in_loop_thread",
    "on_background_loop",
]

logger = logging.getLogger("reactive_tasks")


class _Closable(Protocol):
    def close_on_loop(self, loop: asyncio.AbstractEventLoop) -> Awaitable[None]: ...


_closables: weakref.WeakSet[_Closable] = weakref.WeakSet()


def close_at_exit(owner: _Closable) -> None:
    """Have ``owner``'s resources on the background loop closed when the interpreter exits.

    Without it, connections opened from plain threads would be abandoned mid-flight (and aiohttp
    warns about unclosed sessions); the registry holds owners weakly.
    """
    _closables.add(owner)


class LoopEnd:
    """Calls ``release`` when the running loop shuts down its async generators, as
    ``asyncio.run`` does just before closing it: what was opened on the loop is closed while
    the loop still runs. Create it on that loop's thread.

    It is an async generator started on the loop, so the loop's own finalisation hooks track it.
    """

    def __init__(self, release: Callable[[], Awaitable[None]]) -> None:
        self._release: Callable[[], Awaitable[None]] | None = release
        self._finishing = False
        self._gen = self._wait()
        step = self._gen.asend(None)  # registers the generator with the running loop
        with contextlib.suppress(StopIteration):
            step.send(None)

    async def _wait(self) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            self._finishing = True
            release, self._release = self._release, None
            if release is not None:
                await release()

    def cancel(self) -> None:
        """Drop the release (the scope was closed another way) and finish the generator now."""
        self._release = None
        if self._finishing:
            return
        self._finishing = True
        closing = self._gen.aclose()
        with contextlib.suppress(StopIteration, RuntimeError):
            closing.send(None)


_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None


def _run(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
    asyncio.set_event_loop(loop)
    loop.call_soon(ready.set)
    while True:
        try:
            loop.run_forever()
            return  # stopped on purpose (at exit)
        except (SystemExit, KeyboardInterrupt) as exc:
            # Raised by some code run on this loop (the engine contains its own callbacks):
            # it would end only this thread and strand every stream, so the loop goes on.
            logger.error("%s on the background loop thread; the loop goes on", type(exc).__name__)


def background_loop() -> asyncio.AbstractEventLoop:
    """The process-wide daemon loop thread, started on first use."""
    global _loop, _thread
    with _lock:
        if _loop is not None and _thread is not None and _thread.is_alive():
            return _loop
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        thread = threading.Thread(
            target=_run, args=(loop, ready), name="reactive-tasks-loop", daemon=True
        )
        thread.start()
        ready.wait()
        _loop, _thread = loop, thread
        return loop


def background_loop_if_started() -> asyncio.AbstractEventLoop | None:
    """The background loop if it is running, without starting it."""
    return _loop


def current_or_background_loop() -> asyncio.AbstractEventLoop:
    """The loop running in this thread, else the shared background loop."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return background_loop()


def on_background_loop() -> bool:
    """True when called on the library's own background loop thread."""
    loop = _loop
    return loop is not None and in_loop_thread(loop)


def in_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    """True when the calling thread is the one running ``loop``."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


@atexit.register
def _stop_background_loop() -> None:
    loop, thread = _loop, _thread
    if loop is None or thread is None or not thread.is_alive():
        return
    owners = list(_closables)
    if owners:

        async def close_all() -> None:
            await asyncio.gather(*(o.close_on_loop(loop) for o in owners), return_exceptions=True)

        # Exiting anyway: cleanup must never raise at interpreter exit.
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close_all(), loop).result(timeout=2.0)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=1.0)


def reraise_if_cancelling() -> None:
    """Raise ``CancelledError`` when the running task is being cancelled.

    For handlers of connection errors in retry loops: some clients (redis-py among them) turn a
    cancellation that lands inside their own timeout into a ``TimeoutError``, an ``OSError``; a
    loop that retries it would never stop.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError

