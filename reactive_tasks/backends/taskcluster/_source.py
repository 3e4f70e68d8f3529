"""Taskcluster's observation path: the status models, the slugid rule, the status requests
(one task, or many through the batch endpoint), the reading and the change key.

A task's ``state`` is its latest run's state (``unscheduled`` before any run). When a run ends
in an exception the queue retries (``worker-shutdown``, ``claim-expired``, ``intermittent-task``
while retries are left), it adds the retry run at once, so the task reads ``pending`` again and
the stream goes on; a task is terminal only when its latest run is resolved.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Hashable, Sequence
from datetime import datetime
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from ..._errors import AuthenticationError, InvalidTaskId, ProtocolError, TaskNotFound
from ..._models import TaskState
from ..._policy import PollPolicy
from ..._reply import HttpReply
from ..._types import Answer
from .._answers import StreamedPage, each_entry, next_page, slim_reader
from .._base import Backend, Reading, TaskRef
from ._auth import HawkAuth, TaskclusterCredentials

logger = logging.getLogger("reactive_tasks")

SLUGID_PATTERN = r"^[A-Za-z0-9_-]{8}[Q-T][A-Za-z0-9_-][CGKOSWaeimquy26-][A-Za-z0-9_-]{10}[AQgw]$"
_SLUGID = re.compile(SLUGID_PATTERN)

RunState = Literal["pending", "running", "completed", "failed", "exception"]
TaskStateName = Literal["unscheduled", "pending", "running", "completed", "failed", "exception"]
_STATES = {
    "pending": TaskState.PENDING,
    "running": TaskState.RUNNING,
    "completed": TaskState.COMPLETED,
    "failed": TaskState.FAILED,
}
#: How far a run has come: a later state of the same run outranks an earlier one.
_RUN_RANK = {"pending": 1, "running": 2, "completed": 3, "failed": 3, "exception": 3}


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


class _StatusAnswer(BaseModel):
    status: TaskclusterStatus


class _BatchEntry(BaseModel):
    taskId: str
    status: TaskclusterStatus


class _BatchAnswer(BaseModel):
    """The envelope of a batch answer; its entries are read one by one (see ``_answers``)."""

    statuses: list[Any] = []
    continuationToken: str | None = None


_RUN_STATES = frozenset(get_args(RunState))
_TASK_STATES = frozenset(get_args(TaskStateName))


def _slim_run(run: Any) -> tuple[int, str, str, str | None, str | None, str | None]:
    """One run's part of the change key, read strictly from the JSON (``ValueError`` if off)."""
    if type(run) is not dict:
        raise TypeError("a run is not an object")
    run_id, state, created = run["runId"], run["state"], run["reasonCreated"]
    resolved, group, worker = run.get("reasonResolved"), run.get("workerGroup"), run.get("workerId")
    if type(run_id) is not int or run_id < 0 or type(created) is not str:
        raise ValueError("a run's key fields are off")
    if state not in _RUN_STATES:
        raise ValueError("a run's key fields are off")
    for value in (resolved, group, worker):
        if value is not None and type(value) is not str:
            raise ValueError("a run's key fields are off")
    return run_id, state, created, resolved, group, worker


def _slim_entry(raw: Any) -> Hashable:
    """A batch entry's change key straight from its JSON: the task's state and every run's
    identity and outcome (what ``interpret`` and ``change_key`` read), checked as strictly as
    the models check them; anything off raises and the entry is validated whole at once."""
    status = raw["status"]
    state = status["state"]
    runs = status["runs"]
    if status["taskId"] != raw["taskId"] or type(state) is not str or state not in _TASK_STATES:
        raise ValueError("the entry's key fields are off")
    if type(runs) is not list:
        raise TypeError("runs is not a list")
    # One flat tuple (every run has six fields): a tuple of tuples would stay an object the
    # garbage collector tracks for as long as the hub and the session's memo keep the key.
    key: list[str | int | None] = [state]
    for run in runs:
        key += _slim_run(run)
    return tuple(key)


