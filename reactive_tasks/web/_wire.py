"""The SSE wire format of task events: frames, secret-free event JSON, and the resume id.

An event's ``id:`` is a resume map covering every task the browser has been sent so far:
``<key>.<ms>.<seq>.<look>`` entries joined by ``,``. ``key`` is 6 base64url characters of a
SHA-256 of backend and task id (stable across server restarts, reveals nothing of a secret token),
``ms`` the event's ``observed_at`` in epoch milliseconds and ``seq`` its sequence, both base 36,
and ``look`` 6 characters of a hash of what the page shows (state, native status, progress,
message). A browser already has an event when (ms, seq) is not newer than its map's for that task
(a replay, or a relay resuming ``after=`` with older events), or when it looks the same (a new
observation after a restart or a reconnect starts at sequence 0 with what the page already shows).
The map names the ``MAP_LIMIT`` most recently sent tasks only, so that ids and the Last-Event-ID
header stay small (about 1.7 kB): on reconnect, the latest event of an older task is sent again,
which the page simply shows again.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from itertools import islice
from typing import Any

from .._errors import ReactiveTasksError
from .._models import TaskEvent
from .._redact import shorten
from ..backends import AparaviBackend

__all__ = ["Label", "Resume", "default_label", "error_frame", "event_frame", "task_key"]

#: Names a task on the page from its backend name and task id.
Label = Callable[[str, str], str]
Position = tuple[int, int]  # (observed_at in ms, sequence)
Seen = tuple[Position, str]  # and the look of the event

#: How many tasks (the most recently sent) an id names.
MAP_LIMIT = 64

#: Backends whose task ids are secret tokens: shown shortened, as in logs and errors.
_SECRET_IDS = frozenset({AparaviBackend.name})


def default_label(backend: str, task_id: str) -> str:
    """The task id as the page shows it: secret tokens shortened, other ids as given."""
    return shorten(task_id) if backend in _SECRET_IDS else task_id


def task_key(backend: str, task_id: str) -> str:
    """A short stable key of one task, safe to show even when the id is a secret."""
    return _hash6(f"{backend}\0{task_id}")


def _b36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if not n:
            return out


def _hash6(text: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()[:6]).decode()[:6]


def look(event: TaskEvent[Any]) -> str:
    """A short hash of what the page shows of ``event``: equal looks need no new frame."""
    shown = (event.state.value, event.native_status, event.progress, event.message)
    return _hash6(json.dumps(shown))


class Resume:
    """What one browser already has, per task: read from Last-Event-ID, advanced as we send.

    It remembers every task of the connection; only the ids are bounded.
    """

    def __init__(self, last_event_id: str | None = None) -> None:
        self._seen: dict[str, Seen] = {}
        for entry in (last_event_id or "").split(","):
            parts = entry.strip().split(".")
            if len(parts) != 4 or len(parts[0]) != 6:
                continue  # not ours, or damaged: that task's events are sent again
            try:
                self._seen[parts[0]] = ((int(parts[1], 36), int(parts[2], 36)), parts[3])
            except ValueError:
                continue
            if len(self._seen) >= MAP_LIMIT:
                break

    def admit(self, key: str, event: TaskEvent[Any]) -> bool:
        """True (and remembered) when the browser does not have ``event`` yet."""
        position = (int(event.observed_at.timestamp() * 1000), event.sequence)
        shown = look(event)
        seen = self._seen.get(key)
        if seen is not None and position <= seen[0]:
            return False
        self._seen.pop(key, None)  # re-inserted last: the id names the most recent tasks
        self._seen[key] = (position, shown)
        return seen is None or shown != seen[1]

    def event_id(self) -> str:
        """The ``id:`` of the next frame: the whole map, so one header resumes every task."""
        recent = islice(reversed(self._seen.items()), MAP_LIMIT)
        return ",".join(f"{k}.{_b36(ms)}.{_b36(seq)}.{shown}" for k, ((ms, seq), shown) in recent)


def event_json(event: TaskEvent[Any], key: str, label: Label) -> dict[str, Any]:
    """The event's fields for the browser; the snapshot (raw API answer) is never sent."""
    return {
        "key": key, "backend": event.backend, "task_id": label(event.backend, event.task_id),
        "kind": event.kind.value, "state": event.state.value,
        "native_status": event.native_status, "progress": event.progress,
        "message": event.message, "observed_at": event.observed_at.isoformat(),
        "sequence": event.sequence, "terminal": event.terminal,
    }


def _frame(kind: str, data: dict[str, Any], event_id: str | None = None) -> str:
    head = f"event: {kind}\n" + (f"id: {event_id}\n" if event_id is not None else "")
    return head + "data: " + json.dumps(data, separators=(",", ":")) + "\n\n"


def event_frame(event: TaskEvent[Any], key: str, resume: Resume, label: Label) -> str:
    """One SSE frame for one task event (call after ``resume.admit``)."""
    return _frame(event.kind.value, event_json(event, key, label), resume.event_id())


def error_frame(error: BaseException) -> str:
    """The final ``error`` frame: the class name and, for the library's own errors, the message.

    Library messages are secret-free by design; any other exception's text could hold anything,
    so only its class name goes out.
    """
    message = str(error) if isinstance(error, ReactiveTasksError) else "internal error"
    return _frame("error", {"error": type(error).__name__, "message": message})


COMPLETE_FRAME = _frame("complete", {})
