"""Bounded after decoding: the body cap counts decoded bytes, and decoding stops at the cap.

A HostileServer answers with a gzip (or deflate) bomb: 64 MiB of zeros in about 64 KiB on the
wire. With the cap lowered to 1 MiB, every way the library can read a body (its own aiohttp
transport, a user's httpx client, a user's httpx transport) must refuse it with a
``ProtocolError`` while holding at most a small multiple of the cap.
"""

from __future__ import annotations

import functools
import tracemalloc
import zlib
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from hostile import HostileServer, RawRequest, Reply

from reactive_tasks import PollPolicy, ProtocolError
from reactive_tasks import _transport as transport
from reactive_tasks.backends import CloudCoinBackend

CAP = 1024 * 1024
BOMB_SIZE = 64 * 1024 * 1024
TASK = "6a1f1e9c-2f0b-4f7e-9f3c-0c1d2e3f4a5b"
POLICY = PollPolicy(interval=0.02, jitter=0.0, request_timeout=20.0, retry_budget=0)


@functools.cache
def bomb(encoding: str) -> bytes:
    """64 MiB of JSON (one long string) compressed by ``encoding``."""
    body = b'{"status": "' + b"0" * BOMB_SIZE + b'"}'
    packer = zlib.compressobj(9, zlib.DEFLATED, 31 if encoding == "gzip" else 15)
    return packer.compress(body) + packer.flush()


SMALL = b'{"status": "small"}'


def serve(encoding: str) -> Callable[[RawRequest], Reply]:
    """The bomb for the task's path; a small answer in the same encoding for ``/small``."""
    payload = bomb(encoding)
    assert len(payload) < CAP // 4, "small on the wire, far below the cap"
    packer = zlib.compressobj(9, zlib.DEFLATED, 31 if encoding == "gzip" else 15)
    small = packer.compress(SMALL) + packer.flush()
    headers = {"Content-Type": "application/json", "Content-Encoding": encoding}
    return lambda request: Reply.of(
        200, small if request.path == "/small" else payload, headers=headers
    )


CLIENTS: dict[str, Callable[[], dict[str, Any]]] = {
    "aiohttp-transport": lambda: {},
    "user-client": lambda: {"client": httpx.AsyncClient()},
    "user-transport": lambda: {"transport": httpx.AsyncHTTPTransport()},
}


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
@pytest.mark.parametrize("how", list(CLIENTS))
async def test_a_compression_bomb_is_refused_within_a_small_multiple_of_the_cap(
    how: str, encoding: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transport, "DEFAULT_MAX_BODY", CAP)
    with HostileServer(serve(encoding)) as server:
        backend = CloudCoinBackend(server.url, policy=POLICY, **CLIENTS[how]())
        tracemalloc.start()
        try:
            assert (await backend.session().send("GET", "/small")).json() == {"status": "small"}
            with pytest.raises(ProtocolError, match="exceeds"):
                await backend.status(TASK)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            await backend.aclose()
    assert peak < 8 * CAP, f"peak {peak / CAP:.1f} x the cap"


async def test_an_encoding_that_cannot_be_bounded_is_refused() -> None:
    reply = Reply.of(200, b"\x0b\x02\x80{}\x03", headers={"Content-Encoding": "compress"})
    with HostileServer(lambda request: reply) as server:
        backend = CloudCoinBackend(server.url, policy=POLICY)
        try:
            with pytest.raises(ProtocolError, match="content encoding 'compress'"):
                await backend.status(TASK)
        finally:
            await backend.aclose()
