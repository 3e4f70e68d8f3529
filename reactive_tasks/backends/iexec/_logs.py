"""Logs instead of per-task reads: each round asks the hub's event logs which watched tasks moved.

A round is one JSON-RPC batch: ``eth_blockNumber`` plus ``eth_getLogs`` over the hub for the
blocks since each task was last accounted for, filtered on the task events (topic 0) and the
watched ids (topic 1, an OR list, chunked). Only tasks with new or removed logs are read with
``viewTask``, as are tasks never read yet and those whose last read is ``reconcile_interval``
old; every other task is answered from its last read, its TIMEOUT computed at the current time
as a read would. Logs are a hint only: a doubt about them (an error, an odd entry) costs a read.
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from ..._session import Session
from ..._types import Answer, snapshot_of
from .._answers import slim_allowed
from .._base import TaskRef
from . import _abi as abi
from ._rpc import rpc_batch

if TYPE_CHECKING:
    from ._source import IExecBackend, IExecTask

__all__ = ["TASK_EVENTS", "LogCursor", "cursor_of", "read_with_logs", "task_topics"]

#: The PoCo hub's task events (``IexecPoco2``): every change of a task emits one of them.
TASK_EVENTS = (
    "TaskInitialize(bytes32,address)",
    "TaskContribute(bytes32,address,bytes32)",
    "TaskConsensus(bytes32,bytes32)",
    "TaskReveal(bytes32,address,bytes32)",
    "TaskReopen(bytes32)",
    "TaskFinalize(bytes32,bytes)",
    "TaskClaimed(bytes32)",
)
#: How many task ids one ``eth_getLogs`` filter names (nodes cap a request's size).
IDS_PER_FILTER = 200
_QUANTITY = re.compile(r"^0x[0-9a-fA-F]{1,16}$")
_TOPIC = re.compile(r"^0x[0-9a-fA-F]{64}$")
T = TypeVar("T")
#: The clock of reads and reconciliation (monotonic seconds).
clock = time.monotonic


@functools.cache
def task_topics() -> tuple[str, ...]:
    """topic0 of each task event."""
    return tuple("0x" + abi.keccak(sig.encode("ascii")).hex() for sig in TASK_EVENTS)


class ChainLog(BaseModel):
    """The fields of a log entry the backend relies on (nodes add more)."""

    model_config = ConfigDict(frozen=True)

    address: str
    topics: list[str]
    blockNumber: str | None = None
    removed: bool = False

    def task_id(self, hub: str) -> str | None:
        """The task id of a task event of ``hub``, else None."""
        if self.address.lower() != hub or len(self.topics) < 2:
            return None
        if self.topics[0].lower() not in task_topics() or not _TOPIC.fullmatch(self.topics[1]):
            return None
        return self.topics[1].lower()

    @property
    def block(self) -> int | None:
        number = self.blockNumber
        return int(number, 16) if number is not None and _QUANTITY.fullmatch(number) else None


@dataclass(slots=True)
class _Known:
    snapshot: IExecTask
    block: int  # every log of the task up to this block has been accounted for
    read_at: float  # monotonic time of the last viewTask read
    seen_at: float  # monotonic time it was last asked for


class LogCursor:
    """What each task read through one session was, and up to which block (per backend and
    loop, like the session)."""

    def __init__(self) -> None:
        self.known: dict[TaskRef, _Known] = {}
        self._next_sweep = 0.0

    def note(self, ref: TaskRef, snapshot: IExecTask, block: int, now: float) -> None:
        """Remember a fresh read of ``ref``, accounting for its logs up to ``block``."""
        known = self.known.get(ref)
        if known is not None:
            block = max(block, known.block)
        self.known[ref] = _Known(snapshot, block, now, now)

    def sweep(self, now: float, keep_for: float) -> None:
        """Forget tasks nobody asked about for ``keep_for`` seconds (their watch ended)."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + keep_for / 2
        for ref in [r for r, k in self.known.items() if now - k.seen_at > keep_for]:
            del self.known[ref]


_cursors: weakref.WeakKeyDictionary[Session, LogCursor] = weakref.WeakKeyDictionary()


def cursor_of(session: Session) -> LogCursor:
    """The log cursor of ``session``, made on first use and gone with it."""
    cursor = _cursors.get(session)
    if cursor is None:
        cursor = _cursors[session] = LogCursor()
    return cursor


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


