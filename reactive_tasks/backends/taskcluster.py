"""Taskcluster: the queue's task status structure with its runs, task groups and artifacts.

A task's ``state`` is its latest run's state (``unscheduled`` before any run). When a run ends
in an exception the queue retries (``worker-shutdown``, ``claim-expired``, ``intermittent-task``
while retries are left), it adds the retry run at once, so the task reads ``pending`` again and
the stream goes on; a task is terminal only when its latest run is resolved. Many tasks are read
in one ``POST /api/queue/v1/tasks/status`` per 1,000 ids. Requests are Hawk-signed (``mohawk``,
the ``taskcluster`` extra) when credentials are given; public deployments need none.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from os import PathLike
from pathlib import Path
from typing import Any, Literal, overload
from urllib.parse import quote, urlencode

import httpx
import reactivex
from pydantic import BaseModel, ConfigDict, Field
from reactivex import Observable
from reactivex import operators as ops

from .._errors import (
    ArtifactError,
    ArtifactNotFound,
    AuthenticationError,
    BackendUnavailable,
    ConfigurationError,
    InvalidArtifactName,
    InvalidTaskId,
    ProtocolError,
    TaskNotFound,
)
from .._models import TaskEvent, TaskState
from .._policy import PollPolicy
from .._redact import install_log_filters
from .._rx import observe_coroutine
from ._answers import entries_by_key, next_page
from ._base import Backend, Reading, TaskRef

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

logger = logging.getLogger("reactive_tasks")

SLUGID_PATTERN = r"^[A-Za-z0-9_-]{8}[Q-T][A-Za-z0-9_-][CGKOSWaeimquy26-][A-Za-z0-9_-]{10}[AQgw]$"
_SLUGID = re.compile(SLUGID_PATTERN)
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECTS = 5
_MAX_ARTIFACT_NAME = 1024

RunState = Literal["pending", "running", "completed", "failed", "exception"]
TaskStateName = Literal["unscheduled", "pending", "running", "completed", "failed", "exception"]


# -- the queue's documented shapes -----------------------------------------------------------


class TaskclusterRun(BaseModel):
    """One run of a task; ``runId`` is its index. Reasons are open sets (more may be added)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    runId: int = Field(ge=0)
    state: RunState
    reasonCreated: str
    reasonResolved: str | None = None
    workerGroup: str | None = None
    workerId: str | None = None
    takenUntil: datetime | None = None
    scheduled: datetime
    started: datetime | None = None
    resolved: datetime | None = None


class TaskclusterStatus(BaseModel):
    """The task status structure (``GET .../task/<taskId>/status`` answers ``{"status": ...}``)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    taskId: str = Field(pattern=SLUGID_PATTERN)
    provisionerId: str
    workerType: str
    taskQueueId: str
    schedulerId: str
    projectId: str
    taskGroupId: str = Field(pattern=SLUGID_PATTERN)
    priority: str | None = None
    deadline: datetime
    expires: datetime
    retriesLeft: int = Field(ge=0)
    state: TaskStateName
    runs: tuple[TaskclusterRun, ...]

    @property
    def latest_run(self) -> TaskclusterRun | None:
        """The run the task's ``state`` comes from, or None while unscheduled."""
        return self.runs[-1] if self.runs else None


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


class TaskclusterArtifact(BaseModel):
    """One artifact of a run, as listed by ``.../artifacts``."""

    model_config = ConfigDict(frozen=True, extra="allow")

    storageType: str
    name: str
    expires: datetime
    contentType: str


class _StatusAnswer(BaseModel):
    status: TaskclusterStatus


class _BatchEntry(BaseModel):
    taskId: str
    status: TaskclusterStatus


class _BatchAnswer(BaseModel):
    """The envelope of a batch answer; its entries are read one by one (see ``_answers``)."""

    statuses: list[Any] = []
    continuationToken: str | None = None


