"""Log records for failed polls: a retry at INFO, a give-up at WARNING, with structured fields.

Each record carries ``extra`` fields that a handler can read without parsing text:
``rt_backend``, ``rt_task`` (the source's display id, never a secret), ``rt_attempt``,
``rt_budget``, ``rt_reason`` (a short phrase such as "connection refused") and ``rt_gave_up``.
"""

from __future__ import annotations

import errno
import logging

import httpx

from ._errors import TransientFault

__all__ = ["FIELDS", "log_poll_fault", "short_reason"]

logger = logging.getLogger("reactive_tasks")

#: The names of the structured fields every poll-fault record carries.
FIELDS = ("rt_backend", "rt_task", "rt_attempt", "rt_budget", "rt_reason", "rt_gave_up")


def short_reason(exc: BaseException) -> str:
    """A few words naming a transient fault, free of URLs and secrets."""
    if isinstance(exc, TransientFault):
        return str(exc) or "transient fault"
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return "timed out"
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError) or (
            isinstance(cause, OSError) and cause.errno == errno.ECONNREFUSED
        ):
            return "connection refused"
        if isinstance(cause, ConnectionResetError):
            return "connection reset"
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, httpx.ConnectError):
        text = str(exc)
        if "refused" in text or "Connect call failed" in text or "connection attempts" in text:
            return "connection refused"
        return "cannot connect"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "connection closed by the server"
    if isinstance(exc, httpx.TransportError):
        return type(exc).__name__
    return type(exc).__name__


def log_poll_fault(
    backend: str, shown: str | None, exc: BaseException, attempt: int, budget: int
) -> None:
    """Report a failed poll of ``shown`` (a display id): retrying, or giving up past budget."""
    gave_up = attempt > budget
    level = logging.WARNING if gave_up else logging.INFO
    if not logger.isEnabledFor(level):
        return
    reason = short_reason(exc)
    task = shown or "?"
    args: tuple[object, ...] = (backend, task, attempt, reason)
    text = "%s %s: gave up after %d failed polls: %s"
    if not gave_up:
        text = "%s %s: poll failed, retrying %d/%d: %s"
        args = (backend, task, attempt, budget, reason)
    logger.log(level, text, *args, extra={
        "rt_backend": backend, "rt_task": task, "rt_attempt": attempt, "rt_budget": budget,
        "rt_reason": reason, "rt_gave_up": gave_up,
    })
