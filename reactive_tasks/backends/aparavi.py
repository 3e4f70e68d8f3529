"""Aparavi Data Toolchain (DTC): start a pipeline task, watch it, cancel it.

A task is identified by a token (a UUID) *and* the compute pool (``cpu`` or ``gpu``) the server
ran it on; both travel in the query string of ``/task``. The token is a secret: it shows
shortened in errors and logs, and httpx's request logs never see its value. Two answer shapes
are read: the SDK's envelope ``{"status": "OK", "data": ...}`` or ``{"status": "Error", "error":
{...}}``, and the one the API documentation shows, ``{"data": {"id", "status", "progress",
"files_processed", "total_files", "error", ...}, "message"}`` with failures as ``{"error":
"Task not found", "message": ...}``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel
from reactivex import Observable

from .._errors import (
    AuthenticationError,
    ConfigurationError,
    InvalidTaskId,
    TaskNotFound,
    TransientFault,
)
from .._models import TaskEvent, TaskState
from .._policy import PollPolicy
from .._redact import shorten
from ._base import Backend, Reading, TaskRef

__all__ = ["AparaviApiError", "AparaviBackend", "AparaviStatus", "AparaviTask", "TaskType"]

TaskType = Literal["cpu", "gpu"]

_TYPES: frozenset[str] = frozenset({"cpu", "gpu"})
_UUID = re.compile(
    r"^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$", re.IGNORECASE
)
_ANY_UUID = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE
)
_STATES = {
    "created": TaskState.PENDING,
    "running": TaskState.RUNNING,
    "paused": TaskState.PAUSED,
    "completed": TaskState.COMPLETED,  # only with ``completed: true``; see interpret
    "done": TaskState.COMPLETED,
    "failed": TaskState.FAILED,
    "error": TaskState.FAILED,
    "cancelled": TaskState.CANCELLED,
    "canceled": TaskState.CANCELLED,
}
_MAX_MESSAGE = 300


@dataclass(frozen=True, slots=True)
class AparaviTask:
    """What identifies one Aparavi task: its token and the compute pool that runs it.

    The token is a secret, so the repr shows it shortened.
    """

    token: str
    type: TaskType

    def __repr__(self) -> str:
        return f"AparaviTask(token={shorten(self.token)!r}, type={self.type!r})"

    __str__ = __repr__


class AparaviApiError(BaseModel):
    """The ``error`` object of an ``{"status": "Error"}`` envelope."""

    model_config = ConfigDict(frozen=True, extra="allow")

    message: str = ""
    code: int | str | None = None
    details: Any = None


class AparaviStatus(BaseModel):
    """The ``data`` of ``GET /task`` (and of ``DELETE /task``): one task's status and counters.

    Fields use Python names; the API's camelCase names are their aliases. ``progress``,
    ``files_processed``, ``total_files`` and ``error`` come with the documented shape only.
    """

    model_config = ConfigDict(
        frozen=True, extra="allow", alias_generator=to_camel, populate_by_name=True
    )

    status: str
    completed: bool = False
    start_time: float = 0
    end_time: float = 0
    warnings: list[str | dict[str, Any]] = Field(default_factory=list)
    errors: list[str | dict[str, Any]] = Field(default_factory=list)
    current_object: str | None = None
    current_size: int = 0
    total_size: int = 0
    total_count: int = 0
    completed_size: int = 0
    completed_count: int = 0
    failed_size: int = 0
    failed_count: int = 0
    exit_code: int = 0
    exit_msg: str = ""
    notes: list[str] = Field(default_factory=list)
    trace: list[str] = Field(default_factory=list)
    metrics: dict[str, Any] = Field(default_factory=dict)
    progress: float | None = None
    files_processed: int | None = None
    total_files: int | None = None
    error: str | dict[str, Any] | None = None


class _Envelope(BaseModel):
    status: Literal["OK", "Error"]
    data: Any = None
    error: AparaviApiError | None = None
    metrics: dict[str, Any] | None = None


class _DocumentedEnvelope(BaseModel):
    """The documented shape: ``{"data": {...}, "message"}`` or ``{"error": "...", "message"}``."""

    data: Any = None
    error: str | None = None
    message: str | None = None


class _ValidationDetail(BaseModel):
    """A FastAPI-style 422 body: ``{"detail": [{"loc", "msg", "type"}]}``."""

    detail: list[dict[str, Any]]


class _Started(BaseModel):
    model_config = ConfigDict(extra="allow")

    token: str
    type: str


class AparaviBackend(Backend[AparaviStatus]):
    """Starts, watches and cancels Aparavi DTC tasks (default ``https://eaas.aparavi.com``).

    The API key goes in the ``Authorization`` header as is, or as ``Bearer <key>`` with
    ``bearer=True`` (what Aparavi's Python SDK sends); the service accepts both.
    """

    name = "aparavi"
    secret_query_params = ("token",)
    secret_patterns = (_ANY_UUID,)

    def __init__(
        self,
        base_url: str = "https://eaas.aparavi.com",
        *,
        api_key: str,
        bearer: bool = False,
        policy: PollPolicy | None = None,
        **options: Any,
    ) -> None:
        if not isinstance(api_key, str) or not api_key.strip():
            raise ConfigurationError("AparaviBackend needs a non-empty api_key")
        self._api_key = api_key.strip()
        auth = f"Bearer {self._api_key}" if bearer else self._api_key
        super().__init__(base_url, policy=policy, headers={"Authorization": auth}, **options)

    # -- identity ----------------------------------------------------------------------------

    def validate_task_id(self, task_id: str) -> str:
        if not isinstance(task_id, str) or not _UUID.fullmatch(task_id):
            shown = shorten(task_id) if isinstance(task_id, str) else type(task_id).__name__
            raise InvalidTaskId(f"an Aparavi task token is a UUID, got {shown!r}")
        hexits = task_id.replace("-", "").lower()
        return f"{hexits[:8]}-{hexits[8:12]}-{hexits[12:16]}-{hexits[16:20]}-{hexits[20:]}"

    def display_id(self, task_id: str) -> str:
        return shorten(task_id)

    def reference(self, token: str, task_type: str) -> AparaviTask:
        """A validated, canonical ``AparaviTask`` for a token and a compute pool."""
        ref = self._ref(token, task_type)
        return AparaviTask(ref.task_id, _pool(ref))

    def _ref(self, task: str | AparaviTask, task_type: str | None) -> TaskRef:
        if isinstance(task, AparaviTask):
            if task_type is not None and _canonical_type(task_type) != task.type:
                raise InvalidTaskId("task_type contradicts the type of the AparaviTask given")
            token, task_type = task.token, task.type
        else:
            token = task
        canonical = self.validate_task_id(token)
        if task_type is None:
            raise InvalidTaskId("an Aparavi task needs its task_type ('cpu' or 'gpu')")
        return self.task_ref(canonical, task_type=_canonical_type(task_type))

    # -- the public API ----------------------------------------------------------------------

    async def start(
        self,
        pipeline: Mapping[str, Any],
        name: str | None = None,
        threads: int | None = None,
    ) -> AparaviTask:
        """Start a task running ``pipeline`` (``PUT /task``); its token and compute pool.

        ``pipeline`` is the pipeline definition, or a whole ``{"pipeline": {...}}`` body. Never
        retried: a transient fault raises ``BackendUnavailable``, and the task may then exist.
        """
        if not isinstance(pipeline, Mapping):
            raise TypeError("pipeline must be a mapping (the pipeline definition)")
        if threads is not None and (
            isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 16
        ):
            raise ValueError("threads must be an integer from 1 to 16")
        body = dict(pipeline) if set(pipeline) == {"pipeline"} else {"pipeline": dict(pipeline)}
        params: dict[str, Any] = {}
        if name is not None:
            params["name"] = name
        if threads is not None:
            params["threads"] = threads
        response = await self._act("PUT", None, params=params, json=body)
        started = self.parse(_Started, self._data(response, None))
        try:
            return self.reference(started.token, started.type)
        except InvalidTaskId as exc:
            raise self.protocol_error(f"the server started a task with {exc}") from None

    def observe(
        self,
        task_id: str | AparaviTask,
        *,
        task_type: str | None = None,
        policy: PollPolicy | None = None,
    ) -> Observable[TaskEvent[AparaviStatus]]:
        """A cold Observable of the task's changes; a bad token or type raises now."""
        return self._observe(self._ref(task_id, task_type), policy)

    async def status(
        self, task_id: str | AparaviTask, *, task_type: str | None = None
    ) -> TaskEvent[AparaviStatus]:
        """One fresh reading of the task, transient faults retried."""
        return await self._status(self._ref(task_id, task_type))

    async def cancel(
        self, task_id: str | AparaviTask, *, task_type: str | None = None
    ) -> AparaviStatus:
        """Tear the task down (``DELETE /task``) and return its final results.

        Sent once: a transient fault raises ``BackendUnavailable``.
        """
        ref = self._ref(task_id, task_type)
        response = await self._act("DELETE", ref.task_id, params=_params(ref))
        return self.parse(AparaviStatus, self._data(response, ref.task_id), ref.task_id)

    # -- polling -----------------------------------------------------------------------------

    async def fetch(self, ref: TaskRef) -> AparaviStatus:
        response = await self.send("GET", "/task", task_id=ref.task_id, params=_params(ref))
        return self.parse(AparaviStatus, self._data(response, ref.task_id), ref.task_id)

    def interpret(self, snapshot: AparaviStatus, ref: TaskRef) -> Reading:
        native = snapshot.status
        state = _STATES.get(native.lower())
        if state is None:
            raise self.protocol_error(f"unknown task status {native!r}", ref.task_id)
        flagged = "completed" in snapshot.model_fields_set  # the documented shape has no flag
        if native.lower() == "completed" and flagged and not snapshot.completed:
            state = TaskState.RUNNING  # still wrapping up: done only once `completed` is true
        message: str | None = None
        if state.terminal:
            error = snapshot.errors[0] if snapshot.errors else snapshot.error
            if error and state is not TaskState.CANCELLED:
                state = TaskState.FAILED
                message = self._scrub(_error_text(error), ref.task_id)
            elif snapshot.exit_msg:
                message = self._scrub(snapshot.exit_msg, ref.task_id)
        return Reading(state, native, _progress(snapshot), message)

    # -- answers -----------------------------------------------------------------------------

    async def _act(
        self, method: str, token: str | None, *, params: Mapping[str, Any], json: Any = None
    ) -> httpx.Response:
        """One request that changes something: sent once, never retried."""
        request = self.send(method, "/task", task_id=token, params=params, json=json)
        return await self.send_once(request, what=f"{method} /task", task_id=token)

    def _data(self, response: httpx.Response, token: str | None) -> Any:
        """The ``data`` of an OK envelope; anything else raises the matching typed error."""
        code = response.status_code
        documented = _documented(response.content)
        if documented is not None:
            return self._documented_data(code, documented, token)
        envelope: _Envelope | None = None
        try:
            envelope = _Envelope.model_validate_json(response.content)
        except ValidationError:
            if code == 200:
                self.parse(_Envelope, response.content, token)  # raises a ProtocolError
        if code == 200 and envelope is not None and envelope.status == "OK":
            if envelope.data is None:
                raise self.protocol_error("an OK answer without data", token)
            return envelope.data
        error = envelope.error if envelope is not None else None
        if envelope is None and code == 422:
            error = _validation_error(response.content)
        if envelope is None and code == 404:
            raise self.wrong_url("/task", token)
        self._raise(code, error, token)

    def _documented_data(self, code: int, answer: _DocumentedEnvelope, token: str | None) -> Any:
        """The ``data`` of the documented shape; its ``error`` text raises the typed error."""
        if code == 200 and answer.error is None:
            if not isinstance(answer.data, dict):
                raise self.protocol_error("an answer without a data object", token)
            return answer.data
        text = answer.error or answer.message or ""
        if answer.error and answer.message:
            text = f"{answer.error} ({answer.message})"
        if (answer.error or "").strip().lower() == "task not found":
            code = 404
        self._raise(code, AparaviApiError(message=text), token)

    def _raise(self, http_code: int, error: AparaviApiError | None, token: str | None) -> NoReturn:
        code = http_code
        if code == 200 and error is not None and isinstance(error.code, int):
            code = error.code  # an Error envelope sent with HTTP 200: trust its own code
        text = self._scrub(error.message, token) if error is not None and error.message else ""
        text = f"HTTP {code}: {text or 'no message'}"
        shown = None if token is None else self.display_id(token)
        if code == 404:
            raise TaskNotFound(text, backend=self.name, task_id=shown)
        if code in (401, 403):
            raise AuthenticationError(text, backend=self.name, task_id=shown)
        if code == 429 or code >= 500:
            raise TransientFault(f"{self.name} {text}")
        raise self.protocol_error(text, token)

    def refusal_reason(self, response: httpx.Response) -> str | None:
        documented = _documented(response.content)
        if documented is not None:
            return self._scrub(documented.error, None) if documented.error else None
        try:
            envelope = _Envelope.model_validate_json(response.content)
        except ValidationError:
            return None
        if envelope.error is None or not envelope.error.message:
            return None
        return self._scrub(envelope.error.message, None)

    def _scrub(self, text: str, token: str | None) -> str:
        """Server text made safe to show: no API key, tokens shortened, length capped."""
        text = text.replace(self._api_key, "***")
        if token:
            text = text.replace(token, shorten(token))
        text = _ANY_UUID.sub(lambda m: shorten(m.group(0)), text)
        return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


def _documented(content: bytes) -> _DocumentedEnvelope | None:
    """The answer read as the documented shape, or None when it is not that shape.

    It is a JSON object without the SDK's ``status`` key, holding ``data`` or an ``error`` text.
    """
    try:
        raw = json.loads(content)
    except ValueError:
        return None
    if not isinstance(raw, dict) or "status" in raw:
        return None
    if "data" not in raw and not isinstance(raw.get("error"), str):
        return None
    try:
        return _DocumentedEnvelope.model_validate(raw)
    except ValidationError:
        return None


def _progress(snapshot: AparaviStatus) -> float | None:
    """Percent done: the documented ``progress``, else completed/total objects or files."""
    if snapshot.progress is not None:
        done = snapshot.progress
    elif snapshot.total_count > 0:
        done = snapshot.completed_count / snapshot.total_count * 100
    elif snapshot.total_files and snapshot.files_processed is not None:
        done = snapshot.files_processed / snapshot.total_files * 100
    else:
        return None
    return min(100.0, max(0.0, done)) if done == done else None  # NaN: no progress


def _canonical_type(task_type: str) -> TaskType:
    # spaces around are forgiven, but a newline or any other character is not ("cpu\n")
    value = task_type.strip(" ").lower() if isinstance(task_type, str) else ""
    if value == "cpu":
        return "cpu"
    if value == "gpu":
        return "gpu"
    raise InvalidTaskId(f"an Aparavi task_type is 'cpu' or 'gpu', got {task_type!r}")


def _pool(ref: TaskRef) -> TaskType:
    return _canonical_type(ref.get("task_type") or "")


def _params(ref: TaskRef) -> dict[str, str]:
    return {"token": ref.task_id, "type": _pool(ref)}


def _error_text(error: str | dict[str, Any]) -> str:
    if isinstance(error, str):
        return error
    message = error.get("message")
    return message if isinstance(message, str) and message else str(error)


def _validation_error(content: bytes) -> AparaviApiError | None:
    try:
        first = _ValidationDetail.model_validate_json(content).detail[:1]
    except ValidationError:
        return None
    if not first:
        return None
    where = ".".join(str(p) for p in first[0].get("loc", []))
    return AparaviApiError(message=f"{where}: {first[0].get('msg', 'invalid')}", code=422)
