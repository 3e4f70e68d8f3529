"""GreenCloud's bearer token as the session's auth hook: log in with the API key on first use,
refresh (or log in again) after a refusal. Single flight is the session's."""

from __future__ import annotations

import re
from collections.abc import Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, SecretStr

from ..._errors import AuthenticationError, ConfigurationError
from ..._reply import HttpReply

if TYPE_CHECKING:
    from .._base import Backend

__all__ = ["BearerAuth", "check_secret"]

_TOKEN_TEXT = re.compile(r"^[\x21-\x7e]+( [\x21-\x7e]+)?$")  # printable; one space ("Bearer x")
_LOGIN = "/v1/auth/apiKey"
_REFRESH = "/v1/auth/refresh"
#: The token this task last signed with: a refusal of an older one needs no new renewal.
_signed_with: ContextVar[str | None] = ContextVar("greencloud_signed_with", default=None)


class _Tokens(BaseModel):
    """``POST /v1/auth/apiKey`` and ``/v1/auth/refresh`` answers; secrets stay masked in reprs."""

    expiresIn: float
    accessToken: SecretStr
    refreshToken: SecretStr | None = None


def check_secret(value: str | None, what: str) -> None:
    """Refuse a token or key that could not travel in a header."""
    if value is None:
        return
    if not isinstance(value, str) or not _TOKEN_TEXT.fullmatch(value):
        raise ConfigurationError(f"{what} must be a non-empty printable string")


class BearerAuth:
    """The secrets of one backend and how they are renewed; nothing here shows in a repr."""

    __slots__ = ("_backend", "access", "api_key", "refresh", "static")

    def __init__(self, backend: Backend[Any], token: str | None, api_key: str | None) -> None:
        self._backend = backend
        self.static = token is not None
        self.api_key = api_key
        self.access = token
        self.refresh: str | None = None

    def __repr__(self) -> str:
        return "<GreenCloud credentials: hidden>"

    async def sign(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> Mapping[str, str]:
        """The bearer header (logging in first when there is no token); none for the login."""
        if url.partition("?")[0].endswith((_LOGIN, _REFRESH)):
            return {}  # the login and the refresh carry their secret in the body
        if self.access is None:
            # concurrent first requests share one login (the session's single-flight cache)
            session = self._backend.session()
            await session.cached(("greencloud", "login"), self._login, ttl=0.0)
            session.forget(("greencloud", "login"))
        token = self.access
        assert token is not None
        _signed_with.set(token)
        return {"Authorization": token}

    async def refused(self, status: int) -> bool:
        """After a 401/403: refresh the token, else log in again; a plain token is not renewed."""
        if self.static:
            return False
        if self.access is not None and self.access != _signed_with.get():
            return True  # renewed since this request was signed: just resend it
        if self.refresh is None or not await self._refresh():
            await self._login()
        return True

    async def _login(self) -> None:
        """Log in with the API key; the old token serves (and is refused) until this is done."""
        try:
            response = await self._backend.session().send(
                "POST", _LOGIN, json={"key": self.api_key}
            )
        except AuthenticationError:
            raise AuthenticationError(
                "the API key was refused (POST /v1/auth/apiKey)", backend=self._backend.name
            ) from None
        if response.status_code in (400, 404):
            raise AuthenticationError(
                f"the API key was refused (HTTP {response.status_code})",
                backend=self._backend.name,
            )
        self._store(response)

    async def _refresh(self) -> bool:
        """Renew with the refresh token; False when it was refused (then log in again)."""
        try:
            response = await self._backend.session().send(
                "POST", _REFRESH, json={"refreshToken": self.refresh}
            )
        except AuthenticationError:
            return False
        if response.status_code in (400, 404):
            return False
        self._store(response)
        return True

    def _store(self, response: HttpReply) -> None:
        backend = self._backend
        if response.status_code not in (200, 201):
            raise backend.protocol_error(f"unexpected HTTP {response.status_code}")
        tokens = backend.parse(_Tokens, response.content)
        access = tokens.accessToken.get_secret_value()
        if not _TOKEN_TEXT.fullmatch(access):
            raise backend.protocol_error("the access token is not printable text")
        refresh = tokens.refreshToken.get_secret_value() if tokens.refreshToken else None
        backend.secrets.add(access)
        backend.secrets.add(refresh)
        self.access = access
        self.refresh = refresh or None
