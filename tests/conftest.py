"""Shared fixtures: one emulator server and one RabbitMQ per test session, reset per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from rabbitmq_server import RabbitMQServer

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


@pytest.fixture(scope="session")
def rabbitmq_server() -> Iterator[RabbitMQServer]:
    """A private RabbitMQ node on free loopback ports, started once per session when first used.

    Skips with the reason where ``rabbitmq-server`` is missing or cannot start (fails in CI).
    """
    server = RabbitMQServer()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def rabbitmq(rabbitmq_server: RabbitMQServer) -> RabbitMQServer:
    """The session's broker, started again if an earlier test stopped or killed it."""
    rabbitmq_server.start()
    return rabbitmq_server
