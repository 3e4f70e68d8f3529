"""Hawk credentials and their signing, applied by the session to the queue's own origin."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..._errors import ConfigurationError

__all__ = ["HawkAuth", "TaskclusterCredentials"]


@dataclass(frozen=True)
class TaskclusterCredentials:
    """Hawk credentials; the access token never shows in ``repr`` (nor anywhere else)."""

    client_id: str
    access_token: str = field(repr=False)
    certificate: Mapping[str, Any] | None = field(default=None, repr=False)

    @classmethod
    def coerce(cls, value: Any) -> TaskclusterCredentials:
        """Accept these, a mapping like the official client's, or an object with attributes."""
        if isinstance(value, TaskclusterCredentials):
            return value

        def pick(*names: str) -> Any:
            for name in names:
                if isinstance(value, Mapping) and name in value:
                    return value[name]
                if not isinstance(value, Mapping) and hasattr(value, name):
                    return getattr(value, name)
            return None

        client_id = pick("clientId", "client_id")
        token = pick("accessToken", "access_token")
        cert = pick("certificate")
        if not isinstance(client_id, str) or not client_id:
            raise ConfigurationError("Taskcluster credentials need a non-empty clientId")
        if isinstance(token, bytes):
            token = token.decode("utf-8", "replace")
        if not isinstance(token, str) or not token:
            raise ConfigurationError("Taskcluster credentials need a non-empty accessToken")
        if isinstance(cert, bytes):
            cert = cert.decode("utf-8", "replace")
        if isinstance(cert, str):
            try:
                cert = json.loads(cert)
            except ValueError:
                raise ConfigurationError("the credentials' certificate is not JSON") from None
        if cert is not None and not isinstance(cert, Mapping):
            raise ConfigurationError("the credentials' certificate must be a JSON object")
        return cls(client_id, token, cert)

    def hawk_ext(self) -> str | None:
        """Hawk's ``ext`` for temporary credentials: the certificate, base64url-encoded JSON."""
        if not self.certificate:
            return None
        raw = json.dumps({"certificate": dict(self.certificate)}, separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode()


class HawkAuth:
    """The session's auth hook for Taskcluster: a Hawk ``Authorization`` per request.

    The payload hash covers the exact body bytes the session sends. Hawk credentials cannot be
    renewed, so a refusal stays a refusal.
    """

    def __init__(self, credentials: TaskclusterCredentials) -> None:
        try:
            import mohawk  # noqa: F401
        except ImportError:
            raise ConfigurationError(
                "Hawk credentials need mohawk: pip install 'reactive-tasks[taskcluster]'"
            ) from None
        self.credentials = credentials
        self._key = {
            "id": credentials.client_id, "key": credentials.access_token, "algorithm": "sha256",
        }
        self._ext = credentials.hawk_ext()

    def __repr__(self) -> str:
        return f"HawkAuth(client_id={self.credentials.client_id!r})"

    async def sign(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> Mapping[str, str]:
        """The Hawk header for this request (its content type and body hashed with it)."""
        import mohawk

        content_type = ""
        if body is not None:
            content_type = next(
                (v for k, v in headers.items() if k.lower() == "content-type"), ""
            )
        sender = mohawk.Sender(
            self._key, url, method, content=body or b"", content_type=content_type,
            ext=self._ext,
        )
        return {"Authorization": sender.request_header}

    async def refused(self, status: int) -> bool:
        """Hawk has nothing to renew: the refusal goes through."""
        return False
