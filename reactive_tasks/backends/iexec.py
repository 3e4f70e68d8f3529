"""iExec: tasks of the PoCo hub contract, read over Ethereum JSON-RPC with the semantics of
the iExec SDK's ``obsTask``.

Each poll round is one JSON-RPC batch of ``eth_call viewTask(bytes32)`` per watched task. A task
not yet initialized on chain reads back with a null ``dealid``; given its deal id, it is UNSET
until the deal's final deadline (``startTime + final_deadline_ratio * workClockTimeRef``), which
is read once per deal and cached. TIMEOUT is not on chain: like the SDK, it is computed from the
final deadline and the local clock at each read.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import reactivex
from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError
from reactivex import Observable
from reactivex import operators as ops

from .._errors import (
    BackendError,
    ConfigurationError,
    InvalidTaskId,
    NoTaskResult,
    ResultNotOnIpfs,
    TaskNotFound,
    TransientFault,
)
from .._hub import fetch_once
from .._models import TaskEvent, TaskState
from .._policy import PollPolicy
from .._rx import observe_coroutine
from . import _iexec_abi as abi
from ._answers import entries_by_key
from ._base import Backend, Reading, TaskRef

__all__ = [
    "CHAINS",
    "STATUS_NAMES",
    "IExecBackend",
    "IExecChain",
    "IExecDeal",
    "IExecDealEvent",
    "IExecResource",
    "IExecTask",
    "IExecTaskResults",
    "NoTaskResult",
    "ResultNotOnIpfs",
]

StatusName = Literal["UNSET", "ACTIVE", "REVEALING", "COMPLETED", "FAILED", "TIMEOUT"]
DealEventKind = Literal["DEAL_UPDATED", "DEAL_COMPLETED", "DEAL_TIMEDOUT"]

#: The SDK's ``TASK_STATUS_MAP``: on-chain ``TaskStatusEnum`` values to their names.
STATUS_NAMES: Mapping[int, StatusName] = {
    0: "UNSET", 1: "ACTIVE", 2: "REVEALING", 3: "COMPLETED", 4: "FAILED",
}
COMPLETED = 3
FAILED = 4

_STATES: Mapping[str, TaskState] = {
    "UNSET": TaskState.PENDING,
    "ACTIVE": TaskState.RUNNING,
    "REVEALING": TaskState.RUNNING,
    "COMPLETED": TaskState.COMPLETED,
    "FAILED": TaskState.FAILED,
    "TIMEOUT": TaskState.TIMED_OUT,
}
_BYTES32 = re.compile(r"^0x[0-9a-fA-F]{64}$")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_NULL_ADDRESS = "0x" + "00" * 20
_REVERT_SELECTORS = ("0x08c379a0", "0x4e487b71")  # Error(string), Panic(uint256)
_DEAL_CACHE_SIZE = 1024
_MAX_ERROR_TEXT = 200


# -- chain presets --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IExecChain:
    """A public chain iExec runs on: where its RPC, PoCo hub and IPFS gateway are."""

    name: str
    chain_id: int
    rpc_url: str
    hub_address: str
    ipfs_gateway: str


# Values from the iExec SDK's chain configuration (src/common/utils/config.js, `networkConfigs`):
# arbitrum-mainnet and arbitrum-sepolia-testnet as shipped in iexec 9.0.1; bellecour (chain 134,
# the iExec sidechain) as shipped in iexec 8.x, dropped from the SDK's presets in 9.0.
CHAINS: Mapping[str, IExecChain] = {
    chain.name: chain
    for chain in (
        IExecChain(
            "arbitrum-mainnet", 42161, "https://arb1.arbitrum.io/rpc",
            "0x098bFCb1E50ebcA0BaA92C12eA0c3F045A1aD9f0",
            "https://ipfs-gateway.arbitrum-mainnet.iex.ec",
        ),
        IExecChain(
            "arbitrum-sepolia-testnet", 421614, "https://sepolia-rollup.arbitrum.io/rpc",
            "0xB2157BF2fAb286b2A4170E3491Ac39770111Da3E",
            "https://ipfs-gateway.arbitrum-sepolia-testnet.iex.ec",
        ),
        IExecChain(
            "bellecour", 134, "https://bellecour.iex.ec",
            "0x3eca1B216A7DF1C7689aEb259fFB83ADFB894E7f",
            "https://ipfs-gateway.v8-bellecour.iex.ec",
        ),
    )
}
DEFAULT_IPFS_GATEWAY = CHAINS["arbitrum-mainnet"].ipfs_gateway


# -- errors ---------------------------------------------------------------------------------


# -- models ---------------------------------------------------------------------------------


class IExecTaskResults(BaseModel):
    """A task's ``results`` decoded as the SDK does: UTF-8 JSON, else ``{"storage": "none"}``."""

    model_config = ConfigDict(frozen=True, extra="allow")

    storage: str = "none"
    location: str | None = None


