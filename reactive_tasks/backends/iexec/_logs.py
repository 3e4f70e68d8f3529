"""Logs instead of per-task reads: each round asks the hub's event logs which watched tasks moved.

A round is one JSON-RPC batch: ``eth_blockNumber`` plus ``eth_getLogs`` over the hub for the
blocks since each task was last accounted for, filtered on the task events (topic 0) and the
watched ids (topic 1, an OR list, chunked). Only tasks with new or removed logs are read with
``viewTask``, as are tasks never read yet and those whose last read is ``reconcile_interval``
old; every other task is answered from its last read (``_cursor`` keeps it, so that an idle task
costs a round no work), turned TIMEOUT at its final deadline as a read would. Logs are a hint
only: a doubt about them (an error, an odd entry) costs a read.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import re
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar, cast

from pydantic import BaseModel, ConfigDict, ValidationError

from ..._types import Answer, snapshot_of
from .._answers import slim_allowed
from .._base import TaskRef
from . import _abi as abi
from ._cursor import IDS_PER_FILTER, Group, LogCursor, cursor_of
from ._rpc import rpc_batch

if TYPE_CHECKING:
    from ._source import IExecBackend, IExecTask

__all__ = [
    "IDS_PER_FILTER", "TASK_EVENTS", "LogCursor", "LogFacts", "cursor_of", "log_facts",
    "read_with_logs", "task_topics",
]

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
_QUANTITY = re.compile(r"^0x[0-9a-fA-F]{1,16}$")
_TOPIC = re.compile(r"^0x[0-9a-fA-F]{64}$")
T = TypeVar("T")
#: The clock of reads and reconciliation (monotonic seconds).
clock = time.monotonic


@functools.cache
def task_topics() -> tuple[str, ...]:
    """topic0 of each task event."""
    return tuple("0x" + abi.keccak(sig.encode("ascii")).hex() for sig in TASK_EVENTS)


@functools.cache
def _events_filter() -> list[str]:
    """topic0 of a logs filter: any task event (one list, sent as is every round)."""
    return list(task_topics())


class ChainLog(BaseModel):
    """The fields of a log entry the backend relies on (nodes add more)."""

    model_config = ConfigDict(frozen=True)

    address: str
    topics: list[str]
    blockNumber: str | None = None
    removed: bool = False

    def task_id(self, hub: str) -> str | None:
        """The task id of a task event of ``hub``, else None."""
        return _task_id(self.address, self.topics, hub)

    @property
    def block(self) -> int | None:
        return _block(self.blockNumber)


class LogFacts(NamedTuple):
    """What a round takes from one log entry."""

    task_id: str | None  # of a task event of the hub, else None
    block: int | None
    removed: bool


def log_facts(item: Any, hub: str) -> LogFacts | None:
    """The facts of a log entry, or None when it does not match ``ChainLog``.

    An entry in the shape nodes write (a dict of strings, a list of string topics, a boolean
    ``removed``) is read as is, as ``ChainLog`` would read it; any other is validated first.
    """
    if type(item) is dict:
        address, topics = item.get("address"), item.get("topics")
        number, removed = item.get("blockNumber"), item.get("removed", False)
        if (
            type(address) is str
            and type(topics) is list
            and all(map(_is_str, topics))
            and (number is None or type(number) is str)
            and type(removed) is bool
        ):
            return LogFacts(_task_id(address, topics, hub), _block(number), removed)
    try:
        log = ChainLog.model_validate(item)
    except ValidationError:
        return None
    return LogFacts(log.task_id(hub), log.block, log.removed)


_is_str = str.__instancecheck__


def _task_id(address: str, topics: list[str], hub: str) -> str | None:
    if address.lower() != hub or len(topics) < 2:
        return None
    if topics[0].lower() not in _topic_set() or not _TOPIC.fullmatch(topics[1]):
        return None
    return topics[1].lower()


def _block(number: str | None) -> int | None:
    return int(number, 16) if number is not None and _QUANTITY.fullmatch(number) else None


@functools.cache
def _topic_set() -> frozenset[str]:
    return frozenset(task_topics())


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


async def read_with_logs(
    backend: IExecBackend, refs: Sequence[TaskRef]
) -> list[tuple[TaskRef, IExecTask | Answer[IExecTask] | BaseException]]:
    """One round for ``refs``: the logs batch, then ``viewTask`` batches for the tasks to read.

    An idle task costs nothing here: its answers wait in the cursor's group (``_cursor``).
    """
    session = backend.session()
    cursor = cursor_of(session)
    now = clock()
    reconcile = backend.policy.reconcile_interval
    cursor.sweep(now, keep_for=2 * reconcile)
    group = cursor.group_for(refs if isinstance(refs, list) else list(refs), now)
    to_read = set(group.fresh)
    to_read.update(cursor.due(now, reconcile, group))
    head, moved = await _scan(backend, cursor, group, refs)
    to_read.update(moved)
    read: dict[TaskRef, IExecTask] = {}
    failed: dict[TaskRef, BaseException] = {}
    if to_read:
        ordered = sorted(to_read, key=group.index.__getitem__)
        batches = await asyncio.gather(
            *(backend._read_tasks(chunk) for chunk in _chunks(ordered, backend.batch_size)),
            return_exceptions=True,
        )
        for chunk, batch in zip(_chunks(ordered, backend.batch_size), batches, strict=True):
            if isinstance(batch, BaseException):
                if isinstance(batch, asyncio.CancelledError):
                    raise batch
                failed.update((r, batch) for r in chunk)
                continue
            for ref, answer in batch:
                # Few tasks are read in a logs round, and the cursor keeps what each read said:
                # built in full here (a slim answer's snapshot validates on demand).
                try:
                    if isinstance(answer, BaseException):
                        raise answer
                    snapshot = snapshot_of(answer)
                except Exception as exc:
                    failed[ref] = exc
                    continue
                read[ref] = snapshot
                cursor.note(ref, snapshot, max(head, moved.get(ref, head)), now)
    expired = cursor.expire(int(time.time()), backend.at_time)  # the SDK's clock, as in reads
    known = cursor.known
    if failed:
        # Their logs since their block are not accounted for: they keep their block, and the
        # next round lists the group anew from each task's own block.
        for ref in failed:
            entry = known.get(ref)
            if entry is not None:
                entry.block, entry.group = entry.accounted(), None
        if cursor.group is group:
            cursor.group = None
    else:
        group.fresh = []
    group.block = max(group.block, head)
    # In the hub's rounds an idle task is answered keyed, so that the hub reads nothing of it
    # while its key (status, statusName) stands still; elsewhere with the snapshot itself. A
    # task read in this round is answered with its new snapshot, an error with the error.
    from ._source import IExecBackend as owner  # the module that imports this one

    slim = slim_allowed(backend, owner)
    answers: list[tuple[TaskRef, Any]] = list(group.keyed if slim else group.plain)
    for ref in expired:  # set in the group's lists too, unless another round replaced them
        entry = known.get(ref)
        if entry is not None:
            for i in group.places(ref):
                answers[i] = (ref, entry.keyed if slim else entry.snapshot)
    for ref, outcome in itertools.chain(read.items(), failed.items()):
        for i in group.places(ref):
            answers[i] = (ref, outcome)
    return answers


async def _scan(
    backend: IExecBackend, cursor: LogCursor, group: Group, refs: Sequence[TaskRef]
) -> tuple[int, dict[TaskRef, int]]:
    """The head block and the group's tasks with logs since their block (with their latest
    log's block); a task whose logs could not be read counts as moved. Every chunk asks from
    the group's block + 1 (tasks mostly share it; older logs of a task are filtered below). A
    group none of whose tasks was read yet asks only for the head."""
    hub = backend.hub_address
    since = group.block
    filters = group.filters if since >= 0 else []
    requests: list[tuple[str, list[Any]]] = [("eth_blockNumber", [])]
    low = hex(since + 1)
    for chunk in filters:
        topics = [_events_filter(), chunk]
        request = {"address": hub, "fromBlock": low, "toBlock": "latest", "topics": topics}
        requests.append(("eth_getLogs", [request]))
    shown = refs[0].task_id if len(refs) == 1 else None
    answers = await rpc_batch(backend, requests, shown)
    if isinstance(answers[0], BaseException):
        raise answers[0]
    if not isinstance(answers[0], str) or not _QUANTITY.fullmatch(answers[0]):
        raise backend.protocol_error("eth_blockNumber did not answer a block number", shown)
    head = int(answers[0], 16)
    moved: dict[TaskRef, int] = {}
    known, by_id = cursor.known, group.by_id
    for chunk, answer in zip(filters, answers[1:], strict=True):
        logs = _logs_of(answer, hub)
        if logs is None:
            moved.update((r, head) for i in chunk for r in by_id[i])
            continue
        for task_id, block, removed in logs:
            for ref in by_id.get(task_id or "", ()):
                entry = known.get(ref)
                if entry is None:
                    continue  # never read: read this round anyway
                if block is None:
                    moved[ref] = max(moved.get(ref, head), head)
                elif removed or block > entry.accounted():
                    moved[ref] = max(moved.get(ref, head), block)
    return head, moved


def _logs_of(answer: Any, hub: str) -> list[LogFacts] | None:
    """The facts of an ``eth_getLogs`` answer's logs, or None when it is an error or any entry
    is off-shape."""
    if not isinstance(answer, list):
        return None
    facts = [log_facts(item, hub) for item in answer]
    return None if None in facts else cast("list[LogFacts]", facts)
