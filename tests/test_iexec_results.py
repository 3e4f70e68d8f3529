"""IExecBackend.fetch_results: the result archive through the IPFS gateway, typed errors."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import pytest

from reactive_tasks import BackendUnavailable, PollPolicy, ProtocolError
from reactive_tasks.backends import IExecBackend, NoTaskResult, ResultNotOnIpfs
from reactive_tasks.emulator import EmulatorClient
from reactive_tasks.emulator.iexec import HUB_ADDRESS, create_deal

FAST = PollPolicy(interval=0.02, max_interval=0.05, jitter=0.0, request_timeout=2.0)


@pytest.fixture
async def backend(emulator: EmulatorClient) -> Any:
    b = IExecBackend(
        emulator.api_url("iexec") + "/rpc",
        HUB_ADDRESS,
        ipfs_gateway=emulator.api_url("iexec"),
        policy=FAST,
    )
    yield b
    await b.aclose()


async def test_downloads_the_ipfs_archive(emulator: EmulatorClient, backend: IExecBackend) -> None:
    _, (task,) = create_deal(emulator, [{"status": "COMPLETED"}])
    archive = await backend.fetch_results(task)
    with zipfile.ZipFile(io.BytesIO(archive)) as zipped:
        assert sorted(zipped.namelist()) == ["computed.json", "result.txt"]
        assert zipped.read("result.txt").decode() == f"Hello from iExec task {task}\n"
    assert emulator.requests()["by_route"]["iexec GET /ipfs/{cid}"] == 1


@pytest.mark.parametrize(
    "steps, error, match",
    [
        ([{"status": "ACTIVE"}], NoTaskResult, "not completed"),
        ([{"status": "COMPLETED", "results": None}], NoTaskResult, "no result uploaded"),
        ([{"status": "COMPLETED", "results": "garbage"}], NoTaskResult, "no result uploaded"),
        ([{"status": "COMPLETED", "results": {"storage": "dropbox", "location": "/r"}}],
         ResultNotOnIpfs, "dropbox"),
        ([{"status": "COMPLETED", "results": {"storage": "ipfs"}}], ResultNotOnIpfs, "location"),
        ([{"status": "COMPLETED", "results": {"storage": "ipfs", "location": "http://x/y"}}],
         ResultNotOnIpfs, "location"),
    ],
)
async def test_tasks_without_an_ipfs_result(
    emulator: EmulatorClient,
    backend: IExecBackend,
    steps: list[dict[str, Any]],
    error: type[Exception],
    match: str,
) -> None:
    _, (task,) = create_deal(emulator, steps)
    with pytest.raises(error, match=match):
        await backend.fetch_results(task)
    assert "iexec GET /ipfs/{cid}" not in emulator.requests()["by_route"]


async def test_gateway_faults(emulator: EmulatorClient, backend: IExecBackend) -> None:
    _, (task,) = create_deal(emulator, [{"status": "COMPLETED"}])
    # Gateway reads are retried like polls: a 503 and a reset are absorbed ...
    emulator.inject_fault("iexec", "status", status=503, path_contains="/ipfs/")
    emulator.inject_fault("iexec", "reset", path_contains="/ipfs/")
    assert len(await backend.fetch_results(task)) > 100
    assert not emulator.faults()
    # ... and a gateway that keeps failing exhausts the retry budget.
    emulator.inject_fault("iexec", "status", status=502, count=100, path_contains="/ipfs/")
    with pytest.raises(BackendUnavailable, match="502"):
        await backend.fetch_results(task)
    emulator.clear_faults()
    assert len(await backend.fetch_results(task)) > 100  # the RPC read was never affected
    _, (unknown,) = create_deal(
        emulator, [{"status": "COMPLETED", "results": {"storage": "ipfs", "location": "/ipfs/Qmx"}}]
    )
    with pytest.raises(ProtocolError, match="HTTP 404"):
        await backend.fetch_results(unknown)
