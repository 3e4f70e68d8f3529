"""Backend: the base every API backend subclasses; it only has to translate.

A subclass implements ``validate_task_id``, ``fetch`` and ``interpret`` (and ``fetch_many`` where
its API answers many tasks at once). Everything else — polling, retries, sharing, loops, the HTTP
client — comes from here and from the engine.
"""

from __future__ import annotations

import asyncio
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Hashable, Mapping, Sequence
from typing import Any, ClassVar, Generic, TypeVar

import httpx
from pydantic import BaseModel, ValidationError
from reactivex import Observable

from .. import _scopes
from .._errors import (
    ConfigurationError,
    ProtocolError,
    TaskNotFound,
    TransientFault,
)
from .._hub import PollHub, fetch_once
from .._models import SnapshotT, TaskEvent
from .._policy import PollPolicy
from .._redact import (
    Secrets,
    install_log_filters,
    protect_query_params,
    redact_url,
    scrub,
)
from .._reply import HttpReply
from .._runtime import background_loop
from .._rx import observe_ref
from .._session import Auth, Session, parse_retry_after
from .._types import Answer, Feed, Reading, TaskRef

__all__ = ["Backend", "Reading", "TaskRef", "TransientFault", "parse_retry_after"]

M = TypeVar("M", bound=BaseModel)

_log = logging.getLogger("reactive_tasks.http")



class Backend(ABC, Generic[SnapshotT]):
    """Base of every backend: observe, status and the HTTP plumbing, shared by all APIs."""

    name: ClassVar[str] = "backend"
    #: How many task ids one ``fetch_many`` call may take; None for no limit. The hub's split by
    #: it is the only one: a backend with a ``batch_size=`` option sets it on the instance.
    max_batch: int | None = None
    #: Query parameters that carry secrets, kept out of httpx's request logs.
    secret_query_params: ClassVar[tuple[str, ...]] = ()
    #: True when the base URL's path carries a key (RPC providers): only its origin is shown.
    secret_url_path: ClassVar[bool] = False
    #: Patterns of secret ids (tokens) shown shortened wherever they appear.
    secret_patterns: ClassVar[tuple[re.Pattern[str], ...]] = ()
    #: The most bytes of one response body, counted after decoding (None: the library's cap).
    max_body: int | None = None
    #: Credentials the session applies to requests bound for this backend's origin.
    auth: Auth | None = None

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
        #: This backend's secrets; every text leaving the library is scrubbed of them.
        self.secrets = Secrets(self.secret_patterns)
        self.secrets.add_headers(self._headers, every=True)
        self.secrets.add_url(self.base_url, path_is_secret=self.secret_url_path)
        install_log_filters()
        self._max_concurrency = max_concurrency
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
        return reading.plain()

    def order_key(self, snapshot: SnapshotT, reading: Reading) -> tuple[int, ...] | None:
        """How new an answer is (larger is newer), or None when the API gives no order: an
        answer older than one already seen, by poll or push, never moves a task backwards."""
        return None

    def open_feed(self) -> Feed | None:
        """A push feed beside the polls, made once per hub (backend and loop); None polls only."""
        return None

    def display_id(self, task_id: str) -> str:
        """How ``task_id`` appears in errors and logs (a backend may shorten secret ids)."""
        return task_id

    def refusal_reason(self, response: HttpReply) -> str | None:
        """The API's own reason for a 401/403 (free of secrets), or None for a generic one."""
        return None

    def task_ref(self, task_id: str, **identity: str | None) -> TaskRef:
        """Validate ``task_id`` and bind any extra identity (a deal id, a compute pool)."""
        canonical = self.validate_task_id(task_id)
        extra = tuple(sorted((k, v) for k, v in identity.items() if v is not None))
        return TaskRef(canonical, extra)

    def fetch_many(
        self, refs: Sequence[TaskRef]
    ) -> AsyncIterator[tuple[TaskRef, SnapshotT | Answer[SnapshotT] | BaseException]]:
        """Read many tasks, yielding each answer as it arrives (or the error that replaced it).

        The default fans out ``fetch`` under the backend's concurrency cap; APIs that answer many
        tasks in one request override it. Only where ``lazy_answers()`` (in the hub's rounds) may
        an answer be an ``Answer``, validated when the hub asks for its snapshot.
        """
        return self.session().each(refs, self.fetch)

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
        await _scopes.close_all(self)

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

    # -- translation helpers for subclasses ---------------------------------------------

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

    # -- per-loop resources (owned by the registry in _scopes, not by the backend) ------------

    def session(self) -> Session:
        """This backend's HTTP session on the running event loop."""
        return _scopes.session_for(self, asyncio.get_running_loop())

    def _hub_for(self, loop: asyncio.AbstractEventLoop) -> PollHub[Any]:
        return _scopes.hub_of(self, loop)

    def new_session(self) -> Session:
        """A fresh session for one event loop (the registry calls this on first use)."""
        return Session(
            self, headers=self._headers, client=self._client, transport=self._transport,
            max_concurrency=self._max_concurrency,
        )

    async def close_on_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close what this backend holds on ``loop`` (run on that loop)."""
        await _scopes.close_on(self, loop)
