"""GreenCloud (``api.greencloud.dev``) task API under /greencloud: auth, tasks, list, result, CSV.

Scripted steps have the fields ``state`` (``issued``, ``assigned`` or ``finished``),
``progress`` (0..100), ``status`` (the function's HTTP status once finished, default 200),
``result`` (what the function returned: text, or any JSON) and ``content_type``. A ``polls`` step
counts reads of ``GET /v1/task/list`` (each read is one poll of every task, the way watchers poll
GreenCloud); reading one record, a result or the CSV never moves a task on.

Tasks submitted through ``POST /v1/task/<functionId>`` follow a function's script: the
``FAILING_FUNCTION`` answers HTTP 500, ``TEXT_FUNCTION`` returns text, ``MISSING_FUNCTION`` does
not exist (404), and any other ObjectId echoes its query parameters and JSON body.

Auth: any API key is accepted except one starting with ``invalid``. Tokens are signed and carry
their own expiry (3600 s); a key ending in ``;expires_in=<seconds>`` makes its tokens expire that
soon, so that tests can watch a token run out. ``Authorization`` takes the token with or without
a ``Bearer`` prefix; a wrong or expired token gets 401.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import io
import json
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute

from ._api import ApiContext, EmulatedApi, check_choice
from ._faults import Fault
from ._state import ScriptedTask

__all__ = [
    "API",
    "DEFAULT_TTL",
    "ECHO_STEPS",
    "FAILING_FUNCTION",
    "INVALID_KEY_PREFIX",
    "MISSING_FUNCTION",
    "TEXT_FUNCTION",
    "routes",
]

DEFAULT_TTL = 3600.0
REFRESH_TTL = 30 * 24 * 3600.0
INVALID_KEY_PREFIX = "invalid"
FAILING_FUNCTION = "5e0000000000000000000500"
TEXT_FUNCTION = "5e0000000000000000000200"
MISSING_FUNCTION = "000000000000000000000000"
DEFAULT_FUNCTION = "6405848581b16f7a07cd4c48"

_OBJECT_ID = re.compile(r"^[0-9a-fA-F]{24}$")
_TTL_SUFFIX = re.compile(r";expires_in=([0-9]*\.?[0-9]+)$")
_STATES = ("issued", "assigned", "finished")
_STEP_KEYS = frozenset({"state", "progress", "status", "result", "content_type", "node"})
_EXTRA_KEYS = frozenset({"function_id", "schedule_id", "timeout", "params", "body"})
_SECRET = secrets.token_bytes(32)  # signs this process's tokens
_NODE = "1a061cfd-df01-4b02-a067-5122c5941e15"

ECHO_STEPS: tuple[Mapping[str, Any], ...] = (
    {"state": "issued", "progress": 0, "polls": 1},
    {"state": "assigned", "progress": 0, "polls": 1},
    {"state": "assigned", "progress": 50, "polls": 1},
    {"state": "finished", "progress": 100, "status": 200},
)
_FUNCTIONS: dict[str, tuple[Mapping[str, Any], ...]] = {
    FAILING_FUNCTION: (
        {"state": "issued", "progress": 0, "polls": 1},
        {"state": "assigned", "progress": 30, "polls": 1},
        {"state": "finished", "progress": 30, "status": 500,
         "result": "internal error", "content_type": "text/plain"},
    ),
    TEXT_FUNCTION: (
        {"state": "issued", "progress": 0, "polls": 1},
        {"state": "assigned", "progress": 60, "polls": 1},
        {"state": "finished", "progress": 100, "status": 200,
         "result": "Hello from GreenCloud!", "content_type": "text/plain"},
    ),
}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def normalize_id(raw: str) -> str | None:
    """The canonical ObjectId (lowercase hex), or None when ``raw`` is not one."""
    return raw.lower() if _OBJECT_ID.match(raw) else None


def new_object_id() -> str:
    """A fresh ObjectId: 4 bytes of Unix time, then 8 random bytes (as hex)."""
    return f"{int(time.time()) & 0xFFFFFFFF:08x}{secrets.token_hex(8)}"


# -- tokens --------------------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _sign(kind: str, lifetime: float, account: str, access_ttl: float) -> str:
    claims = {"k": kind, "exp": time.time() + lifetime, "ttl": access_ttl,
              "n": secrets.token_hex(4), "acct": account}
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    mac = _b64(hmac.new(_SECRET, payload.encode(), hashlib.sha256).digest())
    return f"gc.{payload}.{mac}"


def _verify(token: str, kind: str) -> dict[str, Any] | None:
    """The token's claims when it is ours, of ``kind`` and unexpired; else None."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != "gc":
        return None
    expected = _b64(hmac.new(_SECRET, parts[1].encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(expected, parts[2]):
        return None
    try:
        claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * 4))
    except ValueError:
        return None
    if claims.get("k") != kind or float(claims.get("exp", 0)) <= time.time():
        return None
    return claims


