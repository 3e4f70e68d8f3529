"""ABI encoding and decoding of the four PoCo hub reads the iExec backend makes, with eth-abi.

The tuple layouts are those of the hub's ``IexecInterfaceToken`` ABI (``IexecLibCore_v5``
structs). eth-abi and eth-hash are imported on first use so that the rest of the library works
without the ``iexec`` extra installed.
"""

from __future__ import annotations

import functools
import re
from typing import Any, NamedTuple

from ..._errors import ConfigurationError

__all__ = [
    "AbiError",
    "CategoryTuple",
    "TaskTuple",
    "call_data",
    "decode_category",
    "decode_deal",
    "decode_task",
    "decode_uint",
    "parse_hex",
    "require",
    "task_head",
    "task_id_of",
]

VIEW_TASK = "viewTask(bytes32)"
VIEW_DEAL = "viewDeal(bytes32)"
VIEW_CATEGORY = "viewCategory(uint256)"
FINAL_DEADLINE_RATIO = "final_deadline_ratio()"

_RESOURCE = "(address,address,uint256)"
TASK_TYPE = (
    "(uint8,bytes32,uint256,uint256,uint256,uint256,uint256,bytes32,uint256,uint256,"
    "address[],bytes32,bytes,uint256,bytes)"
)
DEAL_TYPE = (
    f"({_RESOURCE},{_RESOURCE},{_RESOURCE},uint256,uint256,bytes32,address,address,address,"
    "string,uint256,uint256,uint256,uint256,uint256,address)"
)
CATEGORY_TYPE = "(string,string,uint256)"

_HEX = re.compile(r"^0x(?:[0-9a-fA-F]{2})*$")
NULL_BYTES32 = "0x" + "00" * 32


class AbiError(ValueError):
    """A call result that is not valid hex or does not decode as the expected ABI type."""


class TaskTuple(NamedTuple):
    """``IexecLibCore_v5.Task`` as ``viewTask`` returns it (hex strings for bytes)."""

    status: int
    dealid: str
    idx: int
    timeref: int
    contributionDeadline: int
    revealDeadline: int
    finalDeadline: int
    consensusValue: str
    revealCounter: int
    winnerCounter: int
    contributors: tuple[str, ...]
    resultDigest: str
    results: bytes
    resultsTimestamp: int
    resultsCallback: str


class CategoryTuple(NamedTuple):
    """``IexecLibCore_v5.Category`` as ``viewCategory`` returns it."""

    name: str
    description: str
    workClockTimeRef: int


def require() -> None:
    """Fail early, with the install hint, when the ``iexec`` extra is missing."""
    try:
        import eth_abi  # noqa: F401
        from eth_hash.auto import keccak

        keccak(b"")
    except ImportError as exc:
        raise ConfigurationError(
            "the iExec backend needs eth-abi and eth-hash[pycryptodome]: "
            "pip install 'reactive-tasks[iexec]'"
        ) from exc


def keccak(data: bytes) -> bytes:
    """Keccak-256 of ``data``."""
    from eth_hash.auto import keccak as _keccak

    digest: bytes = _keccak(data)
    return digest


@functools.cache
def selector(signature: str) -> bytes:
    """The 4-byte function selector of a canonical signature such as ``viewTask(bytes32)``."""
    return keccak(signature.encode("ascii"))[:4]


def call_data(signature: str, types: tuple[str, ...] = (), args: tuple[Any, ...] = ()) -> str:
    """The ``data`` of an ``eth_call``: selector plus ABI-encoded arguments, as 0x-hex."""
    from eth_abi.abi import encode

    return "0x" + (selector(signature) + encode(list(types), list(args))).hex()


def parse_hex(text: object) -> bytes:
    """The bytes of a 0x-prefixed, even-length hex string; anything else is an ``AbiError``."""
    if not isinstance(text, str) or not _HEX.fullmatch(text):
        shown = repr(text)[:40]
        raise AbiError(f"the call result is not 0x-prefixed hex: {shown}")
    return bytes.fromhex(text[2:])


def _decode(type_str: str, data: bytes) -> Any:
    from eth_abi.abi import decode
    from eth_abi.exceptions import DecodingError

    if not data:
        raise AbiError("the call returned no data (is hub_address a PoCo hub?)")
    try:
        return decode([type_str], data)[0]
    except (DecodingError, ValueError, OverflowError) as exc:
        raise AbiError(f"the call result does not decode as {type_str[:40]}: {exc}") from None


def _hex32(value: bytes) -> str:
    return "0x" + value.hex()


def decode_task(data: bytes) -> TaskTuple:
    """Decode a ``viewTask`` result."""
    raw = _decode(TASK_TYPE, data)
    return TaskTuple(
        raw[0], _hex32(raw[1]), raw[2], raw[3], raw[4], raw[5], raw[6], _hex32(raw[7]),
        raw[8], raw[9], tuple(raw[10]), _hex32(raw[11]), bytes(raw[12]), raw[13],
        "0x" + bytes(raw[14]).hex(),
    )


#: A ``viewTask`` result's first word (the tuple's offset) and the tuple's 15 head words.
_TASK_HEAD = 32 + 15 * 32


def task_head(data: bytes) -> tuple[int, bytes, int] | None:
    """``(status, dealid, finalDeadline)`` of a ``viewTask`` result read from their fixed
    words, without decoding the tuple's dynamic parts; None when the result is not laid out as
    the hub writes it (``decode_task`` then tells what is wrong)."""
    if len(data) < _TASK_HEAD or int.from_bytes(data[:32], "big") != 32:
        return None
    status = int.from_bytes(data[32:64], "big")
    if status > 0xFF:  # a uint8 with non-zero padding
        return None
    return status, data[64:96], int.from_bytes(data[224:256], "big")


def decode_deal(data: bytes) -> tuple[Any, ...]:
    """Decode a ``viewDeal`` result: the ``IexecLibCore_v5.Deal`` fields in ABI order, its
    resources as ``(pointer, owner, price)`` (``IExecDeal`` names them)."""
    raw = _decode(DEAL_TYPE, data)
    return (*raw[:5], _hex32(raw[5]), *raw[6:])


def decode_category(data: bytes) -> CategoryTuple:
    """Decode a ``viewCategory`` result."""
    return CategoryTuple(*_decode(CATEGORY_TYPE, data))


def decode_uint(data: bytes) -> int:
    """Decode a single ``uint256`` result (``final_deadline_ratio``)."""
    value: int = _decode("uint256", data)
    return value


def task_id_of(deal_id: str, idx: int) -> str:
    """The id of task ``idx`` of a deal: keccak256(dealid ++ uint256 idx), as PoCo computes it."""
    from eth_abi.abi import encode

    return "0x" + keccak(encode(["bytes32", "uint256"], [bytes.fromhex(deal_id[2:]), idx])).hex()
