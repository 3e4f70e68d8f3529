"""The exception hierarchy. Messages never contain secrets."""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "BackendError",
    "BackendUnavailable",
    "ConfigurationError",
    "InvalidTaskId",
    "ObservationTimeout",
    "ProtocolError",
    "ReactiveTasksError",
    "TaskNotFound",
    "TransientFault",
]


class ReactiveTasksError(Exception):
    """Base of every error this library raises on purpose."""


class InvalidTaskId(ReactiveTasksError, ValueError):
    """A task id that cannot belong to the backend's API; raised before any request."""


class ConfigurationError(ReactiveTasksError):
    """A backend or policy was set up with values that cannot work."""


class ObservationTimeout(ReactiveTasksError, TimeoutError):
    """The observer's own deadline passed before the task reached a terminal state."""


class BackendError(ReactiveTasksError):
    """Monitoring of one task on one backend cannot go on."""

    def __init__(self, message: str, *, backend: str = "", task_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.backend = backend
        self.task_id = task_id

    def __str__(self) -> str:
        where = self.backend or "backend"
        if self.task_id is not None:
            where = f"{where} task {self.task_id}"
        return f"{where}: {self.message}"

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), self.message, self.backend, self.task_id, self.__cause__))


def _rebuild(
    cls: type[BackendError],
    message: str,
    backend: str,
    task_id: str | None,
    cause: BaseException | None,
) -> BackendError:
    err = cls.__new__(cls)
    BackendError.__init__(err, message, backend=backend, task_id=task_id)
    err.__cause__ = cause
    return err


class TaskNotFound(BackendError):
    """The API says the task does not exist (after any creation grace period)."""


class AuthenticationError(BackendError):
    """The API refused the credentials, or they lack the needed permission."""


class ProtocolError(BackendError):
    """The API answered with something that does not validate against its documented shape."""


class BackendUnavailable(BackendError):
    """Transient faults outlasted the retry budget; `__cause__` holds the last one."""


class TransientFault(ReactiveTasksError):
    """A fault worth retrying (5xx, 429, a JSON-RPC server error); raised by backends' fetches.

    The engine retries it with backoff; it never reaches a subscriber except as the cause of
    ``BackendUnavailable``. ``retry_after`` is the server's requested wait in seconds, if any.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
