"""The answer a session hands its source: status, headers and the decoded body, nothing more.

A poll needs only these; httpx's ``Response`` (URL, request, history, header re-encoding) costs
more CPU per poll than reading it, so the lean path never builds one. Streamed reads (artifacts)
still get an ``httpx.Response``.
"""

from __future__ import annotations

import codecs
import json as jsonlib
from collections.abc import Mapping
from email.message import Message
from typing import Any

__all__ = ["HttpReply"]


class HttpReply:
    """An HTTP answer read whole: the members sources read of an ``httpx.Response``."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, headers: Mapping[str, str], content: bytes) -> None:
        self.status_code = status_code
        #: Case-insensitive (aiohttp's or httpx's own header mapping).
        self.headers = headers
        #: The body, decoded (gzip, deflate) and within the session's size cap.
        self.content = content

    @property
    def text(self) -> str:
        """The body as text, in the charset the Content-Type names (else UTF-8), as httpx."""
        return self.content.decode(self._charset() or "utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON (``ValueError`` when it is not)."""
        return jsonlib.loads(self.content)

    async def aclose(self) -> None:
        """Nothing to release: the body was read whole (kept for code written for httpx)."""

    def _charset(self) -> str | None:
        media = self.headers.get("content-type")
        if not media:
            return None
        message = Message()
        message["content-type"] = media
        charset = message.get_param("charset")
        if not isinstance(charset, str):
            return None
        try:
            codecs.lookup(charset)
        except LookupError:
            return None
        return charset

    def __repr__(self) -> str:
        return f"<HttpReply [{self.status_code}]>"
