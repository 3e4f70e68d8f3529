"""The key that signs ``claim``'s transaction: a private key or an eth-account account, kept out
of every repr, log and message (its forms are registered with the backend's ``Secrets``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..._errors import ConfigurationError
from ..._redact import Secrets

__all__ = ["IExecSigner", "make_signer"]

_KEY = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")
_HINT = "signer must be a private key (64 hex digits) or an eth_account LocalAccount"


class IExecSigner:
    """Signs transactions with an eth-account account; its repr shows the address only."""

    __slots__ = ("_account", "address")

    def __init__(self, account: Any) -> None:
        self._account = account
        #: The sender's address, lowercase 0x-hex.
        self.address: str = str(account.address).lower()

    def sign(self, transaction: Mapping[str, Any]) -> tuple[bytes, str]:
        """(raw signed transaction, its hash as 0x-hex)."""
        try:
            signed = self._account.sign_transaction(dict(transaction))
        except Exception as exc:  # its text could hold the transaction, never the key
            raise ConfigurationError(
                f"the signer refused the transaction: {type(exc).__name__}"
            ) from None
        return bytes(signed.raw_transaction), "0x" + bytes(signed.hash).hex()

    def __repr__(self) -> str:
        return f"IExecSigner(address={self.address!r})"

    def __reduce__(self) -> Any:
        raise TypeError("an IExecSigner holds a private key: it is not pickled")


def require() -> None:
    """Fail early, with the install hint, when eth-account is missing."""
    try:
        import eth_account  # noqa: F401
    except ImportError as exc:
        raise ConfigurationError(
            "claim's signer needs eth-account: pip install 'reactive-tasks[iexec]'"
        ) from exc


def make_signer(value: object, secrets: Secrets) -> IExecSigner:
    """An ``IExecSigner`` from a hex private key or an account object (``address`` plus
    ``sign_transaction``, as eth-account's ``LocalAccount``); the key's forms go to
    ``secrets`` first, so that no text can show it."""
    if isinstance(value, IExecSigner):
        return value
    require()
    from eth_account import Account

    if isinstance(value, str):
        _register(value, secrets)
        if not _KEY.fullmatch(value.strip()):
            raise ConfigurationError(_HINT)
        try:
            account = Account.from_key(value.strip())
        except Exception:  # not on the curve: say nothing of the value
            raise ConfigurationError(_HINT) from None
        return IExecSigner(account)
    if hasattr(value, "address") and callable(getattr(value, "sign_transaction", None)):
        key = getattr(value, "key", None)
        if isinstance(key, bytes | bytearray):
            _register("0x" + bytes(key).hex(), secrets)
        return IExecSigner(value)
    raise ConfigurationError(f"{_HINT}, got a {type(value).__name__}")


def _register(key: str, secrets: Secrets) -> None:
    """Every spelling of a hex key a text might carry: as given, with or without 0x, any case."""
    key = key.strip()
    bare = key[2:] if key[:2].lower() == "0x" else key
    for form in {key, bare, bare.lower(), bare.upper(), "0x" + bare.lower()}:
        secrets.add(form)