def _flat_key(head: Any, runs: Sequence[TaskclusterRun]) -> tuple[Any, ...]:
    """``head`` and every run's identity and outcome in one flat tuple, as ``_slim_entry``
    keeps them (not a tuple per run: one object fewer for the collector to track)."""
    key: list[Any] = [head]
    for r in runs:
        key += (r.runId, r.state, r.reasonCreated, r.reasonResolved, r.workerGroup, r.workerId)
    return tuple(key)


_Outcome = TaskclusterStatus | Answer[TaskclusterStatus] | BaseException


def _task_id_of(raw: Any) -> Any:
    return raw["taskId"]


_ENTRY_HEAD = re.compile(r'\{"taskId":"([A-Za-z0-9_-]{22})"')
_BETWEEN_ENTRIES = ',{"taskId":"'  # what the queue writes between two entries of a batch
# where a batch entry's task id and status are in its text, as the queue writes it
_ID_START = len('{"taskId":"')
_ID_END = _ID_START + 22
_STATUS_MEMBER = '","status":'
_STATUS_AT = _ID_END + len(_STATUS_MEMBER)


def _peek_task_id(text: str, pos: int) -> str | None:
    """The task id a batch entry's text starts with, as the queue writes it (else None)."""
    head = _ENTRY_HEAD.match(text, pos)
    return None if head is None else head.group(1)


class _ErrorBody(BaseModel):
    code: str | None = None
    message: str | None = None
    reason: str | None = None


