"""The pytest plugin: a `task_emulator` fixture serving every emulated API for your own tests.

Registered through the `pytest11` entry point, so it loads wherever reactive-tasks is installed;
it imports the emulator (the `emulator` extra) only when a test asks for the fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ._client import EmulatorClient
    from ._server import EmulatorServer

__all__ = ["task_emulator", "task_emulator_server"]


@pytest.fixture(scope="session")
def task_emulator_server() -> Iterator[EmulatorServer]:
    """The emulator on a free loopback port, started once per test session."""
    try:
        from ._server import EmulatorServer
    except ImportError as exc:
        missing = str(exc)  # failed outside the handler: no chained traceback
    else:
        with EmulatorServer() as server:
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
