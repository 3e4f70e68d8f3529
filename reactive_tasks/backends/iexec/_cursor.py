"""What the logs rounds know of each task, kept so that an idle task costs a round nothing.

Per session (backend and loop, like the session): each task's last read (its snapshot, its
answers, the block its logs are accounted to), the reads in the order they fall due for
reconciliation, and the final deadlines ahead in a heap. A round's task list, with its
``eth_getLogs`` id filters and its answers in order, is kept as a ``Group`` while the rounds ask
for the same list: a round then costs the tasks that moved, fell due or reached their deadline,
plus copying one list.
"""

from __future__ import annotations

import heapq
import itertools
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..._session import Session
from ..._types import Answer
from .._base import TaskRef

if TYPE_CHECKING:
    from ._source import IExecTask

__all__ = ["IDS_PER_FILTER", "Group", "Known", "LogCursor", "cursor_of"]

#: How many task ids one ``eth_getLogs`` filter names (nodes cap a request's size).
IDS_PER_FILTER = 200


class Known:
    """The last read of one task, and the answers a round gives for it until the next."""

    __slots__ = ("block", "group", "keyed", "seen_at", "snapshot")

    def __init__(self, snapshot: IExecTask, block: int, now: float) -> None:
        self.snapshot = snapshot
        #: ``snapshot`` keyed by its change key: the hub reads nothing of it while that stands.
        self.keyed = _keyed(snapshot)
        self.block = block  # its logs up to here are accounted for (see ``accounted``)
        self.seen_at = now  # monotonic time a round last asked for it (see ``last_seen``)
        self.group: Group | None = None

    def accounted(self) -> int:
        """The block up to which this task's logs are accounted for: its own, or its group's
        when a round scanned the group since."""
        group = self.group
        return self.block if group is None or group.block < self.block else group.block

    def last_seen(self) -> float:
        """When a round last asked for this task (monotonic seconds)."""
        group = self.group
        return self.seen_at if group is None or group.seen_at < self.seen_at else group.seen_at


def _keyed(snapshot: IExecTask) -> Answer[IExecTask]:
    return Answer.built((snapshot.status, snapshot.statusName), snapshot)


class Group:
    """One round's task list as the rounds keep asking for it: the ids to filter logs on (in
    chunks, built once), each task's answers in the list's order, and the block up to which
    the logs of every member are accounted for."""

    __slots__ = (
        "block", "by_id", "extra", "filters", "fresh", "index", "keyed", "plain", "refs", "seen_at",
    )

    def __init__(self, refs: Sequence[TaskRef], known: dict[TaskRef, Known], now: float) -> None:
        self.refs = list(refs)
        self.index: dict[TaskRef, int] = {}
        self.extra: dict[TaskRef, list[int]] = {}  # the further places of a ref listed twice
        self.by_id: dict[str, list[TaskRef]] = {}
        self.plain: list[tuple[TaskRef, Any]] = []
        self.keyed: list[tuple[TaskRef, Any]] = []
        self.fresh: list[TaskRef] = []  # members never read: their round reads them
        self.seen_at = now
        lowest: int | None = None
        for i, ref in enumerate(self.refs):
            if self.index.setdefault(ref, i) != i:
                self.extra.setdefault(ref, []).append(i)
                self.plain.append((ref, None))
                self.keyed.append((ref, None))
                continue
            self.by_id.setdefault(ref.task_id, []).append(ref)
            entry = known.get(ref)
            if entry is None:  # never read: read this round, its answers set then
                self.fresh.append(ref)
                self.plain.append((ref, None))
                self.keyed.append((ref, None))
                continue
            entry.block = entry.accounted()
            entry.seen_at = entry.last_seen()
            entry.group = self
            lowest = entry.block if lowest is None or entry.block < lowest else lowest
            self.plain.append((ref, entry.snapshot))
            self.keyed.append((ref, entry.keyed))
        for ref, places in self.extra.items():
            first = self.index[ref]
            for i in places:
                self.plain[i], self.keyed[i] = self.plain[first], self.keyed[first]
        #: Every member's logs are accounted for up to here (-1: no member read yet).
        self.block = -1 if lowest is None else lowest
        ids = sorted(self.by_id)
        self.filters = [ids[i : i + IDS_PER_FILTER] for i in range(0, len(ids), IDS_PER_FILTER)]

    def places(self, ref: TaskRef) -> list[int]:
        """Where ``ref`` stands in the list (mostly once)."""
        first = self.index.get(ref)
        if first is None:
            return []
        extra = self.extra.get(ref)
        return [first] if extra is None else [first, *extra]

    def put(self, ref: TaskRef, entry: Known) -> None:
        """Answer ``ref`` with ``entry`` from now on."""
        for i in self.places(ref):
            self.plain[i] = (ref, entry.snapshot)
            self.keyed[i] = (ref, entry.keyed)