class IExecTask(BaseModel):
    """A task as the SDK's ``show`` returns it: the ``IexecLibCore_v5.Task`` fields plus
    ``statusName`` and ``taskTimedOut``.

    A task not yet initialized (observed with its deal id) has only ``taskid``, ``dealid``,
    ``status`` 0, ``statusName``, ``taskTimedOut`` and the deal's computed ``finalDeadline``.
    """

    model_config = ConfigDict(frozen=True)

    taskid: str
    dealid: str
    status: int = Field(ge=0, le=4)
    statusName: StatusName
    taskTimedOut: bool
    idx: int | None = None
    timeref: int | None = None
    contributionDeadline: int | None = None
    revealDeadline: int | None = None
    finalDeadline: int | None = None
    consensusValue: str | None = None
    revealCounter: int | None = None
    winnerCounter: int | None = None
    contributors: tuple[str, ...] = ()
    resultDigest: str | None = None
    results: IExecTaskResults = IExecTaskResults()
    resultsTimestamp: int | None = None
    resultsCallback: str | None = None


class IExecResource(BaseModel):
    """``IexecLibCore_v5.Resource``: the app, dataset or workerpool of a deal."""

    model_config = ConfigDict(frozen=True)

    pointer: str
    owner: str
    price: int


class IExecDeal(BaseModel):
    """A deal as the SDK's ``deal.show`` returns it: the ``IexecLibCore_v5.Deal`` fields plus
    ``dealid``, ``finalTime`` and the ids of its tasks by index."""

    model_config = ConfigDict(frozen=True)

    dealid: str
    app: IExecResource
    dataset: IExecResource
    workerpool: IExecResource
    trust: int
    category: int
    tag: str
    requester: str
    beneficiary: str
    callback: str
    params: str
    startTime: int
    botFirst: int
    botSize: int
    workerStake: int
    schedulerRewardRatio: int
    sponsor: str
    finalTime: int
    tasks: dict[int, str]


class IExecDealEvent(BaseModel):
    """One change of a deal's tasks, like the SDK's ``obsDeal`` messages.

    ``failed_tasks_count`` counts tasks that ended without completing (FAILED or TIMEOUT);
    ``tasks`` holds each task's latest event, by task index.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    kind: DealEventKind
    deal_id: str
    tasks_count: int
    completed_tasks_count: int
    failed_tasks_count: int
    deal: IExecDeal
    tasks: dict[int, TaskEvent[Any]]

    @property
    def terminal(self) -> bool:
        """True when every task of the deal has ended (the last event)."""
        return self.kind != "DEAL_UPDATED"


class _RpcError(BaseModel):
    code: int
    message: str = ""
    data: Any = None


class _RpcReply(BaseModel):
    id: int | str | None = None
    result: Any = None
    error: _RpcError | None = None


class _RpcBatchReply(RootModel[list[Any] | dict[str, Any]]):
    """A batch answer's envelope; its replies are read one by one (see ``_answers``)."""