def _tokens(account: str, ttl: float) -> JSONResponse:
    return JSONResponse({
        "expiresIn": int(ttl) if float(ttl).is_integer() else ttl,
        "accessToken": _sign("access", ttl, account, ttl),
        "refreshToken": _sign("refresh", max(REFRESH_TTL, ttl), account, ttl),
    })


def _authorized(request: Request) -> bool:
    header = request.headers.get("authorization", "").strip()
    if header[:7].lower() == "bearer ":
        header = header[7:].strip()
    return bool(header) and _verify(header, "access") is not None


# -- scripts -------------------------------------------------------------------------------


def _check_step(fields: Mapping[str, Any]) -> str | None:
    unknown = set(fields) - _STEP_KEYS
    if unknown:
        return f"unknown greencloud step fields {sorted(unknown)}; allowed: {sorted(_STEP_KEYS)}"
    problem = check_choice("state", fields.get("state", "issued"), _STATES)
    if problem:
        return problem
    progress = fields.get("progress", 0)
    if isinstance(progress, bool) or not isinstance(progress, int | float):
        return "progress must be a number"
    if not 0 <= progress <= 100:
        return "progress must be from 0 to 100"
    status = fields.get("status", 200)
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        return "status must be an HTTP status code"
    if not isinstance(fields.get("content_type", ""), str):
        return "content_type must be a string"
    if not isinstance(fields.get("node", ""), str):
        return "node must be a string"
    return None


def _check_extra(extra: Mapping[str, Any]) -> str | None:
    unknown = set(extra) - _EXTRA_KEYS
    if unknown:
        return f"unknown greencloud task fields {sorted(unknown)}; allowed: {sorted(_EXTRA_KEYS)}"
    for name in ("function_id", "schedule_id"):
        value = extra.get(name)
        if value is not None and (not isinstance(value, str) or not _OBJECT_ID.match(value)):
            return f"{name} must be a 24-hex-digit ObjectId"
    timeout = extra.get("timeout", 10)
    if isinstance(timeout, bool) or not isinstance(timeout, int):
        return "timeout must be an integer"
    if not isinstance(extra.get("params", {}), dict):
        return "params must be an object"
    return None


def _api_error(fault: Fault) -> Response:
    code = fault.code if fault.code is not None and 400 <= fault.code <= 599 else 500
    return _error(code, "Emulated API error" if fault.message is None else fault.message)


def _state_of(task: ScriptedTask, *, listing: bool) -> tuple[str, Mapping[str, Any], float]:
    """The task's state, step fields and when it entered that step; remembers transition times.

    A list read counts one poll, taken at the *next* list read: so a record read in between
    shows the same step the list just showed, and a ``polls: N`` step is listed exactly N times.
    """
    if listing:
        if task.memo.pop("owed", False):
            task.read(advance=True)
        task.memo["owed"] = True
    view = task.peek()
    fields = view.fields
    state = fields.get("state", "issued")
    if state in ("assigned", "finished"):
        task.memo.setdefault("assigned", int(view.entered))
    if state == "finished":
        task.memo.setdefault("finished", int(view.entered))
    return state, fields, view.entered


def _function_status(state: str, fields: Mapping[str, Any]) -> int:
    return int(fields.get("status", 200)) if state == "finished" else 0


def _result_of(task: ScriptedTask, fields: Mapping[str, Any]) -> tuple[bytes, str]:
    """The function's answer body and content type."""
    if "result" in fields:
        result = fields["result"]
    else:
        result = {"params": task.extra.get("params", {}), "body": task.extra.get("body")}
    content_type = fields.get("content_type")
    if isinstance(result, str) and content_type is None:
        content_type = "text/plain"
    if isinstance(result, str):
        return result.encode(), content_type or "text/plain"
    return json.dumps(result).encode(), content_type or "application/json"


def _day(raw: str | None) -> date | str | None:
    """A yyyy-mm-dd query value as a date; the string 'bad' when it does not parse."""
    if raw is None or raw == "":
        return None
    try:
        return date.fromisoformat(raw) if len(raw) == 10 else "bad"
    except ValueError:
        return "bad"


