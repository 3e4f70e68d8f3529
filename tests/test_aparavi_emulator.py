"""The Aparavi DTC emulator over raw HTTP: shapes, lifecycles, keys, 401/404/422, cancel, faults."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from reactive_tasks.emulator import EmulatorClient, EmulatorError, EmulatorServer, create_app
from reactive_tasks.emulator.aparavi import API_KEYS, EXHAUSTED_KEYS, make_api, pick_type

KEY = API_KEYS[0]
AUTH = {"Authorization": KEY}
PIPELINE = {"pipeline": {"source": "source_1", "components": [{"id": "parse_1"}]}}


@pytest.fixture
def http(emulator: EmulatorClient) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emulator.api_url("aparavi"), timeout=5.0, headers=AUTH) as client:
        yield client


def start(http: httpx.Client, body: Any = PIPELINE, **params: Any) -> dict[str, Any]:
    response = http.put("/task", params=params, json=body)
    assert response.status_code == 200, response.text
    envelope: dict[str, Any] = response.json()
    assert envelope["status"] == "OK"
    data: dict[str, Any] = envelope["data"]
    return data


def read(http: httpx.Client, token: str, task_type: str = "cpu") -> dict[str, Any]:
    response = http.get("/task", params={"token": token, "type": task_type})
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def error_of(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert set(body) == {"status", "error"} and body["status"] == "Error"
    assert set(body["error"]) == {"message", "code", "details"}
    error: dict[str, Any] = body["error"]
    return error


def test_start_answers_token_and_type(http: httpx.Client, emulator: EmulatorClient) -> None:
    started = start(http, name="invoices", threads=4)
    assert set(started) == {"token", "type"} and started["type"] == "cpu"
    assert str(uuid.UUID(started["token"])) == started["token"]
    shown = emulator.task("aparavi", started["token"])
    assert shown["extra"] == {
        "type": "cpu", "pipeline": PIPELINE["pipeline"], "name": "invoices", "threads": 4
    }  # fmt: skip
    gpu = start(http, {"pipeline": {"components": [{"id": "llm_1", "config": {"gpu": True}}]}})
    assert gpu["type"] == "gpu"
    assert read(http, gpu["token"], "gpu")["status"] == "Created"


def test_pool_choice_is_deterministic() -> None:
    assert pick_type({}) == "cpu"
    assert pick_type({"gpu": False, "components": [{"gpu": "yes"}]}) == "cpu"
    assert pick_type({"components": [{"config": {"gpu": True}}]}) == "gpu"
    assert pick_type([[[{"gpu": True}]]]) == "gpu"


def test_default_lifecycle_and_record_shape(http: httpx.Client) -> None:
    token = start(http)["token"]
    seen = [read(http, token) for _ in range(6)]
    assert [(d["status"], d["completed"], d["completedCount"], d["totalCount"]) for d in seen] == [
        ("Created", False, 0, 0),
        ("Running", False, 1, 4),
        ("Running", False, 3, 4),
        ("Completed", False, 4, 4),
        ("Completed", True, 4, 4),
        ("Completed", True, 4, 4),
    ]
    for key in [
        "startTime",
        "endTime",
        "warnings",
        "errors",
        "currentObject",
        "totalSize",
        "completedSize",
        "failedCount",
        "exitCode",
        "exitMsg",
        "metrics",
        "serviceUp",
    ]:
        assert key in seen[0]  # fmt: skip
    assert seen[1]["endTime"] == 0 and seen[3]["endTime"] == 0
    assert seen[4]["endTime"] >= seen[4]["startTime"] > 0
    assert seen[5]["endTime"] == seen[4]["endTime"]


def test_named_lifecycles(http: httpx.Client) -> None:
    token = start(http, name="errors")["token"]
    last = [read(http, token) for _ in range(3)][-1]
    assert last["status"] == "Completed" and last["completed"] is True
    assert last["errors"] == ["parse_1: cannot extract text from file://data/doc2.pdf"]
    token = start(http, name="paused")["token"]
    statuses = [read(http, token)["status"] for _ in range(6)]
    assert statuses == ["Running", "Paused", "Paused", "Running", "Running", "Completed"]


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "Missing API key"),
        ("wrong-key", "Invalid API key"),
        (f"Bearer {EXHAUSTED_KEYS[0]}", "out of tokens"),
        (EXHAUSTED_KEYS[0], "out of tokens"),
    ],
)
def test_api_key_is_checked(emulator: EmulatorClient, header: str | None, message: str) -> None:
    token = emulator.create_task("aparavi")
    headers = {} if header is None else {"Authorization": header}
    with httpx.Client(base_url=emulator.api_url("aparavi"), headers=headers) as client:
        for response in [
            client.get("/task", params={"token": token, "type": "cpu"}),
            client.put("/task", json=PIPELINE),
            client.delete("/task", params={"token": token, "type": "cpu"}),
        ]:
            assert response.status_code == 401
            error = error_of(response)
            assert message in error["message"] and error["code"] == 401
    assert emulator.task("aparavi", token)["step"] == 0, "refused requests read nothing"


def test_bearer_form_is_accepted(emulator: EmulatorClient) -> None:
    token = emulator.create_task("aparavi")
    with httpx.Client(base_url=emulator.api_url("aparavi")) as client:
        response = client.get(
            "/task",
            params={"token": token, "type": "cpu"},
            headers={"Authorization": f"Bearer {KEY}"},
        )
    assert response.status_code == 200


def test_not_found_and_wrong_pool(http: httpx.Client, emulator: EmulatorClient) -> None:
    token = emulator.create_task("aparavi", type="gpu")
    for params in [{"token": str(uuid.uuid4()), "type": "cpu"}, {"token": token, "type": "cpu"}]:
        for response in [http.get("/task", params=params), http.delete("/task", params=params)]:
            assert response.status_code == 404
            assert error_of(response)["message"] == "Task not found"
    assert read(http, token, "gpu")["status"] == "Created"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"type": "cpu"}, "'token' is required"),
        ({"token": "not-a-uuid", "type": "cpu"}, "Invalid token"),
        ({"token": str(uuid.uuid4())}, "'type' is required"),
        ({"token": str(uuid.uuid4()), "type": "tpu"}, "Invalid type"),
    ],
)
def test_bad_parameters_are_422(http: httpx.Client, params: dict[str, str], message: str) -> None:
    for method in ["GET", "DELETE"]:
        response = http.request(method, "/task", params=params)
        assert response.status_code == 422
        assert message in error_of(response)["message"]


@pytest.mark.parametrize(
    ("params", "body"),
    [({"threads": "0"}, PIPELINE), ({"threads": "x"}, PIPELINE), ({}, {"steps": []}), ({}, [1])],
)
def test_bad_start_is_422(http: httpx.Client, params: dict[str, str], body: Any) -> None:
    response = http.put("/task", params=params, json=body)
    assert response.status_code == 422 and error_of(response)["code"] == 422


def test_cancel_tears_down_and_answers_final_results(
    http: httpx.Client, emulator: EmulatorClient
) -> None:
    token = start(http, name="endless")["token"]
    assert read(http, token)["status"] == "Created"
    response = http.delete("/task", params={"token": token, "type": "cpu"})
    assert response.status_code == 200 and response.json()["status"] == "OK"
    final = response.json()["data"]
    assert final["status"] == "Cancelled" and final["completed"] is False
    assert final["endTime"] > 0 and final["exitMsg"] == "Task cancelled"
    assert read(http, token) == final, "the record stays readable, cancelled"
    again = http.delete("/task", params={"token": token, "type": "cpu"}).json()["data"]
    assert again == final
    done = emulator.create_task("aparavi", [{"status": "Completed", "completed": True}])
    final = http.delete("/task", params={"token": done, "type": "cpu"}).json()["data"]
    assert final["status"] == "Completed", "a finished task keeps its own results"


def test_counts_and_faults_by_token(http: httpx.Client, emulator: EmulatorClient) -> None:
    token = emulator.create_task("aparavi")
    other = emulator.create_task("aparavi")
    emulator.inject_fault("aparavi", "status", status=503, task_id=token)
    assert http.get("/task", params={"token": token, "type": "cpu"}).status_code == 503
    assert read(http, other)["status"] == "Created"
    assert read(http, token)["status"] == "Created", "the faulted read did not advance the task"
    emulator.inject_fault("aparavi", "api_error", code=422, message="Invalid token", task_id=token)
    response = http.get("/task", params={"token": token, "type": "cpu"})
    assert response.status_code == 422 and error_of(response)["message"] == "Invalid token"
    start(http)
    counts = emulator.requests()
    assert counts["by_route"] == {"aparavi GET /task": 4, "aparavi PUT /task": 1}
    assert counts["by_task"] == {token: 3, other: 1}


def test_control_api_validates_scripts(emulator: EmulatorClient) -> None:
    with pytest.raises(EmulatorError, match="unknown aparavi step fields"):
        emulator.create_task("aparavi", [{"status": "Running", "progress": 5}])
    with pytest.raises(EmulatorError, match="totalCount must be an integer"):
        emulator.create_task("aparavi", [{"status": "Running", "totalCount": "4"}])
    with pytest.raises(EmulatorError, match="type must be"):
        emulator.create_task("aparavi", type="tpu")


def test_accepted_keys_are_configurable() -> None:
    app = create_app([make_api(api_keys=["k1", "k2"], exhausted_keys=["spent"])])
    with EmulatorServer(app=app) as server, httpx.Client(base_url=server.url + "/aparavi") as c:
        assert c.put("/task", json=PIPELINE, headers={"Authorization": "k2"}).status_code == 200
        refused = c.put("/task", json=PIPELINE, headers={"Authorization": KEY})
        assert refused.status_code == 401 and "Invalid" in error_of(refused)["message"]
        spent = c.put("/task", json=PIPELINE, headers={"Authorization": "spent"})
        assert "out of tokens" in error_of(spent)["message"]
