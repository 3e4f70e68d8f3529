"""iExec under /iexec: an Ethereum JSON-RPC node fronting a PoCo hub, plus an IPFS gateway.

`POST /iexec/rpc` answers JSON-RPC 2.0 (single or batch): `eth_chainId`, `net_version`,
`eth_blockNumber`, `eth_getBlockByNumber`, `eth_getLogs` (naming a task in topic 1 counts as a
status read of its `polls` step), `web3_clientVersion` and `eth_call` to
`HUB_ADDRESS` for `viewTask(bytes32)`, `viewDeal(bytes32)`, `viewCategory(uint256)` and
`final_deadline_ratio()`, ABI-encoded with eth-abi like the real hub. `GET /iexec/ipfs/{cid}`
serves the result archives of completed tasks. A WebSocket on `/iexec/rpc` answers the same
calls plus `eth_subscribe` ("logs" with a filter, "newHeads") and `eth_unsubscribe`.

Blocks land every `block_time` seconds (`_chain`); each status change of a scripted task emits
the hub's real event logs (TaskInitialize ... TaskFinalize, TaskClaimed) in the block that sees
it. `GET/POST /iexec/_chain` reads or sets `block_time`; `POST /iexec/_chain/reorg` announces a
task's latest logs as `removed`; `POST /iexec/_chain/drop` closes every WebSocket.

A wallet can send transactions (`_wallet`): `eth_getTransactionCount`, `eth_estimateGas`,
`eth_gasPrice`, `eth_maxPriorityFeePerGas`, `eth_sendRawTransaction` (decoded, sender recovered,
chain id and nonce checked), `eth_getTransactionReceipt` (once the block landed) and
`eth_getTransactionByHash`. The hub runs `claim(bytes32)` with PoCo's rules: an ACTIVE or
REVEALING task past its final deadline turns FAILED and emits `TaskClaimed`; anything else
reverts with the hub's custom errors (`TaskNotClaimable`, `DeadlineNotReached`).
`GET/POST /iexec/_wallet` lists the received transactions and reads or sets the fees
(`london: false` serves a legacy chain: no `baseFeePerGas`, typed transactions refused).
A fault's `path_contains` also matches the request's JSON-RPC method names (e.g.
`eth_sendRawTransaction`); an `api_error` fault answers the wallet calls of a request with its
error too, or with `body={"revert": true}` mines a sent transaction reverted.

A scripted task's step has a `status` (UNSET, ACTIVE, REVEALING, COMPLETED, FAILED) and
optionally `results` (an object stored as JSON, a raw string, or null). Creation extras describe
its deal: `deal_id`, `idx`, `bot_first`, `bot_size`, `category` (0-4), and either `start_time`
(unix seconds) or `deadline_in` (seconds from creation to the final deadline). An `api_error`
fault answers the matching `eth_call`s of a request with a JSON-RPC error (`code`, `message`;
default -32000) or, with `body={"result": "0x..."}`, with that raw result.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import secrets
import time
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ._api import ApiContext, EmulatedApi
from ._chain import Ledger
from ._client import EmulatorClient
from ._faults import Fault
from ._sockets import chain_routes
from ._state import ScriptedTask, Step, StepView, StoreWatch
from ._wallet import WALLET_METHODS, Execution, NodeError, Wallet, wallet_call

__all__ = [
    "API",
    "CATEGORIES",
    "CHAIN_ID",
    "FINAL_DEADLINE_RATIO",
    "HUB_ADDRESS",
    "create_deal",
    "encode_task",
    "routes",
    "task_id_of",
]

logger = logging.getLogger("reactive_tasks.emulator.iexec")

HUB_ADDRESS = "0x5e7ec0de5e7ec0de5e7ec0de5e7ec0de5e7ec0de"
CHAIN_ID = 31337  # the usual id of a local development chain
FINAL_DEADLINE_RATIO = 10
CONTRIBUTION_DEADLINE_RATIO = 7
REVEAL_DEADLINE_RATIO = 2
#: PoCo's default categories: (name, description, workClockTimeRef in seconds).
CATEGORIES: tuple[tuple[str, str, int], ...] = (
    ("XS", '{"description": "Extra small category"}', 300),
    ("S", '{"description": "Small category"}', 1200),
    ("M", '{"description": "Medium category"}', 3600),
    ("L", '{"description": "Large category"}', 10800),
    ("XL", '{"description": "Extra large category"}', 36000),
)
STATUSES = {"UNSET": 0, "ACTIVE": 1, "REVEALING": 2, "COMPLETED": 3, "FAILED": 4}

_RESOURCE = "(address,address,uint256)"
_TASK_TYPE = (
    "(uint8,bytes32,uint256,uint256,uint256,uint256,uint256,bytes32,uint256,uint256,"
    "address[],bytes32,bytes,uint256,bytes)"
)
_DEAL_TYPE = (
    f"({_RESOURCE},{_RESOURCE},{_RESOURCE},uint256,uint256,bytes32,address,address,address,"
    "string,uint256,uint256,uint256,uint256,uint256,address)"
)
_ZERO32 = b"\x00" * 32
_ZERO_ADDRESS = "0x" + "00" * 20
_APP = "0xa99a00000000000000000000000000000000a99a"
_WORKERPOOL = "0x900100000000000000000000000000000000b001"
_OWNER = "0x0a1e000000000000000000000000000000000a1e"
_REQUESTER = "0x4e9e000000000000000000000000000000004e9e"
_WORKER = "0x3044e00000000000000000000000000000003044"
_STEP_KEYS = frozenset({"status", "results"})
_EXTRA_KEYS = frozenset(
    {"deal_id", "idx", "bot_first", "bot_size", "category", "start_time", "deadline_in"}
)
_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

DEFAULT_STEPS: tuple[Mapping[str, Any], ...] = (
    {"status": "UNSET", "polls": 1},
    {"status": "ACTIVE", "polls": 1},
    {"status": "REVEALING", "polls": 1},
    {"status": "COMPLETED"},
)


# -- encoding helpers (eth-abi and eth-hash are imported on first use) ------------------------


def _keccak(data: bytes) -> bytes:
    from eth_hash.auto import keccak

    digest: bytes = keccak(data)
    return digest


@functools.lru_cache(maxsize=1 << 16)
def _made_up(label: bytes, task_id: str) -> bytes:
    """A task's made-up 32-byte value (consensus, contribution, deal id): deterministic, and
    cheap for a block that moves many tasks (sha-256; nothing checks how a hub derived it)."""
    return hashlib.sha256(label + task_id.encode()).digest()


def _encode(types: Sequence[str], values: Sequence[Any]) -> bytes:
    from eth_abi.abi import encode

    encoded: bytes = encode(list(types), list(values))
    return encoded


def encode_task(task: Sequence[Any]) -> bytes:
    """``viewTask``'s result for a task tuple (of ``_TASK_TYPE``), laid out as eth-abi does
    it, written word by word: a read of many tasks must not cost a general encoder's time."""

    def word(value: int) -> bytes:
        return value.to_bytes(32, "big")

    def tail(raw: bytes) -> bytes:  # a ``bytes`` member: length, then the data padded
        return word(len(raw)) + raw + bytes(-len(raw) % 32)

    contributors = b"".join(bytes(12) + bytes.fromhex(a[2:]) for a in task[10])
    tails = (word(len(task[10])) + contributors, tail(bytes(task[12])), tail(bytes(task[14])))
    at_10 = 15 * 32
    at_12 = at_10 + len(tails[0])
    at_14 = at_12 + len(tails[1])
    head = [word(task[0]), bytes(task[1]), *(word(v) for v in task[2:7]), bytes(task[7]),
            word(task[8]), word(task[9]), word(at_10), bytes(task[11]), word(at_12),
            word(task[13]), word(at_14)]
    return word(32) + b"".join(head) + b"".join(tails)


