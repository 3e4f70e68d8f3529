"""The transient faults every backend must ride out, with no lost or duplicated event."""

from __future__ import annotations

from typing import Any

import pytest


def transient_faults(api_error: dict[str, Any], *, slow: bool = True, **narrow: Any) -> list[Any]:
    """pytest params: 503 and 500 bursts, 429 + Retry-After, resets, a slow answer (beyond a
    0.3 s request timeout) and the API's own transient error (``api_error``'s fields).

    ``narrow`` (such as ``path_contains``) is added to every fault.
    """
    faults: list[dict[str, Any]] = [
        {"kind": "status", "status": 503, "count": 3},
        {"kind": "status", "status": 500, "count": 2},
        {"kind": "rate_limit", "retry_after": 0.05, "count": 2},
        {"kind": "reset", "count": 2},
        {"kind": "slow", "delay": 0.6, "count": 1},
        {"kind": "api_error", "count": 2, **api_error},
    ]
    return [
        pytest.param({**fault, **narrow}, id=fault_id(fault))
        for fault in faults
        if slow or fault["kind"] != "slow"
    ]


def fault_id(fault: dict[str, Any]) -> str:
    """A readable test id: the kind and its status or code."""
    return str(fault["kind"]) + str(fault.get("status", fault.get("code", "")))
