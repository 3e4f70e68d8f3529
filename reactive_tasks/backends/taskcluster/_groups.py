"""Task groups: a group's listing (definitions and statuses), and watching all its tasks.

With a Pulse feed, a group is also watched as a whole: a hub watch of the group's *ref* whose
snapshot is ``TaskclusterGroupMembers`` (tasks known to belong to it). Polled, that is the
listing's ids (every ``reconcile_interval``); pushed, it is the one task a ``task-defined``
message announces. Either way ``observe_group`` starts watching the tasks it did not know, so a
decision task's children are followed the moment they are created, not once the tasks known
before them have all ended.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

import reactivex
from pydantic import BaseModel, ConfigDict
from reactivex import Observable, abc
from reactivex import operators as ops
from reactivex.disposable import CompositeDisposable, Disposable

from ..._errors import ConfigurationError
from ..._models import TaskEvent
from ..._policy import PollPolicy
from ..._rx import observe_coroutine
from ..._types import TaskRef
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


class TaskclusterGroupMembers(BaseModel):
    """Tasks known to belong to a group: all of them (a listing) or one (a pushed message)."""

    model_config = ConfigDict(frozen=True)

    taskGroupId: str
    taskIds: tuple[str, ...]


#: The extra identity that marks a hub watch of a whole group (its task id is the group's id).
GROUP_IDENTITY = (("watch", "task-group"),)


def group_ref(task_group_id: str) -> TaskRef:
    """The hub ref of a whole group."""
    return TaskRef(task_group_id, GROUP_IDENTITY)


def is_group(ref: TaskRef) -> bool:
    """True for the ref of a whole group."""
    return ref.identity == GROUP_IDENTITY


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


async def group_members(
    backend: TaskclusterSource, task_group_id: str
) -> TaskclusterGroupMembers:
    """A group's listing as the ids of its tasks (the poll of a group ref)."""
    members = await list_task_group(backend, task_group_id)
    ids = tuple(dict.fromkeys(m.status.taskId for m in members))
    return TaskclusterGroupMembers(taskGroupId=task_group_id, taskIds=ids)


def observe_group(
    backend: TaskclusterSource, task_group_id: str, policy: PollPolicy | None, pushed: bool
) -> Observable[TaskEvent[TaskclusterStatus]]:
    """Events of every task of a group, listed again whenever all known ones are terminal."""
    group = backend._check_slugid(task_group_id, "task-group")
    if policy is not None and not isinstance(policy, PollPolicy):
        raise ConfigurationError("policy must be a PollPolicy")
    if pushed:
        return _observe_group_pushed(backend, group, policy or backend.policy)

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


def _observe_group_pushed(
    backend: TaskclusterSource, group: str, policy: PollPolicy
) -> Observable[TaskEvent[TaskclusterStatus]]:
    """``observe_group`` beside a push feed: members come from the group's own watch (listing,
    then ``task-defined`` messages); once every known member is terminal, one more listing
    decides whether the stream completes."""
    # The group's listing is a reconciliation: polled at reconcile_interval, feed or not.
    slow = max(policy.interval, policy.reconcile_interval)
    group_policy = dataclasses.replace(
        policy, interval=slow, max_interval=max(slow, policy.max_interval)
    )

    def subscribe(
        observer: abc.ObserverBase[TaskEvent[TaskclusterStatus]],
        scheduler: abc.SchedulerBase | None = None,
    ) -> abc.DisposableBase:
        known: set[str] = set()
        subs = CompositeDisposable()
        state = {"running": 0, "done": False}

        def finish(error: Exception | None = None) -> None:
            if state["done"]:
                return
            state["done"] = True
            subs.dispose()
            if error is None:
                observer.on_completed()
            else:
                observer.on_error(error)

        def forward(event: TaskEvent[TaskclusterStatus]) -> None:
            if not state["done"]:
                observer.on_next(event)

        def add(ids: tuple[str, ...]) -> None:
            for task_id in ids:
                if state["done"] or task_id in known:
                    continue
                known.add(task_id)
                state["running"] += 1
                subs.add(backend.observe(task_id, policy=policy).subscribe(
                    on_next=forward, on_error=finish, on_completed=member_done
                ))

        def member_done() -> None:
            state["running"] -= 1
            if state["running"] == 0 and not state["done"]:
                subs.add(observe_coroutine(lambda: group_members(backend, group)).subscribe(
                    on_next=settle, on_error=finish
                ))

        def settle(listing: TaskclusterGroupMembers) -> None:
            add(listing.taskIds)
            if state["running"] == 0:  # nothing new, nothing arrived meanwhile by push
                finish()

        def on_group(event: TaskEvent[TaskclusterGroupMembers]) -> None:
            add(event.snapshot.taskIds)

        watch: Observable[TaskEvent[TaskclusterGroupMembers]] = backend._observe(
            group_ref(group), group_policy
        )  # type: ignore[assignment]
        subs.add(watch.subscribe(on_next=on_group, on_error=finish))

        def dispose() -> None:
            state["done"] = True
            subs.dispose()

        return Disposable(dispose)

    return Observable(subscribe)
