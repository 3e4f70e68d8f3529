"""Deals: the ``IExecDeal`` model, its single read per deal (through the session's shared-read
cache) and ``observe_deal``, one obsDeal-like stream over every task of a deal."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal, cast

import reactivex
from pydantic import BaseModel, ConfigDict
from reactivex import Observable
from reactivex import operators as ops

from ..._errors import BackendError, ConfigurationError, TaskNotFound, TransientFault
from ..._models import TaskEvent, TaskState
from ..._policy import PollPolicy
from ..._rx import observe_coroutine
from . import _abi as abi
from ._rpc import call_batch

if TYPE_CHECKING:
    from ._source import IExecBackend, IExecTask

__all__ = ["DealObservation", "IExecDeal", "IExecDealEvent", "IExecResource", "deals_for"]

DealEventKind = Literal["DEAL_UPDATED", "DEAL_COMPLETED", "DEAL_TIMEDOUT"]
_NULL_ADDRESS = "0x" + "00" * 20
#: Deals and categories never change on chain: a cached read stays good this long.
_CHAIN_TTL = 24 * 3600.0


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
    # -- the IexecLibCore_v5.Deal fields, in ABI order (viewDeal's tuple is read by these names)
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
    # -- computed
    finalTime: int
    tasks: dict[int, str]


_COMPUTED = ("dealid", "finalTime", "tasks")
_ON_CHAIN = tuple(name for name in IExecDeal.model_fields if name not in _COMPUTED)
_RESOURCES = ("app", "dataset", "workerpool")


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


# -- reading deals ----------------------------------------------------------------------------


async def deals_for(
    backend: IExecBackend, deal_ids: Iterable[str], shown: str | None
) -> dict[str, IExecDeal | BaseException]:
    """The deals (with their final time), each read once and shared by every task needing it."""
    wanted = list(deal_ids)
    outcomes = await asyncio.gather(
        *(read_deal(backend, d, shown) for d in wanted), return_exceptions=True
    )
    return {
        deal_id: TransientFault("the deal read was cancelled")
        if isinstance(outcome, asyncio.CancelledError)
        else outcome
        for deal_id, outcome in zip(wanted, outcomes, strict=True)
    }


async def read_deal(backend: IExecBackend, deal_id: str, shown: str | None) -> IExecDeal:
    """One deal, from the session's cache or read; a missing deal raises ``TaskNotFound``."""
    return await backend.session().cached(
        ("deal", deal_id), lambda: _load_deal(backend, deal_id, shown), ttl=_CHAIN_TTL
    )


async def _load_deal(backend: IExecBackend, deal_id: str, shown: str | None) -> IExecDeal:
    """``viewDeal`` and ``final_deadline_ratio`` in one batch, then the deal's category."""
    view = abi.call_data(abi.VIEW_DEAL, ("bytes32",), (bytes.fromhex(deal_id[2:]),))
    answer, ratio_answer = await call_batch(
        backend, [view, abi.call_data(abi.FINAL_DEADLINE_RATIO)], shown
    )
    if isinstance(ratio_answer, BaseException):
        raise ratio_answer
    try:
        ratio = abi.decode_uint(ratio_answer)
    except abi.AbiError as exc:
        raise backend.protocol_error(f"final_deadline_ratio: {exc}", shown) from None
    if isinstance(answer, BaseException):
        raise answer
    try:
        fields = dict(zip(_ON_CHAIN, abi.decode_deal(answer), strict=True))
    except abi.AbiError as exc:
        raise backend.protocol_error(f"viewDeal: {exc}", shown) from None
    for name in _RESOURCES:
        resource = zip(IExecResource.model_fields, fields[name], strict=True)
        fields[name] = IExecResource(**dict(resource))
    if fields["app"].pointer.lower() == _NULL_ADDRESS:
        raise TaskNotFound(f"No deal found: {deal_id}", backend=backend.name, task_id=shown)
    work_clock = await _work_clock(backend, fields["category"], shown)
    first, size = fields["botFirst"], fields["botSize"]
    return IExecDeal(
        dealid=deal_id,
        **fields,
        finalTime=fields["startTime"] + ratio * work_clock,
        tasks={i: abi.task_id_of(deal_id, i) for i in range(first, first + size)},
    )


async def _work_clock(backend: IExecBackend, category: int, shown: str | None) -> int:
    """``workClockTimeRef`` of a category, read once (categories never change)."""

    async def load() -> int:
        call = abi.call_data(abi.VIEW_CATEGORY, ("uint256",), (category,))
        (answer,) = await call_batch(backend, [call], shown)
        if isinstance(answer, BaseException):
            raise answer
        try:
            return abi.decode_category(answer).workClockTimeRef
        except abi.AbiError as exc:
            raise backend.protocol_error(f"viewCategory: {exc}", shown) from None

    return await backend.session().cached(("category", category), load, ttl=_CHAIN_TTL)


# -- observing a deal ---------------------------------------------------------------------------


class DealObservation:
    """``IExecBackend.observe_deal``."""

    def observe_deal(
        self, deal_id: str, *, policy: PollPolicy | None = None
    ) -> Observable[IExecDealEvent]:
        """One stream over all ``botSize`` tasks of a deal, like the SDK's ``obsDeal``.

        After every task has reported once, each task event gives one ``IExecDealEvent``
        with the counts of completed and failed tasks; the stream completes (after a
        DEAL_COMPLETED or DEAL_TIMEDOUT event) when every task has ended. Task polls go
        through the engine, batched with every other watched task.
        """
        backend = cast("IExecBackend", self)  # the mixin's only host
        deal_id = backend._deal_id(deal_id)
        if policy is not None and not isinstance(policy, PollPolicy):
            raise ConfigurationError("policy must be a PollPolicy")
        return _observe_deal(backend, deal_id, policy)


def _observe_deal(
    backend: IExecBackend, deal_id: str, policy: PollPolicy | None
) -> Observable[IExecDealEvent]:
    """Read the deal (transient faults, even a JSON-RPC reply's, retried under ``policy``),
    then merge the streams of all its tasks."""

    async def read() -> IExecDeal:
        try:
            return await backend.session().retried(
                lambda: read_deal(backend, deal_id, None),
                task_id=deal_id,
                policy=policy,
            )
        except BackendError as exc:
            if exc.task_id is None:
                exc.task_id = f"(deal) {deal_id}"
            raise

    def watch(deal: IExecDeal) -> Observable[IExecDealEvent]:
        if not deal.tasks:
            raise backend.protocol_error("the deal has no tasks", None)
        latest: dict[int, TaskEvent[IExecTask]] = {}

        def tagged(idx: int, task_id: str) -> Observable[tuple[int, TaskEvent[IExecTask]]]:
            return backend.observe(task_id, deal_id=deal_id, policy=policy).pipe(
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


def _deal_event(deal: IExecDeal, tasks: dict[int, TaskEvent[Any]]) -> IExecDealEvent:
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
