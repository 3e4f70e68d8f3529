"""Every exception class of the library, in one place. Messages never contain secrets.

    ReactiveTasksError
    ├── InvalidTaskId (+ ValueError)        a task id the API cannot have; raised before any request
    ├── InvalidArtifactName (+ ValueError)  a Taskcluster artifact name that is not a relative path
    ├── ConfigurationError                  a backend or policy set up with values that cannot work
    ├── ObservationTimeout (+ TimeoutError) the observer's own deadline passed
    ├── EmptyObservation                    a stream completed without a single event
    ├── TaskFailed                          compose.fail_fast: a task ended badly
    ├── TransientFault                      worth retrying (5xx, 429, RPC server error)
    └── BackendError                        monitoring of one task on one backend cannot go on
        ├── TaskNotFound
        ├── AuthenticationError
        ├── ProtocolError
        ├── BackendUnavailable              faults outlasted the retry budget (__cause__: the last)
        ├── ArtifactNotFound                (Taskcluster)
        ├── ArtifactError                   (Taskcluster: an ``error`` artifact; ``reason``)
        ├── NoTaskResult                    (iExec)
        ├── ResultNotOnIpfs                 (iExec)
        ├── TaskNotClaimable                (iExec: claim refused before anything was sent)
        └── TransactionFailed               (iExec: the node refused a sent transaction; tx_hash)
            └── TransactionReverted         (iExec: mined with status 0)

Not here, on purpose: ``_transport.ResponseTooLarge``/``UnsupportedEncoding`` (httpx decoding
errors, turned into ``ProtocolError`` by the session), ``backends.iexec._abi.AbiError`` and the
CLI's ``UsageError`` (internal, never raised to users). Public classes name the module users import
them from, so tracebacks read ``reactive_tasks.TaskNotFound``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._redact import shorten

if TYPE_CHECKING:
    from ._models import TaskEvent

__all__ = [
    "ArtifactError",
    "ArtifactNotFound",
    "AuthenticationError",
    "BackendError",
    "BackendUnavailable",
    "ConfigurationError",
    "EmptyObservation",
    "InvalidArtifactName",
    "InvalidTaskId",
    "NoTaskResult",
    "ObservationTimeout",
    "ProtocolError",
    "ReactiveTasksError",
    "ResultNotOnIpfs",
    "TaskFailed",
    "TaskNotClaimable",
    "TaskNotFound",
    "TransactionFailed",
    "TransactionReverted",
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


class EmptyObservation(ReactiveTasksError):
    """The stream completed without a single event, so there is no last event to return."""


class TaskFailed(ReactiveTasksError):
    """``fail_fast``'s error: a task ended failed, cancelled or timed out; ``event`` says which."""

    def __init__(self, event: TaskEvent[Any]) -> None:
        # The id shows shortened: for some APIs (Aparavi) the task id is a secret token.
        super().__init__(
            f"{event.backend} task {shorten(event.task_id)} ended {event.state.value}"
            + (f": {event.message}" if event.message else "")
        )
        self.event = event


class ArtifactNotFound(BackendError):
    """The queue has no such artifact (or no such run or task) to hand out."""


class ArtifactError(BackendError):
    """The artifact is an ``error`` artifact: the worker reported why it could not upload it."""

    def __init__(
        self, message: str, *, backend: str = "", task_id: str | None = None, reason: str = ""
    ) -> None:
        super().__init__(message, backend=backend, task_id=task_id)
        self.reason = reason


class InvalidArtifactName(ReactiveTasksError, ValueError):
    """An artifact name that is not a relative path of non-empty segments (no ``.``/``..``)."""


class NoTaskResult(BackendError):
    """The task has no result to download: not completed, or no result uploaded."""


class ResultNotOnIpfs(BackendError):
    """The task's result is stored elsewhere than IPFS (or has no location): no download."""


class TaskNotClaimable(BackendError):
    """The task cannot be claimed (completed, already failed, or before its final deadline):
    nothing was signed or sent."""


class TransactionFailed(BackendError):
    """A signed transaction was refused by the node or did not do what it must; ``tx_hash``
    names it (look it up before sending again: its nonce may be spent)."""

    def __init__(
        self, message: str, *, backend: str = "", task_id: str | None = None, tx_hash: str = ""
    ) -> None:
        super().__init__(message, backend=backend, task_id=task_id)
        self.tx_hash = tx_hash


class TransactionReverted(TransactionFailed):
    """The transaction was mined and reverted (receipt status 0): its gas is spent."""


def _public(module: str, *classes: type[BaseException]) -> None:
    for cls in classes:
        cls.__module__ = module


_public(
    "reactive_tasks",
    ReactiveTasksError, InvalidTaskId, ConfigurationError, ObservationTimeout, BackendError,
    TaskNotFound, AuthenticationError, ProtocolError, BackendUnavailable, EmptyObservation,
)
_public("reactive_tasks.compose", TaskFailed)
_public(
    "reactive_tasks.backends",
    TransientFault, ArtifactNotFound, ArtifactError, InvalidArtifactName, NoTaskResult,
    ResultNotOnIpfs, TaskNotClaimable, TransactionFailed, TransactionReverted,
)
