"""Ethereum JSON-RPC: ``eth_call`` batches to the PoCo hub and how their errors are classified."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, RootModel

from ..._errors import TransientFault
from .._answers import entries_by_key
from . import _abi as abi

if TYPE_CHECKING:
    from ._source import IExecBackend

_REVERT_SELECTORS = ("0x08c379a0", "0x4e487b71")  # Error(string), Panic(uint256)
_MAX_ERROR_TEXT = 200


class _RpcError(BaseModel):
    code: int
    message: str = ""
    data: Any = None


class _RpcReply(BaseModel):
    id: int | str | None = None
    result: Any = None
    error: _RpcError | None = None


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
    to = backend.hub_address
    requests = [("eth_call", [{"to": to, "data": data}, "latest"]) for data in calls]
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
    requests: Sequence[tuple[str, list[Any]]],
    shown: str | None,
    *,
    owners: Sequence[str | None] | None = None,
) -> list[Any]:
    """Any JSON-RPC reads, (method, params) each, in one batch request: each call's raw
    ``result`` or the exception that replaced it (see ``call_batch``)."""
    body = [
        {"jsonrpc": "2.0", "id": i, "method": method, "params": params}
        for i, (method, params) in enumerate(requests)
    ]
    response = await backend.session().request(
        "POST", backend.base_url, json=body, idempotent=True, task_id=shown
    )
    if response.status_code != 200:
        raise backend.protocol_error(f"unexpected HTTP {response.status_code} from the RPC", shown)
    parsed = backend.parse(_RpcBatchReply, response.content, shown).root
    if isinstance(parsed, dict):
        single = backend.parse(_RpcReply, parsed, shown)
        if single.error is not None:
            raise rpc_error(backend, single.error, shown)
        raise backend.protocol_error("a batch request got a single answer", shown)
    whose = list(owners) if owners is not None else [shown] * len(requests)
    replies = entries_by_key(
        backend,
        parsed,
        _RpcReply,
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


def rpc_error(backend: IExecBackend, error: _RpcError, shown: str | None) -> BaseException:
    """A JSON-RPC error: a reverted call is a ``ProtocolError``, other server errors
    (-32000 to -32099) are transient, the rest a ``ProtocolError``."""
    text = f"JSON-RPC error {error.code}: {error.message[:_MAX_ERROR_TEXT]}"
    if _is_revert(error):
        return backend.protocol_error(f"the hub call reverted ({text})", shown)
    if -32099 <= error.code <= -32000:
        return TransientFault(text)
    return backend.protocol_error(text, shown)


def _is_revert(error: _RpcError) -> bool:
    """Nodes report a reverted ``eth_call`` as code 3 (geth), -32015 (OpenEthereum), or a
    server error whose message or data says so."""
    if error.code in (3, -32015) or "revert" in error.message.lower():
        return True
    data = error.data
    if isinstance(data, dict):
        data = data.get("data")
    return isinstance(data, str) and data.lower().startswith(_REVERT_SELECTORS)
