"""GreenCloud credentials over real HTTP: lazy login, refresh on 401, wrong keys, no leaks."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest
from reactivex import operators as ops

from reactive_tasks import AuthenticationError, PollPolicy, TaskState, aiter, wait
from reactive_tasks.backends import GreenCloudBackend
from reactive_tasks.emulator import EmulatorClient

FAST = PollPolicy(interval=0.02, max_interval=0.1, jitter=0.0, request_timeout=2.0)
FUNCTION = "6405848581b16f7a07cd4c48"
LOGIN = "greencloud POST /v1/auth/apiKey"
REFRESH = "greencloud POST /v1/auth/refresh"
LIST = "greencloud GET /v1/task/list"
KEY = "gc-secret-api-key-0123456789"


def routes(emulator: EmulatorClient) -> dict[str, int]:
    by_route: dict[str, int] = emulator.requests()["by_route"]
    return by_route


def login(emulator: EmulatorClient, key: str = KEY) -> dict[str, Any]:
    answer = httpx.post(emulator.api_url("greencloud") + "/v1/auth/apiKey", json={"key": key})
    assert answer.status_code == 200
    body: dict[str, Any] = answer.json()
    return body


async def test_login_is_lazy_and_happens_once(emulator: EmulatorClient) -> None:
    ids = emulator.create_tasks("greencloud", 10, [{"state": "finished"}])
    backend = GreenCloudBackend(emulator.api_url("greencloud"), api_key=KEY, policy=FAST)
    assert emulator.requests()["total"] == 0, "constructing logs nobody in"
    async with backend:
        for task in ids:
            await wait(backend.observe(task), timeout=10)
        await backend.submit(FUNCTION)
    assert routes(emulator)[LOGIN] == 1 and REFRESH not in routes(emulator)


async def test_static_token_with_or_without_bearer(emulator: EmulatorClient) -> None:
    token = login(emulator)["accessToken"]
    task = emulator.create_task("greencloud", [{"state": "finished"}])
    for sent in (token, f"Bearer {token}"):
        async with GreenCloudBackend(
            emulator.api_url("greencloud"), token=sent, policy=FAST
        ) as backend:
            assert (await wait(backend.observe(task), timeout=10)).state is TaskState.COMPLETED
    assert routes(emulator)[LOGIN] == 1  # only the test's own login


async def test_expired_tokens_are_refreshed_mid_observation(emulator: EmulatorClient) -> None:
    steps = [{"state": "issued", "polls": 2}]
    steps += [{"state": "assigned", "progress": p, "polls": 3} for p in (10, 40, 70)]
    steps += [{"state": "finished", "progress": 100}]
    task = emulator.create_task("greencloud", steps)
    policy = PollPolicy(interval=0.05, max_interval=0.2, jitter=0.0)
    async with GreenCloudBackend(
        emulator.api_url("greencloud"), api_key=KEY + ";expires_in=0.15", policy=policy
    ) as backend:
        seen = [(e.state, e.progress) async for e in aiter(backend.observe(task))]
    assert seen == [(TaskState.PENDING, 0.0), (TaskState.RUNNING, 10.0), (TaskState.RUNNING, 40.0),
                    (TaskState.RUNNING, 70.0), (TaskState.COMPLETED, 100.0)]
    counts = routes(emulator)
    assert counts[LOGIN] == 1
    assert counts[REFRESH] >= 2, counts


async def test_refused_refresh_falls_back_to_a_new_login(emulator: EmulatorClient) -> None:
    task = emulator.create_task("greencloud", [{"state": "assigned"}])
    async with GreenCloudBackend(
        emulator.api_url("greencloud"), api_key=KEY, policy=FAST
    ) as backend:
        await backend.status(task)
        emulator.inject_fault("greencloud", "status", status=401, path_contains="/list")
        emulator.inject_fault("greencloud", "status", status=401, path_contains="/refresh")
        assert (await backend.status(task)).state is TaskState.RUNNING
    counts = routes(emulator)
    assert (counts[LOGIN], counts[REFRESH]) == (2, 1)


async def test_renewal_is_tried_once_per_request(emulator: EmulatorClient) -> None:
    task = emulator.create_task("greencloud", [{"state": "assigned"}])
    emulator.inject_fault("greencloud", "status", status=401, path_contains="/list", count=2)
    async with GreenCloudBackend(
        emulator.api_url("greencloud"), api_key=KEY, policy=FAST
    ) as backend:
        with pytest.raises(AuthenticationError, match="401"):
            await wait(backend.observe(task), timeout=10)
    counts = routes(emulator)
    assert (counts[LIST], counts[LOGIN], counts[REFRESH]) == (2, 1, 1)


async def test_many_refused_requests_renew_once(emulator: EmulatorClient) -> None:
    ids = emulator.create_tasks("greencloud", 20, [{"state": "issued"}])
    async with GreenCloudBackend(
        emulator.api_url("greencloud"), api_key=KEY, policy=FAST
    ) as backend:
        await backend.record(ids[0])  # logged in
        for task in ids:  # every record read of the next round is refused once
            emulator.inject_fault("greencloud", "status", status=401, task_id=task)
        # one round: every record read goes out with the same token and is refused at once
        firsts = [wait(backend.observe(task).pipe(ops.take(1)), timeout=10) for task in ids]
        finals = await asyncio.gather(*firsts)
    assert {f.state for f in finals} == {TaskState.PENDING}
    assert not emulator.faults()
    assert (routes(emulator)[LOGIN], routes(emulator)[REFRESH]) == (1, 1)


async def test_wrong_api_key(emulator: EmulatorClient) -> None:
    task = emulator.create_task("greencloud", [{"state": "assigned"}])
    bad = "invalid-" + KEY
    async with GreenCloudBackend(
        emulator.api_url("greencloud"), api_key=bad, policy=FAST
    ) as backend:
        with pytest.raises(AuthenticationError, match="API key was refused") as info:
            await wait(backend.observe(task), timeout=10)
        assert bad not in str(info.value) and bad not in repr(info.value)
        with pytest.raises(AuthenticationError):
            await backend.submit(FUNCTION)


async def test_wrong_or_expired_static_token_is_not_renewed(emulator: EmulatorClient) -> None:
    task = emulator.create_task("greencloud", [{"state": "assigned"}])
    expired = login(emulator, KEY + ";expires_in=0.01")["accessToken"]
    for token in ("not-a-token", expired):
        async with GreenCloudBackend(
            emulator.api_url("greencloud"), token=token, policy=FAST
        ) as backend:
            with pytest.raises(AuthenticationError, match="401") as info:
                await wait(backend.observe(task), timeout=10)
        assert token not in str(info.value)
    counts = routes(emulator)
    assert counts[LOGIN] == 1 and REFRESH not in counts


async def test_no_secret_in_logs_reprs_or_errors(
    emulator: EmulatorClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    task = emulator.create_task("greencloud", [{"state": "issued", "polls": 2},
                                               {"state": "finished", "status": 500}])
    secrets: list[str] = [KEY]
    texts: list[str] = []
    backend = GreenCloudBackend(emulator.api_url("greencloud"), api_key=KEY, policy=FAST)
    async with backend:
        texts.append(repr(backend))
        final = await wait(backend.observe(task), timeout=10)
        texts += [repr(final), str(final.model_dump()), final.model_dump_json()]
        credentials = backend.auth
        assert credentials.access is not None and credentials.refresh is not None
        secrets += [credentials.access, credentials.refresh]
        texts += [repr(credentials), repr(backend), str(vars(backend).get("_headers"))]
        emulator.inject_fault("greencloud", "status", status=401, count=10)
        for call in (backend.status(task), backend.result(task), backend.submit(FUNCTION)):
            with pytest.raises(AuthenticationError) as info:
                await call
            texts += [str(info.value), repr(info.value)]
            cause = info.value.__cause__ or info.value.__context__
            while cause is not None:
                texts.append(str(cause))
                cause = cause.__cause__ or cause.__context__
    texts += [record.getMessage() for record in caplog.records]
    texts += [caplog.text]
    assert any("/v1/task/list" in t for t in texts), "the HTTP debug log was captured"
    for secret in secrets:
        for text in texts:
            assert secret not in text