def _selectors() -> dict[bytes, str]:
    return {
        _keccak(sig.encode())[:4]: sig
        for sig in (
            "viewTask(bytes32)",
            "viewDeal(bytes32)",
            "viewCategory(uint256)",
            "final_deadline_ratio()",
        )
    }


@functools.lru_cache(maxsize=1 << 16)
def _deal_of(task_id: str) -> str:
    """The deal id of a task created without one."""
    return "0x" + _keccak(b"deal:" + bytes.fromhex(task_id[2:])).hex()


def task_id_of(deal_id: str, idx: int) -> str:
    """The on-chain id of task ``idx`` of a deal: keccak256(dealid ++ uint256 idx)."""
    return "0x" + _keccak(_encode(["bytes32", "uint256"], [bytes.fromhex(deal_id[2:]), idx])).hex()


def normalize_id(raw: str) -> str | None:
    """A bytes32 id in lowercase, or None when `raw` is not 0x + 64 hex digits."""
    if not isinstance(raw, str) or len(raw) != 66 or not raw.startswith("0x"):
        return None
    try:
        bytes.fromhex(raw[2:])
    except ValueError:
        return None
    return raw.lower()


def _cid(content: bytes) -> str:
    """A CIDv0 (base58btc sha2-256 multihash, "Qm...") of `content`."""
    number = int.from_bytes(b"\x12\x20" + hashlib.sha256(content).digest(), "big")
    out = ""
    while number:
        number, rest = divmod(number, 58)
        out = _B58[rest] + out
    return out