class LogCursor:
    """What each task read through one session was, and up to which block."""

    def __init__(self) -> None:
        from ._source import changes_at  # the module that imports this one

        self._changes_at = changes_at
        self.known: dict[TaskRef, Known] = {}
        #: The current round list's group, while rounds keep asking for the same list.
        self.group: Group | None = None
        self._reads: OrderedDict[TaskRef, float] = OrderedDict()  # oldest read first
        self._deadlines: list[tuple[int, int, TaskRef]] = []  # heap: (unix time, tie, ref)
        self._queued: dict[TaskRef, int] = {}  # the live heap entry of each ref
        self._ties = itertools.count()
        self._next_sweep = 0.0

    def group_for(self, refs: Sequence[TaskRef], now: float) -> Group:
        """The group of ``refs``: the current one if it lists the same refs (compared by
        identity first: the hub hands the same ref objects round after round), else a new one."""
        old = self.group
        if old is not None and old.refs == refs:
            old.seen_at = now
            return old
        group = self.group = Group(refs, self.known, now)
        if old is not None:  # those that left keep what the old group knew, not the group
            for ref in old.index:
                entry = self.known.get(ref)
                if entry is not None and entry.group is old:
                    entry.block, entry.seen_at = entry.accounted(), entry.last_seen()
                    entry.group = None
        return group

    def note(self, ref: TaskRef, snapshot: IExecTask, block: int, now: float) -> None:
        """Remember a fresh read of ``ref``, accounting for its logs up to ``block``."""
        entry = self.known.get(ref)
        if entry is not None:
            block = max(block, entry.accounted())
        new = self.known[ref] = Known(snapshot, block, now)
        group = self.group
        if group is not None and ref in group.index:
            new.group = group
            group.put(ref, new)
        self._reads[ref] = now
        self._reads.move_to_end(ref)
        self._watch_deadline(ref, snapshot)

    def due(self, now: float, every: float, group: Group) -> list[TaskRef]:
        """The members of ``group`` whose last read is ``every`` seconds old or more."""
        found: list[TaskRef] = []
        for ref, read_at in self._reads.items():
            if now - read_at < every:
                break
            if ref in group.index:
                found.append(ref)
        return found

    def expire(
        self, wall: int, at_time: Callable[[IExecTask, int], IExecTask]
    ) -> list[TaskRef]:
        """Answer each task whose final deadline passed by unix time ``wall`` as a read at
        ``wall`` would (TIMEOUT): only those tasks are looked at. The tasks whose answer moved."""
        moved: list[TaskRef] = []
        heap, queued = self._deadlines, self._queued
        while heap and heap[0][0] <= wall:
            deadline, _, ref = heapq.heappop(heap)
            if queued.get(ref) != deadline:
                continue  # read again since, with another deadline or none
            del queued[ref]
            entry = self.known.get(ref)
            if entry is None:
                continue
            snapshot = at_time(entry.snapshot, wall)
            if snapshot is entry.snapshot:
                continue
            entry.snapshot, entry.keyed = snapshot, _keyed(snapshot)
            if entry.group is not None:
                entry.group.put(ref, entry)
            self._watch_deadline(ref, snapshot)
            moved.append(ref)
        return moved

    def _watch_deadline(self, ref: TaskRef, snapshot: IExecTask) -> None:
        deadline = self._changes_at(snapshot)
        if deadline is None:
            self._queued.pop(ref, None)
        elif self._queued.get(ref) != deadline:
            self._queued[ref] = deadline
            heapq.heappush(self._deadlines, (deadline, next(self._ties), ref))

    def sweep(self, now: float, keep_for: float) -> None:
        """Forget tasks nobody asked about for ``keep_for`` seconds (their watch ended)."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + keep_for / 2
        gone = [r for r, k in self.known.items() if now - k.last_seen() > keep_for]
        group = self.group
        for ref in gone:
            del self.known[ref]
            self._reads.pop(ref, None)
            self._queued.pop(ref, None)
            if group is not None and ref in group.index:
                self.group = None
        if len(self._deadlines) > 2 * len(self._queued) + 64:  # drop stale heap entries
            self._deadlines = [e for e in self._deadlines if self._queued.get(e[2]) == e[0]]
            heapq.heapify(self._deadlines)


_cursors: weakref.WeakKeyDictionary[Session, LogCursor] = weakref.WeakKeyDictionary()


def cursor_of(session: Session) -> LogCursor:
    """The log cursor of ``session``, made on first use and gone with it."""
    cursor = _cursors.get(session)
    if cursor is None:
        cursor = _cursors[session] = LogCursor()
    return cursor
