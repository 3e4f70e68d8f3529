"""The poll hub: one per backend and event loop, polling every task watched through it.

A hub keeps one *watch* per task (ref-counted by its subscriptions), polls due tasks together
through the source's ``fetch_many`` in chunks of the source's batch size, turns answers into
events when the change key moves, and applies the poll policy to faults. Due tasks are served
from one queue (never polled ones first, then by due time): a round slower than the interval is
finished before any task is polled again, and the interval stretches for all tasks alike (``lag``,
``effective_interval``, ``behind``; an INFO line says so). All timers live on the
hub's asyncio loop; nothing here starts a thread. Hubs are owned by the registry below, keyed by
(backend, loop); the backend holds none.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import logging
import math
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar

from reactivex.abc import DisposableBase

from ._compact import compact
from ._errors import BackendError, ObservationTimeout, TransientFault
from ._feeds import FeedLink
from ._models import TaskEvent, TaskState, checked_event
from ._pace import SLICE_SECONDS, Pace
from ._policy import PollPolicy
from ._retry import call_with_retries, is_timeout, protocol_error, retry_delay, verdict
from ._runtime import in_loop_thread, on_background_loop
from ._types import Answer, Reading, Source, TaskRef, lazy_answers_var, request_timeout_var

__all__ = ["PollHub", "fetch_once", "hub_for", "hubs_of", "release_hub"]

logger = logging.getLogger("reactive_tasks")

S = TypeVar("S")

_TICK_SLACK = 0.002  # polls due within this many seconds of a tick join its batch
_STALL = 0.01  # a callback holding the loop longer than this is remembered as a stall
_BATCHES_IN_FLIGHT = 8  # batches of a source with a batch size polled at once, at most


Via = Literal["poll", "push"]

_Event = TaskEvent[Any]  # parametrized once: each ``TaskEvent[Any]`` is a cache look-up


def _make_event(
    source: Source, ref: TaskRef, snapshot: Any, reading: Reading, sequence: int,
    via: Via = "poll",
) -> TaskEvent[Any]:
    state, native, progress, message = reading
    name = source.name
    fields = {
        "backend": name, "task_id": ref.task_id, "kind": state.event_kind, "state": state,
        "native_status": native, "progress": progress, "message": message,
        "observed_at": datetime.now(UTC), "sequence": sequence, "snapshot": snapshot, "via": via,
    }
    if (
        type(state) is TaskState and type(native) is str and type(name) is str
        and (progress is None or (type(progress) is float and 0.0 <= progress <= 100.0))
        and (message is None or type(message) is str)
    ):  # what the model would accept unchanged: built without validating it again
        event = checked_event(_Event, fields)
    else:  # validated: coerced (an int progress) or refused (out of range, wrong type)
        event = _Event(**fields)
        compact(event)  # a watch keeps its latest event, and its snapshot, as long as it lives
    compact(snapshot)
    return event


def _read(source: Source, ref: TaskRef, snapshot: Any) -> tuple[Reading, Hashable]:
    """Interpret a snapshot; anything a backend cannot read becomes a ``ProtocolError``."""
    try:
        reading = source.interpret(snapshot, ref)
        return reading, source.change_key(snapshot, reading)
    except BackendError:
        raise
    except Exception as exc:
        raise protocol_error(source, ref, exc, "interpret") from exc


def _order(source: Source, ref: TaskRef, snapshot: Any, reading: Reading) -> Any:
    """The source's order key of an answer (None when it defines no order)."""
    order_key = getattr(source, "order_key", None)  # plain sources give no order
    if order_key is None:
        return None
    try:
        return order_key(snapshot, reading)
    except BackendError:
        raise
    except Exception as exc:
        raise protocol_error(source, ref, exc, "order_key") from exc


async def fetch_once(source: Source, ref: TaskRef, policy: PollPolicy) -> TaskEvent[S]:
    """One fresh reading of one task, retrying transient faults under ``policy``."""

    async def read() -> TaskEvent[S]:
        outcome: Any = TransientFault("no answer for the task")
        async for got_ref, got in source.fetch_many([ref]):
            if got_ref == ref:
                outcome = got
        if isinstance(outcome, BaseException):
            raise outcome
        reading, _ = _read(source, ref, outcome)
        event: TaskEvent[S] = _make_event(source, ref, outcome, reading, 0)
        return event

    return await call_with_retries(source, ref, read, policy, wrap_unknown=True)


