"""Shared fixtures: one emulator server and one RabbitMQ per test session, reset per test."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
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


@pytest.fixture
def fast_iexec_blocks(emulator: EmulatorClient) -> Iterator[None]:
    """The emulated iExec chain mining every 0.05 s for one test, then back to 1 s."""
    chain = emulator.api_url("iexec") + "/_chain"
    httpx.post(chain, json={"block_time": 0.05})
    yield
    httpx.post(chain, json={"block_time": 1.0})


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


@pytest.fixture(scope="session")
def pulse_emulator_server(rabbitmq_server: RabbitMQServer) -> Iterator[EmulatorServer]:
    """An emulator publishing Taskcluster's Pulse messages to the session's RabbitMQ."""
    with EmulatorServer(pulse_url=rabbitmq_server.url) as server:
        yield server


@pytest.fixture
def pulse_emulator(
    pulse_emulator_server: EmulatorServer, rabbitmq: RabbitMQServer
) -> Iterator[EmulatorClient]:
    """A reset control client of it, once the broker is up and the publisher connected."""
    with EmulatorClient(pulse_emulator_server.url) as client:
        client.reset()
        deadline = time.monotonic() + 30
        while not client.pulse()["connected"]:
            assert time.monotonic() < deadline, "the emulator did not reconnect to RabbitMQ"
            time.sleep(0.05)
        yield client
