"""Reading many-task answers safely: entry by entry, and with a bound on continuation pages.

One malformed entry of a batch or list answer must fail only the task it is about, and entries
of tasks nobody watches must not matter at all; a server must not keep a round paging forever.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from .._errors import ProtocolError
from .._redact import shorten

if TYPE_CHECKING:
    from ._base import Backend

__all__ = ["MAX_PAGES", "entries_by_key", "next_page", "validation_detail"]

M = TypeVar("M", bound=BaseModel)

#: How many continuation pages one listing (or one batch read) may take in one round.
MAX_PAGES = 1_000


def validation_detail(exc: ValidationError) -> str:
    """`` at 'where': what`` for the first error of a pydantic validation failure."""
    for first in exc.errors()[:1]:
        where = ".".join(str(p) for p in first["loc"]) or "the top level"
        return f" at {where!r}: {first['msg']}"
    return ""


def entries_by_key(
    backend: Backend[Any],
    items: Any,
    model: type[M],
    *,
    key: Callable[[Any], Any],
    wanted: Mapping[Hashable, str | None],
    what: str,
) -> dict[Hashable, M | ProtocolError]:
    """The entries of ``items`` (a JSON list) that ``wanted`` asks for, each validated alone.

    ``key`` reads an entry's key (a task id, a JSON-RPC id) from the raw JSON, ``wanted`` maps
    each key sought to the task id it belongs to. An entry whose key is not wanted (or cannot be
    read) is skipped unvalidated; a wanted entry that does not match ``model`` becomes that
    task's ``ProtocolError``. The first entry of a key counts.
    """
    if not isinstance(items, list):
        raise backend.protocol_error(f"{what} is not a list")
    found: dict[Hashable, M | ProtocolError] = {}
    for item in items:
        try:
            k = key(item)
        except (AttributeError, KeyError, TypeError):
            continue
        if not isinstance(k, str | int) or isinstance(k, bool) or k in found or k not in wanted:
            continue
        try:
            found[k] = model.model_validate(item)
        except ValidationError as exc:
            detail = validation_detail(exc)
            found[k] = backend.protocol_error(
                f"its entry in {what} does not match {model.__name__}{detail}", wanted[k]
            )
    return found


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