@dataclass(eq=False, slots=True)
class _Subscription(DisposableBase):
    """One subscriber of a watch: its three callbacks (no observer object in between: the hub
    stops calling them once ``disposed``, as reactivex's auto-detaching observer would).

    It is also what ``subscribe`` returns: ``dispose()`` from any thread, idempotent. One
    object per subscriber instead of two: thousands of watches stay long-lived, and every
    object among them is scanned by each full garbage collection.
    """

    on_next: Callable[[Any], None]
    on_error: Callable[[Exception], None]
    on_completed: Callable[[], None]
    policy: PollPolicy
    watch: _Watch | None = None
    timer: asyncio.TimerHandle | None = None
    disposed: bool = False
    started: float = 0.0
    #: The hub (and its loop) ``dispose`` removes this subscription from, once it is added.
    hub: PollHub[Any] | None = None
    loop: asyncio.AbstractEventLoop | None = None

    def dispose(self) -> None:
        """Stop this subscription: at once on its loop's thread, else soon on that loop."""
        hub, loop = self.hub, self.loop
        if self.disposed and self.watch is None:
            return
        self.disposed = True
        if hub is None or loop is None:
            return
        if in_loop_thread(loop):
            hub.remove(self)
        elif not loop.is_closed():
            loop.call_soon_threadsafe(hub.remove, self)


@dataclass(eq=False, slots=True)
class _Watch:
    ref: TaskRef
    started: float
    subs: list[_Subscription] = field(default_factory=list)
    policy: PollPolicy = field(default_factory=PollPolicy)
    last_event: TaskEvent[Any] | None = None
    last_key: Hashable = None
    last_order: Any = None  # the source's order key of the last accepted answer
    sequence: int = 0
    failures: int = 0
    next_due: float = 0.0
    in_flight: bool = False  # queued for its poll or being polled
    polled_at: float = 0.0
    answered_at: float = 0.0  # when its latest poll was answered (0: never)
    deadline: float = 0.0  # when the current poll's request times out, at the earliest
    closed: bool = False
    batch: asyncio.Task[None] | None = None
    recheck: bool = False  # a feed came up while this poll was in flight: poll again at once
    # The slim key of the last accepted answer, when that answer was a slim ``Answer`` (else
    # None): a poll answering the same key again changed nothing, and is settled on it alone.
    answered_key: Hashable = None