def _archive(task_id: str) -> bytes:
    """A small, deterministic result archive like an iExec app produces."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in (
            ("computed.json", '{"deterministic-output-path": "/iexec_out/result.txt"}'),
            ("result.txt", f"Hello from iExec task {task_id}\n"),
        ):
            archive.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), text)
    return buffer.getvalue()


# -- validation of scripts and extras ------------------------------------------------------


def _status_of(fields: Mapping[str, Any]) -> int:
    raw = fields.get("status", "ACTIVE")
    return raw if isinstance(raw, int) else STATUSES[str(raw).upper()]


def _check_step(fields: Mapping[str, Any]) -> str | None:
    unknown = set(fields) - _STEP_KEYS
    if unknown:
        return f"unknown iexec step fields {sorted(unknown)}; allowed: {sorted(_STEP_KEYS)}"
    status = fields.get("status", "ACTIVE")
    if isinstance(status, bool) or not (
        (isinstance(status, int) and 0 <= status <= 4)
        or (isinstance(status, str) and status.upper() in STATUSES)
    ):
        return f"status must be one of {', '.join(STATUSES)} (or 0-4); got {status!r}"
    if not isinstance(fields.get("results"), dict | str | None):
        return "results must be an object, a string or null"
    return None


def _check_extra(extra: Mapping[str, Any]) -> str | None:
    unknown = set(extra) - _EXTRA_KEYS
    if unknown:
        return f"unknown iexec task fields {sorted(unknown)}; allowed: {sorted(_EXTRA_KEYS)}"
    if "deal_id" in extra and normalize_id(extra["deal_id"]) is None:
        return "deal_id must be 0x followed by 64 hex digits"
    for key in ("idx", "bot_first", "bot_size", "start_time"):
        value = extra.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return f"{key} must be a non-negative integer"
    if not 0 <= extra.get("category", 0) < len(CATEGORIES):
        return f"category must be from 0 to {len(CATEGORIES) - 1}"
    deadline_in = extra.get("deadline_in", 0)
    if isinstance(deadline_in, bool) or not isinstance(deadline_in, int | float):
        return "deadline_in must be a number of seconds"
    if "start_time" in extra and "deadline_in" in extra:
        return "give start_time or deadline_in, not both"
    return None


# -- the chain state -----------------------------------------------------------------------


class _Deal:
    """A deal as the emulator derives it from the creation extras of one of its tasks.

    `create_deal` gives every task of a deal the same extras, so any of them will do.
    """

    def __init__(self, deal_id: str, source: ScriptedTask) -> None:
        extra = source.extra
        self.id = deal_id
        self.source = source
        self.category = int(extra.get("category", 0))
        self.time_ref = CATEGORIES[self.category][2]
        if "start_time" in extra:
            self.start = int(extra["start_time"])
        elif "deadline_in" in extra:
            deadline = int(source.created + float(extra["deadline_in"]))
            self.start = deadline - FINAL_DEADLINE_RATIO * self.time_ref
        else:
            self.start = int(source.created)
        self.bot_first = int(extra.get("bot_first", 0))
        self.bot_size = int(extra.get("bot_size", 1))
        self.final_deadline = self.start + FINAL_DEADLINE_RATIO * self.time_ref

    def encode(self) -> bytes:
        deal = (
            (_APP, _OWNER, 0),
            (_ZERO_ADDRESS, _ZERO_ADDRESS, 0),
            (_WORKERPOOL, _OWNER, 0),
            1,
            self.category,
            _ZERO32,
            _REQUESTER,
            _REQUESTER,
            _ZERO_ADDRESS,
            '{"iexec_args": "emulated"}',
            self.start,
            self.bot_first,
            self.bot_size,
            0,
            1,
            _ZERO_ADDRESS,
        )
        return _encode([_DEAL_TYPE], [deal])


class _Chain:
    """The hub's view of the scripted tasks: deals derived from task extras, cached by id."""

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx
        self._deals: dict[str, _Deal] = {}
        self.cids: dict[str, str] = {}  # result archive CID -> task id
        self.moved = StoreWatch(ctx.tasks)

    def deal_of_task(self, task: ScriptedTask) -> str:
        deal_id = task.extra.get("deal_id")
        if deal_id is None:
            return _deal_of(task.id)
        return str(deal_id).lower()

    def _cached(self, deal_id: str) -> _Deal | None:
        deal = self._deals.get(deal_id)
        if deal is not None and self.ctx.tasks.get(deal.source.id) is not deal.source:
            deal = None  # its task was replaced or the emulator was reset
        return deal

    def _remember(self, deal: _Deal) -> _Deal:
        if len(self._deals) > 100_000:
            self._deals.clear()
        self._deals[deal.id] = deal
        return deal

    def deal_for(self, task: ScriptedTask) -> _Deal:
        """The deal of a task (from the cache, else from the task's own extras)."""
        deal_id = self.deal_of_task(task)
        return self._cached(deal_id) or self._remember(_Deal(deal_id, task))

    def deal(self, deal_id: str) -> _Deal | None:
        """A deal by id; one not seen yet through its tasks costs a scan of the store."""
        cached = self._cached(deal_id)
        if cached is not None:
            return cached
        for task in self.ctx.tasks.tasks():
            if self.deal_of_task(task) == deal_id:
                return self._remember(_Deal(deal_id, task))
        return None

    def poll_named(self, ledger: Ledger, params: Any) -> None:
        """An ``eth_getLogs`` naming tasks in topic 1 asks about each of them: it counts as
        one status read of a `polls` step, as a ``viewTask`` would, once the step's status is
        in a block before the range asked (so that every step shows in the logs)."""
        raw = params[0] if isinstance(params, list) and params else None
        if not isinstance(raw, dict):
            return
        topics = raw.get("topics")
        named = topics[1] if isinstance(topics, list) and len(topics) > 1 else None
        try:
            low = ledger.block_number(raw.get("fromBlock"), ledger.sync())
        except ValueError:
            return
        for task_id in [named] if isinstance(named, str) else named or ():
            task = self.ctx.tasks.get(str(task_id).lower())
            if task is None:
                continue
            status, since = ledger.announced(task.id)
            if status == _status_of(task.peek().fields) and since < low:
                task.read()

    def changes(self) -> tuple[bool, list[tuple[str, int]]]:
        """(id, on-chain status) of the tasks that may have moved since the ledger last asked
        (all of them with the flag set): a block costs what changed, not every task."""
        every, moved = self.moved.changed()
        return every, [(task.id, self.status_of(task, view)) for task, view in moved]

    def status_of(self, task: ScriptedTask, view: StepView) -> int:
        """The task's on-chain status: its script's, or FAILED once claimed."""
        return 4 if task.memo.get("claimed") else _status_of(view.fields)

    def execute(self, ledger: Ledger, to: str, data: bytes, tx_hash: str | None) -> Execution:
        """Run a call on the chain (committed when it is the transaction ``tx_hash``): the hub's
        ``claim(bytes32)`` with PoCo's rules; any other hub function reverts, other addresses
        accept anything (plain transfers)."""
        block = ledger.sync() + 1
        if to != HUB_ADDRESS:
            return Execution(None, block)
        if data[:4] != _CLAIM_SELECTOR or len(data) != 36:
            return Execution("", block)
        task_id = "0x" + data[4:].hex()
        task = self.ctx.tasks.get(task_id)
        status = 0 if task is None else self.status_of(task, task.peek())
        if task is None or status not in (1, 2):  # only ACTIVE or REVEALING tasks
            return Execution("", block, revert_data=_custom_error(
                "TaskNotClaimable(bytes32,uint8)", ["bytes32", "uint8"], [data[4:], status]))
        deadline, now = self.deal_for(task).final_deadline, int(ledger.landed_at(block))
        if deadline > now:
            return Execution("", block, revert_data=_custom_error(
                "DeadlineNotReached(uint256,uint256)", ["uint256", "uint256"], [deadline, now]))
        if tx_hash is None:
            return Execution(None, block)
        task.memo["claimed"] = True
        mined, logs = ledger.record(task_id, 4, [("TaskClaimed", [data[4:]])], tx_hash)
        return Execution(None, mined, tuple(logs))

    def describe(self, task_id: str, old: int, new: int) -> list[tuple[str, list[Any]]]:
        """The hub's events for a task moving from status ``old`` to ``new`` (PoCo's order:
        initialize, contribute + consensus, reveal + finalize; reopen; claim)."""
        task = self.ctx.tasks.get(task_id)
        raw = bytes.fromhex(task_id[2:])
        consensus = _made_up(b"consensus:", task_id)
        events: list[tuple[str, list[Any]]] = []
        if old == 0 and new:
            events.append(("TaskInitialize", [raw, _WORKERPOOL]))
            old = 1
        if new == 4:
            return [*events, ("TaskClaimed", [raw])] if old in (1, 2) else events
        if old == 2 and new == 1:
            return [("TaskReopen", [raw])]
        if old == 1 and new >= 2:
            contribution = _made_up(b"contribution:", task_id)
            events += [("TaskContribute", [raw, _WORKER, contribution]),
                       ("TaskConsensus", [raw, consensus])]
            old = 2
        if old == 2 and new == 3:
            results = b"" if task is None else self._results(task, task.peek().fields)
            events += [("TaskReveal", [raw, _WORKER, consensus]),
                       ("TaskFinalize", [raw, results])]
            old = 3
        if old != new and not events:  # a script going back: the event of where it lands
            arrival: dict[int, tuple[str, list[Any]]] = {
                1: ("TaskInitialize", [raw, _WORKERPOOL]),
                2: ("TaskConsensus", [raw, consensus]),
                3: ("TaskFinalize", [raw, b""]),
            }
            events += [arrival[new]] if new in arrival else []
        return events

    def view_task(self, task_id: str) -> bytes:
        task = self.ctx.tasks.get(task_id)
        if task is None:
            return encode_task(_unset_task())
        view = task.read()
        deal = self.deal_for(task)
        if self.status_of(task, view) == 0:
            return encode_task(_unset_task())
        return encode_task(self._task_tuple(task, view, deal))

    def _task_tuple(self, task: ScriptedTask, view: StepView, deal: _Deal) -> tuple[Any, ...]:
        status = self.status_of(task, view)
        ref = deal.time_ref
        decided = status in (2, 3)
        consensus = _made_up(b"consensus:", task.id) if decided else _ZERO32
        results = b""
        if status == 3:
            results = self._results(task, view.fields)
        return (
            status,
            bytes.fromhex(deal.id[2:]),
            int(task.extra.get("idx", 0)),
            ref,
            deal.start + CONTRIBUTION_DEADLINE_RATIO * ref,
            int(view.entered) + REVEAL_DEADLINE_RATIO * ref if decided else 0,
            deal.final_deadline,
            consensus,
            1 if status == 3 else 0,
            1 if decided else 0,
            [_WORKER] if decided else [],
            consensus if status == 3 else _ZERO32,
            results,
            int(view.entered) if status == 3 else 0,
            b"",
        )

    def _results(self, task: ScriptedTask, fields: Mapping[str, Any]) -> bytes:
        if "results" in fields:
            raw = fields["results"]
            if raw is None:
                return b""
            return raw.encode() if isinstance(raw, str) else json.dumps(raw).encode()
        cid = task.memo.get("cid")
        if cid is None:
            cid = task.memo["cid"] = _cid(_archive(task.id))
        if len(self.cids) > 100_000:
            self.cids.clear()
        self.cids[cid] = task.id
        return json.dumps({"storage": "ipfs", "location": f"/ipfs/{cid}"}).encode()


