"""GreenCloud (``https://api.greencloud.dev``): submit function tasks, watch them, read results.

A task record has no status field: the account's task list carries the HTTP status of the
function's answer (0 while there is none) and the progress, but not whether a node picked the task
up. So each round one ``GET /v1/task/list`` answers every watched task, and a task's own record is
read only while it has not yet been seen assigned or finished.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
import time
import weakref
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, TypeAdapter, ValidationError

from .._errors import (
    AuthenticationError,
    ConfigurationError,
    InvalidTaskId,
    ProtocolError,
    TaskNotFound,
    TransientFault,
)
from .._models import TaskState
from .._policy import PollPolicy
from ._answers import entries_by_key, validation_detail
from ._base import Backend, Reading, TaskRef

__all__ = [
    "GreenCloudBackend",
    "GreenCloudCapabilities",
    "GreenCloudCsvRow",
    "GreenCloudListEntry",
    "GreenCloudRecord",
    "GreenCloudTask",
]

_OBJECT_ID = re.compile(r"^[0-9a-fA-F]{24}$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TOKEN_TEXT = re.compile(r"^[\x21-\x7e]+( [\x21-\x7e]+)?$")  # printable; one space ("Bearer x")
_CSV_COLUMNS = ("ID", "IssuedAt", "Status", "ContentType", "Body")
_SEEN_LIMIT = 100_000  # remembered assigned records, at most (a safety net; see _Seen)
_SEEN_TTL = 600.0  # seconds without a poll after which a task counts as no longer watched


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
        record = self.record
        return record is not None and (
            record.assigned_at is not None or record.finished_at is not None
        )

    @property
    def finished(self) -> bool:
        """Whether the function has answered (its HTTP status is known)."""
        return self.status != 0


class GreenCloudCsvRow(BaseModel):
    """One row of ``GET /v1/task/<functionId>/csv``."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(alias="ID")
    issued_at: datetime = Field(alias="IssuedAt")
    status: int = Field(alias="Status")
    content_type: str = Field(alias="ContentType")
    body: str = Field(alias="Body")


class _TaskCreated(BaseModel):
    id: str


class _Tokens(BaseModel):
    """``POST /v1/auth/apiKey`` and ``/v1/auth/refresh`` answers; secrets stay masked in reprs."""

    expiresIn: float
    accessToken: SecretStr
    refreshToken: SecretStr | None = None


_RAW_LIST = TypeAdapter(list[Any])


class _Credentials:
    """The secrets of one backend; nothing here ever shows in a repr or a message."""

    __slots__ = ("access", "api_key", "refresh", "static")

    def __init__(self, token: str | None, api_key: str | None) -> None:
        self.static = token is not None
        self.api_key = api_key
        self.access = token
        self.refresh: str | None = None

    def __repr__(self) -> str:
        return "<GreenCloud credentials: hidden>"