class PollHub(Generic[S]):
    """Polls every task watched through one backend on one event loop, beside the source's push
    feed when it has one (the hub is that feed's ``FeedSink``).

    Must be used from its loop's thread only; ``observe_ref`` hops there as needed.
    """

    def __init__(self, source: Source, loop: asyncio.AbstractEventLoop) -> None:
        self._source = source
        self._loop = loop
        self._watches: dict[TaskRef, _Watch] = {}
        # (due, push order, watches): the watches pushed one after another with one due time
        # share an entry (the answers of a round), so a round costs one heap entry per batch,
        # not one long-lived tuple per task. An entry's watch is due then if still valid.
        self._heap: list[tuple[float, int, list[_Watch]]] = []
        self._tail: list[_Watch] | None = None  # the watches of the latest entry pushed
        self._tail_due = math.nan
        self._counter = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = math.inf
        self._batches: dict[asyncio.Task[None], int] = {}  # batch -> members still waiting
        # Due watches of a source with a batch size, waiting for a batch to free up: never
        # polled ones first, each in due order. One queue for every round, so that a slow
        # round is finished before a task is polled again.
        self._fresh: deque[_Watch] = deque()
        self._queued: deque[_Watch] = deque()
        self._pace = Pace(source.name)
        # The loop's clock; asyncio's own loops read time.monotonic, called directly here (the
        # hub reads the clock three times per answer, tens of thousands of answers a round).
        self._time: Callable[[], float] = (
            time.monotonic if type(loop).time is asyncio.BaseEventLoop.time else loop.time
        )
        self._epoch = loop.time()
        self._phase = random.random()
        self._grid = (math.nan, math.nan, math.nan, math.nan)  # the latest _aligned: in, out
        # (start, end) of the latest callbacks that held the loop for a while
        self._stalls: deque[tuple[float, float]] = deque(maxlen=16)
        self._feed = FeedLink(source, loop, self)
        self._live = False  # the feed is connected with every watched task bound

    @property
    def watched(self) -> int:
        """How many distinct tasks are being polled."""
        return len(self._watches)

    @property
    def lag(self) -> float:
        """Seconds after they fell due that the latest polls were answered, on average."""
        return self._pace.lag

    @property
    def effective_interval(self) -> float | None:
        """Seconds between two polls of a task lately, on average (None: not measured yet).

        The interval while the hub keeps up; longer, for every task alike, while one round of
        due polls takes longer than the interval.
        """
        return self._pace.effective_interval

    @property
    def behind(self) -> bool:
        """True while most polls are answered after their task's next tick."""
        return self._pace.behind

    # -- subscriptions -------------------------------------------------------------------

    def add(self, ref: TaskRef, sub: _Subscription) -> None:
        """Start delivering ``ref``'s events to ``sub``, sharing any poll already running."""
        if sub.disposed:
            return
        now = self._loop.time()
        sub.started = now
        watch = self._watches.get(ref)
        if watch is None:
            watch = _Watch(ref=ref, started=now, policy=sub.policy, next_due=now)
            self._watches[ref] = watch
            watch.subs.append(sub)
            self._push(watch)
            self._feed.watch(ref)
        else:
            watch.subs.append(sub)
            before = watch.policy.interval
            watch.policy = _shared_policy(watch.subs)
            if watch.policy.interval < before and not watch.in_flight and watch.failures == 0:
                sooner = self._aligned(now, watch.policy, self._period(watch.policy))
                if sooner < watch.next_due:
                    watch.next_due = sooner
                    self._push(watch)
        sub.watch = watch
        if sub.policy.timeout is not None:
            sub.timer = self._loop.call_later(sub.policy.timeout, self._time_out, sub)
        if watch.last_event is not None:
            self._deliver(sub, watch.last_event)

    def replays(self, ref: TaskRef) -> bool:
        """True when ``add`` of ``ref`` would deliver the watch's latest event at once."""
        watch = self._watches.get(ref)
        return watch is not None and watch.last_event is not None

    def remove(self, sub: _Subscription) -> None:
        """Stop ``sub``; when it was a task's last subscription, stop polling that task now."""
        sub.disposed = True
        if sub.timer is not None:
            sub.timer.cancel()
            sub.timer = None
        watch = sub.watch
        if watch is None or watch.closed:
            return
        if sub in watch.subs:
            watch.subs.remove(sub)
        if watch.subs:
            watch.policy = _shared_policy(watch.subs)
        else:
            self._drop(watch)

    async def aclose(self) -> None:
        """Stop every poll without notifying subscribers, and wait for requests to unwind.

        Waiting matters: the backend closes its HTTP client next, and a request still unwinding
        must not reopen a connection behind it.
        """
        batches = list(self._batches)
        self._fresh.clear()
        self._queued.clear()
        for watch in list(self._watches.values()):
            for sub in watch.subs:
                sub.disposed = True
                if sub.timer is not None:
                    sub.timer.cancel()
            self._drop(watch)
        for task in batches:
            task.cancel()
        await asyncio.gather(*batches, return_exceptions=True)
        await self._feed.aclose()
        self._live = False

    def _time_out(self, sub: _Subscription) -> None:
        watch = sub.watch
        self.remove(sub)
        task = self._source.display_id(watch.ref.task_id) if watch else "?"
        self._call(
            watch.ref.task_id if watch else "",
            "on_error",
            sub.on_error,
            ObservationTimeout(
                f"{self._source.name} task {task} reached no terminal state "
                f"within {sub.policy.timeout} s"
            ),
        )

    def _drop(self, watch: _Watch) -> None:
        watch.closed = True
        watch.subs.clear()
        if self._watches.pop(watch.ref, None) is watch:
            self._feed.unwatch(watch.ref)
        if watch.batch is not None:
            self._leave_batch(watch, cancel_empty=True)
        if not self._watches:
            self._heap.clear()
            self._tail = None
            self._fresh.clear()
            self._queued.clear()
            self._disarm()

    # -- the push feed (this hub is its FeedSink) -----------------------------------------

    def feed_live(self, live: bool) -> None:
        """The feed came up (one immediate reconciliation round, then polls only every
        ``reconcile_interval``) or went down (polls back at ``interval``)."""
        if live == self._live:
            return
        self._live = live
        now = self._loop.time()
        for watch in list(self._watches.values()):
            if watch.in_flight:
                # Its answer may have left the server before the feed was bound: poll again.
                watch.recheck = live
                continue
            if watch.failures:
                continue  # backing off after a fault: its retry comes first
            due = now if live else self._aligned(now, watch.policy)
            if due < watch.next_due:
                watch.next_due = due
                self._push(watch)

    def feed_bound(self, refs: Sequence[TaskRef]) -> None:
        """Tasks bound only now, while the feed is live: read each once more, in the next
        round (the others keep their schedule)."""
        now = self._loop.time()
        for ref in refs:
            watch = self._watches.get(ref)
            if watch is None or watch.closed or watch.failures:
                continue
            if watch.in_flight:
                watch.recheck = True
            elif now < watch.next_due:
                watch.next_due = now
                self._push(watch)

    def feed_snapshot(self, ref: TaskRef, snapshot: Any) -> None:
        """A pushed answer: read exactly like a poll's, without touching the watch's polls."""
        watch = self._watches.get(ref)
        if watch is not None and not watch.closed:
            self._accept(watch, snapshot, "push")

    # -- scheduling ----------------------------------------------------------------------

    def _period(self, policy: PollPolicy) -> float:
        """How far apart polls of a task are: ``interval``, or while the feed is live
        ``reconcile_interval`` (never more often than ``interval``)."""
        if self._live:
            return max(policy.interval, policy.reconcile_interval)
        return policy.interval

    def _aligned(self, now: float, policy: PollPolicy, period: float | None = None) -> float:
        """The next tick of ``policy``'s grid (of ``period``, default its interval), so that
        tasks on one interval batch together."""
        interval = policy.interval if period is None else period
        jitter = policy.jitter
        memo = self._grid
        if memo[0] == now and memo[1] == interval and memo[2] == jitter:
            return memo[3]  # the answers of one round share their tick
        due = self._tick_after(now, policy, interval)
        if due - now < interval / 2:
            due += interval
        self._grid = (now, interval, jitter, due)
        return due

    def _tick_after(self, now: float, policy: PollPolicy, period: float) -> float:
        """The first tick of ``policy``'s grid of ``period`` after ``now``, however close.

        For answers that came after their task's next tick: unlike ``_aligned`` (which skips a
        tick less than half a period away), it never puts a later answer before an earlier one,
        so tasks late in a slow round keep their turn ahead of tasks polled again since."""
        origin = self._epoch + self._phase * policy.jitter * period
        return origin + (math.floor((now - origin) / period) + 1) * period

    def _push(self, watch: _Watch) -> None:
        due = watch.next_due
        tail = self._tail
        if tail is not None and self._tail_due == due:
            tail.append(watch)  # pushed right after a watch due at the same time: same entry
        else:
            self._counter += 1
            self._tail, self._tail_due = [watch], due
            heapq.heappush(self._heap, (due, self._counter, self._tail))
        if due < self._timer_when:
            self._arm(due)

    def _arm(self, when: float) -> None:
        self._disarm()
        self._timer_when = when
        self._timer = self._loop.call_at(when, self._tick)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_when = math.inf

    def _valid(self, due: float, watch: _Watch) -> bool:
        return not watch.closed and not watch.in_flight and watch.next_due == due

    def _any_valid(self, due: float, watches: list[_Watch]) -> bool:
        return any(self._valid(due, watch) for watch in watches)

    def _tick(self) -> None:
        self._timer = None
        self._timer_when = math.inf
        now = self._loop.time()
        horizon = now + _TICK_SLACK
        fresh: list[_Watch] = []
        seen: list[_Watch] = []
        heap = self._heap
        while heap and heap[0][0] <= horizon:
            when, _, watches = heapq.heappop(heap)
            if watches is self._tail:
                self._tail = None
            for watch in watches:
                if self._valid(when, watch):
                    watch.in_flight = True
                    (seen if watch.answered_at else fresh).append(watch)
        while heap and not self._any_valid(heap[0][0], heap[0][2]):
            if heapq.heappop(heap)[2] is self._tail:
                self._tail = None
        if heap:
            self._arm(heap[0][0])
        if self._source.max_batch is None:
            # One batch of every due task, never polled ones first: an API without a batch
            # endpoint reads them in this order, behind any round still being read.
            if fresh or seen:
                self._start_batch(fresh + seen, now)
            return
        self._fresh.extend(fresh)
        self._queued.extend(seen)
        self._dispatch()

    def _dispatch(self) -> None:
        """Start batches of the queued due watches, up to the bound of batches in flight."""
        size = self._source.max_batch or 1
        fresh, queued = self._fresh, self._queued
        now = self._loop.time()
        while len(self._batches) < _BATCHES_IN_FLIGHT and (fresh or queued):
            chunk: list[_Watch] = []
            while len(chunk) < size and (fresh or queued):
                watch = (fresh or queued).popleft()
                if not watch.closed:
                    chunk.append(watch)
            if chunk:
                self._start_batch(chunk, now)

    def _start_batch(self, chunk: list[_Watch], now: float) -> None:
        for watch in chunk:
            watch.polled_at = now
        task = self._loop.create_task(self._run_batch(chunk))
        self._batches[task] = len(chunk)
        for watch in chunk:
            watch.batch = task

    def _leave_batch(self, watch: _Watch, *, cancel_empty: bool) -> None:
        task, watch.batch = watch.batch, None
        if task is None or task not in self._batches:
            return
        self._batches[task] -= 1
        if self._batches[task] <= 0 and cancel_empty:
            task.cancel()

    # -- polling -------------------------------------------------------------------------

    async def _run_batch(self, chunk: list[_Watch]) -> None:
        pending = {w.ref: w for w in chunk}
        cancelled = False
        # This task's own context: the requests of this batch (and the workers a backend starts
        # for them) use the longest request timeout any subscriber of these tasks asked for.
        timeout = max(w.policy.request_timeout for w in chunk)
        request_timeout_var.set(timeout)
        lazy_answers_var.set(True)  # the source may answer with slim ``Answer``s (see _accept)
        for member in chunk:
            member.deadline = member.polled_at + timeout
        clock = time.perf_counter
        try:
            started = clock()
            async for ref, outcome in self._source.fetch_many(list(pending)):
                watch = pending.pop(ref, None)
                if watch is not None:
                    self._settle(watch, outcome)
                if clock() - started > SLICE_SECONDS:
                    # Thousands of answers of one batch (the source's reading of each runs on
                    # this clock too) never hold the loop for long.
                    await asyncio.sleep(0)
                    started = clock()
        except asyncio.CancelledError:
            cancelled = True
            raise
        except Exception as exc:  # a batch-wide failure counts against every task in it
            for watch in list(pending.values()):
                self._settle(watch, exc)
            pending.clear()
        finally:
            current = asyncio.current_task()
            if current is not None:
                self._batches.pop(current, None)
            if not cancelled:
                for watch in pending.values():
                    self._settle(watch, TransientFault("the batch answer left this task out"))
            self._dispatch()

    def _settle(self, watch: _Watch, outcome: object) -> None:
        watch.in_flight = False
        if watch.batch is not None:
            self._leave_batch(watch, cancel_empty=False)
        if watch.closed:
            return
        now = self._time()
        if isinstance(outcome, BaseException):
            if self._stalled_out(watch, outcome):
                # The request's time ran out while a callback held the loop, not at the server:
                # poll again at once and charge nobody's retry budget.
                watch.next_due = now
                self._push(watch)
                return
            watch.failures += 1
            grace_left = 0.0
            for sub in list(watch.subs):  # each subscription under its own budget and grace
                age = now - sub.started
                error = verdict(self._source, watch.ref, outcome, watch.failures, age, sub.policy)
                if error is not None:
                    self._end(sub, error)
                else:
                    grace_left = max(grace_left, sub.policy.creation_grace - age)
            if watch.closed:
                return
            watch.next_due = now + retry_delay(outcome, watch.failures, grace_left, watch.policy)
            self._push(watch)
            return
        watch.failures = 0
        if self._accept(watch, outcome, "poll"):
            watch.next_due = self._paced(watch, now)
            self._push(watch)

    def _accept(self, watch: _Watch, snapshot: Any, via: Via) -> bool:
        """Read an answer (polled or pushed) and deliver an event when its change key moved;
        an answer older than the last accepted one (by the source's order key) is dropped.
        False when the watch ended with it (terminal state, unreadable answer).

        A slim ``Answer`` with the slim key of the last accepted answer is that answer again
        (equal slim keys: equal readings, change and order keys): nothing is read or built.
        """
        slim = type(snapshot) is Answer
        if slim and watch.answered_key is not None and snapshot.key == watch.answered_key:
            return True
        try:
            answered_key = snapshot.key if slim else None
            if slim:
                snapshot = snapshot.snapshot()
            reading, key = _read(self._source, watch.ref, snapshot)
            order = _order(self._source, watch.ref, snapshot, reading)
            if order is not None and watch.last_order is not None and order < watch.last_order:
                return True  # stale: it left the server before an answer already seen
            if watch.last_event is None or key != watch.last_key:
                event = _make_event(
                    self._source, watch.ref, snapshot, reading, watch.sequence, via
                )
            else:
                event = None
        except Exception as exc:
            if not isinstance(exc, BackendError):
                exc = protocol_error(self._source, watch.ref, exc)
            self._fail(watch, exc)
            return False
        watch.last_order = order
        watch.answered_key = answered_key
        if event is not None:
            watch.sequence += 1
            watch.last_key = key
            watch.last_event = event
            subs = watch.subs
            if len(subs) == 1:  # the common case: no copy of the list
                self._deliver(subs[0], event)
            else:
                for sub in list(subs):  # a callback may dispose its own or another's
                    self._deliver(sub, event)
            if watch.closed:  # its last subscriber's callback broke
                return False
        if reading.state.terminal:
            self._complete(watch)
            return False
        return not watch.closed

    def _paced(self, watch: _Watch, now: float) -> float:
        """Count an answered poll towards the hub's pace, and say when ``watch`` polls next.

        From the tick the poll belonged to, not from when its answer was read: answers of one
        round settle over some milliseconds and must not straddle a grid line, or the round
        splits into several batches next time. An answer that came after its task's next tick
        waits for the first tick after now instead: while a round of due polls takes longer
        than the period, that happens to every task alike, as each waits its turn. Either way a
        task answered later never falls due before one answered earlier in the same queue.
        """
        policy = watch.policy
        period = self._period(policy)
        due = self._aligned(watch.polled_at, policy, period)
        since = now - watch.answered_at if watch.answered_at else None
        self._pace.answered(now, now - watch.next_due, since, period, due <= now)
        watch.answered_at = now
        if watch.recheck:
            watch.recheck = False
            return now
        return due if due > now else self._tick_after(now, policy, period)

    def _stalled_out(self, watch: _Watch, outcome: BaseException) -> bool:
        """True when a poll timed out while a callback held the loop: its timer ran out behind
        the callback, when an answer that had arrived meanwhile could not be read yet."""
        if not is_timeout(outcome):
            return False
        return any(start < watch.deadline <= end for start, end in self._stalls)

    def _end(self, sub: _Subscription, error: Exception) -> None:
        """End one subscription with ``error``; the shared poll goes on for the others."""
        task_id = sub.watch.ref.task_id if sub.watch else ""
        self.remove(sub)
        self._call(task_id, "on_error", sub.on_error, error)

    def _complete(self, watch: _Watch) -> None:
        self._finish(watch, "on_completed", lambda sub: sub.on_completed())

    def _fail(self, watch: _Watch, error: Exception) -> None:
        self._finish(watch, "on_error", lambda sub: sub.on_error(error))

    def _finish(
        self, watch: _Watch, what: str, notify: Callable[[_Subscription], None]
    ) -> None:
        """Stop polling ``watch`` and send every live subscriber its last notification."""
        subs = list(watch.subs)
        self._drop(watch)
        for sub in subs:
            if sub.timer is not None:
                sub.timer.cancel()
            if not sub.disposed:
                sub.disposed = True
                self._call(watch.ref.task_id, what, notify, sub)

    def _deliver(self, sub: _Subscription, event: TaskEvent[Any]) -> None:
        if sub.disposed:
            return
        if not self._call(event.task_id, "on_next", sub.on_next, event):
            self.remove(sub)  # a broken subscriber gets nothing more; the others go on

    def _call(self, task_id: str, what: str, fn: Callable[..., None], *args: Any) -> bool:
        """Run a subscriber's callback, timing how long it holds the loop; False if it raised."""
        clock = self._time
        started = clock()
        try:
            return _run_callback(self._where, task_id, what, fn, *args)
        finally:
            ended = clock()
            if ended - started > _STALL:
                self._stalls.append((started, ended))

    def _where(self, task_id: str) -> str:
        """Which task a callback's log line is about."""
        source = self._source
        return f"{source.name} task {source.display_id(task_id) if task_id else '?'}"


