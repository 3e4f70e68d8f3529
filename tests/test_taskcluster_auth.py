"""Hawk credentials: signed requests the emulator verifies; the access token never leaks."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import pickle
from types import SimpleNamespace
from typing import Any

import pytest

from reactive_tasks import AuthenticationError, ConfigurationError, TaskState, wait
from reactive_tasks.backends import TaskclusterBackend, TaskclusterCredentials
from reactive_tasks.emulator import EmulatorClient
from tests.taskcluster_helpers import FAST, step

CLIENT = "project/ci/watcher"
TOKEN = "Sup3rSecretAccessToken-0123456789abcdefghijk"


def private_tasks(emulator: EmulatorClient, count: int, token: str = TOKEN) -> list[str]:
    return [
        emulator.create_task(
            "taskcluster", [step("running"), step("completed")],
            clientId=CLIENT, accessToken=token,
        )
        for _ in range(count)
    ]


@pytest.mark.parametrize(
    "credentials",
    [
        {"clientId": CLIENT, "accessToken": TOKEN},
        SimpleNamespace(clientId=CLIENT, accessToken=TOKEN),
        TaskclusterCredentials(CLIENT, TOKEN),
        {"clientId": CLIENT, "accessToken": TOKEN, "certificate": {"version": 1, "seed": "s"}},
    ],
    ids=["mapping", "object", "model", "temporary"],
)
async def test_signed_requests_read_private_tasks(
    emulator: EmulatorClient, credentials: Any
) -> None:
    ids = private_tasks(emulator, 3)
    public = emulator.create_task("taskcluster", [step("completed")])
    async with TaskclusterBackend(
        emulator.api_url("taskcluster"), credentials=credentials, policy=FAST
    ) as backend:
        one = await backend.status(ids[0])  # a signed GET
        assert one.state is TaskState.RUNNING
        finals = await asyncio.gather(
            *(wait(backend.observe(i), timeout=10) for i in [*ids, public])
        )  # signed batch POSTs: the emulator checks the payload hash too
    assert {f.state for f in finals} == {TaskState.COMPLETED}
    assert emulator.requests()["by_route"]["taskcluster POST /api/queue/v1/tasks/status"] >= 1


async def test_wrong_token_is_an_authentication_error(emulator: EmulatorClient) -> None:
    (task,) = private_tasks(emulator, 1)
    wrong = {"clientId": CLIENT, "accessToken": "not-the-token"}
    async with TaskclusterBackend(
        emulator.api_url("taskcluster"), credentials=wrong, policy=FAST
    ) as backend:
        with pytest.raises(AuthenticationError, match="401"):
            await wait(backend.observe(task), timeout=10)


async def test_the_token_never_leaks(
    emulator: EmulatorClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    (task,) = private_tasks(emulator, 1, token="another-token-entirely")
    credentials = {"clientId": CLIENT, "accessToken": TOKEN}
    backend = TaskclusterBackend(
        emulator.api_url("taskcluster"), credentials=credentials, policy=FAST
    )
    shown = [repr(backend), str(backend), repr(TaskclusterCredentials.coerce(credentials))]
    assert CLIENT in shown[0]
    with pytest.raises(AuthenticationError) as info:  # signed with a token the task refuses
        await wait(backend.observe(task), timeout=10)
    error = info.value
    copy = pickle.loads(pickle.dumps(error))
    shown += [str(error), repr(error), repr(error.__cause__), repr(copy)]
    for bad in [{"clientId": CLIENT}, {"accessToken": TOKEN}, {"clientId": CLIENT,
                "accessToken": TOKEN, "certificate": "{" + TOKEN}]:
        with pytest.raises(ConfigurationError) as refused:
            TaskclusterBackend("https://tc.example.com", credentials=bad)
        shown.append(str(refused.value))
    await backend.aclose()
    shown.append(caplog.text)
    assert caplog.text, "debug logging was on"
    for text in shown:
        assert TOKEN not in text


async def test_temporary_credentials_send_their_certificate() -> None:
    cert = {"version": 1, "scopes": ["queue:status:*"], "start": 1, "expiry": 2,
            "seed": "s" * 44, "signature": "x", "issuer": "root"}
    creds = TaskclusterCredentials.coerce(
        {"clientId": CLIENT, "accessToken": TOKEN, "certificate": json.dumps(cert)}
    )
    ext = creds.hawk_ext()
    assert ext is not None
    assert json.loads(base64.urlsafe_b64decode(ext)) == {"certificate": cert}
    assert TaskclusterCredentials.coerce({"clientId": CLIENT, "accessToken": TOKEN}).hawk_ext() \
        is None
    backend = TaskclusterBackend("https://tc.example.com", credentials=creds)
    assert backend.auth is not None
    header = await backend.auth.sign(
        "GET", "https://tc.example.com/api/queue/v1/task/x/status", {}, None
    )
    assert f'id="{CLIENT}"' in header["Authorization"]
    assert f'ext="{ext}"' in header["Authorization"]
    assert TOKEN not in header["Authorization"]
