"""Retry decisions: which faults are transient, what ends an observation, how long to wait,
and ``call_with_retries`` for reads outside a poll. Knows no HTTP library: sessions register the
foreign exception types that count as transient or as timeouts."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pydantic import ValidationError

from ._errors import BackendError, BackendUnavailable, ProtocolError, TaskNotFound, TransientFault
from ._log import log_poll_fault
from ._policy import PollPolicy
from ._types import Source, TaskRef, request_timeout_var

__all__ = [
    "call_with_retries",
    "describe",
    "is_timeout",
    "is_transient",
    "protocol_error",
    "register_faults",
    "retry_delay",
    "verdict",
]

T = TypeVar("T")

_transient: tuple[type[BaseException], ...] = (TransientFault, TimeoutError, OSError)
_timeouts: tuple[type[BaseException], ...] = (TimeoutError,)


def register_faults(
    *,
    transient: tuple[type[BaseException], ...] = (),
    timeouts: tuple[type[BaseException], ...] = (),
) -> None:
    """Teach the engine a transport's exception types: worth retrying, or a timeout (both are
    transient). Called by the session layer at import, so that the engine imports no HTTP."""
    global _transient, _timeouts
    _timeouts = tuple(dict.fromkeys((*_timeouts, *timeouts)))
    _transient = tuple(dict.fromkeys((*_transient, *transient, *timeouts)))


def is_transient(exc: BaseException) -> bool:
    """True for faults worth another try: transport errors, timeouts, 5xx/429 answers."""
    return isinstance(exc, _transient)


def is_timeout(exc: BaseException) -> bool:
    """True for a request that ran out of time (of any registered transport)."""
    return isinstance(exc, _timeouts)


def verdict(
    source: Source,
    ref: TaskRef,
    exc: BaseException,
    failures: int,
    age: float,
    policy: PollPolicy,
) -> Exception | None:
    """The error that ends an observation under ``policy`` after a failed poll, or None to retry.

    ``failures`` already counts this failure; ``age`` is how long the observation has run.
    """
    shown = source.display_id(ref.task_id) if ref.task_id else None
    if isinstance(exc, TaskNotFound) and age < policy.creation_grace:
        return None
    if isinstance(exc, BackendError):
        return exc
    if is_transient(exc):
        log_poll_fault(source.name, shown, exc, failures, policy.retry_budget)
        if not policy.exhausted(failures):
            return None
        gave_up = BackendUnavailable(
            f"gave up after {failures} consecutive failed polls; "
            f"last: {describe(exc, policy.request_timeout)}",
            backend=source.name,
            task_id=shown,
        )
        gave_up.__cause__ = exc
        return gave_up
    return protocol_error(source, ref, exc)


def retry_delay(exc: BaseException, failures: int, grace_left: float, policy: PollPolicy) -> float:
    """How long to wait before polling again after a fault that ended no observation."""
    if isinstance(exc, TaskNotFound):
        return min(policy.interval, max(grace_left, 0.0))
    retry_after = exc.retry_after if isinstance(exc, TransientFault) else None
    return policy.retry_delay(failures, retry_after)



def protocol_error(
    source: Source, ref: TaskRef, exc: BaseException, doing: str = "read"
) -> ProtocolError:
    """An unexpected exception while handling an answer, as the typed error it stands for."""
    shown = source.display_id(ref.task_id) if ref.task_id else None
    err = ProtocolError(
        f"could not {doing} the answer: {describe(exc)}", backend=source.name, task_id=shown
    )
    err.__cause__ = exc
    return err


def describe(exc: BaseException, request_timeout: float | None = None) -> str:
    if is_timeout(exc):
        text = str(exc)
        if text.startswith("request timed out after") or request_timeout is None:
            return text or "request timed out"
        return f"request timed out after {request_timeout:g} s"
    if isinstance(exc, ValidationError):
        return f"response does not validate ({exc.error_count()} errors)"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if not isinstance(exc, TransientFault) else text



async def call_with_retries(
    source: Source,
    ref: TaskRef,
    call: Callable[[], Awaitable[T]],
    policy: PollPolicy,
    *,
    wrap_unknown: bool = False,
) -> T:
    """Await ``call()``, retrying transient faults as a poll would (backoff, Retry-After,
    budget), for one-off reads outside any observation.

    Typed errors pass through; an unexpected exception passes through as is, or with
    ``wrap_unknown`` becomes a ``ProtocolError`` as it would in a poll.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    failures = 0
    token = request_timeout_var.set(policy.request_timeout)
    try:
        while True:
            try:
                return await call()
            except Exception as exc:
                if not wrap_unknown and not isinstance(exc, BackendError) and not is_transient(exc):
                    raise
                failures += 1
                age = loop.time() - started
                error = verdict(source, ref, exc, failures, age, policy)
                if error is not None:
                    raise error from error.__cause__  # the last fault, if any
                delay = retry_delay(exc, failures, policy.creation_grace - age, policy)
            await asyncio.sleep(delay)
    finally:
        request_timeout_var.reset(token)
