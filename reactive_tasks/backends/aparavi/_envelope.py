"""Aparavi's two answer shapes read into ``data`` or the typed error they stand for.

The SDK's envelope ``{"status": "OK", "data": ...}`` / ``{"status": "Error", "error": {...}}``,
and the documented ``{"data": {...}, "message"}`` / ``{"error": "Task not found", "message"}``.
Shared by polling (``GET /task``) and the actions (``PUT``/``DELETE /task``).
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, Literal, NoReturn

from pydantic import BaseModel, ConfigDict, ValidationError

from ..._errors import AuthenticationError, TaskNotFound, TransientFault
from ..._redact import shorten
from ..._reply import HttpReply

if TYPE_CHECKING:
    from ._source import AparaviSource

ANY_UUID = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE
)
_MAX_MESSAGE = 300


class AparaviApiError(BaseModel):
    """The ``error`` object of an ``{"status": "Error"}`` envelope."""

    model_config = ConfigDict(frozen=True, extra="allow")

    message: str = ""
    code: int | str | None = None
    details: Any = None


class _Envelope(BaseModel):
    status: Literal["OK", "Error"]
    data: Any = None
    error: AparaviApiError | None = None
    metrics: dict[str, Any] | None = None


class _DocumentedEnvelope(BaseModel):
    """The documented shape: ``{"data": {...}, "message"}`` or ``{"error": "...", "message"}``."""

    data: Any = None
    error: str | None = None
    message: str | None = None


class _ValidationDetail(BaseModel):
    """A FastAPI-style 422 body: ``{"detail": [{"loc", "msg", "type"}]}``."""

    detail: list[dict[str, Any]]


def answer_data(backend: AparaviSource, response: HttpReply, token: str | None) -> Any:
    """The ``data`` of an OK answer; anything else raises the matching typed error."""
    code = response.status_code
    documented = _documented(response.content)
    if documented is not None:
        return _documented_data(backend, code, documented, token)
    envelope: _Envelope | None = None
    try:
        envelope = _Envelope.model_validate_json(response.content)
    except ValidationError:
        if code == 200:
            backend.parse(_Envelope, response.content, token)  # raises a ProtocolError
    if code == 200 and envelope is not None and envelope.status == "OK":
        if envelope.data is None:
            raise backend.protocol_error("an OK answer without data", token)
        return envelope.data
    error = envelope.error if envelope is not None else None
    if envelope is None and code == 422:
        error = _validation_error(response.content)
    if envelope is None and code == 404:
        raise backend.wrong_url("/task", token)
    _raise(backend, code, error, token)


def refusal_text(backend: AparaviSource, response: HttpReply) -> str | None:
    """The server's own reason for a 401/403, scrubbed, or None."""
    documented = _documented(response.content)
    if documented is not None:
        return scrub(backend, documented.error, None) if documented.error else None
    try:
        envelope = _Envelope.model_validate_json(response.content)
    except ValidationError:
        return None
    if envelope.error is None or not envelope.error.message:
        return None
    return scrub(backend, envelope.error.message, None)


def scrub(backend: AparaviSource, text: str, token: str | None) -> str:
    """Server text made safe to show: no API key, tokens shortened, length capped."""
    text = text.replace(backend._api_key, "***")
    if token:
        text = text.replace(token, shorten(token))
    text = ANY_UUID.sub(lambda m: shorten(m.group(0)), text)
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


def _documented_data(
    backend: AparaviSource, code: int, answer: _DocumentedEnvelope, token: str | None
) -> Any:
    """The ``data`` of the documented shape; its ``error`` text raises the typed error."""
    if code == 200 and answer.error is None:
        if not isinstance(answer.data, dict):
            raise backend.protocol_error("an answer without a data object", token)
        return answer.data
    text = answer.error or answer.message or ""
    if answer.error and answer.message:
        text = f"{answer.error} ({answer.message})"
    if (answer.error or "").strip().lower() == "task not found":
        code = 404
    _raise(backend, code, AparaviApiError(message=text), token)


def _raise(
    backend: AparaviSource, http_code: int, error: AparaviApiError | None, token: str | None
) -> NoReturn:
    code = http_code
    if code == 200 and error is not None and isinstance(error.code, int):
        code = error.code  # an Error envelope sent with HTTP 200: trust its own code
    text = scrub(backend, error.message, token) if error is not None and error.message else ""
    text = f"HTTP {code}: {text or 'no message'}"
    shown = None if token is None else backend.display_id(token)
    if code == 404:
        raise TaskNotFound(text, backend=backend.name, task_id=shown)
    if code in (401, 403):
        raise AuthenticationError(text, backend=backend.name, task_id=shown)
    if code == 429 or code >= 500:
        raise TransientFault(f"{backend.name} {text}")
    raise backend.protocol_error(text, token)


def _documented(content: bytes) -> _DocumentedEnvelope | None:
    """The answer read as the documented shape, or None when it is not that shape.

    It is a JSON object without the SDK's ``status`` key, holding ``data`` or an ``error`` text.
    """
    try:
        raw = json.loads(content)
    except ValueError:
        return None
    if not isinstance(raw, dict) or "status" in raw:
        return None
    if "data" not in raw and not isinstance(raw.get("error"), str):
        return None
    try:
        return _DocumentedEnvelope.model_validate(raw)
    except ValidationError:
        return None



def _validation_error(content: bytes) -> AparaviApiError | None:
    try:
        first = _ValidationDetail.model_validate_json(content).detail[:1]
    except ValidationError:
        return None
    if not first:
        return None
    where = ".".join(str(p) for p in first[0].get("loc", []))
    return AparaviApiError(message=f"{where}: {first[0].get('msg', 'invalid')}", code=422)
