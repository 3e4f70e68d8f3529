"""Task groups: a group's listing (definitions and statuses), and watching all its tasks."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import reactivex
from pydantic import BaseModel, ConfigDict
from reactivex import Observable
from reactivex import operators as ops

from ..._errors import ConfigurationError
from ..._models import TaskEvent
from ..._policy import PollPolicy
from ..._rx import observe_coroutine
from ._listing import Page, pages
from ._source import TaskclusterSource, TaskclusterStatus


class TaskclusterTaskMetadata(BaseModel):
    """A task definition's human-readable ``metadata``."""

    model_config = ConfigDict(frozen=True, extra="allow")

    name: str
    description: str
    owner: str
    source: str


class TaskclusterTaskDefinition(BaseModel):
    """A task definition as the queue returns it (``payload`` and ``extra`` left as JSON)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    provisionerId: str
    workerType: str
    taskQueueId: str
    schedulerId: str
    projectId: str | None = None
    taskGroupId: str
    dependencies: tuple[str, ...]
    requires: str
    routes: tuple[str, ...]
    priority: str
    retries: int
    created: datetime
    deadline: datetime
    expires: datetime | None = None
    scopes: tuple[str, ...]
    payload: dict[str, Any]
    metadata: TaskclusterTaskMetadata
    tags: dict[str, str]
    extra: dict[str, Any]


class TaskclusterGroupMember(BaseModel):
    """One entry of a task-group listing: the task's definition and its status."""

    model_config = ConfigDict(frozen=True, extra="allow")

    task: TaskclusterTaskDefinition
    status: TaskclusterStatus


class _GroupPage(Page):
    taskGroupId: str
    tasks: list[TaskclusterGroupMember]


async def list_task_group(
    backend: TaskclusterSource, task_group_id: str
) -> list[TaskclusterGroupMember]:
    """Every task of a group with its definition and status (all pages)."""
    group = backend._check_slugid(task_group_id, "task-group")
    members: list[TaskclusterGroupMember] = []
    url = f"{backend._queue}/task-group/{group}/list"
    async for page in pages(backend, url, group, _GroupPage, "task group"):
        members.extend(page.tasks)
    return members


def observe_group(
    backend: TaskclusterSource, task_group_id: str, policy: PollPolicy | None
) -> Observable[TaskEvent[TaskclusterStatus]]:
    """Events of every task of a group, listed again whenever all known ones are terminal."""
    group = backend._check_slugid(task_group_id, "task-group")
    if policy is not None and not isinstance(policy, PollPolicy):
        raise ConfigurationError("policy must be a PollPolicy")

    def wave(known: frozenset[str]) -> Observable[TaskEvent[TaskclusterStatus]]:
        def watch(
            members: list[TaskclusterGroupMember],
        ) -> Observable[TaskEvent[TaskclusterStatus]]:
            new = [i for i in dict.fromkeys(m.status.taskId for m in members) if i not in known]
            if not new:
                return reactivex.empty()
            streams = reactivex.merge(*(backend.observe(i, policy=policy) for i in new))
            return reactivex.concat(streams, reactivex.defer(lambda _: wave(known.union(new))))

        listing: Observable[list[TaskclusterGroupMember]] = observe_coroutine(
            lambda: list_task_group(backend, group)
        )
        return listing.pipe(ops.flat_map(watch))

    return wave(frozenset())
