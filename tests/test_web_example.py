"""examples/web_fastapi.py run by uvicorn as its docstring says: submit, stream to the end."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from web_helpers import frames

from reactive_tasks.emulator import EmulatorClient

ROOT = Path(__file__).resolve().parent.parent


async def test_fastapi_example_streams_its_tasks(emulator: EmulatorClient) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "EMULATOR_URL": emulator.url, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")]))}
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--app-dir", "examples", "web_fastapi:app",
         "--port", str(port), "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            for _ in range(300):
                try:
                    page = await client.get("/")
                    break
                except httpx.ConnectError:
                    await asyncio.sleep(0.05)
            else:
                pytest.fail("the example never served its page")
            assert "new EventSource(" in page.text
            ids = (await client.post("/tasks")).json()
            assert len(ids) == 3
            states: dict[str, str] = {}
            async with client.stream("GET", "/events", params={"ids": ",".join(ids)}) as response:
                async for frame in frames(response):
                    if frame.event.startswith("TASK_"):
                        states[frame.json["task_id"]] = frame.json["state"]
                    elif frame.event in ("complete", "error"):
                        assert frame.event == "complete", frame.data
                        break
        assert sorted(states.values()) == ["COMPLETED", "COMPLETED", "FAILED"]
        assert set(states) == set(ids)
    finally:
        server.terminate()
        out, _ = server.communicate(timeout=30)
    assert "Traceback" not in out, out
