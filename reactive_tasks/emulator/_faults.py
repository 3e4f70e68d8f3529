"""Injected faults: a queue of one-shot (or N-shot) misbehaviours matched against API requests.

Shared by every emulated API; only `api_error` needs the API module to build the answer.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

__all__ = [
    "EmulatedReset",
    "Fault",
    "FaultKind",
    "FaultQueue",
    "fault_response",
    "install_reset_log_filter",
]

FaultKind = Literal["status", "rate_limit", "slow", "reset", "malformed", "api_error"]

DEFAULT_MALFORMED_BODY = '{"payload": 42'


class Fault(BaseModel):
    """One fault to inject; consumed by `count` matching requests to `api`.

    `task_id` (None: any task) and `path_contains` (None: any route) narrow which requests match.
    Kind-specific fields: `status` (kind status), `retry_after` (rate_limit), `delay` (slow),
    `body` (status: JSON body; malformed: raw text, or JSON of the wrong shape), `code`/`message`
    (api_error, defaults chosen by the API module).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    api: str
    kind: FaultKind
    count: int = Field(default=1, ge=1)
    task_id: str | None = None
    path_contains: str | None = None
    status: int = Field(default=503, ge=400, le=599)
    retry_after: float = Field(default=1, ge=0)
    delay: float = Field(default=1.0, ge=0)
    body: Any = None
    code: int | None = None
    message: str | None = None


class _Pending:
    """A queued fault and how many more requests it will hit."""

    __slots__ = ("fault", "id", "remaining")

    def __init__(self, fault_id: int, fault: Fault) -> None:
        self.id = fault_id
        self.fault = fault
        self.remaining = fault.count


class FaultQueue:
    """Pending faults per API, first injected first served; a request with none pending is O(1)."""

    def __init__(self) -> None:
        self._by_api: dict[str, list[_Pending]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def add(self, fault: Fault) -> int:
        """Queue a fault; returns its id."""
        with self._lock:
            pending = _Pending(next(self._ids), fault)
            self._by_api.setdefault(fault.api, []).append(pending)
            return pending.id

    def take(self, api: str, path: str, task_ids: Sequence[str]) -> Fault | None:
        """Consume one use of the first fault matching this request, if any."""
        if not self._by_api.get(api):
            return None
        with self._lock:
            queue = self._by_api.get(api, [])
            for index, pending in enumerate(queue):
                fault = pending.fault
                if fault.task_id is not None and fault.task_id not in task_ids:
                    continue
                if fault.path_contains is not None and fault.path_contains not in path:
                    continue
                pending.remaining -= 1
                if pending.remaining <= 0:
                    del queue[index]
                return fault
        return None

    def pending(self) -> list[dict[str, Any]]:
        """Every queued fault with its id and remaining uses."""
        with self._lock:
            return [
                {"id": p.id, "remaining": p.remaining, **p.fault.model_dump()}
                for queue in self._by_api.values()
                for p in queue
            ]

    def clear(self) -> None:
        """Drop every pending fault."""
        with self._lock:
            self._by_api.clear()


class EmulatedReset(Exception):
    """Raised after the response head to make the server drop the connection (a 'reset')."""


class _ResetResponse(Response):
    """Sends a response head promising a body, then aborts: the client sees a broken connection."""

    def __init__(self) -> None:
        super().__init__(status_code=200)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"64")],
            }
        )
        raise EmulatedReset("emulated connection reset")


class _HideEmulatedResets(logging.Filter):
    """Keeps uvicorn from logging a traceback for each intentional reset."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not _is_reset(exc)


def _is_reset(exc: BaseException | None) -> bool:
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, EmulatedReset):
            return True
        if isinstance(exc, BaseExceptionGroup):
            return any(_is_reset(inner) for inner in exc.exceptions)
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


_RESET_FILTER = _HideEmulatedResets()


def install_reset_log_filter() -> None:
    """Attach (once) the filter hiding intentional resets to uvicorn's error logger."""
    logging.getLogger("uvicorn.error").addFilter(_RESET_FILTER)


def _retry_after(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else repr(float(seconds))


async def fault_response(fault: Fault, api_error: Callable[[Fault], Response]) -> Response | None:
    """The answer a fault gives, or None when the request must then be served normally (slow)."""
    kind = fault.kind
    if kind == "slow":
        await asyncio.sleep(fault.delay)
        return None
    if kind == "status":
        body = fault.body
        if body is None:
            body = {"error": {"code": fault.status, "message": f"emulated HTTP {fault.status}"}}
        return JSONResponse(body, status_code=fault.status)
    if kind == "rate_limit":
        return JSONResponse(
            {"error": {"code": 429, "message": "emulated rate limit"}},
            status_code=429,
            headers={"Retry-After": _retry_after(fault.retry_after)},
        )
    if kind == "reset":
        return _ResetResponse()
    if kind == "malformed":
        raw = fault.body
        if raw is None:
            raw = DEFAULT_MALFORMED_BODY
        text = raw if isinstance(raw, str) else json.dumps(raw)
        return Response(text, status_code=200, media_type="application/json")
    return api_error(fault)