# -- the backend ----------------------------------------------------------------------------


class IExecBackend(Backend[IExecTask]):
    """Watches iExec tasks on a PoCo hub through an Ethereum JSON-RPC endpoint.

    ``observe(task_id, deal_id=...)`` emits the SDK's ``obsTask`` messages as event kinds and
    its ``statusName`` as ``native_status``; ``fetch_results`` downloads an IPFS result.
    """

    name = "iexec"
    max_batch = 100
    secret_url_path = True

    def __init__(
        self,
        rpc_url: str,
        hub_address: str,
        *,
        ipfs_gateway: str = DEFAULT_IPFS_GATEWAY,
        batch_size: int = 100,
        policy: PollPolicy | None = None,
        **options: Any,
    ) -> None:
        abi.require()
        super().__init__(rpc_url, policy=policy, **options)
        if not isinstance(hub_address, str) or not _ADDRESS.fullmatch(hub_address):
            raise ConfigurationError(
                f"hub_address must be a 0x-prefixed address, got {hub_address!r}"
            )
        if not isinstance(ipfs_gateway, str) or not ipfs_gateway.startswith(("http://", "https://")):
            raise ConfigurationError("ipfs_gateway must be an http(s) URL")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigurationError("batch_size must be a positive int")
        self.hub_address = hub_address.lower()
        self.ipfs_gateway = ipfs_gateway.rstrip("/")
        self.batch_size = batch_size
        self._deals: OrderedDict[str, IExecDeal] = OrderedDict()
        self._pending_deals: dict[tuple[asyncio.AbstractEventLoop, str], asyncio.Future[Any]] = {}
        self._ratio: int | None = None
        self._categories: dict[int, int] = {}
        self._cache_lock = threading.Lock()

    @classmethod
    def for_chain(cls, chain: str | int, **kwargs: Any) -> IExecBackend:
        """A backend for a public chain of ``CHAINS``, by name or chain id.

        Keyword arguments override the preset (``rpc_url=`` for your own node) or go to
        the constructor (``policy=``, ``client=`` ...).
        """
        preset = next(
            (c for c in CHAINS.values() if chain in (c.name, c.chain_id, str(c.chain_id))), None
        )
        if preset is None:
            raise ConfigurationError(
                f"unknown iExec chain {chain!r}; known: {', '.join(sorted(CHAINS))}"
            )
        rpc_url = kwargs.pop("rpc_url", preset.rpc_url)
        hub_address = kwargs.pop("hub_address", preset.hub_address)
        kwargs.setdefault("ipfs_gateway", preset.ipfs_gateway)
        return cls(rpc_url, hub_address, **kwargs)

    def __repr__(self) -> str:
        # Only the host: node providers put API keys in the URL path.
        host = urlsplit(self.base_url).hostname or "?"
        return f"IExecBackend(rpc={host!r}, hub_address={self.hub_address!r})"

    # -- identity ------------------------------------------------------------------------

    def validate_task_id(self, task_id: str) -> str:
        return _bytes32(task_id, "task id")

    def observe(
        self, task_id: str, *, deal_id: str | None = None, policy: PollPolicy | None = None
    ) -> Observable[TaskEvent[IExecTask]]:
        """A cold Observable of ``task_id``'s changes, with obsTask's messages and statuses.

        With ``deal_id`` a task not yet initialized on chain is UNSET (or TIMEOUT after the
        deal's final deadline) instead of not found.
        """
        return self._observe(self._ref(task_id, deal_id), policy)

    async def status(
        self, task_id: str, *, deal_id: str | None = None
    ) -> TaskEvent[IExecTask]:
        """One fresh reading of a task, like the SDK's ``show``; transient faults retried."""
        return await self._status(self._ref(task_id, deal_id))

    def _ref(self, task_id: str, deal_id: str | None) -> TaskRef:
        deal = None if deal_id is None else _bytes32(deal_id, "deal id")
        return self.task_ref(task_id, deal_id=deal)

    # -- reading tasks -------------------------------------------------------------------

    async def fetch(self, ref: TaskRef) -> IExecTask:
        async for _, outcome in self.fetch_many([ref]):
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome
        raise TransientFault("no answer for the task")

    async def fetch_many(
        self, refs: Sequence[TaskRef]
    ) -> AsyncIterator[tuple[TaskRef, IExecTask | BaseException]]:
        """Every task of a chunk of ``batch_size`` in one JSON-RPC batch (one HTTP request)."""
        for start in range(0, len(refs), self.batch_size):
            chunk = refs[start : start + self.batch_size]
            try:
                outcomes = await self._read_tasks(chunk)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                outcomes = [(ref, exc) for ref in chunk]
            for item in outcomes:
                yield item

    async def _read_tasks(
        self, refs: Sequence[TaskRef]
    ) -> list[tuple[TaskRef, IExecTask | BaseException]]:
        calls = [abi.call_data(abi.VIEW_TASK, ("bytes32",), (_raw32(r.task_id),)) for r in refs]
        shown = refs[0].task_id if len(refs) == 1 else None
        answers = await self._call_batch(calls, shown, owners=[r.task_id for r in refs])
        now = int(time.time())  # the SDK's clock: Math.floor(Date.now() / 1000)
        decoded: list[abi.TaskTuple | BaseException] = []
        wanted_deals: set[str] = set()
        for ref, answer in zip(refs, answers, strict=True):
            if isinstance(answer, BaseException):
                decoded.append(answer)
                continue
            try:
                task = abi.decode_task(answer)
            except abi.AbiError as exc:
                decoded.append(self.protocol_error(f"viewTask: {exc}", ref.task_id))
                continue
            deal = ref.get("deal_id")
            if task.dealid == abi.NULL_BYTES32 and deal is not None:
                wanted_deals.add(deal)
            decoded.append(task)
        deals = await self._deals_for(wanted_deals, shown) if wanted_deals else {}
        return [
            (ref, self._snapshot(ref, answer, deals, now))
            for ref, answer in zip(refs, decoded, strict=True)
        ]

    def _snapshot(
        self,
        ref: TaskRef,
        task: abi.TaskTuple | BaseException,
        deals: Mapping[str, IExecDeal | BaseException],
        now: int,
    ) -> IExecTask | BaseException:
        if isinstance(task, BaseException):
            return task
        if task.dealid == abi.NULL_BYTES32:
            deal_id = ref.get("deal_id")
            if deal_id is None:
                return TaskNotFound(
                    "No task found (not initialized on chain; observe it with its deal_id)",
                    backend=self.name,
                    task_id=ref.task_id,
                )
            deal = deals.get(deal_id)
            if deal is None:
                return TransientFault("the deal read left this task out")
            if isinstance(deal, BaseException):
                return deal
            timed_out = now >= deal.finalTime
            return IExecTask(
                taskid=ref.task_id,
                dealid=deal_id,
                status=0,
                statusName="TIMEOUT" if timed_out else "UNSET",
                taskTimedOut=timed_out,
                finalDeadline=deal.finalTime,
            )
        if task.status not in STATUS_NAMES:
            return self.protocol_error(f"unknown task status {task.status}", ref.task_id)
        timed_out = task.status != COMPLETED and now >= task.finalDeadline
        status_name: StatusName = (
            "TIMEOUT" if task.status < COMPLETED and timed_out else STATUS_NAMES[task.status]
        )
        return IExecTask(
            taskid=ref.task_id,
            statusName=status_name,
            taskTimedOut=timed_out,
            **{**task._asdict(), "results": _decode_results(task.results)},
        )

    def interpret(self, snapshot: IExecTask, ref: TaskRef) -> Reading:
        return Reading(_STATES[snapshot.statusName], snapshot.statusName)

    def change_key(self, snapshot: IExecTask, reading: Reading) -> Hashable:
        """obsTask emits when ``status`` changes or the task has timed out: the computed
        ``statusName`` turns TIMEOUT with time alone, so it is part of the key."""
        return snapshot.status, snapshot.statusName

    # -- deals ---------------------------------------------------------------------------

    async def _deals_for(
        self, deal_ids: Iterable[str], shown: str | None
    ) -> dict[str, IExecDeal | BaseException]:
        """The deals (with their final time), from the cache or read once per deal.

        Reads of one deal already in flight on this loop are awaited, not repeated.
        """
        loop = asyncio.get_running_loop()
        out: dict[str, IExecDeal | BaseException] = {}
        waiting: dict[str, asyncio.Future[Any]] = {}
        to_read: list[str] = []
        with self._cache_lock:
            for deal_id in deal_ids:
                cached = self._deals.get(deal_id)
                if cached is not None:
                    self._deals.move_to_end(deal_id)
                    out[deal_id] = cached
                elif (loop, deal_id) in self._pending_deals:
                    waiting[deal_id] = self._pending_deals[(loop, deal_id)]
                else:
                    self._pending_deals[(loop, deal_id)] = loop.create_future()
                    to_read.append(deal_id)
        if to_read:
            try:
                read = await self._read_deals(to_read, shown)
            except asyncio.CancelledError:
                # Others awaiting this read retry it at their next poll.
                cancelled = TransientFault("the deal read was cancelled")
                self._settle_pending(loop, {d: cancelled for d in to_read})
                raise
            except Exception as exc:
                read = {d: exc for d in to_read}
            self._settle_pending(loop, read)
            out.update(read)
        for deal_id, future in waiting.items():
            out[deal_id] = await asyncio.shield(future)
        return out

    def _settle_pending(
        self, loop: asyncio.AbstractEventLoop, read: Mapping[str, IExecDeal | BaseException]
    ) -> None:
        with self._cache_lock:
            for deal_id, outcome in read.items():
                future = self._pending_deals.pop((loop, deal_id), None)
                if future is not None and not future.done():
                    future.set_result(outcome)
                if isinstance(outcome, IExecDeal):
                    self._deals[deal_id] = outcome
                    while len(self._deals) > _DEAL_CACHE_SIZE:
                        self._deals.popitem(last=False)

    async def _read_deals(
        self, deal_ids: Sequence[str], shown: str | None
    ) -> dict[str, IExecDeal | BaseException]:
        """``viewDeal`` of each deal plus ``final_deadline_ratio`` in one batch, then the
        categories not yet known in a second one."""
        calls = [abi.call_data(abi.VIEW_DEAL, ("bytes32",), (_raw32(d),)) for d in deal_ids]
        need_ratio = self._ratio is None
        if need_ratio:
            calls.append(abi.call_data(abi.FINAL_DEADLINE_RATIO))
        answers = await self._call_batch(calls, shown)
        if need_ratio:
            ratio_answer = answers.pop()
            if isinstance(ratio_answer, BaseException):
                return {d: ratio_answer for d in deal_ids}
            try:
                self._ratio = abi.decode_uint(ratio_answer)
            except abi.AbiError as exc:
                err = self.protocol_error(f"final_deadline_ratio: {exc}", shown)
                return {d: err for d in deal_ids}
        ratio = self._ratio
        assert ratio is not None
        out: dict[str, IExecDeal | BaseException] = {}
        raw: dict[str, abi.DealTuple] = {}
        for deal_id, answer in zip(deal_ids, answers, strict=True):
            if isinstance(answer, BaseException):
                out[deal_id] = answer
                continue
            try:
                deal = abi.decode_deal(answer)
            except abi.AbiError as exc:
                out[deal_id] = self.protocol_error(f"viewDeal: {exc}", shown)
                continue
            if deal.app.pointer.lower() == _NULL_ADDRESS:
                out[deal_id] = TaskNotFound(
                    f"No deal found: {deal_id}", backend=self.name, task_id=shown
                )
                continue
            raw[deal_id] = deal
        categories = await self._categories_for({d.category for d in raw.values()}, shown)
        for deal_id, deal in raw.items():
            category = categories[deal.category]
            if isinstance(category, BaseException):
                out[deal_id] = category
                continue
            out[deal_id] = IExecDeal(
                dealid=deal_id,
                **{
                    **deal._asdict(),
                    "app": deal.app._asdict(),
                    "dataset": deal.dataset._asdict(),
                    "workerpool": deal.workerpool._asdict(),
                },
                finalTime=deal.startTime + ratio * category,
                tasks={
                    i: abi.task_id_of(deal_id, i)
                    for i in range(deal.botFirst, deal.botFirst + deal.botSize)
                },
            )
        return out

    async def _categories_for(
        self, category_ids: set[int], shown: str | None
    ) -> dict[int, int | BaseException]:
        """``workClockTimeRef`` of each category; categories never change, so they are cached."""
        out: dict[int, int | BaseException] = {}
        missing = []
        for cat in category_ids:
            if cat in self._categories:
                out[cat] = self._categories[cat]
            else:
                missing.append(cat)
        if not missing:
            return out
        calls = [abi.call_data(abi.VIEW_CATEGORY, ("uint256",), (c,)) for c in missing]
        answers = await self._call_batch(calls, shown)
        for cat, answer in zip(missing, answers, strict=True):
            if isinstance(answer, BaseException):
                out[cat] = answer
                continue
            try:
                out[cat] = self._categories[cat] = abi.decode_category(answer).workClockTimeRef
            except abi.AbiError as exc:
                out[cat] = self.protocol_error(f"viewCategory: {exc}", shown)
        return out

    async def _deal(self, deal_id: str) -> IExecDeal:
        """One deal (cached); a missing deal raises ``TaskNotFound``."""
        outcome = (await self._deals_for([deal_id], None))[deal_id]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def observe_deal(
        self, deal_id: str, *, policy: PollPolicy | None = None
    ) -> Observable[IExecDealEvent]:
        """One stream over all ``botSize`` tasks of a deal, like the SDK's ``obsDeal``.

        After every task has reported once, each task event gives one ``IExecDealEvent``
        with the counts of completed and failed tasks; the stream completes (after a
        DEAL_COMPLETED or DEAL_TIMEDOUT event) when every task has ended. Task polls go
        through the engine, batched with every other watched task.
        """
        deal_id = _bytes32(deal_id, "deal id")
        chosen = policy or self.policy
        if not isinstance(chosen, PollPolicy):
            raise ConfigurationError("policy must be a PollPolicy")
        reader = _DealReader(self)

        async def read() -> IExecDeal:
            event: TaskEvent[IExecDeal] = await fetch_once(reader, TaskRef(deal_id), chosen)
            return event.snapshot

        def watch(deal: IExecDeal) -> Observable[IExecDealEvent]:
            if not deal.tasks:
                raise self.protocol_error("the deal has no tasks", None)
            latest: dict[int, TaskEvent[IExecTask]] = {}

            def tagged(idx: int, task_id: str) -> Observable[tuple[int, TaskEvent[IExecTask]]]:
                return self.observe(task_id, deal_id=deal_id, policy=policy).pipe(
                    ops.map(lambda event: (idx, event))
                )

            def ready(item: tuple[int, TaskEvent[IExecTask]]) -> bool:
                latest[item[0]] = item[1]
                return len(latest) == len(deal.tasks)

            def aggregate(_: tuple[int, TaskEvent[IExecTask]]) -> IExecDealEvent:
                return _deal_event(deal, dict(sorted(latest.items())))

            def going_on(event: IExecDealEvent) -> bool:
                return not event.terminal

            merged: Observable[tuple[int, TaskEvent[IExecTask]]] = reactivex.merge(
                *(tagged(i, t) for i, t in deal.tasks.items())
            )
            return merged.pipe(
                ops.filter(ready),
                ops.map(aggregate),
                ops.take_while(going_on, inclusive=True),
            )

        return observe_coroutine(read).pipe(ops.flat_map(watch))

    # -- results -------------------------------------------------------------------------

    async def fetch_results(self, task_id: str) -> bytes:
        """Download a completed task's result archive from the IPFS gateway, like the SDK's
        ``fetchResults``.

        Raises ``NoTaskResult`` when the task is not completed or has no result,
        ``ResultNotOnIpfs`` when it is stored elsewhere; gateway faults raise
        ``BackendUnavailable`` (5xx, 429, network) or ``ProtocolError`` (any other status).
        """
        task = (await self.status(task_id)).snapshot
        shown = task.taskid
        if task.status != COMPLETED:
            raise NoTaskResult(
                f"the task is not completed ({task.statusName})", backend=self.name, task_id=shown
            )
        storage, location = task.results.storage, task.results.location
        if storage == "none":
            raise NoTaskResult("no result uploaded for this task", backend=self.name, task_id=shown)
        if storage != "ipfs":
            raise ResultNotOnIpfs(
                f"the result is stored on {storage[:40]!r}, download not supported",
                backend=self.name,
                task_id=shown,
            )
        if not location or "://" in location or ".." in location:
            raise ResultNotOnIpfs(
                "the result has no usable IPFS location", backend=self.name, task_id=shown
            )
        url = self.ipfs_gateway + (location if location.startswith("/") else "/" + location)
        response = await self.send_retrying(
            lambda: self.send("GET", url, task_id=shown), task_id=shown
        )
        if response.status_code != 200:
            raise self.protocol_error(
                f"the IPFS gateway answered HTTP {response.status_code} for {location[:80]}",
                shown,
            )
        return response.content

    # -- JSON-RPC ------------------------------------------------------------------------

    async def _call_batch(
        self,
        calls: Sequence[str],
        shown: str | None,
        *,
        owners: Sequence[str | None] | None = None,
    ) -> list[bytes | BaseException]:
        """``eth_call`` each data on the hub, all in one JSON-RPC batch request.

        Returns each call's raw result or the error that replaced it, named after its task in
        ``owners`` (``shown`` when not given): a malformed reply fails only its own call. A
        fault of the whole request (HTTP 5xx, a body that is not a JSON list) raises.
        """
        body = [
            {
                "jsonrpc": "2.0",
                "id": i,
                "method": "eth_call",
                "params": [{"to": self.hub_address, "data": data}, "latest"],
            }
            for i, data in enumerate(calls)
        ]
        response = await self.send("POST", self.base_url, json=body, task_id=shown)
        if response.status_code != 200:
            raise self.protocol_error(f"unexpected HTTP {response.status_code} from the RPC", shown)
        parsed = self.parse(_RpcBatchReply, response.content, shown).root
        if isinstance(parsed, dict):
            single = self.parse(_RpcReply, parsed, shown)
            if single.error is not None:
                raise self._rpc_error(single.error, shown)
            raise self.protocol_error("a batch request got a single answer", shown)
        whose = list(owners) if owners is not None else [shown] * len(calls)
        replies = entries_by_key(
            self,
            parsed,
            _RpcReply,
            key=lambda raw: raw["id"],
            wanted=dict(enumerate(whose)),
            what="the JSON-RPC batch answer",
        )
        out: list[bytes | BaseException] = []
        for i, owner in enumerate(whose):
            reply = replies.get(i)
            if reply is None:
                out.append(TransientFault("the batch reply left this call out"))
            elif isinstance(reply, BaseException):
                out.append(reply)
            elif reply.error is not None:
                out.append(self._rpc_error(reply.error, owner))
            else:
                try:
                    out.append(abi.parse_hex(reply.result))
                except abi.AbiError as exc:
                    out.append(self.protocol_error(str(exc), owner))
        return out

    def _rpc_error(self, error: _RpcError, shown: str | None) -> BaseException:
        """A JSON-RPC error: a reverted call is a ``ProtocolError``, other server errors
        (-32000 to -32099) are transient, the rest a ``ProtocolError``."""
        text = f"JSON-RPC error {error.code}: {error.message[:_MAX_ERROR_TEXT]}"
        if _is_revert(error):
            return self.protocol_error(f"the hub call reverted ({text})", shown)
        if -32099 <= error.code <= -32000:
            return TransientFault(text)
        return self.protocol_error(text, shown)


