"""A retry loop that swallows a cancellation turned into an OSError still stops when cancelled."""

from __future__ import annotations

import asyncio

import pytest

from reactive_tasks._runtime import reraise_if_cancelling


async def _retrying(stop_swallowing: bool) -> None:
    """Like a client that turns a cancellation inside its own timeout into a TimeoutError."""
    while True:
        try:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                raise TimeoutError("read timed out") from None
        except OSError:
            if stop_swallowing:
                reraise_if_cancelling()
            await asyncio.sleep(0)


async def test_a_cancelled_retry_loop_stops() -> None:
    task = asyncio.ensure_future(_retrying(stop_swallowing=True))
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)
