"""Helpers of the web tests: serve a task stream over real HTTP, read SSE frames with httpx."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from reactivex import Observable
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from reactive_tasks import TaskEvent
from reactive_tasks.web import sse_response


@dataclass
class Frame:
    """One SSE frame as a browser would parse it (comments kept apart)."""

    event: str = "message"
    id: str | None = None
    data: str = ""
    retry: int | None = None
    comments: list[str] = field(default_factory=list)

    @property
    def json(self) -> Any:
        return json.loads(self.data)


def stream_app(make: Callable[[], Observable[TaskEvent[Any]]], **options: Any) -> Starlette:
    """An app that streams a fresh ``make()`` at /events for every client."""

    async def events(_: Request) -> Response:
        return sse_response(make(), **options)

    return Starlette(routes=[Route("/events", events)])


async def frames(response: httpx.Response) -> AsyncIterator[Frame]:
    """Parse an SSE body frame by frame (fields per the HTML standard's rules)."""
    frame = Frame()
    async for line in response.aiter_lines():
        if line == "":
            yield frame
            frame = Frame()
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "":
            frame.comments.append(value)
        elif name == "event":
            frame.event = value
        elif name == "id":
            frame.id = value
        elif name == "data":
            frame.data = value if not frame.data else frame.data + "\n" + value
        elif name == "retry":
            frame.retry = int(value)
