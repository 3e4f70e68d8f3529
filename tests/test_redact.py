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


def test_scrub_removes_signed_url_parameters_hawk_headers_and_registered_secrets() -> None:
    from reactive_tasks._redact import Secrets, scrub

    secrets = Secrets()
    secrets.add("Bearer provider-key-0a1b2c3d")
    secrets.add_url("https://arb.example/v2/alchemyKey0123456789abcd", path_is_secret=True)
    text = (
        "GET https://s.example/o?X-Goog-Signature=g1&X-Goog-Credential=g2&alt=media "
        "https://a.blob.example/c/b?sv=2024&sig=az1 https://tc.example/a?bewit=bw1 "
        "https://s3.example/k?X-Amz-Security-Token=t1&X-Amz-Credential=c1 "
        'Hawk mac="m1", hash="h1", id="me", ts="1"\n'
        "provider-key-0a1b2c3d https://arb.example/v2/alchemyKey0123456789abcd"
    )
    clean = scrub(text, secrets)
    for secret in ("g1", "g2", "az1", "bw1", "t1", "c1", '"m1"', '"h1"', "provider-key",
                   "alchemyKey"):
        assert secret not in clean, clean
    assert clean.endswith("https://arb.example"), "an RPC URL with a path key shows its origin"
    assert "alt=media" in clean and "sv=2024" in clean, "other parameters stay readable"


def test_a_backend_that_sent_nothing_shortens_no_other_ids_in_logs() -> None:
    """A backend built only to check ids (as the relay does) has no secret in flight, so its
    patterns stay out of log records; its own text is still shortened."""
    import gc

    from reactive_tasks._redact import scrub, shorten

    gc.collect()  # active backends of earlier tests, still alive, would shorten GUIDs too
    from reactive_tasks.backends import AparaviBackend

    guid = "bdc8e99d-dd8a-40e9-8840-f9f8eef16c71"
    checker = AparaviBackend("http://127.0.0.1:1", api_key="key-for-ids-only")
    assert scrub(f"cloudcoin {guid}: poll failed") == f"cloudcoin {guid}: poll failed"
    assert scrub(f"aparavi {guid}", checker.secrets) == f"aparavi {shorten(guid)}"
    checker.secrets.active = True  # what its first request does
    assert scrub(f"cloudcoin {guid}") == f"cloudcoin {shorten(guid)}"
