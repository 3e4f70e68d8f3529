"""Taskcluster: the queue's task status structure with its runs, task groups and artifacts.

Many tasks are read in one ``POST /api/queue/v1/tasks/status`` per 1,000 ids. Requests are
Hawk-signed (``mohawk``, the ``taskcluster`` extra) when credentials are given; public
deployments need none. The observation path is ``_source``; groups and artifacts sit beside it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Hashable, Sequence
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from reactivex import Observable

from ..._errors import ArtifactError, ArtifactNotFound, ConfigurationError, InvalidArtifactName
from ..._models import TaskEvent, TaskState
from ..._policy import PollPolicy
from ..._types import Feed, Reading, TaskRef
from . import _artifacts, _groups
from ._artifacts import TaskclusterArtifact
from ._auth import HawkAuth as HawkAuth
from ._auth import TaskclusterCredentials
from ._groups import TaskclusterGroupMember, TaskclusterGroupMembers, TaskclusterTaskDefinition
from ._groups import TaskclusterTaskMetadata as TaskclusterTaskMetadata
from ._source import SLUGID_PATTERN as SLUGID_PATTERN
from ._source import RunState as RunState
from ._source import TaskclusterRun, TaskclusterSource, TaskclusterStatus
from ._source import TaskStateName as TaskStateName

if TYPE_CHECKING:
    from ._pulse import PulseConfig

__all__ = [
    "ArtifactError",
    "ArtifactNotFound",
    "InvalidArtifactName",
    "TaskclusterArtifact",
    "TaskclusterBackend",
    "TaskclusterCredentials",
    "TaskclusterGroupMember",
    "TaskclusterRun",
    "TaskclusterStatus",
    "TaskclusterTaskDefinition",
]

class TaskclusterBackend(TaskclusterSource):
    """Watches tasks of a Taskcluster deployment given its root URL (e.g. ``https://tc.example``).

    ``credentials`` (``{"clientId", "accessToken"[, "certificate"]}`` as in the official client)
    sign every queue request with Hawk (``backend.auth``); ``batch=False`` reads each task with
    its own request instead of the batch status endpoint.

    ``pulse_url`` (``amqps://user:password@pulse.example.org:5671/``) adds a push feed: task
    messages from the deployment's Pulse broker reach subscribers at once, and each watched task
    is then polled only every ``PollPolicy.reconcile_interval`` (at ``interval`` again while the
    broker is unreachable). Its queue is named under ``queue/<pulse_namespace>/``, by default
    the URL's user name, as Pulse requires. Needs ``aio-pika`` (the ``taskcluster`` extra).
    """

    def __init__(
        self,
        root_url: str,
        *,
        credentials: Any = None,
        pulse_url: str | None = None,
        pulse_namespace: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(root_url, credentials=credentials, **options)
        self._pulse: PulseConfig | None = None
        if pulse_url is not None:
            try:
                from ._pulse import pulse_config
            except ImportError:
                raise ConfigurationError(
                    "pulse_url needs aio-pika: pip install 'reactive-tasks[taskcluster]'"
                ) from None
            self._pulse = pulse_config(pulse_url, pulse_namespace, self.secrets)
        elif pulse_namespace is not None:
            raise ConfigurationError("pulse_namespace is given without a pulse_url")

    def __repr__(self) -> str:
        text = super().__repr__()
        if self._pulse is None:
            return text
        return f"{text[:-1]}, pulse_url={self._pulse.shown!r})"

    # -- a whole group as one hub watch (observe_group beside a feed) ------------------------

    def fetch_many(self, refs: Sequence[TaskRef]) -> AsyncIterator[tuple[TaskRef, Any]]:
        """Tasks as ``TaskclusterSource`` reads them; a group's ref by listing the group."""
        if not any(map(_groups.is_group, refs)):
            return super().fetch_many(refs)
        return self._fetch_with_groups(refs)

    async def _fetch_with_groups(
        self, refs: Sequence[TaskRef]
    ) -> AsyncIterator[tuple[TaskRef, Any]]:
        tasks = [ref for ref in refs if not _groups.is_group(ref)]
        if tasks:
            async for item in super().fetch_many(tasks):
                yield item
        for ref in refs:
            if _groups.is_group(ref):
                try:
                    yield ref, await _groups.group_members(self, ref.task_id)
                except Exception as exc:  # the hub's policy decides, as for any answer
                    yield ref, exc

    def interpret(self, snapshot: Any, ref: TaskRef) -> Reading:
        if isinstance(snapshot, TaskclusterGroupMembers):
            return Reading(TaskState.RUNNING, "group", None, f"{len(snapshot.taskIds)} tasks")
        return TaskclusterSource.interpret(self, snapshot, ref)

    def change_key(self, snapshot: Any, reading: Reading) -> Hashable:
        if isinstance(snapshot, TaskclusterGroupMembers):
            return snapshot.taskIds
        return TaskclusterSource.change_key(self, snapshot, reading)

    def order_key(self, snapshot: Any, reading: Reading) -> tuple[int, ...]:
        if isinstance(snapshot, TaskclusterGroupMembers):
            return ()  # all equal: a pushed member and a listing never outrank each other
        return TaskclusterSource.order_key(self, snapshot, reading)

    def open_feed(self) -> Feed | None:
        """The Pulse feed of one hub (this backend on one loop), when ``pulse_url`` is set."""
        if self._pulse is None:
            return None
        from ._pulse import PulseFeed

        return PulseFeed(self, self._pulse)

    async def list_task_group(self, task_group_id: str) -> list[TaskclusterGroupMember]:
        """Every task of a group with its definition and status (all pages)."""
        return await _groups.list_task_group(self, task_group_id)

    def observe_group(
        self, task_group_id: str, *, policy: PollPolicy | None = None
    ) -> Observable[TaskEvent[TaskclusterStatus]]:
        """Events of every task of a group, completing once all of them are terminal.

        The group is listed at subscription and its members watched like ``observe`` (so the
        engine polls them together, a batch request per 1,000). Whenever every member known so
        far is terminal, the group is listed again: tasks added meanwhile (a decision task's
        children) are watched in turn, and the stream completes only when a listing finds
        nothing new. With ``pulse_url``, members' changes come by push, and tasks added to the
        group are watched as soon as their ``task-defined`` message arrives.
        """
        return _groups.observe_group(self, task_group_id, policy, pushed=self._pulse is not None)

    async def artifacts(
        self, task_id: str, run_id: int | None = None
    ) -> list[TaskclusterArtifact]:
        """The artifacts of a run (the latest when ``run_id`` is None), all pages."""
        return await _artifacts.list_artifacts(self, task_id, run_id)

    @overload
    async def fetch_artifact(
        self, task_id: str, name: str, run_id: int | None = None, *, dest: None = None
    ) -> bytes: ...

    @overload
    async def fetch_artifact(
        self, task_id: str, name: str, run_id: int | None = None, *, dest: str | PathLike[str]
    ) -> Path: ...

    async def fetch_artifact(
        self,
        task_id: str,
        name: str,
        run_id: int | None = None,
        *,
        dest: str | PathLike[str] | None = None,
    ) -> bytes | Path:
        """An artifact's content: returned as bytes, or streamed into the file ``dest``.

        The queue answers with a redirect to the storage location, which is followed (without
        the Hawk header: the location carries its own signature).
        """
        return await _artifacts.fetch_artifact(self, task_id, name, run_id, dest)
