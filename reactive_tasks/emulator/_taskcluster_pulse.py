"""What the Taskcluster queue publishes on Pulse, produced from the emulator's scripted tasks.

Every task created and every step a task moves to (by a poll or by the clock) is compared with
what was last published for it; each run that reached a new state gives one message on its
exchange (task-pending, task-running, task-completed, task-failed, task-exception, with
artifact-created before a resolution), a new task first gives task-defined, and the last task of
a group to resolve gives task-group-resolved. Bodies carry the same status structure the queue's
status endpoint serves. Each change is also logged with the instant the task changed.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from ._api import ApiContext
from ._pulse import ACTIONS, Outgoing, PulsePublisher
from ._state import ScriptedTask
from .taskcluster import artifact_entry, artifacts_of, status_of

__all__ = ["EXCHANGES", "EXCHANGE_PREFIX", "MAX_CHANGES", "TaskclusterPulse"]

EXCHANGE_PREFIX = "exchange/taskcluster-queue/v1/"
EXCHANGES = (
    "task-defined", "task-pending", "task-running", "artifact-created", "task-completed",
    "task-failed", "task-exception", "task-group-resolved",
)
#: The change log keeps the newest entries only.
MAX_CHANGES = 1_000_000
_RESOLVED = frozenset({"completed", "failed", "exception"})
_EXCHANGE_OF = {
    "pending": "task-pending", "running": "task-running", "completed": "task-completed",
    "failed": "task-failed", "exception": "task-exception",
}


def _word(value: Any) -> str:
    """A routing-key word: `_` for a field without a value."""
    return "_" if value is None or value == "" else str(value)


def task_routing_key(status: Mapping[str, Any], run: Mapping[str, Any] | None) -> str:
    """primary.<taskId>.<runId>.<workerGroup>.<workerId>.<provisioner>.<type>.<sched>.<group>._"""
    run = run or {}
    words = (
        status["taskId"], run.get("runId"), run.get("workerGroup"), run.get("workerId"),
        status["provisionerId"], status["workerType"], status["schedulerId"],
        status["taskGroupId"], None,
    )
    return "primary." + ".".join(_word(w) for w in words)


class _Tracked:
    """What was last published for one task."""

    __slots__ = ("group", "resolved", "runs", "task")

    def __init__(self, task: ScriptedTask, group: str) -> None:
        self.task = task
        self.group = group
        self.runs: list[str] = []
        self.resolved = False


class TaskclusterPulse:
    """Publishes the Taskcluster emulator's task changes and advances its tasks on a clock."""

    def __init__(self, ctx: ApiContext, publisher: PulsePublisher) -> None:
        self.publisher = publisher
        self._ctx = ctx
        self._lock = threading.Lock()
        self._busy = threading.local()
        self._tracked: dict[str, _Tracked] = {}
        self._unresolved: Counter[str] = Counter()
        self._changes: list[dict[str, Any]] = []
        self._seq = 0
        ctx.tasks.listener = self.on_change

    def on_change(self, task: ScriptedTask) -> None:
        """Publish what changed for `task` since last time, and arm its clock."""
        if getattr(self._busy, "active", False):
            return  # a read made while building the status below: that status includes it
        self._busy.active = True
        try:
            with self._lock:
                self._update(task)
        finally:
            self._busy.active = False

    def _update(self, task: ScriptedTask) -> None:
        tracked = self._tracked.get(task.id)
        if self._ctx.tasks.get(task.id) is not task:
            return  # replaced or reset since: its clock fired late
        if tracked is not None and tracked.task is not task:
            self._forget(tracked)
            tracked = None
        view = task.peek()
        status = status_of(task, view, time.time())
        tags = {"tags": dict(task.extra.get("tags", {}))}
        cc = tuple(f"route.{r}" for r in task.extra.get("routes", []))
        if tracked is None:
            tracked = _Tracked(task, status["taskGroupId"])
            self._tracked[task.id] = tracked
            self._unresolved[tracked.group] += 1
            defined = {**status, "state": "unscheduled", "runs": []}
            self._emit("task-defined", task_routing_key(defined, None),
                       {"version": 1, "status": defined, "task": tags}, cc, task.id, task.created)
        for run in status["runs"]:
            run_id = run["runId"]
            before = tracked.runs[run_id] if run_id < len(tracked.runs) else None
            if run["state"] != before:
                self._run_changed(task, status, run, tags, cc, view.entered)
        tracked.runs = [r["state"] for r in status["runs"]]
        self._resolution(tracked, status, view.entered)
        due = task.due()
        if due is not None:
            self.publisher.schedule(task.id, due, lambda: self._tick(task))

    def _run_changed(
        self, task: ScriptedTask, status: dict[str, Any], run: Mapping[str, Any],
        tags: dict[str, Any], cc: tuple[str, ...], at: float,
    ) -> None:
        state = run["state"]
        body: dict[str, Any] = {"version": 1, "status": status, "runId": run["runId"]}
        if state != "pending":
            worker = {k: run[k] for k in ("workerGroup", "workerId") if k in run}
            if state in _RESOLVED and worker:
                for artifact in artifacts_of(task, run["runId"]):
                    self._emit("artifact-created", task_routing_key(status, run),
                               {**body, **worker, "artifact": artifact_entry(task, artifact)},
                               cc, task.id, at, state="artifact")
            body.update(worker)
            if state == "running":
                body["takenUntil"] = run["takenUntil"]
        body["task"] = tags
        key_run = {"runId": run["runId"]} if state == "pending" else run
        self._emit(_EXCHANGE_OF[state], task_routing_key(status, key_run), body, cc, task.id, at,
                   state=state)

    def _resolution(self, tracked: _Tracked, status: dict[str, Any], at: float) -> None:
        resolved = status["state"] in _RESOLVED
        if resolved == tracked.resolved:
            return
        tracked.resolved = resolved
        group = tracked.group
        self._unresolved[group] += -1 if resolved else 1
        if resolved and self._unresolved[group] == 0:
            del self._unresolved[group]
            scheduler = status["schedulerId"]
            body = {
                "version": 1, "taskGroupId": group, "schedulerId": scheduler,
                "expires": status["expires"],
            }
            self._emit("task-group-resolved", f"primary.{group}.{_word(scheduler)}._", body,
                       (), None, at, group=group)

    def _emit(
        self, kind: str, key: str, body: dict[str, Any], cc: tuple[str, ...],
        task_id: str | None, at: float, *, state: str | None = None, group: str | None = None,
    ) -> None:
        self._seq += 1
        entry: dict[str, Any] = {"seq": self._seq, "at": at, "exchange": kind}
        if task_id is not None:
            entry["taskId"] = task_id
            entry["runId"] = body.get("runId")
            entry["state"] = state or body["status"]["state"]
        if group is not None:
            entry["taskGroupId"] = group
        self._changes.append(entry)
        if len(self._changes) > MAX_CHANGES:
            del self._changes[: len(self._changes) - MAX_CHANGES]
        self.publisher.publish(Outgoing(EXCHANGE_PREFIX + kind, key, body, cc, kind, task_id, at))

    def _tick(self, task: ScriptedTask) -> None:
        """The clock: a time-based step of `task` ends now."""
        task.peek()
        self.on_change(task)

    def _forget(self, tracked: _Tracked) -> None:
        del self._tracked[tracked.task.id]
        if not tracked.resolved:
            self._unresolved[tracked.group] -= 1
            if self._unresolved[tracked.group] <= 0:
                del self._unresolved[tracked.group]

    def control(
        self, action: str, count: int = 1, *, exchange: str | None = None,
        task_id: str | None = None,
    ) -> dict[str, Any]:
        """Drop, duplicate or reorder the next `count` messages (of one exchange, of one task).

        Raises ValueError for an unknown action or exchange (short name or full).
        """
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}: use one of {', '.join(ACTIONS)}")
        kind = exchange.removeprefix(EXCHANGE_PREFIX) if exchange is not None else None
        if kind is not None and kind not in EXCHANGES:
            raise ValueError(f"unknown exchange {exchange!r}: use one of {', '.join(EXCHANGES)}")
        return self.publisher.control(action, count, kind=kind, task_id=task_id).describe()

    def changes(self, since: int = 0) -> list[dict[str, Any]]:
        """The change log after sequence number `since`: seq, at (unix time), exchange, ids."""
        with self._lock:
            if not self._changes or since >= self._seq:
                return []
            first = self._changes[0]["seq"]
            return self._changes[max(0, since + 1 - first):]

    def reset(self) -> None:
        """Forget every task, the log, pending controls and timers (the tasks are gone)."""
        with self._lock:
            self._tracked.clear()
            self._unresolved.clear()
            self._changes.clear()
            self._seq = 0
        self.publisher.reset()

    def close(self) -> None:
        """Stop publishing and stop the clock."""
        if self._ctx.tasks.listener == self.on_change:
            self._ctx.tasks.listener = None
        self.publisher.close()
