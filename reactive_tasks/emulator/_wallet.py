"""The transaction side of the emulated node: nonces, fees, raw transactions and their receipts.

A raw transaction (typed EIP-1559 ``0x02`` or legacy) is RLP-decoded, its sender recovered from
the signature with eth-account, and its chain id and nonce checked as a node does. The contract
it calls is executed by ``execute`` (the hub, in ``iexec``); the transaction is mined in the next
block, and its receipt is served once that block has landed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._chain import Ledger, LogEntry, block_hash

__all__ = ["Execution", "NodeError", "Wallet"]

GAS_USED = 52_000  # what a claim costs, roughly: the estimate and the receipt say this
BASE_FEE = 100_000_000  # 0.1 gwei: the base fee of every block on an EIP-1559 chain
PRIORITY_FEE = 1_000_000  # what eth_maxPriorityFeePerGas suggests
GAS_PRICE = 1_000_000_000  # what eth_gasPrice suggests (a legacy chain's price)
MAX_TRANSACTIONS = 100_000


class NodeError(Exception):
    """A call the node refuses: a JSON-RPC error ``code``/``message``/``data``."""

    def __init__(self, code: int, message: str, data: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


@dataclass(frozen=True, slots=True)
class Execution:
    """The outcome of a call: a revert reason (None when it succeeded; "" for a revert with
    no reason string), the revert data, the block it runs in and the logs it emitted."""

    reverted: str | None
    block: int
    logs: tuple[LogEntry, ...] = ()
    revert_data: str = "0x"


#: execute(sender, to, data, tx_hash or None for a dry run) -> Execution
Execute = Callable[[str, str, bytes, "str | None"], Execution]


@dataclass(slots=True)
class _Mined:
    """A transaction the node accepted, with what its receipt reports."""

    hash: str
    sender: str
    fields: dict[str, Any]
    execution: Execution
    forced_revert: bool = False
    raw: str = field(default="", repr=False)


def _keccak(data: bytes) -> bytes:
    from eth_hash.auto import keccak

    digest: bytes = keccak(data)
    return digest


def _int(raw: bytes) -> int:
    return int.from_bytes(raw, "big")


def _address(raw: bytes) -> str:
    return "0x" + raw.hex() if raw else ""


def decode_raw(raw: bytes) -> tuple[str, dict[str, Any]]:
    """(sender, fields) of a signed raw transaction; ``NodeError`` when it does not decode or
    its signature does not recover."""
    import rlp
    from eth_account import Account

    try:
        if raw[:1] == b"\x02":
            items = rlp.decode(raw[1:])
            (chain_id, nonce, tip, max_fee, gas, to, value, data, _access, _y, _r, _s) = items
            fields: dict[str, Any] = {
                "type": 2, "chainId": _int(chain_id), "nonce": _int(nonce),
                "maxPriorityFeePerGas": _int(tip), "maxFeePerGas": _int(max_fee),
            }
        elif raw[:1] and raw[0] >= 0xC0:
            nonce, price, gas, to, value, data, v, _r, _s = rlp.decode(raw)
            v_int = _int(v)
            fields = {
                "type": 0, "chainId": (v_int - 35) // 2 if v_int >= 35 else None,
                "nonce": _int(nonce), "gasPrice": _int(price),
            }
        else:
            raise NodeError(-32602, "transaction type not supported")
        fields.update(gas=_int(gas), to=_address(to), value=_int(value), data=bytes(data))
        sender = str(Account.recover_transaction(raw)).lower()
    except NodeError:
        raise
    except Exception as exc:
        raise NodeError(-32602, f"invalid raw transaction: {type(exc).__name__}") from None
    return sender, fields


class Wallet:
    """Nonces per sender and the transactions received; fees as the node suggests them."""

    def __init__(self, chain_id: int, ledger: Ledger, execute: Execute) -> None:
        self.chain_id = chain_id
        self.ledger = ledger
        self.execute = execute
        self.gas_price = GAS_PRICE
        self.priority_fee = PRIORITY_FEE
        ledger.base_fee = BASE_FEE
        self._lock = threading.Lock()
        self._nonces: dict[str, int] = {}
        self._mined: dict[str, _Mined] = {}

    # -- settings -----------------------------------------------------------------------

    @property
    def london(self) -> bool:
        """True when blocks carry ``baseFeePerGas`` (EIP-1559); False: a legacy chain."""
        return self.ledger.base_fee is not None

    def configure(self, options: Mapping[str, Any]) -> None:
        """Apply ``london`` (bool), ``base_fee``, ``gas_price``, ``priority_fee`` (wei)."""
        for key in ("base_fee", "gas_price", "priority_fee"):
            value = options.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 0):
                raise ValueError(f"{key} must be a non-negative integer (wei)")
        london = options.get("london")
        if london is not None and not isinstance(london, bool):
            raise ValueError("london must be true or false")
        if options.get("base_fee") is not None:
            self.ledger.base_fee = options["base_fee"]
        if london is not None:
            self.ledger.base_fee = (self.ledger.base_fee or BASE_FEE) if london else None
        self.gas_price = options.get("gas_price", self.gas_price)
        self.priority_fee = options.get("priority_fee", self.priority_fee)

    def describe(self) -> dict[str, Any]:
        """The settings and every received transaction, for the control route."""
        with self._lock:
            mined = list(self._mined.values())
        return {
            "chain_id": self.chain_id, "london": self.london, "base_fee": self.ledger.base_fee,
            "gas_price": self.gas_price, "priority_fee": self.priority_fee,
            "transactions": [
                {"hash": m.hash, "from": m.sender, "nonce": m.fields["nonce"],
                 "type": m.fields["type"], "to": m.fields["to"], "gas": m.fields["gas"],
                 "gas_price": m.fields.get("gasPrice"),
                 "max_fee_per_gas": m.fields.get("maxFeePerGas"),
                 "max_priority_fee_per_gas": m.fields.get("maxPriorityFeePerGas"),
                 "status": 0 if m.execution.reverted is not None else 1,
                 "block": m.execution.block}
                for m in mined
            ],
        }

    # -- the calls ----------------------------------------------------------------------

    def nonce(self, address: str) -> int:
        """``eth_getTransactionCount``: transactions accepted from ``address`` (the node mines
        each in the next block, so "latest" and "pending" agree)."""
        return self._nonces.get(address.lower(), 0)

    def estimate_gas(self, call: Mapping[str, Any]) -> int:
        """``eth_estimateGas``: the call run dry; a revert is a code-3 ``NodeError``."""
        sender = str(call.get("from") or "0x" + "00" * 20).lower()
        to = str(call.get("to") or "").lower()
        data = _hex_bytes(call.get("data", call.get("input")))
        outcome = self.execute(sender, to, data, None)
        if outcome.reverted is not None:
            reason = f": {outcome.reverted}" if outcome.reverted else ""
            raise NodeError(3, f"execution reverted{reason}", outcome.revert_data)
        return GAS_USED

    def send_raw(self, raw_hex: Any, *, force_revert: bool = False) -> str:
        """``eth_sendRawTransaction``: check, execute and mine; the transaction hash."""
        raw = _hex_bytes(raw_hex)
        sender, fields = decode_raw(raw)
        if fields["chainId"] != self.chain_id:
            raise NodeError(-32000, f"invalid chain id {fields['chainId']} (this chain is "
                            f"{self.chain_id})")
        if fields["type"] == 2 and not self.london:
            raise NodeError(-32000, "transaction type not supported: this chain is pre-London")
        tx_hash = "0x" + _keccak(raw).hex()
        with self._lock:
            if tx_hash in self._mined:
                raise NodeError(-32000, "already known")
            expected = self._nonces.get(sender, 0)
            if fields["nonce"] != expected:
                word = "too low" if fields["nonce"] < expected else "too high"
                raise NodeError(-32000, f"nonce {word}: next nonce {expected}, "
                                f"tx nonce {fields['nonce']}")
            if fields["gas"] < GAS_USED // 2:
                raise NodeError(-32000, "intrinsic gas too low")
            if force_revert:
                execution = Execution("emulated revert", self.ledger.sync() + 1)
            else:
                execution = self.execute(sender, fields["to"], fields["data"], tx_hash)
            self._nonces[sender] = expected + 1
            if len(self._mined) >= MAX_TRANSACTIONS:
                self._mined.clear()
            self._mined[tx_hash] = _Mined(tx_hash, sender, fields, execution, force_revert,
                                          "0x" + raw.hex())
        return tx_hash

    def receipt(self, tx_hash: Any) -> dict[str, Any] | None:
        """``eth_getTransactionReceipt``: null until the transaction's block has landed."""
        mined = self._mined.get(str(tx_hash).lower())
        if mined is None or self.ledger.sync() < mined.execution.block:
            return None
        execution, fields = mined.execution, mined.fields
        block = execution.block
        return {
            "transactionHash": mined.hash, "transactionIndex": "0x0",
            "blockHash": block_hash(block), "blockNumber": hex(block),
            "from": mined.sender, "to": fields["to"] or None, "contractAddress": None,
            "cumulativeGasUsed": hex(GAS_USED), "gasUsed": hex(GAS_USED),
            "effectiveGasPrice": hex(self._price(fields)),
            "logs": [entry.to_json() for entry in execution.logs],
            "logsBloom": "0x" + "00" * 256, "type": hex(fields["type"]),
            "status": "0x0" if execution.reverted is not None else "0x1",
        }

    def transaction(self, tx_hash: Any) -> dict[str, Any] | None:
        """``eth_getTransactionByHash``."""
        mined = self._mined.get(str(tx_hash).lower())
        if mined is None:
            return None
        fields = mined.fields
        out: dict[str, Any] = {
            "hash": mined.hash, "from": mined.sender, "to": fields["to"] or None,
            "nonce": hex(fields["nonce"]), "gas": hex(fields["gas"]),
            "value": hex(fields["value"]), "input": "0x" + fields["data"].hex(),
            "type": hex(fields["type"]), "blockNumber": hex(mined.execution.block),
            "blockHash": block_hash(mined.execution.block), "transactionIndex": "0x0",
            "gasPrice": hex(self._price(fields)), "v": "0x0", "r": "0x0", "s": "0x0",
        }
        if fields["chainId"] is not None:
            out["chainId"] = hex(fields["chainId"])
        if fields["type"] == 2:
            out.update(maxFeePerGas=hex(fields["maxFeePerGas"]),
                       maxPriorityFeePerGas=hex(fields["maxPriorityFeePerGas"]), accessList=[])
        return out

    def _price(self, fields: Mapping[str, Any]) -> int:
        if fields["type"] != 2:
            return int(fields["gasPrice"])
        base = self.ledger.base_fee or 0
        return min(int(fields["maxFeePerGas"]), base + int(fields["maxPriorityFeePerGas"]))


