"""The queue's paged listings (task groups, artifacts): every page, following its token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeVar

from pydantic import BaseModel

from ..._errors import TaskNotFound
from .._answers import next_page
from ._source import TaskclusterSource


class Page(BaseModel):
    """What every listing page has: the token of the next page, if any."""

    continuationToken: str | None = None


P = TypeVar("P", bound=Page)


async def pages(
    backend: TaskclusterSource, url: str, task_id: str, model: type[P], what: str
) -> AsyncIterator[P]:
    """Every page of the listing at ``url`` (a 404/410 is ``TaskNotFound``: no such ``what``)."""
    session = backend.session()
    token: str | None = None
    seen: set[str] = set()
    while True:
        params = {"continuationToken": token} if token else None
        response = await session.request("GET", url, task_id=task_id, params=params)
        code = response.status_code
        if code in (404, 410):
            raise TaskNotFound(
                f"{backend._explain(response)} (no such {what})",
                backend=backend.name,
                task_id=task_id,
            )
        if code != 200:
            raise backend.protocol_error(f"unexpected {backend._explain(response)}", task_id)
        page = backend.parse(model, response.content, task_id)
        yield page
        token = next_page(backend, page.continuationToken, seen, f"{what} listing", task_id)
        if token is None:
            return
