"""How a relay lays tasks out in Redis: key names, stream ids, and the records stored there.

Every key of one task carries the same hash tag (``{backend:id}``), so on a Redis Cluster a task's
stream, latest record and lease live in one slot and the relay's scripts may touch them together.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from pydantic import ValidationError

from .._errors import (
    AuthenticationError,
    BackendError,
    BackendUnavailable,
    ConfigurationError,
    InvalidTaskId,
    ObservationTimeout,
    ProtocolError,
    ReactiveTasksError,
    TaskNotFound,
)
from .._models import TaskEvent

__all__ = [
    "FEED_LENGTH",
    "FEED_SHARDS",
    "GROUP",
    "PREFIX",
    "Record",
    "TaskKeys",
    "decode_record",
    "entry_id",
    "error_record",
    "event_record",
    "request_stream",
    "sequence_of",
]

#: The prefix of every key the relay writes.
PREFIX = "rt"
#: The consumer group every relay of a request stream joins.
GROUP = "relays"
#: Every record is also appended to one of this many feed streams per backend (by task), so that
#: a reader follows thousands of tasks with one XREAD of a few keys instead of one per task.
FEED_SHARDS = 16
#: About how many records each feed stream keeps (a reader further behind catches up per task).
FEED_LENGTH = 4096

_BACKEND_ERRORS: dict[str, type[BackendError]] = {
    cls.__name__: cls
    for cls in (TaskNotFound, AuthenticationError, ProtocolError, BackendUnavailable)
}
_PLAIN_ERRORS: dict[str, type[ReactiveTasksError]] = {
    cls.__name__: cls for cls in (InvalidTaskId, ConfigurationError, ObservationTimeout)
}


def request_stream(backend: str) -> str:
    """The stream of watch requests for one backend name (relays read only their own)."""
    return f"{PREFIX}:requests:{backend}"


@dataclass(frozen=True)
class TaskKeys:
    """The Redis keys of one watched task (its backend name, canonical id and extra identity)."""

    backend: str
    task_id: str
    identity: tuple[tuple[str, str], ...] = ()

    @property
    def tag(self) -> str:
        extra = "".join(f"|{k}={v}" for k, v in self.identity)
        return f"{self.backend}:{self.task_id}{extra}"

    @property
    def events(self) -> str:
        """The task's stream of events, one entry per sequence number."""
        return f"{PREFIX}:{{{self.tag}}}:events"

    @property
    def latest(self) -> str:
        """The task's latest record (an event or the error that ended it)."""
        return f"{PREFIX}:{{{self.tag}}}:latest"

    @cached_property
    def feed(self) -> str:
        """The feed stream this task's records are also appended to (shared with other tasks)."""
        shard = zlib.crc32(self.tag.encode()) % FEED_SHARDS
        return f"{PREFIX}:feed:{self.backend}:{shard}"

    @property
    def owner(self) -> str:
        """The lease: which relay watches the task, expiring unless renewed."""
        return f"{PREFIX}:{{{self.tag}}}:owner"

    def request(self) -> dict[Any, Any]:
        """The fields of a watch request for this task."""
        return {"task": self.task_id, "identity": json.dumps(dict(self.identity))}

    @classmethod
    def from_request(cls, backend: str, fields: Mapping[bytes, bytes]) -> TaskKeys:
        """Read a watch request back; a malformed one raises ``ValueError``."""
        task = fields[b"task"].decode()
        identity = json.loads(fields.get(b"identity", b"{}"))
        if not isinstance(identity, dict):
            raise ValueError("identity is not an object")
        return cls(backend, task, tuple(sorted((str(k), str(v)) for k, v in identity.items())))


def entry_id(sequence: int) -> str:
    """The stream id of the event with ``sequence`` (``1-0`` for 0), so ids follow sequences."""
    return f"{sequence + 1}-0"


def sequence_of(stream_id: bytes | str) -> int:
    """The sequence number a stream id stands for."""
    text = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    return int(text.split("-", 1)[0]) - 1


_EVENT_PREFIX = '{"event":'


def event_record(event: TaskEvent[Any]) -> str:
    """An event as stored: its JSON, snapshot included, exactly as the relay stamped it."""
    return _EVENT_PREFIX + event.model_dump_json() + "}"


def error_record(error: ReactiveTasksError, sequence: int) -> str:
    """The error that ended a task's observation, secret-free (message, backend, shown id)."""
    kinds: Mapping[str, type[ReactiveTasksError]] = (
        _BACKEND_ERRORS if isinstance(error, BackendError) else _PLAIN_ERRORS
    )
    name = next((n for n, c in kinds.items() if isinstance(error, c)), "BackendUnavailable")
    body: dict[str, Any] = {"type": name, "sequence": sequence}
    if isinstance(error, BackendError):
        body |= {"message": error.message, "backend": error.backend, "task_id": error.task_id}
    else:
        body["message"] = str(error)
    return json.dumps({"error": body})


@dataclass(frozen=True)
class Record:
    """A decoded record: an event (the model given) or the error that ended the task."""

    sequence: int
    event: TaskEvent[Any] | None = None
    error: ReactiveTasksError | None = None

    @property
    def final(self) -> bool:
        """True when nothing follows this record: a terminal event or an error."""
        return self.error is not None or (self.event is not None and self.event.terminal)


def decode_record(data: bytes | str, model: type[TaskEvent[Any]]) -> Record:
    """Parse a stored record; the event's snapshot is validated with the backend's model."""
    try:
        text = data.decode() if isinstance(data, bytes) else data
        if text.startswith(_EVENT_PREFIX):  # the common case: pydantic parses the JSON itself
            event = model.model_validate_json(text[len(_EVENT_PREFIX):-1])
            return Record(event.sequence, event=event)
        raw = json.loads(text)
        if "event" in raw:
            event = model.model_validate(raw["event"])
            return Record(event.sequence, event=event)
        body = raw["error"]
        return Record(int(body["sequence"]), error=_rebuild_error(body))
    except (ValueError, KeyError, TypeError, ValidationError) as exc:
        raise BackendUnavailable(
            f"a relay record does not validate ({type(exc).__name__})"
        ) from None


def _rebuild_error(body: Mapping[str, Any]) -> ReactiveTasksError:
    name, message = str(body.get("type")), str(body.get("message", ""))
    backend_cls = _BACKEND_ERRORS.get(name)
    if backend_cls is not None:
        task_id = body.get("task_id")
        return backend_cls(
            message, backend=str(body.get("backend", "")),
            task_id=None if task_id is None else str(task_id),
        )
    plain_cls = _PLAIN_ERRORS.get(name, BackendUnavailable)
    return plain_cls(message)
