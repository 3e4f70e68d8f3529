"""Shared fixtures: one emulator server per test session, and a freshly reset client per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from reactive_tasks.emulator import EmulatorClient, EmulatorServer


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[EmulatorServer]:
    """The emulator on a free loopback port, started once per test session."""
    with EmulatorServer() as server:
        yield server


@pytest.fixture
def emulator(emulator_server: EmulatorServer) -> Iterator[EmulatorClient]:
    """A control client of the session's emulator, reset first so tests are isolated."""
    with EmulatorClient(emulator_server.url) as client:
        client.reset()
        yield client
