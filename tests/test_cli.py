"""The reactive-tasks command: watch (table and JSON), demo, exit codes, bad arguments."""

from __future__ import annotations

import json

import pytest

from reactive_tasks.cli import main
from reactive_tasks.emulator import EmulatorClient


def _coin_task(emulator: EmulatorClient, final: str) -> str:
    return emulator.create_task(
        "cloudcoin",
        [{"status": "running", "progress": 20}, {"status": "running", "progress": 60},
         {"status": final, "progress": 100, "message": "done" if final == "completed" else "no"}],
    )


def test_watch_json_prints_one_object_per_event_and_exits_0(
    emulator: EmulatorClient, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = [_coin_task(emulator, "completed") for _ in range(2)]
    code = main(["watch", "cloudcoin", *ids, "--base-url", emulator.api_url("cloudcoin"),
                 "--interval", "0.02", "--json"])
    assert code == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 6
    assert {line["task_id"] for line in lines} == set(ids)
    assert [line["kind"] for line in lines if line["task_id"] == ids[0]] == [
        "TASK_UPDATED", "TASK_UPDATED", "TASK_COMPLETED"]


def test_watch_exit_code_1_when_a_task_fails(
    emulator: EmulatorClient, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = [_coin_task(emulator, "completed"), _coin_task(emulator, "error")]
    code = main(["watch", "cloudcoin", *ids, "--base-url", emulator.api_url("cloudcoin"),
                 "--interval", "0.02"])
    assert code == 1
    out = capsys.readouterr().out
    assert "summary: 1 COMPLETED, 1 FAILED" in out


def test_watch_exit_code_2_on_monitoring_error(
    emulator: EmulatorClient, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = "bdc8e99d-dd8a-40e9-8840-f9f8eef16c71"
    code = main(["watch", "cloudcoin", missing, "--base-url", emulator.api_url("cloudcoin"),
                 "--interval", "0.02", "--json"])
    assert code == 2
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["error"] == "TaskNotFound"


def test_watch_rejects_bad_ids_and_unknown_backends(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["watch", "cloudcoin", "not-a-guid"]) == 64
    assert "UUID" in capsys.readouterr().err
    assert main(["watch", "nosuch", "x"]) == 64
    assert "unknown backend" in capsys.readouterr().err


def test_demo_runs_to_completion(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--tasks", "6", "--json"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    finals = [e for e in events if e["kind"] != "TASK_UPDATED"]
    assert len(finals) == 6 and len({e["task_id"] for e in events}) == 6


def test_watch_aparavi_reads_the_key_from_the_environment(
    emulator: EmulatorClient, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from reactive_tasks.emulator.aparavi import API_KEYS

    token = emulator.create_task(
        "aparavi",
        [{"status": "Running", "totalCount": 4, "completedCount": 1},
         {"status": "Completed", "completed": True, "totalCount": 4, "completedCount": 4}],
        type="gpu",
    )
    monkeypatch.setenv("APARAVI_KEY", API_KEYS[0])
    base = ["watch", "aparavi", token, "--base-url", emulator.api_url("aparavi"),
            "--interval", "0.02"]
    assert main([*base, "--api-key-env", "APARAVI_KEY", "--task-type", "gpu"]) == 0
    out = capsys.readouterr().out
    assert "summary: 1 COMPLETED" in out
    assert API_KEYS[0] not in out and token not in out, "the table shows the token shortened"
    assert main([*base, "--task-type", "gpu"]) == 64
    assert "--api-key-env" in capsys.readouterr().err
    monkeypatch.delenv("APARAVI_KEY")
    assert main([*base, "--api-key-env", "APARAVI_KEY", "--task-type", "gpu"]) == 64
    assert "APARAVI_KEY is not set" in capsys.readouterr().err


def test_watch_taskcluster(
    emulator: EmulatorClient, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    lost = {"state": "exception", "reasonResolved": "deadline-exceeded"}
    ok = emulator.create_task("taskcluster")
    late = emulator.create_task("taskcluster", [{"runs": [{"state": "running"}]}, {"runs": [lost]}])
    monkeypatch.delenv("TASKCLUSTER_ROOT_URL", raising=False)
    assert main(["watch", "taskcluster", ok]) == 64
    assert "--root-url" in capsys.readouterr().err
    monkeypatch.setenv("TASKCLUSTER_ROOT_URL", emulator.api_url("taskcluster"))
    assert main(["watch", "taskcluster", ok, late, "--interval", "0.02", "--json"]) == 1
    finals = {json.loads(line)["task_id"]: json.loads(line)["kind"]
              for line in capsys.readouterr().out.splitlines()}
    assert finals == {ok: "TASK_COMPLETED", late: "TASK_TIMEDOUT"}


def test_watch_greencloud_and_iexec(
    emulator: EmulatorClient, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from reactive_tasks.emulator.iexec import HUB_ADDRESS, create_deal

    green = emulator.create_task("greencloud")
    monkeypatch.setenv("GC_KEY", "cli-test-key")
    assert main(["watch", "greencloud", green, "--base-url", emulator.api_url("greencloud"),
                 "--api-key-env", "GC_KEY", "--interval", "0.02", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["native_status"] == "200"
    assert main(["watch", "greencloud", green]) == 64
    assert "one of --token-env or --api-key-env" in capsys.readouterr().err

    deal, (task,) = create_deal(emulator, [{"status": "UNSET"}, {"status": "ACTIVE"},
                                           {"status": "COMPLETED"}])
    assert main(["watch", "iexec", task, "--rpc-url", emulator.api_url("iexec") + "/rpc",
                 "--hub", HUB_ADDRESS, "--deal-id", deal, "--interval", "0.02", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["kind"], e["native_status"]) for e in lines] == [
        ("TASK_UPDATED", "UNSET"), ("TASK_UPDATED", "ACTIVE"), ("TASK_COMPLETED", "COMPLETED")]
    assert main(["watch", "iexec", task]) == 64
    assert "--chain NAME" in capsys.readouterr().err
