"""The Taskcluster emulator publishing Pulse messages to a real RabbitMQ, read with aio-pika."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
from rabbitmq_server import RabbitMQServer

from reactive_tasks.emulator import EmulatorClient, EmulatorError
from reactive_tasks.emulator.taskcluster import new_slugid

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "exchange/taskcluster-queue/v1/"
EXCHANGES = (
    "task-defined", "task-pending", "task-running", "artifact-created", "task-completed",
    "task-failed", "task-exception", "task-group-resolved",
)
WAIT = 30.0
RETRY_SCRIPT = [
    {"runs": [{"state": "pending"}], "seconds": 0.3},
    {"runs": [{"state": "running"}], "seconds": 0.3},
    {"runs": [{"state": "exception", "reasonResolved": "worker-shutdown"}, {"state": "pending"}],
     "seconds": 0.3},
    {"runs": [{"state": "exception", "reasonResolved": "worker-shutdown"}, {"state": "running"}],
     "seconds": 0.3},
    {"runs": [{"state": "exception", "reasonResolved": "worker-shutdown"},
              {"state": "completed"}]},
]


@dataclass
class Received:
    exchange: str
    routing_key: str
    body: dict[str, Any]
    headers: dict[str, Any]
    content_type: str | None


class Inbox:
    """The messages one exclusive queue received, in arrival order."""

    def __init__(self) -> None:
        self.messages: list[Received] = []
        self._arrived = asyncio.Event()

    async def on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        self.messages.append(Received(
            (message.exchange or "").removeprefix(PREFIX), message.routing_key or "",
            json.loads(message.body), dict(message.headers), message.content_type,
        ))
        self._arrived.set()

    def about(self, task_id: str) -> list[Received]:
        return [m for m in self.messages if m.body.get("status", {}).get("taskId") == task_id]

    async def wait_for(self, done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + WAIT
        while not done():
            left = deadline - time.monotonic()
            assert left > 0, f"no {what} within {WAIT} s: {[m.exchange for m in self.messages]}"
            self._arrived.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), left)


@asynccontextmanager
async def listening(
    url: str, bindings: list[tuple[str, str]] | None = None
) -> AsyncIterator[Inbox]:
    """An exclusive queue bound as told (default: every exchange, `#`), consumed into an Inbox."""
    inbox = Inbox()
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
        for exchange, key in bindings or [(e, "#") for e in EXCHANGES]:
            await queue.bind(PREFIX + exchange, key)
        await queue.consume(inbox.on_message, no_ack=True)
        yield inbox


@pytest.fixture
def pulse(pulse_emulator: EmulatorClient) -> EmulatorClient:
    """The conftest's publishing emulator (reset, connected), under a short name."""
    return pulse_emulator


