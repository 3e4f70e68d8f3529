"""iExec: tasks of the PoCo hub contract, read over Ethereum JSON-RPC with the semantics of
the iExec SDK's ``obsTask``. The observation path: the task model, the id rule, the batch
request, the reading.

Each poll round asks the hub's event logs which watched tasks moved and reads only those with
``viewTask`` (``_logs``); with ``logs=False`` it is one JSON-RPC batch of ``eth_call
viewTask(bytes32)`` per watched task (the hub splits rounds by ``batch_size``). With ``ws_url``,
``eth_subscribe("logs")`` pushes changes as blocks land (``_ws``). A task not yet initialized on
chain reads back with a null ``dealid``; given its deal id, it is UNSET until the deal's final
deadline (``startTime + final_deadline_ratio * workClockTimeRef``), read once per deal (see
``_deals``). TIMEOUT is not on chain: like the SDK, it is computed from the final deadline and the
local clock at each read.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Hashable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, Literal, cast
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from reactivex import Observable

from ..._errors import ConfigurationError, InvalidTaskId, TaskNotFound, TransientFault
from ..._models import TaskEvent, TaskState
from ..._policy import PollPolicy
from ..._types import Answer, Feed, snapshot_of
from .._answers import slim_allowed
from .._base import Backend, Reading, TaskRef
from . import _abi as abi
from ._chains import CHAINS, DEFAULT_IPFS_GATEWAY, chain_preset
from ._claim import TaskClaim
from ._deals import DealObservation, IExecDeal, deals_for
from ._logs import read_with_logs
from ._results import ResultDownload
from ._rpc import call_batch
from ._signer import IExecSigner, make_signer

__all__ = ["STATUS_NAMES", "IExecBackend", "IExecTask", "IExecTaskResults"]

StatusName = Literal["UNSET", "ACTIVE", "REVEALING", "COMPLETED", "FAILED", "TIMEOUT"]

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
#: Set while ``status`` reads: its round reads the task itself, never a logs round.
_direct: ContextVar[bool] = ContextVar("reactive_tasks_iexec_direct", default=False)
_BYTES32 = re.compile(r"^0x[0-9a-fA-F]{64}$")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")


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


class IExecBackend(DealObservation, ResultDownload, TaskClaim, Backend[IExecTask]):
    """Watches iExec tasks on a PoCo hub through an Ethereum JSON-RPC endpoint.

    ``observe(task_id, deal_id=...)`` emits the SDK's ``obsTask`` messages as event kinds and
    its ``statusName`` as ``native_status``; ``observe_deal`` (``_deals``) watches every task of
    a deal, ``fetch_results`` (``_results``) downloads an IPFS result, and with a ``signer``
    (a hex private key or an eth-account account) ``claim`` (``_claim``) claims a timed-out task.
    """

    name = "iexec"
    max_batch: int | None = 100
    secret_url_path = True

    def __init__(
        self,
        rpc_url: str,
        hub_address: str,
        *,
        ipfs_gateway: str = DEFAULT_IPFS_GATEWAY,
        batch_size: int = 100,
        logs: bool = True,
        ws_url: str | None = None,
        policy: PollPolicy | None = None,
        signer: object = None,
        **options: Any,
    ) -> None:
        abi.require()
        super().__init__(rpc_url, policy=policy, **options)
        if ws_url is not None and (
            not isinstance(ws_url, str) or not ws_url.startswith(("ws://", "wss://"))
        ):
            raise ConfigurationError("ws_url must be a ws:// or wss:// URL")
        #: What signs ``claim``'s transaction (None: read-only); its repr shows the address only.
        self.signer: IExecSigner | None = (
            None if signer is None else make_signer(signer, self.secrets)
        )
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
        self.batch_size = self.max_batch = batch_size
        #: Each round reads only the tasks the hub's logs say moved (one round, all tasks).
        self.logs = bool(logs)
        if self.logs:
            self.max_batch = None
        self.ws_url = ws_url
        if ws_url is not None:
            self.secrets.add_url(ws_url, path_is_secret=True)

    @classmethod
    def for_chain(cls, chain: str | int, **kwargs: Any) -> IExecBackend:
        """A backend for a public chain of ``CHAINS``, by name or chain id.

        Keyword arguments override the preset (``rpc_url=`` for your own node) or go to
        the constructor (``policy=``, ``client=`` ...).
        """
        preset = chain_preset(chain)
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

    def _deal_id(self, deal_id: str) -> str:
        return _bytes32(deal_id, "deal id")

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
        """One fresh reading of a task, like the SDK's ``show`` (a ``viewTask`` read even with
        ``logs``); transient faults retried."""
        token = _direct.set(True)
        try:
            return await self._status(self._ref(task_id, deal_id))
        finally:
            _direct.reset(token)

    def _ref(self, task_id: str, deal_id: str | None) -> TaskRef:
        deal = None if deal_id is None else self._deal_id(deal_id)
        return self.task_ref(task_id, deal_id=deal)

    # -- reading tasks -------------------------------------------------------------------

    async def fetch(self, ref: TaskRef) -> IExecTask:
        ((_, outcome),) = await self._read_tasks([ref])
        if isinstance(outcome, BaseException):
            raise outcome
        return snapshot_of(outcome)

    async def fetch_many(self, refs: Sequence[TaskRef]) -> AsyncIterator[tuple[TaskRef, _Outcome]]:
        """With ``logs``, the round of ``_logs``; else every task the hub gives (at most
        ``batch_size``) in one JSON-RPC batch request."""
        outcomes: Sequence[tuple[TaskRef, _Outcome]]
        try:
            if self.logs and not _direct.get():
                outcomes = await read_with_logs(self, refs)
            else:
                outcomes = await self._read_tasks(refs)
        except Exception as exc:
            outcomes = [(ref, exc) for ref in refs]
        for item in outcomes:  # at most batch_size (100): settled in one go, as one round
            yield item

    async def _read_tasks(self, refs: Sequence[TaskRef]) -> list[tuple[TaskRef, _Outcome]]:
        calls = [abi.call_data(abi.VIEW_TASK, ("bytes32",), (_raw32(r.task_id),)) for r in refs]
        shown = refs[0].task_id if len(refs) == 1 else None
        answers = await call_batch(self, calls, shown, owners=[r.task_id for r in refs])
        now = int(time.time())  # the SDK's clock: Math.floor(Date.now() / 1000)
        decoded: list[abi.TaskTuple | Answer[IExecTask] | BaseException] = []
        wanted_deals: set[str] = set()
        slim = slim_allowed(self, IExecBackend)
        for ref, answer in zip(refs, answers, strict=True):
            if isinstance(answer, BaseException):
                decoded.append(answer)
                continue
            lazy = self._slim_answer(ref, answer, now) if slim else None
            if lazy is not None:
                decoded.append(lazy)
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
        deals = await deals_for(self, wanted_deals, shown) if wanted_deals else {}
        return [
            (ref, self._snapshot(ref, answer, deals, now))
            for ref, answer in zip(refs, decoded, strict=True)
        ]

    def _slim_answer(self, ref: TaskRef, data: bytes, now: int) -> Answer[IExecTask] | None:
        """The task's change key from the words at fixed places of its ``viewTask`` result; the
        tuple is decoded only when the hub asks. None (decode now) for a task not initialized
        on chain, an unknown status or an unusual layout."""
        head = abi.task_head(data)
        if head is None or head[1] == _NULL_RAW32 or head[0] not in STATUS_NAMES:
            return None
        status, _, final_deadline = head
        key = (status, _status_name(status, final_deadline, now)[0])

        def build(raw: bytes) -> IExecTask:
            try:
                task = abi.decode_task(raw)
            except abi.AbiError as exc:
                raise self.protocol_error(f"viewTask: {exc}", ref.task_id) from None
            snapshot = self._snapshot(ref, task, {}, now)
            if isinstance(snapshot, BaseException):
                raise snapshot
            return cast(IExecTask, snapshot)  # from a decoded tuple: never an Answer

        return Answer(key, data, build)

    def _snapshot(
        self,
        ref: TaskRef,
        task: abi.TaskTuple | Answer[IExecTask] | BaseException,
        deals: Mapping[str, IExecDeal | BaseException],
        now: int,
    ) -> _Outcome:
        if isinstance(task, BaseException | Answer):
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
            status_name, timed_out = _status_name(0, deal.finalTime, now)
            return IExecTask(
                taskid=ref.task_id,
                dealid=deal_id,
                status=0,
                statusName=status_name,
                taskTimedOut=timed_out,
                finalDeadline=deal.finalTime,
            )
        if task.status not in STATUS_NAMES:
            return self.protocol_error(f"unknown task status {task.status}", ref.task_id)
        status_name, timed_out = _status_name(task.status, task.finalDeadline, now)
        return IExecTask(
            taskid=ref.task_id,
            statusName=status_name,
            taskTimedOut=timed_out,
            **{**task._asdict(), "results": _decode_results(task.results)},
        )

    def at_time(self, snapshot: IExecTask, now: int) -> IExecTask:
        """``snapshot`` as a read at unix time ``now`` would give it (TIMEOUT moves with time)."""
        if not snapshot.taskTimedOut and now < (snapshot.finalDeadline or 0):
            return snapshot  # read before its deadline and still before it: nothing moved
        status_name, timed_out = _status_name(snapshot.status, snapshot.finalDeadline or 0, now)
        if (status_name, timed_out) == (snapshot.statusName, snapshot.taskTimedOut):
            return snapshot
        return snapshot.model_copy(update={"statusName": status_name, "taskTimedOut": timed_out})

    def interpret(self, snapshot: IExecTask, ref: TaskRef) -> Reading:
        return Reading(_STATES[snapshot.statusName], snapshot.statusName)

    def change_key(self, snapshot: IExecTask, reading: Reading) -> Hashable:
        """obsTask emits when ``status`` changes or the task has timed out: the computed
        ``statusName`` turns TIMEOUT with time alone, so it is part of the key."""
        return snapshot.status, snapshot.statusName

    def order_key(self, snapshot: IExecTask, reading: Reading) -> tuple[int, ...] | None:
        """Ended (COMPLETED, FAILED, TIMEOUT) last; before that the number of contributions,
        which only grows; at one count ACTIVE is newer than REVEALING: a task reaches REVEALING
        in the contribution that makes consensus, and goes back to ACTIVE only by a reopen."""
        ended = 1 if reading.state.terminal else 0
        reopened = 1 if snapshot.status == 1 else 0
        return ended, len(snapshot.contributors), reopened

    def open_feed(self) -> Feed | None:
        """With ``ws_url``, ``eth_subscribe("logs")`` for the watched tasks (``_ws``)."""
        if self.ws_url is None:
            return None
        from ._ws import LogFeed

        return LogFeed(self, self.ws_url)


_Outcome = IExecTask | Answer[IExecTask] | BaseException
_NULL_RAW32 = bytes(32)


def changes_at(snapshot: IExecTask) -> int | None:
    """The unix time from which ``at_time`` gives something else of ``snapshot`` (a read would,
    with nothing new on chain): its final deadline, unless it completed or timed out; else None."""
    if snapshot.taskTimedOut or snapshot.status == COMPLETED:
        return None
    return snapshot.finalDeadline or 0


def _status_name(status: int, final_deadline: int, now: int) -> tuple[StatusName, bool]:
    """The SDK's ``statusName`` and ``taskTimedOut`` of a known on-chain status: TIMEOUT once
    the final deadline passed before the task completed or failed."""
    timed_out = status != COMPLETED and now >= final_deadline
    return ("TIMEOUT" if status < COMPLETED and timed_out else STATUS_NAMES[status]), timed_out


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
