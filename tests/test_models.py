"""The event model and the error hierarchy, exactly as DESIGN.md's public API names them."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from reactive_tasks import (
    AuthenticationError,
    BackendError,
    BackendUnavailable,
    ConfigurationError,
    EventKind,
    InvalidTaskId,
    ObservationTimeout,
    PollPolicy,
    ProtocolError,
    ReactiveTasksError,
    TaskEvent,
    TaskNotFound,
    TaskState,
)


def test_task_states_and_terminality() -> None:
    assert [s.name for s in TaskState] == [
        "PENDING", "RUNNING", "PAUSED", "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT",
    ]
    assert {s for s in TaskState if s.terminal} == {
        TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED, TaskState.TIMED_OUT,
    }


def test_event_kinds_equal_their_names() -> None:
    assert [k.value for k in EventKind] == [k.name for k in EventKind] == [
        "TASK_UPDATED", "TASK_COMPLETED", "TASK_FAILED", "TASK_CANCELLED", "TASK_TIMEDOUT",
    ]
    assert TaskState.TIMED_OUT.event_kind is EventKind.TASK_TIMEDOUT
    assert TaskState.PAUSED.event_kind is EventKind.TASK_UPDATED


def _event(**overrides: object) -> TaskEvent[dict[str, int]]:
    fields: dict[str, object] = dict(
        backend="b", task_id="t", kind=EventKind.TASK_UPDATED, state=TaskState.RUNNING,
        native_status="Running", progress=12.5, message=None,
        observed_at=datetime.now(UTC), sequence=0, snapshot={"x": 1},
    )
    fields.update(overrides)
    return TaskEvent[dict[str, int]](**fields)  # type: ignore[arg-type]


def test_task_event_is_frozen_generic_and_validated() -> None:
    event = _event()
    assert event.snapshot == {"x": 1} and not event.terminal
    with pytest.raises(ValidationError):
        event.state = TaskState.FAILED  # type: ignore[misc]
    with pytest.raises(ValidationError):
        _event(progress=101.0)
    with pytest.raises(ValidationError):
        _event(sequence=-1)
    with pytest.raises(ValidationError):
        _event(snapshot="not a dict")
    assert _event(state=TaskState.COMPLETED).terminal


def test_error_hierarchy() -> None:
    for cls in (InvalidTaskId, ConfigurationError, BackendError, ObservationTimeout):
        assert issubclass(cls, ReactiveTasksError)
    assert issubclass(InvalidTaskId, ValueError)
    for cls in (TaskNotFound, AuthenticationError, ProtocolError, BackendUnavailable):
        assert issubclass(cls, BackendError)
    err = TaskNotFound("error 4105: Task does not exist", backend="cloudcoin", task_id="abc")
    assert (err.backend, err.task_id) == ("cloudcoin", "abc")
    assert str(err) == "cloudcoin task abc: error 4105: Task does not exist"
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is TaskNotFound and str(copy) == str(err)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"interval": 0}, {"interval": -1}, {"interval": float("nan")}, {"interval": "2"},
        {"backoff": 0.5}, {"jitter": 2}, {"max_interval": 1, "interval": 2},
        {"timeout": 0}, {"retry_budget": -1}, {"retry_budget": 1.5}, {"creation_grace": -1},
        {"request_timeout": 0}, {"reconcile_interval": 0}, {"reconcile_interval": "60"},
    ],
)
def test_poll_policy_rejects_nonsense(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        PollPolicy(**kwargs)  # type: ignore[arg-type]


def test_poll_policy_defaults() -> None:
    p = PollPolicy()
    assert (p.interval, p.max_interval, p.backoff, p.jitter, p.request_timeout) == (
        2.0, 30.0, 2.0, 0.1, 10.0,
    )
    assert p.timeout is None and p.creation_grace == 0.0
    assert p.reconcile_interval == 60.0
    assert PollPolicy(interval=0.5, timeout=3).timeout == 3
