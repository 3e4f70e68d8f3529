"""reactive-tasks: watch long-running tasks on remote task APIs as ReactiveX streams."""

from ._aio import aiter, wait, wait_sync
from ._errors import (
    AuthenticationError,
    BackendError,
    BackendUnavailable,
    ConfigurationError,
    EmptyObservation,
    InvalidTaskId,
    ObservationTimeout,
    ProtocolError,
    ReactiveTasksError,
    TaskNotFound,
)
from ._models import EventKind, TaskEvent, TaskState
from ._policy import PollPolicy

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "BackendError",
    "BackendUnavailable",
    "ConfigurationError",
    "EmptyObservation",
    "EventKind",
    "InvalidTaskId",
    "ObservationTimeout",
    "PollPolicy",
    "ProtocolError",
    "ReactiveTasksError",
    "TaskEvent",
    "TaskNotFound",
    "TaskState",
    "__version__",
    "aiter",
    "wait",
    "wait_sync",
]
