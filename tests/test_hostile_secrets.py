"""No secret anywhere: exception chains, log records of every logger, CLI output, under faults.

Every backend is driven against a HostileServer that answers each request with one fault (a bad
status line, a reset, 5xx until the budget runs out, an answer slower than the request timeout,
401); every log record (all loggers at DEBUG) and every link of the raised exception's
``__cause__``/``__context__`` chain must be free of every secret the backend was given.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hostile import HostileServer, RawRequest, Reply

from reactive_tasks import PollPolicy, ReactiveTasksError
from reactive_tasks.backends import (
    AparaviBackend,
    CloudCoinBackend,
    GreenCloudBackend,
    IExecBackend,
    TaskclusterBackend,
)
from reactive_tasks.backends._base import Backend

pytest.importorskip("eth_abi")
pytest.importorskip("mohawk")

POLICY = PollPolicy(
    interval=0.01, max_interval=0.02, jitter=0.0, request_timeout=0.3, retry_budget=1
)
HEADER = "Bearer user-header-secret-5e6f7a8b9c"
TOKEN = "0123abcd-1111-4222-8333-444455556666"
PATH_KEY = "alchemyKey9f8e7d6c5b4a39281706"
HUB = "0x3eca1b216a7df1c7689aeb259ffb83adfb894e7f"
IEXEC_TASK = "0x" + "ab" * 32


@dataclass
class Case:
    """A backend built against a server URL, the id it watches and the secrets it holds."""

    build: Callable[[str], Backend[Any]]
    task_id: str
    secrets: tuple[str, ...]
    identity: dict[str, str]


CASES: dict[str, Case] = {
    "cloudcoin-headers": Case(
        lambda url: CloudCoinBackend(url, headers={"Authorization": HEADER}, policy=POLICY),
        "6a1f1e9c-2f0b-4f7e-9f3c-0c1d2e3f4a5b",
        (HEADER, "user-header-secret-5e6f7a8b9c"),
        {},
    ),
    "cloudcoin-userinfo": Case(
        lambda url: CloudCoinBackend(
            url.replace("://", "://ccuser:ccpass-url-secret-1234@"), policy=POLICY
        ),
        "6a1f1e9c-2f0b-4f7e-9f3c-0c1d2e3f4a5b",
        ("ccpass-url-secret-1234",),
        {},
    ),
    "taskcluster": Case(
        lambda url: TaskclusterBackend(
            url, credentials={"clientId": "tester", "accessToken": "tc-access-token-0a1b2c3d4e5f"},
            policy=POLICY,
        ),
        "fN1SbArXTPSVFNUvaOlinQ",
        ("tc-access-token-0a1b2c3d4e5f", 'mac="'),
        {},
    ),
    "greencloud-token": Case(
        lambda url: GreenCloudBackend(url, token="gc-token-secret-0123456789", policy=POLICY),
        "0123456789abcdef01234567",
        ("gc-token-secret-0123456789",),
        {},
    ),
    "greencloud-api-key": Case(
        lambda url: GreenCloudBackend(url, api_key="gc-api-key-secret-9876543210", policy=POLICY),
        "0123456789abcdef01234567",
        ("gc-api-key-secret-9876543210",),
        {},
    ),
    "aparavi": Case(
        lambda url: AparaviBackend(url, api_key="sk-aparavi-secret-key-012345", policy=POLICY),
        TOKEN,
        ("sk-aparavi-secret-key-012345", TOKEN),
        {"task_type": "cpu"},
    ),
    "iexec": Case(
        lambda url: IExecBackend(
            f"{url}/v2/{PATH_KEY}", HUB, headers={"Authorization": HEADER}, policy=POLICY
        ),
        IEXEC_TASK,
        (PATH_KEY, HEADER, "user-header-secret-5e6f7a8b9c"),
        {},
    ),
    "iexec-user-client": Case(
        lambda url: IExecBackend(
            f"{url}/v2/{PATH_KEY}", HUB, headers={"Authorization": HEADER}, policy=POLICY,
            client=httpx.AsyncClient(timeout=POLICY.request_timeout),
        ),
        IEXEC_TASK,
        (PATH_KEY, HEADER, "user-header-secret-5e6f7a8b9c"),
        {},
    ),
}

FAULTS: dict[str, Callable[[RawRequest], Reply]] = {
    "bad-status-line": lambda req: Reply.garbage(),
    "reset": lambda req: Reply(b"", close=True),
    "5xx": lambda req: Reply.of(503, b'{"message": "down"}'),
    "timeout": lambda req: Reply.of(503, delay=1.0),
    "401": lambda req: Reply.json({"message": "denied", "error": "denied"}, status=401),
}


@pytest.fixture
def every_record(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every log record of every logger, captured at DEBUG on the root logger."""
    manager = logging.Logger.manager
    saved = {
        name: logger.level
        for name, logger in manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    for name in saved:
        logging.getLogger(name).setLevel(logging.DEBUG)
    caplog.set_level(logging.DEBUG)
    yield caplog
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


def chain_texts(exc: BaseException) -> list[str]:
    """str() and repr() of every exception reachable by ``__cause__`` and ``__context__``."""
    texts = ["".join(traceback.format_exception(exc))]
    todo, seen = [exc], set()
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        texts += [str(current), repr(current)]
        todo += [e for e in (current.__cause__, current.__context__) if e is not None]
    return texts


def formatted(records: list[logging.LogRecord]) -> list[str]:
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return [formatter.format(record) for record in records]


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("backend_name", list(CASES))
async def test_no_secret_in_errors_or_logs(
    backend_name: str, fault: str, every_record: pytest.LogCaptureFixture
) -> None:
    case = CASES[backend_name]
    with HostileServer(FAULTS[fault]) as server:
        backend = case.build(server.url)
        try:
            with pytest.raises(ReactiveTasksError) as caught:
                await backend.status(case.task_id, **case.identity)
        finally:
            await backend.aclose()
            own_client = getattr(backend, "_client", None)
            if own_client is not None:
                await own_client.aclose()
        assert server.requests, "the fault was served"
    records = every_record.records
    if fault in ("5xx", "401"):
        assert any(r.name == "reactive_tasks.http" for r in records), "DEBUG records captured"
    texts = chain_texts(caught.value) + formatted(records) + [repr(backend)]
    for secret in case.secrets:
        leaks = [t for t in texts if secret in t]
        assert not leaks, f"{secret!r} leaked: {leaks[0][:400]}"
    if case.task_id == TOKEN:
        assert "0123abcd…" in str(caught.value), "the token shows shortened"


@pytest.mark.parametrize("fault", ["bad-status-line", "5xx"])
def test_watch_json_output_carries_no_secret(fault: str) -> None:
    key = "sk-aparavi-cli-secret-abcdef"
    env = {**os.environ, "APARAVI_KEY": key, "PYTHONPATH": os.getcwd()}
    with HostileServer(FAULTS[fault]) as server:
        done = subprocess.run(
            [sys.executable, "-m", "reactive_tasks.cli", "watch", "aparavi", TOKEN,
             "--base-url", server.url, "--api-key-env", "APARAVI_KEY", "--task-type", "cpu",
             "--interval", "0.01", "--json"],
            env=env, capture_output=True, text=True, timeout=60,
        )
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "BackendUnavailable" in done.stdout
    assert key not in output
    assert TOKEN not in output
