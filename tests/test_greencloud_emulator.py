"""The /greencloud emulator speaks GreenCloud's documented shapes (raw HTTP, no backend)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from reactive_tasks.emulator import EmulatorClient, EmulatorError
from reactive_tasks.emulator.greencloud import MISSING_FUNCTION

FUNCTION = "6405848581b16f7a07cd4c48"


@pytest.fixture
def gc(emulator: EmulatorClient) -> Iterator[httpx.Client]:
    base = emulator.api_url("greencloud")
    tokens = httpx.post(base + "/v1/auth/apiKey", json={"key": "k"}).json()
    assert set(tokens) == {"expiresIn", "accessToken", "refreshToken"}
    assert tokens["expiresIn"] == 3600
    with httpx.Client(base_url=base, headers={"Authorization": tokens["accessToken"]}) as client:
        yield client


def test_task_shapes(emulator: EmulatorClient, gc: httpx.Client) -> None:
    created = gc.post(f"/v1/task/{FUNCTION}?a=1", json={"b": 2})
    assert created.status_code == 201 and set(created.json()) == {"id"}
    task = created.json()["id"]
    record = gc.get(f"/v1/task/{task}").json()
    assert set(record) == {"functionId", "issued", "assigned", "finished", "progress", "node",
                           "timeout", "capabilities"}
    assert "status" not in record and record["functionId"] == FUNCTION
    assert isinstance(record["issued"], str) and int(record["issued"]) > 0
    assert record["assigned"] == "0" and record["finished"] == "0"
    assert set(record["capabilities"]) == {"cpuCount", "memSize", "networkLatency", "privileged"}
    listed = gc.get("/v1/task/list").json()
    assert listed == [{"id": task, "issued": record["issued"], "progress": 0, "status": 0}]
    assert gc.get(f"/v1/task/{task}/result").status_code == 404
    for _ in range(4):
        gc.get("/v1/task/list")
    assert gc.get(f"/v1/task/{task}/result").json() == {"params": {"a": "1"}, "body": {"b": 2}}
    finished = gc.get(f"/v1/task/{task}").json()
    assert int(finished["finished"]) >= int(finished["assigned"]) > 0
    csv_text = gc.get(f"/v1/task/{FUNCTION}/csv", params={"showPlain": "true"}).text
    assert csv_text.splitlines()[0] == "ID,IssuedAt,Status,ContentType,Body"
    assert csv_text.splitlines()[1].startswith(f"{task},")


def test_errors(emulator: EmulatorClient, gc: httpx.Client) -> None:
    base = emulator.api_url("greencloud")
    assert httpx.get(base + "/v1/task/list").status_code == 401
    assert httpx.get(base + "/v1/task/list", headers={"Authorization": "x"}).status_code == 401
    token = gc.headers["Authorization"]
    bearer = {"Authorization": f"Bearer {token}"}
    assert httpx.get(base + "/v1/task/list", headers=bearer).status_code == 200
    assert httpx.post(base + "/v1/auth/apiKey", json={"key": "invalid"}).status_code == 401
    assert httpx.post(base + "/v1/auth/apiKey", json={}).status_code == 400
    assert httpx.post(base + "/v1/auth/refresh", json={"refreshToken": token}).status_code == 401
    assert gc.get("/v1/task/nope").status_code == 400
    assert gc.get("/v1/task/64057f3c9956fae80d7e0e84").status_code == 404
    assert gc.post(f"/v1/task/{MISSING_FUNCTION}").status_code == 404
    assert gc.post("/v1/task/xyz").status_code == 400
    assert gc.get(f"/v1/task/{FUNCTION}/csv", params={"dateSince": "2025-24-03"}).status_code == 400
    with pytest.raises(EmulatorError, match="state must be"):
        emulator.create_task("greencloud", [{"state": "done"}])
    with pytest.raises(EmulatorError, match="function_id"):
        emulator.create_task("greencloud", function_id="nope")
