"""The emulated chain under the iExec node: a block clock, the hub's event logs and their filters.

Blocks land every ``block_time`` seconds of wall time. The chain is mined lazily: whoever asks
(a JSON-RPC call, a WebSocket subscription waking at a block boundary) first mines every block
up to now, which looks at the hub's tasks that may have moved since the last mined block (not
at every task) and records their event logs, encoded once, in the head block. Transactions
(``record``) put their logs in the next block. A reorg (``reorg``) announces copies of a
task's latest logs with ``removed: true``.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "EVENTS",
    "BlockClock",
    "Ledger",
    "LogEntry",
    "LogFilter",
    "event_log",
    "topic_of",
]

#: The PoCo hub's task events (``IexecPoco2``): signature, indexed types, data types.
EVENTS: Mapping[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "TaskInitialize": ("TaskInitialize(bytes32,address)", ("bytes32", "address"), ()),
    "TaskContribute": ("TaskContribute(bytes32,address,bytes32)", ("bytes32", "address"),
                       ("bytes32",)),
    "TaskConsensus": ("TaskConsensus(bytes32,bytes32)", ("bytes32",), ("bytes32",)),
    "TaskReveal": ("TaskReveal(bytes32,address,bytes32)", ("bytes32", "address"), ("bytes32",)),
    "TaskReopen": ("TaskReopen(bytes32)", ("bytes32",), ()),
    "TaskFinalize": ("TaskFinalize(bytes32,bytes)", ("bytes32",), ("bytes",)),
    "TaskClaimed": ("TaskClaimed(bytes32)", ("bytes32",), ()),
}
GENESIS = 1_600_000_000  # unix time of block 0
MAX_LOGS = 200_000  # the oldest logs go first past this many
_TAGS = ("latest", "pending", "safe", "finalized")


def _keccak(data: bytes) -> bytes:
    from eth_hash.auto import keccak

    digest: bytes = keccak(data)
    return digest


@functools.lru_cache(maxsize=4096)
def topic_of(event: str) -> str:
    """topic0 of an event of ``EVENTS``: the keccak of its canonical signature."""
    return "0x" + _keccak(EVENTS[event][0].encode()).hex()


@functools.lru_cache(maxsize=4096)
def block_hash(number: int) -> str:
    """The (deterministic) hash of block ``number``."""
    return "0x" + _keccak(b"block:" + number.to_bytes(32, "big")).hex()


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One log as the node serves it; ``announced`` is the block that made it visible (its
    own block, or for a ``removed`` copy the block of the reorg)."""

    announced: int
    block: int
    index: int
    address: str
    topics: tuple[str, ...]
    data: str
    tx_hash: str
    removed: bool = False
    #: The log as JSON text, encoded once when the entry is made (pushes splice it in).
    text: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "text", json.dumps(self.to_json(), separators=(",", ":")))

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "topics": list(self.topics),
            "data": self.data,
            "blockNumber": hex(self.block),
            "blockHash": block_hash(self.block),
            "transactionHash": self.tx_hash,
            "transactionIndex": hex(self.index),
            "logIndex": hex(self.index),
            "removed": self.removed,
        }


def event_log(address: str, event: str, args: Sequence[Any]) -> tuple[str, tuple[str, ...], str]:
    """(address, topics, data) of ``event`` emitted with ``args`` (indexed ones first)."""
    _, indexed, data_types = EVENTS[event]
    topics = [topic_of(event)]
    for type_str, value in zip(indexed, args[: len(indexed)], strict=True):
        topics.append("0x" + _word(type_str, value).hex())
    values = args[len(indexed):]
    if data_types == ("bytes",):
        raw = bytes(values[0])
        padded = raw + b"\x00" * (-len(raw) % 32)
        data = (32).to_bytes(32, "big") + len(raw).to_bytes(32, "big") + padded
    else:
        data = b"".join(_word(t, v) for t, v in zip(data_types, values, strict=True))
    return address, tuple(topics), "0x" + data.hex()


def _word(type_str: str, value: Any) -> bytes:
    """The 32-byte ABI word of a static value (bytes32 or address): a block mines fast."""
    if type_str == "address":
        return bytes(12) + bytes.fromhex(str(value)[2:])
    if type_str == "bytes32" and isinstance(value, bytes) and len(value) == 32:
        return value
    from eth_abi.abi import encode

    word: bytes = encode([type_str], [value])
    return word