def routes(ctx: ApiContext) -> Sequence[BaseRoute]:
    """The GreenCloud auth and task routes, served from ``ctx``'s scripted tasks."""
    tasks = ctx.tasks

    async def json_body(request: Request) -> tuple[bool, Any]:
        raw = await request.body()
        if not raw.strip():
            return True, None
        try:
            return True, json.loads(raw)
        except ValueError:
            return False, None

    async def login(request: Request) -> Response:
        ok, body = await json_body(request)
        key = body.get("key") if ok and isinstance(body, dict) else None
        if not isinstance(key, str) or not key:
            return _error(400, "key is required")
        if key.startswith(INVALID_KEY_PREFIX):
            return _error(401, "invalid api key")
        match = _TTL_SUFFIX.search(key)
        account = hashlib.sha256(key.encode()).hexdigest()[:16]
        return _tokens(account, float(match.group(1)) if match else DEFAULT_TTL)

    async def refresh(request: Request) -> Response:
        ok, body = await json_body(request)
        token = body.get("refreshToken") if ok and isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            return _error(400, "refreshToken is required")
        claims = _verify(token, "refresh")
        if claims is None:
            return _error(401, "invalid or expired refresh token")
        return _tokens(str(claims.get("acct", "")), float(claims.get("ttl", DEFAULT_TTL)))

    def guarded(handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            if not _authorized(request):
                return _error(401, "unauthorized")
            response: Response = await handler(request)
            return response

        return endpoint

    async def create(request: Request) -> Response:
        function = normalize_id(request.path_params["id"])
        if function is None:
            return _error(400, "invalid function id")
        if function == MISSING_FUNCTION:
            return _error(404, "function not found")
        ok, body = await json_body(request)
        if not ok:
            return _error(400, "body must be valid JSON")
        steps = _FUNCTIONS.get(function, ECHO_STEPS)
        extra = {"function_id": function, "params": dict(request.query_params), "body": body}
        task = ctx.create(None, ctx.compile_script(list(steps)), extra)
        return JSONResponse({"id": task.id}, status_code=201)

    async def get_task(request: Request) -> Response:
        task_id = normalize_id(request.path_params["id"])
        if task_id is None:
            return _error(400, "invalid task id")
        task = tasks.get(task_id)
        if task is None:
            return _error(404, "task not found")
        state, fields, _ = _state_of(task, listing=False)
        return JSONResponse({
            "functionId": task.extra.get("function_id", DEFAULT_FUNCTION),
            "issued": str(int(task.created)),
            "assigned": str(task.memo.get("assigned", 0)),
            "finished": str(task.memo.get("finished", 0)),
            "progress": fields.get("progress", 0),
            "node": fields.get("node", _NODE) if state != "issued" else "",
            "timeout": task.extra.get("timeout", 10),
            "capabilities": {"cpuCount": 0, "memSize": 0, "networkLatency": 0,
                             "privileged": True},
        })

    async def list_tasks(request: Request) -> Response:
        out = []
        for task in tasks.tasks():
            state, fields, _ = _state_of(task, listing=True)
            out.append({
                "id": task.id,
                "issued": str(int(task.created)),
                "progress": fields.get("progress", 0),
                "status": _function_status(state, fields),
            })
        return JSONResponse(out)

    async def result(request: Request) -> Response:
        task_id = normalize_id(request.path_params["id"])
        if task_id is None:
            return _error(400, "invalid task id")
        task = tasks.get(task_id)
        if task is None:
            return _error(404, "task not found")
        state, fields, _ = _state_of(task, listing=False)
        if state != "finished":
            return _error(404, "the task has no result yet")
        body, content_type = _result_of(task, fields)
        return Response(body, media_type=content_type)

    async def tasks_csv(request: Request) -> Response:
        function = normalize_id(request.path_params["id"])
        if function is None:
            return _error(400, "invalid function id")
        query = request.query_params
        plain = query.get("showPlain", "false").lower() == "true"
        schedule = query.get("scheduleId")
        if schedule is not None and normalize_id(schedule) is None:
            return _error(400, "invalid scheduleId")
        since, until = _day(query.get("dateSince")), _day(query.get("dateUntil"))
        if since == "bad" or until == "bad":
            return _error(400, "dates are yyyy-mm-dd")
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["ID", "IssuedAt", "Status", "ContentType", "Body"])
        for task in tasks.tasks():
            if task.extra.get("function_id", DEFAULT_FUNCTION) != function:
                continue
            if schedule is not None and task.extra.get("schedule_id") != schedule.lower():
                continue
            issued = datetime.fromtimestamp(int(task.created), UTC)
            if isinstance(since, date) and issued.date() < since:
                continue
            if isinstance(until, date) and issued.date() > until:
                continue
            state, fields, _ = _state_of(task, listing=False)
            if state != "finished":
                continue
            body, content_type = _result_of(task, fields)
            text = body.decode() if plain else base64.b64encode(body).decode()
            writer.writerow([task.id, issued.strftime("%Y-%m-%dT%H:%M:%SZ"),
                             _function_status(state, fields), content_type, text])
        return PlainTextResponse(out.getvalue(), media_type="text/csv")

    return [
        ctx.route("/v1/auth/apiKey", login, methods=["POST"], task_param=None),
        ctx.route("/v1/auth/refresh", refresh, methods=["POST"], task_param=None),
        ctx.route("/v1/task/list", guarded(list_tasks), task_param=None),
        ctx.route("/v1/task/{id}/result", guarded(result)),
        ctx.route("/v1/task/{id}/csv", guarded(tasks_csv), task_param=None),
        ctx.route("/v1/task/{id}", guarded(create), methods=["POST"], task_param=None),
        ctx.route("/v1/task/{id}", guarded(get_task)),
    ]


API = EmulatedApi(
    name="greencloud",
    routes=routes,
    new_task_id=new_object_id,
    default_steps=ECHO_STEPS,
    api_error=_api_error,
    normalize_id=normalize_id,
    check_step=_check_step,
    check_extra=_check_extra,
)
