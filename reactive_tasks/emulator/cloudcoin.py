"""CloudCoin Coin Manager (local wallet REST API, port 8004) task endpoint, under /cloudcoin.

`GET /api/v1/task/{id}` (and `/api/v1/tasks/{id}`) answer HTTP 200 with a `payload` envelope;
errors are HTTP 200 too, with `"status": "error"` and a numeric code.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from ._api import ApiContext, EmulatedApi, check_choice
from ._faults import Fault

__all__ = ["API", "CODE_INVALID_PARAMETERS", "CODE_TASK_NOT_FOUND", "routes"]

CODE_INVALID_PARAMETERS = 4100
CODE_TASK_NOT_FOUND = 4105
CODE_INTERNAL = 5000

TERMINAL = frozenset({"completed", "error"})
STATUSES = frozenset({"running"}) | TERMINAL
_STEP_KEYS = frozenset({"status", "progress", "message", "data"})
_DEFAULT_MESSAGES = {"running": "Task in progress", "completed": "Command Completed"}

DEFAULT_STEPS: tuple[Mapping[str, Any], ...] = (
    {"status": "running", "progress": 0, "polls": 1},
    {"status": "running", "progress": 50, "polls": 1},
    {
        "status": "completed",
        "progress": 100,
        "message": "Command Completed",
        "data": {"online": 25, "pownstring": "p" * 25},
    },
)


def _error(code: int, message: str) -> JSONResponse:
    return JSONResponse(
        {"status": "error", "payload": {"code": code, "message": message, "details": None}}
    )


def normalize_id(raw: str) -> str | None:
    """The canonical task id (lowercase UUID with dashes), or None when `raw` is no GUID."""
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        return None


def _check_step(fields: Mapping[str, Any]) -> str | None:
    unknown = set(fields) - _STEP_KEYS
    if unknown:
        return f"unknown cloudcoin step fields {sorted(unknown)}; allowed: {sorted(_STEP_KEYS)}"
    status = fields.get("status", "running")
    progress = fields.get("progress", 0)
    problem = check_choice("status", status, STATUSES)
    if problem:
        return problem
    if not isinstance(progress, int) or isinstance(progress, bool):
        return "progress must be an integer"
    if not isinstance(fields.get("message", ""), str):
        return "message must be a string"
    if not isinstance(fields.get("data", {}), dict | None):
        return "data must be an object"
    return None


def _check_extra(extra: Mapping[str, Any]) -> str | None:
    unknown = set(extra) - {"started"}
    if unknown:
        return f"unknown cloudcoin task fields {sorted(unknown)}; allowed: ['started']"
    started = extra.get("started", 0)
    if not isinstance(started, int) or isinstance(started, bool):
        return "started must be a unix time (integer)"
    return None


def _api_error(fault: Fault) -> Response:
    return _error(
        CODE_INTERNAL if fault.code is None else fault.code,
        "Emulated API error" if fault.message is None else fault.message,
    )


def routes(ctx: ApiContext) -> Sequence[BaseRoute]:
    """The Coin Manager task routes, served from `ctx`'s scripted tasks."""
    tasks = ctx.tasks

    async def task_status(request: Request) -> Response:
        task_id = normalize_id(request.path_params["id"])
        if task_id is None:
            return _error(CODE_INVALID_PARAMETERS, "Invalid Parameters: id must be a task GUID")
        task = tasks.get(task_id)
        if task is None:
            return _error(CODE_TASK_NOT_FOUND, "Task does not exist")
        view = task.read()
        fields = view.fields
        status = fields.get("status", "running")
        payload: dict[str, Any] = {
            "id": task.id,
            "status": status,
            "progress": fields.get("progress", 100 if status == "completed" else 0),
            "started": task.extra.get("started", int(task.created)),
        }
        if status in TERMINAL:
            payload["finished"] = task.memo.setdefault("finished", int(view.entered))
        payload["message"] = fields.get("message", _DEFAULT_MESSAGES.get(status, "Task failed"))
        if status == "completed":
            payload["data"] = fields.get("data") or {}
        return JSONResponse({"payload": payload, "status": "success"})

    return [
        ctx.route("/api/v1/task/{id}", task_status),
        ctx.route("/api/v1/tasks/{id}", task_status),
    ]


API = EmulatedApi(
    name="cloudcoin",
    routes=routes,
    new_task_id=lambda: str(uuid.uuid4()),
    default_steps=DEFAULT_STEPS,
    api_error=_api_error,
    normalize_id=normalize_id,
    check_step=_check_step,
    check_extra=_check_extra,
)
