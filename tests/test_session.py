"""The shared HTTP session: retries only for idempotent reads, redirects that drop credentials off
origin, one auth renewal shared by concurrent refusals, and a single-flight cache."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest
from hostile import HostileServer, RawRequest, Reply

from reactive_tasks import AuthenticationError, BackendUnavailable, PollPolicy
from reactive_tasks.backends import CloudCoinBackend
from reactive_tasks.testing import cached_reads, open_sessions

POLICY = PollPolicy(interval=0.02, max_interval=0.05, jitter=0.0, request_timeout=2.0)
USER = {"X-Provider-Key": "user-header-secret-0a1b2c3d"}


class Token:
    """A bearer token the server renews: ``refused`` swaps it for the next one."""

    def __init__(self) -> None:
        self.value = "old"
        self.renewals = 0

    async def sign(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> Mapping[str, str]:
        return {"Authorization": f"Bearer {self.value}"}

    async def refused(self, status: int) -> bool:
        self.renewals += 1
        await asyncio.sleep(0.05)  # a login round trip: other refusals arrive meanwhile
        self.value = "fresh"
        return True


def backend_at(url: str, auth: Token | None = None) -> CloudCoinBackend:
    backend = CloudCoinBackend(url, policy=POLICY, headers=USER)
    backend.auth = auth
    return backend


async def test_a_redirect_to_another_origin_carries_no_credentials() -> None:
    storage = HostileServer(lambda req: Reply.of(200, b"stored bytes"))
    with storage, HostileServer(lambda req: Reply.redirect(storage.url + "/blob")) as api:
        async with backend_at(api.url, Token()) as backend:
            response = await backend.session().request("GET", "/artifact", follow_redirects=True)
    assert response.content == b"stored bytes"
    assert api.requests[0].headers["authorization"] == "Bearer old"
    assert api.requests[0].headers["x-provider-key"] == USER["X-Provider-Key"]
    (fetched,) = storage.requests
    assert "authorization" not in fetched.headers
    assert "x-provider-key" not in fetched.headers


async def test_a_redirect_is_not_followed_unless_asked() -> None:
    with HostileServer(lambda req: Reply.redirect("/elsewhere")) as api:
        async with backend_at(api.url) as backend:
            response = await backend.session().request("GET", "/artifact")
    assert response.status_code == 303
    assert len(api.requests) == 1


async def test_an_idempotent_read_outside_a_poll_is_retried_a_create_is_sent_once() -> None:
    answers = iter([Reply.of(503), Reply.of(200, b"ok")])
    with HostileServer(lambda req: next(answers)) as api:
        async with backend_at(api.url) as backend:
            response = await backend.session().request("GET", "/listing")
    assert response.content == b"ok"
    assert len(api.requests) == 2

    with HostileServer(lambda req: Reply.of(503)) as api:
        async with backend_at(api.url) as backend:
            with pytest.raises(BackendUnavailable, match="create failed and was not retried"):
                await backend.session().request("POST", "/tasks", json={"a": 1}, what="create")
    assert len(api.requests) == 1


async def test_concurrent_refusals_share_one_renewal() -> None:
    def handler(request: RawRequest) -> Reply:
        if request.headers.get("authorization") != "Bearer fresh":
            return Reply.of(401)
        return Reply.of(200, b"ok")

    token = Token()
    with HostileServer(handler) as api:
        async with backend_at(api.url, token) as backend:
            session = backend.session()
            answers = await asyncio.gather(*(session.request("GET", f"/r{i}") for i in range(5)))
    assert [a.content for a in answers] == [b"ok"] * 5
    assert token.renewals == 1


async def test_the_cache_loads_a_key_once_for_concurrent_readers_and_keeps_no_failure() -> None:
    loads = 0

    async def load() -> int:
        nonlocal loads
        loads += 1
        await asyncio.sleep(0.01)
        if loads == 1:
            raise RuntimeError("first load fails")
        return loads

    async with backend_at("http://127.0.0.1:9") as backend:
        session = backend.session()
        first = await asyncio.gather(
            *(session.cached("deal", load) for _ in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, RuntimeError) for r in first)
        assert loads == 1
        second = await asyncio.gather(*(session.cached("deal", load) for _ in range(3)))
        assert cached_reads(backend) == 1
        assert open_sessions(backend) == 1
    assert second == [2, 2, 2]
    assert loads == 2
    assert open_sessions(backend) == 0, "aclose releases the session and its cache"


class Login:
    """Logs in through the session itself when refused; the login is not signed."""

    def __init__(self, backend: CloudCoinBackend) -> None:
        self.backend = backend
        self.logins = 0

    async def sign(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> Mapping[str, str]:
        return {} if url.endswith("/login") else {"Authorization": "Bearer stale"}

    async def refused(self, status: int) -> bool:
        self.logins += 1
        await self.backend.session().send("POST", "/login", json={"key": "wrong"})
        return True


async def test_a_refused_login_made_by_the_auth_hook_is_not_renewed_again() -> None:
    with HostileServer(lambda request: Reply.of(401)) as api:
        async with backend_at(api.url) as backend:
            backend.auth = auth = Login(backend)
            with pytest.raises(AuthenticationError):
                await asyncio.wait_for(backend.session().send("GET", "/r"), timeout=5)
    assert auth.logins == 1


async def test_expired_entries_are_neither_served_nor_counted() -> None:
    async def load() -> str:
        return "deal"

    async with backend_at("http://127.0.0.1:9") as backend:
        session = backend.session()
        assert session.peek("deal") is None, "peek loads nothing"
        await session.cached("deal", load, ttl=0.05)
        assert session.peek("deal") == "deal" and cached_reads(backend) == 1
        await asyncio.sleep(0.1)
        assert session.peek("deal") is None
        assert cached_reads(backend) == 0
