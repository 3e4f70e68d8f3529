"""`python -m reactive_tasks.emulator [--port N]`: run the emulator in the foreground."""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Sequence

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from ._app import create_app
from ._server import bind_socket, make_config, url_for


class _AnnouncingServer(uvicorn.Server):
    """Prints the one 'listening' line once the server accepts connections."""

    def __init__(self, config: uvicorn.Config, url: str) -> None:
        super().__init__(config)
        self._url = url

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.should_exit:
            print(f"reactive-tasks emulator listening on {self._url}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and serve until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m reactive_tasks.emulator",
        description="Serve local emulators of the task APIs (control API under /_emulator).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    sock = bind_socket(args.host, args.port)
    try:
        config = make_config(create_app(), log_level=args.log_level, log_config=LOGGING_CONFIG)
        _AnnouncingServer(config, url_for(sock)).run(sockets=[sock])
    except KeyboardInterrupt:
        return 130
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
