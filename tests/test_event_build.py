"""The events the hub builds: made without a second validation when every field is already what
the model admits, validated (coerced or refused) otherwise, and alike either way."""

from __future__ import annotations

import copy
import math
import pickle
from typing import Any

import pytest
from memory_backend import MemoryBackend

from reactive_tasks import PollPolicy, ProtocolError, TaskEvent, TaskState, wait
from reactive_tasks._hub import _make_event
from reactive_tasks.backends import Reading, TaskRef

FAST = PollPolicy(interval=0.01, max_interval=0.04, jitter=0.0)


class _Named:
    name = "memory"


def _validated(event: TaskEvent[Any]) -> TaskEvent[Any]:
    """The same fields through the model's own validation."""
    return TaskEvent[Any](**{name: getattr(event, name) for name in TaskEvent.model_fields})


@pytest.mark.parametrize(
    "reading",
    [
        Reading(TaskState.RUNNING, "running", 12.5, "half way"),
        Reading(TaskState.PENDING, "queued"),
        Reading(TaskState.COMPLETED, "done", 100.0, None),
        Reading(TaskState.FAILED, "failed", 0.0, "boom"),
    ],
)
def test_an_unchecked_event_is_the_validated_one(reading: Reading) -> None:
    event = _make_event(_Named(), TaskRef("t1"), {"raw": [1]}, reading, 3, "push")
    twin = _validated(event)
    assert event == twin
    assert event.model_dump() == twin.model_dump()
    assert event.model_dump_json() == twin.model_dump_json()
    assert event.model_fields_set == twin.model_fields_set
    assert event.kind is reading.state.event_kind and event.via == "push"
    assert pickle.loads(pickle.dumps(event)) == event
    assert copy.deepcopy(event) == event
    assert event.model_copy(update={"sequence": 4}).sequence == 4
    with pytest.raises(ValueError, match="frozen"):
        event.sequence = 9  # type: ignore[misc]


def test_a_reading_the_model_would_coerce_is_validated() -> None:
    state = TaskState.RUNNING
    event = _make_event(_Named(), TaskRef("t1"), None, Reading(state, "running", 50), 0)  # int
    assert type(event.progress) is float and event.progress == 50.0
    assert event == _validated(event)


@pytest.mark.parametrize("progress", [150.0, -1.0, math.nan, "half"])
async def test_a_reading_out_of_the_models_range_fails_its_watch(progress: Any) -> None:
    backend = MemoryBackend(policy=FAST)
    backend.script("t1", (TaskState.RUNNING, progress))
    try:
        with pytest.raises(ProtocolError, match="does not validate") as info:
            await wait(backend.observe("t1"), timeout=5)
        assert "progress" in str(info.value.__cause__)
    finally:
        await backend.aclose()
