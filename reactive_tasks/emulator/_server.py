"""Run the emulator under uvicorn: in a background thread (tests, demos) or in the foreground."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any

import uvicorn
from starlette.types import ASGIApp

from .._net import bind_socket
from ._app import create_app

if TYPE_CHECKING:
    from ._taskcluster_pulse import TaskclusterPulse

__all__ = ["EmulatorServer", "bind_socket", "make_config", "url_for"]

_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 10.0
_PULSE_TIMEOUT = 30.0


def url_for(sock: socket.socket) -> str:
    """The base URL (http://host:port) of a bound socket."""
    host, port = sock.getsockname()[:2]
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def make_config(
    app: ASGIApp, *, log_level: str = "warning", log_config: Any = None
) -> uvicorn.Config:
    """uvicorn settings for the emulator: no lifespan, no access log, bounded shutdown.

    Idle connections are kept 75 s, as real API front ends do: with uvicorn's 5 s default, a
    client polling every 5 s (the iExec SDK's obsTask) races the server closing its kept-alive
    connection and sees "socket hang up".
    """
    return uvicorn.Config(
        app,
        lifespan="off",
        log_level=log_level,
        log_config=log_config,
        access_log=False,
        backlog=4096,
        timeout_graceful_shutdown=2,
        timeout_keep_alive=75,
    )


class EmulatorServer:
    """The emulator app served by uvicorn on its own loop in a background thread.

    Use as a context manager or with start()/stop(); `url` and `port` are known after start().
    With `pulse_url` (``amqp://user:password@host:port/``), Taskcluster's Pulse messages are
    published to that broker: start() waits until it is connected, stop() disconnects.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        app: ASGIApp | None = None,
        pulse_url: str | None = None,
    ) -> None:
        if app is not None and pulse_url is not None:
            raise ValueError("pass pulse_url to create_app() when you bring your own app")
        self.host = host
        self._requested_port = port
        self.app = app if app is not None else create_app(pulse_url=pulse_url)
        registry = getattr(getattr(self.app, "state", None), "emulator", None)
        #: The Pulse publisher (controls, change log), or None without `pulse_url`.
        self.pulse: TaskclusterPulse | None = getattr(registry, "pulse", None)
        self._owns_pulse = pulse_url is not None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._url: str | None = None
        self._port: int | None = None

    @property
    def url(self) -> str:
        """The base URL, e.g. http://127.0.0.1:54321 (kept after stop())."""
        if self._url is None:
            raise RuntimeError("EmulatorServer is not started")
        return self._url

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        if self._port is None:
            raise RuntimeError("EmulatorServer is not started")
        return self._port

    @property
    def running(self) -> bool:
        """True between a successful start() and stop()."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> EmulatorServer:
        """Start serving; returns once the server accepts connections."""
        if self._thread is not None:
            raise RuntimeError("EmulatorServer is already started")
        sock = bind_socket(self.host, self._requested_port)
        server = uvicorn.Server(make_config(self.app))
        thread = threading.Thread(
            target=server.run,
            kwargs={"sockets": [sock]},
            name="reactive-tasks-emulator",
            daemon=True,
        )
        self._sock, self._server, self._thread = sock, server, thread
        self._port = sock.getsockname()[1]
        self._url = url_for(sock)
        thread.start()
        deadline = time.monotonic() + _START_TIMEOUT
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the emulator server failed to start")
            time.sleep(0.002)
        if self.pulse is not None and not self.pulse.publisher.wait_connected(_PULSE_TIMEOUT):
            where = self.pulse.publisher.display_url
            self.stop()
            raise RuntimeError(f"the emulator could not connect to the Pulse broker at {where}")
        return self

    def stop(self) -> None:
        """Stop serving, join the thread and close the socket (idempotent)."""
        server, thread, sock = self._server, self._thread, self._sock
        self._server = self._thread = self._sock = None
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(_STOP_TIMEOUT)
            if thread.is_alive() and server is not None:
                server.force_exit = True
                thread.join(_STOP_TIMEOUT)
        if sock is not None:
            sock.close()
        if self._owns_pulse and self.pulse is not None:
            self.pulse.close()

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self._url or "stopped"
        return f"EmulatorServer({where})"
