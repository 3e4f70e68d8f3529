"""reactive_tasks.relay over a real Redis and the emulator: shared watches, leases, resume."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis_server import RedisServer

from reactive_tasks import (
    BackendUnavailable,
    ConfigurationError,
    InvalidTaskId,
    PollPolicy,
    TaskNotFound,
    TaskState,
    aiter,
    wait,
    wait_sync,
)
from reactive_tasks.backends import AparaviBackend, CloudCoinBackend, CloudCoinTask
from reactive_tasks.emulator import EmulatorClient
from reactive_tasks.emulator.aparavi import API_KEYS
from reactive_tasks.relay import Relay, RelayBackend
from reactive_tasks.relay._pipeline import Batcher
from reactive_tasks.relay._records import FEED_SHARDS, TaskKeys, entry_id
from reactive_tasks.relay._scripts import PUBLISH_MANY

FAST = PollPolicy(interval=0.05, max_interval=0.2, jitter=0.0, request_timeout=2.0)
PROCS = str(Path(__file__).with_name("relay_procs.py"))


def steps(*progress: int, polls: int = 1) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {"status": "running", "progress": p, "polls": polls} for p in progress
    ]
    return [*out, {"status": "completed", "progress": 100}]


def spawn(*args: str, stdin: str | None = None) -> subprocess.Popen[str]:
    """A relay or application process of tests/relay_procs.py, once it says it is ready."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(PROCS).parent.parent),
                                                        os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, PROCS, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=env,
    )
    assert proc.stdin is not None and proc.stdout is not None
    if stdin is not None:
        proc.stdin.write(stdin)
    proc.stdin.close()
    proc.stdin = None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def app_events(proc: subprocess.Popen[str]) -> dict[str, list[tuple[Any, ...]]]:
    """An application process's report: per task, its (sequence, state, progress) in order."""
    out, _ = proc.communicate(timeout=90)
    lines = out.splitlines()
    assert lines[-1] == "done"
    events: dict[str, list[tuple[Any, ...]]] = {}
    for line in lines[:-1]:
        task, *rest = json.loads(line)
        events.setdefault(task, []).append(tuple(rest[:3]))
    return events


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def rdb(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A plain client of the test's Redis, emptied first."""
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    yield client
    client.close()


@contextlib.asynccontextmanager
async def running_relay(
    url: str, emulator: EmulatorClient, backend: Any = None, **kw: Any
) -> AsyncIterator[Relay]:
    """A relay serving the emulator's CloudCoin API (or ``backend``) on this loop."""
    backend = backend or CloudCoinBackend(emulator.api_url("cloudcoin"), policy=FAST)
    async with backend:
        relay = Relay(url, {backend.name: backend}, **kw)
        job = asyncio.ensure_future(relay.run())
        try:
            yield relay
        finally:
            job.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await job


async def test_events_reach_readers_with_the_backends_model(
    redis_server: RedisServer, rdb: redis.Redis, emulator: EmulatorClient
) -> None:
    task = emulator.create_task("cloudcoin", steps(10, 50))
    reader = RelayBackend(redis_server.url, "cloudcoin")
    async with running_relay(redis_server.url, emulator, lease=2.0):
        events = [e async for e in aiter(reader.observe(task, after=-1))]
        again = [e async for e in aiter(reader.observe(task, after=-1))]
        latest = await reader.status(task)
    assert [(e.sequence, e.state, e.progress) for e in events] == [
        (0, TaskState.RUNNING, 10), (1, TaskState.RUNNING, 50), (2, TaskState.COMPLETED, 100)
    ]
    assert all(isinstance(e.snapshot, CloudCoinTask) for e in events)
    assert again == events  # nothing re-stamped: observed_at is the relay's
    assert latest == events[-1]
    assert emulator.requests()["by_task"][task] == 3
    await reader.aclose()


def reader_connections(rdb: redis.Redis) -> int:
    return sum(1 for c in rdb.client_list() if c.get("name") == "reactive-tasks-reader")


async def test_scripts_wait_for_relayed_tasks_from_plain_threads(
    redis_server: RedisServer, rdb: redis.Redis, emulator: EmulatorClient
) -> None:
    task = emulator.create_task("cloudcoin", steps(10, 60))
    reader = RelayBackend(redis_server.url, "cloudcoin")
    async with running_relay(redis_server.url, emulator, lease=2.0):
        final = await asyncio.to_thread(wait_sync, reader.observe(task), 10)
    assert (final.state, final.sequence, final.progress) == (TaskState.COMPLETED, 2, 100)


async def test_bad_names_and_ids_are_refused_before_redis_is_touched(
    redis_server: RedisServer, rdb: redis.Redis
) -> None:
    with pytest.raises(ConfigurationError, match="unknown backend name"):
        RelayBackend(redis_server.url, "cloudcoins")
    with pytest.raises(ConfigurationError):
        RelayBackend("http://127.0.0.1:6379", "cloudcoin")
    reader = RelayBackend(redis_server.url, "cloudcoin")
    with pytest.raises(InvalidTaskId):
        reader.observe("not-a-guid")
    with pytest.raises(InvalidTaskId):
        reader.observe("bdc8e99d-dd8a-40e9-8840-f9f8eef16c71", deal_id="0x12")
    with pytest.raises(InvalidTaskId):
        await reader.status("../../etc")
    aparavi = RelayBackend(redis_server.url, "aparavi")
    with pytest.raises(InvalidTaskId, match="task_type"):
        aparavi.observe("bdc8e99d-dd8a-40e9-8840-f9f8eef16c71")
    with pytest.raises(InvalidTaskId):
        aparavi.observe("bdc8e99d-dd8a-40e9-8840-f9f8eef16c71", task_type="tpu")
    assert rdb.dbsize() == 0
    assert reader_connections(rdb) == 0
    with pytest.raises(ConfigurationError):
        Relay(redis_server.url, {"taskcluster": CloudCoinBackend("http://127.0.0.1:1")})
    with pytest.raises(ConfigurationError):
        Relay(redis_server.url, {"nope": CloudCoinBackend("http://127.0.0.1:1")})


async def test_final_records_expire_after_the_retention(
    redis_server: RedisServer, rdb: redis.Redis, emulator: EmulatorClient
) -> None:
    done = emulator.create_task("cloudcoin", steps(10))
    long = emulator.create_task("cloudcoin", [{"status": "running", "progress": 5}])
    reader = RelayBackend(redis_server.url, "cloudcoin")
    async with running_relay(redis_server.url, emulator, lease=2.0, retention=30.0):
        final = await wait(reader.observe(done))
        first = await reader.status(long)
        events, latest = rdb.keys(f"rt:{{cloudcoin:{done}}}:*"), f"rt:{{cloudcoin:{done}}}:latest"
        assert sorted(k.decode().rsplit(":", 1)[1] for k in events) == ["events", "latest"]
        assert 0 < rdb.pttl(latest) <= 30_000
        assert 0 < rdb.pttl(f"rt:{{cloudcoin:{done}}}:events") <= 30_000
        assert rdb.pttl(f"rt:{{cloudcoin:{long}}}:events") == -1  # still watched: kept
    assert final.state is TaskState.COMPLETED and first.state is TaskState.RUNNING
    await reader.aclose()


async def test_errors_reach_readers_as_the_same_class_and_secrets_stay_with_relays(
    redis_server: RedisServer, rdb: redis.Redis, emulator: EmulatorClient
) -> None:
    token = "1f0e4a52-9c3b-4d7e-8a61-2b5c9d0e7f13"
    key = API_KEYS[0]
    backend = AparaviBackend(emulator.api_url("aparavi"), api_key=key, policy=FAST)
    reader = RelayBackend(redis_server.url, "aparavi")
    async with running_relay(redis_server.url, emulator, backend, lease=2.0):
        with pytest.raises(TaskNotFound) as info:
            await wait(reader.observe(token, task_type="cpu"), timeout=10)
    assert info.value.backend == "aparavi" and info.value.task_id == "1f0e4a52…"
    assert key not in str(info.value) and info.value.__cause__ is None
    stored = b"".join(rdb.dump(k) or b"" for k in rdb.keys("*"))
    assert key.encode() not in stored
    await reader.aclose()


async def test_after_delivers_only_newer_events(
    redis_server: RedisServer, rdb: redis.Redis, emulator: EmulatorClient
) -> None:
    task = emulator.create_task("cloudcoin", steps(10, 20, 30, 40, 50))
    reader = RelayBackend(redis_server.url, "cloudcoin")
    async with running_relay(redis_server.url, emulator, lease=2.0):
        first: list[int] = []
        async for e in aiter(reader.observe(task)):
            first.append(e.sequence)
            if e.sequence >= 2:
                break  # the application process goes away here
        resumed = [e async for e in aiter(reader.observe(task, after=first[-1]))]
        latest_only = [e async for e in aiter(reader.observe(task))]
    assert [e.sequence for e in resumed] == list(range(first[-1] + 1, 6))
    assert [e.progress for e in resumed][-1] == 100
    assert [e.sequence for e in latest_only] == [5]
    await reader.aclose()


async def test_disposing_stops_the_readers_redis_reads_at_once(
    redis_server: RedisServer, rdb: redis.Redis, emulator: EmulatorClient
) -> None:
    task = emulator.create_task("cloudcoin", [{"status": "running", "progress": 5}])
    reader = RelayBackend(redis_server.url, "cloudcoin")
    async with running_relay(redis_server.url, emulator, lease=2.0):
        seen = asyncio.Event()
        sub = reader.observe(task).subscribe(on_next=lambda e: seen.set())
        await asyncio.wait_for(seen.wait(), 10)
        assert reader_connections(rdb) == 2
        sub.dispose()
        for _ in range(100):
            await asyncio.sleep(0.01)
            left = [t for t in asyncio.all_tasks() if "_Hub." in repr(t.get_coro())]
            if not left and reader_connections(rdb) == 0:
                break
        assert left == [] and reader_connections(rdb) == 0


async def test_redis_losing_its_data_ends_the_observation_and_new_ones_work(
    redis_server: RedisServer, rdb: redis.Redis, emulator: EmulatorClient
) -> None:
    task = emulator.create_task("cloudcoin", steps(*range(1, 40), polls=2))
    reader = RelayBackend(redis_server.url, "cloudcoin")
    async with running_relay(redis_server.url, emulator, lease=1.0):
        events: list[Any] = []
        with pytest.raises(BackendUnavailable, match="lost its data"):
            async for e in aiter(reader.observe(task)):
                events.append(e)
                if len(events) == 2:
                    redis_server.restart()
        final = await wait(reader.observe(task, after=-1), timeout=30)
    assert final.state is TaskState.COMPLETED and final.progress == 100
    await reader.aclose()


def stop(*procs: subprocess.Popen[str]) -> str:
    """Interrupt relay processes (as Ctrl-C does); their stderr."""
    logs = ""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    for proc in procs:
        try:
            logs += proc.communicate(timeout=20)[1]
        except subprocess.TimeoutExpired:
            proc.kill()
            logs += proc.communicate()[1]
    return logs


def test_three_processes_share_one_poll_per_task_through_two_relays(
    redis_server: RedisServer, rdb: redis.Redis, emulator: EmulatorClient
) -> None:
    tasks = emulator.create_tasks("cloudcoin", 200, steps(25, 50, 75))
    api = emulator.api_url("cloudcoin")
    relays = [spawn("relay", redis_server.url, api, name, "0.2", "5") for name in ("ra", "rb")]
    try:
        apps = [spawn("app", redis_server.url, stdin="\n".join(tasks)) for _ in range(3)]
        reports = [app_events(a) for a in apps]
    finally:
        logs = stop(*relays)
    expected = [(0, "RUNNING", 25), (1, "RUNNING", 50), (2, "RUNNING", 75),
                (3, "COMPLETED", 100)]
    for report in reports:
        assert sorted(report) == sorted(tasks)
        assert all(report[t] == expected for t in tasks)
    polls = emulator.requests()["by_task"]
    assert all(polls[t] == 4 for t in tasks)  # one poll per task per round, not three
    watched = {name: logs.count(f"relay {name}: watching") for name in ("ra", "rb")}
    assert watched["ra"] > 0 and watched["rb"] > 0 and sum(watched.values()) == 200


async def test_a_killed_relays_tasks_continue_on_another_without_gaps_or_repeats(
    redis_server: RedisServer, rdb: redis.Redis, emulator: EmulatorClient
) -> None:
    tasks = emulator.create_tasks("cloudcoin", 20, steps(*range(2, 60, 2)))
    api = emulator.api_url("cloudcoin")
    relays = {n: spawn("relay", redis_server.url, api, n, "0.1", "1") for n in ("ra", "rb")}
    reader = RelayBackend(redis_server.url, "cloudcoin")
    try:
        events: dict[str, list[Any]] = {t: [] for t in tasks}
        started = asyncio.Event()

        async def follow(task: str) -> None:
            async for e in aiter(reader.observe(task, after=-1)):
                events[task].append(e)
                if all(len(v) >= 3 for v in events.values()):
                    started.set()

        watching = asyncio.gather(*(follow(t) for t in tasks))
        await asyncio.wait_for(started.wait(), 30)
        owners = [rdb.get(f"rt:{{cloudcoin:{t}}}:owner") or b"" for t in tasks]
        killed = [t for t, o in zip(tasks, owners, strict=True) if o.startswith(b"ra|")]
        relays["ra"].kill()  # SIGKILL: no goodbye, its leases just stop being renewed
        await asyncio.wait_for(watching, 60)
    finally:
        stop(*relays.values())
        await reader.aclose()
    assert killed  # the dead relay did hold tasks mid-watch
    for task in tasks:
        seen = events[task]
        assert [e.sequence for e in seen] == list(range(len(seen)))
        progress = [e.progress for e in seen]
        assert progress == sorted(set(progress)) and seen[-1].state is TaskState.COMPLETED


async def test_cli_relay_hands_its_tasks_back_on_ctrl_c(
    redis_server: RedisServer, rdb: redis.Redis, emulator: EmulatorClient
) -> None:
    task = emulator.create_task("cloudcoin", steps(*range(1, 30), polls=2))
    env = {**os.environ, "PYTHONPATH": str(Path(PROCS).parent.parent)}
    cli = subprocess.Popen(
        [sys.executable, "-m", "reactive_tasks.cli", "relay", "--redis", redis_server.url,
         "--cloudcoin", "--base-url", emulator.api_url("cloudcoin"), "--interval", "0.05",
         "--lease", "60", "--name", "cli"],
        stderr=subprocess.PIPE, text=True, env=env,
    )
    reader = RelayBackend(redis_server.url, "cloudcoin")
    events: list[Any] = []
    try:
        async for e in aiter(reader.observe(task, after=-1)):
            events.append(e)
            if len(events) == 3:
                break
        assert rdb.get(f"rt:{{cloudcoin:{task}}}:owner").startswith(b"cli|")
        cli.send_signal(signal.SIGINT)
        code = await asyncio.to_thread(cli.wait, 20)
        assert code == 130
        assert rdb.get(f"rt:{{cloudcoin:{task}}}:owner") is None  # released, not left to expire
        # Another relay takes the task over at once instead of after the 60 s lease.
        async with running_relay(redis_server.url, emulator, lease=60.0):
            rest = [e async for e in aiter(reader.observe(task, after=events[-1].sequence))]
    finally:
        if cli.poll() is None:
            cli.kill()
        cli.communicate()
        await reader.aclose()
    assert [e.sequence for e in events + rest] == list(range(len(events) + len(rest)))
    assert rest[-1].state is TaskState.COMPLETED


def owners_of(rdb: redis.Redis, tasks: list[str]) -> dict[str, bytes]:
    return {t: rdb.get(f"rt:{{cloudcoin:{t}}}:owner") or b"" for t in tasks}


async def test_a_relay_whose_loop_stalls_keeps_its_leases(
    redis_server: RedisServer, rdb: redis.Redis, emulator: EmulatorClient
) -> None:
    # A loop busy with polling and publishing (here: blocked outright for over two leases)
    # must not let its leases lapse: another relay would poll the same tasks meanwhile.
    tasks = emulator.create_tasks("cloudcoin", 10, steps(*range(1, 100), polls=4))
    reader = RelayBackend(redis_server.url, "cloudcoin")
    seen: dict[str, list[Any]] = {t: [] for t in tasks}
    api = emulator.api_url("cloudcoin")
    async with running_relay(redis_server.url, emulator, lease=2.0, name="ra") as ra:
        subs = [reader.observe(t, after=-1).subscribe(on_next=seen[t].append) for t in tasks]
        for _ in range(1000):
            if all(seen.values()):
                break
            await asyncio.sleep(0.01)
        assert all(o.startswith(b"ra|") for o in owners_of(rdb, tasks).values())
        rb = spawn("relay", redis_server.url, api, "rb", "0.1", "2")
        try:
            time.sleep(4.5)  # the loop stalls: no timer, no renewal on it for 2.25 leases
            await asyncio.sleep(0.5)  # (rb, were it to take over, would have by now)
            owners = owners_of(rdb, tasks)
            watching = ra.watching
        finally:
            logs = stop(rb)
            for sub in subs:
                sub.dispose()
    await reader.aclose()
    assert all(o.startswith(b"ra|") for o in owners.values()), owners
    assert watching == len(tasks)
    assert "relay rb: watching" not in logs
    for events in seen.values():
        assert [e.sequence for e in events] == list(range(len(events)))


async def test_a_publish_whose_watch_was_cancelled_is_never_sent() -> None:
    # A watch cancelled because its lease was lost must not publish what it had queued.
    sent: list[str] = []

    async def send(batch: list[str]) -> list[Any]:
        sent.extend(batch)
        return [1] * len(batch)

    batcher: Batcher[str] = Batcher(send)
    stale = asyncio.ensure_future(batcher.submit("stale"))
    live = asyncio.ensure_future(batcher.submit("live"))
    await asyncio.sleep(0)  # both queued, not sent yet
    stale.cancel()
    assert await live == 1
    assert sent == ["live"]
    await batcher.aclose()


def xread_streams(entry: dict[str, Any]) -> int:
    """How many streams a slow-log entry of XREAD named (Redis shows 31 arguments at most)."""
    words = entry["command"].decode().split()
    total = len(words)
    if words[-1] == "arguments)":  # "... (N more arguments)"
        total = 31 + int(words[-3].lstrip("("))
    return (total - words.index("STREAMS") - 1) // 2


async def test_a_reader_of_many_tasks_reads_a_few_feeds_not_a_key_per_task(
    redis_server: RedisServer, rdb: redis.Redis, emulator: EmulatorClient
) -> None:
    tasks = emulator.create_tasks("cloudcoin", 60, steps(10, 20, polls=2))
    reader = RelayBackend(redis_server.url, "cloudcoin")
    rdb.config_set("slowlog-max-len", 100_000)
    rdb.config_set("slowlog-log-slower-than", 0)  # every command, with its arguments
    rdb.slowlog_reset()
    try:
        async with running_relay(redis_server.url, emulator, lease=2.0):
            finals = await asyncio.gather(*(wait(reader.observe(t), timeout=30) for t in tasks))
        log = rdb.slowlog_get(100_000)
    finally:
        rdb.config_set("slowlog-log-slower-than", 10_000)
        await reader.aclose()
    assert all(f.state is TaskState.COMPLETED and f.progress == 100 for f in finals)
    reads = [xread_streams(e) for e in log if e.get("client_name") == b"reactive-tasks-reader"
             and e["command"].upper().startswith(b"XREAD ")]
    assert reads and max(reads) <= FEED_SHARDS  # not one stream per task (60)


async def test_a_reader_the_feed_left_behind_catches_up_from_the_tasks_stream(
    redis_server: RedisServer, rdb: redis.Redis, emulator: EmulatorClient
) -> None:
    task = emulator.create_task("cloudcoin", [{"status": "running", "progress": 5}])
    reader = RelayBackend(redis_server.url, "cloudcoin")
    keys = reader.task_keys(task)
    seen: list[Any] = []
    async with running_relay(redis_server.url, emulator, lease=2.0):
        sub = reader.observe(task, after=-1).subscribe(on_next=seen.append)
        for _ in range(1000):
            if seen:
                break
            await asyncio.sleep(0.01)
    # The relay is gone; records 1..50 of the task, then thousands of another task of the same
    # feed, are written while this loop (and so the reader) is blocked: the feed drops them all
    # before the reader reads again, and only the task's own stream still has them.
    other = next(k for k in (TaskKeys("cloudcoin", f"{i:08d}-0000-4000-8000-000000000000")
                             for i in range(10_000)) if k.feed == keys.feed)
    record = json.loads(rdb.get(keys.latest))
    publish = rdb.register_script(PUBLISH_MANY)
    for k in (keys, other):
        rdb.set(k.owner, "test|0-0|x")

    def write(k: TaskKeys, sequence: int) -> list[Any]:
        record["event"]["sequence"] = sequence
        return [(k.owner, k.events, k.latest, k.feed),
                ("test|0-0|x", entry_id(sequence), json.dumps(record), 10_000, 0, k.tag)]

    feed_length = 600  # (shorter than the relays' FEED_LENGTH, longer than a reader's batch)
    batch = [write(keys, s) for s in range(1, 51)]
    batch += [write(other, s) for s in range(2 * feed_length)]
    publish(keys=[x for one in batch for x in one[0]],  # one script: the reader's blocked XREAD
            args=[feed_length, *(x for one in batch for x in one[1])])  # is answered after it
    assert rdb.xinfo_stream(keys.feed)["first-entry"][1][b"t"] == other.tag.encode()
    for _ in range(1000):
        if seen[-1].sequence == 50:
            break
        await asyncio.sleep(0.01)
    sub.dispose()
    await reader.aclose()
    assert [e.sequence for e in seen] == list(range(51))


async def test_an_idle_readers_blocked_read_stays_open(
    redis_server: RedisServer, rdb: redis.Redis
) -> None:
    # No event for longer than redis-py's default read timeout (5 s): the blocked XREAD must
    # not be cut short (each cut meant a reconnect and a check of every subscription).
    reader = RelayBackend(redis_server.url, "cloudcoin")
    sub = reader.observe("bdc8e99d-dd8a-40e9-8840-f9f8eef16c71").subscribe()

    def blocked() -> set[int]:
        return {c["id"] for c in rdb.client_list()
                if c.get("name") == "reactive-tasks-reader" and c.get("cmd") == "xread"}

    for _ in range(500):
        if blocked():
            break
        await asyncio.sleep(0.01)
    before = blocked()
    await asyncio.sleep(6.5)
    after = blocked()
    sub.dispose()
    await reader.aclose()
    assert before and after == before
