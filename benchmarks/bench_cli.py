"""The CLI watching thousands of tasks: the live table against ``--json``, side by side.

The emulator runs in its own process and serves ``--tasks`` scripted CloudCoin tasks (a few
progress steps over some seconds, then completed). ``reactive-tasks watch`` runs as a child
process twice per round: once with its live table drawn on a pseudo-terminal (50 x 160), once
with ``--json`` into a pipe. Each run's wall time and CPU time (user + system, from the child's
own ``rusage``) are printed as min / median / max over the rounds, with the table/JSON ratio.

Run: ``python benchmarks/bench_cli.py [--tasks 2000] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import statistics
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path
from typing import Any

from _emulator import start_emulator

from reactive_tasks.emulator import EmulatorClient

ROOT = Path(__file__).resolve().parent.parent


def script(i: int) -> list[dict[str, Any]]:
    """A few progress steps spread over about ten seconds, then completed."""
    steps: list[dict[str, Any]] = [
        {"status": "running", "progress": p, "message": "Detecting", "seconds": 1.5 + (i % 7) / 7}
        for p in (10, 35, 60, 85)
    ]
    return [*steps, {"status": "completed", "progress": 100, "message": "Command Completed"}]


def create(url: str, tasks: int) -> list[str]:
    with EmulatorClient(url) as emulator:
        return [emulator.create_task("cloudcoin", script(i)) for i in range(tasks)]


def drain(fd: int, sink: list[int]) -> None:
    """Read a terminal's output until it closes, counting bytes."""
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except OSError:
            return
        if not chunk:
            return
        sink[0] += len(chunk)


def run(argv: list[str], *, table: bool, root: Path = ROOT) -> tuple[float, float, int, int]:
    """Wall seconds, CPU seconds, exit code and output bytes of one watch in a child process."""
    env = {**os.environ, "PYTHONPATH": str(root), "TERM": "xterm-256color"}
    env.pop("COLUMNS", None)
    env.pop("LINES", None)
    received = [0]
    master = slave = -1
    if table:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
        stdout: Any = slave
    else:
        stdout = subprocess.PIPE
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.DEVNULL, env=env)
    if table:
        os.close(slave)
        reader = threading.Thread(target=drain, args=(master, received), daemon=True)
    else:
        assert proc.stdout is not None
        reader = threading.Thread(target=drain, args=(proc.stdout.fileno(), received),
                                  daemon=True)
    reader.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join(5)
    if table:
        os.close(master)
    elif proc.stdout is not None:
        proc.stdout.close()
    return wall, usage.ru_utime + usage.ru_stime, proc.returncode, received[0]


def spread(values: list[float]) -> str:
    return f"{min(values):7.2f} {statistics.median(values):7.2f} {max(values):7.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--root", type=Path, default=ROOT,
                        help="the checkout whose reactive_tasks the watcher runs (to compare)")
    parser.add_argument("--modes", default="table,json", help="which of table,json to run")
    options = parser.parse_args()
    emulator, url = start_emulator()
    modes = options.modes.split(",")
    results: dict[str, tuple[list[float], list[float]]] = {mode: ([], []) for mode in modes}
    try:
        for _ in range(options.rounds):
            for mode in modes:
                ids = create(url, options.tasks)
                argv = [sys.executable, "-m", "reactive_tasks.cli", "watch", "cloudcoin", *ids,
                        "--base-url", f"{url}/cloudcoin", "--interval", str(options.interval)]
                if mode == "json":
                    argv.append("--json")
                wall, cpu, code, size = run(argv, table=mode == "table", root=options.root)
                if code != 0:
                    raise SystemExit(f"{mode} run exited {code}")
                results[mode][0].append(wall)
                results[mode][1].append(cpu)
                print(f"  {mode:5}  wall {wall:6.2f} s  cpu {cpu:6.2f} s  output {size:,} bytes",
                      flush=True)
    finally:
        emulator.terminate()
        emulator.wait()
    print(f"\n{options.tasks} tasks, {options.rounds} rounds: min / median / max (seconds)")
    print(f"{'':6} {'wall':^23}   {'cpu':^23}")
    for mode, (walls, cpus) in results.items():
        print(f"{mode:6} {spread(walls)}   {spread(cpus)}")
    if len(results) == 2:
        table, as_json = (statistics.median(results[m][1]) for m in ("table", "json"))
        print(f"\ntable / json CPU (medians): {table / as_json:.2f}x")


if __name__ == "__main__":
    main()
