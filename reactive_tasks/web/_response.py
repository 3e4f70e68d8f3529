"""``sse_response``: any task stream as a Starlette (or FastAPI) Server-Sent Events response."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import anyio
from reactivex import Observable
from starlette.datastructures import Headers
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from .._aio import aiter
from .._models import TaskEvent
from ._wire import COMPLETE_FRAME, Label, Resume, default_label, error_frame, event_frame, task_key

__all__ = ["EventStreamResponse", "sse_response"]

#: Milliseconds a browser waits before reconnecting (EventSource's ``retry:`` field).
RECONNECT_MS = 1000
_DONE = object()


async def _pump(observable: Observable[TaskEvent[Any]], out: asyncio.Queue[Any]) -> None:
    """Move events from the library's bridge into ``out``; end with _DONE or the error."""
    try:
        async for event in aiter(observable):
            out.put_nowait(event)
    except Exception as exc:
        out.put_nowait(exc)
    else:
        out.put_nowait(_DONE)


async def frames(
    observable: Observable[TaskEvent[Any]], resume: Resume, *, heartbeat: float, label: Label
) -> AsyncIterator[str]:
    """The SSE text of a stream: events the browser lacks, heartbeats, then complete or error."""
    yield f"retry: {RECONNECT_MS}\n\n"
    queue: asyncio.Queue[Any] = asyncio.Queue()
    pump = asyncio.ensure_future(_pump(observable, queue))
    keys: dict[tuple[str, str], str] = {}
    try:
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), heartbeat)
            except TimeoutError:
                yield ": heartbeat\n\n"
                continue
            if item is _DONE:
                yield COMPLETE_FRAME
                return
            if isinstance(item, BaseException):
                yield error_frame(item)
                return
            ident = (item.backend, item.task_id)
            key = keys.get(ident) or keys.setdefault(ident, task_key(*ident))
            if resume.admit(key, item):
                yield event_frame(item, key, resume, label)
    finally:
        pump.cancel()  # the bridge's own cleanup disposes the subscription: polls stop


class EventStreamResponse(StreamingResponse):
    """A ``text/event-stream`` response over a task stream, resumable with Last-Event-ID.

    It subscribes when served (so every client has its own subscription, sharing the polls) and
    always watches for the client leaving, whatever the server's ASGI version, so that the
    subscription is disposed at once rather than at the next write.
    """

    def __init__(
        self, observable: Observable[TaskEvent[Any]], *, heartbeat: float = 15.0,
        label: Label | None = None,
    ) -> None:
        if heartbeat <= 0:
            raise ValueError("heartbeat must be positive")
        super().__init__(
            iter(()), media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self.observable = observable
        self.heartbeat = heartbeat
        self.label = label or default_label

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        resume = Resume(Headers(scope=scope).get("last-event-id"))
        self.body_iterator = frames(
            self.observable, resume, heartbeat=self.heartbeat, label=self.label
        )
        async with anyio.create_task_group() as group:

            async def stream() -> None:
                with contextlib.suppress(OSError):  # the client left during a write
                    await self.stream_response(send)
                group.cancel_scope.cancel()

            group.start_soon(stream)
            await self.listen_for_disconnect(receive)
            group.cancel_scope.cancel()


def sse_response(
    observable: Observable[TaskEvent[Any]], *, heartbeat: float = 15.0,
    label: Label | None = None,
) -> EventStreamResponse:
    """Stream ``observable`` (one task, ``merge_tasks``, a group...) to a browser as SSE.

    One frame per event (``event:`` the kind, ``id:`` a resume map, ``data:`` the event as JSON
    without its snapshot), a ``heartbeat`` comment after that many quiet seconds, then a final
    ``complete`` or ``error`` frame. ``label`` names a task on the page; by default secret task
    ids (Aparavi tokens) are shortened as in logs.
    """
    return EventStreamResponse(observable, heartbeat=heartbeat, label=label)
