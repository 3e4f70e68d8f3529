"""Documented hooks for tests of code built on the library: what a backend holds right now.

They read the engine's registries; they change nothing. Use them instead of private attributes.
"""

from __future__ import annotations

import asyncio
from typing import Any

from . import _scopes
from ._hub import hubs_of
from ._types import Source

__all__ = ["cached_reads", "open_loops", "open_sessions", "watched_tasks"]


def watched_tasks(backend: Source, loop: asyncio.AbstractEventLoop | None = None) -> int:
    """How many distinct tasks ``backend`` polls on ``loop`` (default: the running loop)."""
    hub = hubs_of(backend).get(loop or asyncio.get_running_loop())
    return 0 if hub is None else hub.watched


def open_loops(backend: Source) -> int:
    """On how many event loops ``backend`` holds a poll hub now (0 once it is closed)."""
    return len(hubs_of(backend))


def open_sessions(backend: Any) -> int:
    """How many HTTP sessions (one per event loop) ``backend`` holds now."""
    return _scopes.open_loops(backend)


def cached_reads(backend: Any, loop: asyncio.AbstractEventLoop | None = None) -> int:
    """How many shared reads ``backend``'s session on ``loop`` (default: running) keeps cached."""
    session = _scopes.session_if_open(backend, loop or asyncio.get_running_loop())
    return 0 if session is None else session.cached_count
