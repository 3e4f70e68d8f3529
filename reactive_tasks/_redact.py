"""Keeps secrets out of logs and messages: URL redaction, registered secrets, short tokens.

Every backend owns a ``Secrets`` register (its keys, tokens, header values, URL path keys); text
that leaves the library (exception messages, log records, including the records that httpx,
httpcore, aiohttp, mohawk, asyncio, aio-pika and aiormq write on its behalf) is scrubbed against
every live register.
"""

from __future__ import annotations

import logging
import re
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = [
    "Secrets",
    "install_log_filters",
    "origin_of",
    "protect_query_params",
    "redact_url",
    "scrub",
    "shorten",
]

#: Query parameters whose values are credentials wherever they appear (signed URLs, tokens).
SIGNED_URL_PARAMS = frozenset({
    "x-amz-signature", "x-amz-credential", "x-amz-security-token",
    "x-goog-signature", "x-goog-credential", "sig", "bewit", "signature",
    "access_token", "token", "api_key", "apikey",
})
#: Header names whose values are credentials even when given per request.
_SECRET_HEADER = re.compile(r"auth|token|key|secret|cookie|signature|session|password", re.I)
_BENIGN_HEADERS = frozenset({"accept", "accept-encoding", "content-type", "user-agent"})
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()\[\]{}]+")
_HAWK = re.compile(r"\bHawk\s+(?=(?:id|mac|ts|nonce|hash|ext|app|dlg)=)[^\n]*", re.I)
_HAWK_FIELDS = re.compile(r"\b(mac|hash|ext|bewit)=\"?[^\s\",]+\"?", re.I)
_LOGGERS = (
    "httpx", "httpcore", "aiohttp", "mohawk", "asyncio", "reactive_tasks", "aio_pika", "aiormq",
)
_MAX_LITERALS = 256

_names: set[str] = set(SIGNED_URL_PARAMS)
# Re-entrant: a record can be logged while it is held (a __del__ run by the garbage collector).
_lock = threading.RLock()
_registers: weakref.WeakSet[Secrets] = weakref.WeakSet()
_filtered: set[str] = set()


def shorten(secret: str) -> str:
    """A secret shown as its first 8 characters and an ellipsis."""
    return secret if len(secret) <= 8 else secret[:8] + "…"


def origin_of(url: str) -> tuple[str, str, int | None]:
    """The (scheme, host, port) a URL talks to; default ports made explicit."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        port = {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


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


class Secrets:
    """One backend's secrets: literal strings (bounded, newest kept) and patterns to shorten.

    ``scrub`` replaces each literal by its display form (``***`` unless told otherwise) and each
    pattern match by its shortened form; every live register takes part in ``scrub``.
    """

    def __init__(self, patterns: Iterable[re.Pattern[str]] = ()) -> None:
        self._literals: OrderedDict[str, str] = OrderedDict()
        self.patterns = tuple(patterns)
        #: Set once the owner has sent a request: only then can its secrets be in foreign text,
        #: so only then do its patterns apply to every log record (a backend built just to
        #: validate ids must not shorten other backends' ids in the logs).
        self.active = False
        with _lock:
            _registers.add(self)

    def add(self, secret: str | None, shown: str = "***") -> None:
        """Register ``secret`` (and, for ``"Scheme value"`` credentials, the value alone)."""
        if not secret or len(secret) < 4:
            return
        with _lock:
            self._literals.pop(secret, None)
            self._literals[secret] = shown
            scheme, _, value = secret.partition(" ")
            if value and len(value) >= 4 and scheme.isalpha():
                self._literals.pop(value, None)
                self._literals[value] = shown
            while len(self._literals) > _MAX_LITERALS:
                self._literals.popitem(last=False)

    def add_headers(self, headers: Mapping[str, str], *, every: bool = False) -> None:
        """Register header values: credential-looking ones, or (``every``) all but benign ones."""
        for name, value in headers.items():
            if name.lower() in _BENIGN_HEADERS or value.lstrip().lower().startswith("hawk "):
                continue
            if every or _SECRET_HEADER.search(name):
                self.add(value)

    def add_url(self, url: str, *, path_is_secret: bool = False) -> None:
        """Register a URL's userinfo, and with ``path_is_secret`` its path (shown as the origin)."""
        parts = urlsplit(url)
        if "@" in parts.netloc:
            self.add(parts.netloc.rsplit("@", 1)[0])
        if path_is_secret and parts.path.strip("/"):
            bare = urlunsplit((parts.scheme, parts.netloc.rsplit("@", 1)[-1], "", "", ""))
            self.add(url.rstrip("/"), bare)
            self.add(parts.path.rstrip("/"), "")
            for segment in parts.path.split("/"):
                if len(segment) >= 12:
                    self.add(segment)

    def literals(self) -> list[tuple[str, str]]:
        with _lock:
            return list(self._literals.items())


def scrub(text: str, *registers: Secrets) -> str:
    """``text`` free of every known secret: URL credentials, signed-URL parameters, Hawk
    headers, and the literals and patterns of ``registers`` (all live registers if none given).
    """
    if not text:
        return text
    everyone = not registers
    if everyone:
        with _lock:
            registers = tuple(_registers)
    literals: list[tuple[str, str]] = []
    for register in registers:
        literals.extend(register.literals())
    # longest first, so that a URL holding a key is replaced whole before the key alone
    for secret, shown in sorted(literals, key=lambda item: -len(item[0])):
        if secret in text:
            text = text.replace(secret, shown)
    if "://" in text:
        text = _URL.sub(lambda m: redact_url(m.group(0)), text)
    if "awk" in text or "=" in text:
        text = _HAWK.sub("Hawk ***", text)
        text = _HAWK_FIELDS.sub(lambda m: m.group(1) + "=***", text)
    for register in registers:
        if everyone and not register.active:
            continue
        for pattern in register.patterns:
            text = pattern.sub(lambda m: shorten(m.group(0)), text)
    return text


class _ScrubbingFilter(logging.Filter):
    """Rewrites a record's message, traceback and stack text so no secret reaches a handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to the handler to report
            return True
        clean = scrub(message)
        if clean != message or record.args:
            record.msg, record.args = clean, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True


_FILTER = _ScrubbingFilter()


def install_log_filters() -> None:
    """Put the scrubbing filter on the loggers of this library and the ones it calls.

    A logger's filters see only its own records, so each existing logger below the watched
    names gets one; call again after importing a library that creates new loggers.
    """
    names = [*_LOGGERS, *list(logging.Logger.manager.loggerDict)]
    with _lock:
        fresh = [n for n in names if n not in _filtered and n.split(".")[0] in _LOGGERS]
        _filtered.update(fresh)
    for name in fresh:
        logging.getLogger(name).addFilter(_FILTER)


def protect_query_params(*names: str) -> None:
    """Register query parameters whose values must never be logged, and install the filters."""
    with _lock:
        _names.update(n.lower() for n in names)
    install_log_filters()
