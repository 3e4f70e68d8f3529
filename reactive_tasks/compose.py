"""Operators over many task streams: merge them, follow overall progress, act when all are done.

They work across backends and add no polling of their own: each is a reactivex composition of the
task streams it is given, so disposing the composed stream disposes every underlying
subscription (and so stops every poll that nobody else watches).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

import reactivex
from pydantic import BaseModel, ConfigDict
from reactivex import Observable
from reactivex import operators as ops

from ._errors import TaskFailed
from ._models import TaskEvent, TaskState

__all__ = [
    "TaskFailed",
    "TasksSummary",
    "all_terminal",
    "fail_fast",
    "latest_states",
    "merge_tasks",
    "overall_progress",
]

AnyEvent = TaskEvent[Any]
_UNSUCCESSFUL = frozenset({TaskState.FAILED, TaskState.CANCELLED, TaskState.TIMED_OUT})


class TasksSummary(BaseModel):
    """What ``all_terminal`` emits once every task has reached a terminal state."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    total: int
    counts: Mapping[TaskState, int]
    events: Mapping[str, AnyEvent]

    @property
    def succeeded(self) -> bool:
        """True when every task completed."""
        return self.counts.get(TaskState.COMPLETED, 0) == self.total


def merge_tasks(*observables: Observable[AnyEvent]) -> Observable[AnyEvent]:
    """One stream of every event of every task, completing when all of them have completed."""
    return reactivex.merge(*observables)


def _key(event: AnyEvent) -> str:
    return event.task_id


def latest_states(
    observables: Iterable[Observable[AnyEvent]],
) -> Observable[Mapping[str, AnyEvent]]:
    """Each time any task changes, a read-only snapshot of every task's latest event by id."""
    sources = list(observables)

    def build() -> Observable[Mapping[str, AnyEvent]]:
        latest: dict[str, AnyEvent] = {}

        def update(event: AnyEvent) -> Mapping[str, AnyEvent]:
            latest[_key(event)] = event
            return MappingProxyType(dict(latest))

        return reactivex.merge(*sources).pipe(ops.map(update))

    return reactivex.defer(lambda _: build())


def overall_progress(observables: Iterable[Observable[AnyEvent]]) -> Observable[float]:
    """Overall progress 0..100 across tasks; it never decreases.

    A terminal task counts as done (100); a task that reports no progress counts 0 until it is
    terminal. Emits only when the figure changes; completes when every stream has completed.
    """
    sources = list(observables)
    total = len(sources)

    def build() -> Observable[float]:
        shares: dict[str, float] = {}
        state = {"best": 0.0}

        def update(event: AnyEvent) -> float:
            if event.state.terminal:
                share = 100.0
            elif event.progress is not None:
                share = event.progress
            else:
                share = 0.0
            key = _key(event)
            shares[key] = max(share, shares.get(key, 0.0))
            state["best"] = max(state["best"], sum(shares.values()) / total)
            return round(state["best"], 6)

        if not total:
            return reactivex.of(100.0)
        return reactivex.merge(*sources).pipe(ops.map(update), ops.distinct_until_changed())

    return reactivex.defer(lambda _: build())


def all_terminal(observables: Iterable[Observable[AnyEvent]]) -> Observable[TasksSummary]:
    """One ``TasksSummary`` once every task is terminal (counts by state), then completion.

    A monitoring error of any task is passed on, since "all done" can then never be known.
    """
    sources = list(observables)

    def build() -> Observable[TasksSummary]:
        final: dict[str, AnyEvent] = {}

        def record(event: AnyEvent) -> None:
            if event.state.terminal:
                final[_key(event)] = event

        def summary(_: object) -> TasksSummary:
            counts: dict[TaskState, int] = {}
            for event in final.values():
                counts[event.state] = counts.get(event.state, 0) + 1
            return TasksSummary(total=len(sources), counts=counts, events=dict(final))

        return (
            reactivex.merge(*sources)
            .pipe(ops.do_action(record), ops.ignore_elements(), ops.default_if_empty(None))
            .pipe(ops.map(summary))
        )

    return reactivex.defer(lambda _: build())


def fail_fast(observables: Iterable[Observable[AnyEvent]]) -> Observable[AnyEvent]:
    """Every event of every task, but the first failed, cancelled or timed-out task ends the
    stream with ``TaskFailed`` (carrying that event) and disposes all the others."""
    sources = list(observables)

    def check(event: AnyEvent) -> AnyEvent:
        if event.state in _UNSUCCESSFUL:
            raise TaskFailed(event)
        return event

    return reactivex.defer(lambda _: reactivex.merge(*sources).pipe(ops.map(check)))
