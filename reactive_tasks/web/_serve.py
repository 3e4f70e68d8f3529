"""Serve the dashboard beside a running watch, on the watch's own event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import uvicorn
from reactivex import Observable
from reactivex import operators as ops

from .._models import TaskEvent
from .._net import bind_socket
from ..compose import merge_tasks
from ._dashboard import dashboard_app

__all__ = ["bind", "serve_dashboard"]

Stream = tuple[str, str, Observable[TaskEvent[Any]]]


def bind(host: str, port: int) -> socket.socket:
    """A listening socket for the dashboard (raises OSError, e.g. when the port is taken)."""
    return bind_socket(host, port, backlog=512)


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: Ctrl-C belongs to the command that runs it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def install_signal_handlers(self) -> None:
        """Older uvicorn's hook: nothing to install either."""


@contextlib.asynccontextmanager
async def serve_dashboard(
    streams: Sequence[Stream], sock: socket.socket, *, title: str = "reactive-tasks watch"
) -> AsyncIterator[list[Stream]]:
    """Serve the page on ``sock`` while the body runs; yields the streams to watch instead.

    Each stream is shared through a replay of its latest event, so the page (opened at any time,
    even after the end) and the caller see the same events from the same polls.
    """
    shared = [(b, t, o.pipe(ops.replay(buffer_size=1))) for b, t, o in streams]
    connections = [o.connect() for _, _, o in shared]
    app = dashboard_app(merge_tasks(*(o for _, _, o in shared)), [(b, t) for b, t, _ in shared],
                        title=title)
    config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False,
                            timeout_graceful_shutdown=1)
    server = _Server(config)
    serving = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        while not server.started and not serving.done():
            await asyncio.sleep(0.01)
        if serving.done():
            serving.result()  # it failed to start: raise why
        yield [(b, t, o) for b, t, o in shared]
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await serving
        for connection in connections:
            if connection is not None:
                connection.dispose()
        sock.close()
