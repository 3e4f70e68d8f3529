"""Scripted tasks: each walks through a list of steps, moving on after N status reads or T seconds.

Shared by every emulated API; a step's fields are API-specific and opaque here.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "CompiledStep",
    "Listener",
    "ScriptedTask",
    "Step",
    "StepView",
    "StoreWatch",
    "TaskStore",
    "compile_steps",
    "step_to_json",
]


class Step(BaseModel):
    """One scripted state: API-specific fields (extra keys) plus how long it lasts.

    `polls` counts status reads served in this step, `seconds` is wall-clock time; with neither,
    a step lasts one poll. The last step of a script lasts forever.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    polls: int | None = Field(default=None, ge=1)
    seconds: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _one_duration(self) -> Step:
        if self.polls is not None and self.seconds is not None:
            raise ValueError("a step lasts either `polls` or `seconds`, not both")
        return self

    @property
    def fields(self) -> dict[str, Any]:
        """The API-specific fields of this step (everything but the duration)."""
        return dict(self.model_extra or {})


def step_to_json(step: Step | Mapping[str, Any]) -> dict[str, Any]:
    """A step as the control API's JSON object (fields plus `polls`/`seconds` when set)."""
    if isinstance(step, Mapping):
        return dict(step)
    out = step.fields
    if step.polls is not None:
        out["polls"] = step.polls
    if step.seconds is not None:
        out["seconds"] = step.seconds
    return out


@dataclass(frozen=True, slots=True)
class CompiledStep:
    """An immutable, validated step, shareable between many tasks (bulk creation)."""

    fields: Mapping[str, Any]
    polls: int | None
    seconds: float | None


def compile_steps(steps: Sequence[Step | Mapping[str, Any]]) -> tuple[CompiledStep, ...]:
    """Validate steps (raises ValueError / pydantic.ValidationError) into their compiled form."""
    if not steps:
        raise ValueError("a script needs at least one step")
    out: list[CompiledStep] = []
    for raw in steps:
        step = raw if isinstance(raw, Step) else Step.model_validate(raw)
        polls = step.polls
        if polls is None and step.seconds is None:
            polls = 1
        out.append(CompiledStep(fields=step.fields, polls=polls, seconds=step.seconds))
    return tuple(out)


class StepView(NamedTuple):
    """What a read of a task returns: the current step and when it was entered (unix time)."""

    step: int
    fields: Mapping[str, Any]
    last: bool
    entered: float


Listener = Callable[["ScriptedTask"], None]
"""Told of a task created or moved to another step (called outside the store's lock)."""


class ScriptedTask:
    """A task that advances through its script; `read()` is O(1) amortized."""

    __slots__ = (
        "_created_mono",
        "_entered",
        "_index",
        "_listener",
        "_lock",
        "_polls",
        "created",
        "extra",
        "id",
        "memo",
        "steps",
    )

    def __init__(
        self,
        task_id: str,
        steps: tuple[CompiledStep, ...],
        extra: Mapping[str, Any] | None = None,
        lock: threading.Lock | None = None,
        listener: Listener | None = None,
    ) -> None:
        self.id = task_id
        self.steps = steps
        self.extra: dict[str, Any] = dict(extra or {})  # creation-time, API-specific fields
        self.memo: dict[str, Any] = {}  # runtime scratch owned by the API module
        self.created = time.time()
        self._created_mono = time.monotonic()
        self._entered = self._created_mono
        self._index = 0
        self._polls = 0
        self._lock = lock or threading.Lock()
        self._listener = listener

    def read(self, advance: bool = True) -> StepView:
        """The current step; with `advance`, this read counts as one poll of a `polls` step."""
        now = time.monotonic()
        steps = self.steps
        last = len(steps) - 1
        with self._lock:
            i = before = self._index
            while i < last:
                seconds = steps[i].seconds
                if seconds is None or now - self._entered < seconds:
                    break
                self._entered += seconds
                self._polls = 0
                i += 1
            self._index = i
            view = StepView(
                i, steps[i].fields, i == last, self.created + (self._entered - self._created_mono)
            )
            polls = steps[i].polls
            if advance and i < last and polls is not None:
                self._polls += 1
                if self._polls >= polls:
                    self._index = i + 1
                    self._polls = 0
                    self._entered = now
            moved = self._index != before
        if moved and self._listener is not None:
            self._listener(self)
        return view

    def peek(self) -> StepView:
        """The current step without counting a poll."""
        return self.read(advance=False)

    def due(self) -> float | None:
        """When (``time.monotonic()``) the current step ends by itself; None if it never does.

        A `polls` step and the last step never end by themselves; a `seconds` step's end may
        already be past when nothing has read the task since.
        """
        with self._lock:
            i = self._index
            seconds = self.steps[i].seconds
            if i == len(self.steps) - 1 or seconds is None:
                return None
            return self._entered + seconds


