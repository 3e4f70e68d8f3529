"""reactive_tasks.web over real HTTP: the SSE wire format, Last-Event-ID resume, disconnects."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import reactivex
from web_helpers import Frame, frames, stream_app

from reactive_tasks import PollPolicy, TaskEvent, TaskState
from reactive_tasks.backends import CloudCoinBackend
from reactive_tasks.compose import merge_tasks
from reactive_tasks.emulator import EmulatorClient, EmulatorServer

FAST = PollPolicy(interval=0.05, max_interval=0.1, jitter=0.0, request_timeout=2.0)
TOKEN = "3f2c1e0a-9b8d-4c7e-a6f5-1d2e3f4a5b6c"
ENTRY = re.compile(r"[A-Za-z0-9_-]{6}\.[0-9a-z]+\.[0-9a-z]+\.[A-Za-z0-9_-]{6}")


def coin(*states: tuple[str, int, float]) -> list[dict[str, Any]]:
    return [{"status": s, "progress": p, "message": f"at {p}", "seconds": t} for s, p, t in states]


async def collect(url: str, last_event_id: str | None = None, *, stop_after: int | None = None,
                  ) -> list[Frame]:
    """Every frame until the stream ends (or ``stop_after`` task events, then hang up)."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    got: list[Frame] = []
    async with httpx.AsyncClient(timeout=20) as client, client.stream(
        "GET", url, headers=headers
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        async for frame in frames(response):
            got.append(frame)
            tasks = [f for f in got if f.event.startswith("TASK_")]
            if stop_after is not None and len(tasks) >= stop_after:
                break
    return got


def task_frames(got: list[Frame]) -> list[Frame]:
    return [f for f in got if f.event.startswith("TASK_")]


async def test_wire_format_of_one_task(emulator: EmulatorClient) -> None:
    task = emulator.create_task("cloudcoin", coin(("running", 40, 0.3), ("completed", 100, 0)))
    backend = CloudCoinBackend(emulator.api_url("cloudcoin"), policy=FAST)
    with EmulatorServer(app=stream_app(lambda: backend.observe(task))) as web:
        got = await collect(web.url + "/events")
    assert got[0].retry == 1000  # browsers come back within a second after a restart
    events = task_frames(got)
    assert [f.event for f in events] == ["TASK_UPDATED", "TASK_COMPLETED"]
    first = events[0].json
    assert first == {
        "key": first["key"], "backend": "cloudcoin", "task_id": task, "kind": "TASK_UPDATED",
        "state": "RUNNING", "native_status": "running", "progress": 40.0, "message": "at 40",
        "observed_at": first["observed_at"], "sequence": 0, "terminal": False,
    }  # no snapshot: the raw API answer never reaches the browser
    assert datetime.fromisoformat(first["observed_at"]).tzinfo is not None
    assert events[1].json["state"] == "COMPLETED" and events[1].json["terminal"] is True
    for frame in events:
        assert frame.id is not None and ENTRY.fullmatch(frame.id)
        assert frame.id.split(".")[0] == first["key"]
    assert got[-1].event == "complete" and got[-1].json == {} and got[-1].id is None
    assert got[-1] is not events[-1]


async def test_error_frame_is_typed_and_secret_free(emulator_server: EmulatorServer) -> None:
    emulator = EmulatorClient(emulator_server.url)
    emulator.reset()
    backend = CloudCoinBackend(emulator.api_url("cloudcoin"), policy=FAST)
    missing = "bdc8e99d-dd8a-40e9-8840-f9f8eef16c71"
    with EmulatorServer(app=stream_app(lambda: backend.observe(missing))) as web:
        got = await collect(web.url + "/events")
    assert task_frames(got) == []
    assert got[-1].event == "error"
    assert got[-1].json["error"] == "TaskNotFound"
    assert "cloudcoin" in got[-1].json["message"]


async def test_other_exceptions_send_only_their_class_name() -> None:
    boom = reactivex.throw(RuntimeError(f"password={TOKEN}"))
    with EmulatorServer(app=stream_app(lambda: boom)) as web:
        got = await collect(web.url + "/events")
    assert got[-1].event == "error"
    assert got[-1].json == {"error": "RuntimeError", "message": "internal error"}


def made(backend: str, task_id: str, seq: int, state: TaskState, pct: float) -> TaskEvent[None]:
    at = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=seq)
    return TaskEvent[None](
        backend=backend, task_id=task_id, kind=state.event_kind, state=state,
        native_status=state.value.lower(), progress=pct, message=None, observed_at=at,
        sequence=seq, snapshot=None,
    )


async def test_aparavi_tokens_show_shortened_and_keys_hide_them() -> None:
    events = [made("aparavi", TOKEN, 0, TaskState.RUNNING, 5.0)]
    with EmulatorServer(app=stream_app(lambda: reactivex.from_iterable(events))) as web:
        got = await collect(web.url + "/events")
    body = "".join(f"{f.id}{f.data}" for f in got)
    assert TOKEN[:9] not in body and TOKEN[-12:] not in body
    assert task_frames(got)[0].json["task_id"] == TOKEN[:8] + "…"


