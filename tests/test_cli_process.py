"""The ``reactive-tasks`` command as a user runs it: a real process, its exit code and stderr.

Every failure is one line on stderr and never a traceback; each exit code (0, 1, 2, 64, 130)
is reached the way a user would reach it, against the emulator or a closed port.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reactive_tasks import __version__
from reactive_tasks.emulator import EmulatorClient

ROOT = Path(__file__).resolve().parent.parent
GUID = "bdc8e99d-dd8a-40e9-8840-f9f8eef16c71"


def _env(**extra: str) -> dict[str, str]:
    paths = [str(ROOT), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, paths)), **extra}
    for name in ("TASKCLUSTER_ROOT_URL", "TASKCLUSTER_ACCESS_TOKEN", "TASKCLUSTER_CLIENT_ID"):
        env.pop(name, None)
    return env


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m reactive_tasks.cli`` to its end."""
    return subprocess.run(
        [sys.executable, "-m", "reactive_tasks.cli", *args],
        capture_output=True, text=True, timeout=60, env=_env(**env), cwd=ROOT,
    )


def one_line(stderr: str) -> str:
    """The single line a failing run prints on stderr."""
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("reactive-tasks: ")
    return lines[0]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def coin(emulator: EmulatorClient, final: str) -> str:
    return emulator.create_task(
        "cloudcoin", [{"status": "running", "progress": 50},
                      {"status": final, "progress": 100, "message": "done"}])


def test_exit_0_when_every_task_completes_with_a_line_per_event_off_a_terminal(
    emulator: EmulatorClient,
) -> None:
    ids = [coin(emulator, "completed") for _ in range(2)]
    run = cli("watch", "cloudcoin", *ids, "--base-url", emulator.api_url("cloudcoin"),
              "--interval", "0.05")
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    for task in ids:
        assert f"cloudcoin {task} RUNNING  50.0% Task in progress\n" in run.stdout
        assert f"cloudcoin {task} COMPLETED 100.0% done\n" in run.stdout
    assert "summary: 2 COMPLETED" in run.stdout


def test_exit_1_when_a_task_fails_says_which(emulator: EmulatorClient) -> None:
    ids = [coin(emulator, "completed"), coin(emulator, "error")]
    run = cli("watch", "cloudcoin", *ids, "--base-url", emulator.api_url("cloudcoin"),
              "--interval", "0.05", "--json")
    assert run.returncode == 1
    assert one_line(run.stderr) == "reactive-tasks: 1 of 2 tasks did not complete: 1 FAILED"


def test_exit_2_on_a_closed_port_after_visible_retries() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    run = cli("watch", "cloudcoin", GUID, "--base-url", url, "--interval", "0.02",
              "--retry-budget", "3", "--json")
    assert run.returncode == 2
    assert "BackendUnavailable" in one_line(run.stderr)
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert [line.get("message") for line in lines[:3]] == [
        f"retrying {n}/3: connection refused" for n in (1, 2, 3)]
    assert lines[-1]["error"] == "BackendUnavailable"


def test_retries_show_on_the_row_in_table_mode_without_a_terminal() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    run = cli("watch", "cloudcoin", GUID, "--base-url", url, "--interval", "0.02",
              "--retry-budget", "2", "--request-timeout", "5")
    assert run.returncode == 2
    assert "waiting retrying 2/2: connection refused" in run.stdout
    assert "summary: 1 ERROR" in run.stdout


def test_exit_2_when_the_task_does_not_exist(emulator: EmulatorClient) -> None:
    run = cli("watch", "cloudcoin", GUID, "--base-url", emulator.api_url("cloudcoin"),
              "--interval", "0.05")
    assert run.returncode == 2
    assert "TaskNotFound" in one_line(run.stderr)


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["watch", "taskcluster", "fN1SbArXTPSVFNUvaOlinQ"], {}, "--root-url"),
        (["watch", "aparavi", "x" * 40, "--api-key-env", "NO_SUCH_VARIABLE_H10B",
          "--task-type", "cpu"], {}, "NO_SUCH_VARIABLE_H10B is not set"),
        (["watch", "cloudcoin", GUID, "--timeout", "-1"], {}, "PollPolicy.timeout"),
        (["watch", "cloudcoin", GUID, "--interval", "0"], {}, "PollPolicy.interval"),
        (["watch", "cloudcoin", GUID, "--retry-budget", "-2"], {}, "retry_budget"),
        (["watch", "cloudcoin", GUID, "--no-such-flag"], {}, "--no-such-flag"),
        (["watch", "cloudcoin", GUID, "--interval", "soon"], {}, "invalid float value"),
        (["watch", "cloudcoin", "not-a-guid"], {}, "UUID"),
        (["watch", "nosuch", "x"], {}, "unknown backend"),
        (["watch"], {}, "required"),
        ([], {}, "required"),
    ],
)
def test_exit_64_on_usage_and_configuration_errors(
    args: list[str], env: dict[str, str], says: str
) -> None:
    run = cli(*args, **env)
    assert run.returncode == 64, run.stderr
    assert says in one_line(run.stderr)
    assert run.stdout == ""


def test_version_and_help() -> None:
    run = cli("--version")
    assert (run.returncode, run.stdout.strip()) == (0, f"reactive-tasks {__version__}")
    helped = cli("watch", "--help")
    assert helped.returncode == 0
    for code in ("0 ", "1 ", "2 ", "64 ", "130 "):
        assert f"\n  {code}" in helped.stdout
    assert "--retry-budget" in helped.stdout and "--request-timeout" in helped.stdout


def test_sigint_exits_130_in_one_line(emulator: EmulatorClient) -> None:
    task = emulator.create_task("cloudcoin", [{"status": "running", "progress": 10}])
    proc = subprocess.Popen(
        [sys.executable, "-m", "reactive_tasks.cli", "watch", "cloudcoin", task,
         "--base-url", emulator.api_url("cloudcoin"), "--interval", "0.05", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=ROOT,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert json.loads(proc.stdout.readline())["state"] == "RUNNING"
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    code = proc.wait(timeout=10)
    waited = time.monotonic() - sent
    assert code == 130
    assert one_line(proc.stderr.read()) == "reactive-tasks: interrupted"
    proc.stdout.close()
    proc.stderr.close()
    assert waited < 5, f"took {waited:.1f} s to stop"


def test_demo_says_why_it_exits_0_with_failed_tasks() -> None:
    run = cli("demo", "--tasks", "20", "--json")
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    last = run.stderr.splitlines()[-1]
    assert last.startswith("demo: ") and "on purpose" in last and "exit 0" in last


@pytest.mark.parametrize("api", ["cloudcoin", "taskcluster"])
def test_a_wrong_base_url_says_so(emulator: EmulatorClient, api: str) -> None:
    task = (coin(emulator, "completed") if api == "cloudcoin"
            else emulator.create_task("taskcluster"))
    wrong = emulator.api_url(api) + "/v2"  # the server answers its generic 404 there
    flag = "--base-url" if api == "cloudcoin" else "--root-url"
    run = cli("watch", api, task, flag, wrong, "--interval", "0.05")
    assert run.returncode == 2
    line = one_line(run.stderr)
    assert "the base URL may be wrong" in line and f"{wrong}/" in line, line
