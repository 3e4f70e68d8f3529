"""A lean httpx transport on aiohttp: httpx stays the client API, aiohttp does the I/O cheaply.

Plain httpx spends several times more CPU per small request than aiohttp; polling thousands of
tasks is dominated by that cost, so the engine's default client sends through this transport.
Whole-body reads skip httpx altogether (``AiohttpTransport.fetch``: a parsed URL in, an
``HttpReply`` out); streamed reads go through ``handle_async_request``.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator, Iterable, Mapping

import aiohttp
import httpx
import yarl
from multidict import CIMultiDict

from ._redact import scrub
from ._reply import HttpReply

__all__ = [
    "DEFAULT_HEADERS",
    "AiohttpTransport",
    "ResponseTooLarge",
    "UnsupportedEncoding",
    "read_capped",
    "with_defaults",
]

#: The most bytes of a response body the library holds, counted after decoding.
DEFAULT_MAX_BODY = 16 * 1024 * 1024
_CHUNK = 64 * 1024
#: Sent unless a request sets them: only the encodings the size cap can decode are offered.
DEFAULT_HEADERS: Mapping[str, str] = {
    "User-Agent": "reactive-tasks",
    "Accept": "*/*",
    "Accept-Encoding": "gzip, deflate",
}


class ResponseTooLarge(httpx.DecodingError):
    """A response body was larger than the transport accepts."""


class UnsupportedEncoding(httpx.DecodingError):
    """A response body in a content encoding the library does not decode (it cannot bound it)."""


class _CappedDecoder:
    """Decodes a body chunk by chunk (identity, gzip, deflate), refusing past ``limit`` bytes.

    Decompression stops at the cap, so a small compressed body that would expand to gigabytes
    costs at most about ``limit`` bytes of memory.
    """

    def __init__(self, encoding: str | None, limit: int) -> None:
        self._limit = limit
        self._out: list[bytes] = []
        self._size = 0
        self._deflate_raw = False
        self._codings = [c.strip().lower() for c in (encoding or "").split(",") if c.strip()]
        self._codings = [c for c in self._codings if c != "identity"]
        for coding in self._codings:
            if coding not in ("gzip", "x-gzip", "deflate"):
                raise UnsupportedEncoding(f"the response uses content encoding {coding[:40]!r}")
        if len(self._codings) > 1:
            raise UnsupportedEncoding("the response is encoded more than once")
        self._zlib: zlib._Decompress | None = None
        if self._codings:
            gzip_wbits = zlib.MAX_WBITS | 16
            self._zlib = zlib.decompressobj(gzip_wbits if "gzip" in self._codings[0] else 0)

    def feed(self, data: bytes) -> None:
        if self._zlib is None:
            self._keep(data)
            return
        while data:
            room = self._limit - self._size
            try:
                out = self._zlib.decompress(data, room + 1)
            except zlib.error:
                if self._deflate_raw or self._size or self._codings[0] != "deflate":
                    raise httpx.DecodingError("the compressed body is corrupt") from None
                # some servers send raw deflate without the zlib header
                self._deflate_raw = True
                self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
                continue
            self._keep(out)
            data = self._zlib.unconsumed_tail
            if self._zlib.eof:
                return

    def _keep(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._limit:
            raise ResponseTooLarge(f"response body exceeds {self._limit} bytes once decoded")
        self._out.append(data)

    def finish(self) -> bytes:
        if self._zlib is not None:
            self._keep(self._zlib.flush(self._limit - self._size + 1))
        return b"".join(self._out)


async def read_capped(response: httpx.Response, limit: int | None = None) -> bytes:
    """Read a streamed httpx response whole, decoding it under the cap, then close it.

    For responses from any transport or client: httpx's own decoders have no bound.
    """
    limit = DEFAULT_MAX_BODY if limit is None else limit
    try:
        if hasattr(response, "_content"):
            content = response.content
            if len(content) > limit:
                raise ResponseTooLarge(f"response body exceeds {limit} bytes")
            return content
        decoder = _CappedDecoder(response.headers.get("content-encoding"), limit)
        async for chunk in response.aiter_raw():
            decoder.feed(chunk)
        content = decoder.finish()
    finally:
        await response.aclose()
    _settle(response, content)
    return content


def _settle(response: httpx.Response, content: bytes) -> None:
    """Make ``response`` hold ``content`` as its already-decoded body."""
    response.headers.pop("content-encoding", None)
    response.headers.pop("content-length", None)
    response._content = content


def _translated(
    exc: BaseException, timeout: float | None, request: httpx.Request | None = None
) -> BaseException:
    """An aiohttp or socket error as the httpx error it stands for, with a scrubbed message.

    aiohttp's exceptions keep the request (URL and headers, credentials included) in their text
    and attributes, so the result keeps only the kind of fault and its reason, and is raised
    with no link to the original (callers raise it outside the ``except`` block).
    """
    if isinstance(exc, httpx.HTTPError):
        return exc
    error: httpx.HTTPError
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        error = httpx.RemoteProtocolError("server disconnected", request=request)
    elif isinstance(exc, aiohttp.ClientConnectorError):
        error = httpx.ConnectError(f"cannot connect: {exc.os_error}", request=request)
    elif isinstance(exc, aiohttp.ServerTimeoutError):
        error = httpx.ReadTimeout(_timed_out(timeout), request=request)
    elif isinstance(exc, aiohttp.ClientResponseError):
        reason = _reason(exc.message)
        error = httpx.RemoteProtocolError(f"bad response: {reason}", request=request)
    elif isinstance(exc, aiohttp.ClientPayloadError):
        reason = _reason(str(exc))
        error = httpx.RemoteProtocolError(f"bad response body: {reason}", request=request)
    elif isinstance(exc, TimeoutError):  # before OSError: TimeoutError is one since 3.11
        error = httpx.TimeoutException(_timed_out(timeout), request=request)
    elif isinstance(exc, aiohttp.ClientError | OSError):
        reason = _reason(str(exc)) or type(exc).__name__
        error = httpx.ReadError(f"network error: {reason}", request=request)
    else:
        return exc
    return error


def _reason(text: str) -> str:
    """The gist of a low-level error text (its first two lines), scrubbed and capped."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return scrub(" ".join(lines[:2]))[:200]