def _shared_policy(subs: Sequence[_Subscription]) -> PollPolicy:
    """What a shared poll runs under: the policy of its fastest subscriber (smallest interval),
    with the longest request timeout any current subscriber asked for."""
    fastest = min((s.policy for s in subs), key=lambda p: p.interval)
    longest = max(s.policy.request_timeout for s in subs)
    if longest != fastest.request_timeout:
        fastest = dataclasses.replace(fastest, request_timeout=longest)
    return fastest


def _run_callback(
    where: Callable[[str], str], task_id: str, what: str, fn: Callable[..., None], *args: Any
) -> bool:
    """Run a subscriber's callback so that it cannot break the engine; False if it raised.

    Its exception is logged (naming ``where(task_id)`` and the callback, never the event; the
    name is built only then, so that the common case allocates nothing). ``SystemExit``
    and ``KeyboardInterrupt`` are contained too on the library's own background loop thread,
    where they would only end that thread and strand every other stream; on the caller's own
    loop they propagate, as they would from any of the caller's code.
    """
    try:
        fn(*args)
        return True
    except Exception as exc:
        logger.error(
            "%s: a subscriber's %s callback raised %s; that subscription is disposed",
            where(task_id), what, type(exc).__name__, exc_info=True,
        )
    except (SystemExit, KeyboardInterrupt) as exc:
        if not on_background_loop():
            raise
        logger.error(
            "%s: a subscriber's %s callback raised %s on the background loop thread; "
            "that subscription is disposed, the loop goes on",
            where(task_id), what, type(exc).__name__, exc_info=True,
        )
    return False


