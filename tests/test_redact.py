"""Secrets stay out of logs: query-string redaction, userinfo, shortened tokens."""

from __future__ import annotations

import logging

import httpx
import pytest

from reactive_tasks._redact import protect_query_params, redact_url, shorten
from reactive_tasks.backends import CloudCoinBackend


def test_redact_url() -> None:
    names = {"token", "api_key"}
    assert redact_url("https://h/task?token=abc&type=cpu", names) == "https://h/task?token=***&type=cpu"
    assert redact_url("https://u:p@h/x", names) == "https://***@h/x"
    assert redact_url("https://h/x?Token=1", names) == "https://h/x?Token=***"
    assert redact_url("https://h/x", names) == "https://h/x"


def test_shorten() -> None:
    assert shorten("6a1f1e9c-2f0b-4f7e-9f3c-0c1d2e3f4a5b") == "6a1f1e9c…"
    assert shorten("short") == "short"


async def test_httpx_request_logs_never_carry_protected_query_values(
    caplog: pytest.LogCaptureFixture,
) -> None:
    protect_query_params("token")
    secret = "0f4e2c1a-9b8d-4c7e-a6f5-1e2d3c4b5a69"

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={})

    caplog.set_level(logging.DEBUG)
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        await client.get("http://api.test/task", params={"token": secret, "type": "cpu"})
    assert any("HTTP Request" in r.getMessage() for r in caplog.records)
    assert secret not in caplog.text
    assert "token=***" in caplog.text


def test_backend_repr_hides_userinfo() -> None:
    backend = CloudCoinBackend("http://user:hunter2@localhost:8004")
    assert "hunter2" not in repr(backend)
