"""The pytest plugin: a `task_emulator` fixture serving every emulated API for your own tests.

Registered through the `pytest11` entry point, so it loads wherever reactive-tasks is installed;
it imports the emulator (the `emulator` extra) only when a test asks for the fixture. With
``--task-emulator-pulse=amqp://...`` (or the ``task_emulator_pulse`` ini option) the emulator also
publishes Taskcluster's Pulse messages to that broker.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ._client import EmulatorClient
    from ._server import EmulatorServer

__all__ = ["pytest_addoption", "task_emulator", "task_emulator_server"]

_PULSE_HELP = "an AMQP URL: the task_emulator publishes Taskcluster's Pulse messages there"


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--task-emulator-pulse URL`` and the ``task_emulator_pulse`` ini option."""
    parser.addoption("--task-emulator-pulse", metavar="AMQP_URL", help=_PULSE_HELP)
    parser.addini("task_emulator_pulse", _PULSE_HELP, default="")


@pytest.fixture(scope="session")
def task_emulator_server(pytestconfig: pytest.Config) -> Iterator[EmulatorServer]:
    """The emulator on a free loopback port, started once per test session."""
    pulse = pytestconfig.getoption("task_emulator_pulse") or pytestconfig.getini(
        "task_emulator_pulse"
    )
    try:
        from ._server import EmulatorServer
    except ImportError as exc:
        missing = str(exc)  # failed outside the handler: no chained traceback
    else:
        with EmulatorServer(pulse_url=pulse or None) as server:
            yield server
        return
    pytest.fail(
        "the task_emulator fixture needs the emulator extra: "
        f"pip install 'reactive-tasks[emulator]' ({missing})",
        pytrace=False,
    )


@pytest.fixture
def task_emulator(task_emulator_server: EmulatorServer) -> Iterator[EmulatorClient]:
    """A client of the session's emulator, reset first so every test starts with no tasks."""
    from ._client import EmulatorClient

    with EmulatorClient(task_emulator_server.url) as client:
        client.reset()
        yield client
