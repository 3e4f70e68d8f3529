"""GreenCloud's observation path: the models it reads, the id rule, one list request per round,
the reading.

A task record has no status field: the account's task list carries the HTTP status of the
function's answer (0 while there is none) and the progress, but not whether a node picked the task
up. So each round one ``GET /v1/task/list`` answers every watched task, and a task's own record is
read only while it has not yet been seen assigned or finished (a record that showed it assigned is
kept in the session's cache for ``record_ttl`` seconds, and forgotten when the task finishes).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple, cast

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from ..._errors import (
    ConfigurationError,
    InvalidTaskId,
    ProtocolError,
    TaskNotFound,
    TransientFault,
)
from ..._models import TaskState
from ..._policy import PollPolicy
from ..._reply import HttpReply
from ..._types import Answer, snapshot_of
from .._answers import each_entry, paced, slim_allowed, slim_reader, validation_detail
from .._base import Backend, Reading, TaskRef
from ._auth import BearerAuth, check_secret

__all__ = [
    "GreenCloudCapabilities",
    "GreenCloudListEntry",
    "GreenCloudRecord",
    "GreenCloudSource",
    "GreenCloudTask",
    "object_id",
]

_OBJECT_ID = re.compile(r"^[0-9a-fA-F]{24}$")
_RAW_LIST = TypeAdapter(list[Any])
#: Seconds a record that showed its task assigned is kept without being read again.
RECORD_TTL = 600.0


def _unix(value: str | None) -> datetime | None:
    """A string of Unix seconds as a UTC datetime; empty, zero or garbage means 'not yet'."""
    if not value:
        return None
    try:
        seconds = int(value)
    except ValueError:
        return None
    return datetime.fromtimestamp(seconds, UTC) if seconds > 0 else None


class GreenCloudCapabilities(BaseModel):
    """What the task asked of its node."""

    model_config = ConfigDict(frozen=True, extra="allow")

    cpuCount: int = 0
    memSize: int = 0
    networkLatency: int = 0
    privileged: bool = False


class GreenCloudRecord(BaseModel):
    """``GET /v1/task/<taskId>``: one task's record; timestamps are Unix seconds as strings."""

    model_config = ConfigDict(frozen=True, extra="allow")

    functionId: str
    issued: str
    assigned: str | None = None
    finished: str | None = None
    progress: float = Field(default=0, ge=0, le=100)
    node: str | None = None
    timeout: int | None = None
    capabilities: GreenCloudCapabilities | None = None

    @property
    def issued_at(self) -> datetime | None:
        """When the task was created."""
        return _unix(self.issued)

    @property
    def assigned_at(self) -> datetime | None:
        """When a node picked the task up, or None while none has."""
        return _unix(self.assigned)

    @property
    def finished_at(self) -> datetime | None:
        """When the function answered, or None while it has not."""
        return _unix(self.finished)

    @property
    def started(self) -> bool:
        """Whether the record shows a node on the task (assigned, or already finished)."""
        return self.assigned_at is not None or self.finished_at is not None


class GreenCloudListEntry(BaseModel):
    """An element of ``GET /v1/task/list``: ``status`` is the function's HTTP status, 0 if none."""

    model_config = ConfigDict(frozen=True, extra="allow")

    id: str
    issued: str
    progress: float = Field(ge=0, le=100)
    status: int


class GreenCloudTask(BaseModel):
    """The snapshot of one watched task: its list entry plus the record it was last read with.

    ``record`` is the latest record read: read while the task waits for a node, then kept (not
    re-read) once it showed the task assigned; None when the list alone answered.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    status: int
    progress: float
    issued: str
    record: GreenCloudRecord | None = None

    @property
    def assigned(self) -> bool:
        """Whether a node is known to have picked the task up."""
        return self.record is not None and self.record.started

    @property
    def finished(self) -> bool:
        """Whether the function has answered (its HTTP status is known)."""
        return self.status != 0


class _RowKey(NamedTuple):
    """What a list row adds to the change key: the function's HTTP status and the progress."""

    status: int
    progress: int | float


def _slim_row(raw: Any) -> _RowKey:
    """A list row's key fields straight from its JSON, as strictly as the model checks them;
    anything off raises and the row is validated whole at once."""
    status, progress = raw["status"], raw["progress"]
    if type(status) is not int or type(progress) not in (int, float) or not 0 <= progress <= 100:
        raise ValueError("the row's key fields are off")
    return _RowKey(status, progress)


