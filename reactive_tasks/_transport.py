"""A lean httpx transport on aiohttp: httpx stays the client API, aiohttp does the I/O cheaply.

Plain httpx spends several times more CPU per small request than aiohttp; polling thousands of
tasks is dominated by that cost, so the engine's default client sends through this transport.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import aiohttp
import httpx

__all__ = ["AiohttpTransport", "ResponseTooLarge"]

DEFAULT_MAX_BODY = 16 * 1024 * 1024


class ResponseTooLarge(httpx.DecodingError):
    """A response body was larger than the transport accepts."""


@contextlib.contextmanager
def _mapped_errors(request: httpx.Request) -> Iterator[None]:
    try:
        yield
    except httpx.HTTPError:
        raise
    except aiohttp.ServerDisconnectedError as exc:
        raise httpx.RemoteProtocolError(f"server disconnected: {exc}", request=request) from exc
    except aiohttp.ClientConnectorError as exc:
        raise httpx.ConnectError(f"cannot connect: {exc.os_error}", request=request) from exc
    except aiohttp.ServerTimeoutError as exc:
        raise httpx.ReadTimeout(f"read timed out: {exc}", request=request) from exc
    except (aiohttp.ClientPayloadError, aiohttp.ClientResponseError) as exc:
        raise httpx.RemoteProtocolError(f"bad response: {exc}", request=request) from exc
    except TimeoutError as exc:  # before OSError: TimeoutError is one since Python 3.11
        raise httpx.TimeoutException(_timed_out(request), request=request) from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise httpx.ReadError(f"network error: {exc}", request=request) from exc


def _timed_out(request: httpx.Request) -> str:
    """"request timed out after N s", with the request's own bound when it carries one."""
    bounds = [t for t in request.extensions.get("timeout", {}).values() if t is not None]
    return f"request timed out after {max(bounds):g} s" if bounds else "request timed out"


class _StreamBody(httpx.AsyncByteStream):
    """Hands an aiohttp body to httpx chunk by chunk, for callers that stream (artifacts)."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _mapped_errors(self._request):
            async for chunk in self._response.content.iter_chunked(64 * 1024):
                yield chunk

    async def aclose(self) -> None:
        self._response.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Sends httpx requests over one aiohttp session, created lazily on the running loop.

    Bodies are read whole (up to ``max_body`` bytes) unless the request carries the extension
    ``{"stream": True}``, in which case the caller reads them as an httpx stream.
    """

    def __init__(
        self,
        *,
        max_connections: int = 100,
        keepalive_expiry: float = 30.0,
        max_body: int = DEFAULT_MAX_BODY,
    ) -> None:
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._max_body = max_body
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._timeouts: dict[tuple[float | None, ...], aiohttp.ClientTimeout] = {}

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("this transport is closed")
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                limit_per_host=0,
                keepalive_timeout=self._keepalive_expiry,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    def _timeout(self, timeouts: dict[str, float | None]) -> aiohttp.ClientTimeout:
        key = (timeouts.get("connect"), timeouts.get("read"), timeouts.get("pool"))
        timeout = self._timeouts.get(key)
        if timeout is None:
            # One timer per request instead of three: the read bound covers the whole exchange.
            total = max((t for t in key if t is not None), default=None)
            timeout = aiohttp.ClientTimeout(total=total, sock_connect=key[0])
            if len(self._timeouts) >= 64:  # one per policy in use; bounded all the same
                self._timeouts.clear()
            self._timeouts[key] = timeout
        return timeout

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._get_session()
        timeout = self._timeout(request.extensions.get("timeout", {}))
        body = request.content if request.method not in ("GET", "HEAD") else None
        headers = [(k, v) for k, v in request.headers.multi_items() if k != "host"]
        with _mapped_errors(request):
            response = await session.request(
                request.method,
                str(request.url),
                headers=headers,
                data=body or None,
                allow_redirects=False,
                timeout=timeout,
                compress=False,
            )
            if request.extensions.get("stream"):
                return httpx.Response(
                    response.status,
                    headers=list(response.raw_headers),
                    stream=_StreamBody(response, request),
                    request=request,
                )
            try:
                content = await self._read_capped(response, request)
            finally:
                response.release()
        result = httpx.Response(
            response.status,
            headers=list(response.raw_headers),
            stream=httpx.ByteStream(content),
            request=request,
        )
        if not response.headers.get("content-encoding"):
            # Nothing to decode: hand httpx the body as already read, sparing its decoder chain.
            result._content = content
        return result

    async def _read_capped(
        self, response: aiohttp.ClientResponse, request: httpx.Request
    ) -> bytes:
        limit = self._max_body
        length = response.content_length
        if length is not None:
            if length > limit:
                raise ResponseTooLarge(f"response body of {length} bytes is too large")
            return await response.read()
        content = b""
        while not response.content.at_eof():
            chunk = await response.content.read(limit + 1 - len(content))
            if not chunk:
                break
            content += chunk
            if len(content) > limit:
                raise ResponseTooLarge(f"response body exceeds {limit} bytes", request=request)
        return content

    async def aclose(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()
            # aiohttp closes sockets on the next loop iteration; let it, so none outlive us.
            await asyncio.sleep(0)