class _Seen:
    """Per task, the record that showed it assigned, so that it is not read again.

    Bounded: an entry goes when its task finishes, when it was not asked about for ``ttl``
    seconds (the task is no longer watched), and oldest-first beyond ``limit``. Losing an entry
    early costs one more record read, never a wrong state.
    """

    def __init__(self, limit: int = _SEEN_LIMIT, ttl: float = _SEEN_TTL) -> None:
        self._limit = limit
        self._ttl = ttl
        self._entries: dict[str, tuple[GreenCloudRecord, float]] = {}
        self._next_sweep = 0.0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, task_id: str, now: float) -> GreenCloudRecord | None:
        entry = self._entries.get(task_id)
        if entry is None:
            return None
        self._entries[task_id] = (entry[0], now)
        return entry[0]

    def put(self, task_id: str, record: GreenCloudRecord, now: float) -> None:
        self._entries.pop(task_id, None)
        self._entries[task_id] = (record, now)
        while len(self._entries) > self._limit:
            del self._entries[next(iter(self._entries))]

    def drop(self, task_id: str) -> None:
        self._entries.pop(task_id, None)

    def sweep(self, now: float) -> None:
        """Forget tasks nobody asked about for ``ttl`` seconds (amortized: at most every ttl/4)."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + self._ttl / 4
        cutoff = now - self._ttl
        stale = [k for k, (_, used) in self._entries.items() if used < cutoff]
        for key in stale:
            del self._entries[key]


def _check_secret(value: str | None, what: str) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not _TOKEN_TEXT.fullmatch(value):
        raise ConfigurationError(f"{what} must be a non-empty printable string")


def _object_id(value: str, what: str) -> str:
    if not isinstance(value, str) or not _OBJECT_ID.fullmatch(value):
        raise InvalidTaskId(f"a GreenCloud {what} is a 24-hex-digit ObjectId, got {value!r}")
    return value.lower()


def _day(value: date | str | None, what: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        value = value.date()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str) and _DAY.fullmatch(value):
        try:
            date.fromisoformat(value)
        except ValueError:
            pass
        else:
            return value
    raise ValueError(f"{what} must be a date or a 'yyyy-mm-dd' string, got {value!r}")


class GreenCloudBackend(Backend[GreenCloudTask]):
    """Submits and watches GreenCloud tasks; give exactly one of ``token`` and ``api_key``.

    With ``api_key`` the access token is obtained on first use (``POST /v1/auth/apiKey``) and
    renewed once when the API answers 401 (``/v1/auth/refresh``, else a fresh login). A plain
    ``token`` is sent as given and never renewed.
    """

    name = "greencloud"

    def __init__(
        self,
        base_url: str = "https://api.greencloud.dev",
        *,
        token: str | None = None,
        api_key: str | None = None,
        policy: PollPolicy | None = None,
        **options: Any,
    ) -> None:
        if (token is None) == (api_key is None):
            raise ConfigurationError("GreenCloudBackend needs exactly one of token= and api_key=")
        _check_secret(token, "token")
        _check_secret(api_key, "api_key")
        super().__init__(base_url, policy=policy, **options)
        self._credentials = _Credentials(token, api_key)
        self.secrets.add(token)
        self.secrets.add(api_key)
        self._auth_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        self._seen = _Seen()

    # -- the Backend contract ------------------------------------------------------------

    def validate_task_id(self, task_id: str) -> str:
        return _object_id(task_id, "task id")

    async def fetch(self, ref: TaskRef) -> GreenCloudTask:
        """One task's snapshot, read the way a round reads it (the list, and the record if due)."""
        outcome: GreenCloudTask | BaseException = TransientFault("no answer for the task")
        async for _, got in self.fetch_many([ref]):
            outcome = got
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def fetch_many(
        self, refs: Sequence[TaskRef]
    ) -> AsyncIterator[tuple[TaskRef, GreenCloudTask | BaseException]]:
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
        now = time.monotonic()
        seen = self._seen
        seen.sweep(now)
        answers: list[tuple[TaskRef, GreenCloudTask | BaseException]] = []
        unresolved: list[tuple[TaskRef, GreenCloudListEntry | None]] = []
        for ref in refs:
            entry = listing.get(ref.task_id)
            if isinstance(entry, ProtocolError):
                answers.append((ref, entry))
                continue
            record = seen.get(ref.task_id, now)
            if entry is not None and entry.status != 0:
                seen.drop(ref.task_id)  # finished: nothing more to remember
                answers.append((ref, _snapshot(ref.task_id, entry, record)))
            elif entry is not None and record is not None:
                answers.append((ref, _snapshot(ref.task_id, entry, record)))
            else:
                unresolved.append((ref, entry))
        if unresolved:
            limiter = self.session().limiter

            async def resolve(
                ref: TaskRef, entry: GreenCloudListEntry | None
            ) -> GreenCloudTask | BaseException:
                async with limiter:
                    try:
                        return await self._resolve(ref, entry)
                    except Exception as exc:
                        return exc

            resolved = await asyncio.gather(*(resolve(ref, entry) for ref, entry in unresolved))
            answers.extend(zip((ref for ref, _ in unresolved), resolved, strict=True))
        for answer in answers:
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

    # -- GreenCloud's own calls ----------------------------------------------------------

    async def submit(
        self,
        function_id: str,
        body: Any = None,
        params: Mapping[str, str | int | float | bool] | None = None,
    ) -> str:
        """Start a task of ``function_id`` (``params`` and ``body`` go to the function); its id.

        Not retried: a create is not idempotent, so a transient fault raises
        ``BackendUnavailable`` and the caller decides.
        """
        function = _object_id(function_id, "function id")
        response = await self._one_shot(
            "POST", f"/v1/task/{function}", params=_query(params), json=body
        )
        if response.status_code == 404:
            raise TaskNotFound(f"HTTP 404: no function {function}", backend=self.name)
        if response.status_code not in (200, 201):
            raise self._unexpected(response)
        created = self.parse(_TaskCreated, response.content)
        try:
            return self.validate_task_id(created.id)
        except InvalidTaskId:
            raise self.protocol_error("the new task's id is not an ObjectId") from None

    async def record(self, task_id: str) -> GreenCloudRecord:
        """The task's record (``GET /v1/task/<taskId>``) as it is now."""
        canonical = self.validate_task_id(task_id)
        response = await self._one_shot("GET", f"/v1/task/{canonical}", task_id=canonical)
        if response.status_code == 404:
            raise TaskNotFound("HTTP 404: no such task", backend=self.name, task_id=canonical)
        if response.status_code != 200:
            raise self._unexpected(response, canonical)
        return self.parse(GreenCloudRecord, response.content, canonical)

    async def result(self, task_id: str) -> Any:
        """What the task's function returned: decoded JSON when it is JSON, else text."""
        canonical = self.validate_task_id(task_id)
        response = await self._one_shot("GET", f"/v1/task/{canonical}/result", task_id=canonical)
        if response.status_code == 404:
            raise TaskNotFound(
                "HTTP 404: no result (no such task, or it has not finished)",
                backend=self.name,
                task_id=canonical,
            )
        if response.status_code != 200:
            raise self._unexpected(response, canonical)
        media = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if media == "application/json" or media.endswith("+json"):
            try:
                return response.json()
            except ValueError:
                raise self.protocol_error("the JSON result does not parse", canonical) from None
        return response.text

    async def tasks_csv(
        self,
        function_id: str,
        *,
        show_plain: bool | None = None,
        schedule_id: str | None = None,
        date_since: date | str | None = None,
        date_until: date | str | None = None,
    ) -> list[GreenCloudCsvRow]:
        """The function's tasks and results (``GET /v1/task/<functionId>/csv``) as typed rows."""
        function = _object_id(function_id, "function id")
        params: dict[str, str] = {}
        if show_plain is not None:
            params["showPlain"] = "true" if show_plain else "false"
        if schedule_id is not None:
            params["scheduleId"] = _object_id(schedule_id, "schedule id")
        since = _day(date_since, "date_since")
        until = _day(date_until, "date_until")
        if since is not None:
            params["dateSince"] = since
        if until is not None:
            params["dateUntil"] = until
        response = await self._one_shot("GET", f"/v1/task/{function}/csv", params=params or None)
        if response.status_code == 404:
            raise TaskNotFound(f"HTTP 404: no function {function}", backend=self.name)
        if response.status_code != 200:
            raise self._unexpected(response)
        return self._parse_csv(response.text)

    def _parse_csv(self, text: str) -> list[GreenCloudCsvRow]:
        reader = csv.reader(io.StringIO(text))
        header = next(reader, None)
        if header is None or header == []:
            return []
        names = [h.strip() for h in header]
        missing = [c for c in _CSV_COLUMNS if c not in names]
        if missing:
            raise self.protocol_error(f"the CSV lacks the columns {missing}")
        index = {c: names.index(c) for c in _CSV_COLUMNS}
        rows: list[GreenCloudCsvRow] = []
        for number, cells in enumerate(reader, start=2):
            if not cells:
                continue
            if len(cells) < len(names):
                raise self.protocol_error(f"CSV line {number} has {len(cells)} cells")
            try:
                rows.append(GreenCloudCsvRow.model_validate({c: cells[index[c]] for c in index}))
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                raise self.protocol_error(
                    f"CSV line {number}, {where}: {first['msg']}"
                ) from None
        return rows

    # -- reading tasks -------------------------------------------------------------------

    async def _listing(
        self, refs: Sequence[TaskRef]
    ) -> dict[str, GreenCloudListEntry | ProtocolError]:
        """The list entries of ``refs``' tasks; a malformed one fails only its own task."""
        response = await self._request("GET", "/v1/task/list")
        if response.status_code != 200:
            raise self._unexpected(response)
        try:
            items = _RAW_LIST.validate_json(response.content)
        except ValidationError as exc:
            raise self.protocol_error(
                f"the task list is not a JSON list{validation_detail(exc)}"
            ) from None
        entries = entries_by_key(
            self,
            items,
            GreenCloudListEntry,
            key=lambda raw: raw["id"].lower(),
            wanted={ref.task_id: ref.task_id for ref in refs},
            what="the task list",
        )
        return {str(key): entry for key, entry in entries.items()}

    async def _resolve(self, ref: TaskRef, entry: GreenCloudListEntry | None) -> GreenCloudTask:
        """Complete a round's answer with the task's record (not yet seen assigned, or unlisted)."""
        task_id = ref.task_id
        response = await self._request("GET", f"/v1/task/{task_id}", task_id=task_id)
        if response.status_code == 404:
            if entry is None:
                raise TaskNotFound(
                    "not in the task list and HTTP 404 on its record",
                    backend=self.name,
                    task_id=task_id,
                )
            return _snapshot(task_id, entry, None)  # listed: the list is the authority
        if response.status_code != 200:
            raise self._unexpected(response, task_id)
        record = self.parse(GreenCloudRecord, response.content, task_id)
        started = record.assigned_at is not None or record.finished_at is not None
        if entry is None:
            if record.finished_at is not None:
                raise TransientFault("the task finished but the list does not show it yet")
            entry = GreenCloudListEntry(
                id=task_id, issued=record.issued, progress=record.progress, status=0
            )
        elif entry.progress != record.progress:
            # The record was read after the list: state and progress both come from the record.
            entry = entry.model_copy(update={"progress": record.progress})
        if started:
            self._seen.put(task_id, record, time.monotonic())
        return _snapshot(task_id, entry, record)

    # -- HTTP with the access token ------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        task_id: str | None = None,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
    ) -> httpx.Response:
        """``send`` with the access token; with an API key, renew it once after a refusal."""
        token = await self._access_token()
        try:
            return await self.send(
                method, path, task_id=task_id, params=params, json=json,
                headers={"Authorization": token},
            )
        except AuthenticationError:
            if self._credentials.static:
                raise
        token = await self._renew(stale=token)
        return await self.send(
            method, path, task_id=task_id, params=params, json=json,
            headers={"Authorization": token},
        )

    async def _one_shot(
        self,
        method: str,
        path: str,
        *,
        task_id: str | None = None,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
    ) -> httpx.Response:
        """A request outside any observation: a read is retried as a poll would be; anything
        else (a create) is sent once, since repeating it is not safe."""
        if method == "GET":
            return await self.send_retrying(
                lambda: self._request(method, path, task_id=task_id, params=params),
                task_id=task_id,
            )
        request = self._request(method, path, task_id=task_id, params=params, json=json)
        return await self.send_once(request, what=method, task_id=task_id)

    def _auth_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        with self._lock:
            lock = self._auth_locks.get(loop)
            if lock is None:
                lock = self._auth_locks[loop] = asyncio.Lock()
            return lock

    async def _access_token(self) -> str:
        token = self._credentials.access
        if token is not None:
            return token
        async with self._auth_lock():
            if self._credentials.access is None:
                await self._login()
            token = self._credentials.access
        assert token is not None
        return token

    async def _renew(self, *, stale: str) -> str:
        """A new access token after ``stale`` was refused (once, however many were refused)."""
        async with self._auth_lock():
            current = self._credentials.access
            if current is not None and current != stale:
                return current  # another request renewed it meanwhile
            refreshed = False
            if self._credentials.refresh is not None:
                refreshed = await self._refresh()
            if not refreshed:
                await self._login()
            token = self._credentials.access
        assert token is not None
        return token

    async def _login(self) -> None:
        creds = self._credentials
        creds.access = creds.refresh = None
        try:
            response = await self.send("POST", "/v1/auth/apiKey", json={"key": creds.api_key})
        except AuthenticationError:
            raise AuthenticationError(
                "the API key was refused (POST /v1/auth/apiKey)", backend=self.name
            ) from None
        if response.status_code in (400, 404):
            raise AuthenticationError(
                f"the API key was refused (HTTP {response.status_code})", backend=self.name
            )
        self._store(response)

    async def _refresh(self) -> bool:
        """Renew with the refresh token; False when it was refused (then log in again)."""
        creds = self._credentials
        try:
            response = await self.send(
                "POST", "/v1/auth/refresh", json={"refreshToken": creds.refresh}
            )
        except AuthenticationError:
            return False
        if response.status_code in (400, 404):
            return False
        self._store(response)
        return True

    def _store(self, response: httpx.Response) -> None:
        if response.status_code not in (200, 201):
            raise self._unexpected(response)
        tokens = self.parse(_Tokens, response.content)
        access = tokens.accessToken.get_secret_value()
        if not _TOKEN_TEXT.fullmatch(access):
            raise self.protocol_error("the access token is not printable text")
        refresh = tokens.refreshToken.get_secret_value() if tokens.refreshToken else None
        self._credentials.access = access
        self._credentials.refresh = refresh or None
        self.secrets.add(access)
        self.secrets.add(refresh)

    def _unexpected(self, response: httpx.Response, task_id: str | None = None) -> Exception:
        return self.protocol_error(f"unexpected HTTP {response.status_code}", task_id)


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


def _query(params: Mapping[str, str | int | float | bool] | None) -> dict[str, str] | None:
    """Query parameters as text; booleans the way JSON spells them (``true``/``false``)."""
    if not params:
        return None
    out: dict[str, str] = {}
    for key, value in params.items():
        out[str(key)] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return out