def _timed_out(timeout: float | None) -> str:
    """"request timed out after N s", with the request's own bound when it has one."""
    return f"request timed out after {timeout:g} s" if timeout is not None else "request timed out"


def _bound(request: httpx.Request) -> float | None:
    """The longest of an httpx request's timeouts, or None."""
    bounds = [t for t in request.extensions.get("timeout", {}).values() if t is not None]
    return max(bounds) if bounds else None


class _StreamBody(httpx.AsyncByteStream):
    """Hands an aiohttp body to httpx chunk by chunk, for callers that stream (artifacts)."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks = self._response.content.iter_chunked(64 * 1024).__aiter__()
        while True:
            failure: BaseException | None = None
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                return
            except Exception as exc:
                failure = _translated(exc, _bound(self._request), self._request)
            if failure is not None:
                raise failure
            yield chunk

    async def aclose(self) -> None:
        self._response.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Sends requests over one aiohttp session, created lazily on the running loop.

    ``fetch`` is the lean path: a parsed URL and ready headers in, status, headers and the
    whole decoded body (up to ``max_body`` bytes) out. As an httpx transport it reads bodies
    the same way unless the request carries the extension ``{"stream": True}``, in which case
    the caller reads them as an httpx stream.
    """

    def __init__(
        self,
        *,
        max_connections: int = 100,
        keepalive_expiry: float = 30.0,
        max_body: int | None = None,
    ) -> None:
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._max_body = DEFAULT_MAX_BODY if max_body is None else max_body
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
            )
        return self._session

    def _timeout(self, key: tuple[float | None, ...]) -> aiohttp.ClientTimeout:
        """One aiohttp timeout per (connect, read, pool) bounds, made once."""
        timeout = self._timeouts.get(key)
        if timeout is None:
            # One timer per request instead of three: the read bound covers the whole exchange.
            total = max((t for t in key if t is not None), default=None)
            timeout = aiohttp.ClientTimeout(total=total, sock_connect=key[0])
            if len(self._timeouts) >= 64:  # one per policy in use; bounded all the same
                self._timeouts.clear()
            self._timeouts[key] = timeout
        return timeout

    async def fetch(
        self,
        method: str,
        url: yarl.URL,
        headers: CIMultiDict[str],
        body: bytes | None,
        timeout: float,
        max_body: int | None = None,
    ) -> HttpReply:
        """One exchange, its body read whole and decoded under the cap; no httpx object made.

        ``headers`` are sent as given (``with_defaults`` makes them); errors come out as the
        httpx errors they stand for, scrubbed, as from ``handle_async_request``.
        """
        failure: BaseException | None = None
        try:
            session = self._get_session()
            response = await session.request(
                method,
                url,
                headers=headers,
                data=body or None,
                allow_redirects=False,
                timeout=self._timeout((timeout, timeout, timeout)),
                compress=False,
            )
            try:
                limit = self._max_body if max_body is None else min(max_body, self._max_body)
                content = await _read_capped(response, limit)
            finally:
                response.release()
            return HttpReply(response.status, response.headers, content)
        except Exception as exc:
            failure = _translated(exc, timeout)
        # raised here, outside the handler, so that no link to the aiohttp error remains
        raise failure

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        failure: BaseException | None = None
        try:
            return await self._exchange(request)
        except Exception as exc:
            failure = _translated(exc, _bound(request), request)
        # raised here, outside the handler, so that no link to the aiohttp error remains
        raise failure

    async def _exchange(self, request: httpx.Request) -> httpx.Response:
        session = self._get_session()
        bounds = request.extensions.get("timeout", {})
        timeout = self._timeout((bounds.get("connect"), bounds.get("read"), bounds.get("pool")))
        body = request.content if request.method not in ("GET", "HEAD") else None
        headers = with_defaults((k, v) for k, v in request.headers.multi_items() if k != "host")
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
            content = await _read_capped(response, self._max_body)
        finally:
            response.release()
        result = httpx.Response(
            response.status,
            headers=list(response.raw_headers),
            stream=httpx.ByteStream(content),
            request=request,
        )
        # Decoded here, under the cap: httpx is handed the body as already read.
        _settle(result, content)
        return result

    async def aclose(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()
            # aiohttp closes sockets on the next loop iteration; let it, so none outlive us.
            await asyncio.sleep(0)


def with_defaults(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> CIMultiDict[str]:
    """``headers`` plus each of ``DEFAULT_HEADERS`` they lack, as the dict aiohttp sends."""
    merged: CIMultiDict[str] = CIMultiDict(headers)
    for name, value in DEFAULT_HEADERS.items():
        if name not in merged:
            merged[name] = value
    return merged


async def _read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """An aiohttp response's whole body, decoded, refused past ``limit`` bytes."""
    encoding = response.headers.get("content-encoding")
    length = response.content_length
    if length is not None and length > limit:
        raise ResponseTooLarge(f"response body of {length} bytes is too large")
    if length is not None and not encoding:
        return await response.read()  # the common case: one read, bounded by the length
    decoder = _CappedDecoder(encoding, limit)
    while True:
        chunk = await response.content.read(_CHUNK)
        if not chunk:
            break
        decoder.feed(chunk)
    return decoder.finish()
