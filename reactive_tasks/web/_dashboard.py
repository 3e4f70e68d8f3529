"""The dashboard: one self-contained page (no CDN, no build step) fed by one SSE stream."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from importlib import resources
from typing import Any

from reactivex import Observable
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from .._models import TaskEvent
from ._response import sse_response
from ._wire import Label, default_label, task_key

__all__ = ["dashboard_app"]


def _page(title: str, rows: list[dict[str, str]]) -> str:
    template = resources.files(__package__).joinpath("dashboard.html").read_text("utf-8")
    # "</" cannot end the inline script early once escaped this way
    tasks = json.dumps(rows).replace("</", "<\\/")
    return template.replace("{{title}}", html.escape(title)).replace("{{tasks}}", tasks)


def dashboard_app(
    observable: Observable[TaskEvent[Any]],
    tasks: Sequence[tuple[str, str]] = (),
    *,
    title: str = "reactive-tasks",
    heartbeat: float = 15.0,
    label: Label | None = None,
) -> Starlette:
    """A Starlette app serving the page at ``/`` and ``observable`` as SSE at ``/events``.

    ``tasks`` lists (backend, task id) pairs shown as waiting rows before their first event.
    """
    name = label or default_label
    rows = [
        {"key": task_key(backend, task_id), "backend": backend, "task_id": name(backend, task_id)}
        for backend, task_id in tasks
    ]
    page = _page(title, rows)

    async def index(_: Request) -> Response:
        return HTMLResponse(page)

    async def events(_: Request) -> Response:
        return sse_response(observable, heartbeat=heartbeat, label=label)

    return Starlette(routes=[Route("/", index), Route("/events", events)])

