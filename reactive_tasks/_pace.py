"""How far a hub's polls run behind their schedule, measured from the answers it settles.

When the due polls of one interval take longer than the interval to answer, every task waits its
turn in one queue and the effective interval stretches for all tasks alike. This keeps the
figures that say so (``lag``, ``effective_interval``, ``behind``) and logs, at INFO and at most
once a minute, when a hub falls behind and when it is on time again.
"""

from __future__ import annotations

import logging
import math

__all__ = ["SLICE_SECONDS", "Pace"]

logger = logging.getLogger("reactive_tasks")

#: How long (seconds) a round's answers are settled, or a batch's entries handed on, before the
#: loop gets a turn: a batch of thousands never holds the loop for long.
SLICE_SECONDS = 0.002

_WINDOW = 2.0  # seconds of answers the figures are taken over, at the least
_LOG_EVERY = 60.0  # seconds between two lines about the same hub, at the least


class Pace:
    """The pace of one hub's polls over the latest window of answers."""

    def __init__(self, name: str) -> None:
        self._name = name
        #: Seconds after they fell due that the latest window's polls were answered, on average.
        self.lag = 0.0
        #: Seconds between two polls of one task over the latest window, on average (None: not
        #: measured yet); the interval itself while the hub keeps up.
        self.effective_interval: float | None = None
        #: True while most polls answer too late for their task's next tick.
        self.behind = False
        self._start = -math.inf
        self._answers = 0
        self._late = 0
        self._lag_sum = 0.0
        self._period_sum = 0.0
        self._periods = 0
        self._interval = math.inf  # the smallest interval of the window's polls
        self._logged = False  # the state the last log line told
        self._logged_at = -math.inf

    def answered(
        self, now: float, lag: float, period: float | None, interval: float, late: bool
    ) -> None:
        """Count one poll answered ``lag`` s after it fell due, ``period`` s after the task's
        previous poll (None for its first), on an ``interval``; ``late`` when its answer came
        after the task's next tick, so that its next poll is pushed out."""
        # (called once per answer: comparisons rather than max/min calls)
        window = self._interval if self._interval > _WINDOW else _WINDOW
        if self._answers and now - self._start >= window:
            self._close_window(now)
        if self._answers == 0:
            self._start = now
        self._answers += 1
        if late:
            self._late += 1
        if lag > 0.0:
            self._lag_sum += lag
        if period is not None:
            self._period_sum += period
            self._periods += 1
        if interval < self._interval:
            self._interval = interval

    def _close_window(self, now: float) -> None:
        self.lag = self._lag_sum / self._answers
        if self._periods:
            self.effective_interval = self._period_sum / self._periods
        self.behind = 2 * self._late > self._answers
        interval, answers = self._interval, self._answers
        self._answers = self._late = self._periods = 0
        self._lag_sum = self._period_sum = 0.0
        self._interval = math.inf
        if self.behind == self._logged or now - self._logged_at < _LOG_EVERY:
            return
        self._logged, self._logged_at = self.behind, now
        if self.behind:
            every = self.effective_interval or self.lag + interval
            logger.info(
                "%s: polls fall behind their %g s interval (%d answers in %.1f s, %.1f s late "
                "on average): each task is polled about every %.1f s, all alike",
                self._name, interval, answers, now - self._start, self.lag, every,
            )
        else:
            logger.info("%s: polls are on time again (every %g s)", self._name, interval)
