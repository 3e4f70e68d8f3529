"""GreenCloudBackend end to end over real HTTP: submit, lifecycle, rounds, faults, results, CSV."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Any

import pytest
from fault_matrix import transient_faults

from reactive_tasks import (
    BackendUnavailable,
    ConfigurationError,
    EventKind,
    InvalidTaskId,
    PollPolicy,
    ProtocolError,
    TaskNotFound,
    TaskState,
    aiter,
    wait,
)
from reactive_tasks.backends import (
    GreenCloudBackend,
    GreenCloudCsvRow,
    GreenCloudRecord,
    GreenCloudTask,
)
from reactive_tasks.emulator import EmulatorClient
from reactive_tasks.emulator.greencloud import FAILING_FUNCTION, MISSING_FUNCTION, TEXT_FUNCTION
from reactive_tasks.testing import cached_reads

FAST = PollPolicy(interval=0.02, max_interval=0.1, jitter=0.0, request_timeout=2.0)
FUNCTION = "6405848581b16f7a07cd4c48"
OTHER_FUNCTION = "6405848581b16f7a07cd4c49"
SCHEDULE = "6677391a241c7178b29e4a4a"
UNKNOWN = "64057f3c9956fae80d7e0e84"
LIST = "greencloud GET /v1/task/list"
RECORD = "greencloud GET /v1/task/{id}"

LIFECYCLE: list[dict[str, Any]] = [
    {"state": "issued", "progress": 0, "polls": 2},
    {"state": "assigned", "progress": 10, "polls": 1},
    {"state": "assigned", "progress": 60, "polls": 1},
    {"state": "finished", "progress": 100, "status": 200, "result": {"Count": 40}},
]
EXPECTED = [
    (TaskState.PENDING, "0", 0.0),
    (TaskState.RUNNING, "0", 10.0),
    (TaskState.RUNNING, "0", 60.0),
    (TaskState.COMPLETED, "200", 100.0),
]


def routes(emulator: EmulatorClient) -> dict[str, int]:
    by_route: dict[str, int] = emulator.requests()["by_route"]
    return by_route


@pytest.fixture
async def backend(emulator: EmulatorClient) -> Any:
    b = GreenCloudBackend(emulator.api_url("greencloud"), api_key="test-key", policy=FAST)
    yield b
    await b.aclose()


async def test_submit_observe_result(emulator: EmulatorClient, backend: GreenCloudBackend) -> None:
    task = await backend.submit(FUNCTION, body={"name": "John Doe", "age": 30},
                                params={"myParam1": 100, "myParam3": True})
    assert len(task) == 24 and int(task, 16) >= 0
    events = [e async for e in aiter(backend.observe(task))]
    assert [(e.kind, e.state, e.native_status, e.progress) for e in events] == [
        (EventKind.TASK_UPDATED, TaskState.PENDING, "0", 0.0),
        (EventKind.TASK_UPDATED, TaskState.RUNNING, "0", 0.0),
        (EventKind.TASK_UPDATED, TaskState.RUNNING, "0", 50.0),
        (EventKind.TASK_COMPLETED, TaskState.COMPLETED, "200", 100.0),
    ]
    assert [e.sequence for e in events] == [0, 1, 2, 3]
    final = events[-1]
    assert isinstance(final.snapshot, GreenCloudTask) and final.snapshot.finished
    assert await backend.result(task) == {
        "params": {"myParam1": "100", "myParam3": "true"}, "body": {"name": "John Doe", "age": 30}
    }
    record = await backend.record(task)
    assert isinstance(record, GreenCloudRecord) and record.functionId == FUNCTION
    assert record.assigned_at is not None and record.finished_at is not None
    assert record.issued_at is not None and record.capabilities is not None


async def test_function_answering_500_is_a_failed_event(backend: GreenCloudBackend) -> None:
    task = await backend.submit(FAILING_FUNCTION)
    events = [e async for e in aiter(backend.observe(task))]
    assert [(e.state, e.native_status) for e in events] == [
        (TaskState.PENDING, "0"), (TaskState.RUNNING, "0"), (TaskState.FAILED, "500")]
    assert events[-1].kind is EventKind.TASK_FAILED
    assert events[-1].message == "the function answered HTTP 500"
    assert await backend.result(task) == "internal error"


async def test_text_result(backend: GreenCloudBackend) -> None:
    task = await backend.submit(TEXT_FUNCTION, body=None)
    final = await wait(backend.observe(task), timeout=10)
    assert final.state is TaskState.COMPLETED
    assert await backend.result(task) == "Hello from GreenCloud!"


async def test_scripted_lifecycle_and_record_reads_stop_once_assigned(
    emulator: EmulatorClient, backend: GreenCloudBackend
) -> None:
    task = emulator.create_task("greencloud", LIFECYCLE, function_id=FUNCTION)
    events = [e async for e in aiter(backend.observe(task))]
    assert [(e.state, e.native_status, e.progress) for e in events] == EXPECTED
    assert events[1].snapshot.record is not None and events[1].snapshot.assigned
    assert events[0].snapshot.record is not None and not events[0].snapshot.assigned
    counts = routes(emulator)
    assert counts[LIST] == 5, "one list read per round, five rounds"
    assert emulator.requests()["by_task"][task] == 3, "records read only until seen assigned"
    assert cached_reads(backend) == 0, "a finished task is forgotten"


async def test_one_list_request_per_round_for_many_tasks(emulator: EmulatorClient) -> None:
    ids = emulator.create_tasks("greencloud", 60, LIFECYCLE, function_id=FUNCTION)
    policy = PollPolicy(interval=0.2, max_interval=1.0, jitter=0.0)
    async with GreenCloudBackend(
        emulator.api_url("greencloud"), api_key="test-key", policy=policy
    ) as backend:
        assert backend.max_batch is None
        seen: dict[str, list[tuple[TaskState, str, float | None]]] = {i: [] for i in ids}

        async def watch(task_id: str) -> None:
            async for e in aiter(backend.observe(task_id)):
                seen[task_id].append((e.state, e.native_status, e.progress))

        await asyncio.gather(*(watch(i) for i in ids))
    assert all(events == EXPECTED for events in seen.values())
    counts = routes(emulator)
    assert counts[LIST] == 5, "60 tasks, 5 rounds: 5 list requests"
    assert counts[RECORD] == 60 * 3, counts
    assert counts["greencloud POST /v1/auth/apiKey"] == 1


async def test_subscribers_share_one_list_read(
    emulator: EmulatorClient, backend: GreenCloudBackend
) -> None:
    task = emulator.create_task("greencloud", LIFECYCLE)
    obs = backend.observe(task)
    results = await asyncio.gather(*(wait(obs, timeout=10) for _ in range(5)))
    assert {r.state for r in results} == {TaskState.COMPLETED}
    assert routes(emulator)[LIST] == 5


def test_ids_are_validated_before_any_request(emulator: EmulatorClient) -> None:
    backend = GreenCloudBackend(emulator.api_url("greencloud"), api_key="k")
    for bad in ["", "nope", UNKNOWN[:-1], UNKNOWN + "0", "z" * 24, 42, None]:
        with pytest.raises(InvalidTaskId):
            backend.observe(bad)  # type: ignore[arg-type]
    assert backend.validate_task_id(UNKNOWN.upper()) == UNKNOWN
    with pytest.raises(InvalidTaskId):
        asyncio.run(backend.submit("not-a-function"))
    with pytest.raises(InvalidTaskId):
        asyncio.run(backend.result("123"))
    assert emulator.requests()["total"] == 0


def test_configuration() -> None:
    assert GreenCloudBackend(token="t").base_url == "https://api.greencloud.dev"
    with pytest.raises(ConfigurationError, match="exactly one"):
        GreenCloudBackend()
    with pytest.raises(ConfigurationError, match="exactly one"):
        GreenCloudBackend(token="t", api_key="k")
    for bad in ["", "two\nlines", "tab\there"]:
        with pytest.raises(ConfigurationError) as info:
            GreenCloudBackend(api_key=bad)
        assert bad not in str(info.value) or not bad
    with pytest.raises(ConfigurationError):
        GreenCloudBackend("api.greencloud.dev", token="t")


def test_record_ttl_is_a_positive_number_of_seconds() -> None:
    assert GreenCloudBackend(token="t").record_ttl == 600.0
    assert GreenCloudBackend(token="t", record_ttl=5).record_ttl == 5.0
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ConfigurationError, match="record_ttl"):
            GreenCloudBackend(token="t", record_ttl=bad)


async def test_unknown_task_is_task_not_found(
    emulator: EmulatorClient, backend: GreenCloudBackend
) -> None:
    with pytest.raises(TaskNotFound, match="404") as info:
        await wait(backend.observe(UNKNOWN), timeout=10)
    assert info.value.task_id == UNKNOWN and info.value.backend == "greencloud"
    with pytest.raises(TaskNotFound):
        await backend.status(UNKNOWN)
    with pytest.raises(TaskNotFound):
        await backend.result(UNKNOWN)
    with pytest.raises(TaskNotFound):
        await backend.record(UNKNOWN)


async def test_listed_task_whose_record_404s_is_pending(
    emulator: EmulatorClient, backend: GreenCloudBackend
) -> None:
    task = emulator.create_task("greencloud", [{"state": "issued"}])
    emulator.inject_fault("greencloud", "status", status=404, task_id=task, body={"error": "gone"})
    event = await backend.status(task)
    assert (event.state, event.snapshot.record) == (TaskState.PENDING, None)


async def test_unlisted_task_is_read_from_its_record(
    emulator: EmulatorClient, backend: GreenCloudBackend
) -> None:
    task = emulator.create_task("greencloud", [{"state": "assigned", "progress": 40}])
    emulator.inject_fault("greencloud", "malformed", path_contains="/list", body=[])
    event = await backend.status(task)
    assert (event.state, event.progress) == (TaskState.RUNNING, 40.0)


async def test_finished_but_unlisted_waits_for_the_list(
    emulator: EmulatorClient, backend: GreenCloudBackend
) -> None:
    task = emulator.create_task("greencloud", [{"state": "finished", "status": 502}])
    emulator.inject_fault("greencloud", "malformed", path_contains="/list", body=[], count=2)
    final = await wait(backend.observe(task), timeout=10)
    assert (final.state, final.native_status) == (TaskState.FAILED, "502")
    assert routes(emulator)[LIST] == 3


async def test_result_before_finishing_is_not_found(
    emulator: EmulatorClient, backend: GreenCloudBackend
) -> None:
    task = emulator.create_task("greencloud", [{"state": "assigned"}])
    with pytest.raises(TaskNotFound, match="not finished"):
        await backend.result(task)


async def test_submit_to_missing_function(backend: GreenCloudBackend) -> None:
    with pytest.raises(TaskNotFound, match="no function"):
        await backend.submit(MISSING_FUNCTION)


async def test_reads_outside_polling_are_retried(
    emulator: EmulatorClient, backend: GreenCloudBackend
) -> None:
    task = await backend.submit(FUNCTION, body={"x": 1})
    emulator.inject_fault("greencloud", "status", status=503, path_contains="/v1/task/" + task)
    emulator.inject_fault("greencloud", "reset", path_contains="/v1/task/" + task)
    record = await backend.record(task)
    assert record.functionId == FUNCTION
    assert not emulator.faults(), "both faults were met, then the read went through"


async def test_submit_is_not_retried(emulator: EmulatorClient, backend: GreenCloudBackend) -> None:
    emulator.inject_fault("greencloud", "status", status=503, path_contains="/v1/task/")
    with pytest.raises(BackendUnavailable, match="not retried") as info:
        await backend.submit(FUNCTION, body={"x": 1})
    assert "503" in str(info.value)
    assert routes(emulator)["greencloud POST /v1/task/{id}"] == 1
    assert emulator.requests()["by_api"]["greencloud"] == 2  # the login and the one POST
    status = await backend.status(await backend.submit(FUNCTION))
    assert status.state is TaskState.PENDING


PHASED: list[dict[str, Any]] = [
    {"state": "issued", "progress": 0, "polls": 3},
    {"state": "assigned", "progress": 20, "polls": 2},
    {"state": "assigned", "progress": 50, "polls": 2},
    {"state": "assigned", "progress": 80, "polls": 2},
    {"state": "finished", "progress": 100, "status": 200},
]


@pytest.mark.parametrize("fault", transient_faults({"code": 502}, path_contains="/list"))
async def test_transient_list_faults_lose_and_duplicate_nothing(
    emulator: EmulatorClient, fault: dict[str, Any]
) -> None:
    policy = PollPolicy(interval=0.02, max_interval=0.1, request_timeout=0.3, jitter=0.0)
    task = emulator.create_task("greencloud", PHASED)
    async with GreenCloudBackend(
        emulator.api_url("greencloud"), api_key="k", policy=policy
    ) as backend:
        seen = []
        async for event in aiter(backend.observe(task)):
            seen.append((event.state, event.progress))
            if len(seen) == 2:  # a burst of faults in the middle of the lifecycle
                emulator.inject_fault("greencloud", **fault)
    assert seen == [(TaskState.PENDING, 0.0), (TaskState.RUNNING, 20.0),
                    (TaskState.RUNNING, 50.0), (TaskState.RUNNING, 80.0),
                    (TaskState.COMPLETED, 100.0)]
    assert not emulator.faults(), "every injected fault was met and retried"


@pytest.mark.parametrize("kind", ["status", "reset"])
async def test_transient_record_faults_lose_and_duplicate_nothing(
    emulator: EmulatorClient, kind: str
) -> None:
    policy = PollPolicy(interval=0.02, max_interval=0.1, request_timeout=0.3, jitter=0.0)
    task = emulator.create_task("greencloud", PHASED)
    emulator.inject_fault("greencloud", kind, status=503, count=2, task_id=task)
    async with GreenCloudBackend(
        emulator.api_url("greencloud"), api_key="k", policy=policy
    ) as backend:
        states = [(e.state, e.progress) async for e in aiter(backend.observe(task))]
    assert states[0] == (TaskState.PENDING, 0.0) and states[-1] == (TaskState.COMPLETED, 100.0)
    assert len(states) == len(set(states)), "no duplicated event"
    assert (TaskState.RUNNING, 80.0) in states
    assert not emulator.faults()


async def test_retry_after_is_honoured(
    emulator: EmulatorClient, backend: GreenCloudBackend
) -> None:
    task = emulator.create_task("greencloud", [{"state": "finished"}])
    emulator.inject_fault("greencloud", "rate_limit", retry_after=1, path_contains="/list")
    loop = asyncio.get_running_loop()
    started = loop.time()
    await wait(backend.observe(task), timeout=10)
    assert loop.time() - started >= 0.95
    assert routes(emulator)[LIST] == 2


async def test_malformed_answers_are_protocol_errors(
    emulator: EmulatorClient, backend: GreenCloudBackend
) -> None:
    task = emulator.create_task("greencloud", [{"state": "issued"}])
    emulator.inject_fault("greencloud", "malformed", path_contains="/list")
    with pytest.raises(ProtocolError, match="task list"):
        await wait(backend.observe(task), timeout=10)
    emulator.inject_fault("greencloud", "malformed", path_contains="/list",
                          body=[{"id": task, "issued": "1", "progress": 500, "status": 0}])
    with pytest.raises(ProtocolError):
        await wait(backend.observe(task), timeout=10)
    emulator.inject_fault("greencloud", "malformed", task_id=task, body={"issued": "1"})
    with pytest.raises(ProtocolError, match="GreenCloudRecord"):
        await wait(backend.observe(task), timeout=10)


async def test_retry_budget_exhausted(emulator: EmulatorClient) -> None:
    policy = PollPolicy(interval=0.01, max_interval=0.02, retry_budget=3)
    task = emulator.create_task("greencloud", [{"state": "issued"}])
    emulator.inject_fault("greencloud", "status", status=502, count=50, path_contains="/list")
    async with GreenCloudBackend(
        emulator.api_url("greencloud"), api_key="k", policy=policy
    ) as backend:
        with pytest.raises(BackendUnavailable, match="4 consecutive failed polls"):
            await wait(backend.observe(task), timeout=10)
    assert routes(emulator)[LIST] == 4


async def test_disposal_stops_requests(
    emulator: EmulatorClient, backend: GreenCloudBackend
) -> None:
    task = emulator.create_task("greencloud", [{"state": "assigned"}])
    sub = backend.observe(task).subscribe(lambda e: None)
    await asyncio.sleep(0.15)
    sub.dispose()
    count = routes(emulator)[LIST]
    assert count >= 3
    await asyncio.sleep(0.15)
    assert routes(emulator)[LIST] == count


async def test_seen_records_are_bounded() -> None:
    record = GreenCloudRecord(functionId=FUNCTION, issued="1", assigned="2")
    bound = 10_000  # the session's shared-read cache holds at most this many entries

    async def load() -> GreenCloudRecord:
        return record

    async with GreenCloudBackend("http://127.0.0.1:9", token="t", record_ttl=10.0) as backend:
        session = backend.session()
        for n in range(bound):
            await session.cached(("record", f"t{n}"), load, ttl=backend.record_ttl)
        assert session.peek(("record", "t0")) is record  # still asked about: kept
        for n in range(bound, bound + 2):
            await session.cached(("record", f"t{n}"), load, ttl=backend.record_ttl)
        assert cached_reads(backend) == bound
        assert session.peek(("record", "t1")) is None and session.peek(("record", "t2")) is None
        assert session.peek(("record", "t0")) is record
        session.forget(("record", "t0"))
        assert cached_reads(backend) == bound - 1


async def test_unwatched_tasks_are_forgotten(emulator: EmulatorClient) -> None:
    ids = emulator.create_tasks("greencloud", 5, [{"state": "assigned"}])
    async with GreenCloudBackend(  # a record kept 0.3 s: no longer watched, it is forgotten
        emulator.api_url("greencloud"), api_key="k", policy=FAST, record_ttl=0.3
    ) as backend:
        subs = [backend.observe(i).subscribe(lambda e: None) for i in ids]
        await asyncio.sleep(0.1)
        assert cached_reads(backend) == 5
        for sub in subs:
            sub.dispose()
        await asyncio.sleep(0.35)
        other = emulator.create_task("greencloud", [{"state": "finished"}])
        await wait(backend.observe(other), timeout=10)
        assert cached_reads(backend) == 0


def make_csv_tasks(emulator: EmulatorClient) -> dict[str, str]:
    done = [{"state": "finished", "status": 200, "result": "I am a storage Test!"}]
    return {
        "plain": emulator.create_task("greencloud", done, function_id=FUNCTION),
        "json": emulator.create_task(
            "greencloud", [{"state": "finished", "status": 500, "result": {"a": 1}}],
            function_id=FUNCTION, schedule_id=SCHEDULE),
        "running": emulator.create_task("greencloud", [{"state": "assigned"}],
                                        function_id=FUNCTION),
        "other": emulator.create_task("greencloud", done, function_id=OTHER_FUNCTION),
    }


async def test_tasks_csv(emulator: EmulatorClient, backend: GreenCloudBackend) -> None:
    made = make_csv_tasks(emulator)
    rows = await backend.tasks_csv(FUNCTION, show_plain=True)
    assert all(isinstance(r, GreenCloudCsvRow) for r in rows)
    by_id = {r.id: r for r in rows}
    assert set(by_id) == {made["plain"], made["json"]}
    plain = by_id[made["plain"]]
    assert (plain.status, plain.content_type, plain.body) == (200, "text/plain",
                                                              "I am a storage Test!")
    assert plain.issued_at.tzinfo is not None
    assert (by_id[made["json"]].status, by_id[made["json"]].body) == (500, '{"a": 1}')
    encoded = await backend.tasks_csv(FUNCTION)
    assert {r.body for r in encoded} == {"SSBhbSBhIHN0b3JhZ2UgVGVzdCE=", "eyJhIjogMX0="}
    scheduled = await backend.tasks_csv(FUNCTION, schedule_id=SCHEDULE, show_plain=True)
    assert [r.id for r in scheduled] == [made["json"]]
    today = plain.issued_at.date()
    assert len(await backend.tasks_csv(FUNCTION, date_since=today, date_until=today)) == 2
    assert await backend.tasks_csv(FUNCTION, date_until=date(2016, 1, 2)) == []
    assert await backend.tasks_csv(FUNCTION, date_since="2999-01-01") == []


async def test_tasks_csv_arguments_and_bad_answers(
    emulator: EmulatorClient, backend: GreenCloudBackend
) -> None:
    with pytest.raises(ValueError, match="date_since"):
        await backend.tasks_csv(FUNCTION, date_since="2025-24-03")
    with pytest.raises(InvalidTaskId):
        await backend.tasks_csv(FUNCTION, schedule_id="nope")
    with pytest.raises(InvalidTaskId):
        await backend.tasks_csv("nope")
    assert emulator.requests()["total"] == 0
    emulator.inject_fault("greencloud", "malformed", path_contains="/csv", body="ID,Status\nx,1")
    with pytest.raises(ProtocolError, match="columns"):
        await backend.tasks_csv(FUNCTION)
    emulator.inject_fault("greencloud", "malformed", path_contains="/csv",
                          body="ID,IssuedAt,Status,ContentType,Body\nx,yesterday,200,a,b")
    with pytest.raises(ProtocolError, match="line 2"):
        await backend.tasks_csv(FUNCTION)
    emulator.inject_fault("greencloud", "malformed", path_contains="/csv", body="")
    assert await backend.tasks_csv(FUNCTION) == []
