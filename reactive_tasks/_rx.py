"""The Rx bridge: cold Observables over the engine, subscribed on the subscriber's loop (or the
shared background loop) and disposed from any thread."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import reactivex
from reactivex import Observable, abc
from reactivex.disposable import Disposable
from reactivex.internal import default_error, noop
from reactivex.scheduler import CurrentThreadScheduler

from ._hub import PollHub, _run_callback, _Subscription
from ._models import TaskEvent
from ._policy import PollPolicy
from ._runtime import current_or_background_loop, in_loop_thread
from ._types import TaskRef

__all__ = ["observe_coroutine", "observe_ref"]

S = TypeVar("S")
T = TypeVar("T")


def observe_ref(
    hub_for: Callable[[asyncio.AbstractEventLoop], PollHub[S]],
    ref: TaskRef,
    policy: PollPolicy,
) -> Observable[TaskEvent[S]]:
    """A cold Observable of ``ref``'s events, polled by the hub of the subscriber's loop.

    Subscribing inside a running event loop polls on that loop; anywhere else on the shared
    background loop. Events arrive on the polling loop's thread.
    """
    return _TaskObservable(hub_for, ref, policy)


class _TaskObservable(Observable[TaskEvent[S]]):
    """``observe()``'s Observable: a reactivex ``Observable`` (every operator, ``pipe``,
    ``await``) whose ``subscribe`` hands the callbacks straight to the hub.

    reactivex's own ``subscribe`` wraps each subscriber in an auto-detaching observer with two
    locked disposables and runs it through the current-thread trampoline: more CPU than the
    hub's own bookkeeping, for guarantees the hub already gives (no callback after the last
    notification or after ``dispose``; ``dispose`` idempotent from any thread). The trampoline
    is still used where it matters, when the latest event is replayed during ``subscribe``.
    """

    def __init__(
        self,
        hub_for: Callable[[asyncio.AbstractEventLoop], PollHub[S]],
        ref: TaskRef,
        policy: PollPolicy,
    ) -> None:
        super().__init__()
        self._hub_for = hub_for
        self._ref = ref
        self._policy = policy

    def subscribe(
        self,
        on_next: abc.ObserverBase[TaskEvent[S]] | abc.OnNext[TaskEvent[S]] | None = None,
        on_error: abc.OnError | None = None,
        on_completed: abc.OnCompleted | None = None,
        *,
        scheduler: abc.SchedulerBase | None = None,
    ) -> abc.DisposableBase:
        """Start watching; callbacks or an observer, as ``Observable.subscribe`` takes them."""
        if isinstance(on_next, abc.ObserverBase) or callable(getattr(on_next, "on_next", None)):
            observer: Any = on_next
            on_next, on_error, on_completed = (
                observer.on_next, observer.on_error, observer.on_completed
            )
        sub = _Subscription(
            on_next=on_next or noop,  # type: ignore[arg-type]
            on_error=on_error or default_error,
            on_completed=on_completed or noop,
            policy=self._policy,
        )
        try:
            loop = current_or_background_loop()
            hub = self._hub_for(loop)
        except Exception as exc:  # no loop or a closed backend: told as reactivex would
            sub.on_error(exc)
            return Disposable()
        sub.hub, sub.loop = hub, loop
        if not in_loop_thread(loop):
            loop.call_soon_threadsafe(hub.add, self._ref, sub)
        elif hub.replays(self._ref):
            # The latest event is delivered within this call: on the trampoline, as reactivex
            # subscribes, so that work it schedules runs after this subscription is in place.
            trampoline = CurrentThreadScheduler.singleton()
            if trampoline.schedule_required():
                trampoline.schedule(_Add(hub, self._ref, sub))
            else:
                hub.add(self._ref, sub)
        else:
            hub.add(self._ref, sub)
        return sub

    def _subscribe_core(
        self,
        observer: abc.ObserverBase[TaskEvent[S]],
        scheduler: abc.SchedulerBase | None = None,
    ) -> abc.DisposableBase:
        return self.subscribe(observer, scheduler=scheduler)


class _Add:
    """``hub.add(ref, sub)`` as a trampoline action."""

    __slots__ = ("_hub", "_ref", "_sub")

    def __init__(self, hub: PollHub[Any], ref: TaskRef, sub: _Subscription) -> None:
        self._hub = hub
        self._ref = ref
        self._sub = sub

    def __call__(self, scheduler: abc.SchedulerBase, state: Any = None) -> None:
        self._hub.add(self._ref, self._sub)


def _one_off(_: str) -> str:
    return "a one-off read"


def observe_coroutine(factory: Callable[[], Awaitable[T]]) -> Observable[T]:
    """A cold Observable that runs ``factory()`` on the subscriber's loop and emits its result.

    For one-off reads a composed stream needs first (listing a task group, reading a deal):
    it runs where polling runs, starts no thread, and disposing cancels it.
    """

    def subscribe(
        observer: abc.ObserverBase[T], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        loop = current_or_background_loop()
        state: dict[str, Any] = {"disposed": False, "task": None}

        async def run() -> None:
            try:
                value = await factory()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not state["disposed"]:
                    _run_callback(_one_off, "", "on_error", observer.on_error, exc)
                return
            if not state["disposed"] and _run_callback(
                _one_off, "", "on_next", observer.on_next, value
            ):
                _run_callback(_one_off, "", "on_completed", observer.on_completed)

        def start() -> None:
            if not state["disposed"]:
                state["task"] = loop.create_task(run())

        def cancel() -> None:
            task = state["task"]
            if task is not None:
                task.cancel()

        if in_loop_thread(loop):
            start()
        else:
            loop.call_soon_threadsafe(start)

        def dispose() -> None:
            state["disposed"] = True
            if in_loop_thread(loop):
                cancel()
            elif not loop.is_closed():
                loop.call_soon_threadsafe(cancel)

        return Disposable(dispose)

    return reactivex.create(subscribe)

