"""Guards the flat public API: what DESIGN.md promises is importable and nothing else leaks."""

from __future__ import annotations

import reactive_tasks
import reactive_tasks.backends


def test_top_level_all() -> None:
    assert sorted(reactive_tasks.__all__) == sorted([
        "AuthenticationError", "BackendError", "BackendUnavailable", "ConfigurationError",
        "EmptyObservation", "EventKind", "InvalidTaskId", "ObservationTimeout", "PollPolicy",
        "ProtocolError", "ReactiveTasksError", "TaskEvent", "TaskNotFound", "TaskState",
        "__version__", "aiter", "wait", "wait_sync",
    ])
    for name in reactive_tasks.__all__:
        assert hasattr(reactive_tasks, name), name


def test_backends_all() -> None:
    for name in reactive_tasks.backends.__all__:
        assert hasattr(reactive_tasks.backends, name), name
    assert "CloudCoinBackend" in reactive_tasks.backends.__all__
    assert "Backend" in reactive_tasks.backends.__all__


def test_ships_py_typed() -> None:
    from importlib.resources import files

    assert files("reactive_tasks").joinpath("py.typed").is_file()
