"""The shared event model: normalized task states, obsTask-style event kinds, typed events."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["EventKind", "SnapshotT", "TaskEvent", "TaskState"]

SnapshotT = TypeVar("SnapshotT")


class TaskState(StrEnum):
    """A task's place in its lifecycle, normalized across every backend."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"

    @property
    def terminal(self) -> bool:
        """True for the states after which a task never changes again."""
        return self in _TERMINAL

    @property
    def event_kind(self) -> EventKind:
        """The obsTask-style message an event in this state carries."""
        return _KIND_OF_STATE.get(self, EventKind.TASK_UPDATED)


class EventKind(StrEnum):
    """The message of an event, mirroring iExec's obsTask; each value equals its name."""

    TASK_UPDATED = "TASK_UPDATED"
    TASK_COMPLETED = "TASK_COMPLETED"
    TASK_FAILED = "TASK_FAILED"
    TASK_CANCELLED = "TASK_CANCELLED"
    TASK_TIMEDOUT = "TASK_TIMEDOUT"


_TERMINAL = frozenset(
    {TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED, TaskState.TIMED_OUT}
)
_KIND_OF_STATE = {
    TaskState.COMPLETED: EventKind.TASK_COMPLETED,
    TaskState.FAILED: EventKind.TASK_FAILED,
    TaskState.CANCELLED: EventKind.TASK_CANCELLED,
    TaskState.TIMED_OUT: EventKind.TASK_TIMEDOUT,
}


class TaskEvent(BaseModel, Generic[SnapshotT]):
    """One observed change of one task; `snapshot` is the backend's own validated response."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    backend: str
    task_id: str
    kind: EventKind
    state: TaskState
    native_status: str
    progress: float | None = Field(default=None, ge=0.0, le=100.0)
    message: str | None = None
    observed_at: datetime
    sequence: int = Field(ge=0)
    snapshot: SnapshotT
    #: What delivered the change: a poll of the API or a push feed (Pulse, chain logs).
    via: Literal["poll", "push"] = "poll"

    @property
    def terminal(self) -> bool:
        """True when this is the last event of its task."""
        return self.state.terminal


_ALL_SET = set(TaskEvent.model_fields)


def checked_event(event_type: type[TaskEvent[Any]], fields: dict[str, Any]) -> TaskEvent[Any]:
    """A ``TaskEvent`` of ``fields`` (every field, in the model's order), each already of the
    exact type and range the model admits, made without validating them again.

    The hub builds an event for every change, tens of thousands in one round at scale, from
    values it checked itself; validation was a third of what building an event cost. The
    instance is what ``model_construct`` makes (its four slots set), with the fields-set
    shared by every such event, as ``compact`` would share it anyway.
    """
    event = event_type.__new__(event_type)
    object.__setattr__(event, "__dict__", fields)
    object.__setattr__(event, "__pydantic_fields_set__", _ALL_SET)
    object.__setattr__(event, "__pydantic_extra__", None)
    object.__setattr__(event, "__pydantic_private__", None)
    return event
