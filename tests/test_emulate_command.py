"""`reactive-tasks emulate` as a user runs it: a real subprocess, its banner and its port errors."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from reactive_tasks.emulator import EmulatorClient

ROOT = Path(__file__).resolve().parent.parent
APIS = ("cloudcoin", "aparavi", "taskcluster", "greencloud", "iexec")


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "reactive_tasks.cli", "emulate", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_command(*args), capture_output=True, text=True, env=_env(), timeout=60)


def test_a_busy_port_is_one_line_and_exit_64() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _run("--port", str(port))
    assert result.returncode == 64
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in lines[0]
    assert "in use" in lines[0]


def test_an_invalid_port_or_host_is_one_line_and_exit_64() -> None:
    for args, words in [
        (("--port", "70000"), "invalid port 70000"),
        (("--port", "-3"), "invalid port -3"),
        (("--host", "no-such-host.invalid", "--port", "0"), "cannot listen on no-such-host"),
    ]:
        result = _run(*args)
        assert result.returncode == 64, (args, result.stderr)
        assert len(result.stderr.splitlines()) == 1 and words in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_the_banner_lists_every_api_and_the_control_api() -> None:
    process = subprocess.Popen(
        _command("--port", "0"), stdout=subprocess.PIPE, text=True, env=_env()
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline().strip()
        url = first.rsplit(" ", 1)[1]
        with EmulatorClient(url) as client:  # serving: the whole banner is already written
            assert client.create_task("cloudcoin")
    finally:
        process.terminate()
        process.wait(10)
    rest = process.stdout.read()
    process.stdout.close()
    assert first.startswith("reactive-tasks emulator listening on http://127.0.0.1:")
    lines = [line.split() for line in rest.splitlines()]
    for api in APIS:
        assert [api, f"{url}/{api}"] in lines
    for verbs, path in [
        ("POST", "/{api}/tasks"), ("POST", "/{api}/tasks/bulk"), ("GET", "/{api}/tasks/{task_id}"),
        ("POST", "/faults"), ("GET", "/faults"), ("DELETE", "/faults"), ("GET", "/requests"),
        ("DELETE", "/requests"), ("POST", "/reset"),
    ]:
        assert [verbs, f"{url}/_emulator{path}"] in lines, (verbs, path, rest)
