"""CloudCoin Coin Manager: the local wallet REST API's task endpoint (``GET /api/v1/task/{id}``).

Pure translation over the session: the models it reads, the id rule, the request, the reading.

Every asynchronous wallet call returns a task GUID; this backend polls it. The API answers HTTP
200 even for errors, with an envelope ``{"status": "error", "payload": {"code", "message"}}``.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .._errors import ConfigurationError, InvalidTaskId, TaskNotFound, TransientFault
from .._models import TaskState
from .._policy import PollPolicy
from ._base import Backend, Reading, TaskRef

__all__ = ["CloudCoinBackend", "CloudCoinTask"]

_UUID4 = re.compile(
    r"^[0-9a-f]{8}-?[0-9a-f]{4}-?4[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}$", re.IGNORECASE
)
_STATES = {
    "running": TaskState.RUNNING,
    "completed": TaskState.COMPLETED,
    "error": TaskState.FAILED,
}
TASK_DOES_NOT_EXIST = 4105


class CloudCoinTask(BaseModel):
    """The ``payload`` of a task answer, as documented for the Coin Manager."""

    model_config = ConfigDict(frozen=True, extra="allow")

    id: str
    status: str
    progress: float = Field(default=0, ge=0, le=100)
    started: int | None = None
    finished: int | None = None
    message: str | None = None
    data: Any = None


class CloudCoinApiError(BaseModel):
    """The ``payload`` of an error envelope."""

    code: int
    message: str = ""
    details: Any = None


class _Envelope(BaseModel):
    status: Literal["success", "error"]
    payload: Any


class CloudCoinBackend(Backend[CloudCoinTask]):
    """Watches tasks of a CloudCoin Coin Manager wallet (default ``http://localhost:8004``).

    ``route`` is the task path with an ``{id}`` placeholder: the documented
    ``/api/v1/task/{id}`` or the Coin Manager's alias ``/api/v1/tasks/{id}``.
    """

    name = "cloudcoin"

    def __init__(
        self,
        base_url: str = "http://localhost:8004",
        *,
        route: str = "/api/v1/task/{id}",
        policy: PollPolicy | None = None,
        **options: Any,
    ) -> None:
        super().__init__(base_url, policy=policy, **options)
        if "{id}" not in route:
            raise ConfigurationError("route must contain an {id} placeholder")
        self.route = route

    def validate_task_id(self, task_id: str) -> str:
        if not isinstance(task_id, str) or not _UUID4.fullmatch(task_id):
            raise InvalidTaskId(f"a CloudCoin task id is a UUID v4 GUID, got {task_id!r}")
        hexits = task_id.replace("-", "").lower()
        return f"{hexits[:8]}-{hexits[8:12]}-{hexits[12:16]}-{hexits[16:20]}-{hexits[20:]}"

    async def fetch(self, ref: TaskRef) -> CloudCoinTask:
        path = self.route.format(id=ref.task_id)
        response = await self.session().request("GET", path, task_id=ref.task_id)
        return self.read_answer(response.status_code, response.content, path, ref)

    def read_answer(self, status: int, content: bytes, path: str, ref: TaskRef) -> CloudCoinTask:
        """One task answer as a snapshot, or the typed error it stands for."""
        if status == 404:
            try:
                _Envelope.model_validate_json(content)
            except ValueError:
                raise self.wrong_url(path, ref.task_id) from None
            raise TaskNotFound("HTTP 404: no such task", backend=self.name, task_id=ref.task_id)
        if status != 200:
            raise self.protocol_error(f"unexpected HTTP {status}", ref.task_id)
        envelope = self.parse(_Envelope, content, ref.task_id)
        if envelope.status == "error":
            self._raise_api_error(self.parse(CloudCoinApiError, envelope.payload, ref.task_id), ref)
        task = self.parse(CloudCoinTask, envelope.payload, ref.task_id)
        if task.id.lower() != ref.task_id:
            raise self.protocol_error(f"the answer is about task {task.id!r}", ref.task_id)
        return task

    def _raise_api_error(self, error: CloudCoinApiError, ref: TaskRef) -> None:
        text = f"error {error.code}: {error.message or 'no message'}"
        if error.code == TASK_DOES_NOT_EXIST:
            raise TaskNotFound(text, backend=self.name, task_id=ref.task_id)
        if 5000 <= error.code < 6000:
            raise TransientFault(f"{self.name} {text}")
        raise self.protocol_error(text, ref.task_id)

    def interpret(self, snapshot: CloudCoinTask, ref: TaskRef) -> Reading:
        state = _STATES.get(snapshot.status.lower())
        if state is None:
            raise self.protocol_error(f"unknown task status {snapshot.status!r}", ref.task_id)
        return Reading(state, snapshot.status, float(snapshot.progress), snapshot.message)
