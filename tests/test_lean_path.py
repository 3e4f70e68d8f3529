"""The lean poll path: on the default transport a poll builds no httpx request or response, each
task's URL is parsed once however many rounds it is polled, requests offer only the encodings
the size cap decodes, and the concurrency cap holds while rounds overlap and are cancelled."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Any

import aiohttp
import httpx
import pytest
import yarl
from hostile import HostileServer, Reply

from reactive_tasks import PollPolicy, wait
from reactive_tasks._reply import HttpReply
from reactive_tasks.backends import CloudCoinBackend, TaskRef
from reactive_tasks.emulator import EmulatorClient

POLICY = PollPolicy(interval=0.02, max_interval=0.05, jitter=0.0, request_timeout=5.0)
ROUNDS = 4


def polls(rounds: int) -> list[dict[str, Any]]:
    """Running for ``rounds - 1`` polls, then completed."""
    return [{"status": "running", "progress": 5, "polls": rounds - 1}, {"status": "completed"}]


async def watch_all(emulator: EmulatorClient, ids: list[str]) -> None:
    """Watch CloudCoin tasks until each completes."""
    async with CloudCoinBackend(emulator.api_url("cloudcoin"), policy=POLICY) as backend:
        await asyncio.gather(*(wait(backend.observe(i), timeout=30) for i in ids))


def counting(calls: collections.Counter[str], name: str, original: Callable[..., Any]) -> Any:
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls[name] += 1
        return original(self, *args, **kwargs)

    return wrapper


async def test_a_poll_builds_no_httpx_request_or_response(
    emulator: EmulatorClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = emulator.create_tasks("cloudcoin", 5, polls(ROUNDS))
    built: collections.Counter[str] = collections.Counter()
    with monkeypatch.context() as patch:
        patch.setattr(httpx.Request, "__init__", counting(built, "request", httpx.Request.__init__))
        patch.setattr(
            httpx.Response, "__init__", counting(built, "response", httpx.Response.__init__)
        )
        await watch_all(emulator, ids)
    assert emulator.requests()["by_api"]["cloudcoin"] == 5 * ROUNDS
    assert built == {}


async def test_each_task_url_is_parsed_once_across_rounds(
    emulator: EmulatorClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: collections.Counter[str] = collections.Counter()
    real_url = yarl.URL
    build_url = aiohttp.ClientSession._build_url

    def parse(value: Any, *args: Any, **kwargs: Any) -> yarl.URL:
        if isinstance(value, str):
            parsed[value.rsplit("/", 1)[-1]] += 1
        return real_url(value, *args, **kwargs)

    def aiohttp_build_url(self: aiohttp.ClientSession, value: Any) -> yarl.URL:
        if isinstance(value, str):  # a URL given as text is parsed by aiohttp, every time
            parsed[value.rsplit("/", 1)[-1]] += 1
        return build_url(self, value)

    ids = emulator.create_tasks("cloudcoin", 3, polls(ROUNDS))
    monkeypatch.setattr(yarl, "URL", parse)
    monkeypatch.setattr(aiohttp.ClientSession, "_build_url", aiohttp_build_url)
    await watch_all(emulator, ids)
    assert emulator.requests()["by_api"]["cloudcoin"] == 3 * ROUNDS
    assert {task_id: parsed[task_id] for task_id in ids} == dict.fromkeys(ids, 1)


async def test_requests_name_the_library_and_offer_only_decodable_encodings() -> None:
    body = b'{"status": "success", "payload": {"id": "x", "status": "running"}}'
    with HostileServer(lambda request: Reply.of(200, body)) as server:
        async with CloudCoinBackend(server.url, policy=POLICY) as backend:
            reply = await backend.session().request("GET", "/api/v1/task/x")
            await backend.session().request("GET", "/own", headers={"Accept-Encoding": "gzip"})
    assert isinstance(reply, HttpReply)
    assert reply.json()["payload"]["status"] == "running"
    first, second = server.requests
    assert first.headers["user-agent"] == "reactive-tasks"
    assert first.headers["accept-encoding"] == "gzip, deflate"
    assert second.headers["accept-encoding"] == "gzip"  # the caller's own choice wins


@pytest.mark.parametrize("how", ["client", "transport"])
async def test_a_users_client_or_transport_gets_the_same_answer_type(how: str) -> None:
    sent: list[httpx.Request] = []

    class Recording(httpx.AsyncHTTPTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            sent.append(request)
            return await super().handle_async_request(request)

    transport = Recording()
    option: dict[str, Any] = (
        {"client": httpx.AsyncClient(transport=transport)} if how == "client"
        else {"transport": transport}
    )
    reply_body = b'{"ok": true}'
    headers = {"Content-Type": "text/plain; charset=latin-1"}
    with HostileServer(lambda request: Reply.of(200, reply_body, headers=headers)) as server:
        async with CloudCoinBackend(server.url, policy=POLICY, **option) as backend:
            reply = await backend.session().request("GET", "/own")
    assert isinstance(reply, HttpReply)
    assert (reply.status_code, reply.json(), reply.text) == (200, {"ok": True}, '{"ok": true}')
    assert reply.headers["content-type"] == headers["Content-Type"]
    assert len(sent) == 1  # through the user's httpx transport


async def test_the_concurrency_cap_holds_while_rounds_overlap_and_one_is_cancelled() -> None:
    in_flight = 0
    most = 0

    async def read(ref: TaskRef) -> str:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        try:
            await asyncio.sleep(0.001)
        finally:
            in_flight -= 1
        return ref.task_id

    async with CloudCoinBackend("http://127.0.0.1:9", max_concurrency=4) as backend:
        session = backend.session()

        async def drain(count: int, stop_after: int | None = None) -> int:
            got = 0
            refs = [TaskRef(f"{count}-{i}") for i in range(count)]
            async for _ref, answer in session.each(refs, read):
                assert isinstance(answer, str)
                got += 1
                if got == stop_after:
                    break
            return got

        for _ in range(3):
            results = await asyncio.gather(drain(40), drain(25, stop_after=7), drain(1), drain(30))
            assert results == [40, 7, 1, 30]
            assert in_flight == 0
        # every slot came back: a full round still runs 4 at a time, never more
        most = 0
        assert await drain(40) == 40
    assert most == 4
