"""Aparavi's actions: start a pipeline task (``PUT /task``) and cancel one (``DELETE /task``).

Neither is idempotent: each is sent exactly once through the session, and a transient fault
becomes ``BackendUnavailable`` (the task may then exist, or be cancelled).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from ..._errors import InvalidTaskId
from .._base import TaskRef
from ._envelope import answer_data
from ._source import AparaviSource, AparaviStatus, AparaviTask, params


class _Started(BaseModel):
    model_config = ConfigDict(extra="allow")

    token: str
    type: str


async def start(
    backend: AparaviSource,
    pipeline: Mapping[str, Any],
    name: str | None,
    threads: int | None,
) -> AparaviTask:
    """Start a task running ``pipeline``; its token and compute pool."""
    if not isinstance(pipeline, Mapping):
        raise TypeError("pipeline must be a mapping (the pipeline definition)")
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 16
    ):
        raise ValueError("threads must be an integer from 1 to 16")
    body = dict(pipeline) if set(pipeline) == {"pipeline"} else {"pipeline": dict(pipeline)}
    query: dict[str, Any] = {}
    if name is not None:
        query["name"] = name
    if threads is not None:
        query["threads"] = threads
    response = await backend.session().request(
        "PUT", "/task", params=query, json=body, idempotent=False, what="PUT /task"
    )
    started = backend.parse(_Started, answer_data(backend, response, None))
    try:
        return backend.reference(started.token, started.type)
    except InvalidTaskId as exc:
        raise backend.protocol_error(f"the server started a task with {exc}") from None


async def cancel(backend: AparaviSource, ref: TaskRef) -> AparaviStatus:
    """Tear the task down and return its final results."""
    response = await backend.session().request(
        "DELETE",
        "/task",
        task_id=ref.task_id,
        params=params(ref),
        idempotent=False,
        what="DELETE /task",
    )
    return backend.parse(AparaviStatus, answer_data(backend, response, ref.task_id), ref.task_id)
