"""``claim``: a task not completed by its final deadline is claimed on the hub, which fails it
and refunds the requester, like the SDK's ``task.claim``.

The checks come first (nothing is signed for a task that cannot be claimed); the reads that
build the transaction (chain id, pending nonce, gas estimate, latest block, fee suggestions) are
one JSON-RPC batch, retried under the policy like any read; the transaction is sent exactly once
(a resend could spend a second nonce); then its receipt is polled, up to ``timeout``.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from pydantic import BaseModel, ConfigDict

from ..._errors import (
    BackendUnavailable,
    ConfigurationError,
    TaskNotClaimable,
    TaskNotFound,
    TransactionFailed,
    TransactionReverted,
    TransientFault,
)
from . import _abi as abi
from ._rpc import CallReverted, is_revert, rpc_batch, send_once

if TYPE_CHECKING:
    from ._source import IExecBackend

__all__ = ["TaskClaim"]

_log = logging.getLogger("reactive_tasks.iexec")

CLAIM = "claim(bytes32)"
TASK_CLAIMED_TOPIC = "TaskClaimed(bytes32)"
_GAS_MARGIN = (6, 5)  # 20 % above the node's estimate
_RECEIPT_POLL = 0.5  # seconds between receipt reads
_NO_SIGNER = (
    "claim needs a signer: IExecBackend(rpc_url, hub_address, "
    "signer=<hex private key or eth_account LocalAccount>)"
)


class _Log(BaseModel):
    model_config = ConfigDict(extra="ignore")

    address: str = ""
    topics: list[str] = []


class _Receipt(BaseModel):
    """The fields of a transaction receipt ``claim`` reads."""

    model_config = ConfigDict(extra="ignore")

    status: str | None = None
    blockNumber: str | None = None
    logs: list[_Log] = []


class TaskClaim:
    """``IExecBackend.claim``."""

    async def claim(self, task_id: str, *, timeout: float = 120.0) -> str:
        """Claim a task not completed after its final deadline (the requester is refunded),
        like the SDK's ``task.claim``; returns the transaction hash once it is mined.

        Needs the backend's ``signer``, else ``ConfigurationError``. A task that is completed,
        already failed or not past its final deadline raises ``TaskNotClaimable`` before
        anything is signed; one not initialized on chain raises ``TaskNotFound``. The
        transaction is sent once, never retried: a transient fault while sending raises
        ``BackendUnavailable`` naming its hash (it may still be mined). A node refusing it
        raises ``TransactionFailed``, a reverted receipt ``TransactionReverted``; no receipt
        within ``timeout`` seconds, ``BackendUnavailable``.
        """
        return await _claim(cast("IExecBackend", self), task_id, timeout)  # the only host


async def _claim(backend: IExecBackend, task_id: str, timeout: float) -> str:
    signer = backend.signer
    if signer is None:
        raise ConfigurationError(_NO_SIGNER)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ConfigurationError("claim's timeout must be a positive number of seconds")
    task_id = backend.validate_task_id(task_id)
    await _check_claimable(backend, task_id)
    data = abi.call_data(CLAIM, ("bytes32",), (bytes.fromhex(task_id[2:]),))
    transaction = await backend.session().retried(
        lambda: _prepare(backend, task_id, signer.address, data), task_id=task_id
    )
    raw, tx_hash = signer.sign(transaction)
    await _send(backend, task_id, raw, tx_hash, transaction["nonce"])
    _log.debug("claim of task %s sent: transaction %s", task_id, tx_hash)
    receipt = await _receipt(backend, task_id, tx_hash, timeout)
    if _number(receipt.status) != 1:
        raise TransactionReverted(
            f"the claim transaction {tx_hash} reverted (block {_block_of(receipt)})",
            backend=backend.name, task_id=task_id, tx_hash=tx_hash,
        )
    claimed = "0x" + abi.keccak(TASK_CLAIMED_TOPIC.encode()).hex()
    if not any(
        entry.address.lower() == backend.hub_address
        and [topic.lower() for topic in entry.topics[:2]] == [claimed, task_id]
        for entry in receipt.logs
    ):
        raise TransactionFailed(
            f"the claim transaction {tx_hash} was mined but the hub emitted no TaskClaimed",
            backend=backend.name, task_id=task_id, tx_hash=tx_hash,
        )
    return tx_hash


async def _check_claimable(backend: IExecBackend, task_id: str) -> None:
    """The SDK's checks: an initialized task, neither COMPLETED nor FAILED, past its final
    deadline (by the local clock, as the SDK reads it)."""
    try:
        task = (await backend.status(task_id)).snapshot
    except TaskNotFound:
        raise TaskNotFound(
            "No task found (not initialized on chain: the hub claims initialized tasks only)",
            backend=backend.name, task_id=task_id,
        ) from None
    if task.statusName in ("COMPLETED", "FAILED"):
        raise TaskNotClaimable(
            f"cannot claim a task having status {task.statusName}",
            backend=backend.name, task_id=task_id,
        )
    if not task.taskTimedOut:
        when = datetime.fromtimestamp(task.finalDeadline or 0, UTC).isoformat()
        raise TaskNotClaimable(
            f"cannot claim a task before its final deadline ({when})",
            backend=backend.name, task_id=task_id,
        )


async def _prepare(
    backend: IExecBackend, task_id: str, sender: str, data: str
) -> dict[str, Any]:
    """The unsigned transaction, from one batch of reads: EIP-1559 fees when the latest block
    has a base fee (``2 * base + tip``), the legacy gas price otherwise."""
    call = {"from": sender, "to": backend.hub_address, "data": data}
    answers = await rpc_batch(
        backend,
        [
            ("eth_chainId", []),
            ("eth_getTransactionCount", [sender, "pending"]),
            ("eth_estimateGas", [call]),
            ("eth_getBlockByNumber", ["latest", False]),
            ("eth_maxPriorityFeePerGas", []),
            ("eth_gasPrice", []),
        ],
        task_id,
    )
    chain_id, nonce, gas, block, tip, price = answers
    if isinstance(gas, CallReverted):
        raise TaskNotClaimable(
            f"the hub refuses the claim: eth_estimateGas reverted ({gas.message})",
            backend=backend.name, task_id=task_id,
        )
    for answer in (chain_id, nonce, gas, block):
        if isinstance(answer, BaseException):
            raise answer
    if not isinstance(block, dict):
        raise backend.protocol_error("eth_getBlockByNumber gave no latest block", task_id)
    limit = _quantity(backend, gas, "eth_estimateGas", task_id)
    transaction: dict[str, Any] = {
        "chainId": _quantity(backend, chain_id, "eth_chainId", task_id),
        "nonce": _quantity(backend, nonce, "eth_getTransactionCount", task_id),
        "to": _checksum(backend.hub_address),
        "data": data,
        "value": 0,
        "gas": limit * _GAS_MARGIN[0] // _GAS_MARGIN[1],
    }
    base_fee = block.get("baseFeePerGas")
    if base_fee is None:
        if isinstance(price, BaseException):
            raise price
        transaction["gasPrice"] = _quantity(backend, price, "eth_gasPrice", task_id)
        return transaction
    base = _quantity(backend, base_fee, "baseFeePerGas", task_id)
    if isinstance(tip, BaseException):  # a node without the method: the price above the base
        if isinstance(price, BaseException):
            raise tip
        priority = max(_quantity(backend, price, "eth_gasPrice", task_id) - base, 0)
    else:
        priority = _quantity(backend, tip, "eth_maxPriorityFeePerGas", task_id)
    transaction.update(type=2, maxPriorityFeePerGas=priority, maxFeePerGas=2 * base + priority)
    return transaction


async def _send(backend: IExecBackend, task_id: str, raw: bytes, tx_hash: str, nonce: int) -> None:
    """``eth_sendRawTransaction``, once."""
    what = f"sending the claim transaction {tx_hash} (nonce {nonce})"
    try:
        reply = await send_once(
            backend, "eth_sendRawTransaction", ["0x" + raw.hex()], task_id, what=what
        )
    except BackendUnavailable as exc:
        raise BackendUnavailable(
            f"{exc.message}; it may still be mined: look it up before claiming again",
            backend=backend.name, task_id=task_id,
        ) from exc.__cause__
    if reply.error is not None:
        text = f"JSON-RPC error {reply.error.code}: {reply.error.message[:200]}"
        kind = TransactionReverted if is_revert(reply.error) else TransactionFailed
        raise kind(
            f"the node refused the claim transaction {tx_hash} ({text})",
            backend=backend.name, task_id=task_id, tx_hash=tx_hash,
        )


async def _receipt(
    backend: IExecBackend, task_id: str, tx_hash: str, timeout: float
) -> _Receipt:
    """The transaction's receipt, read every ``_RECEIPT_POLL`` seconds until ``timeout``;
    transient faults of a read only wait for the next one."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            (answer,) = await rpc_batch(
                backend, [("eth_getTransactionReceipt", [tx_hash])], task_id
            )
        except (TransientFault, BackendUnavailable) as exc:
            answer = exc
        if isinstance(answer, BaseException) and not isinstance(
            answer, TransientFault | BackendUnavailable
        ):
            raise answer
        if isinstance(answer, dict):
            return backend.parse(_Receipt, answer, task_id)
        if loop.time() >= deadline:
            raise BackendUnavailable(
                f"no receipt for the claim transaction {tx_hash} after {timeout:g} s "
                "(it may still be mined: look it up before claiming again)",
                backend=backend.name, task_id=task_id,
            )
        await asyncio.sleep(min(_RECEIPT_POLL, max(deadline - loop.time(), 0.0)))


def _quantity(backend: IExecBackend, value: object, what: str, task_id: str) -> int:
    """A JSON-RPC quantity (0x-hex) as an int."""
    if isinstance(value, str) and value.startswith("0x"):
        try:
            return int(value, 16)
        except ValueError:
            pass
    raise backend.protocol_error(f"{what} answered {str(value)[:40]!r}, not a quantity", task_id)


def _number(text: str | None) -> int | None:
    """A receipt's hex quantity, or None when absent or malformed."""
    try:
        return int(text, 16) if text else None
    except ValueError:
        return None


def _block_of(receipt: _Receipt) -> str:
    number = _number(receipt.blockNumber)
    return "?" if number is None else str(number)


def _checksum(address: str) -> str:
    """The EIP-55 form eth-account wants for ``to``."""
    digest = abi.keccak(address[2:].lower().encode()).hex()
    return "0x" + "".join(
        c.upper() if c.isalpha() and int(digest[i], 16) >= 8 else c
        for i, c in enumerate(address[2:].lower())
    )
