"""Taskcluster's queue service, under /taskcluster (the emulator's URL is the deployment's rootUrl).

Serves the task status structure with its runs (`GET /api/queue/v1/task/<taskId>/status`), the
batch `POST /api/queue/v1/tasks/status`, the task-group listing, artifact listings and artifact
downloads with their 303 redirect, all with Taskcluster's own error bodies
(`{"code", "message", "requestInfo"}`). The official `taskcluster` Python client works against it.

A scripted step lists the task's runs: `{"runs": [{"state": "exception", "reasonResolved":
"worker-shutdown"}, {"state": "running"}]}` is a retry in progress. The emulator fills in run ids,
`reasonCreated`, workers and timestamps (kept stable between reads; `takenUntil` moves on every
read, as a reclaim would, or with `"reclaimEvery": seconds` on a run only that often, as a
worker's periodic reclaims move it). A task created with `clientId`/`accessToken` extras is
private: only Hawk-signed requests with those credentials may read it.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import mohawk
import mohawk.exc
from mohawk.util import parse_authorization_header
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ._api import ApiContext, EmulatedApi, check_choice
from ._faults import Fault
from ._state import ScriptedTask, StepView

__all__ = [
    "API", "QUEUE", "artifact_entry", "artifacts_of", "new_slugid", "normalize_id", "routes",
    "status_of", "task_status",
]

QUEUE = "/api/queue/v1"
PAGE_LIMIT = 1000
SLUGID = re.compile(
    r"^[A-Za-z0-9_-]{8}[Q-T][A-Za-z0-9_-][CGKOSWaeimquy26-][A-Za-z0-9_-]{10}[AQgw]$"
)

RUN_STATES = frozenset({"pending", "running", "completed", "failed", "exception"})
UNRESOLVED = frozenset({"pending", "running"})
REASONS_CREATED = frozenset({"scheduled", "retry", "task-retry", "rerun", "exception"})
REASONS_RESOLVED = frozenset(
    {
        "completed", "failed", "deadline-exceeded", "canceled", "claim-expired",
        "worker-shutdown", "malformed-payload", "resource-unavailable", "internal-error",
        "intermittent-task", "superseded",
    }
)
#: Exceptions the queue answers with an automatic retry run (while retries are left).
RETRYING = frozenset({"claim-expired", "worker-shutdown", "intermittent-task"})
#: Exceptions that can end a run nobody claimed (no worker, no `started`).
UNCLAIMED_OK = frozenset({"canceled", "deadline-exceeded", "superseded"})
STORAGE_TYPES = frozenset({"s3", "blob", "azure", "reference", "error", "object", "link"})

_RUN_KEYS = frozenset(
    {"state", "reasonCreated", "reasonResolved", "workerGroup", "workerId", "reclaimEvery"}
)
_STEP_KEYS = frozenset({"runs", "retriesLeft"})
_EXTRA_KEYS = frozenset(
    {
        "taskGroupId", "schedulerId", "projectId", "provisionerId", "workerType", "priority",
        "retries", "deadlineIn", "expiresIn", "clientId", "accessToken", "artifacts", "name",
        "routes", "tags",
    }
)
_ARTIFACT_KEYS = frozenset(
    {"name", "storageType", "contentType", "content", "runId", "reason", "message"}
)
_PRIORITIES = frozenset(
    {"highest", "very-high", "high", "medium", "low", "very-low", "lowest", "normal"}
)
_CODES = {
    400: "InvalidRequestArguments",
    401: "AuthenticationFailed",
    403: "InsufficientScopes",
    404: "ResourceNotFound",
    409: "RequestConflict",
    410: "ResourceExpired",
    424: "ArtifactError",
    500: "InternalServerError",
}
_HOUR = 3600.0
_YEAR = 365 * 24 * _HOUR

DEFAULT_STEPS: tuple[Mapping[str, Any], ...] = (
    {"runs": [{"state": "pending"}], "polls": 1},
    {"runs": [{"state": "running"}], "polls": 2},
    {"runs": [{"state": "completed"}]},
)


def new_slugid() -> str:
    """A fresh "nice" v4 slugid (22 URL-safe base64 characters, never starting with '-')."""
    raw = bytearray(uuid.uuid4().bytes)
    raw[0] &= 0x7F
    return base64.urlsafe_b64encode(bytes(raw)).decode()[:22]


def normalize_id(raw: str) -> str | None:
    """The id itself when it is a v4 slugid (Taskcluster ids are case-sensitive), else None."""
    return raw if SLUGID.match(raw) else None


@functools.lru_cache(maxsize=1 << 16)
def iso(unix: float) -> str:
    """A unix time as Taskcluster writes date-times: UTC with milliseconds and a Z (cached:
    the stamps of one batch answer share its instant; a task's fixed dates are ``_dates``)."""
    # isoformat is C code, several times faster than strftime; its "+00:00" becomes the Z
    return datetime.fromtimestamp(unix, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


# -- validation of scripts and creation extras -----------------------------------------------


def _check_step(fields: Mapping[str, Any]) -> str | None:
    unknown = set(fields) - _STEP_KEYS
    if unknown:
        return f"unknown taskcluster step fields {sorted(unknown)}; allowed: {sorted(_STEP_KEYS)}"
    runs = fields.get("runs", [])
    if not isinstance(runs, list):
        return "runs must be a list of run objects"
    for index, run in enumerate(runs):
        problem = _check_run(run, index, len(runs))
        if problem:
            return f"runs[{index}]: {problem}"
    left = fields.get("retriesLeft")
    if left is not None and (not isinstance(left, int) or isinstance(left, bool) or left < 0):
        return "retriesLeft must be a non-negative integer"
    return None


def _check_run(run: Any, index: int, count: int) -> str | None:
    if not isinstance(run, dict):
        return "a run is an object"
    unknown = set(run) - _RUN_KEYS
    if unknown:
        return f"unknown run fields {sorted(unknown)}; allowed: {sorted(_RUN_KEYS)}"
    state = run.get("state")
    problem = check_choice("state", state, RUN_STATES)
    if problem:
        return problem
    every = run.get("reclaimEvery")
    if every is not None and (
        not isinstance(every, int | float) or isinstance(every, bool) or not every > 0
    ):
        return "reclaimEvery must be a positive number of seconds"
    if state in UNRESOLVED and index != count - 1:
        return "only the last run may be pending or running"
    created = run.get("reasonCreated")
    if created is not None and created not in REASONS_CREATED:
        return f"reasonCreated must be one of {sorted(REASONS_CREATED)}"
    resolved = run.get("reasonResolved")
    if resolved is not None:
        if state in UNRESOLVED:
            return "an unresolved run has no reasonResolved"
        if resolved not in REASONS_RESOLVED:
            return f"reasonResolved must be one of {sorted(REASONS_RESOLVED)}"
    elif state == "exception":
        return "an exception run needs a reasonResolved"
    for key in ("workerGroup", "workerId"):
        if key in run and not isinstance(run[key], str):
            return f"{key} must be a string"
    return None


def _check_extra(extra: Mapping[str, Any]) -> str | None:
    unknown = set(extra) - _EXTRA_KEYS
    if unknown:
        return f"unknown taskcluster task fields {sorted(unknown)}; allowed: {sorted(_EXTRA_KEYS)}"
    group = extra.get("taskGroupId")
    if group is not None and (not isinstance(group, str) or not SLUGID.match(group)):
        return "taskGroupId must be a slugid"
    for key in ("schedulerId", "projectId", "provisionerId", "workerType", "name"):
        if key in extra and not isinstance(extra[key], str):
            return f"{key} must be a string"
    if extra.get("priority", "lowest") not in _PRIORITIES:
        return f"priority must be one of {sorted(_PRIORITIES)}"
    retries = extra.get("retries", 5)
    if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= 49:
        return "retries must be an integer from 0 to 49"
    for key in ("deadlineIn", "expiresIn"):
        value = extra.get(key, 1)
        if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
            return f"{key} must be a positive number of seconds"
    routes = extra.get("routes", [])
    if not isinstance(routes, list) or not all(isinstance(r, str) and r for r in routes):
        return "routes must be a list of non-empty strings"
    tags = extra.get("tags", {})
    if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
        return "tags must be an object of strings"
    if ("clientId" in extra) != ("accessToken" in extra):
        return "a private task needs both clientId and accessToken"
    if "clientId" in extra and not (
        isinstance(extra["clientId"], str) and isinstance(extra["accessToken"], str)
    ):
        return "clientId and accessToken must be strings"
    artifacts = extra.get("artifacts", [])
    if not isinstance(artifacts, list):
        return "artifacts must be a list of objects"
    for index, artifact in enumerate(artifacts):
        problem = _check_artifact(artifact)
        if problem:
            return f"artifacts[{index}]: {problem}"
    return None


def _check_artifact(artifact: Any) -> str | None:
    if not isinstance(artifact, dict):
        return "an artifact is an object"
    unknown = set(artifact) - _ARTIFACT_KEYS
    if unknown:
        return f"unknown artifact fields {sorted(unknown)}; allowed: {sorted(_ARTIFACT_KEYS)}"
    if not isinstance(artifact.get("name"), str) or not artifact["name"]:
        return "name must be a non-empty string"
    if artifact.get("storageType", "s3") not in STORAGE_TYPES:
        return f"storageType must be one of {sorted(STORAGE_TYPES)}"
    run_id = artifact.get("runId")
    if run_id is not None and (not isinstance(run_id, int) or isinstance(run_id, bool)):
        return "runId must be an integer"
    for key in ("content", "contentType", "reason", "message"):
        if key in artifact and not isinstance(artifact[key], str):
            return f"{key} must be a string"
    return None


# -- answers ---------------------------------------------------------------------------------


def _error(
    status: int, message: str, method: str, params: Mapping[str, Any] | None = None
) -> JSONResponse:
    """An error the way Taskcluster services answer: code, message and requestInfo."""
    body = {
        "code": _CODES.get(status, "InternalServerError" if status >= 500 else "InputError"),
        "message": message,
        "requestInfo": {
            "method": method,
            "params": dict(params or {}),
            "payload": {},
            "time": iso(time.time()),
        },
    }
    return JSONResponse(body, status_code=status)


def _api_error(fault: Fault) -> Response:
    status = fault.code if fault.code is not None and 400 <= fault.code <= 599 else 500
    return _error(status, fault.message or "Emulated API error", "emulated")


def _expired(task: ScriptedTask, now: float) -> bool:
    return now >= task.created + float(task.extra.get("expiresIn", _YEAR))


def _stamp(task: ScriptedTask, key: str, now: float) -> str:
    """A time fixed the first time it is asked for (when a run was seen scheduled, started...)."""
    value: str | None = task.memo.get(key)
    if value is None:  # formatted once: most reads find it
        value = task.memo[key] = iso(now)
    return value


def _dates(task: ScriptedTask) -> tuple[str, str, str]:
    """The task's fixed dates as written (created, deadline, expires), formatted once per task:
    three per task overflow ``iso``'s cache past some 20,000 tasks, and formatting them at
    every read then made the emulator, not the client, what paced large batch rounds."""
    dates: tuple[str, str, str] | None = task.memo.get("dates")
    if dates is None:
        extra = task.extra
        expires = task.created + float(extra.get("expiresIn", _YEAR))
        deadline = min(task.created + float(extra.get("deadlineIn", 24 * _HOUR)), expires)
        dates = task.memo["dates"] = (iso(task.created), iso(deadline), iso(expires))
    return dates


def _reclaimed(task: ScriptedTask, run_id: int, every: float | None, now: float) -> str:
    """A running run's ``takenUntil``: 20 minutes after its latest reclaim, which is now (every
    read) or, with ``every``, the latest multiple of ``every`` seconds since the run started."""
    if every is None:
        return iso(now + 20 * 60)
    started = task.memo.setdefault(f"{run_id}:started_at", now)
    reclaimed = started + (now - started) // every * every
    key = f"{run_id}:reclaimed"
    held = task.memo.get(key)
    if held is None or held[0] != reclaimed:
        held = task.memo[key] = (reclaimed, iso(reclaimed + 20 * 60))
    return held[1]


def _runs(task: ScriptedTask, specs: Sequence[Mapping[str, Any]], now: float) -> list[Any]:
    runs: list[dict[str, Any]] = []
    for run_id, spec in enumerate(specs):
        state = spec["state"]
        previous = specs[run_id - 1] if run_id else None
        if "reasonCreated" in spec:
            created = spec["reasonCreated"]
        elif previous is None:
            created = "scheduled"
        elif previous.get("reasonResolved") in RETRYING:
            created = "retry"
        else:
            created = "rerun"
        scheduled = _dates(task)[0] if run_id == 0 else _stamp(task, f"{run_id}:scheduled", now)
        run: dict[str, Any] = {
            "runId": run_id,
            "state": state,
            "reasonCreated": created,
            "scheduled": scheduled,
        }
        resolved_reason = spec.get("reasonResolved")
        if state == "completed" or state == "failed":
            resolved_reason = resolved_reason or state
        claimed = state != "pending" and (
            state != "exception"
            or f"{run_id}:started" in task.memo
            or resolved_reason not in UNCLAIMED_OK
        )
        if claimed:
            run["reasonResolved"] = resolved_reason
            run["workerGroup"] = spec.get("workerGroup", "emulated-group")
            run["workerId"] = spec.get("workerId", f"worker-{run_id}")
            run["takenUntil"] = (
                _reclaimed(task, run_id, spec.get("reclaimEvery"), now)
                if state == "running"
                else _stamp(task, f"{run_id}:takenUntil", now + 20 * 60)
            )
            run["started"] = _stamp(task, f"{run_id}:started", now)
        elif resolved_reason is not None:
            run["reasonResolved"] = resolved_reason
        if run.get("reasonResolved") is None:
            run.pop("reasonResolved", None)
        if state not in UNRESOLVED:
            run["resolved"] = _stamp(task, f"{run_id}:resolved", now)
        runs.append(run)
    return runs


def task_status(task: ScriptedTask, *, advance: bool = True) -> dict[str, Any]:
    """The task status structure of `task` now (a read counts as a poll when `advance`)."""
    return status_of(task, task.read(advance), time.time())


def status_of(task: ScriptedTask, view: StepView, now: float) -> dict[str, Any]:
    """The task status structure of `task` at the step `view`, at unix time `now`."""
    extra = task.extra
    specs = view.fields.get("runs", [])
    runs = _runs(task, specs, now)
    retries = int(extra.get("retries", 5))
    left = view.fields.get("retriesLeft")
    if left is None:
        left = max(0, retries - sum(1 for r in runs if r["reasonCreated"] == "retry"))
    provisioner = extra.get("provisionerId", "proj-emulated")
    worker_type = extra.get("workerType", "ci")
    _, deadline, expires = _dates(task)
    return {
        "taskId": task.id,
        "provisionerId": provisioner,
        "workerType": worker_type,
        "taskQueueId": f"{provisioner}/{worker_type}",
        "schedulerId": extra.get("schedulerId", "-"),
        "projectId": extra.get("projectId", "none"),
        "taskGroupId": extra.get("taskGroupId", task.id),
        "priority": extra.get("priority", "lowest"),
        "deadline": deadline,
        "expires": expires,
        "retriesLeft": left,
        "state": runs[-1]["state"] if runs else "unscheduled",
        "runs": runs,
    }


def task_definition(task: ScriptedTask, status: Mapping[str, Any]) -> dict[str, Any]:
    """A plausible task definition to go with `status` (for the task-group listing)."""
    extra = task.extra
    return {
        "provisionerId": status["provisionerId"],
        "workerType": status["workerType"],
        "taskQueueId": status["taskQueueId"],
        "schedulerId": status["schedulerId"],
        "projectId": status["projectId"],
        "taskGroupId": status["taskGroupId"],
        "dependencies": [],
        "requires": "all-completed",
        "routes": list(extra.get("routes", [])),
        "priority": status["priority"],
        "retries": int(extra.get("retries", 5)),
        "created": _dates(task)[0],
        "deadline": status["deadline"],
        "expires": status["expires"],
        "scopes": [],
        "payload": {},
        "metadata": {
            "name": extra.get("name", f"emulated task {task.id}"),
            "description": "A scripted task of the reactive-tasks emulator",
            "owner": "emulator@example.com",
            "source": "https://example.com/reactive-tasks/emulator",
        },
        "tags": dict(extra.get("tags", {})),
        "extra": {},
    }


def artifacts_of(task: ScriptedTask, run_id: int) -> list[dict[str, Any]]:
    """The scripted artifacts of run `run_id` (those without a runId belong to every run)."""
    return [
        a for a in task.extra.get("artifacts", [])
        if a.get("runId") is None or a.get("runId") == run_id
    ]


def artifact_entry(task: ScriptedTask, artifact: Mapping[str, Any]) -> dict[str, Any]:
    """An artifact as the queue lists it (and as artifact-created messages carry it)."""
    return {
        "storageType": artifact.get("storageType", "s3"),
        "name": artifact["name"],
        "expires": _dates(task)[2],
        "contentType": artifact.get("contentType", "text/plain"),
    }


def _page(request: Request) -> tuple[int, int] | JSONResponse:
    """(offset, limit) from the query's continuationToken and limit, or a 400 answer."""
    try:
        limit = min(int(request.query_params.get("limit", PAGE_LIMIT)), PAGE_LIMIT)
        token = request.query_params.get("continuationToken")
        offset = int(base64.urlsafe_b64decode(token.encode()).decode()) if token else 0
    except (ValueError, UnicodeDecodeError):
        return _error(400, "Invalid continuationToken or limit", "list")
    if limit < 1 or offset < 0:
        return _error(400, "limit must be positive", "list")
    return offset, limit


def _token(offset: int) -> str:
    return base64.urlsafe_b64encode(str(offset).encode()).decode()


# -- Hawk ------------------------------------------------------------------------------------


class _Caller:
    """Who signed a request: None for anonymous, else the verified clientId."""

    def __init__(self, client_id: str | None) -> None:
        self.client_id = client_id

    def may_read(self, task: ScriptedTask) -> bool:
        owner = task.extra.get("clientId")
        return owner is None or owner == self.client_id


class _Nonces:
    """Hawk nonces already seen (bounded), so that a replayed request is refused."""

    def __init__(self, limit: int = 100_000) -> None:
        self._seen: set[tuple[str, str, str]] = set()
        self._limit = limit

    def __call__(self, sender_id: str, nonce: str, timestamp: str) -> bool:
        key = (sender_id, nonce, str(timestamp))
        if key in self._seen:
            return True
        if len(self._seen) >= self._limit:
            self._seen.clear()
        self._seen.add(key)
        return False


_NONCES = _Nonces()


async def _caller(ctx: ApiContext, request: Request, method: str) -> _Caller | JSONResponse:
    """Verify a Hawk Authorization header against the private tasks' credentials."""
    header = request.headers.get("authorization")
    if not header:
        return _Caller(None)
    try:
        client_id = parse_authorization_header(header)["id"]
    except (mohawk.exc.HawkFail, KeyError):
        return _error(401, "Malformed Hawk Authorization header", method)
    token = next(
        (
            t.extra["accessToken"]
            for t in ctx.tasks.tasks()
            if t.extra.get("clientId") == client_id
        ),
        None,
    )
    if token is None:
        return _error(401, f"Client {client_id} does not exist", method)
    body = await request.body()
    try:
        mohawk.Receiver(
            lambda _: {"id": client_id, "key": token, "algorithm": "sha256"},
            header,
            str(request.url),
            request.method,
            content=body,
            content_type=request.headers.get("content-type", ""),
            accept_untrusted_content=True,
            seen_nonce=_NONCES,
        )
    except mohawk.exc.HawkFail as exc:
        return _error(401, f"Hawk signature does not verify: {type(exc).__name__}", method)
    return _Caller(client_id)


# -- routes ----------------------------------------------------------------------------------


def routes(ctx: ApiContext) -> Sequence[BaseRoute]:
    """The queue routes, served from `ctx`'s scripted tasks."""
    tasks = ctx.tasks

    def find(raw: str, now: float) -> ScriptedTask | None:
        task = tasks.get(raw)
        return None if task is None or _expired(task, now) else task

    async def readable(
        request: Request, method: str, task_id: str
    ) -> ScriptedTask | JSONResponse:
        params = {"taskId": task_id}
        if normalize_id(task_id) is None:
            return _error(400, f"taskId {task_id!r} is not a slugid", method, params)
        caller = await _caller(ctx, request, method)
        if isinstance(caller, JSONResponse):
            return caller
        task = find(task_id, time.time())
        if task is None:
            return _error(404, f"Task `{task_id}` not found", method, params)
        if not caller.may_read(task):
            return _error(
                403,
                f"Client {caller.client_id or 'anonymous'} lacks the scopes "
                f"to call {method} on task `{task_id}`",
                method,
                params,
            )
        return task

    async def status(request: Request) -> Response:
        found = await readable(request, "status", request.path_params["id"])
        if isinstance(found, JSONResponse):
            return found
        return JSONResponse({"status": task_status(found)})

    label_batch = f"{ctx.name} POST {QUEUE}/tasks/status"

    async def statuses(request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw.strip() else {}
            ids = body.get("taskIds", []) if isinstance(body, dict) else None
        except ValueError:
            ids = None
        valid = isinstance(ids, list) and all(isinstance(i, str) for i in ids)
        unique: list[str] = list(dict.fromkeys(ids)) if valid and ids is not None else []
        early = await ctx.guard(request, label_batch, unique)
        if early is not None:
            return early
        if not valid or (isinstance(body, dict) and set(body) - {"taskIds"}):
            return _error(400, "the body must be {\"taskIds\": [<taskId>, ...]}", "statuses")
        page = _page(request)
        if isinstance(page, JSONResponse):
            return page
        caller = await _caller(ctx, request, "statuses")
        if isinstance(caller, JSONResponse):
            return caller
        offset, limit = page
        now = time.time()
        found = [t for t in (find(i, now) for i in unique) if t is not None]
        refused = [t.id for t in found if not caller.may_read(t)]
        if refused:
            return _error(
                403, f"Client lacks the scope queue:status:{refused[0]}", "statuses"
            )
        window = found[offset : offset + limit]
        answer: dict[str, Any] = {
            # one instant for the whole answer, as one database read would give
            "statuses": [
                {"taskId": t.id, "status": status_of(t, t.read(True), now)} for t in window
            ]
        }
        if offset + limit < len(found):
            answer["continuationToken"] = _token(offset + limit)
        return JSONResponse(answer)

    async def list_group(request: Request) -> Response:
        group = request.path_params["id"]
        params = {"taskGroupId": group}
        if normalize_id(group) is None:
            return _error(400, f"taskGroupId {group!r} is not a slugid", "listTaskGroup", params)
        page = _page(request)
        if isinstance(page, JSONResponse):
            return page
        caller = await _caller(ctx, request, "listTaskGroup")
        if isinstance(caller, JSONResponse):
            return caller
        offset, limit = page
        now = time.time()
        members = [
            t for t in tasks.tasks()
            if t.extra.get("taskGroupId", t.id) == group and not _expired(t, now)
        ]
        if not members:
            return _error(404, f"No task-group with taskGroupId `{group}`", "listTaskGroup",
                          params)
        window = [t for t in members[offset : offset + limit] if caller.may_read(t)]
        listed = []
        for task in window:
            task_state = task_status(task, advance=False)
            listed.append({"task": task_definition(task, task_state), "status": task_state})
        answer: dict[str, Any] = {"taskGroupId": group, "tasks": listed}
        if offset + limit < len(members):
            answer["continuationToken"] = _token(offset + limit)
        return JSONResponse(answer)

    def run_of(task: ScriptedTask, raw: str | None, method: str) -> int | JSONResponse:
        runs = task_status(task, advance=False)["runs"]
        params = {"taskId": task.id, "runId": raw}
        if raw is None:
            if not runs:
                return _error(404, f"Task `{task.id}` has no runs", method, params)
            return len(runs) - 1
        if not raw.isdigit() or int(raw) >= len(runs):
            return _error(404, f"Task `{task.id}` has no run {raw}", method, params)
        return int(raw)

    async def list_artifacts(request: Request) -> Response:
        method = "listArtifacts" if "run" in request.path_params else "listLatestArtifacts"
        found = await readable(request, method, request.path_params["id"])
        if isinstance(found, JSONResponse):
            return found
        run_id = run_of(found, request.path_params.get("run"), method)
        if isinstance(run_id, JSONResponse):
            return run_id
        page = _page(request)
        if isinstance(page, JSONResponse):
            return page
        offset, limit = page
        every = artifacts_of(found, run_id)
        answer: dict[str, Any] = {
            "artifacts": [artifact_entry(found, a) for a in every[offset : offset + limit]]
        }
        if offset + limit < len(every):
            answer["continuationToken"] = _token(offset + limit)
        return JSONResponse(answer)

    async def get_artifact(request: Request) -> Response:
        method = "getArtifact" if "run" in request.path_params else "getLatestArtifact"
        found = await readable(request, method, request.path_params["id"])
        if isinstance(found, JSONResponse):
            return found
        run_id = run_of(found, request.path_params.get("run"), method)
        if isinstance(run_id, JSONResponse):
            return run_id
        name = request.path_params["name"]
        artifact = next((a for a in artifacts_of(found, run_id) if a["name"] == name), None)
        params = {"taskId": found.id, "runId": str(run_id), "name": name}
        if artifact is None:
            return _error(404, f"Artifact `{name}` not found", method, params)
        storage = artifact.get("storageType", "s3")
        headers = {"x-taskcluster-artifact-storage-type": storage}
        if storage == "error":
            return JSONResponse(
                {
                    "reason": artifact.get("reason", "file-missing-on-worker"),
                    "message": artifact.get("message", "the worker could not upload it"),
                },
                status_code=424,
                headers=headers,
            )
        root = str(request.url).split(QUEUE, 1)[0]
        url = (
            f"{root}/_storage/{found.id}/{run_id}/{name}"
            f"?X-Amz-Expires=1800&X-Amz-Signature=emulated{uuid.uuid4().hex}"
        )
        headers["location"] = url
        return JSONResponse({"storageType": storage, "url": url}, 303, headers=headers)

    async def storage(request: Request) -> Response:
        task = tasks.get(request.path_params["id"])
        run_raw, name = request.path_params["run"], request.path_params["name"]
        artifact = None
        if task is not None and run_raw.isdigit() and request.query_params.get(
            "X-Amz-Signature", ""
        ).startswith("emulated"):
            artifact = next(
                (a for a in artifacts_of(task, int(run_raw)) if a["name"] == name), None
            )
        if artifact is None:
            return Response("<Error><Code>AccessDenied</Code></Error>", 403,
                            media_type="application/xml")
        return Response(
            artifact.get("content", "").encode(),
            media_type=artifact.get("contentType", "text/plain"),
        )

    return [
        ctx.route(QUEUE + "/task/{id}/status", status),
        Route(QUEUE + "/tasks/status", statuses, methods=["POST"]),
        ctx.route(QUEUE + "/task-group/{id}/list", list_group, task_param=None),
        ctx.route(QUEUE + "/task/{id}/artifacts", list_artifacts),
        ctx.route(QUEUE + "/task/{id}/runs/{run}/artifacts", list_artifacts),
        ctx.route(QUEUE + "/task/{id}/artifacts/{name:path}", get_artifact),
        ctx.route(QUEUE + "/task/{id}/runs/{run}/artifacts/{name:path}", get_artifact),
        ctx.route("/_storage/{id}/{run}/{name:path}", storage),
    ]


API = EmulatedApi(
    name="taskcluster",
    routes=routes,
    new_task_id=new_slugid,
    default_steps=DEFAULT_STEPS,
    api_error=_api_error,
    normalize_id=normalize_id,
    check_step=_check_step,
    check_extra=_check_extra,
)
