"""``reactive-tasks demo``: the emulator in-process, a few dozen scripted tasks, watched live."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any, TextIO

from reactivex import Observable

from ._models import TaskEvent
from ._policy import PollPolicy
from .backends import (
    AparaviBackend,
    Backend,
    CloudCoinBackend,
    GreenCloudBackend,
    IExecBackend,
    TaskclusterBackend,
)

__all__ = ["SCENARIOS", "run_demo"]

POLICY = PollPolicy(interval=0.25, max_interval=2.0, timeout=120)

Streams = list[tuple[str, str, Observable[TaskEvent[Any]]]]
#: API name -> builds (backend, scripted tasks' streams) on a running emulator.
Scenario = Callable[[Any, int, random.Random], tuple[Backend[Any], Streams]]


def _ramp(rng: random.Random, fields: Callable[[int], dict[str, Any]]) -> list[dict[str, Any]]:
    """Progress in a handful of timed steps, so the table visibly moves."""
    steps = []
    for pct in sorted(rng.sample(range(5, 100, 5), rng.randint(3, 6))):
        steps.append({**fields(pct), "seconds": rng.uniform(0.3, 1.0)})
    return steps


def _cloudcoin(emulator: Any, count: int, rng: random.Random) -> tuple[Backend[Any], Streams]:
    backend = CloudCoinBackend(emulator.api_url("cloudcoin"), policy=POLICY)
    streams: Streams = []
    for i in range(count):
        steps = _ramp(rng, lambda p: {"status": "running", "progress": p, "message": "Detecting"})
        if i % 7 == 3:
            steps.append({"status": "error", "progress": steps[-1]["progress"],
                          "message": "RAIDA unreachable"})
        else:
            steps.append({"status": "completed", "progress": 100, "message": "Command Completed",
                          "data": {"online": 25}})
        task_id = emulator.create_task("cloudcoin", steps)
        streams.append((backend.name, task_id, backend.observe(task_id)))
    return backend, streams


def _aparavi(emulator: Any, count: int, rng: random.Random) -> tuple[Backend[Any], Streams]:
    from .emulator.aparavi import API_KEYS

    backend = AparaviBackend(emulator.api_url("aparavi"), api_key=API_KEYS[0], policy=POLICY)
    streams: Streams = []
    for i in range(count):
        total = rng.randint(20, 400)
        steps: list[dict[str, Any]] = [{"status": "Created", "seconds": rng.uniform(0.2, 0.6)}]

        def running(pct: int, total: int = total) -> dict[str, Any]:
            return {"status": "Running", "totalCount": total, "completedCount": total * pct // 100,
                    "currentObject": f"s3://bucket/doc-{pct}.pdf"}

        steps += _ramp(rng, running)
        if i % 5 == 2:
            steps.append({"status": "Completed", "completed": True, "totalCount": total,
                          "completedCount": total - 3, "failedCount": 3,
                          "errors": ["parse_1: cannot extract text from 3 objects"]})
        else:
            steps.append({"status": "Completed", "completed": True, "totalCount": total,
                          "completedCount": total, "exitMsg": "Completed successfully"})
        token = emulator.create_task("aparavi", steps, type="cpu")
        streams.append((backend.name, token, backend.observe(token, task_type="cpu")))
    return backend, streams


def _taskcluster(emulator: Any, count: int, rng: random.Random) -> tuple[Backend[Any], Streams]:
    backend = TaskclusterBackend(emulator.api_url("taskcluster"), policy=POLICY)
    streams: Streams = []
    for i in range(count):
        def wait() -> float:
            return rng.uniform(0.4, 1.2)

        steps: list[dict[str, Any]] = [
            {"runs": [{"state": "pending"}], "seconds": wait()},
            {"runs": [{"state": "running"}], "seconds": wait()},
        ]
        if i % 4 == 1:  # the worker dies: the queue retries the task on a new run
            lost = {"state": "exception", "reasonResolved": "worker-shutdown"}
            steps += [{"runs": [lost, {"state": "pending"}], "seconds": wait()},
                      {"runs": [lost, {"state": "running"}], "seconds": wait()}]
            steps.append({"runs": [lost, {"state": "completed"}]})
        elif i % 4 == 3:
            steps.append({"runs": [{"state": "exception", "reasonResolved": "deadline-exceeded"}]})
        else:
            steps.append({"runs": [{"state": "completed"}]})
        task_id = emulator.create_task("taskcluster", steps)
        streams.append((backend.name, task_id, backend.observe(task_id)))
    return backend, streams


def _greencloud(emulator: Any, count: int, rng: random.Random) -> tuple[Backend[Any], Streams]:
    backend = GreenCloudBackend(
        emulator.api_url("greencloud"), api_key="demo-api-key", policy=POLICY
    )
    streams: Streams = []
    for i in range(count):
        steps: list[dict[str, Any]] = [{"state": "issued", "progress": 0, "seconds": 0.5}]
        steps += _ramp(rng, lambda p: {"state": "assigned", "progress": p})
        code = 500 if i % 6 == 4 else 200
        steps.append({"state": "finished", "progress": 100, "status": code,
                      "result": {"ok": code == 200}})
        task_id = emulator.create_task("greencloud", steps)
        streams.append((backend.name, task_id, backend.observe(task_id)))
    return backend, streams


def _iexec(emulator: Any, count: int, rng: random.Random) -> tuple[Backend[Any], Streams]:
    from .emulator.iexec import HUB_ADDRESS, create_deal

    backend = IExecBackend(emulator.api_url("iexec") + "/rpc", HUB_ADDRESS, policy=POLICY)
    scripts: list[list[dict[str, Any]]] = []
    for i in range(count):
        def wait() -> float:
            return rng.uniform(0.4, 1.2)

        last = {"status": "FAILED"} if i % 5 == 3 else {"status": "COMPLETED"}
        scripts.append([{"status": "UNSET", "seconds": wait()},
                        {"status": "ACTIVE", "seconds": wait()},
                        {"status": "REVEALING", "seconds": wait()}, last])
    if not scripts:
        return backend, []
    deal_id, task_ids = create_deal(emulator, scripts)
    streams: Streams = [
        (backend.name, t, backend.observe(t, deal_id=deal_id)) for t in task_ids
    ]
    return backend, streams


SCENARIOS: dict[str, Scenario] = {
    "cloudcoin": _cloudcoin,
    "taskcluster": _taskcluster,
    "aparavi": _aparavi,
    "greencloud": _greencloud,
    "iexec": _iexec,
}


def run_demo(
    watch: Callable[..., Awaitable[Any]],
    *, tasks: int = 36, as_json: bool = False, out: TextIO, err: TextIO | None = None,
    seed: int = 7, monitoring_error: int = 2,
) -> int:
    """Serve the emulator, script ``tasks`` tasks across every API, and watch them to the end.

    Exits 0 when every task was watched to its end, even those scripted to fail (the closing
    line on ``err`` says how many); ``monitoring_error`` on a monitoring error, as ``watch``
    would. ``watch`` is the command's watcher, handed in by the CLI (no import back into it).
    """
    from .emulator import EmulatorClient, EmulatorServer

    rng = random.Random(seed)
    with EmulatorServer() as server, EmulatorClient(server.url) as emulator:
        share, extra = divmod(max(tasks, 1), len(SCENARIOS))
        built = [
            scenario(emulator, share + (1 if i < extra else 0), rng)
            for i, scenario in enumerate(SCENARIOS.values())
        ]
        streams = [s for _, group in built for s in group]

        async def run() -> Any:
            try:
                labels = {t: b.display_id(t) for b, group in built for _n, t, _o in group}
                return await watch(streams, as_json=as_json, out=out, labels=labels)
            finally:
                for backend, _ in built:
                    await backend.aclose()

        outcome = asyncio.run(run())
    if err is not None:
        print(f"demo: {_closing_line(outcome.code, outcome.why, outcome.counts)}", file=err)
    # Scripted failures are part of the show; only a monitoring error fails the demo.
    return monitoring_error if outcome.code == monitoring_error else 0


def _closing_line(code: int, why: str, counts: dict[str, int]) -> str:
    """One line saying why the demo exits as it does."""
    total = sum(counts.values())
    if code == 2:
        return f"exit 2, monitoring failed: {why}"
    done = counts.get("COMPLETED", 0)
    if done == total:
        return f"all {total} tasks completed; exit 0"
    others = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()) if k != "COMPLETED")
    return (f"{done} of {total} tasks completed; {others} on purpose (the demo scripts these "
            "failures); exit 0")
