"""Shared by the examples: the emulator they run against and the CloudCoin tasks they script.

Every example takes ``--url`` of a running emulator (``reactive-tasks emulate`` serves one on
http://127.0.0.1:8765). Without it, the example starts one in-process for as long as it runs.
Either way it scripts its own tasks through the emulator's control API, so nothing else is needed.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

from reactive_tasks import TaskState
from reactive_tasks.emulator import EmulatorClient, EmulatorServer

__all__ = ["coin_script", "emulator", "overall_state", "parser"]


def overall_state(states: Iterable[TaskState], total: int) -> TaskState:
    """What the overall bar shows: FAILED once any task failed, was cancelled or timed out
    (even at 100 %), COMPLETED once all ``total`` tasks completed, RUNNING until then."""
    completed = 0
    for state in states:
        if state.terminal and state is not TaskState.COMPLETED:
            return TaskState.FAILED
        completed += state is TaskState.COMPLETED
    return TaskState.COMPLETED if completed == total else TaskState.RUNNING


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the ``--url`` option every example shares."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--url",
        metavar="BASE",
        help="base URL of a running emulator, e.g. http://127.0.0.1:8765 "
        "(default: start one in-process)",
    )
    return parser


@contextmanager
def emulator(url: str | None) -> Iterator[EmulatorClient]:
    """A control client of the emulator at ``url``, or of one served in-process when it is None."""
    with ExitStack() as stack:
        if url is None:
            url = stack.enter_context(EmulatorServer()).url
        yield stack.enter_context(EmulatorClient(url))


def coin_script(
    percents: Sequence[int],
    *,
    seconds: float = 0.25,
    fails: bool = False,
    message: str = "Detecting",
) -> list[dict[str, Any]]:
    """Steps of a CloudCoin task: running at each of ``percents`` for ``seconds``, then the end.

    The end is ``completed`` or, with ``fails``, ``error`` (a failed task, not a monitoring error).
    """
    steps: list[dict[str, Any]] = [
        {"status": "running", "progress": pct, "message": message, "seconds": seconds}
        for pct in percents
    ]
    if fails:
        last = percents[-1] if percents else 0
        steps.append({"status": "error", "progress": last, "message": "RAIDA unreachable"})
    else:
        steps.append(
            {"status": "completed", "progress": 100, "message": "Command Completed",
             "data": {"online": 25}}
        )
    return steps
