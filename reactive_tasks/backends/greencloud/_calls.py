"""GreenCloud's calls outside an observation: start a task, read its record and its result."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from ..._errors import InvalidTaskId, TaskNotFound
from ._source import GreenCloudRecord, GreenCloudSource, object_id

__all__ = ["record", "result", "submit"]


class _TaskCreated(BaseModel):
    id: str


async def submit(
    backend: GreenCloudSource,
    function_id: str,
    body: Any = None,
    params: Mapping[str, str | int | float | bool] | None = None,
) -> str:
    """Start a task of ``function_id`` (``params`` and ``body`` go to the function); its id.

    Not retried: a create is not idempotent, so a transient fault raises
    ``BackendUnavailable`` and the caller decides.
    """
    function = object_id(function_id, "function id")
    response = await backend.session().request(
        "POST", f"/v1/task/{function}", params=_query(params), json=body, what="POST"
    )
    if response.status_code == 404:
        raise TaskNotFound(f"HTTP 404: no function {function}", backend=backend.name)
    if response.status_code not in (200, 201):
        raise backend.unexpected(response)
    created = backend.parse(_TaskCreated, response.content)
    try:
        return backend.validate_task_id(created.id)
    except InvalidTaskId:
        raise backend.protocol_error("the new task's id is not an ObjectId") from None


async def record(backend: GreenCloudSource, task_id: str) -> GreenCloudRecord:
    """The task's record (``GET /v1/task/<taskId>``) as it is now."""
    canonical = backend.validate_task_id(task_id)
    response = await backend.session().request(
        "GET", f"/v1/task/{canonical}", task_id=canonical
    )
    if response.status_code == 404:
        raise TaskNotFound("HTTP 404: no such task", backend=backend.name, task_id=canonical)
    if response.status_code != 200:
        raise backend.unexpected(response, canonical)
    return backend.parse(GreenCloudRecord, response.content, canonical)


async def result(backend: GreenCloudSource, task_id: str) -> Any:
    """What the task's function returned: decoded JSON when it is JSON, else text."""
    canonical = backend.validate_task_id(task_id)
    response = await backend.session().request(
        "GET", f"/v1/task/{canonical}/result", task_id=canonical
    )
    if response.status_code == 404:
        raise TaskNotFound(
            "HTTP 404: no result (no such task, or it has not finished)",
            backend=backend.name,
            task_id=canonical,
        )
    if response.status_code != 200:
        raise backend.unexpected(response, canonical)
    media = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        try:
            return response.json()
        except ValueError:
            raise backend.protocol_error("the JSON result does not parse", canonical) from None
    return response.text


def _query(params: Mapping[str, str | int | float | bool] | None) -> dict[str, str] | None:
    """Query parameters as text; booleans the way JSON spells them (``true``/``false``)."""
    if not params:
        return None
    out: dict[str, str] = {}
    for key, value in params.items():
        out[str(key)] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return out
