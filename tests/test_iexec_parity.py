"""Parity with the real iExec SDK: its ``task.obsTask`` and IExecBackend see the same events.

The ``iexec`` npm package (version 9) is installed once into a cache outside the repository
(``$REACTIVE_TASKS_CACHE`` or ``~/.cache/reactive-tasks``, under ``iexec-sdk``). The SDK, pointed
at the emulator's JSON-RPC endpoint, observes scripted tasks while IExecBackend observes identical
twins; the ``message statusName`` sequences must equal the ``kind native_status`` ones. This
proves both that the emulator speaks the chain's encoding and that the semantics match the SDK's.
The SDK polls every 5 s, so the scripts step by polls and the test takes about 20 s.

``claim.mjs`` runs the SDK's ``task.claim`` with a private-key signer on twins of timed-out,
completed and not-yet-due tasks: it and ``IExecBackend.claim`` must accept and refuse the same
ones, and after either side claimed, both observations must end the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from reactive_tasks import PollPolicy, aiter
from reactive_tasks.backends import IExecBackend
from reactive_tasks.emulator import EmulatorClient
from reactive_tasks.emulator.iexec import HUB_ADDRESS, create_deal

SDK_SPEC = "iexec@9"
SCRIPT = Path(__file__).parent / "parity" / "obs_task.mjs"
FAST = PollPolicy(interval=0.05, max_interval=0.2, jitter=0.0, request_timeout=5.0)

Task = tuple[list[dict[str, Any]], dict[str, Any]]  # (script, deal extras)
SCENARIOS: dict[str, list[Task]] = {
    "deal lifecycle": [
        (
            [
                {"status": "UNSET", "polls": 1},
                {"status": "ACTIVE", "polls": 1},
                {"status": "REVEALING", "polls": 1},
                {"status": "COMPLETED"},
            ],
            {},
        ),
    ],
    "timed out": [
        ([{"status": "ACTIVE"}], {"deadline_in": 3.5}),  # times out between two SDK polls
        ([{"status": "UNSET"}], {"deadline_in": 3.5}),  # never initialized: the deal's deadline
    ],
    "claimed": [
        ([{"status": "FAILED"}], {"deadline_in": -60}),
    ],
}
# What both must see (so that equal sequences cannot both be wrong the same way).
EXPECTED = {
    "deal lifecycle": [
        [("TASK_UPDATED", "UNSET"), ("TASK_UPDATED", "ACTIVE"), ("TASK_UPDATED", "REVEALING"),
         ("TASK_COMPLETED", "COMPLETED"), ("COMPLETE", "")],
    ],
    "timed out": [
        [("TASK_UPDATED", "ACTIVE"), ("TASK_TIMEDOUT", "TIMEOUT"), ("COMPLETE", "")],
        [("TASK_UPDATED", "UNSET"), ("TASK_TIMEDOUT", "TIMEOUT"), ("COMPLETE", "")],
    ],
    "claimed": [[("TASK_FAILED", "FAILED"), ("COMPLETE", "")]],
}


def _cache_root() -> Path:
    configured = os.environ.get("REACTIVE_TASKS_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "reactive-tasks"


def _installed_version(prefix: Path) -> str | None:
    manifest = prefix / "node_modules" / "iexec" / "package.json"
    try:
        version: str = json.loads(manifest.read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None
    return version


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock, so that concurrent test runs do not install over each other."""
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def iexec_sdk() -> Path:
    """The directory holding node_modules/iexec (version 9), installed on first use."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("Node.js and npm are not installed: the parity test runs the iexec npm SDK")
    prefix = _cache_root() / "iexec-sdk"
    prefix.mkdir(parents=True, exist_ok=True)
    with _locked(prefix / ".install.lock"):
        version = _installed_version(prefix)
        if version is None or not version.startswith("9."):
            install = subprocess.run(
                [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund",
                 "--loglevel=error", SDK_SPEC],
                capture_output=True, text=True, timeout=600, check=False,
            )
            version = _installed_version(prefix)
            if install.returncode != 0 or version is None:
                ping = subprocess.run(
                    [npm, "ping"], capture_output=True, text=True, timeout=60, check=False
                )
                if ping.returncode != 0:
                    pytest.skip(
                        f"the npm registry is unreachable, cannot install {SDK_SPEC}: "
                        f"{(ping.stderr or ping.stdout).strip()[-300:]}"
                    )
                pytest.fail(f"npm install {SDK_SPEC} failed:\n{install.stderr[-3000:]}")
    return prefix


async def _ours(backend: IExecBackend, task: str, deal: str) -> list[tuple[str, str]]:
    observation = backend.observe(task, deal_id=deal)
    seen = [(e.kind.value, e.native_status) async for e in aiter(observation)]
    return [*seen, ("COMPLETE", "")]


async def _start_sdk(sdk: Path, rpc_url: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        "node", str(SCRIPT), str(sdk), rpc_url, HUB_ADDRESS,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
    if line.strip() != b"READY":
        proc.kill()
        _, err = await proc.communicate()
        pytest.fail(f"the SDK script did not start: {line!r} {err.decode()[-2000:]}")
    return proc


async def test_obs_task_parity_with_the_sdk(emulator: EmulatorClient, iexec_sdk: Path) -> None:
    rpc_url = emulator.api_url("iexec") + "/rpc"
    sdk = await _start_sdk(iexec_sdk, rpc_url)
    # Twins: one task for the SDK, an identical one (own deal, same script) for us.
    twins: dict[str, list[tuple[tuple[str, str], tuple[str, str]]]] = {}
    for name, tasks in SCENARIOS.items():
        twins[name] = []
        for steps, extra in tasks:
            sdk_deal, (sdk_task,) = create_deal(emulator, steps, **extra)
            our_deal, (our_task,) = create_deal(emulator, steps, **extra)
            twins[name].append(((sdk_task, sdk_deal), (our_task, our_deal)))
    targets = " ".join(f"{t}:{d}" for pairs in twins.values() for (t, d), _ in pairs)
    assert sdk.stdin is not None
    sdk.stdin.write(targets.encode() + b"\n")
    await sdk.stdin.drain()

    backend = IExecBackend(rpc_url, HUB_ADDRESS, policy=FAST)
    try:
        ours_by_task = dict(
            zip(
                [o for pairs in twins.values() for _, (o, _d) in pairs],
                await asyncio.gather(
                    *(_ours(backend, t, d) for pairs in twins.values() for _, (t, d) in pairs)
                ),
                strict=True,
            )
        )
        out, err = await asyncio.wait_for(sdk.communicate(), timeout=90)
    finally:
        await backend.aclose()
        if sdk.returncode is None:
            sdk.kill()
    assert sdk.returncode == 0, f"SDK script failed: {out.decode()} {err.decode()[-2000:]}"

    theirs_by_task: dict[str, list[tuple[str, str]]] = {}
    for line in out.decode().splitlines():
        task, message, *rest = line.split(" ", 2)
        theirs_by_task.setdefault(task, []).append((message, rest[0] if rest else ""))
    for name, pairs in twins.items():
        for index, ((sdk_task, _), (our_task, _)) in enumerate(pairs):
            theirs, ours = theirs_by_task.get(sdk_task), ours_by_task[our_task]
            assert ours == theirs, f"{name}: SDK saw {theirs}, IExecBackend saw {ours}"
            assert ours == EXPECTED[name][index], name



# -- claim -------------------------------------------------------------------------------------

CLAIM_SCRIPT = Path(__file__).parent / "parity" / "claim.mjs"
CLAIM_CASES: dict[str, Task] = {
    "timed out": ([{"status": "ACTIVE"}], {"deadline_in": -60}),
    "completed": ([{"status": "COMPLETED"}], {"deadline_in": -60}),
    "before its deadline": ([{"status": "ACTIVE"}], {"deadline_in": 3600}),
}
CLAIM_EXPECTED = {
    "timed out": "claimed", "completed": "status COMPLETED", "before its deadline": "too early",
}


def _sdk_outcome(line: str) -> str:
    """What an SDK claim line says: claimed, refused for a status, or refused as too early."""
    if " CLAIMED 0x" in line:
        return "claimed"
    if "Cannot claim a task having status " in line:
        return "status " + line.rsplit(" ", 1)[1]
    if "Cannot claim a task before reaching the consensus deadline" in line:
        return "too early"
    return line


async def _our_outcome(backend: IExecBackend, task: str) -> tuple[str, str | None]:
    from reactive_tasks.backends import TaskNotClaimable

    try:
        return "claimed", await backend.claim(task)
    except TaskNotClaimable as exc:
        if "having status " in exc.message:
            return "status " + exc.message.rsplit(" ", 1)[1], None
        return ("too early" if "before its final deadline" in exc.message else exc.message), None


async def _ends(backend: IExecBackend, task: str) -> list[tuple[str, str]]:
    seen = [(e.kind.value, e.native_status) async for e in aiter(backend.observe(task))]
    return [*seen, ("COMPLETE", "")]


async def test_claim_parity_with_the_sdk(emulator: EmulatorClient, iexec_sdk: Path) -> None:
    from eth_account import Account

    rpc_url = emulator.api_url("iexec") + "/rpc"
    twins = {name: (create_deal(emulator, steps, **extra)[1][0],
                    create_deal(emulator, steps, **extra)[1][0])
             for name, (steps, extra) in CLAIM_CASES.items()}
    sdk_key, our_key = Account.create(), Account.create()
    proc = await asyncio.create_subprocess_exec(
        "node", str(CLAIM_SCRIPT), str(iexec_sdk), rpc_url, HUB_ADDRESS,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PARITY_PRIVATE_KEY": sdk_key.key.hex()},
    )
    assert proc.stdin is not None and proc.stdout is not None
    backend = IExecBackend(rpc_url, HUB_ADDRESS, policy=FAST, signer=our_key)
    try:
        ready = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
        assert ready.strip() == b"READY", ready
        proc.stdin.write(" ".join(sdk for sdk, _ in twins.values()).encode() + b"\n")
        await proc.stdin.drain()
        theirs: dict[str, str] = {}
        while (line := (await asyncio.wait_for(proc.stdout.readline(), 60)).decode().strip()):
            if line == "CLAIMS DONE":
                break
            theirs[line.split(" ", 1)[0]] = line
        ours = {name: await _our_outcome(backend, our) for name, (_, our) in twins.items()}
        # After either side claimed, both observe both claimed tasks to their end.
        claimed = list(twins["timed out"])
        proc.stdin.write(" ".join(claimed).encode() + b"\n")
        await proc.stdin.drain()
        our_ends = await asyncio.gather(*(_ends(backend, task) for task in claimed))
        out, err = await asyncio.wait_for(proc.communicate(), timeout=90)
    finally:
        await backend.aclose()
        if proc.returncode is None:
            proc.kill()
    assert proc.returncode == 0, f"SDK script failed: {out.decode()} {err.decode()[-2000:]}"
    for name, (sdk_task, _) in twins.items():
        sdk_said = _sdk_outcome(theirs.get(sdk_task, "no line"))
        assert sdk_said == ours[name][0] == CLAIM_EXPECTED[name], (name, theirs.get(sdk_task))
    sdk_ends: dict[str, list[tuple[str, str]]] = {}
    for line in out.decode().splitlines():
        task, message, *rest = line.split(" ", 2)
        sdk_ends.setdefault(task, []).append((message, rest[0] if rest else ""))
    ended = [("TASK_FAILED", "FAILED"), ("COMPLETE", "")]
    assert [sdk_ends.get(task) for task in claimed] == [ended, ended]
    assert our_ends == [ended, ended]
    wallet = httpx.get(emulator.api_url("iexec") + "/_wallet").json()["transactions"]
    mined = {t["from"]: t for t in wallet if t["status"] == 1}
    assert mined[our_key.address.lower()]["hash"] == ours["timed out"][1]
    assert theirs[twins["timed out"][0]].endswith(mined[sdk_key.address.lower()]["hash"])
    fees = ("type", "max_fee_per_gas", "max_priority_fee_per_gas", "gas_price")
    sdk_tx, our_tx = mined[sdk_key.address.lower()], mined[our_key.address.lower()]
    assert [sdk_tx[k] for k in fees] == [our_tx[k] for k in fees]  # ethers' EIP-1559 fees
