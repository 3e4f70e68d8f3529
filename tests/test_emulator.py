"""The emulator over real HTTP: CloudCoin scripts and shapes, faults, counts and the server."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from reactive_tasks.emulator import EmulatorClient, EmulatorError, EmulatorServer, Step

TASK = "/cloudcoin/api/v1/task/{}"
TASKS = "/cloudcoin/api/v1/tasks/{}"


@pytest.fixture
def http(emulator: EmulatorClient) -> Iterator[httpx.Client]:
    """A plain HTTP client of the emulated APIs (what a backend would send)."""
    with httpx.Client(base_url=emulator.url, timeout=5.0) as client:
        yield client


def poll(http: httpx.Client, task_id: str, path: str = TASK) -> dict[str, Any]:
    response = http.get(path.format(task_id))
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def payload(http: httpx.Client, task_id: str) -> dict[str, Any]:
    body = poll(http, task_id)
    assert body["status"] == "success"
    result: dict[str, Any] = body["payload"]
    return result


# CloudCoin scripts and shapes


def test_default_script_advances_by_polls(emulator: EmulatorClient, http: httpx.Client) -> None:
    task_id = emulator.create_task("cloudcoin")
    assert uuid.UUID(task_id).version == 4 and str(uuid.UUID(task_id)) == task_id
    seen = [payload(http, task_id) for _ in range(4)]
    assert [(p["status"], p["progress"]) for p in seen] == [
        ("running", 0),
        ("running", 50),
        ("completed", 100),
        ("completed", 100),
    ]
    done = seen[2]
    assert done["data"] == {"online": 25, "pownstring": "p" * 25}
    assert done["message"] == "Command Completed"
    assert done["finished"] >= done["started"] and seen[3]["finished"] == done["finished"]
    assert abs(done["started"] - time.time()) < 5


def test_envelope_shapes(emulator: EmulatorClient, http: httpx.Client) -> None:
    task_id = emulator.create_task(
        "cloudcoin",
        [
            {"status": "running", "progress": 40, "message": "echoing"},
            Step(status="completed", progress=100, data={"online": 3}),
        ],
    )
    running = poll(http, task_id)
    assert list(running) == ["payload", "status"] and running["status"] == "success"
    assert running["payload"] == {
        "id": task_id,
        "status": "running",
        "progress": 40,
        "started": running["payload"]["started"],
        "message": "echoing",
    }
    assert isinstance(running["payload"]["started"], int)
    completed = poll(http, task_id)["payload"]
    assert list(completed) == ["id", "status", "progress", "started", "finished", "message", "data"]
    assert completed["data"] == {"online": 3} and isinstance(completed["finished"], int)


def test_error_step_has_finished_but_no_data(emulator: EmulatorClient, http: httpx.Client) -> None:
    task_id = emulator.create_task("cloudcoin", [{"status": "error", "message": "RAIDA down"}])
    result = payload(http, task_id)
    assert result["status"] == "error" and result["message"] == "RAIDA down"
    assert "finished" in result and "data" not in result


def test_script_by_seconds(emulator: EmulatorClient, http: httpx.Client) -> None:
    task_id = emulator.create_task(
        "cloudcoin",
        [
            {"status": "running", "progress": 10, "seconds": 0.05},
            {"status": "running", "progress": 60, "seconds": 0.05},
            {"status": "completed", "progress": 100},
        ],
    )
    assert [payload(http, task_id)["progress"] for _ in range(3)] == [10, 10, 10]
    time.sleep(0.06)
    assert payload(http, task_id)["progress"] == 60
    time.sleep(0.06)
    done = payload(http, task_id)
    assert done["status"] == "completed" and done["data"] == {}


def test_polls_count_per_step(emulator: EmulatorClient, http: httpx.Client) -> None:
    task_id = emulator.create_task(
        "cloudcoin", [{"progress": 5, "polls": 3}, {"status": "completed"}]
    )
    assert [payload(http, task_id)["progress"] for _ in range(4)] == [5, 5, 5, 100]
    assert emulator.task("cloudcoin", task_id)["step"] == 1


def test_unknown_and_malformed_task_ids(emulator: EmulatorClient, http: httpx.Client) -> None:
    missing = poll(http, str(uuid.uuid4()))
    assert missing == {
        "status": "error",
        "payload": {"code": 4105, "message": "Task does not exist", "details": None},
    }
    malformed = poll(http, "not-a-guid")
    assert malformed["status"] == "error" and malformed["payload"]["code"] == 4100


def test_both_routes_and_id_forms(emulator: EmulatorClient, http: httpx.Client) -> None:
    task_id = emulator.create_task("cloudcoin", [{"progress": 1, "polls": 10}])
    assert poll(http, task_id, TASKS)["payload"]["id"] == task_id
    assert poll(http, task_id.replace("-", "").upper())["payload"]["id"] == task_id
    routes = emulator.requests()["by_route"]
    assert routes == {"cloudcoin GET /api/v1/task/{id}": 1, "cloudcoin GET /api/v1/tasks/{id}": 1}


def test_custom_id_and_recreate_restarts(emulator: EmulatorClient, http: httpx.Client) -> None:
    task_id = "bdc8e99d-dd8a-40e9-8840-f9f8eef16c71"
    assert emulator.create_task("cloudcoin", id=task_id.upper()) == task_id
    assert payload(http, task_id)["progress"] == 0
    assert payload(http, task_id)["progress"] == 50
    emulator.create_task("cloudcoin", id=task_id, started=1678436330)
    again = payload(http, task_id)
    assert again["progress"] == 0 and again["started"] == 1678436330


def test_bulk_creation(emulator: EmulatorClient, http: httpx.Client) -> None:
    ids = emulator.create_tasks("cloudcoin", 300, [{"status": "completed", "data": {"n": 1}}])
    assert len(set(ids)) == 300
    for task_id in ids[:5] + ids[-5:]:
        assert payload(http, task_id)["data"] == {"n": 1}


# Faults


def test_status_fault(emulator: EmulatorClient, http: httpx.Client) -> None:
    task_id = emulator.create_task("cloudcoin")
    emulator.inject_fault("cloudcoin", "status")
    emulator.inject_fault("cloudcoin", "status", status=500, body={"oops": True})
    first = http.get(TASK.format(task_id))
    assert first.status_code == 503 and first.json()["error"]["code"] == 503
    second = http.get(TASK.format(task_id))
    assert second.status_code == 500 and second.json() == {"oops": True}
    assert http.get(TASK.format(task_id)).status_code == 200
    assert emulator.faults() == []


def test_rate_limit_fault(emulator: EmulatorClient, http: httpx.Client) -> None:
    task_id = emulator.create_task("cloudcoin")
    emulator.inject_fault("cloudcoin", "rate_limit", retry_after=2)
    emulator.inject_fault("cloudcoin", "rate_limit", retry_after=0.25)
    first = http.get(TASK.format(task_id))
    assert first.status_code == 429 and first.headers["Retry-After"] == "2"
    assert http.get(TASK.format(task_id)).headers["Retry-After"] == "0.25"


def test_slow_fault(emulator: EmulatorClient, http: httpx.Client) -> None:
    task_id = emulator.create_task("cloudcoin")
    emulator.inject_fault("cloudcoin", "slow", delay=0.2)
    started = time.monotonic()
    assert payload(http, task_id)["progress"] == 0
    assert time.monotonic() - started >= 0.19
    with pytest.raises(httpx.ReadTimeout):
        emulator.inject_fault("cloudcoin", "slow", delay=0.3)
        http.get(TASK.format(task_id), timeout=0.05)


def test_reset_fault_is_a_transport_error(emulator: EmulatorClient, http: httpx.Client) -> None:
    task_id = emulator.create_task("cloudcoin")
    emulator.inject_fault("cloudcoin", "reset")
    with pytest.raises(httpx.TransportError):
        http.get(TASK.format(task_id))
    assert payload(http, task_id)["progress"] == 0


def test_malformed_fault(emulator: EmulatorClient, http: httpx.Client) -> None:
    task_id = emulator.create_task("cloudcoin")
    emulator.inject_fault("cloudcoin", "malformed")
    emulator.inject_fault("cloudcoin", "malformed", body={"payload": 42})
    response = http.get(TASK.format(task_id))
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()
    assert http.get(TASK.format(task_id)).json() == {"payload": 42}


def test_api_error_fault(emulator: EmulatorClient, http: httpx.Client) -> None:
    task_id = emulator.create_task("cloudcoin")
    emulator.inject_fault("cloudcoin", "api_error", code=4106, message="Wallet locked")
    assert poll(http, task_id) == {
        "status": "error",
        "payload": {"code": 4106, "message": "Wallet locked", "details": None},
    }


def test_faults_do_not_advance_the_script(emulator: EmulatorClient, http: httpx.Client) -> None:
    task_id = emulator.create_task("cloudcoin")
    for kind in ("status", "rate_limit", "malformed", "api_error"):
        emulator.inject_fault("cloudcoin", kind)
    emulator.inject_fault("cloudcoin", "reset")
    for _ in range(4):
        http.get(TASK.format(task_id))
    with pytest.raises(httpx.TransportError):
        http.get(TASK.format(task_id))
    assert [payload(http, task_id)["progress"] for _ in range(3)] == [0, 50, 100]
    assert emulator.requests()["by_task"][task_id] == 8


def test_fault_count_and_targeting(emulator: EmulatorClient, http: httpx.Client) -> None:
    first, second = emulator.create_tasks("cloudcoin", 2)
    emulator.inject_fault("cloudcoin", "status", count=2, task_id=second.upper())
    emulator.inject_fault("cloudcoin", "status", status=502, path_contains="/v1/tasks/")
    assert http.get(TASK.format(first)).status_code == 200
    assert http.get(TASK.format(second)).status_code == 503
    assert http.get(TASKS.format(first)).status_code == 502
    assert emulator.faults()[0]["remaining"] == 1
    assert http.get(TASKS.format(second)).status_code == 503
    assert http.get(TASK.format(second)).status_code == 200
    emulator.inject_fault("cloudcoin", "status", count=5)
    emulator.clear_faults()
    assert http.get(TASK.format(second)).status_code == 200


# Control API


def test_request_counts_and_reset(emulator: EmulatorClient, http: httpx.Client) -> None:
    a, b = emulator.create_tasks("cloudcoin", 2)
    for task_id in (a, a, b):
        poll(http, task_id)
    poll(http, "not-a-guid")
    counts = emulator.requests()
    assert counts == {
        "total": 4,
        "by_api": {"cloudcoin": 4},
        "by_route": {"cloudcoin GET /api/v1/task/{id}": 4},
        "by_task": {a: 2, b: 1, "not-a-guid": 1},
    }
    emulator.reset_requests()
    assert emulator.requests() == {"total": 0, "by_api": {}, "by_route": {}, "by_task": {}}
    emulator.inject_fault("cloudcoin", "status")
    emulator.reset()
    assert poll(http, a)["payload"]["code"] == 4105
    assert emulator.faults() == []
    assert emulator.requests()["total"] == 1


def test_control_api_errors(emulator: EmulatorClient, http: httpx.Client) -> None:
    with pytest.raises(EmulatorError) as unknown:
        emulator.create_task("nope")
    assert unknown.value.status_code == 404 and "cloudcoin" in unknown.value.message
    bad_requests: list[tuple[str, dict[str, Any]]] = [
        ("/_emulator/cloudcoin/tasks", {"steps": []}),
        ("/_emulator/cloudcoin/tasks", {"steps": [{"polls": 1, "seconds": 1}]}),
        ("/_emulator/cloudcoin/tasks", {"steps": [{"progress": "half"}]}),
        ("/_emulator/cloudcoin/tasks", {"steps": [{"stauts": "running"}]}),
        ("/_emulator/cloudcoin/tasks", {"id": "not-a-guid"}),
        ("/_emulator/cloudcoin/tasks", {"colour": "red"}),
        ("/_emulator/cloudcoin/tasks/bulk", {"count": -1}),
        ("/_emulator/faults", {"api": "cloudcoin", "kind": "explode"}),
        ("/_emulator/faults", {"api": "cloudcoin", "kind": "status", "count": 0}),
    ]
    for path, body in bad_requests:
        response = http.post(path, json=body)
        assert response.status_code == 422, (path, body, response.text)
        assert isinstance(response.json()["error"], str)
    assert http.post("/_emulator/cloudcoin/tasks", content=b"{nope").status_code == 422
    assert http.post("/_emulator/faults", json={"api": "nope", "kind": "reset"}).status_code == 404
    apis = http.get("/_emulator/").json()["apis"]
    assert "cloudcoin" in apis and apis == sorted(apis)


# Server


def test_server_stop_leaves_no_thread_or_socket() -> None:
    before = set(threading.enumerate())
    server = EmulatorServer()
    with server, httpx.Client(base_url=server.url) as client:
        assert server.running and server.url == f"http://127.0.0.1:{server.port}"
        assert client.get("/_emulator/").status_code == 200
        assert set(threading.enumerate()) - before
    assert not server.running
    assert set(threading.enumerate()) - before == set()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", server.port), timeout=1):
        pass


def test_module_runs_in_foreground() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "reactive_tasks.emulator", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        prefix = "reactive-tasks emulator listening on http://127.0.0.1:"
        assert line.startswith(prefix), line
        with EmulatorClient(line.rsplit(" ", 1)[1]) as client:
            assert client.create_task("cloudcoin")
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()