_CLAIM_SELECTOR = _keccak(b"claim(bytes32)")[:4]


def _custom_error(signature: str, types: list[str], args: list[Any]) -> str:
    """The revert data of a Solidity custom error (the hub's since PoCo v6)."""
    return "0x" + (_keccak(signature.encode())[:4] + _encode(types, args)).hex()


def _unset_task() -> tuple[Any, ...]:
    return (0, _ZERO32, 0, 0, 0, 0, 0, _ZERO32, 0, 0, [], _ZERO32, b"", 0, b"")


# -- JSON-RPC ------------------------------------------------------------------------------


class _RpcFault(JSONResponse):
    """The answer of an `api_error` fault; the RPC route applies it per matching call."""

    def __init__(self, fault: Fault) -> None:
        super().__init__(_rpc_error_body(None, *_fault_error(fault)))
        self.fault = fault


def _fault_error(fault: Fault) -> tuple[int, str, Any]:
    code = -32000 if fault.code is None else fault.code
    message = fault.message or ("execution reverted" if code == 3 else "emulated server error")
    data = "0x08c379a0" if code == 3 else None
    return code, message, data


def _rpc_error_body(call_id: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": call_id, "error": error}


def _result(call_id: Any, value: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": call_id, "result": value}


def routes(ctx: ApiContext) -> Sequence[BaseRoute]:
    """The JSON-RPC node (`POST /rpc`) and the IPFS gateway (`GET /ipfs/{cid}`)."""
    chain = _Chain(ctx)
    ledger = Ledger(HUB_ADDRESS, chain.changes, chain.describe)
    wallet = Wallet(
        CHAIN_ID, ledger, lambda _sender, to, data, tx: chain.execute(ledger, to, data, tx)
    )
    selectors = _selectors()
    label = f"{ctx.name} POST /rpc"

    def decode_call(item: Any) -> tuple[str, Any] | None:
        """(signature, argument) of an eth_call item to the hub, or None."""
        from eth_abi.abi import decode

        params = item.get("params") if isinstance(item, dict) else None
        if not isinstance(params, list) or not params or not isinstance(params[0], dict):
            return None
        call = params[0]
        if str(call.get("to", "")).lower() != HUB_ADDRESS:
            return None
        data = call.get("data", call.get("input"))
        try:
            raw = bytes.fromhex(str(data)[2:])
        except ValueError:
            return None
        signature = selectors.get(raw[:4])
        if signature is None:
            return None
        if signature == "final_deadline_ratio()":
            return signature, None
        arg_type = signature[signature.index("(") + 1 : -1]
        try:
            (value,) = decode([arg_type], raw[4:])
        except Exception:
            return None
        if isinstance(value, bytes):
            value = "0x" + value.hex()
        return signature, value

    def touched_ids(items: list[Any]) -> list[str]:
        ids = []
        for item in items:
            if isinstance(item, dict) and item.get("method") == "eth_call":
                decoded = decode_call(item)
                if decoded is not None and isinstance(decoded[1], str):
                    ids.append(decoded[1])
        return ids

    def eth_call(item: dict[str, Any]) -> dict[str, Any]:
        call_id = item.get("id")
        decoded = decode_call(item)
        if decoded is None and isinstance(item.get("params"), list) and item["params"]:
            call = item["params"][0]
            data = call.get("data", call.get("input")) if isinstance(call, dict) else None
            if isinstance(data, str) and data.startswith("0x" + _CLAIM_SELECTOR.hex()):
                try:  # claim(bytes32) run dry, as a wallet's preflight does
                    wallet.estimate_gas(call)
                    return _result(call_id, "0x")
                except NodeError as exc:
                    if exc.code == 3:
                        return _rpc_error_body(call_id, exc.code, exc.message, exc.data)
        if decoded is None:
            # An unknown function or a non-contract address: reverts / returns nothing.
            params = item.get("params") or [{}]
            to = str(params[0].get("to", "")).lower() if isinstance(params[0], dict) else ""
            if to != HUB_ADDRESS:
                return _result(call_id, "0x")
            return _rpc_error_body(call_id, -32000, "execution reverted")
        signature, arg = decoded
        if signature == "viewTask(bytes32)":
            return _result(call_id, "0x" + chain.view_task(arg).hex())
        if signature == "viewDeal(bytes32)":
            deal = chain.deal(arg)
            if deal is None:
                return _result(call_id, "0x" + _empty_deal().hex())
            return _result(call_id, "0x" + deal.encode().hex())
        if signature == "viewCategory(uint256)":
            if not 0 <= arg < len(CATEGORIES):
                return _rpc_error_body(
                    call_id, 3, "execution reverted: panic: array out-of-bounds access (0x32)",
                    "0x4e487b710000000000000000000000000000000000000000000000000000000000000032",
                )
            category = _encode(["(string,string,uint256)"], [CATEGORIES[arg]])
            return _result(call_id, "0x" + category.hex())
        return _result(call_id, "0x" + _encode(["uint256"], [FINAL_DEADLINE_RATIO]).hex())

    def answer(item: Any, fault: Fault | None) -> dict[str, Any]:
        if not isinstance(item, dict) or item.get("jsonrpc") != "2.0" or "method" not in item:
            return _rpc_error_body(None, -32600, "Invalid Request")
        call_id = item.get("id")
        method = item["method"]
        if method == "eth_call":
            if fault is not None:
                decoded = decode_call(item)
                hit = fault.task_id is None or (decoded is not None and decoded[1] == fault.task_id)
                if hit:
                    if isinstance(fault.body, dict) and "result" in fault.body:
                        return _result(call_id, fault.body["result"])
                    return _rpc_error_body(call_id, *_fault_error(fault))
            return eth_call(item)
        if method == "eth_chainId":
            return _result(call_id, hex(CHAIN_ID))
        if method == "net_version":
            return _result(call_id, str(CHAIN_ID))
        if method in _CHAIN_METHODS:
            if method == "eth_getLogs":
                chain.poll_named(ledger, item.get("params"))
            return _chain_call(ledger, call_id, method, item.get("params"))
        if method in WALLET_METHODS:
            return _wallet_answer(wallet, call_id, method, item.get("params"), fault)
        if method == "web3_clientVersion":
            return _result(call_id, "reactive-tasks-emulator/iexec")
        logger.warning("iexec emulator: unsupported JSON-RPC method %r", method)
        return _rpc_error_body(
            call_id, -32601, f"the method {method} does not exist/is not available"
        )

    async def rpc(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            early = await ctx.guard(request, label)
            if early is not None and not isinstance(early, _RpcFault):
                return early
            return JSONResponse(_rpc_error_body(None, -32700, "Parse error"))
        items = body if isinstance(body, list) else [body]
        methods = " ".join(str(i.get("method")) for i in items if isinstance(i, dict))
        early = await ctx.guard(
            request, label, touched_ids(items), path=f"{request.scope['path']}#{methods}"
        )
        fault = None
        if isinstance(early, _RpcFault):
            fault = early.fault
        elif early is not None:
            return early
        if isinstance(body, list) and not body:
            return JSONResponse(_rpc_error_body(None, -32600, "Invalid Request: empty batch"))
        replies = [answer(item, fault) for item in items]
        return JSONResponse(replies if isinstance(body, list) else replies[0])

    async def ipfs(request: Request) -> Response:
        cid = request.path_params["cid"]
        task = ctx.tasks.get(chain.cids.get(cid, ""))
        if task is None:
            return Response("ipfs resolve -r /ipfs/" + cid + ": not found", status_code=404)
        return Response(_archive(task.id), media_type="application/zip")

    async def wallet_settings(request: Request) -> Response:
        if request.method == "POST":
            try:
                body = json.loads(await request.body() or b"{}")
                if not isinstance(body, dict):
                    raise ValueError("the body must be a JSON object")
                wallet.configure(body)
            except ValueError as exc:
                return JSONResponse({"error": str(exc)}, status_code=422)
        return JSONResponse(wallet.describe())

    return [
        Route("/rpc", rpc, methods=["POST"]),
        Route("/_wallet", wallet_settings, methods=["GET", "POST"]),
        ctx.route("/ipfs/{cid}", ipfs, task_param=None),
        *chain_routes(ledger, lambda item: answer(item, None)),
    ]


_CHAIN_METHODS = frozenset({"eth_blockNumber", "eth_getBlockByNumber", "eth_getLogs"})


def _chain_call(ledger: Ledger, call_id: Any, method: str, params: Any) -> dict[str, Any]:
    """The calls the ledger answers: the head, a block header, logs."""
    params = params if isinstance(params, list) else []
    head = ledger.sync()
    if method == "eth_blockNumber":
        return _result(call_id, hex(head))
    try:
        if method == "eth_getBlockByNumber":
            wanted = ledger.block_number(params[0] if params else "latest", head)
            return _result(call_id, ledger.block(min(wanted, head)))
        if not params or not isinstance(params[0], dict):
            raise ValueError("eth_getLogs takes one filter object")
        return _result(call_id, ledger.get_logs(params[0]))
    except ValueError as exc:
        return _rpc_error_body(call_id, -32602, f"invalid params: {exc}")


def _wallet_answer(
    wallet: Wallet, call_id: Any, method: str, params: Any, fault: Fault | None
) -> dict[str, Any]:
    """A wallet call; an `api_error` fault answers it with its error, except that on
    `eth_sendRawTransaction` with `body={"revert": true}` the transaction is mined reverted."""
    force_revert = False
    if fault is not None:
        if not (method == "eth_sendRawTransaction" and isinstance(fault.body, dict)
                and fault.body.get("revert")):
            return _rpc_error_body(call_id, *_fault_error(fault))
        force_revert = True
    try:
        return _result(call_id, wallet_call(wallet, method, params, force_revert=force_revert))
    except NodeError as exc:
        return _rpc_error_body(call_id, exc.code, exc.message, exc.data)


def _empty_deal() -> bytes:
    """What the hub returns for an unknown deal: every field zero."""
    zero = (_ZERO_ADDRESS, _ZERO_ADDRESS, 0)
    deal = (zero, zero, zero, 0, 0, _ZERO32, _ZERO_ADDRESS, _ZERO_ADDRESS, _ZERO_ADDRESS,
            "", 0, 0, 0, 0, 0, _ZERO_ADDRESS)
    return _encode([_DEAL_TYPE], [deal])


def _api_error(fault: Fault) -> Response:
    return _RpcFault(fault)


def create_deal(
    client: EmulatorClient,
    steps: Sequence[Step | Mapping[str, Any]] | Sequence[Sequence[Step | Mapping[str, Any]]],
    *,
    count: int = 1,
    deal_id: str | None = None,
    **extra: Any,
) -> tuple[str, list[str]]:
    """Create a deal of `count` scripted tasks with their on-chain ids; (deal id, task ids).

    `steps` is one script for every task or a list of one script per task; `extra` (such as
    `category`, `deadline_in`) applies to every task.
    """
    deal = (deal_id or "0x" + secrets.token_hex(32)).lower()
    if "deadline_in" in extra:  # one start time for every task of the deal
        time_ref = CATEGORIES[int(extra.get("category", 0))][2]
        deadline = int(time.time() + float(extra.pop("deadline_in")))
        extra["start_time"] = deadline - FINAL_DEADLINE_RATIO * time_ref
    scripts: list[Any]
    if steps and isinstance(steps[0], Sequence) and not isinstance(steps[0], Mapping):
        scripts = list(steps)
        count = len(scripts)
    else:
        scripts = [steps] * count
    ids = [
        client.create_task(
            "iexec", script, id=task_id_of(deal, idx), deal_id=deal, idx=idx,
            bot_size=count, **extra,
        )
        for idx, script in enumerate(scripts)
    ]
    return deal, ids


def _derive_id(extra: Mapping[str, Any]) -> str | None:
    """A task created with its deal gets its on-chain id, so `--deal-id` watches agree."""
    deal = extra.get("deal_id")
    return None if deal is None else task_id_of(deal.lower(), int(extra.get("idx", 0)))


API = EmulatedApi(
    name="iexec",
    routes=routes,
    new_task_id=lambda: "0x" + secrets.token_hex(32),
    default_steps=DEFAULT_STEPS,
    api_error=_api_error,
    normalize_id=normalize_id,
    derive_id=_derive_id,
    check_step=_check_step,
    check_extra=_check_extra,
)
