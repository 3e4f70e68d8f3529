"""Credentials stay with their origin: another origin (an IPFS gateway, the storage an artifact
redirects to) gets no Authorization, no Hawk header and none of the user's ``headers=``."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from hostile import HostileServer, RawRequest, Reply

from reactive_tasks import PollPolicy
from reactive_tasks.backends import CloudCoinBackend, IExecBackend, TaskclusterBackend
from reactive_tasks.emulator import EmulatorClient

POLICY = PollPolicy(interval=0.02, max_interval=0.05, jitter=0.0, request_timeout=2.0)
USER = {"X-Provider-Key": "user-header-secret-0a1b2c3d", "Authorization": "Bearer user-bearer-9f8e"}
TASK = "fN1SbArXTPSVFNUvaOlinQ"


def assert_no_credentials(request: RawRequest) -> None:
    assert "authorization" not in request.headers, request.headers
    assert "x-provider-key" not in request.headers, request.headers
    assert "user-header-secret" not in repr(request.headers)


def test_a_taskcluster_artifact_redirect_to_another_origin_gets_no_credentials(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pytest.importorskip("mohawk")
    caplog.set_level(logging.DEBUG)
    with HostileServer(lambda req: Reply.of(200, b"artifact bytes")) as storage:
        target = storage.url + "/bucket/public/log.txt?X-Amz-Signature=abc"

        def queue(request: RawRequest) -> Reply:
            return Reply.redirect(target)

        with HostileServer(queue) as queue_server:
            backend = TaskclusterBackend(
                queue_server.url,
                credentials={"clientId": "tester", "accessToken": "tc-access-token-0a1b2c3d"},
                headers=USER,
                policy=POLICY,
            )

            async def run() -> bytes:
                try:
                    return bytes(await backend.fetch_artifact(TASK, "public/log.txt"))
                finally:
                    await backend.aclose()

            assert asyncio.run(run()) == b"artifact bytes"
        (asked,) = queue_server.requests
        assert asked.headers["authorization"].startswith("Hawk ")
        assert asked.headers["x-provider-key"] == USER["X-Provider-Key"]
    (fetched,) = storage.requests
    assert fetched.target == "/bucket/public/log.txt?X-Amz-Signature=abc"
    assert_no_credentials(fetched)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "/bucket/public/log.txt" in logged, "the download is logged at DEBUG"
    assert "X-Amz-Signature=abc" not in logged


async def test_the_ipfs_gateway_gets_no_rpc_credentials(emulator: EmulatorClient) -> None:
    pytest.importorskip("eth_abi")
    from reactive_tasks.emulator.iexec import HUB_ADDRESS, create_deal

    _, (task,) = create_deal(emulator, [{"status": "COMPLETED"}])
    with HostileServer(lambda req: Reply.of(200, b"archive")) as gateway:
        backend = IExecBackend(
            emulator.api_url("iexec") + "/rpc", HUB_ADDRESS,
            ipfs_gateway=gateway.url, headers=USER, policy=POLICY,
        )
        try:
            assert await backend.fetch_results(task) == b"archive"
        finally:
            await backend.aclose()
    (fetched,) = gateway.requests
    assert fetched.path.startswith("/ipfs/")
    assert_no_credentials(fetched)


@pytest.mark.parametrize("other", ["port", "host"])
async def test_send_keeps_user_headers_for_the_configured_origin_only(other: str) -> None:
    seen: list[dict[str, Any]] = []
    with HostileServer(lambda req: Reply.of(200, b"{}")) as api, \
            HostileServer(lambda req: Reply.of(200, b"{}")) as elsewhere:
        base = api.url if other == "port" else api.url.replace("127.0.0.1", "localhost")
        backend = CloudCoinBackend(base, headers=USER, policy=POLICY)
        try:
            await backend.session().send("GET", "/api/v1/own")
            await backend.session().send(
                "GET", elsewhere.url + "/foreign", headers={"Authorization": "x"}
            )
            if other != "port":
                # same port and scheme, another host name: another origin
                await backend.session().send("GET", api.url + "/by-ip")
        finally:
            await backend.aclose()
        seen = [r.headers for r in api.requests]
        assert seen[0]["x-provider-key"] == USER["X-Provider-Key"]
        for request in [*elsewhere.requests, *api.requests[1:]]:
            assert_no_credentials(request)
