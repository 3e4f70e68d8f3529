"""Reading many-task answers safely and cheaply: entry by entry, slim where the hub allows it,
in slices that leave the loop to others, and with a bound on continuation pages.

One malformed entry of a batch or list answer must fail only the task it is about, and entries
of tasks nobody watches must not matter at all; a server must not keep a round paging forever.
Inside the hub's rounds a wanted entry is first read only for its change key (``slim``): the
whole entry is validated into its model only when the hub asks, that is when the key moved.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Hashable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from pydantic import BaseModel, ValidationError

from .._errors import BackendError, ProtocolError
from .._jsonstream import Built, Known, ObjectStream, TextMemo
from .._pace import SLICE_SECONDS
from .._redact import shorten
from .._types import Answer, lazy_answers

if TYPE_CHECKING:
    from ._base import Backend

__all__ = [
    "MAX_PAGES",
    "SLICE_SECONDS",
    "StreamedPage",
    "each_entry",
    "entries_by_key",
    "next_page",
    "paced",
    "parse_page",
    "slim_allowed",
    "slim_reader",
    "validation_detail",
]

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

#: What a slim reader raises on a field it cannot vouch for: the whole entry is validated then.
SLIM_ERRORS = (AttributeError, KeyError, IndexError, TypeError, ValueError)

#: How many continuation pages one listing (or one batch read) may take in one round.
MAX_PAGES = 1_000


def parse_page(backend: Backend[Any], model: type[M], content: bytes) -> M:
    """The envelope of a many-task answer whose entries stay plain JSON (``list[Any]``).

    The standard library decodes the body to plain Python objects in about half the time
    pydantic takes for the same; the envelope is validated from those. A body that is not JSON
    is a ``ProtocolError``, as ``Backend.parse`` makes it.
    """
    try:
        data = json.loads(content)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError included
        raise backend.protocol_error(
            f"the answer does not match {model.__name__}: it is not JSON"
        ) from None
    return backend.parse(model, data)


class StreamedPage(Generic[M]):
    """A many-task answer whose list ``field`` is decoded one entry at a time (``entries()``),
    and whose other members are validated into ``model`` after it (``envelope()``).

    Built entry by entry, the entries of a large page are freed as they are settled instead of
    being promoted together to the garbage collector's oldest generation (see ``_jsonstream``).
    A body that is not JSON is a ``ProtocolError``, met where the decoding stops: the entries
    before that point were whole JSON values and stand.
    """

    __slots__ = ("_backend", "_between", "_direct", "_memo", "_model", "_peek", "_stream")

    def __init__(
        self,
        backend: Backend[Any],
        model: type[M],
        content: bytes,
        field: str,
        *,
        memo: TextMemo | None = None,
        peek: Callable[[str, int], Hashable | None] | None = None,
        direct: Callable[[str], tuple[Hashable, Any]] | None = None,
        between: str = "",
    ) -> None:
        """With ``memo`` and ``peek`` (which reads an entry's key from its text at a position,
        None if it cannot), an entry whose text is the one ``memo`` holds for its key comes
        out as that ``Known`` entry, not decoded (``each_entry`` answers it from its text).

        With ``direct`` too, an entry whose key held a text that no longer matches (most
        often: its task changed) is built straight from its text, not decoded first, and comes
        out ``Built``: ``direct(text)`` returns its reading and what it built, and raises
        ``ValueError`` (or a ``BackendError``) when it cannot; the entry is then decoded as
        any other. Its text is taken to end where ``between`` (what the server writes between
        two entries, such as ``,{"taskId":"``) is found next. That guess proves itself, as
        long as ``direct`` accepts only a whole JSON object: the text of an object is never a
        proper prefix of another value's, so a whole object starting where the entry starts
        is the entry's whole text, and a wrong guess (``between`` inside the entry) is refused.
        """
        self._backend = backend
        self._model = model
        self._memo = memo
        self._peek = peek
        self._direct = direct if between else None
        self._between = between
        try:
            text = content.decode(json.detect_encoding(content), "surrogatepass")
        except UnicodeDecodeError:
            raise self._not_json() from None
        if not ObjectStream.is_object(text):  # not an object: read whole, as it always was
            parse_page(backend, model, content)
            raise backend.protocol_error(f"the answer does not match {model.__name__}")
        known = None
        if memo is not None and peek is not None:
            memo.rotate()
            if memo.holds_texts():  # else no entry can match: not even a peek
                known = self._known
        self._stream = ObjectStream(text, field, known)

    def _known(self, text: str, pos: int) -> Known | Built | None:
        key = self._peek(text, pos)  # type: ignore[misc]
        if key is None:
            return None
        memo: TextMemo = self._memo  # type: ignore[assignment]  # set when this is called
        hit = memo.match(key, text, pos)
        if hit is not None or self._direct is None or not memo.moved(key):
            return hit
        end = text.find(self._between, pos)
        if end < 0:
            return None  # the last entry: decoded
        entry = text[pos:end]
        try:
            reading, built = self._direct(entry)
        except (ValueError, BackendError):
            return None  # not a whole entry, or not one ``direct`` reads: decoded as any other
        return Built(key, entry, reading, built)

    def remember(self, key: Hashable, reading: Hashable) -> None:
        """Note ``reading`` as ``key``'s, with the text of the entry yielded last (see
        ``TextMemo.remember``)."""
        if self._memo is not None:
            stream = self._stream
            self._memo.remember(key, stream.text, stream.start, stream.end, reading)

    def entries(self) -> Iterator[Any]:
        """The entries of the list, each decoded when it is reached."""
        try:
            yield from self._stream.entries()
        except (ValueError, RecursionError):
            raise self._not_json() from None

    def envelope(self) -> M:
        """The answer's other members validated into ``model`` (once ``entries()`` is done)."""
        stream = self._stream
        data = dict(stream.rest)
        if stream.streamed:
            data[stream.field] = []
        return self._backend.parse(self._model, data)

    def _not_json(self) -> ProtocolError:
        return self._backend.protocol_error(
            f"the answer does not match {self._model.__name__}: it is not JSON"
        )


def validation_detail(exc: ValidationError) -> str:
    """`` at 'where': what`` for the first error of a pydantic validation failure."""
    for first in exc.errors()[:1]:
        where = ".".join(str(p) for p in first["loc"]) or "the top level"
        return f" at {where!r}: {first['msg']}"
    return ""


def slim_allowed(backend: Backend[Any], owner: type[Any]) -> bool:
    """Whether a slim key written for ``owner`` may stand in for ``backend``'s reading: the
    caller is the hub (it takes ``Answer``s) and ``backend`` interprets and keys snapshots with
    ``owner``'s own methods (a subclass with its own ``change_key`` may look at other fields)."""
    if not lazy_answers():
        return False
    cls = type(backend)
    return _keeps(cls.interpret, owner.interpret) and _keeps(cls.change_key, owner.change_key)


def _keeps(method: Any, owners: Any) -> bool:
    """True when ``method`` is ``owners``'s own, or the library's (its subclasses, such as
    ``TaskclusterBackend`` reading group snapshots, defer to the owner for task answers)."""
    return method is owners or getattr(method, "__module__", "").startswith("reactive_tasks.")


def slim_reader(
    backend: Backend[Any], owner: type[Any], read: Callable[[Any], Hashable]
) -> Callable[[Any], Hashable] | None:
    """``read`` (an entry's slim change key) where ``slim_allowed``, else None."""
    return read if slim_allowed(backend, owner) else None


def each_entry(
    backend: Backend[Any],
    items: Any,
    model: type[M],
    *,
    key: Callable[[Any], Any],
    wanted: Mapping[Hashable, str | None],
    what: str,
    slim: Callable[[Any], Hashable] | None = None,
    then: Callable[[M], Any] | None = None,
    remember: Callable[[Hashable, Hashable], None] | None = None,
) -> Iterator[tuple[Hashable, M | Answer[M] | ProtocolError]]:
    """The entries of ``items`` (a JSON list) that ``wanted`` asks for, each read alone.

    ``key`` reads an entry's key (a task id, a JSON-RPC id) from the raw JSON, ``wanted`` maps
    each key sought to the task id it belongs to. An entry whose key is not wanted (or cannot be
    read) is skipped unvalidated; a wanted entry that does not match ``model`` becomes that
    task's ``ProtocolError``. The first entry of a key counts. With ``slim`` (see
    ``slim_reader``) a wanted entry whose slim key reads is an ``Answer`` validated on demand;
    one whose key fields ``slim`` cannot vouch for is validated at once. With ``then``, what is
    yielded (or built on demand) is ``then(entry)`` (it may raise the task's ``ProtocolError``).

    ``items`` may also be an iterator of entries (``StreamedPage.entries()``). A list's slot of
    each wanted entry is cleared once it was handed on: the raw JSON of an answer the hub
    settled is freed at once, rather than kept by the rest of the page until the garbage
    collector has moved it to its oldest generation (whose full scans then run more often,
    over every long-lived watch). With ``remember`` (a ``StreamedPage``'s), each slim-read
    entry's key and slim key are handed to it; the page's ``Known`` entries (the same text as
    that key's last time) are answered with that slim key, decoded only if the hub asks.
    """
    if isinstance(items, list):
        listed = True
    elif isinstance(items, Iterator):  # a streamed page's entries: nothing kept to clear
        listed = False
    else:
        raise backend.protocol_error(f"{what} is not a list")
    seen: set[Hashable] = set()
    # One validator for the whole answer: it finds an entry's task id only when it fails.
    build = _Validator(backend, model, what, key, wanted, then)
    from_text: _FromText | None = None
    for index, item in enumerate(items):
        kind = type(item)
        if kind is Known:  # the same text as this key's entry last time: its slim key
            k = item.key
            if k in seen or k not in wanted:
                continue
            seen.add(k)
            if from_text is None:
                from_text = _FromText(build)
            yield k, Answer(item.reading, item.text, from_text)
            continue
        if kind is Built:  # built straight from its text (see ``StreamedPage``)
            k = item.key
            if k in seen or k not in wanted:
                continue
            seen.add(k)
            if remember is not None:
                remember(k, item.reading)
            yield k, Answer.built(item.reading, item.built)
            continue
        try:
            k = key(item)
        except (AttributeError, KeyError, TypeError):
            continue
        kind = type(k)
        if (kind is not str and kind is not int) or k in seen or k not in wanted:
            continue  # a JSON key is a str or an int exactly (never a bool)
        seen.add(k)
        if slim is not None:
            try:
                slim_key = slim(item)
            except SLIM_ERRORS:
                pass  # a key field the slim read cannot vouch for: validate it all now
            else:
                if listed:
                    items[index] = None
                if remember is not None:
                    remember(k, slim_key)
                yield k, Answer(slim_key, item, build)
                continue
        if listed:
            items[index] = None
        try:
            yield k, build(item)
        except ProtocolError as exc:
            yield k, exc


def entries_by_key(
    backend: Backend[Any],
    items: Any,
    model: type[M],
    *,
    key: Callable[[Any], Any],
    wanted: Mapping[Hashable, str | None],
    what: str,
) -> dict[Hashable, M | ProtocolError]:
    """``each_entry``'s entries, all validated, by key."""
    found: dict[Hashable, M | ProtocolError] = {}
    for k, entry in each_entry(backend, items, model, key=key, wanted=wanted, what=what):
        found[k] = cast("M | ProtocolError", entry)  # no slim reader: no Answer
    return found


class _Validator(Generic[M]):
    """Validates an entry of ``what`` into ``model`` (then ``then`` of it); a mismatch is the
    ``ProtocolError`` of the entry's task.

    A slotted object shared by every entry of one answer, rather than a closure per entry.
    """

    __slots__ = ("_backend", "_key", "_model", "_then", "_wanted", "_what")

    def __init__(
        self,
        backend: Backend[Any],
        model: type[M],
        what: str,
        key: Callable[[Any], Any],
        wanted: Mapping[Hashable, str | None],
        then: Callable[[M], Any] | None,
    ) -> None:
        self._backend = backend
        self._model = model
        self._what = what
        self._key = key
        self._wanted = wanted
        self._then = then

    def __call__(self, item: Any) -> Any:
        model = self._model
        try:
            entry = model.model_validate(item)
        except ValidationError as exc:
            detail = validation_detail(exc)
            raise self._backend.protocol_error(
                f"its entry in {self._what} does not match {model.__name__}{detail}",
                self._wanted.get(self._key(item)),
            ) from None
        return entry if self._then is None else self._then(entry)


class _FromText:
    """``build`` of an entry kept as its JSON text (a ``TextMemo``'s): decoded on demand."""

    __slots__ = ("_build",)

    def __init__(self, build: Callable[[Any], Any]) -> None:
        self._build = build

    def __call__(self, text: str) -> Any:
        return self._build(json.loads(text))


async def paced(items: Iterable[T], budget: float = SLICE_SECONDS) -> AsyncIterator[T]:
    """``items`` one by one, giving the loop a turn after every ``budget`` seconds of work.

    The clock runs while the consumer handles what it got too (the hub settles each answer
    before it asks for the next), so a batch of thousands never holds the loop for long.
    """
    clock = time.perf_counter
    started = clock()
    for item in items:
        yield item
        if clock() - started > budget:
            await asyncio.sleep(0)
            started = clock()


def next_page(
    backend: Backend[Any],
    token: str | None,
    seen: set[str],
    what: str,
    task_id: str | None = None,
) -> str | None:
    """The continuation token to follow next, or None to stop (none given, or one seen before).

    A server handing out new tokens past ``MAX_PAGES`` pages in one round is a
    ``ProtocolError`` naming (shortened) the token it would have followed.
    """
    if not token or token in seen:
        return None
    if len(seen) + 1 >= MAX_PAGES:
        raise backend.protocol_error(
            f"{what}: still a new continuation token after {MAX_PAGES} pages in one round "
            f"(the last {shorten(token)!r}); not following it",
            task_id,
        )
    seen.add(token)
    return token