def _until(done: Callable[[], Any], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not done():
        assert time.monotonic() < deadline, f"no {what} within {WAIT} s"
        time.sleep(0.05)


def _key(task: str, run: int | None, worker: int | None, group: str) -> str:
    run_word = "_" if run is None else str(run)
    workers = "_._" if worker is None else f"emulated-group.worker-{worker}"
    return f"primary.{task}.{run_word}.{workers}.prov-t.type-t.sched-t.{group}._"


async def test_a_lifecycle_with_a_retry_and_its_group_resolution_is_published_unpolled(
    pulse: EmulatorClient, rabbitmq: RabbitMQServer
) -> None:
    group = new_slugid()
    where = {"taskGroupId": group, "schedulerId": "sched-t", "provisionerId": "prov-t",
             "workerType": "type-t"}
    async with listening(rabbitmq.url) as inbox:
        first = pulse.create_task("taskcluster", RETRY_SCRIPT, tags={"kind": "build"}, **where)
        second = pulse.create_task(
            "taskcluster", [{"runs": [{"state": "pending"}], "seconds": 0.1},
                            {"runs": [{"state": "failed"}]}], **where,
        )
        await inbox.wait_for(
            lambda: any(m.exchange == "task-group-resolved" for m in inbox.messages),
            "task-group-resolved",
        )
        await asyncio.sleep(0.3)  # anything published after the group resolved would be a bug
    assert pulse.requests()["total"] == 0  # not one poll: the clock moved both tasks

    assert [(m.exchange, m.routing_key) for m in inbox.about(first)] == [
        ("task-defined", _key(first, None, None, group)),
        ("task-pending", _key(first, 0, None, group)),
        ("task-running", _key(first, 0, 0, group)),
        ("task-exception", _key(first, 0, 0, group)),
        ("task-pending", _key(first, 1, None, group)),
        ("task-running", _key(first, 1, 1, group)),
        ("task-completed", _key(first, 1, 1, group)),
    ]
    assert [(m.exchange, m.routing_key) for m in inbox.about(second)] == [
        ("task-defined", _key(second, None, None, group)),
        ("task-pending", _key(second, 0, None, group)),
        ("task-failed", _key(second, 0, 0, group)),
    ]
    resolved = [m for m in inbox.messages if m.exchange == "task-group-resolved"]
    assert len(resolved) == 1 and inbox.messages[-1] is resolved[0]
    assert resolved[0].routing_key == f"primary.{group}.sched-t._"
    assert set(resolved[0].body) == {"version", "taskGroupId", "schedulerId", "expires"}
    assert resolved[0].body["taskGroupId"] == group and resolved[0].body["version"] == 1

    mine = inbox.about(first)
    assert all(m.content_type == "application/json" for m in inbox.messages)
    fields = [sorted(set(m.body) - {"version", "status", "task"}) for m in mine]
    assert fields == [[], ["runId"], ["runId", "takenUntil", "workerGroup", "workerId"],
                      ["runId", "workerGroup", "workerId"], ["runId"],
                      ["runId", "takenUntil", "workerGroup", "workerId"],
                      ["runId", "workerGroup", "workerId"]]
    assert all(m.body["version"] == 1 and m.body["task"] == {"tags": {"kind": "build"}}
               for m in mine)
    assert mine[0].body["status"]["state"] == "unscheduled" and mine[0].body["status"]["runs"] == []
    assert [m.body["status"]["state"] for m in mine[1:]] == [
        "pending", "running", "pending", "pending", "running", "completed"
    ]
    assert mine[4].body["status"]["runs"][1]["reasonCreated"] == "retry"
    # The last message carries exactly what the queue's status endpoint answers now.
    answer = httpx.get(f"{pulse.api_url('taskcluster')}/api/queue/v1/task/{first}/status")
    assert mine[-1].body["status"] == answer.json()["status"]


async def test_a_task_routes_are_cc_routing_keys(
    pulse: EmulatorClient, rabbitmq: RabbitMQServer
) -> None:
    route_only = [("task-completed", "route.index.project.build")]
    async with listening(rabbitmq.url, route_only) as inbox:
        task = pulse.create_task(
            "taskcluster", [{"runs": [{"state": "running"}], "seconds": 0.1},
                            {"runs": [{"state": "completed"}]}],
            routes=["index.project.build", "notify.email.x"],
        )
        await inbox.wait_for(lambda: bool(inbox.messages), "message by route")
    [message] = inbox.messages
    assert message.exchange == "task-completed" and message.body["status"]["taskId"] == task
    assert message.routing_key.startswith(f"primary.{task}.0.")
    assert message.headers["CC"] == ["route.index.project.build", "route.notify.email.x"]


async def test_a_step_advanced_by_a_poll_is_published_at_that_poll(
    pulse: EmulatorClient, rabbitmq: RabbitMQServer
) -> None:
    async with listening(rabbitmq.url) as inbox:
        task = pulse.create_task("taskcluster")  # pending (1 poll), running (2 polls), completed
        await inbox.wait_for(lambda: len(inbox.messages) == 2, "task-defined and task-pending")
        await asyncio.sleep(0.3)
        assert len(inbox.messages) == 2  # polls script: nothing moves unpolled
        status_url = f"{pulse.api_url('taskcluster')}/api/queue/v1/task/{task}/status"
        assert httpx.get(status_url).json()["status"]["state"] == "pending"
        await inbox.wait_for(lambda: len(inbox.messages) == 3, "task-running")
    assert inbox.messages[2].exchange == "task-running"


async def test_drop_duplicate_and_reorder_controls(
    pulse: EmulatorClient, rabbitmq: RabbitMQServer
) -> None:
    script = [{"runs": [{"state": "pending"}], "polls": 1},
              {"runs": [{"state": "running"}], "seconds": 0.2},
              {"runs": [{"state": "completed"}]}]
    async with listening(rabbitmq.url) as inbox:
        pulse.drop_messages(1, exchange="task-running")
        pulse.duplicate_messages(1, exchange="task-pending")
        dropped = pulse.create_task("taskcluster", script)
        httpx.get(f"{pulse.api_url('taskcluster')}/api/queue/v1/task/{dropped}/status")
        await inbox.wait_for(
            lambda: any(m.exchange == "task-completed" for m in inbox.about(dropped)), "completed"
        )
        assert [m.exchange for m in inbox.about(dropped)] == [
            "task-defined", "task-pending", "task-pending", "task-completed"
        ]

        swapped = pulse.create_task("taskcluster", script)
        await inbox.wait_for(lambda: len(inbox.about(swapped)) == 2, "defined and pending")
        control = pulse.reorder_messages(task_id=swapped)
        assert control == {"action": "reorder", "count": 1, "exchange": None, "taskId": swapped,
                           "holding": False}
        httpx.get(f"{pulse.api_url('taskcluster')}/api/queue/v1/task/{swapped}/status")
        await inbox.wait_for(lambda: len(inbox.about(swapped)) == 4, "running and completed")
        assert [m.exchange for m in inbox.about(swapped)] == [
            "task-defined", "task-pending", "task-completed", "task-running"
        ]
    stats = pulse.pulse()
    assert (stats["dropped"], stats["duplicated"], stats["reordered"]) == (1, 1, 1)
    assert stats["controls"] == []
    assert stats["url"] == f"amqp://***@127.0.0.1:{rabbitmq.port}/"


def test_the_change_log_stamps_each_change_at_its_scripted_instant(pulse: EmulatorClient) -> None:
    task = pulse.create_task("taskcluster", RETRY_SCRIPT)
    _until(lambda: any(c["exchange"] == "task-completed" for c in pulse.changes()), "completion")
    log = pulse.changes()
    assert [(c["exchange"], c["runId"], c["state"]) for c in log if "taskId" in c] == [
        ("task-defined", None, "unscheduled"), ("task-pending", 0, "pending"),
        ("task-running", 0, "running"), ("task-exception", 0, "exception"),
        ("task-pending", 1, "pending"), ("task-running", 1, "running"),
        ("task-completed", 1, "completed"),
    ]
    assert all(c["taskId"] == task for c in log if "taskId" in c)
    assert [c["seq"] for c in log] == list(range(1, len(log) + 1))
    steps = [log[1]["at"], log[2]["at"], log[3]["at"], log[5]["at"], log[6]["at"]]
    assert [round(b - a, 4) for a, b in itertools.pairwise(steps)] == [0.3] * 4
    assert pulse.changes(since=5) == log[5:]
    _until(lambda: pulse.pulse()["published"] >= len(log), "every change written to the broker")
    lag = pulse.pulse()["publish_lag_ms"]  # each message: from its change to its write
    assert lag["count"] == len(log) and 0 <= lag["p50"] <= lag["p99"] <= lag["max"] < WAIT * 1000
    pulse.reset()
    assert pulse.changes() == []
    _until(lambda: pulse.pulse()["publish_lag_ms"]["count"] == 0, "the lags forgotten")


def test_controls_are_refused_without_pulse_or_when_malformed(
    emulator: EmulatorClient, pulse: EmulatorClient
) -> None:
    with pytest.raises(EmulatorError) as refused:
        emulator.drop_messages(1)
    assert refused.value.status_code == 409 and "--pulse" in refused.value.message
    for call, words in [
        (lambda: pulse.drop_messages(0), "count must be"),
        (lambda: pulse.duplicate_messages(1, exchange="task-started"), "unknown exchange"),
        (lambda: pulse.changes(since=-1), "since must be"),
    ]:
        with pytest.raises(EmulatorError) as bad:
            call()
        assert bad.value.status_code == 422 and words in bad.value.message


async def test_publishing_survives_the_broker_going_away_and_never_blocks_http(
    pulse: EmulatorClient, rabbitmq: RabbitMQServer
) -> None:
    rabbitmq.kill()
    _until(lambda: not pulse.pulse()["connected"], "disconnection")
    quick = [{"runs": [{"state": "pending"}], "seconds": 0.1}, {"runs": [{"state": "completed"}]}]
    lost = pulse.create_task("taskcluster", quick)  # answered while the broker is gone
    _until(lambda: any(c["exchange"] == "task-completed" for c in pulse.changes()), "completion")
    _until(lambda: pulse.pulse()["lost"] >= 3, "the lost messages counted")
    assert pulse.pulse()["published"] == 0

    rabbitmq.start()
    _until(lambda: pulse.pulse()["connected"], "reconnection")
    async with listening(rabbitmq.url) as inbox:
        after = pulse.create_task("taskcluster", quick)
        await inbox.wait_for(
            lambda: any(m.exchange == "task-completed" for m in inbox.about(after)), "completed"
        )
    assert inbox.about(lost) == []
    assert [m.exchange for m in inbox.about(after)] == [
        "task-defined", "task-pending", "task-completed"
    ]
    assert pulse.pulse()["connects"] >= 2


def _emulate(*args: str) -> list[str]:
    return [sys.executable, "-m", "reactive_tasks.cli", "emulate", *args]


async def test_the_emulate_command_publishes_with_pulse(rabbitmq: RabbitMQServer) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        _emulate("--port", "0", "--pulse", rabbitmq.url), stdout=subprocess.PIPE, text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip().rsplit(" ", 1)[1]
        banner = []
        while not (line := process.stdout.readline()).startswith("Pulse:"):
            banner.append(line)
        assert line.split() == [
            "Pulse:", "Taskcluster", "messages", "published", "to",
            f"amqp://***@127.0.0.1:{rabbitmq.port}/",
        ]
        with EmulatorClient(url) as client:
            _until(lambda: client.pulse()["connected"], "the command's connection")
            async with listening(rabbitmq.url) as inbox:
                task = client.create_task(
                    "taskcluster", [{"runs": [{"state": "pending"}], "seconds": 0.1},
                                    {"runs": [{"state": "completed"}]}],
                )
                await inbox.wait_for(lambda: len(inbox.about(task)) == 3, "three messages")
    finally:
        process.terminate()
        process.wait(30)
        if process.stdout is not None:
            process.stdout.close()
    assert [m.exchange for m in inbox.about(task)] == [
        "task-defined", "task-pending", "task-completed"
    ]
    refused = subprocess.run(_emulate("--port", "0", "--pulse", "http://u:secret@x/"),
                             capture_output=True, text=True, env=env, timeout=60)
    assert refused.returncode == 64 and "amqp://" in refused.stderr
    assert "secret" not in refused.stderr


def test_the_pytest_plugin_option_makes_task_emulator_publish(
    tmp_path: Path, rabbitmq: RabbitMQServer
) -> None:
    (tmp_path / "test_user.py").write_text(
        "def test_published(task_emulator):\n"
        "    task_emulator.create_task('taskcluster')\n"
        "    assert task_emulator.pulse()['connected']\n"
        "    assert [c['exchange'] for c in task_emulator.changes()] == "
        "['task-defined', 'task-pending']\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "reactive_tasks.emulator.pytest_plugin",
         "-p", "no:cacheprovider", f"--task-emulator-pulse={rabbitmq.url}", "."],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


async def test_the_broker_fixture_lists_a_queue_bindings(
    pulse: EmulatorClient, rabbitmq: RabbitMQServer
) -> None:
    connection = await aio_pika.connect(rabbitmq.url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue("queue/tests/bindings", exclusive=True)
        await queue.bind(PREFIX + "task-running", "primary.abc.#")
        assert rabbitmq.bindings("queue/tests/") == [{
            "exchange": PREFIX + "task-running", "queue": "queue/tests/bindings",
            "routing_key": "primary.abc.#",
        }]
        await queue.unbind(PREFIX + "task-running", "primary.abc.#")
        assert rabbitmq.bindings("queue/tests/") == []
        assert "queue/tests/bindings" in rabbitmq.queues()
    # exclusive: deleted with its connection
    _until(lambda: "queue/tests/bindings" not in rabbitmq.queues(), "the queue deleted")
