"""The HTTP session: one per backend and event loop, the only place a source's requests go through.

It owns the I/O a source must not: the client and the lean transport, the concurrency cap, the
decoded-size cap, status classification (5xx/429 transient, 401/403 refused), the auth hook with
single-flight renewal, redirects that drop credentials off-origin, retries of idempotent reads
outside a poll, sends-once of everything else, and a single-flight TTL cache for shared reads.
Foreign exceptions are turned here into the kinds the engine knows; the engine imports no HTTP.

Whole-body reads on the default transport take the lean path: each URL is parsed once (a
bounded cache) and the answer is an ``HttpReply``, with no httpx request or response built.
A user's own httpx client or transport is sent through httpx as before.
"""

from __future__ import annotations

import asyncio
import email.utils
import json as jsonlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar, overload
from urllib.parse import urljoin, urlsplit

import httpx
import yarl

from ._errors import (
    AuthenticationError,
    BackendError,
    BackendUnavailable,
    ProtocolError,
    ReactiveTasksError,
    TransientFault,
)
from ._jsonstream import TextMemo
from ._policy import PollPolicy
from ._readqueue import ReadQueue
from ._redact import Secrets, origin_of, scrub
from ._reply import HttpReply
from ._retry import call_with_retries, is_transient, register_faults
from ._transport import (
    AiohttpTransport,
    ResponseTooLarge,
    UnsupportedEncoding,
    read_capped,
    with_defaults,
)
from ._types import TaskRef, current_request_timeout, in_poll

__all__ = ["Auth", "HttpReply", "Session", "SessionOwner", "parse_retry_after"]

T = TypeVar("T")

register_faults(transient=(httpx.TransportError,), timeouts=(httpx.TimeoutException,))

_log = logging.getLogger("reactive_tasks.http")
_REQUEST_CACHE_SIZE = 50_000
#: Parsed URLs kept by a session: one per watched task's poll URL, oldest dropped first.
_URL_CACHE_SIZE = 100_000
_MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CACHE_SIZE = 10_000


@dataclass(slots=True)
class _Call:
    """One request as the session carries it through signing, redirects and the transport."""

    method: str
    url: str
    task_id: str | None
    params: Mapping[str, Any] | None
    body: bytes | None
    headers: Mapping[str, str] | None
    stream: bool
    signed: bool = False  # the auth hook added headers: only then can a renewal help