class LogFilter:
    """An ``eth_getLogs``/``eth_subscribe`` filter: addresses and topics, each position one
    value, a list of values (any of them) or null (anything)."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        address = raw.get("address")
        if address is None:
            self.addresses: frozenset[str] | None = None
        elif isinstance(address, str):
            self.addresses = frozenset({address.lower()})
        elif isinstance(address, list) and all(isinstance(a, str) for a in address):
            self.addresses = frozenset(a.lower() for a in address)
        else:
            raise ValueError("address must be an address or a list of addresses")
        topics = raw.get("topics") or []
        if not isinstance(topics, list) or len(topics) > 4:
            raise ValueError("topics must be a list of at most 4 positions")
        self.topics: list[frozenset[str] | None] = []
        for position in topics:
            if position is None:
                self.topics.append(None)
            elif isinstance(position, str):
                self.topics.append(frozenset({position.lower()}))
            elif isinstance(position, list) and all(isinstance(t, str) for t in position):
                self.topics.append(frozenset(t.lower() for t in position) or None)
            else:
                raise ValueError("a topic position must be a topic, a list of topics or null")

    def matches(self, entry: LogEntry) -> bool:
        if self.addresses is not None and entry.address not in self.addresses:
            return False
        if len(self.topics) > len(entry.topics):
            return False
        return all(
            wanted is None or topic in wanted
            for wanted, topic in zip(self.topics, entry.topics, strict=False)
        )


class BlockClock:
    """Block numbers from wall time: one block every ``block_time`` seconds."""

    def __init__(self, block_time: float = 1.0) -> None:
        self._anchor_number = 0
        self._anchor_time = float(GENESIS)
        self.block_time = block_time

    def head(self, now: float | None = None) -> int:
        """The number of the latest block landed by ``now`` (default: the current time)."""
        now = time.time() if now is None else now
        return self._anchor_number + int((now - self._anchor_time) // self.block_time)

    def landed_at(self, number: int) -> float:
        """When block ``number`` landed (unix time)."""
        return self._anchor_time + (number - self._anchor_number) * self.block_time

    def set_block_time(self, block_time: float) -> None:
        """Change the block time from the current block on (numbers never go back)."""
        if not 0.001 <= block_time <= 3600:
            raise ValueError("block_time must be from 0.001 to 3600 seconds")
        head = self.head()
        self._anchor_number, self._anchor_time = head, self.landed_at(head)
        self.block_time = block_time


#: Events a hub emits for one status change: (event name, args) in order.
Describe = Callable[[str, int, int], Sequence[tuple[str, Sequence[Any]]]]


#: (every, [(task id, status now)]): the tasks that may have moved since the last call; with
#: ``every`` the list is all the tasks (any other is gone).
Changes = Callable[[], tuple[bool, Iterable[tuple[str, int]]]]


class Ledger:
    """Blocks and the hub's logs. ``changes`` tells which tasks may have moved since the last
    mined block and their status; a status that moved gets the events
    ``describe(id, old, new)`` in the block being mined."""

    def __init__(
        self,
        address: str,
        changes: Changes,
        describe: Describe,
        clock: BlockClock | None = None,
    ) -> None:
        self.address = address.lower()
        self.clock = clock or BlockClock()
        self._changes = changes
        self._describe = describe
        self._lock = threading.RLock()
        self._statuses: dict[str, int] = {}
        self._since: dict[str, int] = {}  # the block that announced each task's status
        self._logs: list[LogEntry] = []
        self._announced: list[int] = []  # the logs' announced blocks, for bisect
        self._dropped = 0  # how many logs were trimmed off the front (sequence offset)
        self._next_index = 0  # log index within the block being filled
        self._filling = -1  # the block _next_index counts in
        self.mined = self.clock.head() - 1
        #: Every block's ``baseFeePerGas`` in wei; None: a pre-London chain (no such field).
        self.base_fee: int | None = 0

    # -- mining ------------------------------------------------------------------------------

    def sync(self) -> int:
        """Mine every block up to now; the head block's number."""
        head = self.clock.head()
        with self._lock:
            if head <= self.mined:
                return self.mined
            every, seen = self._changes()
            known, since = self._statuses, self._since
            if every:  # the list is all the tasks: forget the others
                self._statuses, self._since = {}, {}
            for task_id, status in seen:
                old = known.get(task_id, 0)
                self._statuses[task_id] = status
                if status != old:
                    self._since[task_id] = head
                    self._append(head, task_id, self._describe(task_id, old, status))
                elif every and task_id in since:
                    self._since[task_id] = since[task_id]
            self.mined = head
            return head

    def announced(self, task_id: str) -> tuple[int, int]:
        """The status of ``task_id`` as of the latest mined block (0 if never seen), and the
        block that announced it (-1 if none)."""
        self.sync()
        return self._statuses.get(task_id, 0), self._since.get(task_id, -1)

    def record(
        self, task_id: str, status: int, events: Sequence[tuple[str, Sequence[Any]]],
        tx_hash: str | None = None,
    ) -> tuple[int, list[LogEntry]]:
        """A transaction's logs in the next block, ``task_id`` now known at ``status`` (so the
        scan emits nothing more for it); (block number, logs)."""
        with self._lock:
            self.sync()
            block = self.mined + 1
            self._statuses[task_id] = status
            self._since[task_id] = block
            return block, self._append(block, task_id, events, tx_hash=tx_hash)

    def reorg(self, task_id: str) -> list[LogEntry]:
        """Announce, in the next block, copies with ``removed: true`` of the logs of
        ``task_id``'s latest block (a client must read the task again)."""
        topic = task_id.lower()
        with self._lock:
            self.sync()
            mine = [e for e in self._logs if len(e.topics) > 1 and e.topics[1] == topic
                    and not e.removed]
            if not mine:
                return []
            last = mine[-1].block
            announced = self.mined + 1
            copies = [
                LogEntry(announced, e.block, e.index, e.address, e.topics, e.data, e.tx_hash,
                         removed=True)
                for e in mine if e.block == last
            ]
            for entry in copies:
                self._push(entry)
            return copies

    def _append(
        self, block: int, task_id: str, events: Sequence[tuple[str, Sequence[Any]]],
        tx_hash: str | None = None,
    ) -> list[LogEntry]:
        if block != self._filling:
            self._filling, self._next_index = block, 0
        tx = tx_hash or "0x" + hashlib.sha256(f"tx:{task_id}:{block}".encode()).hexdigest()
        out = []
        for event, args in events:
            address, topics, data = event_log(self.address, event, args)
            entry = LogEntry(block, block, self._next_index, address, topics, data, tx)
            self._next_index += 1
            self._push(entry)
            out.append(entry)
        return out

    def _push(self, entry: LogEntry) -> None:
        self._logs.append(entry)
        self._announced.append(entry.announced)
        if len(self._logs) > MAX_LOGS:
            cut = len(self._logs) - MAX_LOGS
            del self._logs[:cut], self._announced[:cut]
            self._dropped += cut

    # -- reading ---------------------------------------------------------------------------

    def block_number(self, tag: Any, head: int) -> int:
        """A block parameter (hex number or tag) as a number; ValueError when invalid."""
        if tag is None or tag in _TAGS:
            return head
        if tag == "earliest":
            return 0
        if isinstance(tag, str) and tag.startswith("0x"):
            return int(tag, 16)
        raise ValueError(f"invalid block parameter {tag!r}")

    def get_logs(self, raw: Mapping[str, Any]) -> list[dict[str, Any]]:
        """``eth_getLogs``: the visible logs in [fromBlock, toBlock] matching the filter."""
        head = self.sync()
        if "blockHash" in raw:
            wanted = raw["blockHash"]
            number = next((n for n in range(head, max(head - 4096, -1), -1)
                           if block_hash(n) == wanted), None)
            if number is None:
                raise ValueError("unknown block hash")
            low = high = number
        else:
            low = self.block_number(raw.get("fromBlock"), head)
            high = min(self.block_number(raw.get("toBlock"), head), head)
        wanted_filter = LogFilter(raw)
        with self._lock:
            start = bisect.bisect_left(self._announced, low)
            stop = bisect.bisect_right(self._announced, high)
            return [e.to_json() for e in self._logs[start:stop] if wanted_filter.matches(e)]

    def since(self, sequence: int) -> tuple[int, list[LogEntry]]:
        """The visible logs after position ``sequence`` (0 at the start) and the new position."""
        with self._lock:
            cut = bisect.bisect_right(self._announced, self.mined)
            start = max(sequence - self._dropped, 0)
            return self._dropped + cut, self._logs[start:cut]

    def position(self) -> int:
        """The position after every visible log (a new subscription starts there)."""
        return self.since(1 << 62)[0]

    def landed_at(self, number: int) -> float:
        """When block ``number`` landed by the clock (unix time)."""
        return self.clock.landed_at(number)

    def block(self, number: int) -> dict[str, Any]:
        """A block header as ``eth_getBlockByNumber`` gives it (no transactions)."""
        zero32 = "0x" + "00" * 32
        header: dict[str, Any] = {
            "number": hex(number), "hash": block_hash(number),
            "parentHash": block_hash(max(number - 1, 0)),
            "timestamp": hex(int(self.clock.landed_at(number))),
            "nonce": "0x0000000000000000", "difficulty": "0x0", "totalDifficulty": "0x0",
            "gasLimit": hex(30_000_000), "gasUsed": "0x0", "miner": "0x" + "00" * 20,
            "extraData": "0x", "sha3Uncles": zero32,
            "logsBloom": "0x" + "00" * 256, "transactionsRoot": zero32, "stateRoot": zero32,
            "receiptsRoot": zero32, "mixHash": zero32, "size": "0x200", "transactions": [],
            "uncles": [],
        }
        if self.base_fee is not None:
            header["baseFeePerGas"] = hex(self.base_fee)
        return header
