"""Aparavi DTC, the observation path: the models read, the id rule, ``GET /task``, the reading.

A task is identified by a token (a UUID) *and* the compute pool (``cpu`` or ``gpu``) the server
ran it on; both travel in the query string of ``/task``, and the pool is extra identity of the
shared poll. The token is a secret: it shows shortened (``display_id``) in errors and logs, and
httpx's request logs never see its value. Both answer shapes are read by ``_envelope``.
"""

from __future__ import annotations

import re
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from reactivex import Observable

from ..._errors import ConfigurationError, InvalidTaskId
from ..._models import TaskEvent, TaskState
from ..._policy import PollPolicy
from ..._redact import shorten
from ..._reply import HttpReply
from .._base import Backend, Reading, TaskRef
from ._envelope import ANY_UUID, answer_data, refusal_text, scrub

__all__ = ["AparaviSource", "AparaviStatus", "AparaviTask", "TaskType"]

TaskType = Literal["cpu", "gpu"]

_UUID = re.compile(
    r"^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$", re.IGNORECASE
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


class AparaviSource(Backend[AparaviStatus]):
    """Watches Aparavi DTC tasks (default ``https://eaas.aparavi.com``); the facade adds actions.

    The API key goes in the ``Authorization`` header as is, or as ``Bearer <key>`` with
    ``bearer=True`` (what Aparavi's Python SDK sends); the service accepts both.
    """

    name = "aparavi"
    secret_query_params = ("token",)
    secret_patterns = (ANY_UUID,)

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

    # -- polling -----------------------------------------------------------------------------

    async def fetch(self, ref: TaskRef) -> AparaviStatus:
        response = await self.session().request(
            "GET", "/task", task_id=ref.task_id, params=params(ref)
        )
        return self.parse(AparaviStatus, answer_data(self, response, ref.task_id), ref.task_id)

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
                message = scrub(self, _error_text(error), ref.task_id)
            elif snapshot.exit_msg:
                message = scrub(self, snapshot.exit_msg, ref.task_id)
        return Reading(state, native, _progress(snapshot), message)

    def change_key(self, snapshot: AparaviStatus, reading: Reading) -> Hashable:
        """A new event when state, native status, progress or message change (no timestamps)."""
        return reading.plain()

    def refusal_reason(self, response: HttpReply) -> str | None:
        return refusal_text(self, response)

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


def params(ref: TaskRef) -> dict[str, str]:
    return {"token": ref.task_id, "type": _pool(ref)}


def _error_text(error: str | dict[str, Any]) -> str:
    if isinstance(error, str):
        return error
    message = error.get("message")
    return message if isinstance(message, str) and message else str(error)


