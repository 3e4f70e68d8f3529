"""Ethereum JSON-RPC: ``eth_call`` batches to the PoCo hub and how their errors are classified."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, RootModel

from ..._errors import ProtocolError, TransientFault
from .._answers import entries_by_key
from . import _abi as abi

if TYPE_CHECKING:
    from ._source import IExecBackend

_REVERT_SELECTORS = ("0x08c379a0", "0x4e487b71")  # Error(string), Panic(uint256)
_MAX_ERROR_TEXT = 200


class RpcError(BaseModel):
    code: int
    message: str = ""
    data: Any = None


class RpcReply(BaseModel):
    id: int | str | None = None
    result: Any = None
    error: RpcError | None = None


class _RpcBatchReply(RootModel[list[Any] | dict[str, Any]]):
    """A batch answer's envelope; its replies are read one by one (see ``_answers``)."""


async def call_batch(
    backend: IExecBackend,
    calls: Sequence[str],
    shown: str | None,
    *,
    owners: Sequence[str | None] | None = None,
) -> list[bytes | BaseException]:
    """``eth_call`` each data on the hub, all in one JSON-RPC batch request.

    Returns each call's raw result or the error that replaced it, named after its task in
    ``owners`` (``shown`` when not given): a malformed reply fails only its own call. A fault
    of the whole request (HTTP 5xx, a body that is not a JSON list) raises. ``eth_call`` is a
    read: outside a poll the session retries it under the backend's policy.
    """
    hub = backend.hub_address
    requests = [("eth_call", [{"to": hub, "data": data}, "latest"]) for data in calls]
    whose = list(owners) if owners is not None else [shown] * len(calls)
    out: list[bytes | BaseException] = []
    for owner, result in zip(whose, await rpc_batch(backend, requests, shown, owners=whose),
                             strict=True):
        if isinstance(result, BaseException):
            out.append(result)
            continue
        try:
            out.append(abi.parse_hex(result))
        except abi.AbiError as exc:
            out.append(backend.protocol_error(str(exc), owner))
    return out


async def rpc_batch(
    backend: IExecBackend,
    calls: Sequence[tuple[str, list[Any]]],
    shown: str | None,
    *,
    owners: Sequence[str | None] | None = None,
) -> list[Any]:
    """Each ``(method, params)`` call in one JSON-RPC batch request (reads: retried by the
    session outside a poll); each call's ``result`` or the error that replaced it."""
    body = [
        {"jsonrpc": "2.0", "id": i, "method": method, "params": params}
        for i, (method, params) in enumerate(calls)
    ]
    response = await backend.session().request(
        "POST", backend.base_url, json=body, idempotent=True, task_id=shown
    )
    if response.status_code != 200:
        raise backend.protocol_error(f"unexpected HTTP {response.status_code} from the RPC", shown)
    parsed = backend.parse(_RpcBatchReply, response.content, shown).root
    if isinstance(parsed, dict):
        single = backend.parse(RpcReply, parsed, shown)
        if single.error is not None:
            raise rpc_error(backend, single.error, shown)
        raise backend.protocol_error("a batch request got a single answer", shown)
    whose = list(owners) if owners is not None else [shown] * len(calls)
    replies = entries_by_key(
        backend,
        parsed,
        RpcReply,
        key=lambda raw: raw["id"],
        wanted=dict(enumerate(whose)),
        what="the JSON-RPC batch answer",
    )
    out: list[Any] = []
    for i, owner in enumerate(whose):
        reply = replies.get(i)
        if reply is None:
            out.append(TransientFault("the batch reply left this call out"))
        elif isinstance(reply, BaseException):
            out.append(reply)
        elif reply.error is not None:
            out.append(rpc_error(backend, reply.error, owner))
        else:
            out.append(reply.result)
    return out


async def send_once(
    backend: IExecBackend, method: str, params: list[Any], shown: str | None, *, what: str
) -> RpcReply:
    """One JSON-RPC call that must not be repeated (a transaction), sent once: a transient
    fault ends it as ``BackendUnavailable`` naming ``what``; the reply, error or not."""
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    response = await backend.session().request(
        "POST", backend.base_url, json=body, idempotent=False, task_id=shown, what=what
    )
    if response.status_code != 200:
        raise backend.protocol_error(f"unexpected HTTP {response.status_code} from the RPC", shown)
    return backend.parse(RpcReply, response.content, shown)


class CallReverted(ProtocolError):
    """A call the node reports as reverted (a ``ProtocolError`` to readers; ``claim`` tells it
    apart)."""


def rpc_error(backend: IExecBackend, error: RpcError, shown: str | None) -> BaseException:
    """A JSON-RPC error: a reverted call is a ``ProtocolError``, other server errors
    (-32000 to -32099) are transient, the rest a ``ProtocolError``."""
    text = f"JSON-RPC error {error.code}: {error.message[:_MAX_ERROR_TEXT]}"
    if is_revert(error):
        return CallReverted(
            f"the hub call reverted ({text})",
            backend=backend.name,
            task_id=None if shown is None else backend.display_id(shown),
        )
    if -32099 <= error.code <= -32000:
        return TransientFault(text)
    return backend.protocol_error(text, shown)


def is_revert(error: RpcError) -> bool:
    """Nodes report a reverted ``eth_call`` as code 3 (geth), -32015 (OpenEthereum), or a
    server error whose message or data says so."""
    if error.code in (3, -32015) or "revert" in error.message.lower():
        return True
    data = error.data
    if isinstance(data, dict):
        data = data.get("data")
    return isinstance(data, str) and data.lower().startswith(_REVERT_SELECTORS)
