"""Aparavi secrets: the API key and full tokens never reach a log record, repr or error text."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from reactive_tasks import PollPolicy, ReactiveTasksError, wait
from reactive_tasks.backends import AparaviBackend, AparaviTask
from reactive_tasks.emulator import EmulatorClient, EmulatorServer, create_app
from reactive_tasks.emulator.aparavi import make_api

KEY = "sk-aparavi-0123456789-secret-key"
SPENT = "sk-aparavi-spent-key-9876543210"
FAST = PollPolicy(interval=0.02, max_interval=0.1, jitter=0.0, request_timeout=2.0, retry_budget=2)
PIPELINE = {"components": [{"id": "parse_1"}]}


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorServer]:
    """An emulator whose Aparavi API accepts only this test's secret key."""
    with EmulatorServer(app=create_app([make_api(api_keys=[KEY], exhausted_keys=[SPENT])])) as s:
        yield s


@pytest.fixture
def control(server: EmulatorServer) -> Iterator[EmulatorClient]:
    with EmulatorClient(server.url) as client:
        client.reset()
        yield client


def texts_of(exc: BaseException) -> list[str]:
    """Everything an exception shows: str, repr, the formatted traceback, and its causes'."""
    out = ["".join(traceback.format_exception(exc))]
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 10:
        out += [str(current), repr(current)]
        current = current.__cause__ or current.__context__
        seen += 1
    return out


async def exercise(backend: AparaviBackend, control: EmulatorClient, log: list[str]) -> set[str]:
    """Every path of the backend, happy and not; returns the full tokens it met."""
    tokens: set[str] = set()

    async def expect_error(action: Callable[[], Any]) -> None:
        try:
            await action()
        except ReactiveTasksError as exc:
            log.extend(texts_of(exc))
        else:
            raise AssertionError("an error was expected")

    task = await backend.start(PIPELINE, name="errors", threads=2)
    tokens.add(task.token)
    log += [repr(task), str(task), repr(backend), str(backend)]
    final = await wait(backend.observe(task), timeout=10)
    log += [str(final.message), final.native_status]
    # (events themselves carry the full token by design: it is the id the user holds)
    await backend.status(task.token, task_type=task.type)

    running = await backend.start(PIPELINE, name="endless")
    tokens.add(running.token)
    await backend.cancel(running)

    control.inject_fault("aparavi", "status", status=503, count=10, task_id=task.token)
    await expect_error(lambda: wait(backend.observe(task), timeout=10))  # BackendUnavailable
    control.clear_faults()
    control.inject_fault("aparavi", "reset", count=1, path_contains="/task")
    await expect_error(lambda: backend.cancel(task))  # not retried
    control.inject_fault("aparavi", "api_error", code=422, message=f"Invalid token {task.token}")
    await expect_error(lambda: backend.status(task))
    control.inject_fault("aparavi", "api_error", code=404, message=f"no task {task.token}")
    await expect_error(lambda: backend.cancel(task))
    control.inject_fault("aparavi", "malformed", body={"status": "OK"})
    await expect_error(lambda: backend.status(task))
    control.inject_fault(
        "aparavi", "status", status=401,
        body={"status": "Error", "error": {"message": f"key {KEY} refused", "code": 401}},
    )  # fmt: skip
    await expect_error(lambda: backend.status(task))
    await expect_error(lambda: backend.status(AparaviTask(task.token, "gpu")))  # 404
    await expect_error(lambda: wait(backend.observe(task.token + "0", task_type="cpu")))
    await expect_error(lambda: wait(backend.observe(task.token, task_type="tpu")))
    return tokens


@pytest.mark.parametrize("client_kind", ["plain httpx.AsyncClient", "default transport"])
async def test_no_secret_in_logs_reprs_or_errors(
    server: EmulatorServer,
    control: EmulatorClient,
    caplog: pytest.LogCaptureFixture,
    client_kind: str,
) -> None:
    caplog.set_level(logging.DEBUG)  # the root logger: every logger's records propagate here
    for name in ["httpx", "httpcore", "reactive_tasks", "reactive_tasks.http", "asyncio"]:
        caplog.set_level(logging.DEBUG, logger=name)
    url = server.url + "/aparavi"
    shown: list[str] = []
    tokens: set[str] = set()
    if client_kind == "plain httpx.AsyncClient":
        async with httpx.AsyncClient() as client:
            backend = AparaviBackend(url, api_key=KEY, policy=FAST, client=client)
            tokens |= await exercise(backend, control, shown)
            spent = AparaviBackend(url, api_key=SPENT, policy=FAST, client=client)
            with pytest.raises(ReactiveTasksError, match="out of tokens") as info:
                await spent.start(PIPELINE)
            shown += texts_of(info.value)
            shown.append(repr(spent))
            await backend.aclose()
    else:
        async with AparaviBackend(url, api_key=KEY, policy=FAST, bearer=True) as backend:
            tokens |= await exercise(backend, control, shown)

    records = caplog.records
    for record in records:
        shown += [record.getMessage(), repr(record.args), str(record.msg)]
        if record.exc_info:
            shown.append("".join(traceback.format_exception(*record.exc_info)))
    assert len(tokens) == 2 and len(shown) > 20
    for text in shown:
        for secret in (KEY, SPENT, *tokens):
            assert secret not in text, f"a secret leaked into: {text[:300]!r}"
    assert any("…" in text for text in shown), "tokens show shortened"
    if client_kind == "plain httpx.AsyncClient":
        requests = [r.getMessage() for r in records if r.name == "httpx"]
        assert any("token=***" in m and "/task" in m for m in requests), "httpx logged requests"
    else:
        assert any(r.name == "reactive_tasks.http" for r in records)


def test_reference_repr_is_shortened() -> None:
    token = "0d1c345b-e4f7-44cd-9845-c48ac861f3ea"
    ref = AparaviTask(token, "cpu")
    assert repr(ref) == "AparaviTask(token='0d1c345b…', type='cpu')" == str(ref)
    assert token not in f"{ref}" and ref.token == token
    backend = AparaviBackend(api_key=KEY)
    assert KEY not in repr(backend) and KEY not in str(backend)
    assert backend.display_id(token) == "0d1c345b…"