def _hex_bytes(value: Any) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise NodeError(-32602, "invalid params: expected 0x-prefixed hex data")
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        raise NodeError(-32602, "invalid params: expected 0x-prefixed hex data") from None


WALLET_METHODS = frozenset({
    "eth_getTransactionCount", "eth_estimateGas", "eth_gasPrice", "eth_maxPriorityFeePerGas",
    "eth_sendRawTransaction", "eth_getTransactionReceipt", "eth_getTransactionByHash",
})


def wallet_call(wallet: Wallet, method: str, params: Any, *, force_revert: bool = False) -> Any:
    """The result of a wallet method of ``WALLET_METHODS``; ``NodeError`` when refused."""
    params = params if isinstance(params, list) else []
    if method == "eth_gasPrice":
        base = wallet.ledger.base_fee
        return hex(wallet.gas_price if base is None else base + wallet.priority_fee)
    if method == "eth_maxPriorityFeePerGas":
        if not wallet.london:
            raise NodeError(-32601, "the method eth_maxPriorityFeePerGas does not exist")
        return hex(wallet.priority_fee)
    if not params:
        raise NodeError(-32602, f"invalid params: {method} needs parameters")
    first = params[0]
    if method == "eth_getTransactionCount":
        if not isinstance(first, str):
            raise NodeError(-32602, "invalid params: expected an address")
        return hex(wallet.nonce(first))
    if method == "eth_estimateGas":
        if not isinstance(first, dict):
            raise NodeError(-32602, "invalid params: expected a call object")
        return hex(wallet.estimate_gas(first))
    if method == "eth_sendRawTransaction":
        return wallet.send_raw(first, force_revert=force_revert)
    if method == "eth_getTransactionReceipt":
        return wallet.receipt(first)
    return wallet.transaction(first)