_Entry = GreenCloudListEntry | Answer[GreenCloudListEntry]
_Outcome = GreenCloudTask | Answer[GreenCloudTask] | BaseException


def object_id(value: str, what: str) -> str:
    """A GreenCloud id (task, function, schedule) in canonical form: 24 lowercase hex digits."""
    if not isinstance(value, str) or not _OBJECT_ID.fullmatch(value):
        raise InvalidTaskId(f"a GreenCloud {what} is a 24-hex-digit ObjectId, got {value!r}")
    return value.lower()


class GreenCloudSource(Backend[GreenCloudTask]):
    """Watches GreenCloud tasks; give exactly one of ``token`` and ``api_key``.

    With ``api_key`` the access token is obtained on first use (``POST /v1/auth/apiKey``) and
    renewed once when the API answers 401 (``/v1/auth/refresh``, else a fresh login). A plain
    ``token`` is sent as given and never renewed. ``record_ttl`` is how long (seconds) a record
    that showed its task assigned is kept without being read again.
    """

    name = "greencloud"

    def __init__(
        self,
        base_url: str = "https://api.greencloud.dev",
        *,
        token: str | None = None,
        api_key: str | None = None,
        policy: PollPolicy | None = None,
        record_ttl: float = RECORD_TTL,
        **options: Any,
    ) -> None:
        if (token is None) == (api_key is None):
            raise ConfigurationError("GreenCloudBackend needs exactly one of token= and api_key=")
        check_secret(token, "token")
        check_secret(api_key, "api_key")
        if not record_ttl > 0:
            raise ConfigurationError("record_ttl must be a positive number of seconds")
        super().__init__(base_url, policy=policy, **options)
        self.record_ttl = float(record_ttl)
        self.auth: BearerAuth = BearerAuth(self, token, api_key)
        self.secrets.add(token)
        self.secrets.add(api_key)

    def validate_task_id(self, task_id: str) -> str:
        return object_id(task_id, "task id")

    async def fetch(self, ref: TaskRef) -> GreenCloudTask:
        """One task's snapshot, read the way a round reads it (the list, and the record if due)."""
        async for _, outcome in self.fetch_many([ref]):
            if isinstance(outcome, BaseException):
                raise outcome
            return snapshot_of(outcome)
        raise TransientFault("no answer for the task")  # pragma: no cover - one ref, one answer

    async def fetch_many(self, refs: Sequence[TaskRef]) -> AsyncIterator[tuple[TaskRef, _Outcome]]:
        """One list request for all ``refs``; records only of tasks not yet seen assigned.

        Every answer of the round is handed over together, after the record reads, so that the
        engine schedules the whole round's next poll on one tick (one list request again).
        """
        try:
            listing = await self._listing(refs)
        except Exception as exc:  # the list is every task's answer: its fault is theirs too
            for ref in refs:
                yield ref, exc
            return
        session = self.session()
        answers: list[tuple[TaskRef, _Outcome]] = []
        unresolved: dict[TaskRef, GreenCloudListEntry | None] = {}
        async for ref in paced(refs):
            entry = listing.get(ref.task_id)
            if isinstance(entry, ProtocolError):
                answers.append((ref, entry))
                continue
            key = ("record", ref.task_id)
            record: GreenCloudRecord | None = session.peek(key)
            if entry is not None and _status(entry) != 0:
                session.forget(key)  # finished: nothing more to remember
                answers.append((ref, _answer(ref.task_id, entry, record)))
            elif entry is not None and record is not None:
                answers.append((ref, _answer(ref.task_id, entry, record)))
            else:
                try:
                    unresolved[ref] = None if entry is None else snapshot_of(entry)
                except ProtocolError as exc:
                    answers.append((ref, exc))
        if unresolved:
            reads = session.each(list(unresolved), lambda r: self._resolve(r, unresolved[r]))
            keyed = slim_allowed(self, GreenCloudSource)
            async for ref, outcome in reads:
                if keyed and isinstance(outcome, GreenCloudTask):  # keyed for the next round
                    row = _RowKey(outcome.status, outcome.progress)
                    answers.append((ref, Answer.built((row, outcome.assigned), outcome)))
                else:
                    answers.append((ref, outcome))
        for answer in answers:  # the hub gives the loop a turn while it settles them
            yield answer

    def interpret(self, snapshot: GreenCloudTask, ref: TaskRef) -> Reading:
        code = snapshot.status
        if code == 200:
            state, message = TaskState.COMPLETED, None
        elif code != 0:
            state, message = TaskState.FAILED, f"the function answered HTTP {code}"
        elif snapshot.assigned:
            state, message = TaskState.RUNNING, None
        else:
            state, message = TaskState.PENDING, None
        return Reading(state, str(code), float(snapshot.progress), message)

    def unexpected(self, response: HttpReply, task_id: str | None = None) -> ProtocolError:
        """The error for an HTTP status the API does not document for the call."""
        return self.protocol_error(f"unexpected HTTP {response.status_code}", task_id)

    async def _listing(self, refs: Sequence[TaskRef]) -> dict[str, _Entry | ProtocolError]:
        """The list entries of ``refs``' tasks; a malformed one fails only its own task."""
        response = await self.session().request("GET", "/v1/task/list")
        if response.status_code != 200:
            raise self.unexpected(response)
        try:
            items = _RAW_LIST.validate_json(response.content)
        except ValidationError as exc:
            raise self.protocol_error(
                f"the task list is not a JSON list{validation_detail(exc)}"
            ) from None
        entries = each_entry(
            self,
            items,
            GreenCloudListEntry,
            key=lambda raw: raw["id"].lower(),
            wanted={ref.task_id: ref.task_id for ref in refs},
            what="the task list",
            slim=slim_reader(self, GreenCloudSource, _slim_row),
        )
        return {str(key): entry async for key, entry in paced(entries)}

    async def _resolve(self, ref: TaskRef, entry: GreenCloudListEntry | None) -> GreenCloudTask:
        """Complete a round's answer with the task's record (not yet seen assigned, or unlisted)."""
        task_id, session = ref.task_id, self.session()
        key = ("record", task_id)
        record = await session.cached(key, lambda: self._read_record(task_id), ttl=self.record_ttl)
        if record is None or not record.started:
            session.forget(key)  # kept only once it shows the task assigned
        if record is None:
            if entry is None:
                raise TaskNotFound(
                    "not in the task list and HTTP 404 on its record",
                    backend=self.name,
                    task_id=task_id,
                )
            return _snapshot(task_id, entry, None)  # listed: the list is the authority
        if entry is None:
            if record.finished_at is not None:
                raise TransientFault("the task finished but the list does not show it yet")
            entry = GreenCloudListEntry(
                id=task_id, issued=record.issued, progress=record.progress, status=0
            )
        elif entry.progress != record.progress:
            # The record was read after the list: state and progress both come from the record.
            entry = entry.model_copy(update={"progress": record.progress})
        return _snapshot(task_id, entry, record)

    async def _read_record(self, task_id: str) -> GreenCloudRecord | None:
        """The task's record as the round reads it; None on HTTP 404."""
        response = await self.session().request("GET", f"/v1/task/{task_id}", task_id=task_id)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self.unexpected(response, task_id)
        return self.parse(GreenCloudRecord, response.content, task_id)


def _status(entry: _Entry) -> int:
    return cast(_RowKey, entry.key).status if isinstance(entry, Answer) else entry.status


def _answer(
    task_id: str, entry: _Entry, record: GreenCloudRecord | None
) -> GreenCloudTask | Answer[GreenCloudTask]:
    """The task's snapshot from its row and record; from a slim row, an ``Answer`` keyed by
    the row's key and whether the record shows the task assigned (all ``interpret`` reads)."""
    if not isinstance(entry, Answer):
        return _snapshot(task_id, entry, record)
    assigned = record is not None and record.started
    return entry.map(lambda e: _snapshot(task_id, e, record), key=(entry.key, assigned))


def _snapshot(
    task_id: str, entry: GreenCloudListEntry, record: GreenCloudRecord | None
) -> GreenCloudTask:
    return GreenCloudTask(
        id=task_id,
        status=entry.status,
        progress=entry.progress,
        issued=entry.issued,
        record=record,
    )
