"""Finds the event loop that polling runs on: the caller's, or one shared background thread."""

from __future__ import annotations

import asyncio
import atexit
import threading

__all__ = ["background_loop", "current_or_background_loop", "in_loop_thread"]

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None


def _run(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
    asyncio.set_event_loop(loop)
    loop.call_soon(ready.set)
    loop.run_forever()


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


def current_or_background_loop() -> asyncio.AbstractEventLoop:
    """The loop running in this thread, else the shared background loop."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return background_loop()


def in_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    """True when the calling thread is the one running ``loop``."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


@atexit.register
def _stop_background_loop() -> None:
    loop, thread = _loop, _thread
    if loop is not None and thread is not None and thread.is_alive():
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=1.0)