class TaskclusterSource(Backend[TaskclusterStatus]):
    """The status half of ``TaskclusterBackend``: what polling a deployment's queue needs."""

    name = "taskcluster"
    max_batch = 1000
    #: After a 404/405 from the batch endpoint, read tasks one by one for this many seconds,
    #: then try the batch endpoint again.
    batch_retry_seconds: float = 300.0
    secret_query_params = (
        "bewit", "x-amz-signature", "x-amz-credential", "x-amz-security-token", "sig", "signature"
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
        if credentials is not None:
            creds = TaskclusterCredentials.coerce(credentials)
            self.auth = HawkAuth(creds)
            self.secrets.add(creds.access_token)
            if creds.certificate:
                self.secrets.add(str(creds.certificate.get("signature") or ""))
        self._batch = bool(batch)
        # What the deployment serves (strategy, not I/O state): while set, the batch endpoint
        # answered 404/405 and rounds are described as per-task reads until this moment.
        self._batch_retry_at: float | None = None

    def __repr__(self) -> str:
        who = self.auth.credentials.client_id if isinstance(self.auth, HawkAuth) else None
        return f"TaskclusterBackend(root_url={self.root_url!r}, client_id={who!r})"

    @property
    def uses_batch_endpoint(self) -> bool:
        """False when batching is off, or while the deployment seems to lack the endpoint."""
        return self._batch and (
            self._batch_retry_at is None or time.monotonic() >= self._batch_retry_at
        )

    def validate_task_id(self, task_id: str) -> str:
        return self._check_slugid(task_id, "task")

    @staticmethod
    def _check_slugid(value: str, what: str) -> str:
        """A task or task-group id checked against the slugid rule."""
        if not isinstance(value, str) or not _SLUGID.fullmatch(value):
            raise InvalidTaskId(f"a Taskcluster {what} id is a v4 slugid, got {value!r}")
        return value

    # -- one task ----------------------------------------------------------------------------

    async def fetch(self, ref: TaskRef) -> TaskclusterStatus:
        path = f"{self._queue}/task/{ref.task_id}/status"
        response = await self.session().request("GET", path, task_id=ref.task_id)
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

    def read_pushed(self, body: bytes) -> TaskclusterStatus:
        """The status a Pulse task message carries (``{"version": 1, "status": ...}``): the
        same model a poll reads; anything else is a ``ProtocolError``."""
        return self.parse(_StatusAnswer, body).status

    # -- many tasks --------------------------------------------------------------------------

    def fetch_many(
        self, refs: Sequence[TaskRef]
    ) -> AsyncIterator[tuple[TaskRef, _Outcome]]:
        """Every ref in one batch request (its pages); tasks it leaves out are read one by one."""
        if len(refs) <= 1 or not self.uses_batch_endpoint:
            return self.session().each(refs, self.fetch)
        return self._fetch_batch(refs)

    async def _fetch_batch(
        self, refs: Sequence[TaskRef]
    ) -> AsyncIterator[tuple[TaskRef, _Outcome]]:
        session = self.session()
        pending = {ref.task_id: ref for ref in refs}
        body = {"taskIds": list(pending)}
        token: str | None = None
        tokens: set[str] = set()
        while pending:  # pages of one answer, not polls
            params = {"continuationToken": token} if token else None
            try:
                response = await session.request(
                    "POST", f"{self._queue}/tasks/status", params=params, json=body,
                    idempotent=True,
                )
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
            slim = slim_reader(self, TaskclusterSource, _slim_entry)
            page = StreamedPage(
                self, _BatchAnswer, response.content, "statuses",
                memo=session.entries if slim else None, peek=_peek_task_id,
                direct=self._read_entry_text, between=_BETWEEN_ENTRIES,
            )
            entries = each_entry(
                self, page.entries(), _BatchEntry, key=_task_id_of,
                wanted={task_id: task_id for task_id in pending}, what="the batch status answer",
                slim=slim, then=self._status_of, remember=page.remember,
            )
            for task_id, entry in entries:  # the hub gives the loop a turn between slices
                # ``then`` made each entry a status (or an Answer of one): the outcome of a task
                # (no ``cast`` calls here: a function call per entry of thousands)
                yield pending.pop(task_id), entry  # type: ignore[call-overload,misc]
            if not pending:
                break
            try:
                token = next_page(self, page.envelope().continuationToken, tokens, "batch status")
            except ProtocolError as exc:  # a runaway server: every task still waiting fails
                for ref in pending.values():
                    yield ref, self.protocol_error(exc.message, ref.task_id)
                return
            if token is None:
                break
        if pending:  # left out: unknown (a 404 tells), or the batch could not be used
            async for item in session.each(list(pending.values()), self.fetch):
                yield item

    def _read_entry_text(self, text: str) -> tuple[Hashable, TaskclusterStatus]:
        """A batch entry's slim key and status, validated from its text (``ValueError`` when
        it does not read so: the entry is then decoded and read as any other).

        Only the status is validated, when the entry is ``{"taskId":"<id>","status":<S>}`` as
        the queue writes it: ``<S>`` a whole JSON object makes the entry one too."""
        if not (text.startswith(_STATUS_MEMBER, _ID_END) and text.endswith("}")):
            raise ValueError("not an entry as the queue writes it")
        status = TaskclusterStatus.model_validate_json(text[_STATUS_AT:-1])
        if status.taskId != text[_ID_START:_ID_END]:
            raise ValueError("the status of another task")  # its ProtocolError comes decoded
        return _flat_key(status.state, status.runs), status  # as ``_slim_entry`` reads it

    def _status_of(self, entry: _BatchEntry) -> TaskclusterStatus:
        """The status of a validated batch entry (a ``ProtocolError`` if about another task)."""
        if entry.status.taskId != entry.taskId:
            raise self.protocol_error(
                f"the batch entry holds the status of {entry.status.taskId!r}", entry.taskId
            )
        return entry.status

    # -- reading -----------------------------------------------------------------------------

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
        return _flat_key(reading.plain(), snapshot.runs)

    def order_key(self, snapshot: TaskclusterStatus, reading: Reading) -> tuple[int, ...]:
        """(number of runs, the latest run's rank): a retry run reading ``pending`` is newer
        than the run before it reading ``running``; a task with no run yet is (0, 0)."""
        run = snapshot.latest_run
        return (0, 0) if run is None else (len(snapshot.runs), _RUN_RANK[run.state])

    # -- the queue's error answers -----------------------------------------------------------

    @staticmethod
    def _api_shaped(response: HttpReply) -> bool:
        """True for the queue's own error body (``{"code": "ResourceNotFound", ...}``)."""
        try:
            return bool(_ErrorBody.model_validate_json(response.content).code)
        except ValueError:
            return False

    def _explain(self, response: HttpReply) -> str:
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
