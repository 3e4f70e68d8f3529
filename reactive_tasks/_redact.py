"""Keeps secrets out of logs and messages: query-string redaction and short token display."""

from __future__ import annotations

import logging
import threading
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["protect_query_params", "redact_url", "shorten"]

_names: set[str] = set()
_lock = threading.Lock()
_installed = False


def shorten(secret: str) -> str:
    """A secret shown as its first 8 characters and an ellipsis."""
    return secret if len(secret) <= 8 else secret[:8] + "…"


def redact_url(url: str, names: frozenset[str] | set[str] | None = None) -> str:
    """``url`` with userinfo and the values of secret query parameters replaced by ``***``."""
    names = _names if names is None else names
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query and names:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if k.lower() in names else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


class _RedactingFilter(logging.Filter):
    """Rewrites httpx's request log records so that secret query values never reach handlers."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(
                redact_url(str(a)) if _looks_like_url(a) else a for a in record.args
            )
        return True


def _looks_like_url(value: object) -> bool:
    text = str(value) if type(value).__name__ == "URL" or isinstance(value, str) else ""
    return "://" in text and ("?" in text or "@" in text)


def protect_query_params(*names: str) -> None:
    """Register query parameters whose values httpx must not log, and install the filter."""
    global _installed
    with _lock:
        _names.update(n.lower() for n in names)
        if not _installed:
            logging.getLogger("httpx").addFilter(_RedactingFilter())
            _installed = True
