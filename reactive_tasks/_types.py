"""The contract between the engine and the sources: what a task is, what a reading says, and
the ``Source`` protocol a backend implements. No I/O here; the engine and sessions import it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

from ._models import TaskState

__all__ = [
    "Answer",
    "Feed",
    "FeedSink",
    "Outcome",
    "PollSource",
    "Reading",
    "Source",
    "TaskRef",
    "current_request_timeout",
    "in_poll",
    "lazy_answers",
    "snapshot_of",
]

S = TypeVar("S")
T = TypeVar("T")

#: The poll context: the request timeout of the poll or retried read running in this context.
request_timeout_var: ContextVar[float | None] = ContextVar("reactive_tasks_timeout", default=None)


def current_request_timeout() -> float | None:
    """The request timeout of the poll or read running in this context, when the engine set
    one: sessions send with it, so that a policy given to ``observe()`` reaches the wire."""
    return request_timeout_var.get()


def in_poll() -> bool:
    """True inside a poll or a retried read: the engine retries there, so a session must not."""
    return request_timeout_var.get() is not None


#: True while the hub reads a round: a source may then yield an ``Answer`` for a snapshot.
lazy_answers_var: ContextVar[bool] = ContextVar("reactive_tasks_lazy", default=False)


def lazy_answers() -> bool:
    """True when the caller of ``fetch_many`` takes ``Answer``s (the hub's rounds do)."""
    return lazy_answers_var.get()


class Answer(Generic[S]):
    """One task's answer read only as far as its change key; the snapshot is built on demand.

    ``key`` comes from a strict read of just the fields the source's ``change_key`` depends on:
    two answers with equal keys have equal readings and change keys. ``snapshot()`` validates
    the whole answer into the source's model (a ``ProtocolError`` if it does not match), so the
    hub pays for that only when ``key`` moved.
    """

    __slots__ = ("_build", "_raw", "key")

    def __init__(self, key: Hashable, raw: Any, build: Callable[[Any], S]) -> None:
        self.key = key
        self._raw = raw
        self._build = build

    @staticmethod
    def built(key: Hashable, snapshot: T) -> Answer[T]:
        """An answer whose snapshot is already built (keyed so that the next slim one compares)."""
        return Answer(key, snapshot, _same)

    def snapshot(self) -> S:
        """The validated snapshot model (built anew at each call)."""
        return self._build(self._raw)

    def map(self, fn: Callable[[S], T], key: Hashable | None = None) -> Answer[T]:
        """An answer whose snapshot is ``fn`` of this one's, keyed by ``key`` (default: ours)."""
        return Answer(self.key if key is None else key, self._raw, _Then(self._build, fn))

    def __repr__(self) -> str:
        return f"Answer(key={self.key!r})"


def _same(snapshot: T) -> T:
    return snapshot


class _Then(Generic[S, T]):
    """``fn(build(raw))``: a slotted object rather than a closure, one per mapped answer."""

    __slots__ = ("_build", "_fn")

    def __init__(self, build: Callable[[Any], S], fn: Callable[[S], T]) -> None:
        self._build = build
        self._fn = fn

    def __call__(self, raw: Any) -> T:
        return self._fn(self._build(raw))


def snapshot_of(outcome: S | Answer[S]) -> S:
    """``outcome`` itself, or the snapshot of an ``Answer``."""
    return outcome.snapshot() if isinstance(outcome, Answer) else outcome


@dataclass(frozen=True, slots=True)
class TaskRef:
    """What identifies one watched task: its id plus any extra identity (a deal id, a pool)."""

    task_id: str
    identity: tuple[tuple[str, str], ...] = ()
    # Refs key every dict and set of a round, many times per task: hashed once.
    _hash: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.task_id, self.identity)))

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple[type[TaskRef], tuple[str, tuple[tuple[str, str], ...]]]:
        # Rebuilt from its fields, never with a hash from another process (str hashes differ).
        return TaskRef, (self.task_id, self.identity)

    def get(self, name: str) -> str | None:
        """The extra identity value ``name``, or None."""
        for key, value in self.identity:
            if key == name:
                return value
        return None


class Reading(NamedTuple):
    """A backend's reading of one snapshot in the shared vocabulary."""

    state: TaskState
    native_status: str
    progress: float | None = None
    message: str | None = None

    def plain(self) -> tuple[str, str, float | None, str | None]:
        """The same four values in a plain tuple, the state as its string: what a change key
        holds. A watch keeps its key as long as it lives, and a plain tuple of strings and
        numbers is one the garbage collector stops tracking (a ``Reading``, a tuple subclass
        holding an enum member, is scanned by every full collection)."""
        return (self.state.value, self.native_status, self.progress, self.message)


Outcome = tuple[TaskRef, "S | BaseException"]


class Source(Protocol):
    """What the engine needs from a backend: pure translation, no I/O state of its own.

    ``fetch_many`` is the only batch hook: it yields ``(ref, snapshot or exception)`` for the
    refs it is given (at most ``max_batch`` of them; the hub splits). A source without a batch
    endpoint implements it with ``Session.each`` over a per-task read.
    """

    @property
    def name(self) -> str: ...

    @property
    def max_batch(self) -> int | None: ...

    def fetch_many(self, refs: Sequence[TaskRef]) -> AsyncIterator[tuple[TaskRef, Any]]: ...

    def interpret(self, snapshot: Any, ref: TaskRef) -> Reading: ...

    def change_key(self, snapshot: Any, reading: Reading) -> Hashable: ...

    def display_id(self, task_id: str) -> str: ...


class FeedSink(Protocol):
    """What a feed tells its hub; called on the hub's loop only."""

    def feed_live(self, live: bool) -> None:
        """The feed is connected with every watched ref bound (True), or has lost that (False)."""

    def feed_snapshot(self, ref: TaskRef, snapshot: Any) -> None:
        """A pushed snapshot of ``ref``: the same validated model ``fetch_many`` yields."""

    def feed_bound(self, refs: Sequence[TaskRef]) -> None:
        """``refs`` were bound while the feed was live: each is read once more, since a change
        between its first poll and its binding reached neither input."""


class Feed(Protocol):
    """A push input beside the polls of one backend on one loop (Pulse, chain logs).

    The hub makes it with its source's ``open_feed()`` on its first watch and runs ``run`` as a
    task until the hub closes. ``run`` connects, binds every watched ref, calls
    ``sink.feed_live(True)``; on a lost connection it calls ``sink.feed_live(False)`` and
    reconnects with backoff. It never raises but ``CancelledError``. ``watch``/``unwatch`` come
    from the hub as watches come and go; the feed updates its bindings in the background.
    """

    def watch(self, ref: TaskRef) -> None: ...

    def unwatch(self, ref: TaskRef) -> None: ...

    async def run(self, sink: FeedSink) -> None: ...


#: The name the engine used before the split; same protocol.
PollSource = Source
