"""Failed polls reach the ``reactive_tasks`` logger: retries at INFO, the give-up at WARNING.

Records carry structured fields (``rt_backend``, ``rt_task``, ``rt_attempt``, ``rt_budget``,
``rt_reason``) and name a secret task id only as its display id.
"""

from __future__ import annotations

import gc
import logging
import socket

import pytest

from reactive_tasks import BackendUnavailable, PollPolicy, wait_sync
from reactive_tasks.backends import AparaviBackend, CloudCoinBackend

GUID = "bdc8e99d-dd8a-40e9-8840-f9f8eef16c71"


def closed_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_each_retry_is_logged_at_info_and_the_give_up_at_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gc.collect()  # an Aparavi backend of an earlier test, still alive, shortens UUIDs in logs
    backend = CloudCoinBackend(closed_url(), policy=PollPolicy(interval=0.01, retry_budget=2))
    with caplog.at_level(logging.INFO, logger="reactive_tasks"), pytest.raises(
        BackendUnavailable
    ):
        wait_sync(backend.observe(GUID), timeout=30)
    faults = [r for r in caplog.records if hasattr(r, "rt_attempt")]
    assert [(r.levelno, r.rt_attempt, r.rt_budget) for r in faults] == [  # type: ignore[attr-defined]
        (logging.INFO, 1, 2), (logging.INFO, 2, 2), (logging.WARNING, 3, 2)]
    assert {(r.rt_backend, r.rt_task, r.rt_reason) for r in faults} == {  # type: ignore[attr-defined]
        ("cloudcoin", GUID, "connection refused")}
    assert faults[0].getMessage() == (
        f"cloudcoin {GUID}: poll failed, retrying 1/2: connection refused")


def test_a_secret_task_id_is_logged_shortened(caplog: pytest.LogCaptureFixture) -> None:
    token = "5c1e4b9a-7d2f-4e8b-9a3c-1f6d8e2b4a70"
    backend = AparaviBackend(closed_url(), api_key="key-h10b-secret",
                             policy=PollPolicy(interval=0.01, retry_budget=1))
    with caplog.at_level(logging.INFO, logger="reactive_tasks"), pytest.raises(
        BackendUnavailable
    ):
        wait_sync(backend.observe(token, task_type="cpu"), timeout=30)
    faults = [r for r in caplog.records if hasattr(r, "rt_task")]
    assert len(faults) == 2
    for record in faults:
        assert record.rt_task == backend.display_id(token) != token  # type: ignore[attr-defined]
        assert token not in record.getMessage() and "key-h10b-secret" not in record.getMessage()
        assert token not in str(record.__dict__)
