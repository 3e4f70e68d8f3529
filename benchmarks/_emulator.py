"""The emulator in its own process, so that only the client's CPU is counted in this one."""

from __future__ import annotations

import subprocess
import sys


def start_emulator(*options: str) -> tuple[subprocess.Popen[str], str]:
    """Start ``python -m reactive_tasks.emulator`` on a free port (with any further command
    line ``options``, such as ``--pulse URL``); the process and its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "reactive_tasks.emulator", "--port", "0", *options],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise SystemExit(f"emulator did not start: {line!r}")
    return proc, line.rsplit(" ", 1)[1].strip()