class Auth(Protocol):
    """A backend's credentials, applied by the session: Hawk, bearer tokens, API keys."""

    async def sign(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> Mapping[str, str]:
        """Headers to add to a request bound for the backend's own origin."""
        ...

    async def refused(self, status: int) -> bool:
        """Renew after a 401/403 (refresh, log in again); True to send the request once more.

        The session runs one renewal at a time: concurrent refusals wait for it and resend.
        """
        ...


class SessionOwner(Protocol):
    """What a session reads from its backend (``backends._base.Backend`` provides it)."""

    @property
    def name(self) -> str: ...
    @property
    def base_url(self) -> str: ...
    @property
    def policy(self) -> PollPolicy: ...
    @property
    def secrets(self) -> Secrets: ...
    @property
    def max_body(self) -> int | None: ...
    @property
    def auth(self) -> Auth | None: ...

    def display_id(self, task_id: str) -> str: ...

    def refusal_reason(self, response: HttpReply) -> str | None: ...

    def protocol_error(self, message: str, task_id: str | None = None) -> ProtocolError: ...


class Session:
    """One backend's HTTP on one event loop. Made and closed by the backend's loop bookkeeping."""

    def __init__(
        self,
        owner: SessionOwner,
        *,
        headers: Mapping[str, str],
        client: httpx.AsyncClient | None,
        transport: httpx.AsyncBaseTransport | None,
        max_concurrency: int,
    ) -> None:
        self.owner = owner
        owner.secrets.active = True  # its secrets may now be in flight: scrub all logs of them
        self.headers = dict(headers)
        self.transport: httpx.AsyncBaseTransport | None = None
        if client is not None:
            self.client, self.owns_client = client, False
        else:
            self.transport = transport or AiohttpTransport(max_connections=max_concurrency)
            timeout = httpx.Timeout(owner.policy.request_timeout)
            self.client = httpx.AsyncClient(transport=self.transport, timeout=timeout)
            self.owns_client = True
        #: The lean path's transport: set when the session sends through its own.
        self.lean = self.transport if isinstance(self.transport, AiohttpTransport) else None
        self.max_concurrency = max_concurrency
        #: The per-task reads of this backend on this loop, at most ``max_concurrency`` at once.
        self.reads = ReadQueue(max_concurrency, self.closed_error)
        #: Set when closing begins: from then on nothing is sent and no read starts.
        self.closed = False
        #: Each task's slim key in many-task answers and, once it read the same twice, its
        #: entry's text: an entry with that very text is not decoded again (see ``TextMemo``).
        self.entries = TextMemo()
        self._origin = origin_of(owner.base_url)
        parts = urlsplit(owner.base_url)
        self._origin_prefix = f"{parts.scheme}://{parts.netloc}/"
        self._requests: dict[tuple[str, float], httpx.Request] = {}
        self._urls: OrderedDict[Hashable, tuple[yarl.URL, str]] = OrderedDict()
        self._wire_headers = with_defaults(self.headers)  # the lean path's usual headers
        self._renewal: asyncio.Future[bool] | None = None
        self._cache: OrderedDict[Hashable, tuple[float, asyncio.Future[Any]]] = OrderedDict()
        self._next_sweep = 0.0

    # -- requests ------------------------------------------------------------------------

    @overload
    async def request(
        self,
        method: str,
        url_or_path: str,
        *,
        idempotent: bool | None = None,
        task_id: str | None = None,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        stream: Literal[False] = False,
        follow_redirects: bool = False,
        what: str | None = None,
    ) -> HttpReply: ...

    @overload
    async def request(
        self,
        method: str,
        url_or_path: str,
        *,
        idempotent: bool | None = None,
        task_id: str | None = None,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        stream: Literal[True],
        follow_redirects: bool = False,
        what: str | None = None,
    ) -> httpx.Response: ...

    async def request(
        self,
        method: str,
        url_or_path: str,
        *,
        idempotent: bool | None = None,
        task_id: str | None = None,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
        follow_redirects: bool = False,
        what: str | None = None,
    ) -> HttpReply | httpx.Response:
        """Send a request and return any answer that is not a fault.

        5xx and 429 are faults (``TransientFault`` with Retry-After), 401/403 end in
        ``AuthenticationError`` (after one renewal by the auth hook). ``idempotent`` (default:
        True for GET and HEAD) reads are retried under the backend's policy when called outside
        a poll (inside one the hub retries); other requests are sent exactly once and a
        transient fault becomes ``BackendUnavailable`` naming ``what``. The answer is an
        ``HttpReply`` read whole, or with ``stream=True`` an ``httpx.Response`` to read.
        """
        if idempotent is None:
            idempotent = method in ("GET", "HEAD")
        if idempotent and in_poll():  # the hot path: the hub retries polls itself
            return await self.send(
                method, url_or_path, task_id=task_id, params=params, json=json,
                headers=headers, stream=stream, follow_redirects=follow_redirects,
            )

        def once() -> Awaitable[HttpReply | httpx.Response]:
            return self.send(
                method, url_or_path, task_id=task_id, params=params, json=json,
                headers=headers, stream=stream, follow_redirects=follow_redirects,
            )

        if not idempotent:
            return await self.send_once(once(), what=what or f"{method} request", task_id=task_id)
        return await self.retried(once, task_id=task_id)

    async def retried(
        self,
        read: Callable[[], Awaitable[T]],
        *,
        task_id: str | None = None,
        policy: PollPolicy | None = None,
    ) -> T:
        """``read()``, an idempotent read of one or more requests and their parsing, retried
        as one unit under ``policy`` (default: the backend's) outside a poll; inside a poll
        awaited once (the hub retries). Requests within it are sent once each."""
        if in_poll():
            return await read()
        ref = TaskRef("" if task_id is None else task_id)
        chosen = policy or self.owner.policy
        return await call_with_retries(self.owner, ref, read, chosen)  # type: ignore[arg-type]

    @overload
    async def send(
        self,
        method: str,
        url_or_path: str,
        *,
        task_id: str | None = None,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        stream: Literal[False] = False,
        follow_redirects: bool = False,
    ) -> HttpReply: ...

    @overload
    async def send(
        self,
        method: str,
        url_or_path: str,
        *,
        task_id: str | None = None,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        stream: bool,
        follow_redirects: bool = False,
    ) -> HttpReply | httpx.Response: ...

    async def send(
        self,
        method: str,
        url_or_path: str,
        *,
        task_id: str | None = None,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
        follow_redirects: bool = False,
    ) -> HttpReply | httpx.Response:
        """One exchange (plus redirects and one renewal), classified; never retried."""
        if self.closed:
            raise self.closed_error()
        url = url_or_path if "://" in url_or_path else self.owner.base_url + url_or_path
        body: bytes | None = None
        if json is not None:
            body = jsonlib.dumps(json, separators=(",", ":"), ensure_ascii=False).encode()
            headers = {**(headers or {}), "content-type": "application/json"}
        call = _Call(method, url, task_id, params, body, headers, stream)
        for _ in range(_MAX_REDIRECTS + 1):
            response = await self._authorized(call)
            if not follow_redirects or response.status_code not in _REDIRECTS:
                return response
            location = response.headers.get("location")
            if not location:
                return response
            await response.aclose()
            call.url = urljoin(call.url, location)
            call.params = None
            if response.status_code == 303 or (
                response.status_code in (301, 302) and call.method == "POST"
            ):
                call.method, call.body = "GET", None
                if call.headers:
                    call.headers = {
                        k: v for k, v in call.headers.items() if k.lower() != "content-type"
                    }
        raise self.owner.protocol_error(f"more than {_MAX_REDIRECTS} redirects", task_id)

    async def send_once(
        self, request: Awaitable[T], *, what: str, task_id: str | None = None
    ) -> T:
        """Await a request that must not be repeated; a transient fault ends it at once as
        ``BackendUnavailable`` (wrapping the fault); typed errors pass through."""
        try:
            return await request
        except Exception as exc:
            if isinstance(exc, BackendError) or not is_transient(exc):
                raise
            owner = self.owner
            shown = None if task_id is None else owner.display_id(task_id)
            text = str(exc) or type(exc).__name__
            err = BackendUnavailable(
                f"{what} failed and was not retried: {text}", backend=owner.name, task_id=shown
            )
            raise err from exc

    def each(
        self, refs: Sequence[TaskRef], read: Callable[[TaskRef], Awaitable[T]]
    ) -> AsyncIterator[tuple[TaskRef, T | BaseException]]:
        """``read`` every ref under the concurrency cap, yielding answers (or errors) as they
        come: the batch hook of an API without a batch endpoint. Reads of every call share one
        queue, first asked first served, so a slow round is never overtaken by the next."""
        if self.closed:
            raise self.closed_error()
        return self.reads.each(refs, read)

    # -- the shared-read cache -------------------------------------------------------------

    async def cached(
        self, key: Hashable, loader: Callable[[], Awaitable[T]], *, ttl: float = 60.0
    ) -> T:
        """``loader()``'s result, shared for ``ttl`` seconds: concurrent callers of one key
        await one load, failures are not kept, the least recently used entries go first."""
        now = time.monotonic()
        entry = self._cache.get(key)
        if entry is not None and (entry[0] > now or not entry[1].done()):
            self._cache.move_to_end(key)
            return await asyncio.shield(entry[1])
        if now >= self._next_sweep:
            self._next_sweep = now + ttl / 4
            self._sweep(now)
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._cache[key] = (now + ttl, future)
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        try:
            value = await loader()
        except BaseException as exc:
            if self._cache.get(key, (0.0, None))[1] is future:
                del self._cache[key]
            future.set_exception(exc)
            future.exception()  # marked retrieved: waiters re-raise it, nobody else must
            raise
        future.set_result(value)
        return value

    def peek(self, key: Hashable) -> Any:
        """The value cached for ``key`` if loaded and not expired, else None; loads nothing."""
        entry = self._cache.get(key)
        if entry is None or entry[0] <= time.monotonic() or not entry[1].done():
            return None
        self._cache.move_to_end(key)
        return None if entry[1].exception() is not None else entry[1].result()

    @property
    def cached_count(self) -> int:
        """How many entries the shared-read cache holds (loading, or loaded and not expired)."""
        self._sweep(time.monotonic())
        return len(self._cache)

    def _sweep(self, now: float) -> None:
        """Drop the loaded entries whose time is up (amortized by ``cached``: every ttl/4)."""
        stale = [k for k, (until, f) in self._cache.items() if until <= now and f.done()]
        for key in stale:
            del self._cache[key]

    def forget(self, key: Hashable) -> None:
        """Drop ``key`` from the shared-read cache (a record that changed)."""
        self._cache.pop(key, None)

    # -- closing ---------------------------------------------------------------------------

    def begin_close(self) -> None:
        """Refuse work from now on: no read starts, nothing is sent (``aclose`` then ends it)."""
        self.closed = True
        self.reads.closed = True

    def closed_error(self) -> BackendUnavailable:
        """What a request of a closed session fails with."""
        return BackendUnavailable(f"{self.owner.name} was closed", backend=self.owner.name)

    async def aclose(self) -> None:
        """Stop the reads, close the connections this session owns and forget its caches."""
        self.begin_close()
        await self.reads.aclose()
        self._requests.clear()
        self._urls.clear()
        self._cache.clear()
        if self.owns_client:
            await self.client.aclose()

    # -- the exchange ----------------------------------------------------------------------

    async def _authorized(self, call: _Call) -> HttpReply | httpx.Response:
        """One exchange; on a refusal the auth hook may renew once (single-flight) and resend."""
        renewed = False
        while True:
            try:
                return await self._classified(call)
            except AuthenticationError as refusal:
                auth = self.owner.auth
                status = getattr(refusal, "status", 401)
                if renewed or auth is None or not call.signed:
                    raise
                renewed = True
                if not await self._renew(auth, status):
                    raise

    async def _renew(self, auth: Auth, status: int) -> bool:
        if self._renewal is not None and not self._renewal.done():
            return await asyncio.shield(self._renewal)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._renewal = future
        try:
            ok = await auth.refused(status)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()
            raise
        future.set_result(ok)
        return ok

    def _same_origin(self, url: str) -> bool:
        return url.startswith(self._origin_prefix) or origin_of(url) == self._origin

    async def _classified(self, call: _Call) -> HttpReply | httpx.Response:
        owner = self.owner
        method, url, task_id, params, headers, stream = (
            call.method, call.url, call.task_id, call.params, call.headers, call.stream
        )
        polling_timeout = current_request_timeout()  # the observation's policy, in a poll
        call.signed = False
        merged: Mapping[str, str]
        if not self._same_origin(url):
            # Credentials stay with their origin: an IPFS gateway or the storage an artifact
            # redirects to gets neither the backend's headers nor per-request auth.
            merged = {}
        else:
            if headers:
                owner.secrets.add_headers(headers)
                merged = {**self.headers, **headers}
            else:
                merged = self.headers
            if owner.auth is not None:
                if self.lean is not None and not stream:
                    full = self._address(url, params, True)[1]
                else:
                    full = url if params is None else str(httpx.URL(url, params=params))
                signed = await owner.auth.sign(method, full, merged, call.body)
                if signed:
                    owner.secrets.add_headers(signed, every=True)
                    merged = {**merged, **signed}
                    call.signed = True
        failure: BaseException | None = None
        try:
            response = await self._exchange(call, merged, polling_timeout)
        except ReactiveTasksError:
            raise
        except Exception as exc:
            failure = self._foreign(exc, task_id)
        if failure is not None:
            # raised outside the handler: the foreign error (and the request it holds) is cut off
            raise failure
        code = response.status_code
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("%s %s -> %d", method, scrub(url, owner.secrets), code)
        if code == 429 or code >= 500:
            await response.aclose()
            raise TransientFault(
                f"HTTP {code} from {owner.name}",
                retry_after=parse_retry_after(response.headers.get("retry-after")),
            )
        if code in (401, 403):
            reason = None
            if isinstance(response, HttpReply):
                reason = owner.refusal_reason(response)
            else:
                await response.aclose()
            refused = AuthenticationError(
                f"HTTP {code}: {reason or 'the API refused the credentials'}",
                backend=owner.name,
                task_id=None if task_id is None else owner.display_id(task_id),
            )
            refused.status = code  # type: ignore[attr-defined]
            raise refused
        return response

    async def _exchange(
        self, call: _Call, headers: Mapping[str, str], polling_timeout: float | None
    ) -> HttpReply | httpx.Response:
        """One request through the transport or client; a whole body is read under the
        decoded-size cap. A poll brings its observation's request timeout."""
        timeout = polling_timeout or self.owner.policy.request_timeout
        lean = self.lean
        if lean is not None and not call.stream:
            # The lean path: a URL parsed once, headers merged once, no httpx objects.
            address = self._address(call.url, call.params, self._same_origin(call.url))[0]
            wire = self._wire_headers if headers is self.headers else with_defaults(headers)
            return await lean.fetch(
                call.method, address, wire, call.body, timeout, self.owner.max_body
            )
        if self.transport is not None:
            # Straight to the transport, skipping the client's auth, cookie, redirect and
            # hook machinery that polling never uses (a third of the CPU).
            request = self._prepared(call, headers, timeout)
            response = await self.transport.handle_async_request(request)
        else:
            request = self.client.build_request(
                call.method, call.url, params=call.params, content=call.body, headers=headers,
                timeout=httpx.USE_CLIENT_DEFAULT if polling_timeout is None else timeout,
            )
            response = await self.client.send(request, stream=True)
        if call.stream:
            return response
        content = await read_capped(response, self.owner.max_body)
        return HttpReply(response.status_code, response.headers, content)

    def _address(
        self, url: str, params: Mapping[str, Any] | None, own_origin: bool
    ) -> tuple[yarl.URL, str]:
        """The parsed URL to send ``url`` with ``params`` to, and the URL text the auth hook
        signs. Parsed once per URL of the backend's own origin (a bounded cache: polls repeat
        the same URLs); other hosts' URLs (redirect targets with one-off signatures) each time.
        """
        key: Hashable | None = None
        if own_origin:
            try:
                key = url if params is None else (url, *params.items())
                hash(key)
            except TypeError:  # a list-valued parameter: parsed each time
                key = None
        if key is not None:
            found = self._urls.get(key)
            if found is not None:
                return found
        try:
            # Query parameters are encoded by httpx, as for a user's client; the rest is yarl's.
            full = url if params is None else str(httpx.URL(url, params=params))
            address = yarl.URL(full)
        except (ValueError, httpx.InvalidURL):
            raise self.owner.protocol_error("the request URL is invalid") from None
        if key is not None:
            if len(self._urls) >= _URL_CACHE_SIZE:
                self._urls.popitem(last=False)
            self._urls[key] = (address, full)
        return address, full

    def _foreign(self, exc: BaseException, task_id: str | None) -> BaseException:
        """A foreign exception as a library-made one: same kind, scrubbed text, no chain.

        Errors of httpx, aiohttp or a user's transport keep the request (URL, headers) in
        their text, attributes and chained causes; none of that may leave the library.
        """
        owner = self.owner
        if isinstance(exc, ResponseTooLarge | UnsupportedEncoding):
            return owner.protocol_error(scrub(str(exc), owner.secrets), task_id)
        text = scrub(str(exc), owner.secrets)[:300]
        if isinstance(exc, httpx.TransportError):
            return type(exc)(text)
        if isinstance(exc, httpx.DecodingError):
            return owner.protocol_error(f"undecodable body: {text}", task_id)
        if isinstance(exc, TimeoutError):
            return httpx.TimeoutException(text or "request timed out")
        if isinstance(exc, OSError):
            return httpx.NetworkError(text or type(exc).__name__)
        return owner.protocol_error(f"{type(exc).__name__}: {text}", task_id)

    def _prepared(self, call: _Call, headers: Mapping[str, str], timeout: float) -> httpx.Request:
        """An httpx request; a plain GET is built once per URL and reused on every poll.

        httpx's URL parsing and header preparation are a large share of a poll's CPU, and a
        poll repeats the same GET, so the prepared request is cached (bounded, per URL and
        timeout, cleared on close).
        """
        method, url, stream = call.method, call.url, call.stream
        plain = method == "GET" and call.params is None and call.body is None and not stream
        reuse = plain and headers is self.headers
        key = (url, timeout)
        if reuse:
            cached = self._requests.get(key)
            if cached is not None:
                return cached
        request = httpx.Request(
            method, url, params=call.params, content=call.body, headers=headers,
            extensions={"timeout": httpx.Timeout(timeout).as_dict()},
        )
        if stream:
            request.extensions["stream"] = True
        if reuse:
            if len(self._requests) >= _REQUEST_CACHE_SIZE:
                self._requests.clear()
            self._requests[key] = request
        return request


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, seconds) if seconds == seconds else None
