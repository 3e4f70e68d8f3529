"""A deliberately misbehaving HTTP server for the fault-matrix tests (not the emulator).

It speaks raw HTTP/1.1 over a real loopback socket from its own thread, so a test can answer with
anything: a bad status line, a gzip bomb, a redirect to another origin, a body that never ends.
Each test hands it a ``handler(request) -> Reply`` and reads back every request it received.

    with HostileServer(lambda req: Reply.json({"ok": True})) as server:
        ... server.url ...          # "http://127.0.0.1:PORT"
        server.requests             # list[RawRequest], in arrival order
"""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

__all__ = ["HostileServer", "RawRequest", "Reply"]


@dataclass
class RawRequest:
    """One request as the server read it; header names are lower-cased."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    """What to write back: ``raw`` bytes as they are, then close when ``close`` is set.

    ``delay`` waits before writing; ``hang`` never answers (until the client gives up).
    """

    raw: bytes = b""
    delay: float = 0.0
    close: bool = False
    hang: bool = False
    chunks: list[bytes] = field(default_factory=list)

    @staticmethod
    def of(
        status: int,
        body: bytes = b"",
        *,
        headers: dict[str, str] | None = None,
        reason: str = "X",
        delay: float = 0.0,
    ) -> Reply:
        """A well-formed response with a Content-Length."""
        head = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        return Reply(("\r\n".join(head) + "\r\n\r\n").encode() + body, delay=delay)

    @staticmethod
    def json(payload: Any, status: int = 200, **kw: Any) -> Reply:
        headers = {"Content-Type": "application/json", **kw.pop("headers", {})}
        return Reply.of(status, json.dumps(payload).encode(), headers=headers, **kw)

    @staticmethod
    def gzip_json(payload_bytes: bytes, status: int = 200) -> Reply:
        """``payload_bytes`` gzipped on the wire, with Content-Encoding: gzip."""
        return Reply.of(
            status,
            gzip.compress(payload_bytes, compresslevel=9),
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )

    @staticmethod
    def redirect(location: str, status: int = 303) -> Reply:
        return Reply.of(status, headers={"Location": location})

    @staticmethod
    def garbage(raw: bytes = b"HTTP/1.1 2oo NOT A STATUS LINE\r\n\r\n") -> Reply:
        """Bytes that are not HTTP, then close."""
        return Reply(raw, close=True)


Handler = Callable[[RawRequest], "Reply | Awaitable[Reply]"]


class HostileServer:
    """Runs ``handler`` for every request on 127.0.0.1 in a daemon thread; a context manager."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[RawRequest] = []
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> HostileServer:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        fut.result(timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                self.requests.append(request)
                reply = self.handler(request)
                if not isinstance(reply, Reply):
                    reply = await reply
                if reply.delay:
                    await asyncio.sleep(reply.delay)
                if reply.hang:
                    await asyncio.sleep(3600)
                writer.write(reply.raw)
                for chunk in reply.chunks:
                    writer.write(chunk)
                    await writer.drain()
                await writer.drain()
                if reply.close:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()


async def _read_request(reader: asyncio.StreamReader) -> RawRequest | None:
    line = await reader.readline()
    if not line:
        return None
    method, target, _ = line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    while True:
        raw = await reader.readline()
        if raw in (b"\r\n", b"\n", b""):
            break
        name, _, value = raw.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    body = await reader.readexactly(length) if length else b""
    return RawRequest(method, target, headers, body)