# -- the hub registry: one hub per (backend, loop), owned here ---------------------------------

_registry_lock = threading.Lock()
_PerLoop = weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, "PollHub[Any]"]
_hubs: weakref.WeakKeyDictionary[Source, _PerLoop] = weakref.WeakKeyDictionary()


def hub_for(source: Source, loop: asyncio.AbstractEventLoop) -> PollHub[Any]:
    """The hub polling ``source``'s tasks on ``loop``, made on first use."""
    per_loop = _hubs.get(source)
    hub = per_loop.get(loop) if per_loop is not None else None  # no lock once it exists
    if hub is not None:
        return hub
    with _registry_lock:
        per_loop = _hubs.get(source)
        if per_loop is None:
            per_loop = _hubs[source] = weakref.WeakKeyDictionary()
        hub = per_loop.get(loop)
        if hub is None:
            hub = per_loop[loop] = PollHub(source, loop)
        return hub


def release_hub(source: Source, loop: asyncio.AbstractEventLoop) -> PollHub[Any] | None:
    """Take ``source``'s hub on ``loop`` out of the registry (the caller closes it)."""
    with _registry_lock:
        per_loop = _hubs.get(source)
        return None if per_loop is None else per_loop.pop(loop, None)


def hubs_of(source: Source) -> dict[asyncio.AbstractEventLoop, PollHub[Any]]:
    """Every hub of ``source`` now in the registry, by loop."""
    with _registry_lock:
        per_loop = _hubs.get(source)
        return {} if per_loop is None else dict(per_loop)
