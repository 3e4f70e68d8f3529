"""The `task_emulator` pytest plugin, loaded by a separate pytest run as a user's suite would."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = "reactive_tasks.emulator.pytest_plugin"


def _pytest(tmp_path: Path, files: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run pytest on `files` in `tmp_path` with only this plugin (whether installed or not)."""
    for name, text in files.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", PLUGIN, "-p", "no:cacheprovider", "."],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )


def test_the_fixture_serves_a_fresh_emulator_to_each_test(tmp_path: Path) -> None:
    result = _pytest(tmp_path, {"test_user.py": """
        from reactive_tasks import wait_sync
        from reactive_tasks.backends import CloudCoinBackend

        def test_watch(task_emulator):
            assert task_emulator.api_url("cloudcoin") == task_emulator.url + "/cloudcoin"
            task_id = task_emulator.create_task("cloudcoin")
            final = wait_sync(CloudCoinBackend(task_emulator.api_url("cloudcoin")).observe(task_id),
                              timeout=30)
            assert final.state.value == "COMPLETED"

        def test_isolated(task_emulator):
            assert task_emulator.requests()["total"] == 0  # the previous test's polls are gone
    """})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_loading_the_plugin_imports_no_emulator(tmp_path: Path) -> None:
    result = _pytest(tmp_path, {"test_light.py": """
        import sys

        def test_nothing_heavy():
            heavy = {"starlette", "uvicorn", "httpx", "mohawk", "eth_abi", "aiohttp"}
            assert not heavy & set(sys.modules), heavy & set(sys.modules)
    """})
    assert result.returncode == 0, result.stdout + result.stderr


def test_without_the_extra_only_the_fixture_user_fails_and_says_why(tmp_path: Path) -> None:
    result = _pytest(tmp_path, {
        "conftest.py": """
            import sys
            sys.modules["uvicorn"] = None  # as if the emulator extra were not installed
        """,
        "test_user.py": """
            def test_plain():
                assert True

            def test_uses_it(task_emulator):
                pass
        """,
    })
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 passed, 1 error" in result.stdout
    assert "pip install 'reactive-tasks[emulator]'" in result.stdout
    assert "During handling" not in result.stdout  # one clear line, no chained traceback
