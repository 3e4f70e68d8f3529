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
    """Decode a ``viewTask`` result: read straight from its words when it is laid out exactly
    as the hub (and eth-abi) writes it, else by eth-abi, which also says what is wrong."""
    task = _canonical_task(data)
    if task is not None:
        return task
    raw = _decode(TASK_TYPE, data)
    return TaskTuple(
        raw[0], _hex32(raw[1]), raw[2], raw[3], raw[4], raw[5], raw[6], _hex32(raw[7]),
        raw[8], raw[9], tuple(raw[10]), _hex32(raw[11]), bytes(raw[12]), raw[13],
        "0x" + bytes(raw[14]).hex(),
    )


#: A ``viewTask`` result's first word (the tuple's offset) and the tuple's 15 head words.
_TASK_HEAD = 32 + 15 * 32
_MAX_CONTRIBUTORS = 1 << 16  # more than any task has: beyond this, eth-abi decides


def _canonical_task(data: bytes) -> TaskTuple | None:
    """The task of a ``viewTask`` result in the canonical layout (dynamic parts in order, right
    behind the head, zero padding everywhere, nothing after the end), read word by word; None
    for any other layout. On such data eth-abi gives the same tuple, some 20 times slower."""
    if len(data) < _TASK_HEAD + 3 * 32:
        return None
    words = [int.from_bytes(data[i : i + 32], "big") for i in range(0, _TASK_HEAD, 32)]
    if words[0] != 32 or words[1] > 0xFF or words[11] != 15 * 32:
        return None
    base = 32
    count = int.from_bytes(data[base + words[11] : base + words[11] + 32], "big")
    if count > _MAX_CONTRIBUTORS:
        return None
    start = base + words[11] + 32
    contributors: list[str] = []
    for i in range(count):
        cell = data[start + 32 * i : start + 32 * i + 32]
        if len(cell) != 32 or any(cell[:12]):
            return None
        contributors.append("0x" + cell[12:].hex())
    results = _canonical_bytes(data, base, words[13], start + 32 * count)
    if results is None:
        return None
    callback = _canonical_bytes(data, base, words[15], base + words[13] + 32 + _padded(results))
    if callback is None or len(data) != base + words[15] + 32 + _padded(callback):
        return None

    def hex32(index: int) -> str:
        return "0x" + data[32 * index : 32 * index + 32].hex()

    return TaskTuple(
        words[1], hex32(2), words[3], words[4], words[5], words[6], words[7], hex32(8),
        words[9], words[10], tuple(contributors), hex32(12), results, words[14],
        "0x" + callback.hex(),
    )


def _padded(raw: bytes) -> int:
    return len(raw) + (-len(raw) % 32)


def _canonical_bytes(data: bytes, base: int, offset: int, expected: int) -> bytes | None:
    """A ``bytes`` member at tuple ``offset`` that must start at ``expected`` (its canonical
    place) and be zero-padded; None otherwise."""
    at = base + offset
    if at != expected or at + 32 > len(data):
        return None
    length = int.from_bytes(data[at : at + 32], "big")
    end = at + 32 + length
    if end + (-length % 32) > len(data) or any(data[end : end + (-length % 32)]):
        return None
    return data[at + 32 : end]


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