class _DealReader:
    """Reads one deal through the engine's ``fetch_once`` so that its transient faults are
    retried under the policy like any poll (the deal id stands in for a task id)."""

    max_batch = 1

    def __init__(self, backend: IExecBackend) -> None:
        self.name = backend.name
        self._backend = backend

    async def fetch_many(
        self, refs: Sequence[TaskRef]
    ) -> AsyncIterator[tuple[TaskRef, IExecDeal | BaseException]]:
        for ref in refs:
            try:
                yield ref, await self._backend._deal(ref.task_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                yield ref, _with_task_id(exc, ref.task_id)

    def interpret(self, snapshot: Any, ref: TaskRef) -> Reading:
        return Reading(TaskState.PENDING, "DEAL")

    def change_key(self, snapshot: Any, reading: Reading) -> Hashable:
        return reading

    def display_id(self, task_id: str) -> str:
        return task_id


def _with_task_id(exc: Exception, deal_id: str) -> Exception:
    if isinstance(exc, BackendError) and exc.task_id is None:
        exc.task_id = f"(deal) {deal_id}"
    return exc


def _deal_event(deal: IExecDeal, tasks: dict[int, TaskEvent[IExecTask]]) -> IExecDealEvent:
    total = len(tasks)
    completed = sum(1 for e in tasks.values() if e.state is TaskState.COMPLETED)
    failed = sum(1 for e in tasks.values() if e.state in (TaskState.FAILED, TaskState.TIMED_OUT))
    kind: DealEventKind = "DEAL_UPDATED"
    if completed == total:
        kind = "DEAL_COMPLETED"
    elif completed + failed == total:
        kind = "DEAL_TIMEDOUT"
    return IExecDealEvent(
        kind=kind,
        deal_id=deal.dealid,
        tasks_count=total,
        completed_tasks_count=completed,
        failed_tasks_count=failed,
        deal=deal,
        tasks=tasks,
    )


def _bytes32(value: str, what: str) -> str:
    if not isinstance(value, str) or not _BYTES32.fullmatch(value):
        raise InvalidTaskId(f"an iExec {what} is 0x followed by 64 hex digits, got {value!r}")
    return value.lower()


def _raw32(value: str) -> bytes:
    return bytes.fromhex(value[2:])


def _decode_results(raw: bytes) -> IExecTaskResults:
    """The SDK's ``decodeTaskResult``: UTF-8 JSON, or ``{"storage": "none"}``."""
    if raw:
        try:
            return IExecTaskResults.model_validate(json.loads(raw.decode("utf-8")))
        except (ValueError, ValidationError):
            pass
    return IExecTaskResults()


def _is_revert(error: _RpcError) -> bool:
    """Nodes report a reverted ``eth_call`` as code 3 (geth), -32015 (OpenEthereum), or a
    server error whose message or data says so."""
    if error.code in (3, -32015) or "revert" in error.message.lower():
        return True
    data = error.data
    if isinstance(data, dict):
        data = data.get("data")
    return isinstance(data, str) and data.lower().startswith(_REVERT_SELECTORS)

