"""GreenCloud's per-function CSV of tasks and results (``GET /v1/task/<functionId>/csv``)."""

from __future__ import annotations

import csv
import io
import re
from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..._errors import TaskNotFound
from ._source import GreenCloudSource, object_id

__all__ = ["GreenCloudCsvRow", "tasks_csv"]

_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_CSV_COLUMNS = ("ID", "IssuedAt", "Status", "ContentType", "Body")


class GreenCloudCsvRow(BaseModel):
    """One row of ``GET /v1/task/<functionId>/csv``."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(alias="ID")
    issued_at: datetime = Field(alias="IssuedAt")
    status: int = Field(alias="Status")
    content_type: str = Field(alias="ContentType")
    body: str = Field(alias="Body")


async def tasks_csv(
    backend: GreenCloudSource,
    function_id: str,
    *,
    show_plain: bool | None = None,
    schedule_id: str | None = None,
    date_since: date | str | None = None,
    date_until: date | str | None = None,
) -> list[GreenCloudCsvRow]:
    """The function's tasks and results (``GET /v1/task/<functionId>/csv``) as typed rows."""
    function = object_id(function_id, "function id")
    params: dict[str, str] = {}
    if show_plain is not None:
        params["showPlain"] = "true" if show_plain else "false"
    if schedule_id is not None:
        params["scheduleId"] = object_id(schedule_id, "schedule id")
    since = _day(date_since, "date_since")
    until = _day(date_until, "date_until")
    if since is not None:
        params["dateSince"] = since
    if until is not None:
        params["dateUntil"] = until
    response = await backend.session().request(
        "GET", f"/v1/task/{function}/csv", params=params or None
    )
    if response.status_code == 404:
        raise TaskNotFound(f"HTTP 404: no function {function}", backend=backend.name)
    if response.status_code != 200:
        raise backend.unexpected(response)
    return _rows(backend, response.text)


def _rows(backend: GreenCloudSource, text: str) -> list[GreenCloudCsvRow]:
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or header == []:
        return []
    names = [h.strip() for h in header]
    missing = [c for c in _CSV_COLUMNS if c not in names]
    if missing:
        raise backend.protocol_error(f"the CSV lacks the columns {missing}")
    index = {c: names.index(c) for c in _CSV_COLUMNS}
    rows: list[GreenCloudCsvRow] = []
    for number, cells in enumerate(reader, start=2):
        if not cells:
            continue
        if len(cells) < len(names):
            raise backend.protocol_error(f"CSV line {number} has {len(cells)} cells")
        try:
            rows.append(GreenCloudCsvRow.model_validate({c: cells[index[c]] for c in index}))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise backend.protocol_error(f"CSV line {number}, {where}: {first['msg']}") from None
    return rows


def _day(value: date | str | None, what: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        value = value.date()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str) and _DAY.fullmatch(value):
        try:
            date.fromisoformat(value)
        except ValueError:
            pass
        else:
            return value
    raise ValueError(f"{what} must be a date or a 'yyyy-mm-dd' string, got {value!r}")
