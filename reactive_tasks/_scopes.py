"""What a backend holds on each event loop (its session and its hub), owned here, not by it.

A registry keyed by (backend, loop): the session is made on first use, released when the loop
ends (``asyncio.run`` shuts it down, or the background loop stops at exit), and closed together
with the loop's hub. Backends only ask for their session; they keep no per-loop state.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Protocol

from ._hub import PollHub, hub_for, release_hub
from ._runtime import LoopEnd, background_loop_if_started, close_at_exit, in_loop_thread
from ._session import Session

__all__ = ["close_all", "close_on", "hub_of", "open_loops", "session_for", "session_if_open"]

class ScopeOwner(Protocol):
    """What the registry needs from a backend: a way to make its session and to be closed."""

    def new_session(self) -> Session: ...

    def close_on_loop(self, loop: asyncio.AbstractEventLoop) -> Awaitable[None]: ...


@dataclass
class _Scope:
    session: Session
    end: LoopEnd | None = None


_Loops = weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Scope]
_lock = threading.Lock()
_scopes: weakref.WeakKeyDictionary[Any, _Loops] = weakref.WeakKeyDictionary()


def session_for(owner: ScopeOwner, loop: asyncio.AbstractEventLoop) -> Session:
    """``owner``'s session on ``loop``, made on first use; while it closes, a typed error.

    A closing scope stays registered until it is closed, so that work of the old scope still
    unwinding (a read between two requests) fails instead of opening a fresh scope behind it.
    """
    loops = _scopes.get(owner)
    scope = loops.get(loop) if loops is not None else None  # no lock once it exists
    session = (scope or _scope(owner, loop)).session
    if session.closed:
        raise session.closed_error()
    return session


def session_if_open(owner: ScopeOwner, loop: asyncio.AbstractEventLoop) -> Session | None:
    """``owner``'s session on ``loop`` if one is open; never makes one."""
    loops = _scopes.get(owner)
    scope = loops.get(loop) if loops is not None else None
    return None if scope is None else scope.session


def hub_of(owner: ScopeOwner, loop: asyncio.AbstractEventLoop) -> PollHub[Any]:
    """``owner``'s poll hub on ``loop``, its session opened with it (not while it closes)."""
    loops = _scopes.get(owner)
    scope = loops.get(loop) if loops is not None else None  # no lock once it exists
    session = (scope or _scope(owner, loop)).session
    if session.closed:
        raise session.closed_error()
    return hub_for(owner, loop)  # type: ignore[arg-type]  # a backend is a Source too


def open_loops(owner: ScopeOwner) -> int:
    """On how many event loops ``owner`` holds a session."""
    loops = _scopes.get(owner)
    return 0 if loops is None else len(loops)


def _scope(owner: ScopeOwner, loop: asyncio.AbstractEventLoop) -> _Scope:
    with _lock:
        loops = _scopes.get(owner)
        if loops is None:
            loops = _scopes[owner] = weakref.WeakKeyDictionary()
        scope = loops.get(loop)
        if scope is None:
            _forget_closed_loops(owner, loops)
            scope = loops[loop] = _Scope(owner.new_session())
            if loop is background_loop_if_started():
                close_at_exit(owner)
            elif in_loop_thread(loop):
                # A loop of the caller's (asyncio.run): release the scope when it ends, so a
                # backend used from many short-lived loops keeps none of them.
                scope.end = LoopEnd(lambda: owner.close_on_loop(loop))
        return scope


def _forget_closed_loops(owner: ScopeOwner, loops: _Loops) -> None:
    """Drop scopes of loops closed without shutting down (nothing can run on them now)."""
    for loop in [lp for lp in loops if lp.is_closed()]:
        scope = loops.pop(loop)
        release_hub(owner, loop)  # type: ignore[arg-type]
        if scope.end is not None:
            scope.end.cancel()


async def close_all(owner: ScopeOwner) -> None:
    """Stop every poll of ``owner`` on every loop and close its sessions."""
    current = asyncio.get_running_loop()
    with _lock:
        loops = _scopes.get(owner)
        scopes = dict(loops) if loops is not None else {}
        for scope in scopes.values():
            scope.session.begin_close()  # nothing of these scopes starts a request any more
    for loop, scope in scopes.items():
        if loop is current:
            await _close(owner, loop, scope)
        elif not loop.is_closed() and loop.is_running():
            future = asyncio.run_coroutine_threadsafe(_close(owner, loop, scope), loop)
            await asyncio.wrap_future(future)
        else:
            _forget(owner, loop, scope)


async def close_on(owner: ScopeOwner, loop: asyncio.AbstractEventLoop) -> None:
    """Close what ``owner`` holds on ``loop`` (run on that loop)."""
    with _lock:
        loops = _scopes.get(owner)
        scope = loops.get(loop) if loops is not None else None
        if scope is not None:
            scope.session.begin_close()
    if scope is not None:
        await _close(owner, loop, scope)


async def _close(owner: ScopeOwner, loop: asyncio.AbstractEventLoop, scope: _Scope) -> None:
    """Close a scope marked closed: its hub, then its session; only then forget it."""
    if scope.end is not None:
        scope.end.cancel()
    try:
        hub = release_hub(owner, loop)  # type: ignore[arg-type]
        if hub is not None:
            await hub.aclose()
        await scope.session.aclose()
    finally:
        _forget(owner, loop, scope)


def _forget(owner: ScopeOwner, loop: asyncio.AbstractEventLoop, scope: _Scope) -> None:
    """Take ``scope`` out of the registry, if it is still the one registered there."""
    with _lock:
        loops = _scopes.get(owner)
        if loops is not None and loops.get(loop) is scope:
            del loops[loop]
