"""Every exception class lives in one module and shows where users import it from."""

from __future__ import annotations

import traceback

import reactive_tasks
from reactive_tasks import _errors, backends, compose


def test_every_public_error_class_is_the_one_of_the_errors_module() -> None:
    for name in _errors.__all__:
        cls = getattr(_errors, name)
        public = {"reactive_tasks": reactive_tasks, "reactive_tasks.backends": backends,
                  "reactive_tasks.compose": compose}[cls.__module__]
        assert getattr(public, name) is cls, name


def test_a_traceback_names_the_public_module() -> None:
    try:
        raise reactive_tasks.TaskNotFound("gone", backend="cloudcoin", task_id="t")
    except reactive_tasks.TaskNotFound as exc:
        text = "".join(traceback.format_exception(exc))
    assert "reactive_tasks.TaskNotFound: cloudcoin task t: gone" in text
    assert backends.ArtifactError.__module__ == "reactive_tasks.backends"
    assert compose.TaskFailed.__module__ == "reactive_tasks.compose"
