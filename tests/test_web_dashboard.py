"""``reactive-tasks watch --web`` in real headless Chromium: live rows, a server restart resumed
with Last-Event-ID, final states, the outcome's colour, and the exit code after Ctrl-C."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from reactive_tasks.emulator import EmulatorClient

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SCREENSHOT = ROOT / "docs" / "web-dashboard.png"


def _browser_or_skip() -> None:
    if Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists():
        return
    if os.environ.get("CI") == "true":
        pytest.fail("CI must run the dashboard in Chromium: install chromium and chromium-driver")
    pytest.skip("Debian's chromium and chromium-driver are not installed")


@pytest.fixture
def browser() -> Iterator[Any]:
    _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="rt-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}", "--window-size=1100,520"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def watch(base_url: str, port: int, ids: list[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")]))}
    return subprocess.Popen(
        [sys.executable, "-m", "reactive_tasks.cli", "watch", "cloudcoin", *ids,
         "--base-url", base_url, "--interval", "0.1", "--web", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
    )


def until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"the page never showed {what}")
        time.sleep(0.05)


def interrupt(process: subprocess.Popen[str]) -> tuple[int, str]:
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    return process.returncode, err


def test_dashboard_in_chromium_survives_a_restart(
    emulator: EmulatorClient, browser: Any
) -> None:
    def script(fails: bool, pace: float) -> list[dict[str, Any]]:
        steps: list[dict[str, Any]] = [
            {"status": "running", "progress": p, "message": f"Detecting {p} %", "seconds": pace}
            for p in (20, 45, 70, 90)
        ]
        end = {"status": "error", "progress": 70, "message": "RAIDA unreachable"} if fails else {
            "status": "completed", "progress": 100, "message": "Command Completed"}
        return [*steps, end]

    ids = [emulator.create_task("cloudcoin", script(fails=i == 2, pace=1.5 + 0.4 * i))
           for i in range(4)]
    base_url, port = emulator.api_url("cloudcoin"), free_port()
    first = watch(base_url, port, ids)
    try:
        from selenium.webdriver.common.by import By

        def states() -> list[str]:
            return [td.text for td in browser.find_elements(By.CSS_SELECTOR, "#rows td.state")]

        def load() -> bool:
            try:
                browser.get(f"http://127.0.0.1:{port}/")
            except Exception:
                return False
            return bool(states())

        until(load, "its rows (the server did not start)")
        until(lambda: "RUNNING" in states(), "a running task")
        before = {tr.get_attribute("data-key"): tr.find_element(By.CSS_SELECTOR, "td.pct").text
                  for tr in browser.find_elements(By.CSS_SELECTOR, "#rows tr")}
        code, err = interrupt(first)
        assert code == 130, err  # interrupted before the end
        until(lambda: "reconnecting" in browser.find_element(By.ID, "status").text,
              "the lost connection")
        second = watch(base_url, port, ids)  # the same page, no reload: EventSource resumes
        try:
            until(lambda: sorted(states()) == ["COMPLETED"] * 3 + ["FAILED"], "final states", 60)
            until(lambda: browser.find_element(By.TAG_NAME, "body").get_attribute("data-done")
                  == "complete", "the end of the stream")
            assert len(states()) == 4  # no row twice across the restart
            assert set(before) == {tr.get_attribute("data-key") for tr in
                                   browser.find_elements(By.CSS_SELECTOR, "#rows tr")}
            overall = browser.find_element(By.ID, "overall-wrap").get_attribute("class")
            assert overall == "FAILED"  # red: one task failed
            summary = browser.find_element(By.ID, "summary").text
            assert summary == "3 COMPLETED, 1 FAILED"
            for tr in browser.find_elements(By.CSS_SELECTOR, "#rows tr.COMPLETED"):
                assert tr.find_element(By.CSS_SELECTOR, "td.pct").text == "100 %"
            time.sleep(0.3)  # the page keeps serving after the end: still reachable
            assert second.poll() is None
            SCREENSHOT.parent.mkdir(exist_ok=True)
            browser.save_screenshot(str(SCREENSHOT))
            code, err = interrupt(second)
            assert code == 1, err  # Ctrl-C after the end: the outcome's code (a task failed)
            assert "dashboard at http://127.0.0.1:" in err and "Traceback" not in err
        finally:
            if second.poll() is None:
                second.kill()
                second.wait()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()


@pytest.mark.parametrize("address", ["http://x:1", "localhost:http", "70000", ""])
def test_a_bad_web_address_is_a_usage_error(address: str) -> None:
    ids = ["bdc8e99d-dd8a-40e9-8840-f9f8eef16c71"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-m", "reactive_tasks.cli", "watch", "cloudcoin", *ids, "--web", address],
        capture_output=True, text=True, timeout=60, env=env, cwd=ROOT,
    )
    assert run.returncode == 64, run.stderr
    assert run.stderr.startswith("reactive-tasks: ") and run.stderr.count("\n") == 1


def test_a_taken_port_fails_before_any_poll(emulator: EmulatorClient) -> None:
    task = emulator.create_task("cloudcoin", [{"status": "running", "progress": 5}])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        process = watch(emulator.api_url("cloudcoin"), taken.getsockname()[1], [task])
        _, err = process.communicate(timeout=60)
    assert process.returncode == 64, err
    assert err.startswith("reactive-tasks: cannot serve the dashboard on 127.0.0.1:")
    assert emulator.requests()["by_task"].get(task, 0) == 0