async def test_last_event_id_skips_what_a_merged_stream_already_sent() -> None:
    # A relay-like stream that replays history: both tasks' events 0..3, interleaved.
    history = [
        made(b, t, seq, TaskState.RUNNING if seq < 3 else TaskState.COMPLETED, 25.0 * (seq + 1))
        for seq in range(4) for b, t in (("cloudcoin", "a"), ("taskcluster", "b"))
    ]
    with EmulatorServer(app=stream_app(lambda: reactivex.from_iterable(history))) as web:
        url = web.url + "/events"
        first = await collect(url, stop_after=3)  # a0 b0 a1, then the browser drops
        seen = [(f.json["task_id"], f.json["sequence"]) for f in task_frames(first)]
        assert seen == [("a", 0), ("b", 0), ("a", 1)]
        again = await collect(url, task_frames(first)[-1].id)
        rest = [(f.json["task_id"], f.json["sequence"]) for f in task_frames(again)]
        assert rest == [("b", 1), ("a", 2), ("b", 2), ("a", 3), ("b", 3)]
        assert again[-1].event == "complete"
        # a damaged or foreign id resumes nothing: everything is sent
        fresh = await collect(url, "not-ours,xyz")
        assert len(task_frames(fresh)) == 8


async def test_reconnect_after_the_poll_stopped_sends_only_news(emulator: EmulatorClient) -> None:
    """The reader leaves, so the poll stops; on reconnect a new observation starts at sequence 0
    with what the page already shows: that event is not sent again, the completions are."""
    script = coin(("running", 30, 1.5), ("completed", 100, 0))
    a, b = (emulator.create_task("cloudcoin", script) for _ in range(2))
    backend = CloudCoinBackend(emulator.api_url("cloudcoin"), policy=FAST)
    app = stream_app(lambda: merge_tasks(backend.observe(a), backend.observe(b)))
    with EmulatorServer(app=app) as web:
        first = await collect(web.url + "/events", stop_after=2)
        assert {f.json["state"] for f in task_frames(first)} == {"RUNNING"}
        again = await collect(web.url + "/events", task_frames(first)[-1].id)
    news = task_frames(again)
    assert sorted((f.json["task_id"], f.json["state"]) for f in news) == sorted(
        [(a, "COMPLETED"), (b, "COMPLETED")]
    )
    assert all(f.json["sequence"] >= 1 for f in news)
    assert again[-1].event == "complete"


async def test_heartbeats_while_nothing_changes(emulator: EmulatorClient) -> None:
    task = emulator.create_task("cloudcoin", coin(("running", 10, 0.8), ("completed", 100, 0)))
    backend = CloudCoinBackend(emulator.api_url("cloudcoin"), policy=FAST)
    with EmulatorServer(app=stream_app(lambda: backend.observe(task), heartbeat=0.1)) as web:
        got = await collect(web.url + "/events")
    assert any(f.comments == ["heartbeat"] and f.data == "" for f in got)
    assert [f.event for f in task_frames(got)] == ["TASK_UPDATED", "TASK_COMPLETED"]


async def test_a_client_that_leaves_stops_the_polls(emulator: EmulatorClient) -> None:
    task = emulator.create_task("cloudcoin", coin(("running", 10, 60), ("completed", 100, 0)))
    backend = CloudCoinBackend(emulator.api_url("cloudcoin"), policy=FAST)
    with EmulatorServer(app=stream_app(lambda: backend.observe(task), heartbeat=60)) as web:
        await collect(web.url + "/events", stop_after=1)  # then the client hangs up
        # The disconnect reaches the server without any write (heartbeats are a minute apart).
        for _ in range(100):
            before = emulator.requests()["by_task"].get(task, 0)
            await asyncio.sleep(0.3)  # six poll intervals
            if emulator.requests()["by_task"].get(task, 0) == before:
                break
        else:
            pytest.fail("polls went on after the only reader left")
        await asyncio.sleep(0.5)
        assert emulator.requests()["by_task"].get(task, 0) == before


def test_heartbeat_must_be_positive() -> None:
    from reactive_tasks.web import sse_response

    with pytest.raises(ValueError):
        sse_response(reactivex.empty(), heartbeat=0)


async def test_events_from_another_thread_reach_the_client() -> None:
    """A stream whose events come from a thread of its own (like the engine's background loop)."""
    import threading

    events = [made("cloudcoin", "t", s, TaskState.RUNNING, 10.0 * s) for s in range(5)]

    def produce(observer: Any, _: Any) -> Any:
        def run() -> None:
            for event in events:
                observer.on_next(event)
            observer.on_completed()

        threading.Thread(target=run, daemon=True).start()
        return None

    with EmulatorServer(app=stream_app(lambda: reactivex.create(produce))) as web:
        got = await collect(web.url + "/events")
    assert [f.json["sequence"] for f in task_frames(got)] == [0, 1, 2, 3, 4]
    assert got[-1].event == "complete"


async def test_ids_stay_small_and_name_the_most_recent_tasks() -> None:
    """With more tasks than an id names, a reconnect sends again the latest event of the least
    recently sent ones only; the Last-Event-ID header stays far below servers' header limits."""
    from reactive_tasks.web._wire import MAP_LIMIT

    count = MAP_LIMIT + 16
    history = [made("cloudcoin", f"t{i:03}", 0, TaskState.RUNNING, 10.0) for i in range(count)]
    with EmulatorServer(app=stream_app(lambda: reactivex.from_iterable(history))) as web:
        first = await collect(web.url + "/events")
        last_id = task_frames(first)[-1].id
        assert last_id is not None and len(last_id) < 2048
        assert len(last_id.split(",")) == MAP_LIMIT
        again = await collect(web.url + "/events", last_id)
    resent = [f.json["task_id"] for f in task_frames(again)]
    assert resent == [f"t{i:03}" for i in range(16)]
