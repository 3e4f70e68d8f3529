"""Aparavi Data Toolchain task endpoints (``https://eaas.aparavi.com``), under /aparavi.

``PUT /task?name=&threads=`` with ``{"pipeline": {...}}`` starts a task and answers its token and
compute pool (``gpu`` when the pipeline or one of its components sets ``"gpu": true``, else
``cpu``); ``GET /task?token=&type=`` reads it; ``DELETE /task?token=&type=`` cancels it and
answers its final results (a finished task keeps its own; the record stays readable). Answers are
``{"status": "OK", "data": ...}`` or ``{"status": "Error", "error": {"message", "code",
"details"}}`` with HTTP 401 (bad key, out of tokens), 404 or 422: the SDK's shape. The shape the
API documentation shows, ``{"data": {"id", "status", "progress", "files_processed",
"total_files", "error", ...}, "message"}`` and ``{"error": "Task not found", "message"}``, is
served by ``make_api(shape="documented")``, or for one task by its extra ``shape``.

A task started with ``name`` equal to a key of ``LIFECYCLES`` follows that script; any other
name gets the default one. Scripted steps take the API's camelCase fields (``status``,
``completed``, ``totalCount``, ``completedCount``, ``errors`` ...).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ._api import ApiContext, EmulatedApi, check_choice
from ._faults import Fault
from ._state import ScriptedTask

__all__ = [
    "API",
    "API_KEYS",
    "DEFAULT_STEPS",
    "EXHAUSTED_KEYS",
    "LIFECYCLES",
    "SHAPES",
    "make_api",
    "normalize_id",
    "pick_type",
]

#: Keys the default emulated API accepts (as ``Authorization: <key>`` or ``Bearer <key>``).
API_KEYS: tuple[str, ...] = ("emulator-api-key",)
#: Keys it knows but refuses with "out of tokens".
EXHAUSTED_KEYS: tuple[str, ...] = ("emulator-exhausted-key",)

TYPES = ("cpu", "gpu")
_FINISHED = frozenset({"done", "failed", "error", "cancelled", "canceled"})
#: Scripted statuses accepted (any case), as the DTC reports them.
STATUSES = frozenset({"Created", "Running", "Paused", "Completed"}) | {
    s.capitalize() for s in _FINISHED
}
_COUNTERS = (
    "currentSize",
    "totalSize",
    "totalCount",
    "completedSize",
    "completedCount",
    "failedSize",
    "failedCount",
    "wordsSize",
    "wordsCount",
    "rateSize",
    "rateCount",
    "exitCode",
)
_STEP_KEYS = frozenset(
    {"status", "completed", "currentObject", "errors", "warnings", "notes", "exitMsg", "metrics"}
    | set(_COUNTERS)
)
_EXTRA_KEYS = frozenset({"type", "name", "threads", "pipeline", "shape"})
#: The answer shapes: the SDK's envelope, or the one of the API documentation (seed 003).
SHAPES = ("sdk", "documented")


def _step(
    status: str, done: int = 0, total: int = 4, polls: int = 1, **more: Any
) -> dict[str, Any]:
    obj = f"file://data/doc{done}.pdf" if done < total else ""
    return {
        "status": status,
        "completedCount": done,
        "totalCount": total,
        "completedSize": done * 1024,
        "totalSize": total * 1024,
        "currentObject": obj,
        "polls": polls,
        **more,
    }


LIFECYCLES: dict[str, tuple[Mapping[str, Any], ...]] = {
    "default": (
        _step("Created", 0, 0),
        _step("Running", 1),
        _step("Running", 3),
        _step("Completed", 4, completed=False),
        _step("Completed", 4, completed=True),
    ),
    "errors": (
        _step("Running", 1, 3),
        _step("Running", 2, 3),
        _step(
            "Completed",
            2,
            3,
            completed=True,
            failedCount=1,
            exitCode=1,
            errors=["parse_1: cannot extract text from file://data/doc2.pdf"],
        ),
    ),
    "paused": (
        _step("Running", 1),
        _step("Paused", 1, polls=2),
        _step("Running", 2),
        _step("Running", 3),
        _step("Completed", 4, completed=True),
    ),
    "failed": (
        _step("Running", 1),
        _step("Failed", 1, exitCode=2, exitMsg="engine exited with code 2"),
    ),
    "endless": (_step("Created", 0, 0), _step("Running", 1, 1000)),
}
DEFAULT_STEPS = LIFECYCLES["default"]


def normalize_id(raw: str) -> str | None:
    """The canonical token (lowercase UUID with dashes), or None when ``raw`` is no UUID."""
    try:
        return str(uuid.UUID(raw))
    except (ValueError, TypeError, AttributeError):
        return None


def pick_type(pipeline: Any, depth: int = 0) -> str:
    """The compute pool a pipeline runs on: ``gpu`` when any object in it sets ``"gpu": true``."""
    if depth > 20:
        return "cpu"
    if isinstance(pipeline, dict):
        if pipeline.get("gpu") is True:
            return "gpu"
        children: Iterable[Any] = pipeline.values()
    elif isinstance(pipeline, list):
        children = pipeline
    else:
        return "cpu"
    return "gpu" if any(pick_type(c, depth + 1) == "gpu" for c in children) else "cpu"


def _sdk_error(status: int, message: str, details: Any = None) -> JSONResponse:
    body = {"status": "Error", "error": {"message": message, "code": status, "details": details}}
    return JSONResponse(body, status_code=status)


def _documented_error(status: int, message: str, details: Any = None) -> JSONResponse:
    text = _DOCUMENTED_DETAILS.get(message, message)
    return JSONResponse({"error": message, "message": text}, status_code=status)


_DOCUMENTED_DETAILS = {"Task not found": "The specified task does not exist or has been deleted"}


def _ok(data: Any) -> JSONResponse:
    return JSONResponse({"status": "OK", "data": data})


def _documented_ok(task: ScriptedTask, record: Mapping[str, Any]) -> JSONResponse:
    """``record`` (the SDK's fields) told the documented way: progress and file counts."""
    status = str(record["status"])
    low = status.lower()
    if low == "completed" and not record["completed"]:
        status = "Running"  # this shape has no `completed` flag: done means done
    done, total = int(record["completedCount"]), int(record["totalCount"])
    error: str | None = None
    if record["errors"]:
        first = record["errors"][0]
        error = first if isinstance(first, str) else str(first.get("message", first))
    elif low in ("failed", "error") and record["exitMsg"]:
        error = str(record["exitMsg"])
    updated = float(record["endTime"]) or time.time()
    data = {
        "id": task.id,
        "status": status,
        "created_at": _iso(task.created),
        "updated_at": _iso(updated),
        "progress": done * 100 // total if total else 0,
        "files_processed": done,
        "total_files": total,
        "error": error,
        "metadata": {"type": task.extra.get("type", "cpu")},
    }
    return JSONResponse({"data": data, "message": "Task status retrieved successfully"})


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _check_step(fields: Mapping[str, Any]) -> str | None:
    unknown = set(fields) - _STEP_KEYS
    if unknown:
        return f"unknown aparavi step fields {sorted(unknown)}; allowed: {sorted(_STEP_KEYS)}"
    problem = check_choice("status", fields.get("status", "Running"), STATUSES, ignore_case=True)
    if problem:
        return problem
    if not isinstance(fields.get("completed", False), bool):
        return "completed must be a boolean"
    for name in _COUNTERS:
        value = fields.get(name, 0)
        if not isinstance(value, int) or isinstance(value, bool):
            return f"{name} must be an integer"
    for name in ("errors", "warnings", "notes"):
        if not isinstance(fields.get(name, []), list):
            return f"{name} must be a list"
    if not isinstance(fields.get("exitMsg", ""), str):
        return "exitMsg must be a string"
    if not isinstance(fields.get("metrics", {}), dict):
        return "metrics must be an object"
    return None


def _check_extra(extra: Mapping[str, Any]) -> str | None:
    unknown = set(extra) - _EXTRA_KEYS
    if unknown:
        return f"unknown aparavi task fields {sorted(unknown)}; allowed: {sorted(_EXTRA_KEYS)}"
    if extra.get("type", "cpu") not in TYPES:
        return "type must be 'cpu' or 'gpu'"
    if extra.get("shape", "sdk") not in SHAPES:
        return f"shape must be one of {list(SHAPES)}"
    return None


def _api_error(fault: Fault) -> Response:
    code = fault.code if fault.code is not None and 400 <= fault.code <= 599 else 500
    return _sdk_error(code, "Emulated API error" if fault.message is None else fault.message)


def _record(task: ScriptedTask) -> dict[str, Any]:
    """The ``data`` of ``GET /task``: the cancelled record, or the current scripted step."""
    cancelled = task.memo.get("cancelled")
    if cancelled is not None:
        return dict(cancelled)
    view = task.read()
    return _render(task, view.fields, view.entered)


def _render(task: ScriptedTask, fields: Mapping[str, Any], entered: float) -> dict[str, Any]:
    status = str(fields.get("status", "Running"))
    low = status.lower()
    completed = bool(fields.get("completed", low in ("completed", "done")))
    finished = low in _FINISHED or (low == "completed" and completed)
    data: dict[str, Any] = {
        "completed": completed,
        "startTime": task.created,
        "endTime": task.memo.setdefault("endTime", entered) if finished else 0,
        "status": status,
        "warnings": list(fields.get("warnings", [])),
        "errors": list(fields.get("errors", [])),
        "currentObject": fields.get("currentObject", ""),
        "notes": list(fields.get("notes", [])),
    }
    for name in _COUNTERS:
        data[name] = fields.get(name, 0)
    data["serviceUp"] = 0 if finished else 1
    data["exitMsg"] = fields.get("exitMsg", "")
    data["trace"] = [f"Status: {status}"]
    data["firstRunDownloadStatus"] = []
    data["metrics"] = dict(fields.get("metrics", {"cpu": 1.5, "requests": 1}))
    return data


def _is_finished(record: Mapping[str, Any]) -> bool:
    low = str(record["status"]).lower()
    return low in _FINISHED or (low == "completed" and bool(record["completed"]))


def make_api(
    api_keys: Sequence[str] = API_KEYS,
    exhausted_keys: Sequence[str] = EXHAUSTED_KEYS,
    *,
    shape: str = "sdk",
) -> EmulatedApi:
    """An emulated Aparavi API accepting ``api_keys`` and refusing ``exhausted_keys`` as spent.

    ``shape`` is how it answers (see ``SHAPES``); a task's extra ``shape`` overrides it for
    that task's records.
    """
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {list(SHAPES)}, got {shape!r}")
    accepted = frozenset(api_keys)
    spent = frozenset(exhausted_keys)
    fail = _documented_error if shape == "documented" else _sdk_error

    def answer(task: ScriptedTask, record: Mapping[str, Any]) -> JSONResponse:
        if task.extra.get("shape", shape) == "documented":
            return _documented_ok(task, record)
        return _ok(dict(record))

    def refused(request: Request) -> Response | None:
        header = request.headers.get("authorization", "").strip()
        if header[:7].lower() == "bearer ":
            header = header[7:].strip()
        if not header:
            return fail(401, "Missing API key in the Authorization header")
        if header in spent:
            return fail(401, "API key is out of tokens")
        if header not in accepted:
            return fail(401, "Invalid API key")
        return None

    def routes(ctx: ApiContext) -> Sequence[BaseRoute]:
        tasks = ctx.tasks
        labels = {m: f"{ctx.name} {m} /task" for m in ("GET", "PUT", "DELETE")}

        async def start(request: Request) -> Response:
            early = await ctx.guard(request, labels["PUT"])
            if early is not None:
                return early
            early = refused(request)
            if early is not None:
                return early
            threads_raw = request.query_params.get("threads")
            threads: int | None = None
            if threads_raw is not None:
                try:
                    threads = int(threads_raw)
                except ValueError:
                    threads = 0
                if not 1 <= threads <= 16:
                    return fail(422, "threads must be an integer from 1 to 16")
            try:
                body = json.loads(await request.body())
            except ValueError:
                return fail(422, "the body must be JSON")
            if not isinstance(body, dict) or not isinstance(body.get("pipeline"), dict):
                return fail(422, "the body must be an object with a 'pipeline' object")
            name = request.query_params.get("name")
            pipeline = body["pipeline"]
            task_type = pick_type(pipeline)
            script = ctx.compile_script(LIFECYCLES.get(name or "", DEFAULT_STEPS))
            extra: dict[str, Any] = {"type": task_type, "pipeline": pipeline}
            if name is not None:
                extra["name"] = name
            if threads is not None:
                extra["threads"] = threads
            task = ctx.create(None, script, extra)
            return _ok({"token": task.id, "type": task_type})

        async def find(request: Request, method: str) -> ScriptedTask | Response:
            raw_token = request.query_params.get("token")
            token = normalize_id(raw_token) if raw_token else None
            ids = (token or raw_token,) if raw_token else ()
            early = await ctx.guard(request, labels[method], ids)
            if early is None:
                early = refused(request)
            if early is not None:
                return early
            task_type = request.query_params.get("type")
            if not raw_token:
                return fail(422, "the query parameter 'token' is required")
            if token is None:
                return fail(422, "Invalid token")
            if not task_type:
                return fail(422, "the query parameter 'type' is required")
            if task_type not in TYPES:
                return fail(422, f"Invalid type {task_type!r}: expected 'cpu' or 'gpu'")
            task = tasks.get(token)
            if task is None or task.extra.get("type", "cpu") != task_type:
                return fail(404, "Task not found")
            return task

        async def read(request: Request) -> Response:
            found = await find(request, "GET")
            if isinstance(found, Response):
                return found
            return answer(found, _record(found))

        async def cancel(request: Request) -> Response:
            found = await find(request, "DELETE")
            if isinstance(found, Response):
                return found
            record = found.memo.get("cancelled")
            if record is None:
                view = found.peek()
                record = _render(found, view.fields, view.entered)
                if not _is_finished(record):
                    record.update(
                        status="Cancelled",
                        completed=False,
                        endTime=time.time(),
                        serviceUp=0,
                        exitMsg="Task cancelled",
                        currentObject="",
                    )
                found.memo["cancelled"] = record
            return answer(found, record)

        async def endpoint(request: Request) -> Response:
            if request.method == "PUT":
                return await start(request)
            if request.method == "DELETE":
                return await cancel(request)
            return await read(request)

        return [Route("/task", endpoint, methods=["GET", "PUT", "DELETE"])]

    return EmulatedApi(
        name="aparavi",
        routes=routes,
        new_task_id=lambda: str(uuid.uuid4()),
        default_steps=DEFAULT_STEPS,
        api_error=_api_error,
        normalize_id=normalize_id,
        check_step=_check_step,
        check_extra=_check_extra,
    )


API = make_api()