class _GroupPage(BaseModel):
    taskGroupId: str
    tasks: list[TaskclusterGroupMember]
    continuationToken: str | None = None


class _ArtifactPage(BaseModel):
    artifacts: list[TaskclusterArtifact]
    continuationToken: str | None = None


class _ErrorBody(BaseModel):
    code: str | None = None
    message: str | None = None
    reason: str | None = None


# -- errors and credentials ------------------------------------------------------------------


@dataclass(frozen=True)
class TaskclusterCredentials:
    """Hawk credentials; the access token never shows in ``repr`` (nor anywhere else)."""

    client_id: str
    access_token: str = field(repr=False)
    certificate: Mapping[str, Any] | None = field(default=None, repr=False)

    @classmethod
    def coerce(cls, value: Any) -> TaskclusterCredentials:
        """Accept these, a mapping like the official client's, or an object with attributes."""
        if isinstance(value, TaskclusterCredentials):
            return value

        def pick(*names: str) -> Any:
            for name in names:
                if isinstance(value, Mapping) and name in value:
                    return value[name]
                if not isinstance(value, Mapping) and hasattr(value, name):
                    return getattr(value, name)
            return None

        client_id = pick("clientId", "client_id")
        token = pick("accessToken", "access_token")
        cert = pick("certificate")
        if not isinstance(client_id, str) or not client_id:
            raise ConfigurationError("Taskcluster credentials need a non-empty clientId")
        if isinstance(token, bytes):
            token = token.decode("utf-8", "replace")
        if not isinstance(token, str) or not token:
            raise ConfigurationError("Taskcluster credentials need a non-empty accessToken")
        if isinstance(cert, bytes):
            cert = cert.decode("utf-8", "replace")
        if isinstance(cert, str):
            try:
                cert = json.loads(cert)
            except ValueError:
                raise ConfigurationError("the credentials' certificate is not JSON") from None
        if cert is not None and not isinstance(cert, Mapping):
            raise ConfigurationError("the credentials' certificate must be a JSON object")
        return cls(client_id, token, cert)

    def hawk_ext(self) -> str | None:
        """Hawk's ``ext`` for temporary credentials: the certificate, base64url-encoded JSON."""
        if not self.certificate:
            return None
        raw = json.dumps({"certificate": dict(self.certificate)}, separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode()


# -- the backend -----------------------------------------------------------------------------


class TaskclusterBackend(Backend[TaskclusterStatus]):
    """Watches tasks of a Taskcluster deployment given its root URL (e.g. ``https://tc.example``).

    ``credentials`` (``{"clientId", "accessToken"[, "certificate"]}`` as in the official client)
    sign every queue request with Hawk; ``batch=False`` reads each task with its own request
    instead of the batch status endpoint.
    """

    name = "taskcluster"
    max_batch = 1000
    #: After a 404/405 from the batch endpoint, read tasks one by one for this many seconds,
    #: then try the batch endpoint again.
    batch_retry_seconds: float = 300.0
    secret_query_params = (
        "bewit", "x-amz-signature", "x-amz-credential", "x-amz-security-token", "sig",
        "signature",
    )

    def __init__(
        self,
        root_url: str,
        *,
        credentials: Any = None,
        batch: bool = True,
        policy: PollPolicy | None = None,
        **options: Any,
    ) -> None:
        super().__init__(root_url, policy=policy, **options)
        self.root_url = self.base_url
        self._queue = self.base_url + "/api/queue/v1"
        self._credentials = None if credentials is None else TaskclusterCredentials.coerce(
            credentials
        )
        if self._credentials is not None:
            try:
                import mohawk  # noqa: F401
            except ImportError:
                raise ConfigurationError(
                    "Hawk credentials need mohawk: pip install 'reactive-tasks[taskcluster]'"
                ) from None
            install_log_filters()  # mohawk logs Hawk headers at DEBUG
            self.secrets.add(self._credentials.access_token)
            if self._credentials.certificate:
                self.secrets.add(str(self._credentials.certificate.get("signature") or ""))
        self._batch = bool(batch)
        self._batch_retry_at: float | None = None  # set while the endpoint seemed missing

    def __repr__(self) -> str:
        who = None if self._credentials is None else self._credentials.client_id
        return f"TaskclusterBackend(root_url={self.root_url!r}, client_id={who!r})"

    @property
    def uses_batch_endpoint(self) -> bool:
        """False when batching is off, or while the deployment seems to lack the endpoint."""
        return self._batch and (
            self._batch_retry_at is None or time.monotonic() >= self._batch_retry_at
        )

    # -- ids ---------------------------------------------------------------------------------

    def validate_task_id(self, task_id: str) -> str:
        if not isinstance(task_id, str) or not _SLUGID.fullmatch(task_id):
            raise InvalidTaskId(f"a Taskcluster task id is a v4 slugid, got {task_id!r}")
        return task_id

    def _group_id(self, task_group_id: str) -> str:
        if not isinstance(task_group_id, str) or not _SLUGID.fullmatch(task_group_id):
            raise InvalidTaskId(
                f"a Taskcluster task-group id is a v4 slugid, got {task_group_id!r}"
            )
        return task_group_id

    # -- HTTP --------------------------------------------------------------------------------

    async def _signed_send(
        self,
        method: str,
        url: str,
        *,
        task_id: str | None = None,
        json_body: Any = None,
        stream: bool = False,
    ) -> httpx.Response:
        """``send`` with a Hawk Authorization header when the backend has credentials."""
        headers = None
        if self._credentials is not None:
            headers = self._hawk(method, url, json_body)
        return await self.send(
            method, url, task_id=task_id, json=json_body, headers=headers, stream=stream
        )

    def _hawk(self, method: str, url: str, json_body: Any) -> dict[str, str]:
        import mohawk

        assert self._credentials is not None
        content, content_type = b"", ""
        if json_body is not None:
            # the very bytes and content type httpx will send, so that the payload hash matches
            built = httpx.Request(method, url, json=json_body)
            content, content_type = built.content, built.headers["content-type"]
        sender = mohawk.Sender(
            {
                "id": self._credentials.client_id,
                "key": self._credentials.access_token,
                "algorithm": "sha256",
            },
            url,
            method,
            content=content,
            content_type=content_type,
            ext=self._credentials.hawk_ext(),
        )
        return {"Authorization": sender.request_header}

    async def _one_off(self, method: str, url: str, task_id: str) -> httpx.Response:
        """A read outside polling (a listing, an artifact): retried as a poll would be."""
        return await self.send_retrying(
            lambda: self._signed_send(method, url, task_id=task_id), task_id=task_id
        )

    @staticmethod
    def _api_shaped(response: httpx.Response) -> bool:
        """True for the queue's own error body (``{"code": "ResourceNotFound", ...}``)."""
        try:
            return bool(_ErrorBody.model_validate_json(response.content).code)
        except ValueError:
            return False

    def _explain(self, response: httpx.Response) -> str:
        """``HTTP 404 ResourceNotFound: <first line of the message>`` from an error answer."""
        text = f"HTTP {response.status_code}"
        try:
            body = _ErrorBody.model_validate_json(response.content)
        except ValueError:
            return text
        if body.code:
            text += f" {body.code}"
        detail = body.message or body.reason
        if detail:
            first = detail.strip().splitlines()[0] if detail.strip() else ""
            text += f": {first[:200]}" if first else ""
        return text

    # -- polling -----------------------------------------------------------------------------

    async def fetch(self, ref: TaskRef) -> TaskclusterStatus:
        path = f"{self._queue}/task/{ref.task_id}/status"
        response = await self._signed_send("GET", path, task_id=ref.task_id)
        code = response.status_code
        if code == 404 and not self._api_shaped(response):
            raise self.wrong_url(path, ref.task_id)
        if code in (404, 410):
            raise TaskNotFound(self._explain(response), backend=self.name, task_id=ref.task_id)
        if code != 200:
            raise self.protocol_error(f"unexpected {self._explain(response)}", ref.task_id)
        status = self.parse(_StatusAnswer, response.content, ref.task_id).status
        if status.taskId != ref.task_id:
            raise self.protocol_error(f"the answer is about task {status.taskId!r}", ref.task_id)
        return status

    async def fetch_many(
        self, refs: Sequence[TaskRef]
    ) -> AsyncIterator[tuple[TaskRef, TaskclusterStatus | BaseException]]:
        """One batch request per 1,000 tasks; tasks it leaves out are read one by one."""
        if len(refs) <= 1 or not self.uses_batch_endpoint:
            async for item in super().fetch_many(refs):
                yield item
            return
        size = self.max_batch or len(refs)
        for start in range(0, len(refs), size):
            chunk = refs[start : start + size]
            # checked per chunk: after a 404 on one, the next ones are read one by one too
            reader = (
                self._fetch_chunk(chunk) if self.uses_batch_endpoint else super().fetch_many(chunk)
            )
            async for item in reader:
                yield item

    async def _fetch_chunk(
        self, refs: Sequence[TaskRef]
    ) -> AsyncIterator[tuple[TaskRef, TaskclusterStatus | BaseException]]:
        pending = {ref.task_id: ref for ref in refs}
        body = {"taskIds": list(pending)}
        token: str | None = None
        tokens: set[str] = set()
        while pending:  # pages of one answer, not polls
            url = f"{self._queue}/tasks/status"
            if token:
                url += "?" + urlencode({"continuationToken": token})
            try:
                response = await self._signed_send("POST", url, json_body=body)
            except AuthenticationError:
                break  # refused as a whole (one private task): each task gets its own answer
            if response.status_code in (404, 405):
                self._batch_retry_at = time.monotonic() + self.batch_retry_seconds
                logger.info(
                    "%s: %s has no batch status endpoint (HTTP %d); reading tasks one by one "
                    "for %g s before trying it again",
                    self.name, self.root_url, response.status_code, self.batch_retry_seconds,
                )
                break
            self._batch_retry_at = None
            if response.status_code != 200:
                raise self.protocol_error(f"batch status: {self._explain(response)}")
            page = self.parse(_BatchAnswer, response.content)
            entries = entries_by_key(
                self,
                page.statuses,
                _BatchEntry,
                key=lambda raw: raw["taskId"],
                wanted={task_id: task_id for task_id in pending},
                what="the batch status answer",
            )
            for task_id, entry in entries.items():
                ref = pending.pop(str(task_id))
                if isinstance(entry, BaseException):
                    yield ref, entry
                elif entry.status.taskId != entry.taskId:
                    yield ref, self.protocol_error(
                        f"the batch entry holds the status of {entry.status.taskId!r}",
                        ref.task_id,
                    )
                else:
                    yield ref, entry.status
            if not pending:
                break
            try:
                token = next_page(self, page.continuationToken, tokens, "batch status")
            except ProtocolError as exc:  # a runaway server: every task still waiting fails
                for ref in pending.values():
                    yield ref, self.protocol_error(exc.message, ref.task_id)
                return
            if token is None:
                break
        if pending:  # left out: unknown (a 404 tells), or the batch could not be used
            async for item in super().fetch_many(list(pending.values())):
                yield item

    def interpret(self, snapshot: TaskclusterStatus, ref: TaskRef) -> Reading:
        run = snapshot.latest_run
        native = snapshot.state
        if run is None:
            return Reading(TaskState.PENDING, native, None, "unscheduled")
        if run.state != native:
            raise self.protocol_error(
                f"task state {native!r} differs from its latest run's {run.state!r}",
                ref.task_id,
            )
        message = f"run {run.runId} {run.state}"
        if run.runId > 0:
            message += f" ({run.reasonCreated})"
        if native == "exception":
            reason = run.reasonResolved or "unknown reason"
            message += f": {reason}"
            if reason == "deadline-exceeded":
                state = TaskState.TIMED_OUT
            elif reason == "canceled":
                state = TaskState.CANCELLED
            else:
                state = TaskState.FAILED
        else:
            state = _STATES[native]
        return Reading(state, native, None, message)

    def change_key(self, snapshot: TaskclusterStatus, reading: Reading) -> Hashable:
        """The reading plus every run's identity and outcome: a new run is a change."""
        runs = tuple(
            (r.runId, r.state, r.reasonCreated, r.reasonResolved, r.workerGroup, r.workerId)
            for r in snapshot.runs
        )
        return reading, runs

    # -- task groups -------------------------------------------------------------------------

    async def list_task_group(self, task_group_id: str) -> list[TaskclusterGroupMember]:
        """Every task of a group with its definition and status (all pages)."""
        group = self._group_id(task_group_id)
        members: list[TaskclusterGroupMember] = []
        base = f"{self._queue}/task-group/{group}/list"
        async for page in self._pages(base, group, _GroupPage, "task group"):
            members.extend(page.tasks)
        return members

    def observe_group(
        self, task_group_id: str, *, policy: PollPolicy | None = None
    ) -> Observable[TaskEvent[TaskclusterStatus]]:
        """Events of every task of a group, completing once all of them are terminal.

        The group is listed at subscription and its members watched like ``observe`` (so the
        engine polls them together, a batch request per 1,000). Whenever every member known so
        far is terminal, the group is listed again: tasks added meanwhile (a decision task's
        children) are watched in turn, and the stream completes only when a listing finds
        nothing new.
        """
        group = self._group_id(task_group_id)
        if policy is not None and not isinstance(policy, PollPolicy):
            raise ConfigurationError("policy must be a PollPolicy")

        def wave(known: frozenset[str]) -> Observable[TaskEvent[TaskclusterStatus]]:
            def watch(
                members: list[TaskclusterGroupMember],
            ) -> Observable[TaskEvent[TaskclusterStatus]]:
                new = [i for i in dict.fromkeys(m.status.taskId for m in members) if i not in known]
                if not new:
                    return reactivex.empty()
                streams = reactivex.merge(*(self.observe(i, policy=policy) for i in new))
                return reactivex.concat(
                    streams, reactivex.defer(lambda _: wave(known.union(new)))
                )

            listing: Observable[list[TaskclusterGroupMember]] = observe_coroutine(
                lambda: self.list_task_group(group)
            )
            return listing.pipe(ops.flat_map(watch))

        return wave(frozenset())

    # -- artifacts ---------------------------------------------------------------------------

    async def artifacts(
        self, task_id: str, run_id: int | None = None
    ) -> list[TaskclusterArtifact]:
        """The artifacts of a run (the latest when ``run_id`` is None), all pages."""
        tid = self.validate_task_id(task_id)
        base = f"{self._queue}/task/{tid}{_run_path(run_id)}/artifacts"
        found: list[TaskclusterArtifact] = []
        async for page in self._pages(base, tid, _ArtifactPage, "task or run"):
            found.extend(page.artifacts)
        return found

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
        tid = self.validate_task_id(task_id)
        url = f"{self._queue}/task/{tid}{_run_path(run_id)}/artifacts/{_artifact_path(name)}"
        response = await self._one_off("GET", url, tid)
        for _ in range(_MAX_REDIRECTS):
            if response.status_code not in _REDIRECTS:
                break
            location = response.headers.get("location")
            if not location:
                raise self.protocol_error("a redirect without a Location", tid)
            url = str(httpx.URL(url).join(location))
            response = await self._unsigned(url, tid, stream=dest is not None)
        else:
            raise self.protocol_error("too many redirects fetching the artifact", tid)
        if response.status_code != 200:
            await response.aread()
            await response.aclose()
            self._artifact_failure(response, tid, name)
        if dest is None:
            return response.content
        target = Path(dest)
        try:
            with target.open("wb") as out:
                async for chunk in response.aiter_bytes():
                    out.write(chunk)
        except httpx.TransportError as exc:
            raise BackendUnavailable(
                f"the download broke off: {exc or type(exc).__name__}",
                backend=self.name,
                task_id=tid,
            ) from exc
        finally:
            await response.aclose()
        return target

    async def _unsigned(self, url: str, task_id: str, *, stream: bool) -> httpx.Response:
        return await self.send_retrying(
            lambda: self.send("GET", url, task_id=task_id, stream=stream), task_id=task_id
        )

    def _artifact_failure(self, response: httpx.Response, task_id: str, name: str) -> None:
        code = response.status_code
        text = self._explain(response)
        if code == 404:
            raise ArtifactNotFound(
                f"{text} (artifact {name!r})", backend=self.name, task_id=task_id
            )
        if code == 424 or response.headers.get("x-taskcluster-artifact-storage-type") == "error":
            try:
                reason = _ErrorBody.model_validate_json(response.content).reason or ""
            except ValueError:
                reason = ""
            raise ArtifactError(
                f"{text} (artifact {name!r})", backend=self.name, task_id=task_id, reason=reason
            )
        raise self.protocol_error(f"artifact {name!r}: unexpected {text}", task_id)

    async def _pages(
        self, base: str, task_id: str, model: type[Any], what: str
    ) -> AsyncIterator[Any]:
        """Every page of a listing, following ``continuationToken``."""
        token: str | None = None
        seen: set[str] = set()
        while True:
            url = base + ("?" + urlencode({"continuationToken": token}) if token else "")
            response = await self._one_off("GET", url, task_id)
            code = response.status_code
            if code in (404, 410):
                raise TaskNotFound(
                    f"{self._explain(response)} (no such {what})",
                    backend=self.name,
                    task_id=task_id,
                )
            if code != 200:
                raise self.protocol_error(f"unexpected {self._explain(response)}", task_id)
            page = self.parse(model, response.content, task_id)
            yield page
            token = next_page(self, page.continuationToken, seen, f"{what} listing", task_id)
            if token is None:
                return


_STATES = {
    "pending": TaskState.PENDING,
    "running": TaskState.RUNNING,
    "completed": TaskState.COMPLETED,
    "failed": TaskState.FAILED,
}


def _artifact_path(name: str) -> str:
    """``name`` checked and percent-encoded segment by segment, to follow ``.../artifacts/``.

    An artifact name is a relative ``/``-separated path: an absolute name, an empty, ``.`` or
    ``..`` segment, or a control character could reach another endpoint of the queue.
    """
    if not isinstance(name, str) or not name:
        raise InvalidArtifactName("an artifact name is a non-empty string")
    if len(name) > _MAX_ARTIFACT_NAME:
        raise InvalidArtifactName(f"an artifact name has at most {_MAX_ARTIFACT_NAME} characters")
    segments = name.split("/")
    if any(s in ("", ".", "..") for s in segments) or any(
        ord(c) < 0x20 or c in "\\\x7f" for c in name
    ):
        raise InvalidArtifactName(
            f"an artifact name is a relative path without empty, '.' or '..' segments, "
            f"backslashes or control characters, got {name[:100]!r}"
        )
    return "/".join(quote(segment, safe="") for segment in segments)


def _run_path(run_id: int | None) -> str:
    if run_id is None:
        return ""
    if isinstance(run_id, bool) or not isinstance(run_id, int) or run_id < 0:
        raise ValueError(f"a run id is a non-negative integer, got {run_id!r}")
    return f"/runs/{run_id}"
