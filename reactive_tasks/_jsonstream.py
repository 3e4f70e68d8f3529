"""A JSON object decoded one member at a time, and one of its list members one entry at a time.

``json.loads`` of a page of 1,000 task statuses builds all of them before the first is read. They
all outlive the garbage collector's young collections and are promoted to its oldest generation,
whose full collections (which scan every long-lived watch) then come far more often. Decoded
entry by entry, each entry is garbage before the next one is built. The standard library's own
C scanner decodes each value, so values come out exactly as ``json.loads`` makes them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from json import decoder
from json.decoder import JSONDecodeError
from json.scanner import make_scanner
from typing import Any

__all__ = ["ObjectStream"]

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


class ObjectStream:
    """``text`` (a JSON object), its member ``field`` streamed when it is a list.

    ``entries()`` yields that list's entries as it reaches them and fills ``rest`` with every
    other member (a member after the list is there once the entries are exhausted). Malformed
    JSON raises ``json.JSONDecodeError`` (a ``ValueError``) where it is met; so does a second
    ``field`` member, which ``json.loads`` would silently let win over the first.
    """

    __slots__ = ("field", "rest", "streamed", "text")

    def __init__(self, text: str, field: str) -> None:
        self.text = text
        self.field = field
        self.rest: dict[str, Any] = {}
        self.streamed = False  # True once ``field`` was found to be a list

    @staticmethod
    def is_object(text: str) -> bool:
        """Whether ``text`` starts (after whitespace) like a JSON object."""
        pos = _skip(text, 0)
        return text[pos : pos + 1] == "{"

    def entries(self) -> Iterator[Any]:
        text, field, rest, scan = self.text, self.field, self.rest, _scan
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
                    while True:
                        try:
                            value, pos = scan(text, pos)
                        except StopIteration as stop:
                            raise JSONDecodeError("Expecting value", text, stop.value) from None
                        yield value
                        pos = _skip(text, pos)
                        mark = text[pos : pos + 1]
                        pos = _skip(text, pos + 1)
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
