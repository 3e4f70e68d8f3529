"""`python -m reactive_tasks.emulator [--port N] [--pulse URL]`: serve in the foreground."""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from collections.abc import Sequence
from typing import NoReturn
from urllib.parse import urlsplit

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount, Route
from uvicorn.config import LOGGING_CONFIG

from .._redact import redact_url
from ._app import create_app
from ._server import bind_socket, make_config, url_for

#: Exit status for a port or host that cannot be served (as the CLI's usage errors).
EXIT_USAGE = 64


def describe(app: Starlette, url: str) -> list[str]:
    """What the start banner lists: every API's base URL, then each control route."""
    apis: list[str] = []
    control: list[str] = []
    for mount in app.routes:
        if not isinstance(mount, Mount):
            continue
        if mount.path != "/_emulator":
            apis.append(f"  {mount.path.lstrip('/'):<12} {url}{mount.path}")
            continue
        for route in mount.routes:
            if isinstance(route, Route):
                verbs = ",".join(sorted((route.methods or set()) - {"HEAD"}))
                control.append(f"  {verbs:<7} {url}{mount.path}{route.path}")
    return ["APIs:", *apis, "control API:", *control]


class _AnnouncingServer(uvicorn.Server):
    """Prints the 'listening' line, then the APIs and control routes, once connections work."""

    def __init__(self, config: uvicorn.Config, url: str, banner: Sequence[str]) -> None:
        super().__init__(config)
        self._url = url
        self._banner = banner

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.should_exit:
            lines = [f"reactive-tasks emulator listening on {self._url}", *self._banner]
            print("\n".join(lines), flush=True)


class _Parser(argparse.ArgumentParser):
    """Usage errors exit with EXIT_USAGE, like the ``reactive-tasks`` command's."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message}\n")


def _refuse(message: str) -> int:
    print(f"reactive-tasks emulate: {message}", file=sys.stderr)
    return EXIT_USAGE


def _show_pulse_warnings() -> None:
    """The broker going away and coming back, on stderr (the library's loggers stay quiet)."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
    logging.getLogger("reactive_tasks.emulator.pulse").addHandler(handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and serve until interrupted; a port that cannot be served exits 64."""
    parser = _Parser(
        prog="python -m reactive_tasks.emulator",
        description="Serve local emulators of the task APIs (control API under /_emulator).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--log-level", default="warning")
    parser.add_argument(
        "--pulse", metavar="AMQP_URL",
        help="publish Taskcluster's Pulse messages to this broker (amqp://user:pass@host:port/)",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        return _refuse(f"invalid port {args.port}: use 0 to 65535 (0 picks a free port)")
    if args.pulse is not None and urlsplit(args.pulse).scheme not in ("amqp", "amqps"):
        return _refuse(f"invalid --pulse {redact_url(args.pulse)}: use amqp:// or amqps://")
    try:
        sock = bind_socket(args.host, args.port)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return _refuse(f"cannot listen on {args.host}:{args.port}: {reason}")
    app = None
    if args.pulse is not None:
        _show_pulse_warnings()
    try:
        app = create_app(pulse_url=args.pulse)
        url = url_for(sock)
        config = make_config(app, log_level=args.log_level, log_config=LOGGING_CONFIG)
        banner = describe(app, url)
        if args.pulse is not None:
            banner.append(f"Pulse: Taskcluster messages published to {redact_url(args.pulse)}")
        _AnnouncingServer(config, url, banner).run(sockets=[sock])
    except KeyboardInterrupt:
        return 130
    finally:
        sock.close()
        pulse = app.state.emulator.pulse if app is not None else None
        if pulse is not None:
            pulse.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
