"""Shared iExec test data."""

from __future__ import annotations

from typing import Any

#: viewTask tuples in the hub's layout: unset, revealing with contributors and results, and one
#: with large numbers and uneven byte lengths (codec edge cases for both directions).
VIEW_TASK_SAMPLES: list[tuple[Any, ...]] = [
    (0, bytes(32), 0, 0, 0, 0, 0, bytes(32), 0, 0, [], bytes(32), b"", 0, b""),
    (2, b"\x01" * 32, 3, 300, 1, 2, 3, b"\x02" * 32, 0, 1,
     ["0x3044e00000000000000000000000000000003044", "0x" + "ab" * 20], bytes(32),
     b'{"storage": "ipfs", "location": "/ipfs/Qm"}', 17, b"\x05" * 33),
    (3, b"\x07" * 32, 1, 2**255, 1, 2, 3, b"\x02" * 32, 5, 1, [], b"\x09" * 32, b"x" * 64,
     17, b"\x05" * 32),
]