async def read_with_logs(
    backend: IExecBackend, refs: Sequence[TaskRef]
) -> list[tuple[TaskRef, IExecTask | Answer[IExecTask] | BaseException]]:
    """One round for ``refs``: the logs batch, then ``viewTask`` batches for the tasks to read."""
    session = backend.session()
    cursor = cursor_of(session)
    now = clock()
    reconcile = backend.policy.reconcile_interval
    cursor.sweep(now, keep_for=2 * reconcile)
    tracked: dict[str, list[TaskRef]] = {}
    to_read: set[TaskRef] = set()
    since = -1  # the oldest block any tracked task's logs were read to
    for ref in refs:
        known = cursor.known.get(ref)
        if known is None or now - known.read_at >= reconcile:
            to_read.add(ref)
        else:
            known.seen_at = now
            tracked.setdefault(ref.task_id, []).append(ref)
            if since < 0 or known.block < since:
                since = known.block
    head, moved = await _scan(backend, cursor, tracked, refs, since)
    to_read.update(moved)
    outcomes: dict[TaskRef, IExecTask | BaseException] = {}
    if to_read:
        ordered = [r for r in refs if r in to_read]
        batches = await asyncio.gather(
            *(backend._read_tasks(chunk) for chunk in _chunks(ordered, backend.batch_size)),
            return_exceptions=True,
        )
        for chunk, batch in zip(_chunks(ordered, backend.batch_size), batches, strict=True):
            if isinstance(batch, BaseException):
                if isinstance(batch, asyncio.CancelledError):
                    raise batch
                outcomes.update((r, batch) for r in chunk)
                continue
            for ref, answer in batch:
                # Few tasks are read in a logs round, and the cursor keeps what each read said:
                # built in full here (a slim answer's snapshot validates on demand).
                try:
                    outcome = answer if isinstance(answer, BaseException) else snapshot_of(answer)
                except Exception as exc:
                    outcome = exc
                outcomes[ref] = outcome
                if not isinstance(outcome, BaseException):
                    cursor.note(ref, outcome, max(head, moved.get(ref, head)), now)
    wall = int(time.time())  # the SDK's clock, as a read computes TIMEOUT
    # In the hub's rounds an idle task is answered keyed, so that the hub reads nothing of it
    # while its key (status, statusName) stands still; elsewhere with the snapshot itself.
    from ._source import IExecBackend as owner  # the module that imports this one

    slim = slim_allowed(backend, owner)
    answers: list[tuple[TaskRef, IExecTask | Answer[IExecTask] | BaseException]] = []
    for ref in refs:
        if ref in outcomes:
            answers.append((ref, outcomes[ref]))
            continue
        known = cursor.known[ref]
        known.block = max(known.block, head)
        snapshot = backend.at_time(known.snapshot, wall)
        if slim:
            answers.append((ref, Answer.built((snapshot.status, snapshot.statusName), snapshot)))
        else:
            answers.append((ref, snapshot))
    return answers


async def _scan(
    backend: IExecBackend,
    cursor: LogCursor,
    tracked: Mapping[str, list[TaskRef]],
    refs: Sequence[TaskRef],
    since: int,
) -> tuple[int, dict[TaskRef, int]]:
    """The head block and the tracked tasks with logs since their block (with their latest
    log's block); a task whose logs could not be read counts as moved. Every chunk asks from
    ``since`` + 1 (tasks mostly share one block; older logs of a task are filtered below)."""
    hub = backend.hub_address
    ids = sorted(tracked)
    chunks = list(_chunks(ids, IDS_PER_FILTER))
    requests: list[tuple[str, list[Any]]] = [("eth_blockNumber", [])]
    for chunk in chunks:
        low = since + 1
        topics = [list(task_topics()), list(chunk)]
        request = {"address": hub, "fromBlock": hex(low), "toBlock": "latest", "topics": topics}
        requests.append(("eth_getLogs", [request]))
    shown = refs[0].task_id if len(refs) == 1 else None
    answers = await rpc_batch(backend, requests, shown)
    if isinstance(answers[0], BaseException):
        raise answers[0]
    if not isinstance(answers[0], str) or not _QUANTITY.fullmatch(answers[0]):
        raise backend.protocol_error("eth_blockNumber did not answer a block number", shown)
    head = int(answers[0], 16)
    moved: dict[TaskRef, int] = {}
    for chunk, answer in zip(chunks, answers[1:], strict=True):
        logs = _logs_of(answer)
        if logs is None:
            moved.update((r, head) for i in chunk for r in tracked[i])
            continue
        for log in logs:
            task_id = log.task_id(hub)
            for ref in tracked.get(task_id or "", ()):
                block = log.block
                if block is None:
                    moved[ref] = max(moved.get(ref, head), head)
                elif log.removed or block > cursor.known[ref].block:
                    moved[ref] = max(moved.get(ref, head), block)
    return head, moved


def _logs_of(answer: Any) -> list[ChainLog] | None:
    """The logs of an ``eth_getLogs`` answer, or None when it is an error or off-shape."""
    if not isinstance(answer, list):
        return None
    try:
        return [ChainLog.model_validate(item) for item in answer]
    except ValidationError:
        return None
