"""Backend: the base every API backend subclasses; it only has to translate.

A subclass implements ``validate_task_id``, ``fetch`` and ``interpret`` (and ``fetch_many`` where
its API answers many tasks at once). Everything else — polling, retries, sharing, loops, the HTTP
client — comes from here and from the engine.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import re
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ValidationError
from reactivex import Observable

from .._errors import (
    AuthenticationError,
    BackendError,
    BackendUnavailable,
    ConfigurationError,
    ProtocolError,
    ReactiveTasksError,
    TaskNotFound,
    TransientFault,
)
from .._hub import PollHub, fetch_once, hub_for, release_hub
from .._models import SnapshotT, TaskEvent
from .._policy import PollPolicy
from .._redact import (
    Secrets,
    install_log_filters,
    origin_of,
    protect_query_params,
    redact_url,
    scrub,
)
from .._retry import call_with_retries, is_transient, register_faults
from .._runtime import (
    LoopEnd,
    background_loop,
    background_loop_if_started,
    close_at_exit,
    in_loop_thread,
)
from .._rx import observe_ref
from .._transport import AiohttpTransport, ResponseTooLarge, UnsupportedEncoding, read_capped
from .._types import Reading, TaskRef, current_request_timeout

__all__ = ["Backend", "Reading", "TaskRef", "TransientFault", "parse_retry_after"]

M = TypeVar("M", bound=BaseModel)

_log = logging.getLogger("reactive_tasks.http")
register_faults(transient=(httpx.TransportError,), timeouts=(httpx.TimeoutException,))
_REQUEST_CACHE_SIZE = 50_000
# Closing a scope lets its requests unwind, and one that was between two fetches may open a
# fresh scope on its way out; closing repeats for those (a round or two at most).
_CLOSE_ROUNDS = 4


@dataclass
class _LoopScope:
    """What a backend keeps per event loop: an HTTP client, a concurrency cap and a poll hub."""

    client: httpx.AsyncClient
    owns_client: bool
    transport: httpx.AsyncBaseTransport | None
    limiter: asyncio.Semaphore
    hub: PollHub[Any]
    end: LoopEnd | None = None


class Backend(ABC, Generic[SnapshotT]):
    """Base of every backend: observe, status and the HTTP plumbing, shared by all APIs."""

    name: ClassVar[str] = "backend"
    #: How many task ids one ``fetch_many`` call may take; None for no limit.
    max_batch: ClassVar[int | None] = None
    #: Query parameters that carry secrets, kept out of httpx's request logs.
    secret_query_params: ClassVar[tuple[str, ...]] = ()
    #: True when the base URL's path carries a key (RPC providers): only its origin is shown.
    secret_url_path: ClassVar[bool] = False
    #: Patterns of secret ids (tokens) shown shortened wherever they appear.
    secret_patterns: ClassVar[tuple[re.Pattern[str], ...]] = ()
    #: The most bytes of one response body, counted after decoding (None: the library's cap).
    max_body: int | None = None

    def __init__(
        self,
        base_url: str,
        *,
        policy: PollPolicy | None = None,
        client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
        max_concurrency: int = 32,
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ConfigurationError(
                f"{type(self).__name__} needs an http(s) base URL, "
                f"got {redact_url(str(base_url))!r}"
            )
        if policy is not None and not isinstance(policy, PollPolicy):
            raise ConfigurationError("policy must be a PollPolicy")
        if max_concurrency < 1:
            raise ConfigurationError("max_concurrency must be at least 1")
        if client is not None and transport is not None:
            raise ConfigurationError("give a client or a transport, not both")
        self.base_url = base_url.rstrip("/")
        self.policy = policy or PollPolicy()
        self._client = client
        self._transport = transport
        self._headers = dict(headers or {})
        self._origin = origin_of(self.base_url)
        parts = urlsplit(self.base_url)
        self._origin_prefix = f"{parts.scheme}://{parts.netloc}/"
        #: This backend's secrets; every text leaving the library is scrubbed of them.
        self.secrets = Secrets(self.secret_patterns)
        self.secrets.add_headers(self._headers, every=True)
        self.secrets.add_url(self.base_url, path_is_secret=self.secret_url_path)
        install_log_filters()
        self._max_concurrency = max_concurrency
        self._scopes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopScope] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, float], httpx.Request] = {}
        if self.secret_query_params:
            protect_query_params(*self.secret_query_params)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={scrub(redact_url(self.base_url), self.secrets)!r})"

    # -- what a subclass implements ----------------------------------------------------------

    @abstractmethod
    def validate_task_id(self, task_id: str) -> str:
        """Return the canonical form of ``task_id`` or raise ``InvalidTaskId``; no I/O."""

    @abstractmethod
    async def fetch(self, ref: TaskRef) -> SnapshotT:
        """Read one task's current state from the API as a validated snapshot."""

    @abstractmethod
    def interpret(self, snapshot: SnapshotT, ref: TaskRef) -> Reading:
        """Translate a snapshot into the shared vocabulary (state, native status, progress)."""

    def change_key(self, snapshot: SnapshotT, reading: Reading) -> Hashable:
        """What must differ between two polls for a new event; timestamps never count."""
        return reading

    def display_id(self, task_id: str) -> str:
        """How ``task_id`` appears in errors and logs (a backend may shorten secret ids)."""
        return task_id

    def refusal_reason(self, response: httpx.Response) -> str | None:
        """The API's own reason for a 401/403 (free of secrets), or None for a generic one."""
        return None

    def task_ref(self, task_id: str, **identity: str | None) -> TaskRef:
        """Validate ``task_id`` and bind any extra identity (a deal id, a compute pool)."""
        canonical = self.validate_task_id(task_id)
        extra = tuple(sorted((k, v) for k, v in identity.items() if v is not None))
        return TaskRef(canonical, extra)

    async def fetch_many(
        self, refs: Sequence[TaskRef]
    ) -> AsyncIterator[tuple[TaskRef, SnapshotT | BaseException]]:
        """Read many tasks, yielding each answer as it arrives (or the error that replaced it).

        The default fans out ``fetch`` under the backend's concurrency cap; APIs that answer many
        tasks in one request override it.
        """
        limiter = self._scope().limiter
        if len(refs) == 1:
            async with limiter:
                yield refs[0], await _capture(self.fetch(refs[0]))
            return
        results: asyncio.Queue[tuple[TaskRef, SnapshotT | BaseException]] = asyncio.Queue()
        todo = list(reversed(refs))

        async def worker() -> None:
            # A few workers draining one list cost far less than a task per id.
            while todo:
                ref = todo.pop()
                async with limiter:
                    results.put_nowait((ref, await _capture(self.fetch(ref))))

        workers = [
            asyncio.ensure_future(worker()) for _ in range(min(len(refs), self._max_concurrency))
        ]
        try:
            for _ in range(len(refs)):
                yield await results.get()
        finally:
            for task in workers:
                task.cancel()
            # Let them unwind before the caller goes on (it may be closing the client).
            await asyncio.gather(*workers, return_exceptions=True)

    # -- the public API ----------------------------------------------------------------------

    def observe(
        self, task_id: str, *, policy: PollPolicy | None = None
    ) -> Observable[TaskEvent[SnapshotT]]:
        """A cold Observable of ``task_id``'s changes; a bad id raises ``InvalidTaskId`` now."""
        return self._observe(self.task_ref(task_id), policy)

    async def status(self, task_id: str) -> TaskEvent[SnapshotT]:
        """One fresh reading of a task (like iExec's ``show``), transient faults retried."""
        return await self._status(self.task_ref(task_id))

    def _observe(
        self, ref: TaskRef, policy: PollPolicy | None
    ) -> Observable[TaskEvent[SnapshotT]]:
        if policy is not None and not isinstance(policy, PollPolicy):
            raise ConfigurationError("policy must be a PollPolicy")
        return observe_ref(self._hub_for, ref, policy or self.policy)

    async def _status(self, ref: TaskRef) -> TaskEvent[SnapshotT]:
        return await fetch_once(self, ref, self.policy)

    async def aclose(self) -> None:
        """Stop every poll of this backend and close its HTTP connections."""
        loop = asyncio.get_running_loop()
        for _ in range(_CLOSE_ROUNDS):
            with self._lock:
                scopes = dict(self._scopes)
                self._scopes.clear()
                self._requests.clear()
            if not scopes:
                return
            for owner, scope in scopes.items():
                release_hub(self, owner)
                if scope.end is not None:
                    scope.end.cancel()
                if owner is loop:
                    await _close_scope(scope)
                elif not owner.is_closed() and owner.is_running():
                    future = asyncio.run_coroutine_threadsafe(_close_scope(scope), owner)
                    await asyncio.wrap_future(future)

    def close(self) -> None:
        """Blocking ``aclose`` for code outside any event loop."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError("close() inside a running event loop; use `await aclose()`")
        asyncio.run_coroutine_threadsafe(self.aclose(), background_loop()).result(timeout=10)

    async def __aenter__(self) -> Backend[SnapshotT]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- HTTP plumbing for subclasses --------------------------------------------------------

    @property
    def http(self) -> httpx.AsyncClient:
        """The HTTP client of the running event loop."""
        return self._scope().client

    async def send(
        self,
        method: str,
        path_or_url: str,
        *,
        task_id: str | None = None,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
    ) -> httpx.Response:
        """Send a request; 5xx and 429 raise ``TransientFault``, 401/403 ``AuthenticationError``.

        Other statuses come back for the subclass to read. A relative path is joined to
        ``base_url``.
        """
        scope = self._scope()
        url = path_or_url if "://" in path_or_url else self.base_url + path_or_url
        polling_timeout = current_request_timeout()  # the observation's policy, in a poll
        if not url.startswith(self._origin_prefix) and origin_of(url) != self._origin:
            # Credentials stay with their origin: an IPFS gateway or the storage an artifact
            # redirects to gets neither the backend's headers nor per-request auth.
            merged: Mapping[str, str] = {}
        elif headers:
            self.secrets.add_headers(headers)
            merged = {**self._headers, **headers}
        else:
            merged = self._headers
        failure: BaseException | None = None
        try:
            response = await self._exchange(
                scope, method, url, params, json, merged, stream, polling_timeout
            )
        except ReactiveTasksError:
            raise
        except Exception as exc:
            failure = self._foreign(exc, task_id)
        if failure is not None:
            # raised outside the handler: the foreign error (and the request it holds) is cut off
            raise failure
        code = response.status_code
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("%s %s -> %d", method, scrub(url, self.secrets), code)
        if code == 429 or code >= 500:
            if stream:
                await response.aclose()
            raise TransientFault(
                f"HTTP {code} from {self.name}",
                retry_after=parse_retry_after(response.headers.get("retry-after")),
            )
        if code in (401, 403):
            reason = None
            if stream:
                await response.aclose()
            else:
                reason = self.refusal_reason(response)
            raise AuthenticationError(
                f"HTTP {code}: {reason or 'the API refused the credentials'}",
                backend=self.name,
                task_id=None if task_id is None else self.display_id(task_id),
            )
        return response

    async def _exchange(
        self,
        scope: _LoopScope,
        method: str,
        url: str,
        params: Mapping[str, Any] | None,
        json: Any,
        headers: Mapping[str, str],
        stream: bool,
        polling_timeout: float | None,
    ) -> httpx.Response:
        """One request through the scope's transport or client; a whole body is read under
        the decoded-size cap. A poll brings its observation's request timeout."""
        timeout = polling_timeout or self.policy.request_timeout
        if scope.transport is not None:
            # The fast path: straight to the transport, skipping the client's auth, cookie,
            # redirect and hook machinery that polling never uses (a third of the CPU).
            request = self._poll_request(method, url, params, json, headers, stream, timeout)
            response = await scope.transport.handle_async_request(request)
        else:
            request = scope.client.build_request(
                method, url, params=params, json=json, headers=headers,
                timeout=httpx.USE_CLIENT_DEFAULT if polling_timeout is None else timeout,
            )
            response = await scope.client.send(request, stream=True)
        if not stream:
            await read_capped(response, self.max_body)
        return response

    def _foreign(self, exc: BaseException, task_id: str | None) -> BaseException:
        """A foreign exception as a library-made one: same kind, scrubbed text, no chain.

        Errors of httpx, aiohttp or a user's transport keep the request (URL, headers) in
        their text, attributes and chained causes; none of that may leave the library.
        """
        if isinstance(exc, ResponseTooLarge | UnsupportedEncoding):
            return self.protocol_error(scrub(str(exc), self.secrets), task_id)
        text = scrub(str(exc), self.secrets)[:300]
        if isinstance(exc, httpx.TransportError):
            return type(exc)(text)
        if isinstance(exc, httpx.DecodingError):
            return self.protocol_error(f"undecodable body: {text}", task_id)
        if isinstance(exc, TimeoutError):
            return httpx.TimeoutException(text or "request timed out")
        if isinstance(exc, OSError):
            return httpx.NetworkError(text or type(exc).__name__)
        return self.protocol_error(f"{type(exc).__name__}: {text}", task_id)

    def _poll_request(
        self,
        method: str,
        url: str,
        params: Mapping[str, Any] | None,
        json: Any,
        headers: Mapping[str, str],
        stream: bool,
        timeout: float,
    ) -> httpx.Request:
        """An httpx request; a plain GET is built once per URL and reused on every poll.

        httpx's URL parsing and header preparation are a large share of a poll's CPU, and a
        poll repeats the same GET, so the prepared request is cached (bounded, per URL and
        timeout, cleared by ``aclose``).
        """
        plain = method == "GET" and params is None and json is None and not stream
        key = (url, timeout)
        if plain and headers is self._headers:
            cached = self._requests.get(key)
            if cached is not None:
                return cached
        request = httpx.Request(
            method, url, params=params, json=json, headers=headers,
            extensions={"timeout": httpx.Timeout(timeout).as_dict()},
        )
        if stream:
            request.extensions["stream"] = True
        if plain and headers is self._headers:
            if len(self._requests) >= _REQUEST_CACHE_SIZE:
                self._requests.clear()
            self._requests[key] = request
        return request

    async def send_once(
        self, request: Awaitable[httpx.Response], *, what: str, task_id: str | None = None
    ) -> httpx.Response:
        """Await a one-off request outside polling; a transient fault ends it at once.

        Creating a task is not idempotent and a download has no poll loop to retry in, so a
        timeout, reset, 5xx or 429 here becomes ``BackendUnavailable`` (wrapping the fault)
        instead of a retry; typed errors pass through.
        """
        try:
            return await request
        except Exception as exc:
            if isinstance(exc, BackendError) or not is_transient(exc):
                raise
            shown = None if task_id is None else self.display_id(task_id)
            text = str(exc) or type(exc).__name__
            err = BackendUnavailable(
                f"{what} failed and was not retried: {text}", backend=self.name, task_id=shown
            )
            raise err from exc

    async def send_retrying(
        self,
        request: Callable[[], Awaitable[httpx.Response]],
        *,
        task_id: str | None = None,
    ) -> httpx.Response:
        """A one-off read that is safe to repeat (listings, results, downloads): transient
        faults are retried under the backend's policy, as a poll would be."""
        ref = TaskRef("" if task_id is None else task_id)
        return await call_with_retries(self, ref, request, self.policy)

    def parse(self, model: type[M], content: bytes | str | Any, task_id: str | None = None) -> M:
        """Validate an answer against ``model``; anything off-shape is a ``ProtocolError``."""
        try:
            if isinstance(content, bytes | str):
                return model.model_validate_json(content)
            return model.model_validate(content)
        except ValidationError as exc:
            detail = ""
            for first in exc.errors()[:1]:
                where = ".".join(str(p) for p in first["loc"]) or "the top level"
                detail = f" at {where!r}: {first['msg']}"
            raise self.protocol_error(
                f"the answer does not match {model.__name__}{detail}", task_id
            ) from None

    def protocol_error(self, message: str, task_id: str | None = None) -> ProtocolError:
        """A ``ProtocolError`` naming this backend and the (displayed) task id."""
        shown = None if task_id is None else self.display_id(task_id)
        return ProtocolError(message, backend=self.name, task_id=shown)

    def wrong_url(self, path: str, task_id: str | None = None) -> TaskNotFound:
        """A 404 whose body is not the API's own "no such task" answer: likely a wrong base URL."""
        if task_id:
            path = path.replace(task_id, self.display_id(task_id))
        where = redact_url(path if "://" in path else self.base_url + path)
        return TaskNotFound(
            f"the base URL may be wrong: {where} answered 404 not in the API's shape",
            backend=self.name, task_id=None if task_id is None else self.display_id(task_id),
        )

    # -- per-loop resources ------------------------------------------------------------------

    def _scope(self) -> _LoopScope:
        return self._scope_for(asyncio.get_running_loop())

    def _hub_for(self, loop: asyncio.AbstractEventLoop) -> PollHub[Any]:
        return self._scope_for(loop).hub

    def _scope_for(self, loop: asyncio.AbstractEventLoop) -> _LoopScope:
        with self._lock:
            scope = self._scopes.get(loop)
            if scope is None:
                self._forget_closed_loops()
                scope = self._new_scope(loop)
                self._scopes[loop] = scope
                if loop is background_loop_if_started():
                    close_at_exit(self)
                elif in_loop_thread(loop):
                    # A loop of the caller's (asyncio.run): release the scope when it ends, so
                    # a backend used from many short-lived loops keeps none of them.
                    scope.end = LoopEnd(lambda: self.close_on_loop(loop))
            return scope

    def _forget_closed_loops(self) -> None:
        """Drop scopes of loops closed without shutting down (nothing can run on them now)."""
        for owner in [o for o in self._scopes if o.is_closed()]:
            scope = self._scopes.pop(owner)
            release_hub(self, owner)
            if scope.end is not None:
                scope.end.cancel()

    async def close_on_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close what this backend holds on ``loop`` (run on that loop)."""
        for _ in range(_CLOSE_ROUNDS):
            with self._lock:
                scope = self._scopes.pop(loop, None)
                if not self._scopes:
                    self._requests.clear()
            if scope is None:
                return
            release_hub(self, loop)
            if scope.end is not None:
                scope.end.cancel()
            await _close_scope(scope)

    def _new_scope(self, loop: asyncio.AbstractEventLoop) -> _LoopScope:
        transport: httpx.AsyncBaseTransport | None = None
        if self._client is not None:
            client, owns = self._client, False
        else:
            transport = self._transport or AiohttpTransport(max_connections=self._max_concurrency)
            timeout = httpx.Timeout(self.policy.request_timeout)
            client, owns = httpx.AsyncClient(transport=transport, timeout=timeout), True
        limiter = asyncio.Semaphore(self._max_concurrency)
        return _LoopScope(client, owns, transport, limiter, hub_for(self, loop))


async def _capture(awaitable: Any) -> Any:
    """The awaitable's result, or the ``Exception`` it raised (cancellation still propagates)."""
    try:
        return await awaitable
    except Exception as exc:
        return exc


async def _close_scope(scope: _LoopScope) -> None:
    await scope.hub.aclose()
    if scope.owns_client:
        await scope.client.aclose()


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

