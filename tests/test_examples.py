"""The examples run to completion against the emulator, as a newcomer would run them.

Each runs as its own process (``python examples/x.py``). Qt draws offscreen; Tk needs an X
display, so this file starts Xvfb on a free display number for it.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from reactive_tasks.emulator import EmulatorClient

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
GREEN, RED = (0x2E, 0x7D, 0x32), (0xC6, 0x28, 0x28)


def run_example(
    name: str, *args: str, env: dict[str, str] | None = None, expect: int = 0
) -> str:
    """Run one example to its end; its standard output, once the exit code is as expected."""
    paths = [str(ROOT), os.environ.get("PYTHONPATH", "")]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, paths)), **(env or {})}
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=90,
        env=environment,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == expect, f"exit {result.returncode}\n{result.stdout}{result.stderr}"
    return result.stdout


def has_colour(image: Image.Image, colour: tuple[int, int, int]) -> bool:
    """True when some pixel of ``image`` is (nearly) ``colour``."""
    for _, pixel in image.convert("RGB").getcolors(maxcolors=1 << 20) or []:
        assert isinstance(pixel, tuple)
        if all(abs(a - b) <= 8 for a, b in zip(pixel, colour, strict=True)):
            return True
    return False


def assert_gui_run(out: str, screenshot: Path) -> None:
    """Every task ended, every update ran on the GUI thread, and the PNG shows the bars."""
    assert "6 of 6 tasks terminal; 0 updates ran off the GUI thread" in out
    assert len(re.findall(r"^task \S+: COMPLETED$", out, re.MULTILINE)) == 5
    assert len(re.findall(r"^task \S+: FAILED$", out, re.MULTILINE)) == 1
    assert f"screenshot saved to {screenshot}" in out
    assert "overall bar: FAILED" in out, "one task failed: the overall bar must say so"
    with Image.open(screenshot) as image:
        assert image.format == "PNG"
        assert image.width >= 400 and image.height >= 150
        # Completed tasks' bars are green, the failed one's red.
        assert has_colour(image, GREEN) and has_colour(image, RED)


@pytest.fixture(scope="module")
def x_display() -> Iterator[str]:
    """An X display for Tk: Xvfb on a free display number (it picks one with -displayfd)."""
    pytest.importorskip("_tkinter", reason="this Python was built without Tk (_tkinter missing)")
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        if os.environ.get("DISPLAY"):
            yield os.environ["DISPLAY"]
            return
        pytest.skip("no X display for Tk: Xvfb is not installed (Debian package xvfb)")
    read_end, write_end = os.pipe()
    process = subprocess.Popen(
        [xvfb, "-displayfd", str(write_end), "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
        pass_fds=(write_end,),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], 20)
        number = os.read(read_end, 64).decode().strip() if ready else ""
        if not number:
            process.kill()
            _, errors = process.communicate(timeout=10)
            pytest.fail(f"Xvfb did not start: {errors.decode(errors='replace')[-2000:]}")
        yield f":{number}"
    finally:
        os.close(read_end)
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_callbacks_example_prints_each_change_then_completion() -> None:
    out = run_example("callbacks.py").splitlines()
    kinds = [line.split()[0] for line in out[:4]]
    assert kinds == ["TASK_UPDATED", "TASK_UPDATED", "TASK_UPDATED", "TASK_COMPLETED"]
    assert [line.split()[2] for line in out[:4]] == ["10%", "40%", "80%", "100%"]
    assert out[4] == "final state reached"
    assert re.fullmatch(r"task \S+ ended FAILED: RAIDA unreachable", out[5])


def test_examples_use_a_running_emulator_given_with_url(emulator: EmulatorClient) -> None:
    out = run_example("callbacks.py", "--url", emulator.url)
    assert "final state reached" in out
    counts = emulator.requests()
    assert counts["by_api"].get("cloudcoin", 0) >= 5  # it polled this emulator, not its own


def test_asyncio_example_waits_and_iterates() -> None:
    out = run_example("asyncio_wait.py")
    every = re.findall(r"^aiter: (\w+) (\w+) (\d+)%", out, re.MULTILINE)
    assert every == [
        ("TASK_UPDATED", "RUNNING", "25"),
        ("TASK_UPDATED", "RUNNING", "50"),
        ("TASK_UPDATED", "RUNNING", "75"),
        ("TASK_COMPLETED", "COMPLETED", "100"),
    ]
    assert "aiter: stream completed" in out
    assert re.search(r"^wait: task \S+ ended COMPLETED \(Command Completed\)$", out, re.MULTILINE)
    assert re.search(r"^status: task \S+ is COMPLETED$", out, re.MULTILINE)


def test_compose_example_follows_progress_summary_and_fail_fast() -> None:
    out = run_example("compose_many.py")
    percents = [float(p) for p in re.findall(r"^overall\s+([\d.]+)%", out, re.MULTILINE)]
    assert percents == sorted(percents) and percents[-1] == 100.0 and len(percents) >= 3
    assert "all 10 tasks terminal: 8 COMPLETED, 2 FAILED" in out
    failed = re.search(
        r"^fail_fast: (\w+) task (\S+) ended FAILED(: .+)?; "
        r"stopped watching the other 5$", out, re.MULTILINE)
    assert failed, out
    assert len(failed.group(2)) <= 9, "the task id shows shortened (Aparavi's is a secret)"
    assert "all 10 tasks terminal" in out


def test_qt_example_updates_rows_on_the_gui_thread_and_saves_a_screenshot(
    tmp_path: Path,
) -> None:
    screenshot = tmp_path / "qt.png"
    out = run_example("gui_qt.py", "--screenshot", str(screenshot),
                      env={"QT_QPA_PLATFORM": "offscreen"})
    assert_gui_run(out, screenshot)


def test_qt_example_quits_after_max_seconds() -> None:
    out = run_example("gui_qt.py", "--max-seconds", "0.3", expect=1,
                      env={"QT_QPA_PLATFORM": "offscreen"})
    assert "stopped after 0.3 s" in out
    assert "0 updates ran off the GUI thread" in out
    assert not re.search(r"^6 of 6 tasks terminal", out, re.MULTILINE)


def test_tk_example_updates_rows_on_the_gui_thread_and_saves_a_screenshot(
    tmp_path: Path, x_display: str
) -> None:
    screenshot = tmp_path / "tk.png"
    out = run_example("gui_tk.py", "--screenshot", str(screenshot), env={"DISPLAY": x_display})
    assert_gui_run(out, screenshot)


def test_the_overall_bar_shows_any_failure_and_green_only_when_all_completed() -> None:
    import importlib.util

    from reactive_tasks import TaskState

    spec = importlib.util.spec_from_file_location("_scripted", EXAMPLES / "_scripted.py")
    assert spec is not None and spec.loader is not None
    scripted = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scripted)
    overall = scripted.overall_state
    done, running = TaskState.COMPLETED, TaskState.RUNNING
    assert overall([], 3) is running
    assert overall([done, running], 3) is running
    assert overall([done, done], 3) is running, "a task not yet seen is not completed"
    assert overall([done, done, done], 3) is done
    for bad in (TaskState.FAILED, TaskState.CANCELLED, TaskState.TIMED_OUT):
        assert overall([done, bad, done], 3) is TaskState.FAILED
        assert overall([running, bad], 3) is TaskState.FAILED, "shown before the others end"
