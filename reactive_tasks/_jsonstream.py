"""A JSON object decoded one member at a time, and one of its list members one entry at a time;
entries whose text is the same as the one a ``TextMemo`` holds for them are not decoded again.

``json.loads`` of a page of 1,000 task statuses builds all of them before the first is read. They
all outlive the garbage collector's young collections and are promoted to its oldest generation,
whose full collections (which scan every long-lived watch) then come far more often. Decoded
entry by entry, each entry is garbage before the next one is built. The standard library's own
C scanner decodes each value, so values come out exactly as ``json.loads`` makes them.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from json import decoder
from json.decoder import JSONDecodeError
from json.scanner import make_scanner
from typing import Any, NamedTuple

__all__ = ["Built", "Known", "ObjectStream", "TextMemo"]

# The C scanner behind ``json.loads`` (typeshed types neither of these as they are).
_scan: Callable[[str, int], tuple[Any, int]] = make_scanner(json.JSONDecoder())  # type: ignore[arg-type]
_scanstring: Callable[[str, int], tuple[str, int]] = decoder.scanstring  # type: ignore[attr-defined]
_WS = re.compile(r"[ \t\n\r]*").match
_WS_CHARS = frozenset(" \t\n\r")
_NAME = "Expecting property name enclosed in double quotes"


def _skip(text: str, pos: int) -> int:
    """``pos`` past any JSON whitespace."""
    if pos < len(text) and text[pos] in _WS_CHARS:
        return _WS(text, pos).end()  # type: ignore[union-attr]
    return pos


class Known(NamedTuple):
    """An entry the same, character for character, as one read before: its key, its text and
    what reading it gave then (see ``TextMemo``)."""

    key: Any
    text: str
    reading: Any


class Built(NamedTuple):
    """An entry built straight from its text, not decoded first: its key, its text, its
    reading and what it was built into (see ``StreamedPage``)."""

    key: Any
    text: str
    reading: Any
    built: Any


class TextMemo:
    """The text of each key's latest list entry while the key is at rest, and what reading it
    gave.

    The text of a JSON object, array or string is never a proper prefix of another value's text,
    so an entry that starts with the remembered text of its key *is* that entry: it need not be
    decoded again. A text is kept only once a key read the same twice in a row: a first sighting
    or a changed reading keeps the reading alone, so that the first round of thousands of new
    tasks, and the rounds in which they change, copy no text. A kept text that stops matching
    while the reading stays the same (a field outside the reading moved) is dropped and kept
    again only at the next read, so a key whose text moves at every read costs a copy every
    other read; when most kept texts of a page moved that way, the memo keeps no new text
    for a while (doubling up to ``MAX_QUIET`` pages while that goes on), so that a server whose
    every answer moves costs little more than reading without a memo. Keys not seen for two
    ``max_age`` periods are forgotten (two generations).
    Texts and readings are kept in dicts of their own, not paired in a tuple per key: a tuple
    would be one more object per watched task for every full garbage collection to scan.
    """

    __slots__ = ("_hits", "_latest", "_misses", "_older", "_quiet", "_rotated", "_wait", "max_age")

    #: The most pages for which no new text is kept after the kept ones stopped matching.
    MAX_QUIET = 64

    def __init__(self, max_age: float = 300.0) -> None:
        self.max_age = max_age
        # kept texts that matched this page, and that did not although the reading held
        self._hits = self._misses = 0
        self._quiet = 0  # pages left in which no new text is kept
        self._wait = 1  # how many pages the next quiet spell lasts
        # (texts, readings) of the latest generation and of the one before
        self._latest: tuple[dict[Any, str], dict[Any, Any]] = ({}, {})
        self._older: tuple[dict[Any, str], dict[Any, Any]] = ({}, {})
        self._rotated = time.monotonic()

    def __len__(self) -> int:
        """How many texts are kept."""
        return len(self._latest[0]) + len(self._older[0])

    def remember(self, key: Any, text: str, start: int, end: int, reading: Any) -> None:
        """Note ``reading`` for ``key``, whose entry ``text[start:end]`` was decoded (it did not
        match), and keep that text when the reading is the same as last time (only an object,
        array or string: a number may be a prefix of another)."""
        texts, readings = self._latest
        before = readings.get(key)
        if before is None:
            older_texts, older_readings = self._older
            before = older_readings.pop(key, None)
            older_texts.pop(key, None)
        readings[key] = reading
        held = texts.get(key)
        if held is not None:
            if len(held) != end - start or not text.startswith(held, start):
                del texts[key]  # a stale text: kept again at the next read at the soonest
                if before == reading:
                    self._misses += 1  # its text moved, not its reading
        elif (
            before is not None and before == reading and not self._quiet
            and text[start : start + 1] in _OPENERS
        ):
            texts[key] = text[start:end]

    def moved(self, key: Any) -> bool:
        """After ``match`` found no match for ``key``: whether it held a text, that is whether
        the entry differs from one that held still (most often, the task changed)."""
        return key in self._latest[0]

    def holds_texts(self) -> bool:
        """Whether any text is kept (no key can match otherwise)."""
        return bool(self._latest[0] or self._older[0])

    def match(self, key: Any, text: str, pos: int) -> Known | None:
        """The entry of ``key`` at ``pos`` of ``text`` when it is the remembered one."""
        texts, readings = self._latest
        held = texts.get(key)
        if held is None:
            older_texts, older_readings = self._older
            held = older_texts.pop(key, None)
            if held is None:
                return None
            texts[key] = held
            readings[key] = older_readings.pop(key)
        if not text.startswith(held, pos):
            return None
        self._hits += 1
        return Known(key, held, readings[key])

    def rotate(self) -> None:
        """Called once a page: count down or start a quiet spell (see above), and start a new
        generation once the latest is ``max_age`` old."""
        if self._quiet:
            self._quiet -= 1
        elif self._misses > 2 * self._hits + 16:  # most kept texts of the last page moved
            self._quiet, self._wait = self._wait, min(2 * self._wait, self.MAX_QUIET)
        elif self._hits > self._misses:
            self._wait = 1
        self._hits = self._misses = 0
        now = time.monotonic()
        if now - self._rotated >= self.max_age:
            self._older, self._latest = self._latest, ({}, {})
            self._rotated = now


_OPENERS = frozenset('{["')


class ObjectStream:
    """``text`` (a JSON object), its member ``field`` streamed when it is a list.

    ``entries()`` yields that list's entries as it reaches them and fills ``rest`` with every
    other member (a member after the list is there once the entries are exhausted). Malformed
    JSON raises ``json.JSONDecodeError`` (a ``ValueError``) where it is met; so does a second
    ``field`` member, which ``json.loads`` would silently let win over the first.
    """

    __slots__ = ("end", "field", "known", "rest", "start", "streamed", "text")

    def __init__(
        self,
        text: str,
        field: str,
        known: Callable[[str, int], Known | Built | None] | None = None,
    ) -> None:
        self.text = text
        self.field = field
        #: Asked at each entry first: a ``Known`` or ``Built`` is yielded as it is, the entry
        #: not decoded (its ``text`` is the entry's).
        self.known = known
        self.rest: dict[str, Any] = {}
        self.streamed = False  # True once ``field`` was found to be a list
        #: Where the entry yielded last starts and ends in ``text``.
        self.start = self.end = 0

    @staticmethod
    def is_object(text: str) -> bool:
        """Whether ``text`` starts (after whitespace) like a JSON object."""
        pos = _skip(text, 0)
        return text[pos : pos + 1] == "{"

    def entries(self) -> Iterator[Any]:
        text, field, rest, scan, ws = self.text, self.field, self.rest, _scan, _WS_CHARS
        pos = _skip(text, 0)
        if text[pos : pos + 1] != "{":
            raise JSONDecodeError("Expecting '{'", text, pos)
        pos = _skip(text, pos + 1)
        closing = text[pos : pos + 1] == "}"
        if closing:
            pos += 1
        while not closing:
            if text[pos : pos + 1] != '"':
                raise JSONDecodeError(_NAME, text, pos)
            name, pos = _scanstring(text, pos + 1)
            pos = _skip(text, pos)
            if text[pos : pos + 1] != ":":
                raise JSONDecodeError("Expecting ':' delimiter", text, pos)
            pos = _skip(text, pos + 1)
            if name == field and (self.streamed or field in rest):
                raise JSONDecodeError(f"Member {field!r} appears twice", text, pos)
            if name == field and text[pos : pos + 1] == "[":
                self.streamed = True
                pos = _skip(text, pos + 1)
                if text[pos : pos + 1] == "]":
                    pos += 1
                else:
                    known = self.known
                    while True:
                        hit = None if known is None else known(text, pos)
                        if hit is not None:
                            self.start, pos = pos, pos + len(hit.text)
                            self.end = pos
                            yield hit
                        else:
                            try:
                                value, end = scan(text, pos)
                            except StopIteration as stop:
                                raise JSONDecodeError("Expecting value", text, stop.value) from None
                            self.start, self.end = pos, end
                            pos = end
                            yield value
                        # ``_skip`` inlined: two calls per entry of thousands
                        mark = text[pos : pos + 1]
                        if mark in ws:
                            pos = _WS(text, pos).end()  # type: ignore[union-attr]
                            mark = text[pos : pos + 1]
                        pos += 1
                        if text[pos : pos + 1] in ws:
                            pos = _WS(text, pos).end()  # type: ignore[union-attr]
                        if mark == "]":
                            break
                        if mark != ",":
                            raise JSONDecodeError("Expecting ',' delimiter", text, pos)
            else:
                try:
                    rest[name], pos = scan(text, pos)
                except StopIteration as stop:
                    raise JSONDecodeError("Expecting value", text, stop.value) from None
            pos = _skip(text, pos)
            mark = text[pos : pos + 1]
            pos = _skip(text, pos + 1)
            if mark == "}":
                closing = True
            elif mark != ",":
                raise JSONDecodeError("Expecting ',' delimiter", text, pos)
            elif text[pos : pos + 1] == "}":
                raise JSONDecodeError(_NAME, text, pos)
        if pos < len(text) and _skip(text, pos) != len(text):
            raise JSONDecodeError("Extra data", text, pos)
