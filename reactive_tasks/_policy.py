"""PollPolicy: how often to poll, how to back off after faults, and when to give up."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from ._errors import ConfigurationError

__all__ = ["PollPolicy"]


@dataclass(frozen=True, slots=True)
class PollPolicy:
    """Timing rules for one observation; every field is in seconds unless it says otherwise.

    ``interval`` is the base poll period. After a transient fault (timeout, reset, 5xx, 429) the
    next poll waits a random delay up to ``min(max_interval, interval * backoff**failures)``
    (full jitter), never less than the server's ``Retry-After`` up to ``max_retry_after`` (a
    longer Retry-After is cut to that cap, so a hostile or confused server cannot park a watch
    for hours). ``retry_budget`` consecutive
    failed polls end the observation with ``BackendUnavailable``. ``timeout`` bounds the whole
    observation (``ObservationTimeout``); ``creation_grace`` tolerates "not found" that long after
    subscribing, for tasks the API has not made visible yet. ``jitter`` is the fraction of the
    interval by which a poll loop's tick is offset at random, so that many processes started
    together do not poll in lock-step. While a push feed (Pulse, chain logs) is live for a task,
    it is polled only every ``reconcile_interval``, to catch messages the feed dropped.
    """

    interval: float = 2.0
    max_interval: float = 30.0
    backoff: float = 2.0
    jitter: float = 0.1
    request_timeout: float = 10.0
    retry_budget: int = 10
    timeout: float | None = None
    creation_grace: float = 0.0
    max_retry_after: float = 300.0
    reconcile_interval: float = 60.0

    def __post_init__(self) -> None:
        def finite(name: str, value: float, *, positive: bool) -> None:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigurationError(f"PollPolicy.{name} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0 or (positive and value == 0):
                need = "a positive" if positive else "a non-negative"
                raise ConfigurationError(f"PollPolicy.{name} must be {need} number, got {value!r}")

        finite("interval", self.interval, positive=True)
        finite("max_interval", self.max_interval, positive=True)
        finite("request_timeout", self.request_timeout, positive=True)
        finite("creation_grace", self.creation_grace, positive=False)
        finite("jitter", self.jitter, positive=False)
        finite("backoff", self.backoff, positive=True)
        finite("max_retry_after", self.max_retry_after, positive=True)
        finite("reconcile_interval", self.reconcile_interval, positive=True)
        if self.backoff < 1:
            raise ConfigurationError(f"PollPolicy.backoff must be >= 1, got {self.backoff!r}")
        if self.jitter > 1:
            raise ConfigurationError(f"PollPolicy.jitter must be <= 1, got {self.jitter!r}")
        if self.max_interval < self.interval:
            raise ConfigurationError("PollPolicy.max_interval must be >= interval")
        if self.timeout is not None:
            finite("timeout", self.timeout, positive=True)
        if isinstance(self.retry_budget, bool) or not isinstance(self.retry_budget, int):
            raise ConfigurationError("PollPolicy.retry_budget must be an int")
        if self.retry_budget < 0:
            raise ConfigurationError("PollPolicy.retry_budget must be >= 0")

    def backoff_bound(self, failures: int) -> float:
        """The longest wait after ``failures`` consecutive failed polls."""
        exponent = min(failures, 64)
        return float(min(self.max_interval, self.interval * self.backoff**exponent))

    def retry_delay(self, failures: int, retry_after: float | None = None) -> float:
        """A full-jitter delay before the next try, with ``Retry-After`` (capped at
        ``max_retry_after``) as its floor."""
        delay = random.uniform(0.0, self.backoff_bound(failures))
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_retry_after))
        return delay

    def exhausted(self, failures: int) -> bool:
        """True once ``failures`` consecutive failed polls exceed the retry budget."""
        return failures > self.retry_budget
