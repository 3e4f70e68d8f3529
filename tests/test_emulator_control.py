"""The control API refuses what an API never does: bad statuses (422 naming them), clashing ids."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from reactive_tasks.emulator import EmulatorClient, EmulatorError

# api, a script with a status the API never reports, the bad word, a valid word the answer names
BAD_SCRIPTS: list[tuple[str, list[dict[str, Any]], str, str]] = [
    ("cloudcoin", [{"status": "running"}, {"status": "finished"}], "finished", "completed"),
    ("aparavi", [{"status": "Exploded"}], "Exploded", "Running"),
    ("greencloud", [{"state": "done"}], "done", "assigned"),
    ("iexec", [{"status": "DONE"}], "DONE", "REVEALING"),
    ("taskcluster", [{"runs": [{"state": "succeeded"}]}], "succeeded", "exception"),
]


@pytest.mark.parametrize(("api", "steps", "bad", "good"), BAD_SCRIPTS)
def test_an_invalid_status_is_refused_with_422(
    emulator: EmulatorClient, api: str, steps: list[dict[str, Any]], bad: str, good: str
) -> None:
    with pytest.raises(EmulatorError) as info:
        emulator.create_task(api, steps)
    assert info.value.status_code == 422
    assert repr(bad) in info.value.message and good in info.value.message
    with pytest.raises(EmulatorError) as bulk:
        emulator.create_tasks(api, 3, steps)
    assert bulk.value.status_code == 422 and repr(bad) in bulk.value.message
    raw = httpx.post(f"{emulator.url}/_emulator/{api}/tasks", json={"steps": steps})
    assert raw.status_code == 422 and repr(bad) in raw.json()["error"]
    assert emulator.requests()["total"] == 0  # nothing was created, nothing polled


@pytest.mark.parametrize("status", ["running", "completed", "error"])
def test_every_documented_cloudcoin_status_is_accepted(
    emulator: EmulatorClient, status: str
) -> None:
    assert emulator.create_task("cloudcoin", [{"status": status}])


@pytest.mark.parametrize(
    "status", ["Created", "running", "Paused", "Completed", "DONE", "Failed", "Error", "Canceled"]
)
def test_aparavi_statuses_are_accepted_in_any_case(emulator: EmulatorClient, status: str) -> None:
    assert emulator.create_task("aparavi", [{"status": status}])


def test_an_iexec_task_created_with_its_deal_gets_its_on_chain_id(
    emulator: EmulatorClient,
) -> None:
    from reactive_tasks.emulator.iexec import task_id_of

    deal = "0x" + "ab" * 32
    body = {"deal_id": deal.upper().replace("0X", "0x"), "idx": 1, "bot_size": 2,
            "steps": [{"status": "ACTIVE"}, {"status": "COMPLETED"}]}
    created = httpx.post(f"{emulator.url}/_emulator/iexec/tasks", json=body)
    assert created.status_code == 201
    assert created.json()["id"] == task_id_of(deal, 1)
    with pytest.raises(EmulatorError, match="one by one") as bulk:
        emulator.create_tasks("iexec", 2, deal_id=deal)
    assert bulk.value.status_code == 422


def test_bulk_creation_reports_when_each_task_was_created(emulator: EmulatorClient) -> None:
    before = time.time()
    steps = [{"status": "running", "seconds": 60}, {"status": "completed"}]
    created = emulator.create_timed_tasks("cloudcoin", 3, steps)
    after = time.time()
    assert len(created) == 3
    assert all(before <= when <= after for when in created.values())
    assert list(created.values()) == sorted(created.values())
    for task_id, when in created.items():  # the API's own `started` is that time, in seconds
        answer = httpx.get(f"{emulator.api_url('cloudcoin')}/api/v1/task/{task_id}").json()
        assert answer["payload"]["started"] == int(when)


@pytest.mark.parametrize("every", [0, -5, "60", True])
def test_a_taskcluster_reclaim_period_must_be_a_positive_number(
    emulator: EmulatorClient, every: Any
) -> None:
    with pytest.raises(EmulatorError) as info:
        emulator.create_task(
            "taskcluster", [{"runs": [{"state": "running", "reclaimEvery": every}]}]
        )
    assert info.value.status_code == 422 and "reclaimEvery" in info.value.message


def test_a_taskcluster_run_reclaimed_periodically_moves_taken_until_only_then(
    emulator: EmulatorClient,
) -> None:
    """Without ``reclaimEvery`` takenUntil moves at every read; with it, once a period."""
    steady = emulator.create_task(
        "taskcluster", [{"runs": [{"state": "running", "reclaimEvery": 0.3}]}]
    )
    moving = emulator.create_task("taskcluster", [{"runs": [{"state": "running"}]}])
    url = emulator.api_url("taskcluster") + "/api/queue/v1/task/{}/status"

    def taken(task_id: str) -> str:
        return str(httpx.get(url.format(task_id)).json()["status"]["runs"][0]["takenUntil"])

    first = taken(steady), taken(moving)
    time.sleep(0.01)
    assert taken(steady) == first[0] and taken(moving) != first[1]
    time.sleep(0.35)
    assert taken(steady) != first[0]