class TaskStore:
    """The scripted tasks of one API, by id; thread-safe, O(1) lookups."""

    def __init__(self) -> None:
        self._tasks: dict[str, ScriptedTask] = {}
        self._lock = threading.Lock()
        #: How many times the store was cleared (a watcher's cue to look at every task again).
        self.generation = 0
        #: Told of every task created and every step change (the Pulse publisher sets it).
        self.listener: Listener | None = None

    def add(
        self,
        task_id: str,
        steps: tuple[CompiledStep, ...],
        extra: Mapping[str, Any] | None = None,
    ) -> ScriptedTask:
        """Create (or replace, restarting its script) the task `task_id`."""
        task = ScriptedTask(task_id, steps, extra, self._lock, self.listener)
        with self._lock:
            self._tasks[task_id] = task
        if self.listener is not None:
            self.listener(task)
        return task

    def get(self, task_id: str) -> ScriptedTask | None:
        """The task, or None when unknown."""
        return self._tasks.get(task_id)

    def tasks(self) -> list[ScriptedTask]:
        """A snapshot of all tasks in creation order (for list endpoints)."""
        with self._lock:
            return list(self._tasks.values())

    def clear(self) -> None:
        """Forget every task."""
        with self._lock:
            self._tasks.clear()
            self.generation += 1

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[ScriptedTask]:
        return iter(self.tasks())


class StoreWatch:
    """Which tasks of a store may have moved since the last ask, without looking at the others:
    those created or moved since (the store's listener), and those whose `seconds` step ran out
    (a heap of due times). A watcher's cost per ask follows what changed, not the store's size.
    Made before the store's tasks: a task tells the listener the store had when it was made.
    """

    def __init__(self, store: TaskStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._touched: dict[str, ScriptedTask] = {}
        self._due: list[tuple[float, int, ScriptedTask]] = []
        self._armed: dict[str, float] = {}  # task id -> the due time in the heap for it
        self._order = itertools.count()
        self._generation = -1  # the first ask sees every task
        self._peeking = threading.local()  # set while `changed` looks: what it sees is told
        previous = store.listener
        store.listener = self._moved if previous is None else _both(previous, self._moved)

    def _moved(self, task: ScriptedTask) -> None:
        if getattr(self._peeking, "on", False):
            return  # moved by `changed`'s own look, which returns what it saw
        with self._lock:
            self._touched[task.id] = task

    def changed(self) -> tuple[bool, list[tuple[ScriptedTask, StepView]]]:
        """(every, [(task, its step now)]): the tasks that may have moved since the last call,
        each once, their clocks armed; with ``every`` (the first call, or the store was cleared
        since) all the tasks."""
        now = time.monotonic()
        with self._lock:
            generation = self._store.generation
            every = generation != self._generation
            if every:
                self._generation = generation
                self._due.clear()
                self._armed.clear()
                self._touched.clear()
                tasks = self._store.tasks()
            else:
                touched = self._touched
                self._touched = {}
                while self._due and self._due[0][0] <= now:
                    when, _, task = heapq.heappop(self._due)
                    if self._armed.get(task.id) == when:
                        del self._armed[task.id]
                        touched.setdefault(task.id, task)
                store = self._store
                tasks = [t for t in touched.values() if store.get(t.id) is t]
        self._peeking.on = True
        try:
            out = [(task, task.peek()) for task in tasks]
        finally:
            self._peeking.on = False
        for task in tasks:
            self._arm(task)
        return every, out

    def _arm(self, task: ScriptedTask) -> None:
        """Remember when ``task``'s current step ends by itself (a `seconds` step)."""
        due = task.due()
        if due is None:
            return
        with self._lock:
            if self._armed.get(task.id) != due:
                self._armed[task.id] = due
                heapq.heappush(self._due, (due, next(self._order), task))


def _both(first: Listener, second: Listener) -> Listener:
    def tell(task: ScriptedTask) -> None:
        first(task)
        second(task)

    return tell
